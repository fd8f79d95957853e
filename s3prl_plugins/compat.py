"""Everything that depends on the versions of torch, torchaudio, transformers, huggingface_hub,
numpy and the s3prl provider lives here, so a new release means changing this module only.

The process-wide shims (:func:`apply`) follow one rule: they only **add what is missing** (or
replace a function that cannot work in this environment), so nothing that already works in
ESPnet's or a user's own code returns anything different:

* torchaudio >= 2.9 removed ``set_audio_backend``, ``info`` and ``sox_effects``, and its ``load``
  needs TorchCodec. s3prl 0.4.18 calls all four (``hub.py`` dies at line 7 on ``byol_s``). The
  shims add the three missing names (soundfile underneath) and give ``load`` a soundfile reader
  only where TorchCodec is not installed (where torchaudio's own ``load`` can only raise).
* huggingface_hub >= 1.0 removed ``HfFolder`` and ``Repository``, which s3prl's runners import at
  top level but use only for ``--hub huggingface``. ``HfFolder`` is rebuilt on today's token API;
  ``Repository`` (git-based pushing) raises an error that says how to push instead.
* catalyst 22.4 (the last release) has metadata that pip >= 24.1 refuses; s3prl's keyword-spotting
  task imports only ``catalyst.data.sampler.DistributedSamplerWrapper``. Where no catalyst is
  installed, that one class is served from here (a real catalyst always wins).
* torch >= 2.6 loads checkpoints weights-only by default: :func:`allow_s3prl_checkpoints`
  allowlists exactly the classes s3prl's own checkpoints pickle (``argparse.Namespace`` and the
  ``optimizers``/``schedulers`` objects), instead of turning weights-only off.

The installer puts a guarded call of :func:`apply` at the top of the s3prl files that are loaded
first (``s3prl/__init__.py``, and ``run_pretrain.py``, which s3prl runs without importing the
package). On torchaudio <= 2.8 with huggingface_hub < 1 and catalyst installed it only allowlists.

The rest are version-dependent helpers the package itself uses: the weights-only unpickler's
rejections (:func:`unpickler_rejection`), numpy's pickled globals, the legacy weight norm, the
FLOP counter's CPU attention formula, transformers' encoder hidden states, and which s3prl
distribution is installed (:func:`s3prl_provider`).
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "version_tuple", "torchaudio_version", "patch_torchaudio", "patch_huggingface_hub",
    "provide_catalyst_sampler", "allow_s3prl_checkpoints", "apply", "unpickler_rejection",
    "numpy_global", "numpy_dtype_classes", "legacy_weight_norm", "flop_counter",
    "encoder_hidden_states", "S3prlProvider", "s3prl_provider", "TESTED_PROVIDERS",
]


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.11.1+cpu"`` -> ``(2, 11, 1)`` (pre-release tails such as ``rc1`` are dropped)."""
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def torchaudio_version() -> tuple[int, ...]:
    import torchaudio

    return version_tuple(torchaudio.__version__)[:2]


# ---------------------------------------------------------------------------------------------
# torchaudio >= 2.9
# ---------------------------------------------------------------------------------------------
def _soundfile_load(path, frame_offset=0, num_frames=-1, normalize=True, channels_first=True, format=None, **_):
    """torchaudio 2.8's ``load`` contract (float32 in [-1, 1], [channels, frames]) on soundfile."""
    import soundfile
    import torch

    data, rate = soundfile.read(
        str(path), start=frame_offset, frames=num_frames, dtype="float32" if normalize else "int16", always_2d=True
    )
    tensor = torch.from_numpy(data)
    return (tensor.t().contiguous() if channels_first else tensor), rate


def _soundfile_info(path, **_):
    import soundfile

    info = soundfile.info(str(path))
    return types.SimpleNamespace(
        sample_rate=info.samplerate, num_frames=info.frames, num_channels=info.channels,
        bits_per_sample=0, encoding=info.subtype,
    )


def _apply_effects_tensor(waveform, sample_rate, effects, channels_first=True):
    """The sox effects s3prl's tasks use (channels, rate, gain), in torchaudio.functional."""
    import torchaudio.functional as AF

    wav, rate = (waveform if channels_first else waveform.t()), sample_rate
    for effect in effects:
        name, *args = [str(a) for a in effect]
        if name == "channels":
            if int(args[0]) == 1:
                wav = wav.mean(dim=0, keepdim=True)
        elif name == "rate":
            new_rate = int(float(args[0]))
            wav, rate = AF.resample(wav, rate, new_rate), new_rate
        elif name == "gain":
            wav = wav * (10.0 ** (float(args[-1]) / 20.0))
        else:
            raise RuntimeError(
                f"sox effect {name!r} is not available on torchaudio >= 2.9 (s3prl-plugins provides channels, "
                "rate and gain); use torchaudio <= 2.8 with libsox (apt-get install libsox-dev) for it"
            )
    return (wav if channels_first else wav.t()), rate


