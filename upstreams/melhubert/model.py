"""MelHuBERT network: a HuBERT transformer fed with log-mel frames instead of a CNN.

``pre_extract_proj`` (Linear F -> 768) -> zero padded frames -> ``+ pos_conv`` -> LayerNorm ->
12 post-LN transformer layers. Parameter names equal the official state dict
(``pre_extract_proj.*``, ``encoder.pos_conv.0.{weight_g,weight_v,bias}``,
``encoder.layers.N.*``, ``encoder.layer_norm.*``, ``final_proj.*``), so official checkpoints load
strictly without renaming.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..common.transformer import PostLNEncoder, attention_bias
from .config import MelHuBERTConfig

__all__ = ["MelHuBERTEncoder", "MelHuBERTModel"]


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
