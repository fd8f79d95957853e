"""The official Dasheng checkpoint formats: one reader and one writer each, and the fingerprint.

* ``pip`` (the pip package / Zenodo ``dasheng_base.pt`` ...): ``{"model": state_dict, "config": ...}``.
  The state dict is the unprefixed encoder including the torchaudio front-end buffers
  (``front_end.0.spectrogram.window``, ``front_end.0.mel_scale.fb``) and ``init_bn.1.*``. The
  ``config`` may be a training configuration with arbitrary objects and is not used: the official
  loaders override it too, so the architecture comes from the tensor shapes.
* ``huggingface`` (``mispeech/dasheng-*``): a folder with ``model.safetensors`` (or the file itself)
  whose keys carry an ``encoder.`` prefix and no front-end buffers, plus ``config.json``.
* A bare encoder state dict (either prefix) is read as well.

Readers return the model's own parameter names (:class:`~.model.DashengEncoder`); writers take
them. Written files are what ``Dasheng.from_pretrained`` and ``dasheng_local`` read.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..common.checkpoint import CheckpointError, check_family, load_checkpoint
from ..common.files import atomic_write, save_atomic, write_text_atomic
from .config import DashengConfig, heads_for_width

__all__ = ["load_dasheng", "read_state_dict", "config_from_state_dict", "to_model_keys", "to_official_keys",
           "write_pip", "write_huggingface", "fingerprint", "HF_WEIGHT_FILES"]

logger = logging.getLogger(__name__)

FAMILY = "dasheng"
LOCAL_ENTRY = "dasheng_local"
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# official name -> name in DashengEncoder (everything else is identical)
_RENAMES = (
    ("front_end.0.spectrogram.window", "front_end.window"),
    ("front_end.0.mel_scale.fb", "front_end.mel_fb"),
    ("init_bn.1.", "front_end.bn."),
    ("init_bn.", "front_end.bn."),  # ports without the Rearrange wrappers (MiDashengLM)
)
# keys the HF files lack; the defaults computed by the model stand in for them
OPTIONAL_KEYS = frozenset({"front_end.window", "front_end.mel_fb", "front_end.bn.num_batches_tracked"})
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


def _fail(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: {problem}. `-u {LOCAL_ENTRY}` expects an official Dasheng checkpoint: "
                           "the pip/Zenodo .pt file or a Hugging Face mispeech/dasheng-* folder / model.safetensors.")


def _hf_files(path: Path) -> tuple[Path, Path | None]:
    """(weights file, config.json or None) of a Hugging Face folder or weights file."""
    if path.is_dir():
        for name in HF_WEIGHT_FILES:
            if (path / name).is_file():
                weights = path / name
                break
        else:
            raise CheckpointError(
                f"{path} is a folder without {' or '.join(HF_WEIGHT_FILES)}; pass a Hugging Face "
                f"mispeech/dasheng-* download folder or the checkpoint file itself to -u {LOCAL_ENTRY} -k.")
    else:
        weights = path
    config = weights.parent / "config.json"
    return weights, (config if config.is_file() else None)


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any], str]:
    """Load a checkpoint in either official layout; returns (encoder state dict with the official
    unprefixed names, Hugging Face config.json contents or {}, format name)."""
    weights, config_file = _hf_files(Path(path))
    obj = load_checkpoint(weights, family="Dasheng")
    check_family(obj, FAMILY, weights, entry=LOCAL_ENTRY)
    if not isinstance(obj, Mapping):
        raise _fail(weights, f"holds a {type(obj).__name__}, not a state dict")
    if "model" in obj and isinstance(obj["model"], Mapping):
        state, fmt = obj["model"], "pip"
    else:
        state, fmt = obj, "state_dict"
    state = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    for prefix in ("encoder.", "audio_encoder.", "module."):
        if any(k.startswith(prefix) for k in state) and "patch_embed.proj.weight" not in state:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            fmt = "huggingface" if prefix == "encoder." else fmt
    hf_config: dict[str, Any] = {}
    if config_file is not None and fmt == "huggingface":
        try:
            hf_config = json.loads(config_file.read_text())
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{config_file} is not valid JSON ({error}); download it again.") from error
    if "patch_embed.proj.weight" not in state:
        raise _fail(weights, "has no Dasheng encoder weights (no patch_embed.proj.weight)")
    return state, hf_config, fmt


def config_from_state_dict(state: Mapping[str, Tensor], hf_config: Mapping[str, Any] | None = None,
                           overrides: Mapping[str, Any] | None = None, where: str = "checkpoint") -> DashengConfig:
    """Architecture from the tensor shapes; only the head count needs a rule (see heads_for_width)."""
    proj = state["patch_embed.proj.weight"]
    if proj.dim() != 4 or proj.shape[1] != 1:
        raise CheckpointError(f"{where}: patch_embed.proj.weight has shape {tuple(proj.shape)}, expected [D, 1, n_mels, 4]")
    embed_dim, _, n_mels, patch_frames = proj.shape
    depth = 1 + max((int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))), default=-1)
    if depth == 0:
        raise CheckpointError(f"{where}: no transformer blocks (blocks.0.*) in the encoder weights")
    if "time_pos_embed" not in state or "blocks.0.mlp.fc1.weight" not in state:
        raise CheckpointError(f"{where}: incomplete Dasheng encoder (time_pos_embed or blocks.0.mlp missing)")
    overrides = dict(overrides or {})
    encoder_kwargs = (hf_config or {}).get("encoder_kwargs") or {}
    num_heads = overrides.pop("num_heads", None) or encoder_kwargs.get("num_heads") or heads_for_width(embed_dim)
    if not num_heads or embed_dim % int(num_heads):
        raise CheckpointError(
            f"{where}: cannot tell the number of attention heads of a {embed_dim}-wide encoder; "
            "set num_heads in the -g model config.")
    return DashengConfig(
        embed_dim=int(embed_dim), depth=depth, num_heads=int(num_heads),
        mlp_hidden_dim=int(state["blocks.0.mlp.fc1.weight"].shape[0]), n_mels=int(n_mels),
        patch_frames=int(patch_frames), chunk_patches=int(state["time_pos_embed"].shape[-1]),
    )


def fingerprint(obj: Any, keys: str) -> int | None:
    """Dasheng's separate time and frequency positional tables (rank 20, see ``detect_family``)."""
    return 20 if re.search(r"(^|\.)(time_pos_embed|freq_pos_embed)$", keys, re.M) else None


