"""Optimiser, learning-rate schedule and EMA-target helpers of the training stack."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

from .config import ConfigError, TrainConfig

__all__ = ["timm_no_weight_decay", "param_groups", "build_optimizer", "WarmupCosine", "LinearSchedule", "ema_update"]


def timm_no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """timm's ``add_weight_decay`` rule: biases and 1-D tensors (norms, tokens) are not decayed."""
    return param.ndim <= 1 or name.endswith(".bias")


def param_groups(model: nn.Module, weight_decay: float,
                 no_weight_decay: Callable[[str, torch.Tensor], bool] = timm_no_weight_decay) -> list[dict]:
    """Two AdamW groups, ``no_weight_decay(name, param)`` choosing the undecayed parameters;
    frozen parameters (EMA targets, fixed positional tables) are left out."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if no_weight_decay(name, param) else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float,
                    no_weight_decay: Callable[[str, torch.Tensor], bool] = timm_no_weight_decay) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, no_weight_decay)
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError("train.optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes, GPU only); "
                              "or use train.optimizer: adamw") from None
        return bnb.optim.AdamW8bit(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)


class WarmupCosine:
    """Per-step learning rate: linear warm-up from 0 to ``lr`` over ``warmup`` steps, then a
    half-cycle cosine down to ``lr * min_ratio`` at ``total`` steps (MAE's ``adjust_learning_rate``
    evaluated per iteration); ``shape="linear"`` decays linearly instead, ``"constant"`` keeps
    ``lr``. Stateless apart from the step, so resuming is exact."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, warmup: int, total: int, min_ratio: float = 0.0,
                 shape: str = "cosine", decay_steps: int | None = None):
        self.optimizer = optimizer
        self.shape = shape
        self.base_lr = lr
        self.warmup = max(0, int(warmup))
        self.total = max(1, int(total))
        #: length of the decay after the warm-up: ``total - warmup`` (MAE), or longer than the run
        #: (Dasheng's trainer decays over all ``total`` steps after its warm-up, ending above min)
        self.decay_steps = max(1, int(decay_steps)) if decay_steps is not None else max(1, self.total - self.warmup)
        self.min_lr = lr * min_ratio
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr * step / self.warmup
        progress = min(1.0, (step - self.warmup) / self.decay_steps)
        if self.shape == "constant":
            return self.base_lr
        if self.shape == "linear":
            return self.base_lr + (self.min_lr - self.base_lr) * progress
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> float:
        return self.lr_at(self.step_count)

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "base_lr": self.base_lr, "warmup": self.warmup, "total": self.total,
                "min_lr": self.min_lr}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


class LinearSchedule:
    """``start + (end - start) * step / (total - 1)``: M2D's EMA decay schedule (clamped)."""

    def __init__(self, start: float, end: float, total: int):
        self.start, self.end, self.total = float(start), float(end), max(2, int(total))

    def __call__(self, step: int) -> float:
        t = min(max(step, 0), self.total - 1) / (self.total - 1)
        return self.start + (self.end - self.start) * t


@torch.no_grad()
def ema_update(target: Iterable[nn.Parameter], online: Iterable[nn.Parameter], decay: float) -> None:
    """``target = decay * target + (1 - decay) * online``, one fused kernel per list."""
    target, online = list(target), list(online)
    if len(target) != len(online):
        raise ValueError("EMA target and online networks differ in their number of parameters")
    torch._foreach_lerp_(target, [p.detach().to(t.dtype) for p, t in zip(online, target)], 1.0 - decay)
