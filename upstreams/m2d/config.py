"""M2D's model configuration, the options of its entries, and where a file's configuration comes from.

Like the official runtime, the input and patch sizes are parsed from the release folder name
(``<model>-<F>x<T>p<pf>x<pt>[p<sr>]-...``), then the file name, then the ``args`` stored in full
checkpoints; ``-g`` ``input_size``/``patch_size`` override them; the layer sizes come from the
tensors. A source whose sizes disagree with the tensors is an error, not a silent mis-load.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..common.checkpoint import CheckpointError
from ..common.config import ConfigError

if TYPE_CHECKING:
    from .formats import LoadedCheckpoint

__all__ = ["M2DConfig", "M2DOptions", "FRONT_ENDS", "INPUT_SAMPLE_RATE", "DEFAULT_STATS", "parse_release_name", "resolve_config"]

#: log-mel parameters of the official runtime per input sample rate (80 mel bins, 10 ms hop).
FRONT_ENDS = {
    16000: dict(sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=80, f_min=50.0, f_max=8000.0),
    32000: dict(sample_rate=32000, n_fft=800, win_length=800, hop_length=320, n_mels=80, f_min=50.0, f_max=16000.0),
}

#: s3prl feeds 16 kHz audio; 32 kHz models get it resampled inside the upstream.
INPUT_SAMPLE_RATE = 16000

#: the log-mel [mean, std] the official runtime assumes when a checkpoint has none (the 2022 models)
DEFAULT_STATS = (-7.1, 4.2)


@dataclass
class M2DConfig:
    """Shape of one M2D model.

    ``input_size`` is (mel bins, unit frames): the spectrogram size the model was trained on,
    which is also the chunk length at inference. ``patch_size`` is (frequency, time) in bins
    and frames. ``model_name`` is the official class name (``m2d_vit_base``, ``m2d_s_vit_base``,
    ...), kept for messages.
    """

    input_size: tuple[int, int] = (80, 608)
    patch_size: tuple[int, int] = (16, 16)
    sample_rate: int = 16000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    model_name: str = "m2d_vit_base"

    def __post_init__(self):
        n_mels, unit = self.input_size
        pf, pt = self.patch_size
        if n_mels != 80:
            raise ValueError(f"M2D models take 80 mel bins, got input_size {self.input_size}")
        if pf <= 0 or pt <= 0 or n_mels % pf:
            raise ValueError(f"patch_size {self.patch_size} does not tile {n_mels} mel bins")
        if unit < pt:
            raise ValueError(f"input_size {self.input_size} is shorter than one patch {self.patch_size}")
        if self.sample_rate not in FRONT_ENDS:
            raise ValueError(f"sample_rate must be one of {sorted(FRONT_ENDS)}, got {self.sample_rate}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def grid_size(self) -> tuple[int, int]:
        """(F', T'_unit): patches along frequency and along one unit chunk."""
        return self.input_size[0] // self.patch_size[0], self.input_size[1] // self.patch_size[1]

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def feature_dim(self) -> int:
        return self.embed_dim * self.grid_size[0]

    @property
    def hop_samples_16k(self) -> int:
        """Input samples (16 kHz) per log-mel frame: 160 for every model (10 ms)."""
        return INPUT_SAMPLE_RATE // 100

    @property
    def downsample_rate(self) -> int:
        """Input samples (16 kHz) per output frame: 10 ms times the patch width."""
        return self.hop_samples_16k * self.patch_size[1]

    def describe(self) -> str:
        n_mels, unit = self.input_size
        pf, pt = self.patch_size
        return (f"{self.model_name} input {n_mels}x{unit} patch {pf}x{pt} {self.sample_rate // 1000} kHz, "
                f"{self.depth} layers x {self.embed_dim}")


@dataclass
class M2DOptions:
    """``-g`` YAML keys / keyword arguments of the M2D entries (``-g`` may also be a SUPERB task name)."""

    #: log-mel statistics of the downstream data (the official recipe's ``-k ckpt,mean,std``)
    norm_mean: float | None = None
    norm_std: float | None = None
    #: or the name of a SUPERB task whose statistics the official README publishes (``task``: alias)
    norm_task: str | None = None
    task: str | None = None
    #: the model's sizes, for a file whose release folder name was lost: "80x608" or [80, 608]
    input_size: Any = None
    patch_size: Any = None
    sample_rate: Any = None
    model_name: str | None = None
    #: m2d_calcnorm: utterances to measure
    calcnorm_updates: int = 10_000

    def validate(self) -> None:
        if (self.norm_mean is None) != (self.norm_std is None):
            only = "norm_mean" if self.norm_std is None else "norm_std"
            raise ConfigError(f"give both norm_mean and norm_std (only {only} is set)")
        if self.sample_rate is not None and self.input_size is None and self.patch_size is None:
            raise ConfigError("model config (-g): give both input_size and patch_size (missing input_size, patch_size)")
        if (self.input_size is None) != (self.patch_size is None):
            missing = "input_size" if self.input_size is None else "patch_size"
            raise ConfigError(f"model config (-g): give both input_size and patch_size (missing {missing})")


_SIZE = re.compile(r"(\d+)x(\d+)")


def _pair(value: Any) -> tuple[int, int] | None:
    """``"80x608"`` or ``[80, 608]`` -> (80, 608); None for anything else."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        return (int(match.group(1)), int(match.group(2))) if match else None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def _sample_rate(value: Any) -> int | None:
    """``"16k"``/``"32K"`` (the official spelling) or ``16000`` -> Hz; None when unreadable."""
    text = str(value).strip().lower()
    if text.endswith("k") and text[:-1].isdigit():
        return int(text[:-1]) * 1000
    return int(text) if text.isdigit() else None


