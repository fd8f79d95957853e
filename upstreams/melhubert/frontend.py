"""MelHuBERT input features, batched: Kaldi fbank -> global mean/std -> optional frame stacking."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..common.fbank import KaldiFbank
from .stats import NormalisationStats

__all__ = ["MelHuBERTFrontEnd"]

#: the official features are computed on torchaudio.load's [-1, 1] floats scaled to int16 range
WAVEFORM_SCALE = 2.0**15


class MelHuBERTFrontEnd(nn.Module):
    """``forward(padded [B, N], lengths [B]) -> (features [B, T, 40 * stack], num_frames [B])``.

    40-bin Kaldi fbank (hamming window, 25 ms / 10 ms, every other option Kaldi's default,
    dither 0) of the waveform times 2**15, normalised with the training set's per-bin
    mean/std. At 20 ms, 10 ms frames ``2i`` and ``2i+1`` are concatenated; an odd last frame
    gets a zero partner (after normalisation), exactly like the official code. Frames past an
    utterance's end are zero, the official padding value. Inputs shorter than one 25 ms window
    (400 samples) are zero-padded to one window and give one frame.
    """

    def __init__(self, frame_period_ms: int, stats: NormalisationStats):
        super().__init__()
        if frame_period_ms not in (10, 20):
            raise ValueError(f"MelHuBERT frame period must be 10 or 20 ms, got {frame_period_ms}")
        self.stack = frame_period_ms // 10
        self.fbank = KaldiFbank(
            num_mel_bins=40, sample_frequency=16000.0, frame_length=25.0, frame_shift=10.0,
            window_type="hamming", dither=0.0,
        )
        self.stats_description = stats.description
        self.register_buffer("mean", stats.mean.clone(), persistent=False)
        self.register_buffer("std", stats.std.clone(), persistent=False)

    @property
    def window_size(self) -> int:
        return self.fbank.window_size

    def num_frames_for(self, num_samples: int) -> int:
        """Output frames of one utterance of ``num_samples`` samples (host-side arithmetic)."""
        frames = max(1, 1 + (num_samples - self.fbank.window_size) // self.fbank.window_shift)
        return -(-frames // self.stack)

    def forward(self, padded: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        fbank, num_frames = self.fbank(padded.float() * WAVEFORM_SCALE, lengths)
        features = (fbank - self.mean) / self.std
        positions = torch.arange(features.shape[1], device=features.device)
        features = features.masked_fill((positions[None, :] >= num_frames[:, None]).unsqueeze(-1), 0.0)
        if self.stack == 1:
            return features, num_frames
        batch, frames, bins = features.shape
        if frames % 2:
            features = nn.functional.pad(features, (0, 0, 0, 1))
        # [B, T, 40] -> [B, T/2, 2 * 40]: row i = [frame 2i, frame 2i + 1]
        stacked = features.reshape(batch, -1, 2 * bins)
        return stacked, torch.div(num_frames + 1, 2, rounding_mode="floor")
