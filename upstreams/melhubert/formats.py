"""The MelHuBERT checkpoint formats: the reader, the writer and the fingerprint.

* Official runner files (nervjack2/MelHuBERT ``pretrain_expert.py`` and its predecessor in
  nervjack2/Speech-SSL-Compression): a dict with ``model`` (older files: ``Model``),
  ``Upstream_Config`` whose top key is ``melhubert`` (older: ``hubert``), ``Args`` (a pickled
  ``argparse.Namespace``), ``Runner``, ``Optimizer`` and ``Step``. Weight-pruned files of the
  compression repo (``Pruning``: ``*_orig`` / ``*_mask`` pairs) are folded into plain weights.
* Plain state dicts (our pre-training's export, or ``model.state_dict()``), optionally wrapped as
  ``{"model" | "state_dict": ..., "config" | "Upstream_Config": ...}``. Without a stored
  config the architecture comes from the ``melhubert:`` section of the ``-g`` yaml, or is
  inferred from the tensor shapes (64-dim attention heads, as in every released model).

:func:`write_runner_checkpoint` writes the runner layout (and its older vintages) for the
pre-training export and the test fixtures alike.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..common.checkpoint import CheckpointError, check_family, load_checkpoint
from ..common.files import save_atomic
from .config import MelHuBERTConfig

__all__ = ["ImportedCheckpoint", "read_melhubert_checkpoint", "import_state_dict", "infer_config", "fingerprint",
           "OFFICIAL_TRAINING_OPTIONS", "official_model_section", "runner_checkpoint", "write_runner_checkpoint",
           "VINTAGES"]

_RUNNER_KEYS = ("Args", "Runner", "Optimizer", "Step")
_CONFIG_TOP_KEYS = ("melhubert", "hubert")


@dataclass
class ImportedCheckpoint:
    config: MelHuBERTConfig
    state_dict: dict[str, torch.Tensor]
    layout: str  # a short description for the log line
    step: int | None = None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


_MODEL_ROOTS = ("pre_extract_proj", "encoder", "final_proj")
_WRAPPER_PREFIXES = ("module.", "upstream_model.", "model.")


def _strip_wrappers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DistributedDataParallel / wrapper prefixes and map parametrized weight-norm names."""
    out = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                rest = key[len(prefix):]
                if key.startswith(prefix) and rest.split(".", 1)[0] in _MODEL_ROOTS + tuple(p[:-1] for p in _WRAPPER_PREFIXES):
                    key, stripped = rest, True
                    break
        key = key.replace("pos_conv.0.parametrizations.weight.original0", "pos_conv.0.weight_g")
        key = key.replace("pos_conv.0.parametrizations.weight.original1", "pos_conv.0.weight_v")
        out[key] = value
    return out


