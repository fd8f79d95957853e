"""The release format of the distilled students (ARMHuBERT, MaskHuBERT, STaRHuBERT): reader, writer, fingerprints.

A release ``.ckpt`` is a PyTorch-Lightning 1.7 checkpoint of the distillation module:
``state_dict`` holds the frozen teacher under ``teacher_model.`` and the student under
``student_model.``; ``hyper_parameters['cfg']`` is the training yaml (its ``distiller`` section
describes the student); ``optimizer_states`` pickles s3prl schedule objects. The file is
memory-mapped, so the ~95M teacher parameters are never read into memory.

Also accepted: a bare student state dict (keys ``feature_extractor.…``, ``encoder.…``), alone or
under ``state_dict``/``model``, given with a ``-g`` yaml.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch

from ..files import save_atomic, write_text_atomic
from ..checkpoint import CheckpointError, check_family, load_checkpoint
from ..config import ConfigError, load_model_config
from .config import ARM, OFFICIAL_DISTILLER_FIELDS, OPTION_KEYS, STAR, StudentConfig, student_config
from .model import StudentModel

__all__ = ["STUDENT_PREFIX", "LoadedStudent", "read_student", "build_student", "write_release", "official_distiller",
           "fingerprint_arm", "fingerprint_star"]


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
    except ConfigError as error:
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


# ---------------------------------------------------------------------------------------------
# Writing the release layout (what the official train.py / PyTorch-Lightning 1.7.7 saves)
# ---------------------------------------------------------------------------------------------
#: the ModelCheckpoint state key of the official train.py (monitor v_loss, one file per epoch)
LIGHTNING_CALLBACK_KEY = ("ModelCheckpoint{'monitor': 'v_loss', 'mode': 'min', 'every_n_train_steps': 0, "
                          "'every_n_epochs': 1, 'train_time_interval': None, 'save_on_train_epoch_end': True}")


def official_distiller(distiller: Mapping[str, Any], model: str) -> dict[str, Any]:
    """``distiller`` reduced to the keys the official ``-m model`` config class accepts, with the
    teacher initialisation switched off as the official wrappers force it."""
    if model not in OFFICIAL_DISTILLER_FIELDS:
        raise ValueError(f"unknown official model name {model!r}; use one of {', '.join(OFFICIAL_DISTILLER_FIELDS)}")
    known = OFFICIAL_DISTILLER_FIELDS[model]
    out = {k: v for k, v in distiller.items() if k in known}
    out["init_conv_layers"] = False
    out["init_encoder_layers"] = 0
    return out


def write_release(path: str | os.PathLike, student_state: Mapping[str, torch.Tensor], training_cfg: Mapping[str, Any], *,
                  epoch: int, global_step: int, teacher_state: Mapping[str, torch.Tensor] | None = None,
                  optimizer_states: list | None = None, scaler_state: Mapping | None = None,
                  hyper_parameters: Any = None, yaml_path: str | os.PathLike | None = None,
                  with_hparams: bool = True) -> Path:
    """Write a release ``.ckpt``: top-level keys in PyTorch-Lightning 1.7.7's order, ``state_dict``
    with the teacher (if given) under ``teacher_model.model.`` followed by the student under
    ``student_model.``, the training yaml in ``hyper_parameters['cfg']`` (a plain dict unless
    ``hyper_parameters`` is given), and optionally the yaml itself at ``yaml_path`` (what ``-g``
    takes; ``yaml.dump(sort_keys=False)`` as the official ``dump_yaml``)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    if teacher_state is not None:
        state.update({f"teacher_model.model.{k}": v for k, v in teacher_state.items()})
    state.update({f"{STUDENT_PREFIX}{k}": v for k, v in student_state.items()})
    checkpoint: dict[str, Any] = {
        "epoch": int(epoch),
        "global_step": int(global_step),
        "pytorch-lightning_version": "1.7.7",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": int(epoch) + 1,
                                                                               "completed": int(epoch)}}}},
        "callbacks": {LIGHTNING_CALLBACK_KEY: {
            "monitor": "v_loss", "best_model_score": None, "best_model_path": str(path),
            "current_score": None, "dirpath": str(path.parent), "best_k_models": {},
            "kth_best_model_path": "", "kth_value": torch.tensor(float("inf")), "last_model_path": str(path),
        }},
        "optimizer_states": list(optimizer_states or []),
        "lr_schedulers": [],
    }
    if scaler_state:
        checkpoint["NativeMixedPrecisionPlugin"] = dict(scaler_state)
    if with_hparams:
        checkpoint["hparams_name"] = "kwargs"
        checkpoint["hyper_parameters"] = hyper_parameters if hyper_parameters is not None else {"cfg": dict(training_cfg)}
    save_atomic(checkpoint, path)
    if yaml_path is not None:
        write_text_atomic(yaml_path, yaml.dump(_plain(training_cfg), sort_keys=False))
    return path


def _plain(obj: Any) -> Any:
    """Nested mappings/sequences as plain dicts/lists (yaml.dump writes no Python tags)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def fingerprint_arm(obj: Any, keys: str) -> int | None:
    """A distillation checkpoint whose student has projection heads or a mask embedding (rank 10),
    or a bare student with projection heads (rank 50)."""
    import re

    if STUDENT_PREFIX in keys:
        return 10 if re.search(r"student_model\.(proj_head|mask_emb)", keys) else None
    if "feature_extractor.conv_layers" in keys and re.search(r"(^|\n)proj_head\.", keys):
        return 50
    return None


def fingerprint_star(obj: Any, keys: str) -> int | None:
    """A distillation checkpoint whose student has no heads (rank 10), or any other wav2vec2-style
    student (rank 80, after s3prl's HuBERT and WavLM)."""
    import re

    if STUDENT_PREFIX in keys:
        return None if re.search(r"student_model\.(proj_head|mask_emb)", keys) else 10
    if "feature_extractor.conv_layers" in keys and "encoder.layers.0.self_attn" in keys:
        return 80
    return None
