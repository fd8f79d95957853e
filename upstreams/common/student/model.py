"""The distilled student of ARMHuBERT, ARMwavLM, MaskHuBERT and STaRHuBERT (one implementation).

Waveform CNN (HuBERT's stack with two extra 1x1 convolutions) -> LayerNorm -> convolutional
positional embedding -> post-LN transformer. In ARMHuBERT/ARMwavLM the layers marked False in
``reuse_pattern`` have no query/key projections and reuse the post-softmax map of the latest
computing layer, passed through a second softmax (the released weights were trained that way).
ARM/Mask expose the 12 distillation projection heads (768-d); STaR exposes the layer outputs.

Parameter names equal the official ``CustomStudentModel`` (the keys after ``student_model.``).

Batching: by default every utterance of a padded batch gets exactly what it would get alone. With
``official_batching=True`` the numbers of the official code for a padded batch are reproduced
instead: its first GroupNorm takes statistics over the padding too, and its map-reusing layers
read the previous map in (head, batch) order while laying out values in (batch, head) order, so
for B > 1 heads and utterances get mixed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..masks import padding_mask
from ..transformer import PostLNEncoder, Workspace, attention_bias, inference_only
from ..wave_cnn import WaveformCNN
from .config import ARM, StudentConfig

__all__ = ["StudentModel", "StudentEncoder", "ProjectionHead"]


class _GradMultiply(torch.autograd.Function):
    """Identity forward, gradient times ``scale`` backward (fairseq ``GradMultiply``)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def _scale_grad(x: Tensor, scale: float) -> Tensor:
    return _GradMultiply.apply(x, scale) if scale != 1.0 and x.requires_grad else x


class StudentEncoder(PostLNEncoder):
    """The shared post-LN encoder with attention-map reuse and layer-wise gradient scaling."""

    def __init__(self, cfg: StudentConfig):
        super().__init__(cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim, cfg.encoder_attention_heads,
                         len(cfg.reuse_pattern), conv_pos=cfg.conv_pos, conv_pos_groups=cfg.conv_pos_groups,
                         dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
                         activation_dropout=cfg.activation_dropout, reuse_pattern=cfg.reuse_pattern)
        self.layer_grad_scale = cfg.layer_grad_scale
        # A computing layer materialises its map only when a later layer reuses it; all other
        # layers run the fused SDPA kernel.
        self._keeps_map = [
            computes and index + 1 < len(self.reuse_pattern) and not self.reuse_pattern[index + 1]
            for index, computes in enumerate(self.reuse_pattern)
        ]

    def forward(self, x: Tensor, pad: Tensor | None, *, official_batching: bool = False,
                return_input: bool = False) -> list[Tensor] | tuple[list[Tensor], Tensor]:
        """``x`` [B, T, D], ``pad`` [B, T] (True = padding) or None -> every layer's output;
        with ``return_input`` also the input of the first layer (``LN(x + pos_conv(x))`` before
        dropout: the official STaR student's ``pre_trf``)."""
        if pad is not None:
            x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        layer_input = self.embed(x)
        x = F.dropout(layer_input, self.dropout, self.training)
        bias = attention_bias(pad, x.dtype)
        # Inference: one [B, H, T, T] buffer serves every map (computed, reused, softmaxed in place).
        overwrite = not (torch.is_grad_enabled() and x.requires_grad)
        workspace = Workspace() if inference_only(self, x) else None
        outputs = []
        reused = None
        free = None  # a map buffer no longer needed
        count = len(self.layers)
        for index, (layer, computes, keeps_map) in enumerate(zip(self.layers, self.reuse_pattern, self._keeps_map)):
            if computes:
                x, probs = layer(x, bias, need_weights=keeps_map, overwrite=overwrite, scratch=free,
                                 workspace=workspace)
                if keeps_map:
                    reused = self._official_order(probs) if official_batching else probs
                    if bias is not None:
                        # the reusing layers mask the same keys: add the mask once, in place when
                        # autograd does not need the probabilities (softmax's backward reads them;
                        # the official order of a single utterance is a view of them)
                        reused = reused.add_(bias) if overwrite else reused + bias
            else:
                # the last layer that reuses this map may softmax it in place
                last_user = index + 1 == count or self.reuse_pattern[index + 1]
                x, _ = layer(x, None, scores=reused, overwrite=overwrite and last_user, workspace=workspace)
                free = reused if overwrite and last_user else None
            if self.layer_grad_scale and torch.is_grad_enabled():
                # the official layer-wise gradient scaling: (n-i)/(n-i+1) down the stack, the rest
                # to the layer's own output (forward values unchanged)
                n = len(self.layers)
                mult = (n - len(outputs)) / (n - len(outputs) + 1)
                x = _scale_grad(x, mult)
                outputs.append(_scale_grad(x, 1 - mult))
            else:
                outputs.append(x)
        return (outputs, layer_input) if return_input else outputs

    @staticmethod
    def _official_order(probs: Tensor) -> Tensor:
        """The official reuse reads the [H, B, T, T] map flat as if it were [B, H, T, T]."""
        b, h, t, s = probs.shape
        return probs.transpose(0, 1).reshape(b, h, t, s)