def to_model_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official names -> :class:`DashengEncoder` names."""
    out = {}
    for key, value in state.items():
        for old, new in _RENAMES:
            if key == old or (old.endswith(".") and key.startswith(old)):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def to_official_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """:class:`DashengEncoder` names -> the pip package's (``front_end.0.*``, ``init_bn.1.*``)."""
    out = {}
    for key, value in state.items():
        for official, ours in _RENAMES[:3]:
            if key == ours or (ours.endswith(".") and key.startswith(ours)):
                key = official + key[len(ours):]
                break
        out[key] = value.detach().cpu().clone()
    return out


def architecture_config(config: DashengConfig) -> dict[str, Any]:
    """The constructor arguments of the pip package's encoder for ``config`` (what its
    ``Dasheng.from_pretrained`` passes to ``AudioTransformerMAE_Encoder``)."""
    return {"embed_dim": config.embed_dim, "depth": config.depth, "num_heads": config.num_heads,
            "patch_size": [config.n_mels, config.patch_frames], "patch_stride": [config.n_mels, config.patch_frames],
            "target_length": config.chunk_patches * config.patch_frames, "n_mels": config.n_mels}


def write_pip(path: str | os.PathLike, config: DashengConfig, state: Mapping[str, Tensor],
              stored_config: Mapping[str, Any] | None = None) -> Path:
    """``{"model": official names, "config": ...}`` as the pip package reads it, written atomically.
    ``stored_config`` defaults to the architecture (:func:`architecture_config`); the Zenodo files
    store their training configuration there instead."""
    payload = {"model": to_official_keys(state),
               "config": dict(stored_config) if stored_config is not None else architecture_config(config)}
    save_atomic(payload, Path(path))
    return Path(path)


def write_huggingface(folder: str | os.PathLike, config: DashengConfig, state: Mapping[str, Tensor],
                      name: str = "dasheng-base") -> Path:
    """A Hugging Face ``mispeech/dasheng-*`` folder: ``encoder.``-prefixed safetensors without the
    torchaudio front-end buffers, and its config.json."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"encoder.{k}": v.contiguous() for k, v in to_official_keys(state).items()
               if not k.startswith("front_end")}
    atomic_write(folder / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    hf_config = {
        "architectures": ["DashengModel"],
        "auto_map": {"AutoConfig": "configuration_dasheng.DashengConfig",
                     "AutoModel": "modeling_dasheng.DashengModel"},
        "encoder_kwargs": {k: v for k, v in architecture_config(config).items() if k != "n_mels"},
        "loss": "BCELoss", "model_type": "dasheng", "name": name,
        "torch_dtype": "float32", "transformers_version": "4.38.2",
    }
    write_text_atomic(folder / "config.json", json.dumps(hf_config, indent=2))
    return folder


def load_dasheng(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                 overrides: Mapping[str, Any] | None = None):
    """Build a :class:`DashengEncoder` with the weights of an official checkpoint, memory-lean.

    The model is created on the ``meta`` device and takes the loaded (memory-mapped) tensors
    over with ``assign=True``, so a 1.2B checkpoint needs about one copy of its weights in RAM.
    """
    from .model import DashengEncoder, DashengFrontEnd

    path = Path(path)
    state, hf_config, fmt = read_state_dict(path)
    config = config_from_state_dict(state, hf_config, overrides, where=str(path))
    state = to_model_keys(state)
    front_end = DashengFrontEnd(config.n_mels)  # real default buffers: HF files lack them
    with torch.device("meta"):
        model = DashengEncoder(config, front_end=front_end)
    reference = model.state_dict()  # meta tensors: names and shapes only
    missing = set(reference) - set(state) - OPTIONAL_KEYS
    unexpected = sorted(set(state) - set(reference))
    if missing:
        raise CheckpointError(f"{path}: incomplete Dasheng checkpoint ({fmt} layout), missing "
                              f"{', '.join(sorted(missing)[:6])}{' ...' if len(missing) > 6 else ''}; download it again.")
    if unexpected:
        logger.warning("%s: ignoring %d tensors that are not part of the Dasheng encoder (%s ...)",
                       path, len(unexpected), ", ".join(unexpected[:3]))
    for key, tensor in reference.items():
        if key in state and state[key].shape != tensor.shape:
            raise CheckpointError(f"{path}: tensor {key} has shape {tuple(state[key].shape)}, expected "
                                  f"{tuple(tensor.shape)} for {config}; the file is damaged or not Dasheng.")
    model.load_state_dict({k: v for k, v in state.items() if k in reference}, strict=False, assign=True)
    # The front end and its BatchNorm stay float32 whatever the encoder's dtype.
    model.front_end.float()
    for module in (model.patch_embed, *model.blocks, model.norm):
        module.to(dtype)
    for name in ("time_pos_embed", "freq_pos_embed"):
        setattr(model, name, torch.nn.Parameter(getattr(model, name).detach().to(dtype)))
    return model.eval(), fmt
