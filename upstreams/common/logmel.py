"""Batched log-mel spectrogram with librosa/nnAudio conventions (Slaney mel scale and area norm).

This is the front end of spectrogram models trained with ``nnAudio.features.MelSpectrogram``
(M2D, BYOL-A, ...) or ``librosa.feature.melspectrogram``: a centred STFT with reflect padding and
a periodic Hann window, the power spectrum, Slaney-style triangular filters normalised to unit
area, and ``log(mel + offset)``. It agrees with nnAudio 0.3.4 to about 2e-6 relative on the
power mel spectrogram.

The whole padded batch is transformed at once on the input's device, and each utterance is
reflect-padded at its *own* end, so its frames are exactly those it would get alone: padding in
the batch never reaches a valid frame.
"""
from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

__all__ = ["LogMelSpectrogram", "reflect_pad_per_item", "centered_num_frames"]


def centered_num_frames(num_samples: Tensor | int, hop_length: int):
    """Frames of a centred STFT (``center=True``): ``1 + num_samples // hop_length``."""
    return 1 + num_samples // hop_length


def reflect_pad_per_item(padded: Tensor, lengths: Tensor, pad: int) -> Tensor:
    """Reflect-pad every row of ``padded`` ([B, T]) by ``pad`` samples on both sides of its
    valid part ``[0, lengths[b])``; returns [B, T + 2 * pad].

    Row b holds ``x_b[reflect(i - pad)]`` for i < lengths[b] + 2 * pad, where reflect mirrors
    about the first and last *valid* sample (numpy's/torch's ``reflect`` mode). Inputs shorter
    than ``pad + 1`` samples, which torch's own reflect padding refuses, are reflected
    repeatedly (the mirror image is periodic with period 2 * (length - 1)). Positions past a
    row's padded length hold reflections too; callers mask the frames they produce.
    """
    batch, total = padded.shape
    positions = torch.arange(-pad, total + pad, device=padded.device).unsqueeze(0)
    last = (lengths.to(padded.device) - 1).clamp_min(0).unsqueeze(1)
    period = (2 * last).clamp_min(1)
    folded = torch.remainder(positions, period)
    index = torch.where(folded > last, period - folded, folded)
    index = torch.minimum(index, last)  # one-sample rows: period 1 folds everything to 0
    return torch.gather(padded, 1, index.expand(batch, -1))


class LogMelSpectrogram(nn.Module):
    """``log(mel_power + log_offset)`` of a padded batch; returns ([B, n_mels, T], frames [B]).

    ``T = 1 + max_len // hop_length``; frames at or past ``frames[b]`` lie beyond utterance b and
    should be masked or overwritten by the caller. Mel bin 0 is the lowest band.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        n_fft: int,
        win_length: int,
        hop_length: int,
        n_mels: int,
        f_min: float,
        f_max: float,
        log_offset: float = torch.finfo(torch.float32).eps,
    ) -> None:
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"win_length {win_length} exceeds n_fft {n_fft}")
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ValueError(f"bad mel range [{f_min}, {f_max}] for sample rate {sample_rate}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.log_offset = log_offset
        window = torch.hann_window(win_length, periodic=True)
        # torch.stft centres a shorter window inside n_fft with zeros, as librosa does.
        left = (n_fft - win_length) // 2
        window = nn.functional.pad(window, (left, n_fft - win_length - left))
        self.register_buffer("window", window, persistent=False)
        fbank = torchaudio.functional.melscale_fbanks(
            n_freqs=n_fft // 2 + 1,
            f_min=float(f_min),
            f_max=float(f_max),
            n_mels=n_mels,
            sample_rate=sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("mel_fbank", fbank.T.contiguous(), persistent=False)  # [n_mels, n_freqs]

    def num_frames(self, lengths: Tensor) -> Tensor:
        return centered_num_frames(lengths, self.hop_length)

    def power_mel(self, padded: Tensor, lengths: Tensor) -> Tensor:
        x = reflect_pad_per_item(padded.float(), lengths, self.n_fft // 2)
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=False,
            return_complex=True,
        )  # [B, n_freqs, 1 + max_len // hop]
        power = spec.real.square() + spec.imag.square()
        return torch.matmul(self.mel_fbank, power)

    def forward(self, padded: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if padded.dim() != 2:
            raise ValueError(f"LogMelSpectrogram expects padded waveforms [B, T], got {tuple(padded.shape)}")
        mel = self.power_mel(padded, lengths)
        return (mel + self.log_offset).log(), self.num_frames(lengths.to(padded.device))
