"""Transformer pieces shared by the families, with the parameter names of the official code.

* :class:`ViTBlock` - the pre-LN block of timm's ViT (M2D, Dasheng).
* :class:`PostLNTransformerLayer` - fairseq's wav2vec2/HuBERT encoder layer with
  ``layer_norm_first=False`` (MelHuBERT, ARMHuBERT, STaRHuBERT).
* :class:`ConvPositionalEmbedding` - wav2vec2's weight-normed grouped convolution.
* :class:`PostLNEncoder` - fairseq's encoder around them (positional convolution, LayerNorm,
  post-LN layers), with the layer flags of ARMHuBERT's attention-map reuse.

Attention uses ``scaled_dot_product_attention`` with an optional key padding mask, so padded
positions never reach a valid frame (the batch then equals running each utterance alone).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_plugins import compat

__all__ = [
    "PatchEmbed",
    "Workspace",
    "inference_only",
    "feed_forward_in",
    "linear_in",
    "attention_bias",
    "ViTAttention",
    "ViTBlock",
    "SelfAttention",
    "PostLNTransformerLayer",
    "ConvPositionalEmbedding",
    "PostLNEncoder",
]


class Workspace:
    """Buffers reused by the layers of one inference forward.

    On CPUs every large fresh tensor costs its page faults (glibc maps and unmaps buffers above
    32 MB per allocation), often more than the arithmetic that fills it: the FFN's hidden
    activations and the attention maps are therefore written into one buffer per role, reused
    from layer to layer. Only for forwards without autograd (the encoders create one when
    ``inference_only`` says so)."""

    def __init__(self):
        self._buffers: dict[str, Tensor] = {}

    def take(self, role: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A contiguous ``shape`` buffer of ``like``'s dtype and device (contents undefined)."""
        numel = math.prod(shape)
        buffer = self._buffers.get(role)
        if buffer is None or buffer.numel() < numel or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[role] = buffer
        return buffer[:numel].view(shape)


def inference_only(module: nn.Module, x: Tensor) -> bool:
    """True when ``module`` runs without dropout and without autograd: activations may then be
    overwritten in place and buffers reused."""
    return not module.training and not (torch.is_grad_enabled() and x.requires_grad)


def linear_in(workspace: Workspace, role: str, x: Tensor, linear: nn.Linear) -> Tensor:
    """``linear(x)`` written into the workspace's ``role`` buffer (valid until the next call for
    that role)."""
    rows = x.reshape(-1, x.shape[-1])
    out = workspace.take(role, (rows.shape[0], linear.out_features), rows)
    if linear.bias is not None:
        torch.addmm(linear.bias, rows, linear.weight.t(), out=out)
    else:
        torch.mm(rows, linear.weight.t(), out=out)
    return out.view(*x.shape[:-1], linear.out_features)


def feed_forward_in(workspace: Workspace, x: Tensor, fc1: nn.Linear, fc2: nn.Linear) -> Tensor:
    """``fc2(gelu(fc1(x)))`` with the hidden activation in a reused buffer, GELU in place."""
    hidden = torch.ops.aten.gelu_(linear_in(workspace, "ffn", x, fc1))
    return F.linear(hidden, fc2.weight, fc2.bias)


def attention_bias(key_padding_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Additive ``[B, 1, 1, S]`` bias that removes padded keys (True = padding) from softmax."""
    if key_padding_mask is None:
        return None
    bias = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
    bias = bias.masked_fill(key_padding_mask, torch.finfo(dtype).min)
    return bias[:, None, None, :]


class PatchEmbed(nn.Module):
    """Non-overlapping ``(pf, pt)`` patches of a one-channel spectrogram ``[N, F, T]`` (or
    ``[N, 1, F, T]``) -> ``[N, F' * T', D]``, frequency-major (token ``f * T' + t``); trailing
    bins and frames that fill no whole patch are dropped (M2D, Dasheng).

    The weights live in a Conv2d (the checkpoints' ``patch_embed.proj``), but since the patches
    do not overlap the product is computed as one matrix multiplication: the same numbers, and
    plain float32 on GPUs too (cuDNN convolutions default to TF32 there, matmuls do not). The
    input is cast to the weights' dtype (a float32 front end under a bfloat16 encoder).
    """

    def __init__(self, patch_size: tuple[int, int], embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            x = x[:, 0]
        n, freq, time = x.shape
        pf, pt = self.proj.kernel_size
        rows, cols = freq // pf, time // pt
        x = x[:, : rows * pf, : cols * pt]
        patches = x.reshape(n, rows, pf, cols, pt).permute(0, 1, 3, 2, 4).reshape(n, rows * cols, pf * pt)
        weight = self.proj.weight.reshape(self.proj.out_channels, pf * pt)
        return F.linear(patches.to(weight.dtype), weight, self.proj.bias)


class ViTAttention(nn.Module):
    """timm ``Attention``: fused ``qkv`` projection, ``proj`` output projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, bias: Tensor | None = None, attend=None, workspace: Workspace | None = None) -> Tensor:
        """``attend`` (optional): a function of the fused ``qkv`` projection that returns the
        attention output in place of the plain per-sequence attention (M2D's packed chunks);
        ``workspace`` (inference): the projection goes into a reused buffer."""
        qkv = self.qkv(x) if workspace is None else linear_in(workspace, "qkv", x, self.qkv)
        if attend is not None:
            return self.proj(attend(qkv))
        b, n, c = x.shape
        q, k, v = qkv.view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-LN block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))`` (timm ``Block``).

    ``bias`` is the additive mask from :func:`attention_bias` (or None for no padding).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = ViTAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = _MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, bias: Tensor | None = None, workspace: Workspace | None = None,
                attend=None) -> Tensor:
        if workspace is None:
            x = x + self.attn(self.norm1(x), bias, attend)
            return x + self.mlp(self.norm2(x))
        # inference: the same sums, the residual added in place, the projections in reused buffers
        x = self.attn(self.norm1(x), bias, attend, workspace).add_(x)
        return feed_forward_in(workspace, self.norm2(x), self.mlp.fc1, self.mlp.fc2).add_(x)


