"""The wav2vec2/HuBERT waveform CNN front end, with fairseq's parameter names.

``WaveformCNN`` is fairseq's ``ConvFeatureExtractionModel``: a stack of bias-free 1-D
convolutions, each followed by GELU; in ``"default"`` mode only the first one has a GroupNorm
with one group per channel, in ``"layer_norm"`` mode every block has a LayerNorm over channels.
Parameters live in ``conv_layers.<i>.0.weight`` (+ ``conv_layers.0.2.{weight,bias}`` for the
GroupNorm, ``conv_layers.<i>.2.1.{weight,bias}`` for the LayerNorms), as in fairseq checkpoints.

The first block's GroupNorm normalises each channel over *time*. fairseq computes those
statistics over the whole padded batch row, so a short utterance padded with zeros gets other
features than when run alone. By default the statistics here are taken over each utterance's
valid frames only (the batch then equals running every utterance alone);
``stats_over_padding=True`` reproduces fairseq's batched numbers instead.
"""
from __future__ import annotations

import ast
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masks import conv_output_lengths

__all__ = ["ConvSpec", "parse_conv_layers", "WaveformCNN"]

#: (out_channels, kernel_size, stride) of one convolution
ConvSpec = tuple[int, int, int]


def _evaluate(node: ast.AST):
    """Evaluate the tiny expression language of fairseq's ``conv_feature_layers`` strings."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_evaluate(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _evaluate(node.left), _evaluate(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f"unsupported element {ast.dump(node)}")


def parse_conv_layers(spec: str | Sequence) -> list[ConvSpec]:
    """``"[(512, 10, 5)] + [(512, 3, 2)] * 4"`` (fairseq's format) or a list -> list of triples.

    The string is parsed, never ``eval``-ed: only integers, lists, tuples, ``+`` and ``*``.
    """
    if isinstance(spec, str):
        try:
            value = _evaluate(ast.parse(spec.strip(), mode="eval"))
        except (SyntaxError, ValueError, TypeError) as error:
            raise ValueError(
                f"conv_feature_layers {spec!r} is not a list of (channels, kernel, stride) triples "
                f"such as '[(512, 10, 5)] + [(512, 3, 2)] * 4' ({error})"
            ) from None
    else:
        value = spec
    layers = []
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if not (isinstance(item, (list, tuple)) and len(item) == 3 and all(isinstance(v, int) and v > 0 for v in item)):
            raise ValueError(f"conv_feature_layers: {item!r} is not a (channels, kernel, stride) triple of positive ints")
        layers.append(tuple(item))
    if not layers:
        raise ValueError("conv_feature_layers is empty")
    return layers


class _ChannelLayerNorm(nn.Sequential):
    """fairseq's ``TransposeLast, Fp32LayerNorm, TransposeLast`` (keys ``<i>.2.1.*``)."""

    def __init__(self, channels: int):
        super().__init__(nn.Identity(), nn.LayerNorm(channels, elementwise_affine=True), nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        norm = self[1]
        out = F.layer_norm(x.transpose(1, 2).float(), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        return out.transpose(1, 2).to(x.dtype)


class WaveformCNN(nn.Module):
    """Raw 16 kHz waveform ``[B, L]`` -> features ``[B, C, T]`` plus the valid frame counts."""

    def __init__(self, conv_layers: Sequence[ConvSpec], mode: str = "default", conv_bias: bool = False):
        super().__init__()
        if mode not in ("default", "layer_norm"):
            raise ValueError(f"extractor_mode must be 'default' or 'layer_norm', got {mode!r}")
        self.mode = mode
        self.specs = [tuple(spec) for spec in conv_layers]
        self.conv_layers = nn.ModuleList()
        in_channels = 1
        for index, (channels, kernel, stride) in enumerate(self.specs):
            conv = nn.Conv1d(in_channels, channels, kernel, stride=stride, bias=conv_bias)
            nn.init.kaiming_normal_(conv.weight)
            # index 1 stands where fairseq keeps its (p=0) Dropout, so parameter names match
            if mode == "layer_norm":
                block = nn.Sequential(conv, nn.Identity(), _ChannelLayerNorm(channels), nn.GELU())
            elif index == 0:
                block = nn.Sequential(conv, nn.Identity(), nn.GroupNorm(channels, channels, affine=True), nn.GELU())
            else:
                block = nn.Sequential(conv, nn.Identity(), nn.GELU())
            self.conv_layers.append(block)
            in_channels = channels

    @property
    def out_channels(self) -> int:
        return self.specs[-1][0]

    @property
    def receptive_field(self) -> int:
        """Samples needed for one output frame."""
        field = 1
        for _, kernel, stride in reversed(self.specs):
            field = (field - 1) * stride + kernel
        return field

    @property
    def total_stride(self) -> int:
        rate = 1
        for _, _, stride in self.specs:
            rate *= stride
        return rate

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Valid frames for ``lengths`` samples (fairseq's floor formula, clamped at 0)."""
        return conv_output_lengths(lengths, [s[1] for s in self.specs], [s[2] for s in self.specs])

    @staticmethod
    def _masked_group_norm(x: Tensor, norm: nn.GroupNorm, valid: Tensor) -> Tensor:
        """One-group-per-channel GroupNorm whose statistics cover only the first ``valid`` frames."""
        x32 = x.float()
        keep = (torch.arange(x.shape[-1], device=x.device) < valid[:, None]).unsqueeze(1).to(x32.dtype)
        count = keep.sum(-1, keepdim=True).clamp(min=1.0)
        mean = (x32 * keep).sum(-1, keepdim=True) / count
        var = (((x32 - mean) * keep) ** 2).sum(-1, keepdim=True) / count
        out = (x32 - mean) * torch.rsqrt(var + norm.eps)
        out = out * norm.weight.float()[None, :, None] + norm.bias.float()[None, :, None]
        return out.to(x.dtype)

    @staticmethod
    def _conv(conv: nn.Conv1d, x: Tensor) -> Tensor:
        """``conv(x)``; the single-channel first layer runs as frames of the waveform times the
        filters, a matrix product about twice as fast as the CPU convolution kernel (same result)."""
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        if conv.groups != 1 or conv.padding != (0,) or conv.dilation != (1,):
            return conv(x)
        if conv.in_channels == 1 and x.shape[-1] >= kernel:
            frames = x.squeeze(1).unfold(-1, kernel, stride)  # [B, T, kernel], a view
            out = torch.matmul(frames, conv.weight.squeeze(1).t()).transpose(1, 2)
        else:
            return conv(x)
        return out if conv.bias is None else out + conv.bias[:, None]

    def forward(self, wavs: Tensor, lengths: Tensor | None = None, *, stats_over_padding: bool = False) -> Tensor:
        """``wavs`` [B, L] (zero right-padded), ``lengths`` [B] valid samples -> ``[B, C, T]``."""
        x = wavs.unsqueeze(1)
        # Per-utterance statistics whenever lengths are given (callers pass None for unpadded
        # batches); a lone row padded beyond its length (a DDP-wide padded batch) needs them too.
        masked = lengths is not None and not stats_over_padding
        for index, block in enumerate(self.conv_layers):
            x = self._conv(block[0], x)
            if len(block) == 4:
                norm = block[2]
                if isinstance(norm, nn.GroupNorm):
                    if masked:
                        first = conv_output_lengths(lengths, [self.specs[0][1]], [self.specs[0][2]])
                        x = self._masked_group_norm(x, norm, first)
                    else:  # fairseq's Fp32GroupNorm
                        x = F.group_norm(x.float(), norm.num_groups, norm.weight.float(), norm.bias.float(), norm.eps).to(x.dtype)
                else:
                    x = norm(x)
            x = F.gelu(x)
        return x
