"""Batched Kaldi-compatible log-mel filterbank.

Gives the numbers of ``torchaudio.compliance.kaldi.fbank`` (itself a port of Kaldi's
``compute-fbank-feats``) for a whole padded batch at once, on the device of the input, with
per-utterance frame counts. ``dither`` is fixed at 0 (features must be deterministic at
inference) and ``snip_edges`` at True (frames start at sample 0 and only whole windows count),
which is what every model trained on torchaudio's Kaldi fbank with its defaults sees.

The order of the floating-point operations follows torchaudio's so that the result agrees
with it to float32 rounding: per-frame DC removal, pre-emphasis with the first sample
replicated, window, zero padding to the FFT size, ``|rfft|**2``, mel matrix with a zero column
for the Nyquist bin, ``log(max(x, float32 eps))``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["KaldiFbank", "kaldi_mel_banks", "kaldi_num_frames"]

_WINDOW_TYPES = ("hamming", "hanning", "povey", "rectangular", "blackman")


def _kaldi_mel(freq):
    return 1127.0 * torch.log(1.0 + freq / 700.0)


def kaldi_mel_banks(
    num_mel_bins: int,
    padded_window_size: int,
    sample_frequency: float,
    low_freq: float,
    high_freq: float,
) -> Tensor:
    """Triangular Kaldi mel filters, float32 [num_mel_bins, padded_window_size // 2 + 1].

    Same arithmetic as ``torchaudio.compliance.kaldi.get_mel_banks`` without VTLN (float32
    tensors, scalar mel edges in float64), plus the zero column for the Nyquist bin that
    torchaudio's ``fbank`` appends.
    """
    if num_mel_bins <= 3:
        raise ValueError(f"num_mel_bins must be > 3 (got {num_mel_bins})")
    nyquist = 0.5 * sample_frequency
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(
            f"bad mel range: low_freq {low_freq}, high_freq {high_freq} for Nyquist {nyquist}"
        )
    num_fft_bins = padded_window_size // 2
    fft_bin_width = sample_frequency / padded_window_size
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    mel_delta = (mel_high - mel_low) / (num_mel_bins + 1)

    bin_index = torch.arange(num_mel_bins).unsqueeze(1)
    left = mel_low + bin_index * mel_delta
    center = mel_low + (bin_index + 1.0) * mel_delta
    right = mel_low + (bin_index + 2.0) * mel_delta
    mel = _kaldi_mel(fft_bin_width * torch.arange(num_fft_bins)).unsqueeze(0)
    up_slope = (mel - left) / (center - left)
    down_slope = (right - mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up_slope, down_slope))
    return nn.functional.pad(banks, (0, 1)).to(torch.float32)


def _window(window_type: str, size: int, blackman_coeff: float) -> Tensor:
    if window_type == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
    if window_type == "hanning":
        return torch.hann_window(size, periodic=False)
    if window_type == "povey":
        return torch.hann_window(size, periodic=False).pow(0.85)
    if window_type == "rectangular":
        return torch.ones(size)
    a = 2 * math.pi / (size - 1)
    n = torch.arange(size, dtype=torch.float32)
    return blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)


def kaldi_num_frames(num_samples: Tensor, window_size: int, window_shift: int) -> Tensor:
    """Frames per utterance with ``snip_edges``; an utterance shorter than one window counts as
    one frame (it is zero-padded to a full window; Kaldi itself would emit none)."""
    whole = torch.div(num_samples - window_size, window_shift, rounding_mode="floor") + 1
    return whole.clamp_min(1)


class KaldiFbank(nn.Module):
    """Kaldi log-mel filterbank for a padded batch.

    Arguments are Kaldi's / torchaudio's (same names, same defaults). ``forward(waveforms [B, N],
    lengths [B]) -> (features [B, T, num_mel_bins], num_frames [B])``; T is the frame count of
    the longest utterance and frames past ``num_frames[b]`` are computed over the zero padding
    (mask them). The waveform is used as given: models trained on ``torchaudio.load`` output
    scaled by 2**15 must scale it first.
    """

    def __init__(
        self,
        *,
        num_mel_bins: int = 23,
        sample_frequency: float = 16000.0,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        window_type: str = "povey",
        blackman_coeff: float = 0.42,
        preemphasis_coefficient: float = 0.97,
        remove_dc_offset: bool = True,
        round_to_power_of_two: bool = True,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        use_power: bool = True,
        use_log_fbank: bool = True,
        dither: float = 0.0,
        snip_edges: bool = True,
    ) -> None:
        super().__init__()
        if dither != 0.0:
            raise ValueError("KaldiFbank is deterministic: dither must be 0.0")
        if not snip_edges:
            raise ValueError("KaldiFbank implements snip_edges=True only (Kaldi's default)")
        if window_type not in _WINDOW_TYPES:
            raise ValueError(f"window_type must be one of {_WINDOW_TYPES}, got {window_type!r}")
        if not 0.0 <= preemphasis_coefficient <= 1.0:
            raise ValueError("preemphasis_coefficient must be in [0, 1]")
        # Same integer truncation as torchaudio (0.001 * ms * Hz).
        self.window_size = int(sample_frequency * frame_length * 0.001)
        self.window_shift = int(sample_frequency * frame_shift * 0.001)
        if self.window_size < 2 or self.window_shift < 1:
            raise ValueError("frame_length / frame_shift give an empty window or shift")
        if round_to_power_of_two:
            self.fft_size = 1 << (self.window_size - 1).bit_length()
        else:
            self.fft_size = self.window_size
        if self.fft_size % 2:
            raise ValueError("the FFT size must be even: use round_to_power_of_two")
        self.num_mel_bins = num_mel_bins
        self.preemphasis_coefficient = preemphasis_coefficient
        self.remove_dc_offset = remove_dc_offset
        self.use_power = use_power
        self.use_log_fbank = use_log_fbank
        self.register_buffer("window", _window(window_type, self.window_size, blackman_coeff).float(),
                             persistent=False)
        self.register_buffer(
            "mel_banks",
            kaldi_mel_banks(num_mel_bins, self.fft_size, sample_frequency, low_freq, high_freq),
            persistent=False,
        )

    def num_frames(self, lengths: Tensor) -> Tensor:
        return kaldi_num_frames(lengths, self.window_size, self.window_shift)

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if waveforms.dim() != 2:
            raise ValueError(f"KaldiFbank expects padded waveforms [B, N], got {tuple(waveforms.shape)}")
        waveforms = waveforms.float()
        if waveforms.size(1) < self.window_size:
            waveforms = nn.functional.pad(waveforms, (0, self.window_size - waveforms.size(1)))
        frames = waveforms.unfold(1, self.window_size, self.window_shift)  # [B, T, W] view
        if self.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if self.preemphasis_coefficient != 0.0:
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = frames - self.preemphasis_coefficient * previous
        frames = frames * self.window
        spectrum = torch.fft.rfft(frames, n=self.fft_size).abs()
        if self.use_power:
            spectrum = spectrum.pow(2.0)
        features = torch.matmul(spectrum, self.mel_banks.T)
        if self.use_log_fbank:
            features = features.clamp_min(torch.finfo(torch.float32).eps).log()
        return features, self.num_frames(lengths.to(waveforms.device))
