"""The s3prl-facing base class that every family's wrapper derives from."""
from __future__ import annotations

import abc
from typing import Sequence

import torch
from torch import Tensor, nn

from .inputs import pad_wavs, validate_wavs
from .masks import fit_frames, num_frames_s3prl, zero_padded_frames

__all__ = ["Upstream"]


class Upstream(nn.Module, metaclass=abc.ABCMeta):
    """Checks the input, pads it once, encodes it, and shapes the outputs as s3prl expects.

    Subclasses set ``downsample_rate`` (samples per output frame at 16 kHz) and implement
    :meth:`encode`, which receives the padded batch and the true lengths and returns a dict with
    ``hidden_states`` (a list of ``[B, T, D]`` tensors). Every hidden state is then trimmed or
    zero-padded to ``len(range(0, max_len, downsample_rate))`` frames, the count s3prl's
    Featurizer uses to cut each utterance out of the padded batch.

    s3prl's Featurizer keeps ``round(len / rate)`` frames of each utterance, which can be one more
    than the model produces for it. ``encode`` may return ``frame_lengths`` ([B], each utterance's
    own frame count): the frames from there on are zero, in a batch exactly as alone, so a
    downstream model never sees what an utterance's batch mates left in the padding.
    """

    downsample_rate: int = 320
    #: the name used in error messages; subclasses override.
    model_name: str = "upstream"

    def get_downsample_rates(self, key: str) -> int:
        return self.downsample_rate

    @abc.abstractmethod
    def encode(self, padded: Tensor, lengths: Tensor) -> dict:
        """Encode ``padded`` ([B, T] at 16 kHz, valid samples ``lengths``) into hidden states."""

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype the model computes in: that of its first floating parameter (float32 when
        it has none). Every floating waveform (float64, float16, bfloat16, ...) is converted to it,
        the same for every family; front ends that need float32 convert again themselves."""
        for param in self.parameters():
            if param.is_floating_point():
                return param.dtype
        return torch.float32

    def forward(self, wavs: Sequence[Tensor]) -> dict:
        wavs = validate_wavs(wavs, model=self.model_name)
        dtype = self.input_dtype
        padded, lengths = pad_wavs([w if w.dtype == dtype else w.to(dtype) for w in wavs])
        outputs = dict(self.encode(padded, lengths))
        num_frames = num_frames_s3prl(padded.shape[-1], self.downsample_rate)
        own = outputs.pop("frame_lengths", None)

        def shaped(h: Tensor) -> Tensor:
            h = fit_frames(h, num_frames)
            return h if own is None else zero_padded_frames(h, own)

        raw = outputs["hidden_states"]
        last = outputs.get("last_hidden_state")
        outputs["hidden_states"] = hidden = [shaped(h) for h in raw]
        outputs["last_hidden_state"] = hidden[-1] if last is None or last is raw[-1] else shaped(last)
        return outputs
