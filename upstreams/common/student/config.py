"""The distilled student's configuration: the ``distiller`` section of the ARMHuBERT/STaRHuBERT training yaml.

The official wrappers build their model from ``cfg['distiller']`` of the companion yaml (``-g``)
and crash on any key their config dataclass does not know. Here unknown keys are logged and
ignored, the training-only keys are accepted silently, and architecture options that the
released models never use (conformer layers, time-reduction layers, pre-LN, ...) are refused with
a message instead of being built wrongly.
"""
from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..config import ConfigError, parse_bool, warn_unknown_keys
from ..wave_cnn import parse_conv_layers

__all__ = [
    "ConfigError",
    "StudentConfig",
    "ARM",
    "STAR",
    "known_keys",
    "student_config",
    "PUBLISHED",
    "OFFICIAL_DISTILLER_FIELDS",
]


#: output flavours. "arm": ARMHuBERT / ARMwavLM / MaskHuBERT (hidden states = the 12 projection
#: heads, 768-d); "star": STaRHuBERT / STaRWavLM (hidden states = the raw layer outputs).
ARM = "arm"
STAR = "star"


# The public fields of the official config dataclasses (models/<name>/model.py, the
# ``CustomStudentModelConfig`` of each ``-m`` model name): yamls written by the official training
# code load without a warning, and the writer keeps only these (the official wrappers pass
# ``cfg['distiller']`` to that class as keyword arguments, so a yaml may hold no other key).
_OFFICIAL_COMMON = (
    "extractor_mode", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
    "activation_fn", "layer_grad_scale", "layer_type", "dropout", "attention_dropout", "activation_dropout",
    "encoder_layerdrop", "dropout_input", "final_dim", "layer_norm_first", "conv_feature_layers", "conv_bias",
    "feature_grad_mult", "conv_pos", "conv_pos_groups", "pos_conv_depth", "max_positions", "checkpoint_activations",
    "required_seq_len_multiple", "crop_seq_to_multiple", "init_conv_layers", "init_encoder_layers",
)
_OFFICIAL_MASK = _OFFICIAL_COMMON + (
    "freeze_student_mask", "update_teacher_mask", "depthwise_conv_kernel_size", "attn_type", "pos_enc_type", "fp16",
    "pred_head_inter_dim", "pred_head_final_dim", "pred_layer_id", "layerwise_proj", "enable_tr_layer",
    "tr_reduce_factor", "tr_layer_type", "tr_conv1d_kernel", "tr_layer_index",
)
OFFICIAL_DISTILLER_FIELDS: dict[str, tuple[str, ...]] = {
    "armhubert": _OFFICIAL_MASK + ("reuse_pattern",),
    "armwavlm": _OFFICIAL_MASK + ("reuse_pattern",),
    "maskhubert": _OFFICIAL_MASK,
    "starhubert": _OFFICIAL_COMMON,
}
# private fields of those classes ("_name" etc.): never dumped, but harmless in a yaml
_PRIVATE_FIELDS = {"_name", "_teacher_task_agnostic", "_cnn_weight"}
_COMMON_FIELDS = _PRIVATE_FIELDS | set(_OFFICIAL_COMMON)
_ARM_FIELDS = _PRIVATE_FIELDS | set(OFFICIAL_DISTILLER_FIELDS["armhubert"])
#: our own options, read from the distiller section or the top level of the yaml
OPTION_KEYS = {"official_batching", "official_batched_reuse"}


def known_keys(flavour: str) -> set[str]:
    return (_ARM_FIELDS if flavour == ARM else _COMMON_FIELDS) | OPTION_KEYS


def _parse_reuse_pattern(value: Any, num_layers: int) -> tuple[bool, ...]:
    """``"[True, False, ...]"`` (True = the layer computes its own map, False = reuses it)."""
    if value is None or value == "" or value == "None":
        return (True,) * num_layers
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ConfigError(f"reuse_pattern {value!r} is not a list of True/False") from None
    if value is None:
        return (True,) * num_layers
    pattern = tuple(value)
    if not all(isinstance(v, bool) for v in pattern):
        raise ConfigError(f"reuse_pattern {value!r} must contain only True/False")
    if len(pattern) != num_layers:
        raise ConfigError(f"reuse_pattern has {len(pattern)} entries but encoder_layers is {num_layers}")
    if not pattern[0]:
        raise ConfigError("reuse_pattern must start with True: the first layer has no map to reuse")
    return pattern


@dataclass(frozen=True)
class StudentConfig:
    """What the student network needs; defaults are the official dataclass defaults."""

    flavour: str = ARM
    conv_feature_layers: tuple = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    extractor_mode: str = "default"
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    conv_pos: int = 128
    conv_pos_groups: int = 16
    crop_seq_to_multiple: int = 1
    reuse_pattern: tuple = field(default=None)
    pred_head_final_dim: int = 768
    # gradient scaling only (identity in the forward pass), for s3prl's -f fine-tuning
    layer_grad_scale: bool = False
    feature_grad_mult: float = 1.0
    # train-mode only (s3prl -f); eval outputs do not depend on them
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.0

    def __post_init__(self):
        if self.reuse_pattern is None:
            object.__setattr__(self, "reuse_pattern", (True,) * self.encoder_layers)
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ConfigError(
                f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                f"encoder_attention_heads {self.encoder_attention_heads}"
            )

    @property
    def reuses_attention(self) -> bool:
        return not all(self.reuse_pattern)


