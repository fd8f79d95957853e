"""The M2D audio encoder (a ViT over log-mel patches) and its chunked, batched encoding.

One implementation serves every released variant (M2D, M2D-S, M2D-AS/M2D-X, M2D-CLAP, 16x16,
16x4 and 80x2 patches, 16 and 32 kHz): they share the encoder and differ only in
:class:`M2DConfig`. Parameter names are those of the official checkpoints (timm ViT names).

Encoding follows the official runtime: the normalised log-mel spectrogram is cut into chunks of
the training input length ("unit", e.g. 608 frames), the last chunk is zero-padded to a whole
patch, each chunk is encoded on its own with its own CLS token and the positional grid
truncated to its length, the CLS output is dropped, the F' frequency patches of each time step
are concatenated, and the chunks are joined in time. Here every chunk of every utterance goes
through the transformer in one batch, with a key padding mask for the short last chunks, which
gives the numbers of encoding each utterance alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..common.logmel import LogMelSpectrogram
from ..common.transformer import ViTBlock, attention_bias

__all__ = ["M2DConfig", "FRONT_ENDS", "M2DEncoder", "M2DModel"]

#: log-mel parameters of the official runtime per input sample rate (80 mel bins, 10 ms hop).
FRONT_ENDS = {
    16000: dict(sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=80, f_min=50.0, f_max=8000.0),
    32000: dict(sample_rate=32000, n_fft=800, win_length=800, hop_length=320, n_mels=80, f_min=50.0, f_max=16000.0),
}

#: s3prl feeds 16 kHz audio; 32 kHz models get it resampled inside the upstream.
INPUT_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class M2DConfig:
    """Shape of one M2D model.

    ``input_size`` is (mel bins, unit frames): the spectrogram size the model was trained on,
    which is also the chunk length at inference. ``patch_size`` is (frequency, time) in bins
    and frames. ``model_name`` is the official class name (``m2d_vit_base``, ``m2d_s_vit_base``,
    ...), kept for messages.
    """

    input_size: tuple[int, int] = (80, 608)
    patch_size: tuple[int, int] = (16, 16)
    sample_rate: int = 16000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    model_name: str = "m2d_vit_base"
    extra: tuple[str, ...] = field(default=())

    def __post_init__(self):
        n_mels, unit = self.input_size
        pf, pt = self.patch_size
        if n_mels != 80:
            raise ValueError(f"M2D models take 80 mel bins, got input_size {self.input_size}")
        if pf <= 0 or pt <= 0 or n_mels % pf:
            raise ValueError(f"patch_size {self.patch_size} does not tile {n_mels} mel bins")
        if unit < pt:
            raise ValueError(f"input_size {self.input_size} is shorter than one patch {self.patch_size}")
        if self.sample_rate not in FRONT_ENDS:
            raise ValueError(f"sample_rate must be one of {sorted(FRONT_ENDS)}, got {self.sample_rate}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def grid_size(self) -> tuple[int, int]:
        """(F', T'_unit): patches along frequency and along one unit chunk."""
        return self.input_size[0] // self.patch_size[0], self.input_size[1] // self.patch_size[1]

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def feature_dim(self) -> int:
        return self.embed_dim * self.grid_size[0]

    @property
    def hop_samples_16k(self) -> int:
        """Input samples (16 kHz) per log-mel frame: 160 for every model (10 ms)."""
        return INPUT_SAMPLE_RATE // 100

    @property
    def downsample_rate(self) -> int:
        """Input samples (16 kHz) per output frame: 10 ms times the patch width."""
        return self.hop_samples_16k * self.patch_size[1]

    def describe(self) -> str:
        n_mels, unit = self.input_size
        pf, pt = self.patch_size
        return (f"{self.model_name} input {n_mels}x{unit} patch {pf}x{pt} {self.sample_rate // 1000} kHz, "
                f"{self.depth} layers x {self.embed_dim}")


class PatchEmbed(nn.Module):
    """Non-overlapping ``(pf, pt)`` patches of the [N, 1, F, T] spectrogram -> [N, F'*T', D],
    frequency-major (token index ``f * T' + t``)."""

    def __init__(self, patch_size: tuple[int, int], embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


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
        self.register_buffer("norm_stats", torch.tensor([-7.1, 4.2]))
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

    def __init__(self, config: M2DConfig, norm_mean: float = -7.1, norm_std: float = 4.2):
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
            padded = torchaudio.functional.resample(padded, INPUT_SAMPLE_RATE, self.config.sample_rate)
            lengths = lengths * ratio
        return self.front_end(padded, lengths)

    def forward(self, padded: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        """``padded`` [B, T] at 16 kHz with valid lengths ``lengths`` -> (per-layer
        ``[B, T', F' * D]``, valid output frames per item)."""
        lms, frames = self.log_mel(padded, lengths)
        lms = (lms - self.norm_mean) / self.norm_std
        return self.encode_lms(lms, frames)

    def encode_lms(self, lms: Tensor, frames: Tensor) -> tuple[list[Tensor], Tensor]:
        """Encode normalised log-mel ``[B, 80, T]`` whose item b has ``frames[b]`` valid frames."""
        config = self.config
        unit = config.input_size[1]
        pt = config.patch_size[1]
        unit_steps = config.grid_size[1]
        batch, n_mels, total = lms.shape

        # Chunk bookkeeping on the host: s3prl hands us host-side lengths anyway and the chunk
        # layout decides tensor shapes. Per item: chunks of `unit` frames; the last chunk is
        # zero-padded to a whole patch and keeps floor(len / pt) steps (as do full chunks).
        frame_counts = [int(n) for n in frames.tolist()]
        num_chunks = max(-(-n // unit) for n in frame_counts)
        chunk_ids, chunk_steps = [], []
        for b, n in enumerate(frame_counts):
            padded_n = n + (pt - n % unit % pt) % pt
            for i in range(-(-n // unit)):
                chunk_ids.append(b * num_chunks + i)
                chunk_steps.append(min(unit, padded_n - i * unit) // pt)
        width_steps = max(chunk_steps)

        # Zero (in the normalised domain) every frame past an item's end, then cut into chunks.
        valid = torch.arange(total, device=lms.device).unsqueeze(0) < frames.to(lms.device).unsqueeze(1)
        lms = lms * valid.unsqueeze(1).to(lms.dtype)
        lms = nn.functional.pad(lms, (0, num_chunks * unit - total))
        chunks = lms.reshape(batch, n_mels, num_chunks, unit).permute(0, 2, 1, 3).reshape(batch * num_chunks, 1, n_mels, unit)
        all_used = len(chunk_ids) == batch * num_chunks
        if not all_used:
            chunks = chunks[torch.tensor(chunk_ids, device=lms.device)]
        chunks = chunks[..., : width_steps * pt]
        steps = torch.tensor(chunk_steps, device=lms.device)
        layers = self.encoder(chunks, None if min(chunk_steps) == width_steps else steps)

        # Back to [B, chunks * T'_unit, F'*D]: chunk i of an item starts at step i * T'_unit.
        out_steps = num_chunks * unit_steps
        outputs = []
        for h in layers:
            if width_steps < unit_steps:
                h = nn.functional.pad(h, (0, 0, 0, unit_steps - width_steps))
            if all_used:
                full = h
            else:
                full = h.new_zeros(batch * num_chunks, unit_steps, h.shape[-1])
                full = full.index_copy(0, torch.tensor(chunk_ids, device=h.device), h)
            outputs.append(full.reshape(batch, out_steps, h.shape[-1]))

        out_frames = torch.tensor(
            [sum(s for cid, s in zip(chunk_ids, chunk_steps) if cid // num_chunks == b) for b in range(batch)],
            device=lms.device,
        )
        # Steps of an item past its own count (the unused tail of its last chunk) hold encodings of
        # padding: zero them so nothing depends on the other items of the batch.
        keep = torch.zeros(batch, num_chunks, unit_steps, dtype=torch.bool)
        for cid, s in zip(chunk_ids, chunk_steps):
            keep[cid // num_chunks, cid % num_chunks, :s] = True
        keep = keep.reshape(batch, out_steps, 1).to(lms.device)
        if not bool(keep.all()):
            outputs = [h * keep.to(h.dtype) for h in outputs]
        return outputs, out_frames