class SelfAttention(nn.Module):
    """fairseq ``MultiheadAttention`` for self-attention (separate q/k/v/out projections).

    With ``need_weights=True`` the post-softmax map ``[B, H, T, T]`` is returned too (computed
    explicitly, since SDPA does not expose it); otherwise SDPA runs the fused kernel.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = True, dropout: float = 0.0,
                 reuses_map: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # dropout on the attention probabilities, active in train mode only (fairseq semantics)
        self.dropout = dropout
        # A layer that reuses an earlier layer's map (ARMHuBERT) has no query/key projections.
        self.reuses_map = reuses_map
        if not reuses_map:
            self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        if not reuses_map:
            self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, bias: Tensor | None = None, need_weights: bool = False,
                scores: Tensor | None = None, *, overwrite: bool = False, scratch: Tensor | None = None):
        """``scores`` ([B, H, T, T]), when given, replaces ``q kᵀ/√d``: the map is then
        ``softmax(scores + bias)``. Layers built with ``reuses_map=True`` need it (ARMHuBERT feeds
        the previous layer's post-softmax map here, hence its "double softmax").

        ``overwrite`` (inference only): the map is computed in place, in ``scores`` when given
        (its content is then lost), else in ``scratch`` (a free [B, H, T, T] buffer of the map's dtype) when
        given. A [B, H, T, T] map is the largest tensor of the model; on CPUs a fresh one per
        operation costs more in page faults than the softmax itself."""
        b, t, c = x.shape
        if scores is not None:
            v = self._heads(self.v_proj(x))
            weights = _map_softmax(scores, bias, overwrite).to(v.dtype)
            out = torch.matmul(F.dropout(weights, self.dropout, self.training), v)
            out = self.out_proj(out.transpose(1, 2).reshape(b, t, c))
            return out, weights if need_weights else None
        if self.reuses_map:
            raise ValueError("this attention reuses an earlier layer's map: pass scores=...")
        # Three separate products: fusing them would need the weights concatenated per call,
        # which costs more than it saves on CPUs (measured: 3.4 ms against 2.6 ms at 100 frames).
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        if need_weights:
            # fairseq scales q before the product; same math as SDPA's scaling.
            into = scratch if overwrite and scratch is not None and scratch.dtype == q.dtype else None
            scores = torch.matmul(q * self.head_dim ** -0.5, k.transpose(-1, -2), out=into)
            weights = _map_softmax(scores, bias, overwrite).to(q.dtype)
            out = torch.matmul(F.dropout(weights, self.dropout, self.training), v)
        else:
            weights = None
            dropout_p = self.dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
        out = self.out_proj(out.transpose(1, 2).reshape(b, t, c))
        return out, weights


def _map_softmax(scores: Tensor, bias: Tensor | None, overwrite: bool) -> Tensor:
    """``softmax(scores + bias)`` over the keys, in float32; in place in ``scores`` when
    ``overwrite`` (and it is a float32 CPU tensor outside autograd)."""
    if overwrite and scores.dtype == torch.float32 and scores.device.type == "cpu" and not (
            torch.is_grad_enabled() and scores.requires_grad):
        if bias is not None:
            scores.add_(bias)
        return torch.ops.aten._softmax.out(scores, -1, False, out=scores)
    if bias is not None:
        scores = scores + bias
    return torch.softmax(scores, dim=-1, dtype=torch.float32)


class PostLNTransformerLayer(nn.Module):
    """fairseq ``TransformerSentenceEncoderLayer`` with ``layer_norm_first=False`` (eval mode).

    ``x = LN1(x + attn(x))``; ``x = LN2(x + fc2(gelu(fc1(x))))``, exact (erf) GELU.
    The dropout rates (default 0) act in train mode only, where fairseq puts them: attention
    probabilities, the FFN activation, and each residual branch.
    """

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        eps: float = 1e-5,
        *,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        reuses_map: bool = False,
    ):
        super().__init__()
        self.dropout = dropout
        self.activation_dropout = activation_dropout
        self.self_attn = SelfAttention(dim, num_heads, dropout=attention_dropout, reuses_map=reuses_map)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)

    def feed_forward(self, x: Tensor) -> Tensor:
        hidden = F.dropout(F.gelu(self.fc1(x)), self.activation_dropout, self.training)
        return F.dropout(self.fc2(hidden), self.dropout, self.training)

    def forward(self, x: Tensor, bias: Tensor | None = None, need_weights: bool = False,
                scores: Tensor | None = None, *, overwrite: bool = False, scratch: Tensor | None = None,
                workspace: Workspace | None = None):
        attn, weights = self.self_attn(x, bias, need_weights=need_weights, scores=scores, overwrite=overwrite,
                                       scratch=scratch)
        if workspace is not None:  # inference: residuals added in place, the FFN hidden in a reused buffer
            x = self.self_attn_layer_norm(attn.add_(x))
            return self.final_layer_norm(feed_forward_in(workspace, x, self.fc1, self.fc2).add_(x)), weights
        x = self.self_attn_layer_norm(x + F.dropout(attn, self.dropout, self.training))
        x = self.final_layer_norm(x + self.feed_forward(x))
        return x, weights


class _SamePad(nn.Module):
    """Drops the extra frame an even kernel with ``padding=k//2`` produces."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, : -self.remove] if self.remove else x


class ConvPositionalEmbedding(nn.Sequential):
    """wav2vec2's relative positional convolution: ``gelu(SamePad(weight_norm(conv)(x)))``.

    Placed as ``encoder.pos_conv`` it owns ``encoder.pos_conv.0.{weight_g, weight_v, bias}``
    (legacy ``weight_norm`` over dim 2), the names of fairseq checkpoints. Input and output are
    ``[B, T, C]``; the caller adds the result to ``x``. Padded frames must be zeroed by the
    caller before the convolution.
    """

    def __init__(self, dim: int, kernel_size: int = 128, groups: int = 16):
        conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=groups)
        nn.init.normal_(conv.weight, mean=0, std=math.sqrt(4 / (kernel_size * dim)))
        nn.init.zeros_(conv.bias)
        conv = compat.legacy_weight_norm(conv, name="weight", dim=2)  # fairseq's weight_g/weight_v names
        super().__init__(conv, _SamePad(kernel_size), nn.GELU())

    def forward(self, x: Tensor) -> Tensor:
        # A channels-last 2-D convolution would skip the two transposes, but oneDNN then holds a
        # reordered copy of input and weights: +50 to +110 MiB peak at 8 x 10 s for 1-3 % speed.
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class PostLNEncoder(nn.Module):
    """fairseq's ``TransformerEncoder`` with ``layer_norm_first=False`` (HuBERT Base and the models
    built on it): ``LN(x + pos_conv(x))``, dropout, then post-LN layers; ``forward`` returns every
    layer's output. Parameter names are the official ``pos_conv.0.*``, ``layers.N.*``,
    ``layer_norm.*``.

    ``reuse_pattern`` (ARMHuBERT): one flag per layer, True = the layer computes its attention
    map, False = it has no query/key projections and is given the map of an earlier layer by a
    subclass's loop; reusing layers have attention dropout 0, as in the official code.
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, num_layers: int, *, conv_pos: int = 128,
                 conv_pos_groups: int = 16, dropout: float = 0.0, attention_dropout: float = 0.0,
                 activation_dropout: float = 0.0, reuse_pattern=None):
        super().__init__()
        self.dropout = dropout
        self.reuse_pattern = tuple(reuse_pattern) if reuse_pattern is not None else (True,) * num_layers
        if len(self.reuse_pattern) != num_layers:
            raise ValueError(f"reuse_pattern has {len(self.reuse_pattern)} flags for {num_layers} layers")
        self.pos_conv = ConvPositionalEmbedding(dim, conv_pos, conv_pos_groups)
        self.layers = nn.ModuleList(
            PostLNTransformerLayer(dim, ffn_dim, num_heads, dropout=dropout,
                                   attention_dropout=attention_dropout if computes else 0.0,
                                   activation_dropout=activation_dropout, reuses_map=not computes)
            for computes in self.reuse_pattern
        )
        self.layer_norm = nn.LayerNorm(dim, eps=1e-5)

    def embed(self, x: Tensor) -> Tensor:
        """The input of the first layer, ``LN(x + pos_conv(x))`` before dropout; padded frames of
        ``x`` [B, T, C] must be zero."""
        return self.layer_norm(x + self.pos_conv(x))

    def forward(self, x: Tensor, bias: Tensor | None = None) -> list[Tensor]:
        """``x`` [B, T, C] (padded frames zero), ``bias`` an additive attention mask or None."""
        x = F.dropout(self.embed(x), self.dropout, self.training)
        workspace = Workspace() if inference_only(self, x) else None
        outputs = []
        for layer in self.layers:
            x, _ = layer(x, bias, workspace=workspace)
            outputs.append(x)
        return outputs
