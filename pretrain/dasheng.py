"""Dasheng pre-training recipe: a masked autoencoder over 64x4 log-mel patches.

Facts from the ``dasheng`` package (``dasheng/train/models.py``, ``train.py``, configs):

* encoder = the Dasheng ViT (the same module the upstream uses, so the export loads unchanged);
  the front end computes the dB log-mel (top_db 120 over the batch tensor, as torchaudio's
  ``AmplitudeToDB`` does on a batch) in float32 and normalises it with the BatchNorm ``init_bn``,
  which learns its running statistics during pre-training;
* masking after the positional embeddings, before the blocks: ratio 0.75 in groups of 2 adjacent
  patches (80 ms); ``len_keep = int(L * 0.25)``; no CLS token;
* decoder: Linear(D -> 512), learnable mask token, learnable positions, 8 pre-LN blocks of
  16 heads, LayerNorm, Linear(512 -> 64*4);
* loss: MSE against the per-patch standardised raw dB patches (``norm_pix_loss``), averaged over
  the masked patches, in float32;
* data: 10 s crops of webdataset shards; AdamW lr 3e-4, wd 0.01, 3 warm-up "epochs" of 15,000
  iterations, cosine to 0.1 x lr over 100 such epochs, batch 256 per process.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from glob import glob
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..upstreams.common.transformer import ViTBlock
from ..upstreams.dasheng.config import HOP_LENGTH, DashengConfig
from ..upstreams.dasheng.formats import architecture_config, write_pip
from ..upstreams.dasheng.model import DashengEncoder, DashengFrontEnd
from .config import ConfigError
from .data import AudioList, DataError, TarShards, crop_or_pad, random_crop
from .init import init_bert, init_vit
from .recipe import Recipe, register

__all__ = ["DashengModelConfig", "DashengObjective", "DashengData", "DashengDecoder", "DashengMAE", "DashengRecipe"]


@dataclass
class DashengModelConfig(DashengConfig):
    """The encoder's configuration (the upstream's own) plus the MAE decoder."""

    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16

    def validate(self) -> None:
        if self.embed_dim % self.num_heads or self.decoder_embed_dim % self.decoder_num_heads:
            raise ConfigError("model.embed_dim / decoder_embed_dim must be divisible by their head counts")

    def encoder_config(self) -> DashengConfig:
        return DashengConfig(**{f.name: getattr(self, f.name) for f in fields(DashengConfig)})


@dataclass
class DashengObjective:
    mask_ratio: float = 0.75
    #: adjacent patches masked together (official group_masking: groups of 2)
    mask_group: int = 2
    norm_pix_loss: bool = True

    def validate(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0 or self.mask_group < 1:
            raise ConfigError("objective.mask_ratio must lie in (0, 1) and objective.mask_group be >= 1")


@dataclass
class DashengData:
    #: webdataset .tar shards (paths or glob patterns), or an audio list (CSV/text) instead
    shards: list[str] | None = None
    audio_list: str | None = None
    root: str | None = None
    crop_seconds: float = 10.0
    sample_rate: int = 16000
    #: validation data (official ``cv_data``, VGGSound test): a list of tar shards (paths or glob
    #: patterns), or one audio list (CSV/text); one crop of ``crop_seconds`` per file
    valid: list[str] | str | None = None

    def validate(self) -> None:
        if bool(self.shards) == bool(self.audio_list):
            raise ConfigError("give exactly one of data.shards (tar shards) and data.audio_list")
        if isinstance(self.valid, str) and self.valid.endswith(".tar"):
            self.valid = [self.valid]
        if self.sample_rate != 16000:
            raise ConfigError("Dasheng models take 16 kHz audio (data.sample_rate: 16000)")


class DashengDecoder(nn.Module):
    """The MAE decoder with the official names (``AudioTransformerMAE_Decoder``): ``input_proj``,
    ``mask_token``, ``pos_embed`` (learned, zero init, one row more than the encoder's positions),
    ``blocks``, ``norm``, ``outputlayer``."""

    def __init__(self, cfg: DashengModelConfig):
        super().__init__()
        dd = cfg.decoder_embed_dim
        self.input_proj = nn.Linear(cfg.embed_dim, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.chunk_patches + 1, dd))
        self.blocks = nn.ModuleList(ViTBlock(dd, cfg.decoder_num_heads, 4.0, eps=1e-6) for _ in range(cfg.decoder_depth))
        self.norm = nn.LayerNorm(dd, eps=1e-6)
        self.outputlayer = nn.Linear(dd, cfg.n_mels * cfg.patch_frames)
        init_bert(self, truncated=True)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        x = self.input_proj(latent)
        b, keep, dd = x.shape
        length = ids_restore.shape[1]
        x = torch.cat([x, self.mask_token.expand(b, length - keep, -1)], dim=1)
        x = torch.gather(x, 1, ids_restore[:, :, None].expand(-1, -1, dd)) + self.pos_embed[:, :length]
        for block in self.blocks:
            x = block(x)
        return self.outputlayer(self.norm(x))


class DashengMAE(nn.Module):
    """``encoder`` (the upstream's :class:`DashengEncoder`, so the export is the upstream's
    weights) + ``decoder`` (:class:`DashengDecoder`)."""

    def __init__(self, cfg: DashengModelConfig, objective: DashengObjective):
        super().__init__()
        self.cfg, self.objective = cfg, objective
        with torch.device("cpu"):  # the filterbank is computed on the host, even when building on "meta"
            front_end = DashengFrontEnd(cfg.n_mels)
        self.encoder = DashengEncoder(cfg.encoder_config(), front_end=front_end)
        init_vit(self.encoder)  # the official encoder's init_weights
        self.decoder = DashengDecoder(cfg)

    def log_mel_db(self, wave: Tensor) -> Tensor:
        """Raw dB log-mel [B, n_mels, 1 + N // 160] in float32 (the MAE target, before BatchNorm):
        the upstream's front end with the batch-wide floor of the official AmplitudeToDB."""
        return self.encoder.front_end.log_mel_db(wave, per_utterance=False)

    def mask_order(self, group_noise: Tensor, length: int) -> Tensor:
        """Patch order (visible first) from one noise value per group of adjacent patches."""
        group = self.objective.mask_group
        if length % group:
            raise DataError(f"the crop has {length} patches, not a multiple of the mask group {group}; "
                            "adjust data.crop_seconds")
        indices = torch.arange(length, device=group_noise.device).view(-1, group)
        if group_noise.shape[1] != indices.shape[0]:
            raise DataError(f"mask noise has {group_noise.shape[1]} groups, the crop {indices.shape[0]}")
        return indices[torch.argsort(group_noise, dim=1)].flatten(-2)

    def forward(self, wave: Tensor, mask_noise: Tensor) -> Tensor:
        """``wave`` [B, N] crops, ``mask_noise`` [B, groups] uniform noise (the groups with the
        smallest values stay visible). Returns the MSE over the masked patches."""
        enc, cfg = self.encoder, self.cfg
        db = self.log_mel_db(wave)
        with torch.autocast(wave.device.type, enabled=False):
            spec = enc.front_end.bn(db)  # learns the running statistics the upstream uses at inference
        x = enc.patch_embed(spec)  # [B, L, D]
        b, length, d = x.shape
        if length > cfg.chunk_patches:
            raise DataError(f"crops of {length} patches exceed the positional table ({cfg.chunk_patches}); "
                            "shorten data.crop_seconds")
        x = x + enc.time_pos_embed[0, :, 0, :length].transpose(0, 1)
        x = x + enc.freq_pos_embed[0, :, 0, 0]
        ids_shuffle = self.mask_order(mask_noise, length)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        keep = int(length * (1 - self.objective.mask_ratio))
        visible = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
        for block in enc.blocks:
            visible = block(visible)
        pred = self.decoder(enc.norm(visible), ids_restore)  # [B, L, n_mels * patch_frames]

        with torch.autocast(wave.device.type, enabled=False):
            width = cfg.patch_frames
            target = db[:, :, : length * width].reshape(b, cfg.n_mels, length, width).transpose(1, 2)
            target = target.reshape(b, length, cfg.n_mels * width)  # nn.Unfold's (mel, frame) order
            if self.objective.norm_pix_loss:
                mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1e-6).sqrt()
            mask = torch.ones(b, length, device=wave.device)
            mask[:, :keep] = 0
            mask = torch.gather(mask, 1, ids_restore)
            loss = (pred.float() - target).pow(2).mean(dim=-1)
            return (loss * mask).sum() / mask.sum()


@register("dasheng", "dasheng_mae")
class DashengRecipe(Recipe):
    ModelConfig, ObjectiveConfig, DataConfig = DashengModelConfig, DashengObjective, DashengData

    def __init__(self, config: dict):
        super().__init__(config)
        patches, group = self.num_patches, self.objective.mask_group
        if patches > self.model_cfg.chunk_patches or patches % group or patches < 2 * group:
            raise ConfigError(f"data.crop_seconds {self.data.crop_seconds} gives {patches} patches; it must be a "
                              f"multiple of objective.mask_group ({group}) and at most model.chunk_patches "
                              f"({self.model_cfg.chunk_patches}); the official 10.0 s gives 250")

    def no_weight_decay(self, name: str, param) -> bool:
        """None: the official trainer gives ``model.parameters()`` to one AdamW, so biases, norm
        affines, positional embeddings and the mask token are decayed too (train.py)."""
        return False

    def decay_steps(self, total_steps: int, warmup_steps: int) -> int:
        """The official cosine (ignite's CosineAnnealingScheduler behind a warm-up) spans
        ``epoch_length * epochs`` iterations after the warm-up, longer than the run, so it ends at
        about 0.102 x lr with the shipped warm-up instead of reaching min_lr_ratio x lr."""
        return total_steps

    @property
    def crop_samples(self) -> int:
        return int(round(self.data.crop_seconds * self.data.sample_rate))

    @property
    def num_patches(self) -> int:
        frames = 1 + self.crop_samples // HOP_LENGTH
        return frames // self.model_cfg.patch_frames

    def _shards(self, patterns: list[str], where: str) -> TarShards:
        data = self.data
        paths = []
        for pattern in patterns:
            matched = sorted(glob(str(Path(data.root or ".") / pattern) if data.root else pattern))
            if not matched:
                raise DataError(f"{where} entry {pattern!r} matches no file")
            paths += matched
        return TarShards(paths, data.sample_rate)

    def build_reader(self):
        data = self.data
        if data.shards:
            return self._shards(data.shards, "data.shards")
        return AudioList(data.audio_list, data.root, data.sample_rate)

    def build_valid_reader(self):
        valid = self.data.valid
        if not valid:
            return None
        if isinstance(valid, str):
            return AudioList(valid, self.data.root, self.data.sample_rate)
        return self._shards(list(valid), "data.valid")

    def make_example(self, raw: dict, rng: np.random.Generator) -> dict:
        wave = raw["wave"]
        crop = self.crop_samples
        wave = crop_or_pad(wave, random_crop(len(wave), crop, rng), crop).astype(np.float32)
        groups = self.num_patches // self.objective.mask_group
        return {"wave": torch.from_numpy(wave), "mask_noise": torch.from_numpy(rng.random(groups, dtype=np.float32))}

    def build_model(self) -> DashengMAE:
        return DashengMAE(self.model_cfg, self.objective)

    def compute_loss(self, model, batch):
        return model(batch["wave"], batch["mask_noise"]), {}

    def seconds_per_example(self) -> float:
        return self.data.crop_seconds

    def export(self, model, folder, *, step, epoch, optimizer=None, scaler=None) -> Path:
        """``{'model': encoder state (official names), 'config': {...}}``, what ``Dasheng.from_pretrained``
        and ``dasheng_local`` read."""
        cfg = self.model_cfg
        encoder = cfg.encoder_config()
        stored = {**architecture_config(encoder), "mask_ratio": self.objective.mask_ratio, "epoch": epoch, "step": step}
        path = Path(folder) / f"dasheng_{cfg.embed_dim}d{cfg.depth}l-step{step}.pt"
        return write_pip(path, encoder, model.encoder.state_dict(), stored_config=stored)
