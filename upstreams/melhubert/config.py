"""MelHuBERT architecture configuration and the released variants."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["MelHuBERTConfig", "OFFICIAL_DEFAULTS", "FEAT_DIM_TO_FRAME_PERIOD", "MELHUBERT_BASE"]

#: Value the official ``MelHuBERTConfig`` assumes for a key missing from the stored model yaml.
#: They differ from the released yamls (e.g. ``encoder_layers`` 1, ``feat_emb_dim`` 40), so a
#: stored config is always read field by field with these fall-backs, as the official code does.
OFFICIAL_DEFAULTS: dict[str, Any] = {
    "feat_emb_dim": 40,
    "pos_emb_type": "conv",
    "pos_conv_depth": 1,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "encoder_layers": 1,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "attention_type": "original",
    "num_cluster": 512,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.1,
    "encoder_layerdrop": 0.0,
}

#: Input feature width -> frame period in ms: 20 ms models stack pairs of 40-bin 10 ms frames.
FEAT_DIM_TO_FRAME_PERIOD = {40: 10, 80: 20}

_SUPPORTED = {
    "pos_emb_type": ("conv",),
    "pos_conv_depth": (1,),
    "activation_fn": ("gelu",),
    "layer_norm_first": (False,),
    "attention_type": ("original", "causal"),
}


@dataclasses.dataclass(frozen=True)
class MelHuBERTConfig:
    """The fields of the official model yaml (``melhubert:`` section) that shape the network.

    Training-only fields (masking, loss weights) are not needed to extract features and are
    ignored. Dropout rates matter only in train mode (fine-tuning the upstream in s3prl).
    """

    feat_emb_dim: int = 80
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    conv_pos: int = 128
    conv_pos_groups: int = 16
    num_cluster: int = 512
    attention_type: str = "original"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1

    def __post_init__(self):
        if self.feat_emb_dim not in FEAT_DIM_TO_FRAME_PERIOD:
            raise ValueError(
                f"MelHuBERT: feat_emb_dim must be 40 (10 ms frames) or 80 (20 ms, stacked pairs of "
                f"40-bin frames); got {self.feat_emb_dim}"
            )
        if self.encoder_layers < 1:
            raise ValueError(f"MelHuBERT: encoder_layers must be >= 1, got {self.encoder_layers}")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(
                f"MelHuBERT: encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                f"encoder_attention_heads {self.encoder_attention_heads}"
            )
        if self.attention_type not in _SUPPORTED["attention_type"]:
            raise ValueError(f"MelHuBERT: unknown attention_type {self.attention_type!r}")

    @property
    def frame_period_ms(self) -> int:
        return FEAT_DIM_TO_FRAME_PERIOD[self.feat_emb_dim]

    @property
    def num_mel_bins(self) -> int:
        return 40

    @classmethod
    def from_official(cls, section: Mapping[str, Any], *, where: str = "the model config") -> "MelHuBERTConfig":
        """Build from a stored ``Upstream_Config['melhubert']`` (or ``['hubert']``) dict."""
        if not isinstance(section, Mapping):
            raise ValueError(f"MelHuBERT: {where} must be a mapping of model options, got {type(section).__name__}")

        def get(key):
            return section.get(key, OFFICIAL_DEFAULTS[key])

        for key, allowed in _SUPPORTED.items():
            value = get(key)
            if key in ("pos_conv_depth",):
                value = int(value)
            elif key == "layer_norm_first":
                value = bool(value)
            else:
                value = str(value)
            if value not in allowed:
                raise ValueError(
                    f"MelHuBERT: {where} sets {key}={value!r}; this implementation supports "
                    f"{' or '.join(map(repr, allowed))} (the values of every released MelHuBERT)."
                )
        return cls(
            feat_emb_dim=int(get("feat_emb_dim")),
            encoder_layers=int(get("encoder_layers")),
            encoder_embed_dim=int(get("encoder_embed_dim")),
            encoder_ffn_embed_dim=int(get("encoder_ffn_embed_dim")),
            encoder_attention_heads=int(get("encoder_attention_heads")),
            conv_pos=int(get("conv_pos")),
            conv_pos_groups=int(get("conv_pos_groups")),
            num_cluster=int(get("num_cluster")),
            attention_type=str(get("attention_type")),
            dropout=float(get("dropout")),
            attention_dropout=float(get("attention_dropout")),
            activation_dropout=float(get("activation_dropout")),
        )

    def to_official(self) -> dict[str, Any]:
        """The ``melhubert:`` yaml section (every key the official config reads)."""
        section = dict(OFFICIAL_DEFAULTS)
        section.update(dataclasses.asdict(self))
        return section


#: The architecture shared by all six released checkpoints (20 ms; 10 ms uses feat_emb_dim 40).
MELHUBERT_BASE = MelHuBERTConfig()
