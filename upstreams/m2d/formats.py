"""The official M2D weight files: readers, writers and the fingerprint.

Formats (all read unchanged):

* ``full``: pre-training checkpoints ``{'model', 'optimizer', 'epoch', 'scaler', 'args'}`` with a
  pickled ``argparse.Namespace``; 2022-2023 files have no ``norm_stats``, newer ones do; extra
  heads are ignored: M2D-S/M2D-X/M2D-AS ``offline_predictor``, M2D-CLAP ``audio_proj``/``logit_scale``,
  the predictor (``decoder_*``) and the EMA target (``target_*``);
* ``encoder_only``: a flat dict of the encoder tensors and ``norm_stats``
  (``util/to_encoder_only_weight.py``);
* ``evar``: EVAR fine-tuned files (flat, ``module.ar.runtime.backbone.`` prefix, plus the task head);
* ``clap2025``: the 2025 M2D-CLAP checkpoint (encoder under ``backbone.``, plus the text encoder);
* ``release_zip``: a GitHub release zip, ``<release folder>/<file>.pth``.

The configuration of a file (its sizes) comes from :func:`.config.resolve_config`. Writers take
the encoder's official tensor names (and optional extra heads) and write what the official
trainers, EVAR and the release zips hold; readers return the encoder tensors under those names.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..common.checkpoint import CheckpointError, check_family, load_checkpoint, strip_prefix
from ..common.files import atomic_write, save_atomic
from .config import DEFAULT_STATS, M2DConfig

__all__ = ["LoadedCheckpoint", "read_checkpoint", "find_weight_file", "fingerprint", "write_full", "write_encoder_only",
           "write_evar", "write_clap2025", "write_release_zip", "release_args"]

logger = logging.getLogger(__name__)

EVAR_PREFIX = "module.ar.runtime.backbone."
CLAP2025_PREFIX = "backbone."
_ENCODER_TOP = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias")
_BLOCK_PARAMS = (
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
)


@dataclass
class LoadedCheckpoint:
    """The encoder tensors of a weight file and what else it says about the model."""

    path: Path
    encoder_state: dict[str, torch.Tensor]
    norm_stats: tuple[float, float] | None
    args: Any
    layout: str
    heads: list[str] = field(default_factory=list)


def find_weight_file(path: Path, what: str = "M2D") -> Path:
    """A file is used as is; a folder (an unzipped release) must hold exactly one ``.pth``."""
    if path.is_file():
        return path
    candidates = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".pth", ".pt", ".ckpt", ".bin"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CheckpointError(f"{what}: no .pth weight file found in folder {path}.")
    listing = ", ".join(str(p.relative_to(path)) for p in candidates[:6])
    raise CheckpointError(f"{what}: folder {path} holds several weight files ({listing}); pass one of them with -k.")


def _tensor_state(obj: Any) -> tuple[dict[str, Any], Any, str]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict of tensors or a training checkpoint, found a {type(obj).__name__}")
    args = None
    if isinstance(obj.get("model"), Mapping):
        args = obj.get("args")
        return dict(obj["model"]), args, "full pre-training checkpoint"
    return dict(obj), None, "flat state dict"


def read_checkpoint(path: str | os.PathLike, *, entry: str = "m2d_local") -> LoadedCheckpoint:
    """Load any official M2D weight file and keep the encoder tensors (official key names)."""
    path = find_weight_file(Path(path))
    obj = load_checkpoint(path, family="M2D")
    check_family(obj, "m2d", path, entry=entry)
    try:
        state, args, layout = _tensor_state(obj)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}; is this an M2D weight file?") from None

    if any(k.startswith(EVAR_PREFIX) for k in state):
        heads = sorted({k.split(".")[1] for k in state if not k.startswith(EVAR_PREFIX)})
        state = strip_prefix(state, EVAR_PREFIX)
        layout = "EVAR fine-tuned state dict"
    elif any(k.startswith(CLAP2025_PREFIX) for k in state):
        heads = sorted({k.split(".")[0] for k in state if not k.startswith(CLAP2025_PREFIX)})
        state = strip_prefix(state, CLAP2025_PREFIX)
        layout = "M2D-CLAP 2025 checkpoint"
    else:
        heads = sorted({k.split(".")[0] for k in state if not _is_encoder_key(k) and k != "norm_stats"})
        if layout == "flat state dict":
            layout = "encoder-only state dict" if not heads else "flat state dict"

    missing = [k for k in _ENCODER_TOP if k not in state]
    if missing or "blocks.0.attn.qkv.weight" not in state:
        found = ", ".join(sorted(state)[:8])
        raise CheckpointError(
            f"{path} is not an M2D encoder checkpoint: missing {', '.join(missing) or 'blocks.0.*'} "
            f"(found keys: {found}{', ...' if len(state) > 8 else ''}). "
            f"Pass an official M2D .pth (full, encoder-only, EVAR or CLAP) to -u {entry}."
        )
    encoder = {k: v for k, v in state.items() if _is_encoder_key(k)}
    bad = [k for k, v in encoder.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries {bad[:4]} are not tensors; the file is not an M2D checkpoint.")
    norm_stats = None
    if isinstance(state.get("norm_stats"), torch.Tensor) and state["norm_stats"].numel() == 2:
        mean, std = (float(v) for v in state["norm_stats"].flatten())
        norm_stats = (mean, std)
    return LoadedCheckpoint(path, encoder, norm_stats, args, layout, heads)


def _is_encoder_key(key: str) -> bool:
    if key in _ENCODER_TOP:
        return True
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    return bool(match) and match.group(2) in _BLOCK_PARAMS


def fingerprint(obj: Any, keys: str) -> int | None:
    """A ViT patch embedding with a fused qkv projection (rank 30: after Dasheng's positional tables)."""
    if re.search(r"(^|\.)patch_embed\.proj\.weight$", keys, re.M) and re.search(r"(^|\.)blocks\.0\.attn\.qkv", keys, re.M):
        return 30
    return None


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------
def release_args(config: M2DConfig, **more: Any) -> argparse.Namespace:
    """The ``args`` Namespace the official trainers pickle into full checkpoints."""
    return argparse.Namespace(model=config.model_name, input_size=list(config.input_size),
                              patch_size=list(config.patch_size), sr=f"{config.sample_rate // 1000}k", **more)


def _with_stats(state: Mapping[str, torch.Tensor], norm_stats) -> dict[str, torch.Tensor]:
    out = dict(state)
    if norm_stats is not None:
        out["norm_stats"] = torch.as_tensor(norm_stats, dtype=torch.float32)
    return out


def write_full(path: str | os.PathLike, config: M2DConfig, encoder_state: Mapping[str, torch.Tensor], *,
               heads: Mapping[str, torch.Tensor] | None = None, norm_stats=None, args: argparse.Namespace | None = None,
               optimizer: Mapping | None = None, epoch: int = 0, scaler: Mapping | None = None) -> Path:
    """``{'model', 'optimizer', 'epoch', 'scaler', 'args'}`` as the official trainers save it;
    ``heads``: the predictor, EMA target and variant heads beside the encoder."""
    model = _with_stats({**encoder_state, **(heads or {})}, norm_stats)
    payload = {"model": model, "optimizer": dict(optimizer or {}), "epoch": epoch, "scaler": dict(scaler or {}),
               "args": args if args is not None else release_args(config)}
    return save_atomic(payload, path)


def write_encoder_only(path: str | os.PathLike, encoder_state: Mapping[str, torch.Tensor], *, norm_stats=DEFAULT_STATS,
                       extra: Mapping[str, torch.Tensor] | None = None) -> Path:
    """The flat dict of ``util/to_encoder_only_weight.py`` (+ ``extra``, e.g. CLAP's ``audio_proj``)."""
    return save_atomic(_with_stats({**encoder_state, **(extra or {})}, norm_stats), path)


def write_evar(path: str | os.PathLike, config: M2DConfig, encoder_state: Mapping[str, torch.Tensor], *,
               head: Mapping[str, torch.Tensor], norm_stats=DEFAULT_STATS) -> Path:
    """EVAR fine-tuning output: ``module.ar.runtime.backbone.*``, the nnAudio buffers and the task
    head (``head``: names under ``module.head.``)."""
    prefix = "module.ar.runtime."
    state = {f"{prefix}backbone.{k}": v for k, v in _with_stats(encoder_state, norm_stats).items()}
    n_fft = 400 if config.sample_rate == 16000 else 800
    state[f"{prefix}to_spec.mel_basis"] = torch.zeros(80, n_fft // 2 + 1)
    state[f"{prefix}to_spec.stft.wsin"] = torch.zeros(n_fft // 2 + 1, 1, n_fft)
    state[f"{prefix}to_spec.stft.wcos"] = torch.zeros(n_fft // 2 + 1, 1, n_fft)
    state[f"{prefix}to_spec.stft.window_mask"] = torch.ones(n_fft)
    state.update({f"module.head.{k}": v for k, v in head.items()})
    return save_atomic(state, path)


def write_clap2025(path: str | os.PathLike, config: M2DConfig, encoder_state: Mapping[str, torch.Tensor], *,
                   heads: Mapping[str, torch.Tensor], norm_stats=(-7.2618, 4.3512), epoch: int = 29) -> Path:
    """2025 M2D-CLAP: ``{'model': {backbone.*, audio_proj.*, text_encoder.*, ...}, 'args', 'epoch'}``."""
    model = {f"backbone.{k}": v for k, v in _with_stats(encoder_state, norm_stats).items()}
    model.update(heads)
    return save_atomic({"model": model, "args": release_args(config), "epoch": epoch}, path)


def write_release_zip(path: str | os.PathLike, folder: str, weight_file: str | os.PathLike) -> Path:
    """A GitHub-release-style zip: ``<folder>/<weight file name>``."""
    import zipfile

    weight_file = Path(weight_file)

    def write(handle):
        with zipfile.ZipFile(handle, "w") as archive:
            archive.write(weight_file, f"{folder}/{weight_file.name}")

    return atomic_write(path, write)