def _fold_pruning(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``w_orig * w_mask -> w`` (what ``torch.nn.utils.prune.remove`` does)."""
    out = {}
    for key, value in state.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in state:
            out[key[: -len("_orig")]] = value * state[key[: -len("_orig")] + "_mask"].to(value.dtype)
        else:
            out[key] = value
    return out


def infer_config(state: Mapping[str, torch.Tensor], *, where: str) -> MelHuBERTConfig:
    """Architecture from tensor shapes (heads assumed 64-dim, as in the released models)."""
    try:
        proj = state["pre_extract_proj.weight"]
        conv_v = state["encoder.pos_conv.0.weight_v"]
        fc1 = state["encoder.layers.0.fc1.weight"]
    except KeyError as missing:
        raise CheckpointError(
            f"{where}: not a MelHuBERT state dict (no {missing.args[0]!r}); "
            "expected pre_extract_proj.*, encoder.pos_conv.0.*, encoder.layers.N.* (and final_proj.*)"
        ) from None
    final = state.get("final_proj.weight")
    dim = proj.shape[0]
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
    return MelHuBERTConfig(
        feat_emb_dim=proj.shape[1],
        encoder_layers=layers,
        encoder_embed_dim=dim,
        encoder_ffn_embed_dim=fc1.shape[0],
        encoder_attention_heads=max(1, dim // 64),
        conv_pos=conv_v.shape[2],
        conv_pos_groups=dim // conv_v.shape[1],
        num_cluster=final.shape[0] if final is not None else 512,
    )


def _config_section(upstream_config: Any, *, where: str) -> tuple[Mapping, str]:
    if not isinstance(upstream_config, Mapping):
        raise CheckpointError(f"{where}: Upstream_Config is a {type(upstream_config).__name__}, expected a dict.")
    for top in _CONFIG_TOP_KEYS:
        if top in upstream_config:
            return upstream_config[top], top
    raise CheckpointError(
        f"{where}: Upstream_Config has no 'melhubert' (or older 'hubert') section; its keys are "
        f"{sorted(map(str, upstream_config))}. This is not a MelHuBERT checkpoint."
    )


def import_state_dict(obj: Any, *, where: str, yaml_section: Mapping | None = None) -> ImportedCheckpoint:
    """Turn a loaded checkpoint object into (config, state dict); see the module docstring."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{where}: holds a {type(obj).__name__}, not a MelHuBERT checkpoint (a dict with "
            "'model' and 'Upstream_Config', or a state dict). Use -u melhubert_local with such a file."
        )
    if "Pruned_heads" in obj:
        raise CheckpointError(
            f"{where}: a head-pruned checkpoint (Pruned_heads) of Speech-SSL-Compression; only unpruned "
            "and weight-pruned MelHuBERT checkpoints are supported."
        )
    step = obj.get("Step") if isinstance(obj.get("Step"), int) else None
    weights_key = next((k for k in ("model", "Model", "state_dict") if isinstance(obj.get(k), Mapping)), None)
    is_runner_file = weights_key in ("model", "Model") and (
        "Upstream_Config" in obj or any(k in obj for k in _RUNNER_KEYS))

    if weights_key is not None:
        state = dict(obj[weights_key])
    elif _is_state_dict(obj):
        state = dict(obj)
        weights_key = None
    else:
        raise CheckpointError(
            f"{where}: no model weights found (top-level keys {sorted(map(str, obj))[:12]}); expected "
            "'model' (official MelHuBERT runner), 'Model' (older runner) or a plain state dict."
        )
    if not _is_state_dict(state):
        raise CheckpointError(f"{where}: the '{weights_key}' entry is not a state dict of tensors.")
    state = _strip_wrappers(_fold_pruning(state))

    config, layout = _config_of(obj, state, where=where, yaml_section=yaml_section, weights_key=weights_key,
                                is_runner_file=is_runner_file)
    final_proj = state.get("final_proj.weight")
    if final_proj is not None and final_proj.dim() == 2 and final_proj.shape[0] != config.num_cluster:
        # the pre-training classifier plays no part in the features; trust its stored shape
        config = dataclasses.replace(config, num_cluster=int(final_proj.shape[0]))
    return ImportedCheckpoint(config=config, state_dict=state, layout=layout, step=step)


def _config_of(obj: Mapping, state: Mapping[str, torch.Tensor], *, where: str, yaml_section: Mapping | None,
               weights_key: str | None, is_runner_file: bool) -> tuple[MelHuBERTConfig, str]:
    """The architecture: the stored config, else the ``-g`` yaml section, else the tensor shapes."""
    stored = obj.get("Upstream_Config", obj.get("config"))
    if stored is not None:
        section, top = _config_section(stored, where=where) if "Upstream_Config" in obj else (stored, "config")
        try:
            config = MelHuBERTConfig.from_official(section, where=f"{where} (Upstream_Config['{top}'])")
        except ValueError as error:
            raise CheckpointError(str(error)) from None
        layout = f"official runner checkpoint (Upstream_Config['{top}'], weights under '{weights_key}')" \
            if "Upstream_Config" in obj else "state dict with stored config"
    elif yaml_section is not None:
        try:
            config = MelHuBERTConfig.from_official(yaml_section, where="the melhubert section of the -g yaml")
        except ValueError as error:
            raise CheckpointError(str(error)) from None
        layout = "state dict + model yaml from -g"
    elif is_runner_file:
        raise CheckpointError(
            f"{where}: this official-runner checkpoint has no 'Upstream_Config' (the model yaml the "
            "runner stores next to the weights), so the architecture is unknown. Pass the model yaml "
            "the model was trained with via -g (a yaml with a top-level 'melhubert:' section, e.g. "
            "config_model_20ms.yaml of nervjack2/MelHuBERT)."
        )
    else:
        config = infer_config(state, where=where)
        layout = ("plain state dict (architecture inferred from shapes, 64-dim attention heads; "
                  "give melhubert.encoder_attention_heads in -g if different)")
    return config, layout


def fingerprint(obj: Any, keys: str) -> int | None:
    """The runner's ``Upstream_Config['melhubert' | 'hubert']`` (rank 5), or a transformer fed by
    ``pre_extract_proj`` without a waveform CNN (rank 60)."""
    config = obj.get("Upstream_Config") if isinstance(obj, Mapping) else None
    if isinstance(config, Mapping) and ("melhubert" in config or "hubert" in config):
        return 5
    if "feature_extractor.conv_layers" not in keys and "encoder.pos_conv.0" in keys and "pre_extract_proj" in keys:
        return 60
    return None