class ProjectionHead(nn.Module):
    """One distillation head (``proj_head.<i>.lin_proj``): Linear D -> 768, absent if D == 768."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.lin_proj = nn.Linear(in_dim, out_dim) if in_dim != out_dim else None

    def forward(self, x: Tensor) -> Tensor:
        return self.lin_proj(x) if self.lin_proj is not None else x


class StudentModel(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.encoder_embed_dim
        if cfg.flavour == ARM:
            # masking distillation's mask embedding: unused at inference, kept so checkpoints
            # round-trip and the parameter count equals the published one
            self.mask_emb = nn.Parameter(torch.empty(dim).uniform_())
        self.feature_extractor = WaveformCNN(cfg.conv_feature_layers, cfg.extractor_mode, cfg.conv_bias)
        embed = self.feature_extractor.out_channels
        self.post_extract_proj = nn.Linear(embed, dim) if embed != dim else None
        self.encoder = StudentEncoder(cfg)
        self.layer_norm = nn.LayerNorm(embed, eps=1e-5)
        if cfg.flavour == ARM:
            self.proj_head = nn.ModuleList(
                ProjectionHead(dim, cfg.pred_head_final_dim) for _ in range(cfg.encoder_layers)
            )

    @property
    def receptive_field(self) -> int:
        return self.feature_extractor.receptive_field

    @property
    def downsample_rate(self) -> int:
        return self.feature_extractor.total_stride

    def forward(self, wavs: Tensor, lengths: Tensor, *, official_batching: bool = False,
                mask_indices: Tensor | None = None, return_layer_input: bool = False,
                return_features: bool = False) -> dict:
        """``wavs`` [B, L] zero-padded at 16 kHz, ``lengths`` [B] -> dict with ``hidden_states``
        (ARM: projection heads [B, T, 768]; STaR: layer outputs [B, T, D]), ``layer_results``
        and ``padding_mask`` [B, T].

        Training only: ``mask_indices`` [B, T] (True = masked) replaces those frames by
        ``mask_emb`` after the input dropout (masking distillation); ``return_layer_input`` adds
        ``layer_input``, the input of the first layer [B, T, D] (STaR's intra-layer loss);
        ``return_features`` adds ``features``, the CNN features after their LayerNorm / projection,
        before the input dropout [B, T, D] (the official STaR student's ``post_cnn``)."""
        # Unpadded batches need no masking at all; one host sync per batch decides. (Compared with
        # the padded width, not lengths[0]: training may pad a batch beyond its longest utterance.)
        uniform = bool((lengths == wavs.shape[1]).all())
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.feature_grad_mult > 0):
            features = self.feature_extractor(wavs, None if uniform else lengths, stats_over_padding=official_batching)
        features = _scale_grad(features, self.cfg.feature_grad_mult) if self.cfg.feature_grad_mult > 0 else features
        # the CNN may stay float32 under a half-precision encoder (the upstream's front-end rule)
        x = self.layer_norm(features.to(self.layer_norm.weight.dtype))
        frames = self.feature_extractor.output_lengths(lengths)
        crop = x.shape[1] % self.cfg.crop_seq_to_multiple
        if crop:
            x = x[:, : x.shape[1] - crop]
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        features = x
        x = F.dropout(x, self.cfg.dropout_input, self.training)
        if mask_indices is not None:
            if not hasattr(self, "mask_emb"):
                raise ValueError("mask_indices needs a student with mask_emb (ARMHuBERT/MaskHuBERT flavour)")
            if mask_indices.shape != x.shape[:2]:
                raise ValueError(f"mask_indices {tuple(mask_indices.shape)} does not match the {tuple(x.shape[:2])} "
                                 "frames of the student")
            x = torch.where(mask_indices.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        pad = None if uniform else padding_mask(frames, x.shape[1])
        layer_input = None
        layer_results = self.encoder(x, pad, official_batching=official_batching, return_input=return_layer_input)
        if return_layer_input:
            layer_results, layer_input = layer_results
        if self.cfg.flavour == ARM:
            hidden = [head(h) for head, h in zip(self.proj_head, layer_results)]
        else:
            hidden = list(layer_results)
        out = {"hidden_states": hidden, "layer_results": layer_results, "padding_mask": pad}
        if return_layer_input:
            out["layer_input"] = layer_input
        if return_features:
            out["features"] = features
        return out
