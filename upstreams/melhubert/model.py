"""MelHuBERT network: a HuBERT transformer fed with log-mel frames instead of a CNN.

``pre_extract_proj`` (Linear F -> 768) -> zero padded frames -> ``+ pos_conv`` -> LayerNorm ->
12 post-LN transformer layers. Parameter names equal the official state dict
(``pre_extract_proj.*``, ``encoder.pos_conv.0.{weight_g,weight_v,bias}``,
``encoder.layers.N.*``, ``encoder.layer_norm.*``, ``final_proj.*``), so official checkpoints load
strictly without renaming. The front end (:class:`MelHuBERTFrontEnd`) computes the official input
features, batched: Kaldi fbank -> global mean/std -> optional frame stacking.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..common.fbank import KaldiFbank
from ..common.masks import padding_mask
from ..common.transformer import PostLNEncoder, attention_bias
from .config import MelHuBERTConfig, NormalisationStats

__all__ = ["MelHuBERTEncoder", "MelHuBERTModel", "MelHuBERTFrontEnd", "WAVEFORM_SCALE"]


class MelHuBERTEncoder(PostLNEncoder):
    """The shared post-LN encoder with MelHuBERT's options (``attention_type: causal``)."""

    def __init__(self, config: MelHuBERTConfig):
        super().__init__(config.encoder_embed_dim, config.encoder_ffn_embed_dim, config.encoder_attention_heads,
                         config.encoder_layers, conv_pos=config.conv_pos, conv_pos_groups=config.conv_pos_groups,
                         dropout=config.dropout, attention_dropout=config.attention_dropout,
                         activation_dropout=config.activation_dropout)
        self.causal = config.attention_type == "causal"

    def _bias(self, padding_mask: Tensor | None, num_frames: int, like: Tensor) -> Tensor | None:
        bias = attention_bias(padding_mask, like.dtype)
        if self.causal:
            future = torch.ones(num_frames, num_frames, dtype=torch.bool, device=like.device).triu(1)
            causal = torch.zeros(num_frames, num_frames, dtype=like.dtype, device=like.device)
            causal = causal.masked_fill(future, torch.finfo(like.dtype).min)
            bias = causal[None, None] if bias is None else (bias + causal).clamp_min(torch.finfo(like.dtype).min)
        return bias

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> list[Tensor]:
        """``x`` [B, T, C] with padded frames already zero; returns the output of every layer."""
        return super().forward(x, self._bias(padding_mask, x.shape[1], x))


class MelHuBERTModel(nn.Module):
    """MelHuBERT on normalised log-mel features.

    ``forward(features [B, T, F], padding_mask [B, T] bool, True = padding, or None)`` returns
    ``1 + encoder_layers`` hidden states ``[B, T, C]``: the projected input (padded frames zero),
    then every transformer layer's output, the layout of the official s3prl wrapper.
    ``final_proj`` is the pre-training classifier (kept so official state dicts load strictly).
    """

    def __init__(self, config: MelHuBERTConfig):
        super().__init__()
        self.config = config
        self.pre_extract_proj = nn.Linear(config.feat_emb_dim, config.encoder_embed_dim)
        self.encoder = MelHuBERTEncoder(config)
        self.final_proj = nn.Linear(config.encoder_embed_dim, config.num_cluster)

    def forward(self, features: Tensor, padding_mask: Tensor | None = None) -> list[Tensor]:
        if features.shape[-1] != self.config.feat_emb_dim:
            raise ValueError(
                f"MelHuBERT expects {self.config.feat_emb_dim}-dim input frames, got {features.shape[-1]}"
            )
        projected = self.pre_extract_proj(features)
        if padding_mask is not None:
            projected = projected.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        return [projected] + self.encoder(projected, padding_mask)


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
        features = features.masked_fill(padding_mask(num_frames, features.shape[1]).unsqueeze(-1), 0.0)
        if self.stack == 1:
            return features, num_frames
        batch, frames, bins = features.shape
        if frames % 2:
            features = nn.functional.pad(features, (0, 0, 0, 1))
        # [B, T, 40] -> [B, T/2, 2 * 40]: row i = [frame 2i, frame 2i + 1]
        stacked = features.reshape(batch, -1, 2 * bins)
        return stacked, torch.div(num_frames + 1, 2, rounding_mode="floor")