def read_melhubert_checkpoint(path: str | os.PathLike, *, yaml_section: Mapping | None = None,
                              entry: str = "melhubert_local") -> ImportedCheckpoint:
    obj = load_checkpoint(path, family="MelHuBERT")
    check_family(obj, "melhubert", path, entry=entry)
    return import_state_dict(obj, where=str(path), yaml_section=yaml_section)


# ---------------------------------------------------------------------------------------------
# Writing the official layout (pre-training exports, test fixtures)
# ---------------------------------------------------------------------------------------------
#: masking and loss keys of the official model yaml (``config/config_model_*.yaml``), with the
#: values of every released model
OFFICIAL_TRAINING_OPTIONS: dict[str, Any] = {
    "pred_masked_weight": 1.0, "pred_nomask_weight": 0.0, "skip_masked": False, "skip_nomask": True,
    "mask_prob": 0.7, "mask_length": 5, "mask_selection": "static", "mask_other": 0.0,
    "no_mask_overlap": False, "mask_min_space": 1, "learnable_mask_emb": False, "mask_before_proj": True,
}


def official_model_section(config: MelHuBERTConfig, training: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``melhubert:`` section of the official model yaml: the 17 architecture keys of
    ``config`` and the 12 masking/loss keys (``training`` overrides the official values)."""
    section = config.to_official()
    section.update(OFFICIAL_TRAINING_OPTIONS)
    unknown = set(training or {}) - set(OFFICIAL_TRAINING_OPTIONS)
    if unknown:
        raise ValueError(f"unknown MelHuBERT training option(s) {sorted(unknown)}")
    section.update(training or {})
    return section


def runner_args(frame_period_ms: int, expdir: str, **overrides: Any) -> argparse.Namespace:
    """The ``Args`` namespace of the official runner: ``run_pretrain.py`` with the released
    configs and seed 1337, unless ``overrides`` say otherwise."""
    fp = frame_period_ms
    args = dict(runner_config=f"config/config_runner_{fp}ms.yaml", upstream_config=f"config/config_model_{fp}ms.yaml",
                expdir=expdir, frame_period=fp, initial_weight="", init_optimizer_from_initial_weight=False,
                seed=1337, device="cuda")
    unknown = set(overrides) - set(args)
    if unknown:
        raise ValueError(f"unknown runner argument(s) {sorted(unknown)}; known: {sorted(args)}")
    return argparse.Namespace(**{**args, **overrides})


def runner_checkpoint(state_dict: Mapping[str, torch.Tensor], config: MelHuBERTConfig, *, step: int,
                      optimizer: dict, args: argparse.Namespace, runner: dict,
                      training: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The dict the official runner saves (``pretrain_expert.save_model``), in its key order:
    ``Optimizer``, ``Step``, ``Args``, ``Runner``, ``model``, ``Upstream_Config``."""
    return {
        "Optimizer": optimizer,
        "Step": int(step),
        "Args": args,
        "Runner": runner,
        "model": OrderedDict((k, v.detach().cpu().clone()) for k, v in state_dict.items()),
        "Upstream_Config": {"melhubert": official_model_section(config, training)},
    }


#: vintage -> what the runner file looks like (every one is read by :func:`import_state_dict`)
VINTAGES = {
    "melhubert": "official runner file, Upstream_Config['melhubert'], weights under 'model'",
    "hubert": "older runner file (Speech-SSL-Compression before 2022-12-08): Upstream_Config['hubert']",
    "Model": "older runner file: weights under 'Model' and Upstream_Config['hubert'] with extra sections",
}


def write_runner_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], config: MelHuBERTConfig,
                            *, step: int, optimizer: dict, args: argparse.Namespace, runner: dict,
                            training: Mapping[str, Any] | None = None, vintage: str = "melhubert",
                            model_section: Mapping[str, Any] | None = None) -> os.PathLike:
    """The official runner file (:func:`runner_checkpoint`), written atomically; ``vintage`` picks
    an older layout; ``model_section`` replaces the stored ``melhubert:`` yaml section."""
    if vintage not in VINTAGES:
        raise ValueError(f"unknown vintage {vintage!r}; one of {sorted(VINTAGES)}")
    checkpoint = runner_checkpoint(state_dict, config, step=step, optimizer=optimizer, args=args, runner=runner,
                                   training=training)
    if model_section is not None:
        checkpoint["Upstream_Config"]["melhubert"] = dict(model_section)
    if vintage in ("hubert", "Model"):  # the compression repo's older files
        checkpoint["Upstream_Config"] = {"hubert": checkpoint["Upstream_Config"]["melhubert"]}
    if vintage == "Model":
        checkpoint["Upstream_Config"].update(task={"sequence_length": 750}, adjust_init_weight={})
        checkpoint = {("Model" if k == "model" else k): v for k, v in checkpoint.items()}
    return save_atomic(checkpoint, path)
