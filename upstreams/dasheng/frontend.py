"""Dasheng's front end: torchaudio-style HTK log-mel in dB, then the checkpoint's BatchNorm.

The official model computes ``AmplitudeToDB(top_db=120)(MelSpectrogram(...)(wav))`` followed by a
``BatchNorm2d`` over the 64 mel bins (eval statistics stored in the checkpoint). Two details make
its batched output depend on the batch, and both are per utterance here by default:

* the centred STFT reflect-pads the *batch* end, so a shorter utterance sees zeros instead of its
  own mirrored tail in its last few frames;
* ``AmplitudeToDB`` floors at ``max - 120 dB`` with the maximum taken over the whole batch tensor.

``per_utterance=False`` reproduces the official batched behaviour exactly (used for
``batch_mode="official"``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from ..common.logmel import reflect_pad_per_item

__all__ = ["DashengFrontEnd", "SAMPLE_RATE", "HOP_LENGTH"]

SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 160
TOP_DB = 120.0
AMIN = 1e-10
BN_EPS = 1e-5


class DashengFrontEnd(nn.Module):
    """Waveforms ``[B, N]`` -> normalised log-mel ``[B, n_mels, 1 + N // 160]`` (float32).

    Buffers (names map 1:1 to the official ``front_end.0.spectrogram.window``,
    ``front_end.0.mel_scale.fb`` and ``init_bn.1.*``): ``window`` (periodic Hann, 512),
    ``mel_fb`` ([257, n_mels], HTK scale, no area norm, 0-8 kHz) and the BatchNorm ``bn``.
    Official pip checkpoints carry window and filterbank; Hugging Face ones do not, so the
    torchaudio defaults computed here stay in place.
    """

    def __init__(self, n_mels: int = 64):
        super().__init__()
        self.n_mels = n_mels
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True))
        fb = torchaudio.functional.melscale_fbanks(
            n_freqs=N_FFT // 2 + 1, f_min=0.0, f_max=SAMPLE_RATE / 2, n_mels=n_mels,
            sample_rate=SAMPLE_RATE, norm=None, mel_scale="htk",
        )
        self.register_buffer("mel_fb", fb)
        self.bn = nn.BatchNorm1d(n_mels, eps=BN_EPS, momentum=0.01)
        #: train mode: False (default) normalises with the stored statistics, so a fine-tuned
        #: encoder's features do not drift with the batch; True is the official ``BatchNorm2d``
        #: (batch statistics, running statistics updated with momentum 0.01)
        self.official_train_batchnorm = False

    @staticmethod
    def num_frames(num_samples: Tensor) -> Tensor:
        """Frames of the centred STFT: ``1 + N // 160``."""
        return 1 + torch.div(num_samples, HOP_LENGTH, rounding_mode="floor")

    def forward(self, padded: Tensor, lengths: Tensor, *, per_utterance: bool = True) -> Tensor:
        device_type = padded.device.type
        # The STFT has no bf16 kernel and half precision loses the dB floor: always float32.
        with torch.autocast(device_type=device_type, enabled=False):
            wav = padded.float()
            pad = N_FFT // 2
            if per_utterance:
                signal = reflect_pad_per_item(wav, lengths, pad)
            else:
                signal = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
            spec = torch.stft(
                signal, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=N_FFT,
                window=self.window.float(), center=False, normalized=False, onesided=True,
                return_complex=True,
            )
            power = spec.abs().pow(2.0)  # torchaudio's spectrogram(power=2.0)
            mel = torch.matmul(power.transpose(-1, -2), self.mel_fb.float()).transpose(-1, -2)
            db = 10.0 * torch.log10(torch.clamp(mel, min=AMIN))  # ref 1.0 -> no offset
            if per_utterance:
                frames = self.num_frames(lengths)
                beyond = torch.arange(db.shape[-1], device=db.device) >= frames.unsqueeze(1)
                peak = db.masked_fill(beyond.unsqueeze(1), float("-inf")).amax(dim=(1, 2))
            else:
                peak = db.amax().expand(db.shape[0])
            db = torch.max(db, (peak - TOP_DB)[:, None, None])
            if self.training and self.official_train_batchnorm:
                # the official BatchNorm2d over [B, mels, 1, T]: statistics over batch and time
                self.bn.num_batches_tracked.add_(1)
                return F.batch_norm(db, self.bn.running_mean, self.bn.running_var, self.bn.weight.float(),
                                    self.bn.bias.float(), training=True, momentum=self.bn.momentum, eps=self.bn.eps)
            # The stored statistics: the features of a pretrained encoder must not drift with the
            # batch when s3prl fine-tunes it in train mode.
            return F.batch_norm(
                db, self.bn.running_mean.float(), self.bn.running_var.float(),
                self.bn.weight.float(), self.bn.bias.float(), training=False, eps=self.bn.eps,
            )
