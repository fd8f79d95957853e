"""The s3prl-facing base class that every family's wrapper derives from."""
from __future__ import annotations

import abc
from typing import Sequence

import torch
from torch import Tensor, nn

from .inputs import pad_wavs, validate_wavs
from .masks import fit_frames, num_frames_s3prl

__all__ = ["Upstream"]


class Upstream(nn.Module, metaclass=abc.ABCMeta):
    """Checks the input, pads it once, encodes it, and shapes the outputs as s3prl expects.

    Subclasses set ``downsample_rate`` (samples per output frame at 16 kHz) and implement
    :meth:`encode`, which receives the padded batch and the true lengths and returns a dict with
    ``hidden_states`` (a list of ``[B, T, D]`` tensors). Every hidden state is then trimmed or
    zero-padded to ``len(range(0, max_len, downsample_rate))`` frames, the count s3prl's
    Featurizer uses to cut each utterance out of the padded batch.
    """

    downsample_rate: int = 320
    #: the name used in error messages; subclasses override.
    model_name: str = "upstream"

    def get_downsample_rates(self, key: str) -> int:
        return self.downsample_rate

    @abc.abstractmethod
    def encode(self, padded: Tensor, lengths: Tensor) -> dict:
        """Encode ``padded`` ([B, T] at 16 kHz, valid samples ``lengths``) into hidden states."""

    def forward(self, wavs: Sequence[Tensor]) -> dict:
        wavs = validate_wavs(wavs, model=self.model_name)
        padded, lengths = pad_wavs(wavs)
        outputs = dict(self.encode(padded, lengths))
        num_frames = num_frames_s3prl(padded.shape[-1], self.downsample_rate)
        hidden = [fit_frames(h, num_frames) for h in outputs["hidden_states"]]
        outputs["hidden_states"] = hidden
        if "last_hidden_state" in outputs:
            outputs["last_hidden_state"] = fit_frames(outputs["last_hidden_state"], num_frames)
        else:
            outputs["last_hidden_state"] = hidden[-1]
        return outputs
