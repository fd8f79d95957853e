"""The M2D audio encoder (a ViT over log-mel patches) and its chunked, batched encoding.

One implementation serves every released variant (M2D, M2D-S, M2D-AS/M2D-X, M2D-CLAP, 16x16,
16x4 and 80x2 patches, 16 and 32 kHz): they share the encoder and differ only in
:class:`M2DConfig`. Parameter names are those of the official checkpoints (timm ViT names).

Encoding follows the official runtime: the normalised log-mel spectrogram is cut into chunks of
the training input length ("unit", e.g. 608 frames), the last chunk is zero-padded to a whole
patch, each chunk is encoded on its own with its own CLS token and the positional grid
truncated to its length, the CLS output is dropped, the F' frequency patches of each time step
are concatenated, and the chunks are joined in time. Here all chunks of all utterances go
through the transformer together: the per-token layers (LayerNorm, projections, MLP: almost all
of the work) run on the valid tokens of every chunk packed into one matrix, and attention runs
per group of similar-length chunks with a key padding mask. This gives the numbers of encoding
each utterance alone, without spending work on padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..common.logmel import LogMelSpectrogram
from ..common.masks import padding_mask
from .config import DEFAULT_STATS, FRONT_ENDS, INPUT_SAMPLE_RATE, M2DConfig
from ..common.transformer import PatchEmbed, ViTBlock, Workspace, attention_bias, inference_only

__all__ = ["M2DConfig", "M2DEncoder", "M2DModel", "PatchEmbed"]

class M2DEncoder(nn.Module):
    """The ViT encoder with the official parameter names.

    ``cls_token``, ``pos_embed`` (fixed 2-D sin-cos, stored in the checkpoints),
    ``patch_embed.proj``, ``blocks.{i}`` (pre-LN timm blocks), ``norm``, and the ``norm_stats``
    buffer ([mean, std] of the pre-training log-mel, which encoder-only files carry).
    """

    def __init__(self, config: M2DConfig):
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.num_patches, d), requires_grad=False)
        self.patch_embed = PatchEmbed(config.patch_size, d)
        self.blocks = nn.ModuleList(
            ViTBlock(d, config.num_heads, config.mlp_ratio, qkv_bias=True, eps=1e-6) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.register_buffer("norm_stats", torch.tensor(DEFAULT_STATS))
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed_2d(d, config.grid_size).unsqueeze(0))
            nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, chunks: Tensor, valid_steps: Tensor | None = None) -> list[Tensor]:
        """Encode spectrogram chunks ``[N, 1, F, W]`` (``W`` a multiple of the patch width, at most
        the unit length rounded down to whole patches).

        ``valid_steps[n]`` is the number of patch columns (time steps) of chunk n that belong to
        the input; the others are excluded from attention. Returns the per-layer outputs
        ``[N, T', F' * D]`` (CLS dropped, frequency patches of a time step concatenated, lowest
        band first): blocks 1..L-1 as they leave the block, block L after the final norm.
        """
        n_freq, unit_steps = self.config.grid_size
        x = self.patch_embed(chunks)  # [N, F'*T', D]
        steps = x.shape[1] // n_freq
        if steps > unit_steps:
            raise ValueError(f"chunk of {steps} patch columns exceeds the model's {unit_steps}")
        d = x.shape[-1]
        pos = self.pos_embed[:, 1:].reshape(1, n_freq, unit_steps, d)[:, :, :steps].reshape(1, n_freq * steps, d)
        x = x + pos
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)

        bias = None
        if valid_steps is not None:
            step_of_token = torch.arange(steps, device=x.device).repeat(n_freq)  # f * T' + t -> t
            padding = step_of_token.unsqueeze(0) >= valid_steps.unsqueeze(1)
            padding = torch.cat([padding.new_zeros(padding.shape[0], 1), padding], dim=1)  # CLS is valid
            bias = attention_bias(padding, x.dtype)

        layers = []
        for block in self.blocks:
            x = block(x, bias)
            layers.append(x)
        layers[-1] = self.norm(x)
        return [self._stack_frequency(h, n_freq, steps) for h in layers]

    def forward_packed(self, chunks: Tensor, layout: "ChunkLayout") -> list[Tensor]:
        """Encode the chunks ``[B * C, 1, F, unit]`` of a batch as laid out by ``layout``.

        Same results as :meth:`forward` on each chunk alone. Returns per-layer
        ``[B, C * T'_unit, F' * D]``, zero where a chunk has no step.
        """
        n_freq, unit_steps = self.config.grid_size
        d = self.config.embed_dim
        heads = self.config.num_heads
        pos = self.pos_embed[:, 1:].reshape(1, n_freq, unit_steps, d)
        cls = self.cls_token + self.pos_embed[:, :1]

        # Embed each group at its width, then keep the valid tokens, packed.
        packed, biases, shapes = [], [], []
        for (ids, _, width), index, valid, padding in zip(
                layout.groups, layout.chunk_index, layout.valid_index, layout.key_padding):
            n = len(ids)
            images = chunks.index_select(0, index)[..., : width * layout.pt]
            tokens = self.patch_embed(images) + pos[:, :, :width].reshape(1, n_freq * width, d)
            seq = torch.cat([cls.expand(n, -1, -1), tokens], dim=1).reshape(-1, d)
            packed.append(seq if valid is None else seq.index_select(0, valid))
            biases.append(None if padding is None else attention_bias(padding, seq.dtype))
            shapes.append((n, 1 + n_freq * width))
        x = torch.cat(packed) if len(packed) > 1 else packed[0]
        sizes = [p.shape[0] for p in packed]
        del packed

        def attention(qkv: Tensor) -> Tensor:
            outs = []
            for part, (n, seq), valid, bias in zip(qkv.split(sizes), shapes, layout.valid_index, biases):
                if valid is not None:  # back to the padded [n, seq] layout for this group
                    part = part.new_zeros(n * seq, part.shape[-1]).index_copy(0, valid, part)
                q, k, v = part.view(n, seq, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(n * seq, d)
                outs.append(out if valid is None else out.index_select(0, valid))
            return torch.cat(outs) if len(outs) > 1 else outs[0]

        rows = layout.batch * layout.out_steps * n_freq
        shape = (layout.batch, layout.out_steps, n_freq * d)

        def to_output(h: Tensor) -> Tensor:
            # every row is written once: the patch tokens, then zeros where an item has no step
            out = h.new_empty(rows, d).index_copy_(0, layout.output_rows, h.index_select(0, layout.patch_tokens))
            if layout.zero_rows is not None:
                out.index_fill_(0, layout.zero_rows, 0.0)
            return out.view(shape)

        outputs = []
        workspace = Workspace() if inference_only(self, x) else None
        for index, block in enumerate(self.blocks):
            x = block(x, workspace=workspace, attend=attention)  # the shared ViT block on packed tokens
            outputs.append(to_output(self.norm(x) if index == len(self.blocks) - 1 else x))
        return outputs

    @staticmethod
    def _stack_frequency(h: Tensor, n_freq: int, steps: int) -> Tensor:
        n, _, d = h.shape
        return h[:, 1:].reshape(n, n_freq, steps, d).transpose(1, 2).reshape(n, steps, n_freq * d)


def sincos_pos_embed_2d(dim: int, grid_size: tuple[int, int]) -> Tensor:
    """MAE's fixed 2-D sin-cos table with a zero CLS row: [1 + F'*T', dim].

    As in MAE, the first half of the channels encodes the column (time) index and the second
    half the row (frequency) index; only used for freshly built models, since the checkpoints
    store the table.
    """
    rows, cols = grid_size
    if dim % 4:
        raise ValueError(f"embed_dim {dim} must be a multiple of 4 for the sin-cos table")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))

    def encode(pos: Tensor) -> Tensor:
        out = pos.reshape(-1, 1).double() * omega
        return torch.cat([out.sin(), out.cos()], dim=1)

    row_index, col_index = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    table = torch.cat([encode(col_index), encode(row_index)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()


class M2DModel(nn.Module):
    """Waveforms -> normalised log-mel -> chunked batched ViT -> per-layer features.

    ``norm_mean``/``norm_std`` are the statistics of the log-mel used for normalisation (the
    downstream data set's, as in the official SUPERB recipe, or the pre-training ones).
    """

    def __init__(self, config: M2DConfig, norm_mean: float = DEFAULT_STATS[0], norm_std: float = DEFAULT_STATS[1]):
        super().__init__()
        self.config = config
        self.encoder = M2DEncoder(config)
        self.front_end = LogMelSpectrogram(**FRONT_ENDS[config.sample_rate])
        self.norm_mean = float(norm_mean)
        self.norm_std = float(norm_std)

    def log_mel(self, padded: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Un-normalised log-mel [B, 80, T] of 16 kHz input and the per-item frame counts."""
        if self.config.sample_rate != INPUT_SAMPLE_RATE:
            import torchaudio

            # Zero padding resamples to zeros, so each row's valid part is what it would be alone.
            ratio = self.config.sample_rate // INPUT_SAMPLE_RATE
            cudnn = torch.backends.cudnn
            # resample convolves; keep it float32 on GPUs (cuDNN would use TF32 by default)
            with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                             deterministic=cudnn.deterministic, allow_tf32=False):
                padded = torchaudio.functional.resample(padded, INPUT_SAMPLE_RATE, self.config.sample_rate)
            lengths = lengths * ratio
        return self.front_end(padded, lengths)

    def forward(self, padded: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        """``padded`` [B, T] at 16 kHz with valid lengths ``lengths`` -> (per-layer
        ``[B, T', F' * D]``, valid output frames per item)."""
        lms, frames = self.log_mel(padded, lengths)
        lms = (lms - self.norm_mean) / self.norm_std
        return self.encode_lms(lms, frames)

    def encode_lms(self, lms: Tensor, frames: Tensor, out_steps: int | None = None) -> tuple[list[Tensor], Tensor]:
        """Encode normalised log-mel ``[B, 80, T]`` whose item b has ``frames[b]`` valid frames.

        Returns per-layer ``[B, S, F' * D]`` and the valid steps per item; steps past an item's
        own count are zero. ``S = out_steps`` (the frames the caller keeps; later steps are not
        written), by default ``C * T'_unit`` (C = chunks of the longest item).
        """
        config = self.config
        unit = config.input_size[1]
        batch, n_mels, total = lms.shape
        layout = ChunkLayout([int(n) for n in frames.tolist()], config, out_steps)  # one host sync

        # Zero (in the normalised domain) every frame past an item's end, then cut into chunks.
        device = lms.device
        valid = ~padding_mask(frames.to(device), total)
        lms = lms * valid.unsqueeze(1).to(lms.dtype)
        lms = nn.functional.pad(lms, (0, layout.num_chunks * unit - total))
        chunks = lms.reshape(batch, n_mels, layout.num_chunks, unit).transpose(1, 2)
        chunks = chunks.reshape(batch * layout.num_chunks, 1, n_mels, unit)
        outputs = self.encoder.forward_packed(chunks, layout.to(device))
        return outputs, torch.tensor(layout.item_steps, device=device)


class ChunkLayout:
    """Where every token of every chunk goes, computed on the host from the frame counts.

    Chunks: per item, ``ceil(n / unit)`` chunks of ``unit`` frames; the last one zero-padded to
    a whole patch; each keeps ``floor(len / pt)`` patch columns ("steps"). Chunk ``b * C + i`` is
    chunk i of item b. For attention, chunks are grouped: whole chunks together, shorter ones by
    length (a group's padding costs at most ~25 % of its attention work), each group laid out
    ``[n, 1 + F' * width]`` (CLS, then frequency-major patches). Everything else in a
    transformer block acts on each token alone, so it runs on the valid tokens of all groups
    packed into one ``[T, D]`` matrix: no work is spent on padding there.
    """

    def __init__(self, frame_counts: list[int], config: M2DConfig, out_steps: int | None = None):
        unit, pt = config.input_size[1], config.patch_size[1]
        n_freq, unit_steps = config.grid_size
        self.n_freq, self.unit_steps, self.pt = n_freq, unit_steps, pt
        self.batch = len(frame_counts)
        self.num_chunks = max(-(-n // unit) for n in frame_counts)
        #: output steps per item: item b's step s (chunk i, column t: s = i * T'_unit + t) is row b * S + s
        self.out_steps = self.num_chunks * unit_steps if out_steps is None else int(out_steps)
        chunk_ids, chunk_steps, self.item_steps = [], [], []
        for b, n in enumerate(frame_counts):
            padded_n = n + (pt - n % unit % pt) % pt
            steps = [min(unit, padded_n - i * unit) // pt for i in range(-(-n // unit))]
            chunk_ids += [b * self.num_chunks + i for i in range(len(steps))]
            chunk_steps += steps
            self.item_steps.append(sum(steps))

        order = sorted(range(len(chunk_ids)), key=lambda j: (-chunk_steps[j], chunk_ids[j]))
        self.groups = []  # (chunk ids, steps per chunk, width)
        while order:
            width = chunk_steps[order[0]]
            members = [j for j in order if chunk_steps[j] * 4 >= width * 3]
            order = order[len(members):]
            self.groups.append(([chunk_ids[j] for j in members], [chunk_steps[j] for j in members], width))

        # Per group: flat indices (into [n * (1 + F' * width)]) of the valid tokens, in packed order.
        self.valid_index, self.key_padding = [], []
        targets, sources, offset = [], [], 0
        for ids, steps, width in self.groups:
            step_of = torch.arange(width).repeat(n_freq)  # position 1 + f * width + t -> t
            freq_of = torch.arange(n_freq).repeat_interleave(width)
            patch_valid = step_of.unsqueeze(0) < torch.tensor(steps).unsqueeze(1)  # [n, F' * width]
            token_valid = torch.cat([torch.ones(len(ids), 1, dtype=torch.bool), patch_valid], dim=1)
            flat = token_valid.flatten().nonzero().squeeze(1)
            self.valid_index.append(None if bool(token_valid.all()) else flat)
            self.key_padding.append(None if bool(token_valid.all()) else ~token_valid)
            # where each valid patch token lands in the [B * S * F', D] output
            chunk = torch.tensor(ids).unsqueeze(1)
            item_step = (chunk % self.num_chunks) * unit_steps + step_of.unsqueeze(0)  # [n, F' * width]
            rows = (chunk // self.num_chunks * self.out_steps + item_step) * n_freq + freq_of.unsqueeze(0)
            packed_pos = torch.full(token_valid.shape, -1, dtype=torch.long)
            packed_pos[token_valid] = torch.arange(int(token_valid.sum())) + offset
            kept = patch_valid & (item_step < self.out_steps)
            targets.append(rows[kept])
            sources.append(packed_pos[:, 1:][kept])
            offset += int(token_valid.sum())
        self.num_tokens = offset
        self.output_rows = torch.cat(targets)
        self.patch_tokens = torch.cat(sources)
        unwritten = torch.ones(self.batch * self.out_steps * n_freq, dtype=torch.bool)
        unwritten[self.output_rows] = False
        self.zero_rows = unwritten.nonzero().squeeze(1) if bool(unwritten.any()) else None
        self.chunk_index = [torch.tensor(ids) for ids, _, _ in self.groups]

    def to(self, device) -> "ChunkLayout":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        self.valid_index = [move(t) for t in self.valid_index]
        self.key_padding = [move(t) for t in self.key_padding]
        self.output_rows, self.patch_tokens = move(self.output_rows), move(self.patch_tokens)
        self.zero_rows = move(self.zero_rows)
        self.chunk_index = [move(t) for t in self.chunk_index]
        return self
