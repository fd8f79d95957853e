"""MelHuBERT's model configuration, its input normalisation statistics, and the entries' options.

The shipped statistics (``stats/``) are the official ``libri-{100,360,960}-mean-std.npy``: a float64
``[2, 40]`` array, row 0 the per-bin mean and row 1 the per-bin standard deviation of the raw
40-bin Kaldi log-mel over the training subset. A released checkpoint must be used with the file of
its training data.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..common.config import ConfigError

__all__ = ["MelHuBERTConfig", "MelHuBERTOptions", "OFFICIAL_DEFAULTS", "FEAT_DIM_TO_FRAME_PERIOD", "MELHUBERT_BASE",
           "NormalisationStats", "SHIPPED_STATS", "DEFAULT_STATS", "load_stats"]

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


# ---------------------------------------------------------------------------------------------
# Normalisation statistics
# ---------------------------------------------------------------------------------------------
_STATS_DIR = Path(__file__).resolve().parent / "stats"

#: name -> (file in stats/, description)
SHIPPED_STATS = {
    "libri100": ("libri-100-mean-std.npy", "LibriSpeech train-clean-100 (100 h)"),
    "libri360": ("libri-360-mean-std.npy", "LibriSpeech train-clean-360 (360 h)"),
    "libri960": ("libri-960-mean-std.npy", "LibriSpeech 960 h"),
}
DEFAULT_STATS = "libri960"


@dataclass(frozen=True)
class NormalisationStats:
    mean: torch.Tensor  # float32 [40]
    std: torch.Tensor  # float32 [40]
    description: str


def load_stats(choice: str | os.PathLike | None = None, *, num_bins: int = 40) -> NormalisationStats:
    """``choice``: ``libri100`` / ``libri360`` / ``libri960`` (default) or a path to a ``.npy``."""
    if choice is None or str(choice).strip() == "":
        choice = DEFAULT_STATS
    text = str(choice).strip()
    key = text.lower().replace("-", "").replace("_", "")
    if key in SHIPPED_STATS:
        filename, description = SHIPPED_STATS[key]
        path = _STATS_DIR / filename
        description = f"{description} ({key}, shipped)"
    else:
        path = Path(text).expanduser()
        description = str(path)
        if not path.is_file():
            raise ValueError(
                f"MelHuBERT: stats {text!r} is neither one of {', '.join(SHIPPED_STATS)} nor an "
                f"existing .npy file; set `stats:` in the -g yaml to one of those."
            )
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:
        raise ValueError(f"MelHuBERT: could not read statistics file {path} ({error}).") from error
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[0] != 2 or array.shape[1] != num_bins:
        raise ValueError(
            f"MelHuBERT: statistics file {path} has shape {tuple(array.shape)}; expected "
            f"[2, {num_bins}] (row 0 mean, row 1 std of the {num_bins}-bin log-mel)."
        )
    if not np.all(np.isfinite(array)) or not np.all(array[1] > 0):
        raise ValueError(f"MelHuBERT: statistics file {path} has a non-finite value or a std <= 0.")
    # float64 -> float32 like the official torch.Tensor(np_array) conversion
    mean = torch.tensor(array[0].reshape(-1), dtype=torch.float32)
    std = torch.tensor(array[1].reshape(-1), dtype=torch.float32)
    return NormalisationStats(mean, std, description)


@dataclass
class MelHuBERTOptions:
    """``-g`` YAML keys / keyword arguments of the MelHuBERT entries."""

    #: normalisation statistics: libri960 (default for melhubert_local), libri360, libri100 or a
    #: path to a [2, 40] mean/std .npy; named entries default to their training data's
    stats: str | None = None
    #: the official model yaml section, for state dicts that do not store their architecture
    melhubert: dict | None = None

    def validate(self) -> None:
        if self.melhubert is not None and not isinstance(self.melhubert, Mapping):
            raise ConfigError("MelHuBERT: the 'melhubert' key of the -g yaml must be a mapping of model options.")