def _require(cfg: Mapping, key: str, allowed, default, where: str):
    value = cfg.get(key, default)
    if value not in allowed:
        raise ConfigError(
            f"{where}: {key}={value!r} is not supported (the released models use {default!r}); "
            "this implementation covers the published ARMHuBERT/MaskHuBERT/STaRHuBERT architectures."
        )
    return value


def student_config(distiller: Mapping[str, Any], flavour: str, *, where: str = "model config") -> StudentConfig:
    """Build a :class:`StudentConfig` from a ``distiller`` mapping (unknown keys only warn)."""
    if not isinstance(distiller, Mapping):
        raise ConfigError(f"{where}: the distiller section must be a mapping, got {type(distiller).__name__}")
    distiller = dict(distiller)
    warn_unknown_keys(distiller, known_keys(flavour), where)
    _require(distiller, "layer_type", ("transformer",), "transformer", where)
    _require(distiller, "layer_norm_first", (False,), False, where)
    _require(distiller, "activation_fn", ("gelu",), "gelu", where)
    _require(distiller, "pos_conv_depth", (1,), 1, where)
    if flavour == ARM:
        _require(distiller, "enable_tr_layer", (False,), False, where)
        _require(distiller, "layerwise_proj", (True,), True, where)
    try:
        conv_layers = tuple(parse_conv_layers(distiller.get("conv_feature_layers", StudentConfig.conv_feature_layers)))
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
    defaults = {f.name: f.default for f in fields(StudentConfig)}

    def number(key, kind=int):
        value = distiller.get(key, defaults[key])
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key}={value!r} is not a number") from None

    layers = number("encoder_layers")
    reuse = (True,) * layers
    if flavour == ARM:
        reuse = _parse_reuse_pattern(distiller.get("reuse_pattern"), layers)
    return StudentConfig(
        flavour=flavour,
        conv_feature_layers=conv_layers,
        extractor_mode=str(distiller.get("extractor_mode", "default")),
        conv_bias=parse_bool(distiller.get("conv_bias", False), f"{where}: conv_bias"),
        encoder_layers=layers,
        encoder_embed_dim=number("encoder_embed_dim"),
        encoder_ffn_embed_dim=number("encoder_ffn_embed_dim"),
        encoder_attention_heads=number("encoder_attention_heads"),
        conv_pos=number("conv_pos"),
        conv_pos_groups=number("conv_pos_groups"),
        crop_seq_to_multiple=max(1, number("crop_seq_to_multiple")),
        reuse_pattern=reuse,
        pred_head_final_dim=number("pred_head_final_dim") if flavour == ARM else 0,
        layer_grad_scale=parse_bool(distiller.get("layer_grad_scale", False), f"{where}: layer_grad_scale"),
        feature_grad_mult=number("feature_grad_mult", float),
        dropout=number("dropout", float),
        attention_dropout=number("attention_dropout", float),
        activation_dropout=number("activation_dropout", float),
        dropout_input=number("dropout_input", float),
    )


def _cnn(dim: int) -> str:
    return f"[(128, 10, 5)] + [(256, 1, 1)] + [(256, 3, 2)] * 4 + [({dim}, 1, 1)] + [({dim}, 2, 2)] * 2"


def _published(dim: int, ffn: int, heads: int, reuse: bool | None, layer_grad_scale: bool) -> dict[str, Any]:
    """The architecture part of a released ``distiller`` section (conf/*/*.yaml of the official repo)."""
    cfg = {
        "extractor_mode": "default",
        "conv_feature_layers": _cnn(dim),
        "conv_bias": False,
        "conv_pos": 128,
        "conv_pos_groups": 16,
        "pos_conv_depth": 1,
        "layer_type": "transformer",
        "encoder_layers": 12,
        "encoder_embed_dim": dim,
        "encoder_ffn_embed_dim": ffn,
        "encoder_attention_heads": heads,
        "activation_fn": "gelu",
        "layer_norm_first": False,
        "layer_grad_scale": layer_grad_scale,
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.1,
        "encoder_layerdrop": 0.0,
        "dropout_input": 0.05,
        "final_dim": 256 if reuse is not None else 768,
        "required_seq_len_multiple": 1,
        "crop_seq_to_multiple": 1,
    }
    if reuse is not None:  # ARM/Mask configs
        cfg.update(pred_head_final_dim=768, pred_head_inter_dim=0, layerwise_proj=True, enable_tr_layer=False)
        if reuse:
            cfg["reuse_pattern"] = str([True, False] * 6)
    return cfg


#: Architectures of the releases (ARM/Mask: official conf/ files; STaR: derived from the
#: published parameter counts, used only when a downloaded checkpoint carries no config).
PUBLISHED: dict[str, dict[str, Any]] = {
    "ARMHuBERT": _published(480, 864, 12, reuse=True, layer_grad_scale=True),
    "ARMHuBERT-S": _published(432, 816, 12, reuse=True, layer_grad_scale=True),
    "MaskHuBERT": _published(480, 640, 12, reuse=False, layer_grad_scale=False),
    "STaRHuBERT": _published(432, 976, 8, reuse=None, layer_grad_scale=False),
    "STaRHuBERT-L": _published(480, 1024, 12, reuse=None, layer_grad_scale=False),
}
