"""The Dasheng encoder (a ViT over 64x4 log-mel patches), reimplemented for s3prl.

Math of ``dasheng.pretrained.Dasheng`` (pip 0.0.9): the spectrogram is cut into 64-mel x 4-frame
patches (25 Hz), the patch sequence is split into chunks of 252 patches (10.08 s) that are encoded
independently - positions restart at 0 in every chunk and the last chunk is simply shorter - and
each chunk gets separate time and frequency positional embeddings, pre-LN ViT blocks and the final
LayerNorm. Here all chunks of all utterances run as one batch of ``[B * chunks, 252, D]`` rows
with a key padding mask, which gives the same numbers as running the chunks one by one.

The front end is torchaudio-style HTK log-mel in dB, then the checkpoint's BatchNorm: the
official model computes ``AmplitudeToDB(top_db=120)(MelSpectrogram(...)(wav))`` followed by a
``BatchNorm2d`` over the 64 mel bins (eval statistics stored in the checkpoint). Two details make
its batched output depend on the batch, and both are per utterance here by default:

* the centred STFT reflect-pads the *batch* end, so a shorter utterance sees zeros instead of its
  own mirrored tail in its last few frames;
* ``AmplitudeToDB`` floors at ``max - 120 dB`` with the maximum taken over the whole batch tensor.

``per_utterance=False`` reproduces the official batched behaviour exactly (used for
``batch_mode="official"``).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from ..common.logmel import reflect_pad_per_item
from ..common.masks import padding_mask
from ..common.transformer import PatchEmbed, ViTBlock, Workspace, attention_bias, inference_only
from .config import AMIN, HOP_LENGTH, N_FFT, SAMPLE_RATE, TOP_DB, BN_EPS, DashengConfig

__all__ = ["DashengConfig", "DashengFrontEnd", "DashengEncoder", "BatchMode", "HOP_LENGTH"]

BatchMode = Literal["per_utterance", "official"]


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

    def log_mel_db(self, padded: Tensor, lengths: Tensor | None = None, *, per_utterance: bool = True) -> Tensor:
        """The dB log-mel with its ``top_db`` floor, before the BatchNorm (float32): per
        utterance over its own frames (``lengths`` needed), or the package's batch-wide floor
        (also the MAE target of pre-training)."""
        # The STFT has no bf16 kernel and half precision loses the dB floor: always float32.
        with torch.autocast(device_type=padded.device.type, enabled=False):
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
                beyond = padding_mask(frames, db.shape[-1])
                peak = db.masked_fill(beyond.unsqueeze(1), float("-inf")).amax(dim=(1, 2))
            else:
                peak = db.amax().expand(db.shape[0])
            return torch.max(db, (peak - TOP_DB)[:, None, None])

    def forward(self, padded: Tensor, lengths: Tensor, *, per_utterance: bool = True) -> Tensor:
        db = self.log_mel_db(padded, lengths, per_utterance=per_utterance)
        with torch.autocast(device_type=padded.device.type, enabled=False):
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


class DashengEncoder(nn.Module):
    """Front end + patch embedding + chunked pre-LN ViT; returns the hidden states.

    Parameter names equal the official ones (``patch_embed.proj``, ``time_pos_embed``,
    ``freq_pos_embed``, ``blocks.i.*``, ``norm``) except for the front end, whose official
    ``front_end.0.*`` / ``init_bn.1.*`` buffers live in ``front_end`` (see ``formats.py``).
    """

    def __init__(self, config: DashengConfig, front_end: DashengFrontEnd | None = None):
        super().__init__()
        self.config = config
        d = config.embed_dim
        # ``front_end`` may be built beforehand, e.g. on the CPU while the rest goes to ``meta``.
        self.front_end = front_end if front_end is not None else DashengFrontEnd(config.n_mels)
        # the official Conv2d(1, D, (n_mels, 4), stride=(n_mels, 4))
        self.patch_embed = PatchEmbed((config.n_mels, config.patch_frames), config.embed_dim)
        self.time_pos_embed = nn.Parameter(torch.randn(1, d, 1, config.chunk_patches) * 0.02)
        self.freq_pos_embed = nn.Parameter(torch.randn(1, d, 1, 1) * 0.02)
        self.blocks = nn.ModuleList(
            ViTBlock(d, config.num_heads, mlp_ratio=config.mlp_hidden_dim / d, eps=config.layer_norm_eps)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def num_patches(self, lengths: Tensor, batch_mode: BatchMode = "per_utterance") -> Tensor:
        """Valid patches per utterance of ``lengths`` samples.

        ``per_utterance``: what the utterance gives alone, ``(1 + N // 160) // 4`` (inputs shorter
        than one patch count as zero-padded to one patch). ``official``: the key mask of the pip
        package's ``model(x, x_length)``, ``N // 640``.
        """
        cfg = self.config
        if batch_mode == "official":
            return torch.div(lengths, cfg.downsample_rate, rounding_mode="floor")
        frames = DashengFrontEnd.num_frames(lengths.clamp(min=cfg.min_samples))
        return torch.div(frames, cfg.patch_frames, rounding_mode="floor")

    def forward(self, padded: Tensor, lengths: Tensor, batch_mode: BatchMode = "per_utterance") -> list[Tensor]:
        """Hidden states (Hugging Face convention for pre-LN encoders) of a padded batch.

        Returns ``depth + 1`` tensors ``[B, T, D]``: the embeddings (patches + positions), the
        outputs of blocks 1..depth-1, and the final LayerNorm of block ``depth`` (= the official
        model's output). ``T = (1 + max_len // 160) // 4``; frames past an utterance's own
        length are padding.
        """
        if batch_mode not in ("per_utterance", "official"):
            raise ValueError(f"batch_mode must be 'per_utterance' or 'official', got {batch_mode!r}")
        cfg = self.config
        # Inputs shorter than one patch are zero-padded to one patch (the official code fails).
        if padded.shape[-1] < cfg.min_samples:
            padded = F.pad(padded, (0, cfg.min_samples - padded.shape[-1]))
        per_utterance = batch_mode == "per_utterance"
        effective = lengths.clamp(min=cfg.min_samples) if per_utterance else lengths
        spec = self.front_end(padded, effective, per_utterance=per_utterance)
        x = self.patch_embed(spec)  # [B, T, D]
        valid = self.num_patches(lengths, batch_mode)
        own = valid if per_utterance else self.num_patches(lengths)
        return self.encode_patches(x, valid, own, needs_mask=not (per_utterance and x.shape[0] == 1))

    def encode_patches(self, x: Tensor, valid: Tensor, own: Tensor | None = None,
                       needs_mask: bool = True) -> list[Tensor]:
        """Chunk, position-embed and encode patch embeddings ``x`` ([B, T, D]).

        ``valid`` [B]: unmasked keys per utterance; ``own`` [B]: the utterance's own patches.
        Chunks that hold none of an utterance's own patches are not computed (zeros come back).
        """
        b, t, d = x.shape
        width = min(self.config.chunk_patches, t)
        chunks = -(-t // width)
        if chunks * width != t:
            x = F.pad(x, (0, 0, 0, chunks * width - t))
        x = x.reshape(b * chunks, width, d)
        keep = None
        if own is not None and b > 1 and chunks > 1:
            # A long utterance next to short ones leaves chunks of pure padding: skip them. This
            # needs the lengths on the host (one sync, only for multi-chunk batches).
            owned = [c * width < n for n in own.tolist() for c in range(chunks)]
            if not all(owned):
                keep = torch.tensor([i for i, o in enumerate(owned) if o], device=x.device)
                x = x.index_select(0, keep)
        # Same order of additions as the official code: time positions, then frequency.
        x = x + self.time_pos_embed[0, :, 0, :width].transpose(0, 1).to(x.dtype)
        x = x + self.freq_pos_embed[0, :, 0, 0].to(x.dtype)
        bias = None
        if needs_mask or chunks * width != t:
            starts = torch.arange(chunks, device=x.device) * width
            valid_in_chunk = (valid.to(x.device).unsqueeze(1) - starts).clamp(0, width).reshape(-1)
            if keep is not None:
                valid_in_chunk = valid_in_chunk.index_select(0, keep)
            padding = padding_mask(valid_in_chunk, width)
            # Rows without any valid key get a uniform softmax from the finite bias (no NaN).
            bias = attention_bias(padding, x.dtype)
        hidden = [x]
        workspace = Workspace() if inference_only(self, x) else None
        for index, block in enumerate(self.blocks):
            x = block(x, bias, workspace)
            # The last block's raw output is replaced by its LayerNorm (the official output).
            hidden.append(x if index + 1 < len(self.blocks) else self.norm(x))
        if keep is not None:
            hidden = [h.new_zeros(b * chunks, width, d).index_copy(0, keep, h) for h in hidden]
        return [h.reshape(b, chunks * width, d)[:, :t] for h in hidden]
