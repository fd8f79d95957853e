"""What a recipe provides to the training stack, and the registry of recipes.

A recipe owns the model, its objective and its data; the :class:`~.trainer.Trainer` (or the
s3prl expert) owns the optimiser, schedule, precision, distribution, checkpoints and logging.
Adding a recipe = subclassing :class:`Recipe` and decorating it with :func:`register`.
"""
from __future__ import annotations

import abc

import importlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .config import ConfigError, TrainConfig, from_dict

__all__ = ["Recipe", "register", "get_recipe", "recipe_names"]

_REGISTRY: dict[str, type["Recipe"]] = {}
_ALIASES: dict[str, str] = {}


def register(name: str, *aliases: str) -> Callable[[type], type]:
    def wrap(cls):
        cls.name = name
        _REGISTRY[name] = cls
        for alias in aliases:
            _ALIASES[alias] = name
        return cls
    return wrap


def _modules() -> dict[str, str]:
    from . import RECIPE_MODULES

    return RECIPE_MODULES


def recipe_names() -> list[str]:
    for module in sorted(set(_modules().values())):
        importlib.import_module(module)
    return sorted(_REGISTRY)


def get_recipe(name: str) -> type["Recipe"]:
    key = name.replace("-", "_").lower()
    module = _modules().get(key)
    if module is not None:
        importlib.import_module(module)  # registers its recipes
    elif key not in _REGISTRY and key not in _ALIASES:
        recipe_names()  # an alias: declared by the @register of some recipe module
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        names = sorted({n for n in _modules()})
        raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(names)}")
    return _REGISTRY[key]


class Recipe(abc.ABC):
    """Base class. Subclasses set ``ModelConfig``/``ObjectiveConfig``/``DataConfig`` dataclasses
    and implement the hooks below."""

    name = "?"
    ModelConfig: type = object
    ObjectiveConfig: type = object
    DataConfig: type = object
    #: DDP option: True when some parameters may get no gradient in a step
    find_unused_parameters = False

    def __init__(self, config: dict):
        config = dict(config)
        stated = config.pop("recipe", None)
        if stated is not None and get_recipe(str(stated)) is not type(self):
            raise ConfigError(f"the config is for recipe {stated!r}, not {self.name!r}")
        unknown = set(config) - {"model", "objective", "data", "train", "recipe_state"}
        if unknown:
            raise ConfigError(f"unknown top-level section(s) {sorted(unknown)}; use model, objective, data, train")
        self.raw = config
        self.model_cfg = from_dict(self.ModelConfig, config.get("model"), "model")
        self.objective = from_dict(self.ObjectiveConfig, config.get("objective"), "objective")
        self.data = from_dict(self.DataConfig, config.get("data"), "data")
        self.train = from_dict(TrainConfig, config.get("train"), "train")
        #: values computed at start (e.g. data statistics) and kept in checkpoints
        self.state: dict[str, Any] = dict(config.get("recipe_state") or {})

    # -- hooks --------------------------------------------------------------------------------
    def prepare(self, ctx) -> None:
        """Run once before training on every rank (e.g. data statistics; rank 0 + broadcast)."""

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The model trained by this recipe."""

    @abc.abstractmethod
    def build_reader(self):
        """The map-style data reader (see :mod:`.data`)."""

    @abc.abstractmethod
    def make_example(self, raw: dict, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One training example (fixed-shape tensors) from a reader item and its own RNG."""

    def no_weight_decay(self, name: str, param: torch.Tensor) -> bool:
        """True for parameters the optimiser must not decay (default: timm's rule, biases and
        1-D tensors)."""
        from .optim import timm_no_weight_decay

        return timm_no_weight_decay(name, param)

    def decay_steps(self, total_steps: int, warmup_steps: int) -> int | None:
        """Steps of the learning-rate decay after the warm-up (default None: the rest of the run)."""
        return None

    def item_lengths(self, reader) -> Sequence[int] | None:
        """Per-item lengths to batch similar lengths together (s3prl's bucketing), or None for
        uniformly random batches (default)."""
        return None

    def collate(self, examples: list[dict]) -> dict:
        """Batch of examples (default: stack equal-shape tensors; override to pad variable lengths)."""
        from torch.utils.data import default_collate

        return default_collate(examples)

    @abc.abstractmethod
    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Loss of one micro-batch (already on the device) and detached scalars to log."""

    # -- validation (the trainer's ``data.valid`` hook) -----------------------------------------
    def build_valid_reader(self):
        """The reader of the validation list ``data.valid``, or None when the config names none."""
        return None

    def make_valid_example(self, raw: dict, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One validation example (default: as in training, from the item's fixed generator)."""
        return self.make_example(raw, rng)

    def compute_valid_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The validation loss of one batch (the model is in eval mode, without gradients;
        default: the training loss)."""
        return self.compute_loss(model, batch)

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> dict[str, float]:
        """Called after every optimiser step (``step`` = steps done so far), e.g. EMA updates."""
        return {}

    def seconds_per_example(self) -> float:
        """Audio seconds in one example (for the throughput display)."""
        return 0.0

    @abc.abstractmethod
    def export(self, model: nn.Module, folder: Path, *, step: int, epoch: int, optimizer: dict | None = None,
               scaler: dict | None = None) -> Path:
        """Write the model in its family's official layout; returns the file written."""

    # -- helpers ------------------------------------------------------------------------------
    def full_config(self) -> dict:
        """The configuration including computed ``recipe_state`` (saved in checkpoints)."""
        out = {"recipe": self.name, **{k: v for k, v in self.raw.items() if k != "recipe_state"}}
        out["recipe_state"] = dict(self.state)
        return out