def parse_release_name(name: str) -> dict[str, Any] | None:
    """``m2d_s_vit_base-80x608p80x2-230220`` -> model, input (80, 608), patch (80, 2), 16 kHz.

    The official runtime's rule: ``model = name.split('-')[0]``; the second dash field split on
    ``p`` gives input size, patch size and an optional sample rate (``16k``/``32k``), then extras
    (``portable_m2d``'s CLAP text-encoder tags). Returns None if ``name`` does not follow it.
    """
    fields = name.split("-")
    if len(fields) < 2:
        return None
    params = fields[1].split("p")
    if len(params) < 2:
        return None
    size, patch = _pair(params[0]), _pair(params[1])
    rate = _sample_rate(params[2] if len(params) > 2 else "16k")
    if not size or not patch or not rate:
        return None
    return dict(
        model_name=fields[0],
        input_size=size,
        patch_size=patch,
        sample_rate=rate,
        extra=tuple(params[3:]),  # e.g. portable_m2d's CLAP text-encoder tags; the encoder does not use them
        source=f"the name {name!r}",
    )


def _from_args(args: Any) -> dict[str, Any] | None:
    if args is None:
        return None
    get = (lambda k: getattr(args, k, None)) if not isinstance(args, Mapping) else args.get
    input_size, patch_size = _pair(get("input_size")), _pair(get("patch_size"))
    if not input_size or not patch_size:
        return None
    return dict(
        model_name=str(get("model") or "m2d_vit_base"),
        input_size=input_size,
        patch_size=patch_size,
        sample_rate=_sample_rate(get("sr") or "16k") or 16000,
        source="the training arguments stored in the checkpoint",
    )


def _from_options(options: M2DOptions | None) -> dict[str, Any] | None:
    if options is None or options.input_size is None:
        return None

    def read(reader, key: str, form: str):
        value = getattr(options, key)
        found = reader(value)
        if found is None:
            raise CheckpointError(f"model config (-g): {key} must look like {form}, got {value!r}")
        return found

    return dict(
        model_name=str(options.model_name or "m2d_vit_base"),
        input_size=read(_pair, "input_size", "'80x608' or [80, 608]"),
        patch_size=read(_pair, "patch_size", "'16x16' or [16, 16]"),
        sample_rate=read(_sample_rate, "sample_rate", "'16k' or 16000") if options.sample_rate is not None else 16000,
        source="the model config (-g)",
    )


