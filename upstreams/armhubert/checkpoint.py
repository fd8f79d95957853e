"""Importer for the released ARMHuBERT / MaskHuBERT / STaRHuBERT checkpoint files.

A release ``.ckpt`` is a PyTorch-Lightning 1.7 checkpoint of the distillation module:
``state_dict`` holds the frozen teacher under ``teacher_model.`` and the student under
``student_model.``; ``hyper_parameters['cfg']`` is the training yaml (its ``distiller`` section
describes the student); ``optimizer_states`` pickles s3prl schedule objects. The file is
memory-mapped, so the ~95M teacher parameters are never read into memory.

Also accepted: a bare student state dict (keys ``feature_extractor.…``, ``encoder.…``), alone or
under ``state_dict``/``model``, given with a ``-g`` yaml.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch

from ..common.checkpoint import CheckpointError, check_family, load_checkpoint
from ..common.config import ConfigError as YamlConfigError
from ..common.config import load_model_config
from .config import ARM, STAR, ConfigError, OPTION_KEYS, StudentConfig, student_config
from .model import StudentModel

__all__ = ["STUDENT_PREFIX", "LoadedStudent", "read_student", "build_student"]

logger = logging.getLogger(__name__)

STUDENT_PREFIX = "student_model."
FAMILY = {ARM: "armhubert", STAR: "starhubert"}


class LoadedStudent:
    """A student model with its configuration and the options found in the yaml."""

    def __init__(self, model: StudentModel, options: dict[str, Any], source: str):
        self.model = model
        self.options = options
        self.source = source


def _student_state(obj: Any, path: Path, entry: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dictionary ({entry}).")
    state = obj.get("state_dict", obj.get("model", obj))
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(state).__name__}, not a mapping of tensors.")
    student = {k[len(STUDENT_PREFIX):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(STUDENT_PREFIX)}
    if not student and any(isinstance(k, str) and k.startswith("feature_extractor.conv_layers.") for k in state):
        student = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not student:
        some = ", ".join(list(map(str, state.keys()))[:5])
        raise CheckpointError(
            f"{path} has no '{STUDENT_PREFIX}*' weights (first keys: {some}); -u {entry} expects the "
            "Lightning .ckpt written by the ARMHuBERT/STaRHuBERT distillation (or a bare student state dict)."
        )
    return student


def _config_from_checkpoint(obj: Mapping) -> Mapping | None:
    hparams = obj.get("hyper_parameters")
    if isinstance(hparams, Mapping):
        cfg = hparams.get("cfg", hparams)
        if isinstance(cfg, Mapping) and isinstance(cfg.get("distiller"), Mapping):
            return cfg["distiller"]
    return None


def _split_yaml(cfg: Mapping) -> tuple[Mapping | None, dict[str, Any]]:
    """A ``-g`` yaml is the training yaml (``distiller:`` section), a bare distiller mapping, or
    only our options (``official_batching``) -> (distiller or None, options)."""
    options = {k: cfg[k] for k in OPTION_KEYS if k in cfg}
    if isinstance(cfg.get("distiller"), Mapping):
        distiller = dict(cfg["distiller"])
    elif "encoder_embed_dim" in cfg or "conv_feature_layers" in cfg:
        distiller = {k: v for k, v in cfg.items() if k not in OPTION_KEYS}
    else:
        distiller = None
    if distiller is not None:
        for key in OPTION_KEYS:
            if key in distiller:
                options.setdefault(key, distiller.pop(key))
    return distiller, options


def build_student(distiller: Mapping, flavour: str, state: Mapping[str, torch.Tensor], *, where: str, path) -> StudentModel:
    """Construct the student from ``distiller`` and load ``state`` strictly, with clear errors."""
    try:
        cfg: StudentConfig = student_config(distiller, flavour, where=where)
    except ConfigError as error:
        raise CheckpointError(str(error)) from None
    model = StudentModel(cfg)
    state = dict(state)
    if flavour == STAR:  # the official STaR wrapper deletes the pre-training output projection
        for key in ("final_proj.weight", "final_proj.bias"):
            state.pop(key, None)
    if flavour == ARM and "mask_emb" not in state:
        state["mask_emb"] = model.mask_emb.detach()  # not needed for inference
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}{' …' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:4]}{' …' if len(unexpected) > 4 else ''}")
        if wrong:
            parts.append(f"shape mismatch (checkpoint vs config) {wrong[:3]}")
        hint = (
            " The weights look like a STaRHuBERT student: use starhubert_local."
            if flavour == ARM and not any(k.startswith("proj_head.") for k in state)
            else " The weights look like an ARMHuBERT/MaskHuBERT student: use armhubert_local."
            if flavour == STAR and any(k.startswith("proj_head.") for k in state)
            else " Check that the -g yaml belongs to this checkpoint."
        )
        raise CheckpointError(f"{path}: the student weights do not fit the config {where}: {'; '.join(parts)}.{hint}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def read_student(
    ckpt: str | os.PathLike,
    model_config: str | os.PathLike | Mapping | None,
    flavour: str,
    *,
    entry: str,
    fallback_config: Mapping | Callable[[], Mapping] | None = None,
) -> LoadedStudent:
    """Load the student of ``ckpt``; its config comes from ``-g`` if that has one, else from the
    checkpoint's ``hyper_parameters``, else ``fallback_config`` (the published architecture)."""
    path = Path(ckpt)
    family = FAMILY[flavour]
    obj = load_checkpoint(path, family=family)
    check_family(obj, family, path, entry)
    state = _student_state(obj, path, entry)
    try:
        yaml_cfg = load_model_config(model_config)
    except YamlConfigError as error:
        raise CheckpointError(f"{entry}: {error}") from None
    distiller, options = _split_yaml(yaml_cfg)
    where = f"(-g {model_config})"
    if distiller is None:
        distiller = _config_from_checkpoint(obj) if isinstance(obj, Mapping) else None
        where = f"(hyper_parameters of {path.name})"
    if distiller is None and fallback_config is not None:
        distiller = fallback_config() if callable(fallback_config) else fallback_config
        where = "(published configuration of the release)"
    if distiller is None:
        raise CheckpointError(
            f"{path} carries no model configuration (no hyper_parameters['cfg']['distiller']); "
            f"pass the companion yaml: -u {entry} -k {path} -g <training yaml>."
        )
    model = build_student(distiller, flavour, state, where=where, path=path)
    del obj, state  # drop the memory map of the file (teacher included)
    return LoadedStudent(model, options, str(path))
