"""The Dasheng encoder (a ViT over 64x4 log-mel patches), reimplemented for s3prl.

Math of ``dasheng.pretrained.Dasheng`` (pip 0.0.9): the spectrogram is cut into 64-mel x 4-frame
patches (25 Hz), the patch sequence is split into chunks of 252 patches (10.08 s) that are encoded
independently - positions restart at 0 in every chunk and the last chunk is simply shorter - and
each chunk gets separate time and frequency positional embeddings, pre-LN ViT blocks and the final
LayerNorm. Here all chunks of all utterances run as one batch of ``[B * chunks, 252, D]`` rows
with a key padding mask, which gives the same numbers as running the chunks one by one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..common.transformer import ViTBlock, Workspace, attention_bias, inference_only
from .frontend import HOP_LENGTH, DashengFrontEnd

__all__ = ["DashengConfig", "DashengEncoder", "BatchMode"]

BatchMode = Literal["per_utterance", "official"]


@dataclass
class DashengConfig:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden_dim: int = 3072
    n_mels: int = 64
    #: frames per patch (the patch spans all mel bins)
    patch_frames: int = 4
    #: patches per independently encoded chunk (= length of the time positional table)
    chunk_patches: int = 252
    layer_norm_eps: float = 1e-6

    @property
    def downsample_rate(self) -> int:
        return HOP_LENGTH * self.patch_frames

    @property
    def min_samples(self) -> int:
        """Shortest input that yields one patch (``1 + N // 160 >= patch_frames``)."""
        return (self.patch_frames - 1) * HOP_LENGTH

    def to_dict(self) -> dict:
        return asdict(self)


class _PatchEmbed(nn.Module):
    """``proj`` is the official ``Conv2d(1, D, (n_mels, 4), stride=(n_mels, 4))``."""

    def __init__(self, config: DashengConfig):
        super().__init__()
        kernel = (config.n_mels, config.patch_frames)
        self.proj = nn.Conv2d(1, config.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, spec: Tensor) -> Tensor:
        """``[B, n_mels, F]`` -> ``[B, F // patch_frames, D]``; trailing frames are dropped."""
        b, n_mels, frames = spec.shape
        width = self.proj.kernel_size[1]
        t = frames // width
        # A stride-equals-kernel convolution is a matmul over flattened (mel, frame) patches.
        patches = spec[:, :, : t * width].reshape(b, n_mels, t, width).transpose(1, 2)
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)
        return F.linear(patches.reshape(b, t, n_mels * width).to(weight.dtype), weight, self.proj.bias)


class DashengEncoder(nn.Module):
    """Front end + patch embedding + chunked pre-LN ViT; returns the hidden states.

    Parameter names equal the official ones (``patch_embed.proj``, ``time_pos_embed``,
    ``freq_pos_embed``, ``blocks.i.*``, ``norm``) except for the front end, whose official
    ``front_end.0.*`` / ``init_bn.1.*`` buffers live in ``front_end`` (see the importers).
    """

    def __init__(self, config: DashengConfig, front_end: DashengFrontEnd | None = None):
        super().__init__()
        self.config = config
        d = config.embed_dim
        # ``front_end`` may be built beforehand, e.g. on the CPU while the rest goes to ``meta``.
        self.front_end = front_end if front_end is not None else DashengFrontEnd(config.n_mels)
        self.patch_embed = _PatchEmbed(config)
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
            padding = torch.arange(width, device=x.device) >= valid_in_chunk.unsqueeze(1)
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