def _shapes(state: Mapping[str, Any]) -> dict[str, Any]:
    kernel = tuple(state["patch_embed.proj.weight"].shape)  # [D, 1, pf, pt]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    return dict(
        embed_dim=int(state["cls_token"].shape[-1]),
        patch_size=(int(kernel[2]), int(kernel[3])),
        in_chans=int(kernel[1]),
        pos_rows=int(state["pos_embed"].shape[1]),
        depth=depth,
        mlp_hidden=int(state["blocks.0.mlp.fc1.weight"].shape[0]),
    )


def resolve_config(loaded: "LoadedCheckpoint", options: "M2DOptions | None" = None,
                   release_folder: str | None = None) -> M2DConfig:
    """Sizes from -g, else the release folder name, else the file name, else the folder name of
    the release the file is a copy of (``release_folder``, for a renamed copy), else the stored
    args; checked against the tensors."""
    shapes = _shapes(loaded.encoder_state)
    path = loaded.path
    candidates = [
        _from_options(options),
        parse_release_name(path.parent.name),
        parse_release_name(path.stem),
        parse_release_name(release_folder) if release_folder else None,
        _from_args(loaded.args),
    ]
    found = [c for c in candidates if c is not None]
    if not found:
        raise CheckpointError(
            f"{path}: cannot tell the M2D input and patch size. The official files keep them in the "
            f"release folder name (e.g. m2d_vit_base-80x608p16x16-221006-mr7/checkpoint-300.pth): keep "
            f"that folder name, or give them with -g (a YAML with input_size: 80x608, patch_size: 16x16). "
            f"The weights have patch size {shapes['patch_size'][0]}x{shapes['patch_size'][1]} and "
            f"{shapes['pos_rows'] - 1} positions."
        )
    chosen = found[0]
    pf, pt = chosen["patch_size"]
    n_mels, unit = chosen["input_size"]
    expected_rows = 1 + (n_mels // pf) * (unit // pt) if pf and pt and n_mels % pf == 0 else None
    problems = []
    if shapes["patch_size"] != (pf, pt):
        problems.append(f"patch size {shapes['patch_size'][0]}x{shapes['patch_size'][1]} (the name says {pf}x{pt})")
    if expected_rows is not None and shapes["pos_rows"] != expected_rows:
        problems.append(f"{shapes['pos_rows']} positional rows (input {n_mels}x{unit} with patch {pf}x{pt} needs {expected_rows})")
    if shapes["in_chans"] != 1:
        problems.append(f"{shapes['in_chans']} input channels (M2D has 1)")
    if chosen["sample_rate"] not in FRONT_ENDS:
        problems.append(f"sample rate {chosen['sample_rate']} (M2D has 16k or 32k)")
    if problems:
        others = [c["source"] for c in found[1:]]
        raise CheckpointError(
            f"{path}: {chosen['source']} disagrees with the weights, which have {'; '.join(problems)}. "
            f"The folder name is part of the official format: restore the release folder name, or give "
            f"input_size/patch_size with -g."
            + (f" (Other sources: {', '.join(others)}.)" if others else "")
        )
    embed_dim = shapes["embed_dim"]
    # Every released size (ViT-Base 768/12, ViT-Large 1024/16) uses 64-dimensional heads.
    num_heads = max(1, embed_dim // 64)
    return M2DConfig(
        input_size=(n_mels, unit),
        patch_size=(pf, pt),
        sample_rate=chosen["sample_rate"],
        embed_dim=embed_dim,
        depth=shapes["depth"],
        num_heads=num_heads,
        mlp_ratio=shapes["mlp_hidden"] / embed_dim,
        model_name=chosen["model_name"],
    )


