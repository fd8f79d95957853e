"""Dasheng's model configuration and the options of its entries."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..common.config import ConfigError
from .releases import RELEASES

__all__ = ["DashengConfig", "DashengOptions", "heads_for_width", "SAMPLE_RATE", "HOP_LENGTH"]

SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 160
TOP_DB = 120.0
AMIN = 1e-10
BN_EPS = 1e-5


@dataclass
class DashengConfig:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden_dim: int = 3072
    n_mels: int = 64
    #: frames per patch (the patch spans all mel bins)
    patch_frames: int = 4
    #: patches per independently encoded chunk (= length of the time positional table)
    chunk_patches: int = 252
    layer_norm_eps: float = 1e-6

    @property
    def downsample_rate(self) -> int:
        return HOP_LENGTH * self.patch_frames

    @property
    def min_samples(self) -> int:
        """Shortest input that yields one patch (``1 + N // 160 >= patch_frames``)."""
        return (self.patch_frames - 1) * HOP_LENGTH


def heads_for_width(embed_dim: int) -> int | None:
    """Head count of a released width (64-dim heads, except 80 for the 0.6B model); other widths
    use 64-dim heads when they divide evenly. The head count is in no tensor shape and the
    configs stored in the official files are not trustworthy (the pip loaders override them), so
    it comes from the width."""
    for release in RELEASES.values():
        if release.embed_dim == embed_dim:
            return release.num_heads
    return embed_dim // 64 if embed_dim % 64 == 0 else None


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass
class DashengOptions:
    """``-g`` YAML keys / keyword arguments of the Dasheng entries."""

    #: "per_utterance" (default): every utterance's frames equal running it alone. "official":
    #: dasheng's batched ``model(padded, x_length)``, i.e. the top_db floor over the whole batch,
    #: the STFT of the zero-padded batch and the key mask ``N // 640``
    batch_mode: str = "per_utterance"
    #: encoder weights' dtype: float32 or bfloat16 (the front end is always float32); float16 is
    #: not offered: its range cannot hold the finite attention mask of fully padded chunks
    dtype: str = "float32"
    #: only for encoder widths outside the released ones whose head count is not 64-dim
    num_heads: int | None = None
    #: train mode (s3prl -f, ESPnet): "fixed" normalises the log-mel with the stored BatchNorm
    #: statistics; "official" is dasheng's BatchNorm2d (batch statistics, running ones updated),
    #: so the same utterance's features then depend on its batch
    train_batchnorm: str = "fixed"

    def validate(self) -> None:
        if self.train_batchnorm not in ("fixed", "official"):
            raise ConfigError(f"dasheng: train_batchnorm must be 'fixed' or 'official', got {self.train_batchnorm!r}")
        if self.batch_mode not in ("per_utterance", "official"):
            raise ConfigError(f"dasheng: batch_mode must be 'per_utterance' or 'official', got {self.batch_mode!r}")
        name = str(self.dtype).replace("torch.", "")
        if name not in _DTYPES:
            raise ConfigError(f"dasheng: dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        self.dtype = name

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]
