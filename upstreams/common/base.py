"""The s3prl-facing base class that every family's wrapper derives from."""
from __future__ import annotations

import abc
import sys
from typing import Sequence

import torch
from torch import Tensor, nn

from .inputs import pad_wavs, validate_wavs
from .masks import fit_frames, num_frames_s3prl, zero_padded_frames

__all__ = ["Upstream", "announce"]


def announce(entry: str, message: str, *, warning: bool = False) -> None:
    """One line about what an entry loaded, the same in every family: ``[entry] message`` on
    stdout (s3prl's runner and ESPnet keep it in their logs); ``warning``: ``[entry] warning:
    message`` on stderr, for a file that may not be what the user meant."""
    if warning:
        print(f"[{entry}] warning: {message}", file=sys.stderr, flush=True)
    else:
        print(f"[{entry}] {message}", flush=True)


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

    #: submodules (or buffers) of the front end, by attribute path: they stay float32 when the
    #: model is moved to bfloat16/float16 (``model.half()``, ``.to(torch.bfloat16)``), as an STFT,
    #: a filterbank or a waveform CNN's first layers lose too much in half precision
    front_end_parts: tuple[str, ...] = ()

    def _front_end_tensors(self) -> set[int]:
        ids: set[int] = set()
        for name in self.front_end_parts:
            module_path, _, leaf = name.rpartition(".")
            owner = self.get_submodule(module_path) if module_path else self
            part = getattr(owner, leaf)
            tensors = [part] if isinstance(part, Tensor) else [*part.parameters(), *part.buffers()]
            ids.update(id(t) for t in tensors)
        return ids

    def _apply(self, fn, recurse=True):
        keep = self._front_end_tensors()
        if not keep:
            return super()._apply(fn, recurse)

        def keeping_front_end_dtype(t: Tensor) -> Tensor:
            if id(t) in keep and t.is_floating_point():
                # where fn sends a tensor (its device), without its dtype change: no rounding
                target = fn(torch.empty(0, dtype=t.dtype, device=t.device))
                return t.to(device=target.device)
            return fn(t)

        return super()._apply(keeping_front_end_dtype, recurse)

    @property
    def encoder_dtype(self) -> torch.dtype:
        """The dtype after the front end: that of the first floating parameter outside it."""
        keep = self._front_end_tensors()
        for param in self.parameters():
            if param.is_floating_point() and id(param) not in keep:
                return param.dtype
        return torch.float32

    def forward(self, wavs: Sequence[Tensor]) -> dict:
        wavs = validate_wavs(wavs, model=self.model_name)
        # One rule for every family: floating waveforms of any dtype go in as float32, the front
        # ends' dtype (they hand the encoder its own dtype).
        padded, lengths = pad_wavs([w if w.dtype == torch.float32 else w.float() for w in wavs])
        outputs = dict(self.encode(padded, lengths))
        num_frames = num_frames_s3prl(padded.shape[-1], self.downsample_rate)
        own = outputs.pop("frame_lengths", None)
        shortest = int(own.min()) if own is not None else None  # one host sync

        def shaped(h: Tensor) -> Tensor:
            # frames past every utterance's own output need zeroing only where some is shorter
            # than what the encoder returned (fit_frames pads with zeros itself)
            needs_zeros = own is not None and shortest < min(h.shape[1], num_frames)
            h = fit_frames(h, num_frames)
            return zero_padded_frames(h, own) if needs_zeros else h

        raw = outputs["hidden_states"]
        last = outputs.get("last_hidden_state")
        outputs["hidden_states"] = hidden = [shaped(h) for h in raw]
        outputs["last_hidden_state"] = hidden[-1] if last is None or last is raw[-1] else shaped(last)
        return outputs
