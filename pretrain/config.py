"""Run configuration: one YAML file with a section per concern, checked against dataclasses.

A recipe config looks like::

    recipe: m2d
    model: {...}        # the recipe's model dataclass
    objective: {...}    # the recipe's loss settings
    data: {...}         # the recipe's data settings
    train: {...}        # TrainConfig below: optimiser, schedule, runtime (shared by all recipes)

Unknown keys are errors that name the section and the known keys, so a typo never silently
falls back to a default. ``--set section.key=value`` overrides any value from the command line.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..upstreams.common.config import ConfigError, from_dict

__all__ = ["ConfigError", "TrainConfig", "from_dict", "load_yaml", "apply_overrides", "CONFIG_DIR", "shipped_config"]

#: the shipped configurations of the official full-size runs (and tiny ones for tests/demos)
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TrainConfig:
    """Optimiser, schedule and runtime settings shared by every recipe.

    Batch sizes are per process: the effective batch is ``batch_size * accum_steps * world size``
    (printed at start). Give either ``epochs`` or ``total_steps``; ``warmup_epochs`` or
    ``warmup_steps``. ``lr`` is absolute; when it is null, ``blr * effective_batch / 256`` is used
    (the MAE/M2D rule).
    """

    batch_size: int = 8
    accum_steps: int = 1
    epochs: float | None = None
    total_steps: int | None = None
    #: ``steps_per_epoch`` overrides the data-derived epoch length (Dasheng counts fixed-length
    #: "epochs" of 15,000 iterations over resampled shards)
    steps_per_epoch: int | None = None
    lr: float | None = None
    blr: float = 3e-4
    #: after the warm-up: "cosine" (half cycle), "linear" (decay) or "constant"; all end at
    #: ``lr * min_lr_ratio`` (constant: stays at lr)
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    warmup_epochs: float | None = None
    warmup_steps: int | None = None
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    #: "adamw" (torch) or "adamw8bit" (bitsandbytes, GPU only; the official Dasheng optimiser)
    optimizer: str = "adamw"
    #: max gradient norm; null disables clipping
    clip_grad: float | None = 3.0
    #: "fp32", "bf16" (GPU or CPU) or "fp16" (GPU, with a gradient scaler) autocast; front ends
    #: and losses always run in fp32
    precision: str = "fp32"
    compile: bool = False
    seed: int = 0
    num_workers: int = 4
    device: str = "auto"
    log_every: int = 20
    #: write a resumable checkpoint every this many optimiser steps (and at the end)
    save_every: int = 1000
    keep_last: int = 3
    #: also write the official-layout export at every checkpoint (else only at the end)
    export_every_save: bool = False
    #: a step whose gradient norm is not finite is skipped (no update; counted and logged, as
    #: MelHuBERT's runner does); after this many consecutive skips the run saves and stops
    max_skipped_steps: int = 10
    #: validation on the recipe's ``data.valid`` list with its own loss in eval mode: every
    #: ``valid_every`` steps or ``valid_every_epochs`` epochs (default: once per epoch) and at the
    #: last step; ``valid_batch_size`` per process (default: ``batch_size``)
    valid_every: int | None = None
    valid_every_epochs: float | None = None
    valid_batch_size: int | None = None
    #: keep the model states of the ``keep_best`` best validations (0: none) by ``best_metric`` (a
    #: validation value: ``loss`` or one the recipe logs), lower (``min``) or higher (``max``) better
    keep_best: int = 0
    best_metric: str = "loss"
    best_mode: str = "min"
    #: at the end of training, also export the best state (``best``) or the average of the kept
    #: best states (``average``, Dasheng's ``average_final_model``) in the official layout
    export_best: str = "none"
    #: a shell command started in the background at each save (M2D's quick_eval.sh pattern), with
    #: ``{checkpoint}``, ``{export}`` (the official-layout export of that save), ``{step}``, ``{run}``
    on_save: str | None = None

    def validate(self) -> None:
        if self.batch_size < 1 or self.accum_steps < 1:
            raise ConfigError("train.batch_size and train.accum_steps must be >= 1")
        if (self.epochs is None) == (self.total_steps is None):
            raise ConfigError("give exactly one of train.epochs and train.total_steps")
        if self.warmup_epochs is not None and self.warmup_steps is not None:
            raise ConfigError("give at most one of train.warmup_epochs and train.warmup_steps")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"train.precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.optimizer not in ("adamw", "adamw8bit"):
            raise ConfigError(f"train.optimizer must be adamw or adamw8bit, got {self.optimizer!r}")
        if self.max_skipped_steps < 1:
            raise ConfigError("train.max_skipped_steps must be >= 1")
        if self.save_every < 1 or self.keep_last < 1 or self.log_every < 1:
            raise ConfigError("train.save_every, train.keep_last and train.log_every must be >= 1")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"train.schedule must be cosine, linear or constant, got {self.schedule!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError("train.min_lr_ratio must lie in [0, 1]")
        if self.valid_every is not None and self.valid_every_epochs is not None:
            raise ConfigError("give at most one of train.valid_every (steps) and train.valid_every_epochs")
        if (self.valid_every is not None and self.valid_every < 1) or (
                self.valid_every_epochs is not None and self.valid_every_epochs <= 0):
            raise ConfigError("train.valid_every must be >= 1 step and train.valid_every_epochs > 0")
        if self.valid_batch_size is not None and self.valid_batch_size < 1:
            raise ConfigError("train.valid_batch_size must be >= 1")
        if self.keep_best < 0:
            raise ConfigError("train.keep_best must be >= 0 (0 keeps no best states)")
        if self.best_mode not in ("min", "max"):
            raise ConfigError(f"train.best_mode must be min or max, got {self.best_mode!r}")
        if self.export_best not in ("none", "best", "average"):
            raise ConfigError(f"train.export_best must be none, best or average, got {self.export_best!r}")
        if self.export_best != "none" and self.keep_best < 1:
            raise ConfigError(f"train.export_best: {self.export_best} needs train.keep_best >= 1 (and a "
                              "validation list, data.valid)")
        if self.on_save is not None:
            from .validation import SaveCommand

            SaveCommand.check(self.on_save)


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        shipped = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"config file {path} does not exist. Shipped configs (in {CONFIG_DIR}): {', '.join(shipped)}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping (sections recipe/model/objective/data/train)")
    return data


def shipped_config(name: str) -> Path:
    """Path of a shipped config by file name (with or without ``.yaml``)."""
    path = CONFIG_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(f"no shipped config {name!r}; available: "
                          f"{', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.yaml')))}")
    return path


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """``["train.lr=1e-3", "data.noise_ratio=0.2"]`` -> nested updates (values parsed as YAML)."""
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = config
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {key} is not a section")
            node = child
        node[keys[-1]] = value
    return config


@dataclass
class RunPaths:
    """Where a run writes: checkpoints for resuming, TensorBoard logs, official-layout exports,
    the best validated model states, the logs of the on_save command."""

    root: Path
    checkpoints: Path = field(init=False)
    logs: Path = field(init=False)
    exports: Path = field(init=False)
    best: Path = field(init=False)
    on_save: Path = field(init=False)

    def __post_init__(self):
        self.root = Path(self.root)
        self.checkpoints = self.root / "checkpoints"
        self.logs = self.root / "tensorboard"
        self.exports = self.root / "export"
        self.best = self.root / "best"
        self.on_save = self.root / "on_save"