def _apply_effects_file(path, effects, normalize=True, channels_first=True, format=None):
    wav, rate = _soundfile_load(path, normalize=normalize)
    return _apply_effects_tensor(wav, rate, effects, channels_first)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def patch_torchaudio() -> list[str]:
    """Add to torchaudio >= 2.9 what s3prl 0.4.18 calls; returns the names added (none on <= 2.8)."""
    if not _importable("torchaudio"):
        return []
    import torchaudio

    added = []
    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = lambda backend=None: None
        added.append("set_audio_backend")
    if not hasattr(torchaudio, "info"):
        torchaudio.info = _soundfile_info
        added.append("info")
    if torchaudio_version() >= (2, 9) and not _importable("torchcodec") and torchaudio.load is not _soundfile_load:
        torchaudio.load = _soundfile_load  # torchaudio's own load needs TorchCodec: it could only raise
        added.append("load")
    try:
        import torchaudio.sox_effects  # noqa: F401
    except ImportError:
        sox = types.ModuleType("torchaudio.sox_effects", "channels/rate/gain on torchaudio.functional (s3prl-plugins)")
        sox.apply_effects_tensor = _apply_effects_tensor
        sox.apply_effects_file = _apply_effects_file
        sys.modules["torchaudio.sox_effects"] = sox
        torchaudio.sox_effects = sox
        added.append("sox_effects")
    return added


# ---------------------------------------------------------------------------------------------
# huggingface_hub >= 1.0
# ---------------------------------------------------------------------------------------------
class _HfFolder:
    """huggingface_hub < 1.0's ``HfFolder`` on today's token functions."""

    @staticmethod
    def get_token():
        from huggingface_hub import get_token

        return get_token()

    @staticmethod
    def save_token(token):
        from huggingface_hub import login

        login(token=token, add_to_git_credential=False)

    @staticmethod
    def delete_token():
        from huggingface_hub import logout

        logout()


class _Repository:
    """huggingface_hub < 1.0's git-based ``Repository``, which 1.0 removed without a replacement."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            "s3prl's `--hub huggingface` pushes with huggingface_hub.Repository, which huggingface_hub >= 1.0 "
            "removed. Push from an environment with `pip install 'huggingface_hub<1'` (transformers 4.x), or "
            "upload the experiment folder yourself: `hf upload <user>/<repo> <expdir>`."
        )


def patch_huggingface_hub() -> list[str]:
    """Add ``HfFolder``/``Repository`` where huggingface_hub >= 1 lacks them; returns the names added."""
    if not _importable("huggingface_hub"):
        return []
    import huggingface_hub

    added = []
    for name, replacement in (("HfFolder", _HfFolder), ("Repository", _Repository)):
        try:
            getattr(huggingface_hub, name)
        except (AttributeError, ImportError):
            setattr(huggingface_hub, name, replacement)
            added.append(name)
    return added


# ---------------------------------------------------------------------------------------------
# catalyst (s3prl's KS task)
# ---------------------------------------------------------------------------------------------
def _distributed_sampler_wrapper():
    from torch.utils.data import Dataset, DistributedSampler

    class _SamplerIndices(Dataset):
        """The indices one pass of ``sampler`` yields, as a dataset (drawn on first access)."""

        def __init__(self, sampler):
            self.sampler, self._indices = sampler, None

        def __getitem__(self, position):
            if self._indices is None:
                self._indices = list(self.sampler)
            return self._indices[position]

        def __len__(self):
            return len(self.sampler)

    class DistributedSamplerWrapper(DistributedSampler):
        """catalyst's ``DistributedSamplerWrapper``: each rank takes its share of what ``sampler``
        yields (for example a weighted sampler), in DistributedSampler's rank split."""

        def __init__(self, sampler, num_replicas=None, rank=None, shuffle=True):
            super().__init__(_SamplerIndices(sampler), num_replicas=num_replicas, rank=rank, shuffle=shuffle)
            self.sampler = sampler

        def __iter__(self):
            self.dataset = _SamplerIndices(self.sampler)  # a fresh draw of the wrapped sampler each epoch
            return iter([self.dataset[position] for position in super().__iter__()])

    return DistributedSamplerWrapper


