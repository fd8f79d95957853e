"""Readers for every released M2D weight file, and the model configuration they imply.

Formats (all read unchanged):

* full pre-training checkpoints ``{'model', 'optimizer', 'epoch', 'scaler', 'args'}`` with a
  pickled ``argparse.Namespace``; 2022-2023 files have no ``norm_stats``, newer ones do; extra
  heads are ignored: M2D-S/M2D-X/M2D-AS ``offline_predictor``, M2D-CLAP ``audio_proj``/``logit_scale``,
  the predictor (``decoder_*``) and the EMA target (``target_*``);
* encoder-only files (a flat dict of the encoder tensors and ``norm_stats``);
* EVAR fine-tuned files (flat, ``module.ar.runtime.backbone.`` prefix, plus the task head);
* the 2025 M2D-CLAP checkpoint (encoder under ``backbone.``, plus the text encoder).

Configuration, like the official runtime: parse ``<model>-<F>x<T>p<pf>x<pt>[p<sr>]-...`` from the
release folder (the file's parent folder), then from the file name, then the ``args`` stored in
full checkpoints; the layer sizes come from the tensors. A source whose sizes disagree with the
tensors is an error, not a silent mis-load.
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
from .model import FRONT_ENDS, M2DConfig

__all__ = [
    "LoadedCheckpoint",
    "parse_release_name",
    "read_checkpoint",
    "resolve_config",
    "find_weight_file",
]

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


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
_SIZE = re.compile(r"(\d+)x(\d+)")


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
    size, patch = _SIZE.fullmatch(params[0]), _SIZE.fullmatch(params[1])
    if not size or not patch:
        return None
    sr_text = params[2] if len(params) > 2 else "16k"
    rate = re.fullmatch(r"(\d+)k", sr_text)
    if not rate:
        return None
    return dict(
        model_name=fields[0],
        input_size=(int(size.group(1)), int(size.group(2))),
        patch_size=(int(patch.group(1)), int(patch.group(2))),
        sample_rate=int(rate.group(1)) * 1000,
        extra=tuple(params[3:]),
        source=f"the name {name!r}",
    )


def _from_args(args: Any) -> dict[str, Any] | None:
    if args is None:
        return None
    get = (lambda k: getattr(args, k, None)) if not isinstance(args, Mapping) else args.get
    input_size, patch_size = get("input_size"), get("patch_size")

    def pair(value):
        if isinstance(value, str):
            match = _SIZE.fullmatch(value)
            return (int(match.group(1)), int(match.group(2))) if match else None
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return int(value[0]), int(value[1])
        return None

    input_size, patch_size = pair(input_size), pair(patch_size)
    if not input_size or not patch_size:
        return None
    sr_text = str(get("sr") or "16k")
    rate = re.fullmatch(r"(\d+)k", sr_text)
    return dict(
        model_name=str(get("model") or "m2d_vit_base"),
        input_size=input_size,
        patch_size=patch_size,
        sample_rate=int(rate.group(1)) * 1000 if rate else 16000,
        extra=(),
        source="the training arguments stored in the checkpoint",
    )


def _from_options(options: Mapping[str, Any]) -> dict[str, Any] | None:
    if not any(k in options for k in ("input_size", "patch_size", "sample_rate")):
        return None

    def pair(value, key):
        if isinstance(value, str) and _SIZE.fullmatch(value.strip()):
            a, b = _SIZE.fullmatch(value.strip()).groups()
            return int(a), int(b)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return int(value[0]), int(value[1])
        raise CheckpointError(f"model config (-g): {key} must look like '80x608' or [80, 608], got {value!r}")

    missing = [k for k in ("input_size", "patch_size") if k not in options]
    if missing:
        raise CheckpointError(f"model config (-g): give both input_size and patch_size (missing {', '.join(missing)})")
    rate = options.get("sample_rate", 16000)
    rate = int(str(rate).rstrip("kK")) * 1000 if str(rate).lower().endswith("k") else int(rate)
    return dict(
        model_name=str(options.get("model_name", "m2d_vit_base")),
        input_size=pair(options["input_size"], "input_size"),
        patch_size=pair(options["patch_size"], "patch_size"),
        sample_rate=rate,
        extra=(),
        source="the model config (-g)",
    )


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
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


def resolve_config(loaded: LoadedCheckpoint, options: Mapping[str, Any] | None = None) -> M2DConfig:
    """Sizes from -g, else the release folder name, else the file name, else the stored args;
    checked against the tensors."""
    options = options or {}
    shapes = _shapes(loaded.encoder_state)
    path = loaded.path
    candidates = [
        _from_options(options),
        parse_release_name(path.parent.name),
        parse_release_name(path.stem),
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
        extra=tuple(chosen.get("extra", ())),
    )


def namespace_args(config: M2DConfig, **more: Any) -> argparse.Namespace:
    """The ``args`` Namespace that official trainers pickle into full checkpoints (for writers)."""
    return argparse.Namespace(
        model=config.model_name,
        input_size=list(config.input_size),
        patch_size=list(config.patch_size),
        sr=f"{config.sample_rate // 1000}k",
        **more,
    )
