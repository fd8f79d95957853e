"""Checks and batching of the waveform lists that s3prl hands to an upstream."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["UpstreamInputError", "validate_wavs", "pad_wavs"]


class UpstreamInputError(ValueError):
    """A batch of waveforms that an upstream cannot encode; the message says how to fix it."""


def validate_wavs(wavs: Sequence[Tensor], *, model: str) -> list[Tensor]:
    """Return ``wavs`` as a list after checking that it is what s3prl passes to an upstream.

    s3prl calls ``upstream(wavs)`` with a list of unpadded 1-D float tensors sampled at 16 kHz.
    Anything else is refused here with a message naming the problem, instead of failing deep
    inside a convolution or a matmul.
    """
    if isinstance(wavs, Tensor):
        hint = (
            "pass list(batch) for a padded [B, T] tensor (with each row cut to its length)"
            if wavs.dim() == 2
            else "wrap it in a list: model([wav])"
        )
        raise UpstreamInputError(
            f"{model}: expected a list of 1-D waveform tensors, got a tensor of shape "
            f"{tuple(wavs.shape)}; {hint}."
        )
    if not isinstance(wavs, (list, tuple)):
        raise UpstreamInputError(
            f"{model}: expected a list of 1-D waveform tensors, got {type(wavs).__name__}."
        )
    if len(wavs) == 0:
        raise UpstreamInputError(f"{model}: the batch is empty; pass at least one waveform.")
    for index, wav in enumerate(wavs):
        where = f"{model}: waveform {index}"
        if not isinstance(wav, Tensor):
            raise UpstreamInputError(
                f"{where} is a {type(wav).__name__}, not a torch.Tensor; "
                "convert it with torch.as_tensor(wav, dtype=torch.float32)."
            )
        if wav.dim() != 1:
            if wav.dim() == 2 and min(wav.shape) <= 8:
                fix = "it looks multi-channel: mix it down (wav.mean(dim=0)) or pick one channel"
            else:
                fix = "each list item must be one mono waveform of shape [num_samples]"
            raise UpstreamInputError(f"{where} has shape {tuple(wav.shape)}; {fix}.")
        if not wav.is_floating_point():
            raise UpstreamInputError(
                f"{where} has dtype {wav.dtype}; expected floating point samples in [-1, 1] "
                "(for int16 PCM use wav.float() / 32768)."
            )
        if wav.numel() == 0:
            raise UpstreamInputError(f"{where} is empty (0 samples).")
    devices = {w.device for w in wavs}
    if len(devices) > 1:
        raise UpstreamInputError(
            f"{model}: waveforms are on different devices {sorted(map(str, devices))}; "
            "move them to one device (wav.to(device)) before calling the model."
        )
    # One fused reduction for the whole batch: a single host sync instead of one per utterance.
    finite = torch.stack([torch.isfinite(w).all() for w in wavs])
    if not bool(finite.all()):
        bad = [i for i, ok in enumerate(finite.tolist()) if not ok]
        raise UpstreamInputError(
            f"{model}: waveform(s) {bad} contain NaN or Inf samples; clean the audio first."
        )
    return list(wavs)


def pad_wavs(wavs: Sequence[Tensor], min_length: int = 0) -> tuple[Tensor, Tensor]:
    """Right-pad with zeros into ``[B, T]``; ``T >= min_length``. Returns (padded, lengths)."""
    lengths = torch.tensor([w.shape[-1] for w in wavs], dtype=torch.long, device=wavs[0].device)
    if len({w.dtype for w in wavs}) > 1:
        dtype = torch.promote_types(wavs[0].dtype, torch.float32)
        wavs = [w.to(dtype) for w in wavs]
    padded = torch.nn.utils.rnn.pad_sequence(list(wavs), batch_first=True)
    if padded.shape[-1] < min_length:
        padded = torch.nn.functional.pad(padded, (0, min_length - padded.shape[-1]))
    return padded, lengths