class _CatalystSamplerFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``catalyst``, ``catalyst.data`` and ``catalyst.data.sampler`` when no catalyst is
    installed; it sits last on ``sys.meta_path``, so an installed catalyst is always found first."""

    NAMES = ("catalyst", "catalyst.data", "catalyst.data.sampler")

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.NAMES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname != "catalyst.data.sampler")

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__doc__ = "s3prl-plugins' stand-in for catalyst (only data.sampler.DistributedSamplerWrapper)"
        if module.__name__ == "catalyst.data.sampler":
            module.DistributedSamplerWrapper = _distributed_sampler_wrapper()


def provide_catalyst_sampler() -> bool:
    """Make ``from catalyst.data.sampler import DistributedSamplerWrapper`` work without catalyst."""
    if any(isinstance(finder, _CatalystSamplerFinder) for finder in sys.meta_path):
        return True
    if _importable("catalyst"):
        return False
    sys.meta_path.append(_CatalystSamplerFinder())
    return True


# ---------------------------------------------------------------------------------------------
# s3prl's own checkpoints under weights-only loading (torch >= 2.6)
# ---------------------------------------------------------------------------------------------
def allow_s3prl_checkpoints() -> None:
    """Let ``torch.load`` read s3prl's own checkpoints weights-only (torch >= 2.6)."""
    import torch

    safe: list = [argparse.Namespace]
    try:
        import s3prl.optimizers as optimizers
        import s3prl.schedulers as schedulers

        for module, alias in ((optimizers, "optimizers"), (schedulers, "schedulers")):
            for value in vars(module).values():
                if isinstance(value, type) and value.__module__ == module.__name__:
                    safe.append(value)
                    # run_pretrain imports these modules top-level, so pickles name them so.
                    safe.append((value, f"{alias}.{value.__name__}"))
    except ImportError:
        pass
    torch.serialization.add_safe_globals(safe)


#: what :func:`apply` has added in this process (``install_into_s3prl.py --check`` reports it)
APPLIED: dict[str, list[str]] = {"torchaudio": [], "huggingface_hub": [], "catalyst": []}


def apply() -> dict[str, list[str]]:
    """Every shim s3prl needs in this environment (idempotent); returns all that was added so far."""
    APPLIED["torchaudio"] += patch_torchaudio()
    APPLIED["huggingface_hub"] += patch_huggingface_hub()
    if provide_catalyst_sampler():
        APPLIED["catalyst"] = ["data.sampler.DistributedSamplerWrapper"]
    allow_s3prl_checkpoints()
    return APPLIED


# ---------------------------------------------------------------------------------------------
# The weights-only unpickler (what it rejects changed in torch 2.10) and numpy's pickled names
# ---------------------------------------------------------------------------------------------
#: stand-in classes are named ``StandIn[<pickled name>]`` so a rejection names the pickled class
STAND_IN_NAME = "StandIn[{}]"
_REJECTIONS = (
    # a global the file names that is not allowlisted (every torch >= 2.4)
    ("global", re.compile(r"GLOBAL ([\w.]+) was not an allowed global")),
    # item assignment on a stand-in: torch >= 2.10 checks the target's exact type ...
    ("mapping", re.compile(r"Can only SETITEMS? for dict.*?got <class '[^']*StandIn\[([\w.]+)\]'>")),
    # ... torch <= 2.9 just tries it
    ("mapping", re.compile(r"'StandIn\[([\w.]+)\]' object does not support item assignment")),
    # appending to a stand-in: torch >= 2.10 "append to", torch <= 2.9 "extend" / "append to"
    ("sequence", re.compile(r"Can only (?:append to|extend) lists, but got <class '[^']*StandIn\[([\w.]+)\]'>")),
    ("sequence", re.compile(r"'StandIn\[([\w.]+)\]' object has no attribute '(?:append|extend)'")),
)


def unpickler_rejection(error: BaseException) -> tuple[str, str] | None:
    """What the weights-only unpickler refused: ``("global" | "mapping" | "sequence", pickled name)``.

    ``mapping``/``sequence``: a foreign dict or list subclass (Lightning's ``AttributeDict``) that
    has to be rebuilt as a plain ``dict``/``list``, since torch >= 2.10 fills only exact ones."""
    text = str(error)
    for kind, pattern in _REJECTIONS:
        match = pattern.search(text)
        if match:
            return kind, match.group(1)
    return None


_NUMPY_SAFE = {
    # numpy 1.x pickles name numpy.core, numpy 2.x numpy._core
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype",
}


def numpy_global(full_name: str):
    """The real numpy object for a pickled numpy data global (arrays, scalars, dtypes), else None."""
    if full_name not in _NUMPY_SAFE and not re.fullmatch(r"numpy\.dtypes\.\w+DType", full_name):
        return None
    module, _, name = full_name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def numpy_dtype_classes() -> list:
    """numpy's dtype classes (numpy >= 1.25): a pickled array's dtype is rebuilt as one of them."""
    try:
        import numpy.dtypes
    except ImportError:
        return []
    return [v for v in vars(numpy.dtypes).values() if isinstance(v, type)]


