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

from .masks import conv_output_lengths, padding_mask

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


def _in_place(x: Tensor) -> bool:
    """Whether ``x`` may be overwritten: no autograd graph needs it. Large activations are then
    updated in place, which on CPUs also saves the page faults of a fresh buffer per operation."""
    return not (torch.is_grad_enabled() and x.requires_grad)


class _ChannelLayerNorm(nn.Sequential):
    """fairseq's ``TransposeLast, Fp32LayerNorm, TransposeLast`` (keys ``<i>.2.1.*``), on the
    channels-last activations (the transposes are then not needed)."""

    def __init__(self, channels: int):
        super().__init__(nn.Identity(), nn.LayerNorm(channels, elementwise_affine=True), nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        norm = self[1]
        return F.layer_norm(x.float(), norm.normalized_shape, norm.weight, norm.bias, norm.eps).to(x.dtype)


class WaveformCNN(nn.Module):
    """Raw 16 kHz waveform ``[B, L]`` -> channels-last features ``[B, T, C]``."""

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
    def _waveform_conv_stats(wavs: Tensor, conv: nn.Conv1d, valid: Tensor | None) -> tuple[Tensor, Tensor]:
        """Mean and variance over time of each channel of ``conv(wavs)`` (the first convolution),
        from the k x k covariance of the waveform frames under the kernel, in float64: the
        statistics of the GroupNorm that follows, without another pass over the (B x T x C)
        output. With ``valid`` [B], over each row's first ``valid`` frames."""
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        frames = wavs.unfold(-1, kernel, stride).double()  # [B, T, k]
        keep = None
        if valid is not None:
            keep = (~padding_mask(valid, frames.shape[1])).unsqueeze(-1).double()
            count = keep.sum(1, keepdim=True).clamp(min=1.0)
            mean = (frames * keep).sum(1, keepdim=True) / count  # [B, 1, k]
        else:
            count = frames.shape[1]
            mean = frames.mean(1, keepdim=True)
        centred = frames - mean if keep is None else (frames - mean) * keep
        covariance = torch.bmm(centred.transpose(1, 2), centred) / count  # [B, k, k]
        weight = conv.weight.squeeze(1).double()  # [C, k]
        out_mean = mean @ weight.t()
        if conv.bias is not None:
            out_mean = out_mean + conv.bias.double()
        out_var = ((weight @ covariance) * weight).sum(-1).unsqueeze(1)  # w_c^T cov w_c, [B, 1, C]
        return out_mean.float(), out_var.float()

    @staticmethod
    def _group_norm(x: Tensor, norm: nn.GroupNorm, stats: tuple[Tensor, Tensor]) -> Tensor:
        """fairseq's Fp32GroupNorm with one group per channel on channels-last ``x`` [B, T, C]:
        each channel normalised over time with ``stats`` (mean, variance [B, 1, C], from
        :meth:`_waveform_conv_stats`). In place when no gradient is needed."""
        x32 = x.float()
        mean, var = stats
        scale = torch.rsqrt(var + norm.eps) * norm.weight.float()
        shift = norm.bias.float() - mean * scale
        if _in_place(x32):
            return x32.mul_(scale).add_(shift).to(x.dtype)
        return torch.addcmul(shift, x32, scale).to(x.dtype)

    @staticmethod
    def _conv(conv: nn.Conv1d, x: Tensor, spare: Tensor | None = None) -> Tensor:
        """``conv`` on channels-last ``x`` [B, T, C] -> [B, T', O], as matrix products.

        In channels-last memory the k frames under one kernel position are k*C consecutive
        numbers, so the convolution's input matrix is a strided view of ``x`` (no im2col copy):
        the taps are taken in groups of ``stride`` (rows of a group do not overlap, which matrix
        products need), one batched product per group. About 1.5x the CPU convolution kernel at
        batch 8; the same sums. ``spare``: a free buffer the output may be written to (inference)."""
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        batch, frames, channels = x.shape
        if frames < kernel:
            raise ValueError(f"an input of {frames} frames is shorter than the convolution's kernel ({kernel})")
        steps = (frames - kernel) // stride + 1
        weight = conv.weight.to(x.dtype)  # [O, C, k]
        if channels == 1:  # the waveform: frames of the signal times the filters
            out = torch.matmul(x.squeeze(-1).unfold(-1, kernel, stride), weight.squeeze(1).t())
        else:
            out = None
            if spare is not None and spare.dtype == x.dtype and spare.numel() >= batch * steps * weight.shape[0]:
                out = spare.view(-1)[: batch * steps * weight.shape[0]].view(batch, steps, weight.shape[0])
            fresh = out is None
            for first in range(0, kernel, stride):
                taps = min(stride, kernel - first)
                view = x.as_strided((batch, steps, taps * channels), (x.stride(0), stride * channels, 1),
                                    x.storage_offset() + first * channels)
                part = weight[:, :, first:first + taps].permute(2, 1, 0).reshape(taps * channels, -1)
                part = part.expand(batch, *part.shape)
                if first == 0:
                    out = torch.bmm(view, part) if fresh else torch.bmm(view, part, out=out)
                elif _in_place(out):
                    out.baddbmm_(view, part)
                else:
                    out = torch.baddbmm(out, view, part)
        return out if conv.bias is None else out + conv.bias.to(out.dtype)

    def forward(self, wavs: Tensor, lengths: Tensor | None = None, *, stats_over_padding: bool = False) -> Tensor:
        """``wavs`` [B, L] (zero right-padded), ``lengths`` [B] valid samples -> channels-last
        features ``[B, T, C]``."""
        x = wavs.unsqueeze(-1)
        # Per-utterance statistics whenever lengths are given (callers pass None for unpadded
        # batches); a lone row padded beyond its length (a DDP-wide padded batch) needs them too.
        masked = lengths is not None and not stats_over_padding
        # Inference: each layer writes into the activation of two layers back (free by then), so
        # the large activations are allocated once, not per layer (on CPUs every fresh buffer
        # costs its page faults). The last layer's output is a buffer of its own.
        reuse = not (torch.is_grad_enabled()
                     and (wavs.requires_grad or any(p.requires_grad for p in self.parameters())))
        previous = None
        last = len(self.conv_layers) - 1
        for index, block in enumerate(self.conv_layers):
            spare = previous if reuse and index < last else None
            previous = x if x.dim() == 3 and x.shape[-1] > 1 else None
            if len(block) == 4 and isinstance(block[2], nn.GroupNorm):  # the first block only
                first = conv_output_lengths(lengths, [self.specs[0][1]], [self.specs[0][2]]) if masked else None
                stats = self._waveform_conv_stats(wavs.float(), block[0], first)
                x = self._group_norm(self._conv(block[0], x, spare), block[2], stats)
            else:
                x = self._conv(block[0], x, spare)
                if len(block) == 4:
                    x = block[2](x)
            x = torch.ops.aten.gelu_(x) if _in_place(x) else F.gelu(x)
        return x
