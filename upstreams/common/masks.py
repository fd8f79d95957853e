"""Padding masks and the frame bookkeeping that s3prl's Featurizer relies on."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "padding_mask",
    "num_frames_s3prl",
    "fit_frames",
    "conv_output_lengths",
    "zero_padded_frames",
]


def padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Boolean ``[B, T]`` mask, True where a position is padding (torch/fairseq convention)."""
    if max_len is None:
        max_len = int(lengths.max())
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) >= lengths.unsqueeze(1)


def num_frames_s3prl(num_samples: int, rate: int) -> int:
    """Frames s3prl expects for ``num_samples`` at ``rate`` samples per frame.

    The value is ``len(range(0, num_samples, rate))`` (= ceil), the convention of s3prl's
    spectrogram upstreams (ssast, mae_ast) and the reference that S3PRLUpstream checks against.
    """
    return max(0, -(-num_samples // rate))


def fit_frames(x: Tensor, num_frames: int) -> Tensor:
    """Trim or zero-pad dimension 1 of ``x`` ([B, T, ...]) to exactly ``num_frames``."""
    t = x.shape[1]
    if t == num_frames:
        return x
    if t > num_frames:
        return x[:, :num_frames]
    pad_shape = list(x.shape)
    pad_shape[1] = num_frames - t
    return torch.cat([x, x.new_zeros(pad_shape)], dim=1)


def conv_output_lengths(lengths: Tensor, kernels: Sequence[int], strides: Sequence[int]) -> Tensor:
    """Valid output lengths after a stack of unpadded 1-D convolutions (floor division)."""
    out = lengths
    for k, s in zip(kernels, strides):
        out = torch.div(out - k, s, rounding_mode="floor") + 1
    return out.clamp(min=0)


def zero_padded_frames(x: Tensor, lengths: Tensor) -> Tensor:
    """Zero the frames at or beyond each utterance's valid length (``x`` is [B, T, D])."""
    keep = ~padding_mask(lengths, x.shape[1])
    return x * keep.unsqueeze(-1).to(x.dtype)