# ---------------------------------------------------------------------------------------------
# torch modules and tools
# ---------------------------------------------------------------------------------------------
def legacy_weight_norm(module, name: str = "weight", dim: int = 0):
    """``nn.utils.weight_norm`` (deprecated since torch 2.1, still there in 2.14): it keeps the
    ``weight_g``/``weight_v`` parameter names that fairseq checkpoints use."""
    import warnings

    from torch import nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(module, name=name, dim=dim)


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _accumulating_matmul_flops(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import bmm_flop, mm_flop

    return (mm_flop if len(a_shape) == 2 else bmm_flop)(a_shape, b_shape)


def flop_counter():
    """``FlopCounterMode`` that also counts what its registry misses (up to torch 2.14), which
    would silently count 0: the CPU attention kernel (formulas exist for the CUDA kernels only)
    and the in-place ``addmm_``/``baddbmm_`` (the waveform CNN accumulates its taps with them)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    extra = {aten.addmm_: _accumulating_matmul_flops, aten.baddbmm_: _accumulating_matmul_flops}
    cpu_kernel = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_kernel is not None:
        extra[cpu_kernel] = _cpu_flash_attention_flops
    return FlopCounterMode(display=False, custom_mapping=extra)


def encoder_hidden_states(encoder, hidden, attention_mask=None) -> list:
    """What transformers 4.x returned as ``encoder(..., output_hidden_states=True).hidden_states``
    for a wav2vec2-style encoder (HuBERT, WavLM): the first layer's input, every layer's output,
    and the encoder's output in place of the last (it has the final LayerNorm of stable-LN models).

    transformers 5 collects hidden states in the top-level model only (the encoder returns None),
    so they are read with hooks here, the same on every transformers from 4.40 to 5.x."""
    layers = encoder.layers
    collected: list = []

    def layer_input(module, args, kwargs):
        collected.append(args[0] if args else kwargs["hidden_states"])

    def layer_output(module, args, output):
        collected.append(output[0] if isinstance(output, (tuple, list)) else output)

    handles = [layers[0].register_forward_pre_hook(layer_input, with_kwargs=True)]
    handles += [layer.register_forward_hook(layer_output) for layer in layers]
    try:
        out = encoder(hidden, attention_mask=attention_mask)
    finally:
        for handle in handles:
            handle.remove()
    last = out[0] if isinstance(out, (tuple, list)) else out.last_hidden_state
    if len(collected) != len(layers) + 1:
        raise RuntimeError(f"expected {len(layers) + 1} hidden states from the encoder's hooks, got {len(collected)}"
                           " (layer drop must be off)")
    return collected[:-1] + [last]


# ---------------------------------------------------------------------------------------------
# Which s3prl is installed: the PyPI s3prl or ESPnet's fork (both import as ``s3prl``)
# ---------------------------------------------------------------------------------------------
#: distribution name -> the versions this package is tested with
TESTED_PROVIDERS = {"s3prl": ("0.4.18",), "espnet-s3prl": ("2026.5.14",)}


@dataclass(frozen=True)
class S3prlProvider:
    distribution: str | None  # "s3prl", "espnet-s3prl", or None for a clone without metadata
    version: str  # the distribution's version, else the package's version.txt

    @property
    def tested(self) -> bool:
        """A tested version; a copy or clone without metadata is judged by its version.txt."""
        names = [self.distribution] if self.distribution else list(TESTED_PROVIDERS)
        return any(version_tuple(self.version) == version_tuple(v) for n in names for v in TESTED_PROVIDERS[n])

    @property
    def is_fork(self) -> bool:
        """ESPnet's fork (its versions are dates: 2026.5.14, version.txt 2026.05.14)."""
        return self.distribution == "espnet-s3prl" or (
            self.distribution is None and version_tuple(self.version)[:1] >= (2024,))

    def __str__(self) -> str:
        return f"{self.distribution or 's3prl (no distribution metadata)'} {self.version}"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _editable_root(dist) -> Path | None:
    import json
    import urllib.parse

    try:
        info = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return None
    if not info.get("dir_info", {}).get("editable") or not info.get("url", "").startswith("file://"):
        return None
    return Path(urllib.parse.unquote(urllib.parse.urlparse(info["url"]).path)).resolve()


def s3prl_provider(package: Path) -> S3prlProvider:
    """The distribution that installed the ``s3prl`` package folder ``package`` (by its metadata:
    the RECORD that lists ``s3prl/hub.py``, or an editable install's location), else version.txt."""
    package = Path(package)
    version_file = package / "version.txt"
    fallback = version_file.read_text().strip() if version_file.exists() else "unknown"
    for name in TESTED_PROVIDERS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in dist.files or ():
            if str(file).replace("\\", "/") == "s3prl/hub.py" and _same_file(Path(dist.locate_file(file)),
                                                                             package / "hub.py"):
                return S3prlProvider(name, dist.version)
        if _editable_root(dist) == package.parent.resolve():  # pip install -e <clone>
            return S3prlProvider(name, dist.version)
    return S3prlProvider(None, fallback)
