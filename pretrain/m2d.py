"""M2D pre-training recipes: M2D, M2D-S (speech, denoising distillation) and M2D-AS (AudioSet labels).

Facts from nttcslab/m2d (``patch_m2d.diff``: ``M2DViT``, ``M2D_S_ViT``, ``M2D_AS_ViT``, the
trainers and ``speech/speech_dataset.py``):

* online encoder on the visible patches (+ CLS), predictor (MAE decoder predicting 768-d
  features) over visible + mask tokens, EMA target encoder (``target_blocks``/``target_norm``,
  sharing patch and positional embeddings) on the *masked* patches only, in the same shuffled
  order; the loss compares the predictor outputs at the masked positions with the standardised
  target features (``norm_mse``: 2 - 2 cos);
* EMA after every optimiser step, decay linear from 0.99995 to 0.99999 over the run; the target
  starts from its own random initialisation (not a copy);
* M2D-S: ``offline_predictor`` (F'*768 -> 768) on the unshuffled online tokens (encoder outputs
  at visible, predictor outputs at masked positions), ``norm_mse`` against HuBERT layer-9
  features of the clean speech, while both M2D branches see speech mixed with background noise;
  total ``loss_m2d * L_m2d + loss_off * L_off``;
* M2D-AS: the same head (F'*768 -> classes), averaged over time, BCE-with-logits against the
  multi-hot AudioSet labels.

The model keeps the official parameter names, so its state dict *is* the ``model`` entry of an
official full checkpoint, and :meth:`M2DRecipe.export` writes the file and folder name the
official runtime and ``m2d_local`` read.
"""
from __future__ import annotations

import argparse
import datetime
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..upstreams.common.transformer import ViTBlock
from ..upstreams.m2d.config import DEFAULT_STATS, M2DConfig
from ..upstreams.m2d.formats import write_full
from ..upstreams.m2d.model import M2DEncoder, sincos_pos_embed_2d
from .config import ConfigError
from .data import DataError, LogMelList, crop_or_pad, log_mix_exp, random_crop
from .distributed import broadcast_object
from .optim import LinearSchedule, ema_update
from .init import init_vit
from .recipe import Recipe, register

__all__ = ["M2DModelConfig", "M2DObjective", "M2DData", "M2DPretrainModel", "M2DRecipe", "M2DSRecipe",
           "M2DASRecipe", "M2DXRecipe", "norm_mse", "release_folder_name"]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class M2DModelConfig(M2DConfig):
    """The upstream's model configuration (:class:`~..upstreams.m2d.config.M2DConfig`) plus the
    predictor and the starting point."""

    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    #: start from the weights of an official full M2D checkpoint (M2D-X further pre-training);
    #: encoder, predictor and target are loaded, heads that do not fit are left as initialised
    init_checkpoint: str | None = None

    def validate(self) -> None:
        if self.sample_rate != 16000:
            raise ConfigError(f"model.sample_rate must be 16000 for pre-training, got {self.sample_rate}")
        if self.input_size[1] % self.patch_size[1]:
            raise ConfigError(f"model.input_size {self.input_size} must be a whole number of patches "
                              f"{self.patch_size} in time for training")

    def encoder_config(self) -> M2DConfig:
        return M2DConfig(**{f.name: getattr(self, f.name) for f in fields(M2DConfig)})


@dataclass
class M2DObjective:
    mask_ratio: float = 0.7
    #: "norm_mse" (2 - 2 cos of L2-normalised vectors) or "mse"
    loss_fn: str = "norm_mse"
    #: standardise each target vector over its features first (official default: on)
    norm_pix_loss: bool = True
    ema_decay_init: float = 0.99995
    ema_decay: float = 0.99999
    #: weights of the M2D loss and of the offline (HuBERT / label) loss
    loss_m2d: float = 1.0
    loss_off: float = 0.0

    def validate(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"objective.mask_ratio must lie in (0, 1), got {self.mask_ratio}")
        if self.loss_fn not in ("norm_mse", "mse"):
            raise ConfigError(f"objective.loss_fn must be norm_mse or mse, got {self.loss_fn!r}")


@dataclass
class M2DData:
    #: CSV of log-mel .npy files (column file_name; M2D-S also target_file; M2D-AS also label)
    csv_main: str = "data/files_audioset.csv"
    #: folder the paths in the CSVs are relative to (default: the CSV's folder)
    root: str | None = None
    #: [mean, std] of the log-mel; null = computed at start from ``norm_stats_samples`` random
    #: crops (drawn with replacement, as the official trainers; M2D-S: as many of the noise too)
    norm_stats: tuple[float, float] | None = None
    norm_stats_samples: int = 5000
    #: repeat the list up to this many items per epoch (official ``--min_ds_size``)
    min_ds_size: int = 0
    #: background noise (M2D-S, optional for the others): CSV of noise log-mel .npy files
    csv_bg_noise: str | None = None
    noise_root: str | None = None
    noise_ratio: float = 0.0
    #: column of the offline-target .npy (M2D-S) and of the labels (M2D-AS)
    target_column: str = "target_file"
    label_column: str = "label"
    #: M2D-X: the frozen M2D teacher (any official M2D weight file) whose features are the offline target
    teacher: str | None = None
    #: validation list (official ``--csv_val``): a CSV like ``csv_main`` (same columns, same root),
    #: evaluated without noise mixing, as the official validation loop
    valid: str | None = None

    def validate(self) -> None:
        if not 0.0 <= self.noise_ratio <= 1.0:
            raise ConfigError(f"data.noise_ratio must lie in [0, 1], got {self.noise_ratio}")
        if self.noise_ratio > 0 and not self.csv_bg_noise:
            raise ConfigError("data.noise_ratio > 0 needs data.csv_bg_noise (a CSV of noise log-mel .npy files)")


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
def norm_mse(target: Tensor, pred: Tensor, norm_pix_loss: bool = True, loss_fn: str = "norm_mse") -> Tensor:
    """M2D's ``forward_loss`` in float32: optional standardisation of the target vectors, then
    ``2 - 2 cos`` (norm_mse) or the mean squared error, averaged over all vectors."""
    target, pred = target.float(), pred.float()
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    if loss_fn == "mse":
        return (pred - target).pow(2).mean(dim=-1).mean()
    target = F.normalize(target, dim=-1, p=2)
    pred = F.normalize(pred, dim=-1, p=2)
    return (2 - 2 * (target * pred).sum(dim=-1)).mean()


class M2DPretrainModel(M2DEncoder):
    """Online encoder (inherited: ``cls_token``, ``pos_embed``, ``patch_embed``, ``blocks``,
    ``norm``, ``norm_stats``) + predictor (``decoder_*``, ``mask_token``) + EMA target
    (``target_blocks``, ``target_norm``) + optional ``offline_predictor``: the official names."""

    def __init__(self, cfg: M2DModelConfig, objective: M2DObjective, offline_dim: int | None = None,
                 norm_stats: tuple[float, float] = DEFAULT_STATS):
        super().__init__(cfg.encoder_config())
        self.cfg, self.objective = cfg, objective
        d, dd = cfg.embed_dim, cfg.decoder_embed_dim
        n_freq, n_time = self.config.grid_size
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed_2d(dd, (n_freq, n_time)).unsqueeze(0),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList(ViTBlock(dd, cfg.decoder_num_heads, cfg.mlp_ratio, qkv_bias=True, eps=1e-6)
                                            for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(dd, eps=1e-6)
        self.decoder_pred = nn.Linear(dd, d)
        self.target_blocks = nn.ModuleList(ViTBlock(d, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, eps=1e-6)
                                           for _ in range(cfg.depth))
        self.target_norm = nn.LayerNorm(d, eps=1e-6)
        self.offline_predictor = nn.Linear(n_freq * d, offline_dim) if offline_dim else None
        self._initialize()
        for param in [*self.target_blocks.parameters(), *self.target_norm.parameters()]:
            param.requires_grad_(False)
        self.norm_stats.copy_(torch.tensor([float(v) for v in norm_stats]))

    def _initialize(self) -> None:
        # MAE's initialize_weights: patch projection like a Linear, tokens N(0, 0.02), Linear
        # layers Xavier-uniform, LayerNorms (1, 0); the target network gets its own draw.
        proj = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in (self.blocks, self.norm, self.decoder_embed, self.decoder_blocks, self.decoder_norm,
                       self.decoder_pred, self.target_blocks, self.target_norm):
            init_vit(module)
        if self.offline_predictor is not None:
            init_vit(self.offline_predictor)

    @property
    def num_keep(self) -> int:
        return int(self.config.num_patches * (1 - self.objective.mask_ratio))

    def forward(self, lms: Tensor, mask_noise: Tensor, offline_target: Tensor | None = None) -> dict[str, Tensor]:
        """``lms`` [B, 1, 80, U] normalised log-mel, ``mask_noise`` [B, F'*T'] uniform noise whose
        smallest ``num_keep`` entries are the visible patches. Returns the losses."""
        obj = self.objective
        b = lms.shape[0]
        x = self.patch_embed(lms) + self.pos_embed[:, 1:]
        d = x.shape[-1]
        ids_shuffle = torch.argsort(mask_noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        keep = self.num_keep
        visible = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
        masked = torch.gather(x, 1, ids_shuffle[:, keep:, None].expand(-1, -1, d))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)

        h = torch.cat([cls, visible], dim=1)
        for block in self.blocks:
            h = block(h)
        latent = self.norm(h)
        pred = self._predict(latent, ids_restore, ids_shuffle, keep)
        with torch.no_grad():
            t = torch.cat([cls, masked], dim=1)
            for block in self.target_blocks:
                t = block(t)
            target = self.target_norm(t)[:, 1:]
        with torch.autocast(lms.device.type, enabled=False):
            loss_m2d = norm_mse(target, pred, obj.norm_pix_loss, obj.loss_fn)
        out = {"loss_m2d": loss_m2d}
        if self.offline_predictor is not None:
            out["offline_pred"] = self._offline(latent, pred, ids_restore)
        return out

    def _predict(self, latent: Tensor, ids_restore: Tensor, ids_shuffle: Tensor, keep: int) -> Tensor:
        """Predictor outputs at the masked positions, in the shuffled order of the masked set."""
        x = self.decoder_embed(latent)
        b, _, dd = x.shape
        n = ids_restore.shape[1]
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(b, n - keep, -1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore[:, :, None].expand(-1, -1, dd))  # unshuffle
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        y = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        y = torch.gather(y, 1, ids_shuffle[:, :, None].expand(-1, -1, y.shape[-1]))  # re-shuffle
        return y[:, keep:]

    def _offline(self, latent: Tensor, pred: Tensor, ids_restore: Tensor) -> Tensor:
        """``offline_predictor`` over all online tokens (encoder at visible, predictor at masked
        positions), unshuffled and stacked per time step: [B, T', classes or D_off]."""
        z = torch.cat([latent[:, 1:], pred], dim=1)
        d = z.shape[-1]
        z = torch.gather(z, 1, ids_restore[:, :, None].expand(-1, -1, d))
        n_freq, n_time = self.config.grid_size
        z = z.reshape(z.shape[0], n_freq, n_time, d).transpose(1, 2).reshape(z.shape[0], n_time, n_freq * d)
        return self.offline_predictor(z)

    def update_target(self, decay: float) -> None:
        ema_update(self.target_blocks.parameters(), self.blocks.parameters(), decay)
        ema_update(self.target_norm.parameters(), self.norm.parameters(), decay)


def release_folder_name(cfg: M2DModelConfig, date: str) -> str:
    """``m2d_s_vit_base-80x400p80x2-230201``: what the official runtime parses the model from."""
    (f, t), (pf, pt) = cfg.input_size, cfg.patch_size
    return f"{cfg.model_name}-{f}x{t}p{pf}x{pt}-{date}"


# ---------------------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------------------
class _Repeat:
    """The list repeated up to ``size`` items (M2D's ``--min_ds_size``)."""

    def __init__(self, reader, size: int):
        self.reader, self.size = reader, max(size, len(reader))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        return self.reader[index % len(self.reader)]


@register("m2d")
class M2DRecipe(Recipe):
    """M2D on log-mel crops (AudioSet in the paper)."""

    ModelConfig, ObjectiveConfig, DataConfig = M2DModelConfig, M2DObjective, M2DData
    find_unused_parameters = False
    uses_offline_target = False
    uses_labels = False
    uses_teacher = False

    def __init__(self, config: dict):
        super().__init__(config)
        if not (self.uses_offline_target or self.uses_labels or self.uses_teacher) and self.objective.loss_off:
            raise ConfigError(f"objective.loss_off has no effect in recipe {self.name}; use m2ds, m2das or m2dx")
        self._schedule = None

    # -- data ---------------------------------------------------------------------------------
    @property
    def crop_frames(self) -> int:
        return int(self.model_cfg.input_size[1])

    def _main_list(self) -> LogMelList:
        extra = (self.data.target_column,) if self.uses_offline_target else ()
        keep = (self.data.label_column,) if self.uses_labels else ()
        return LogMelList(self.data.csv_main, self.data.root, extra_columns=extra, keep_columns=keep)

    def _noise_list(self) -> LogMelList | None:
        if self.data.noise_ratio <= 0:
            return None
        return LogMelList(self.data.csv_bg_noise, self.data.noise_root)

    @staticmethod
    def _stats_of(reader: LogMelList, crop: int, samples: int, seed: int) -> tuple[float, float]:
        """Mean and unbiased std of ``samples`` random crops of files drawn with replacement (the
        official ``np.random.randint`` draw and ``torch.std``)."""
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(reader), size=samples)
        total = total_sq = count = 0.0
        for index in picks:
            lms = np.asarray(reader[int(index)]["lms"], dtype=np.float64)
            x = crop_or_pad(lms, random_crop(lms.shape[-1], crop, rng), crop)
            total += x.sum()
            total_sq += np.square(x).sum()
            count += x.size
        mean = total / count
        variance = max(total_sq - count * mean * mean, 0.0) / max(count - 1.0, 1.0)
        std = float(np.sqrt(variance)) + float(np.finfo(np.float32).eps)
        return float(mean), std

    def prepare(self, ctx) -> None:
        state = self.state
        if "norm_stats" not in state:
            if self.data.norm_stats is not None:
                stats = tuple(float(v) for v in self.data.norm_stats)
            else:
                stats = None
                if ctx.is_main:
                    stats = self._stats_of(self._main_list(), self.crop_frames, self.data.norm_stats_samples,
                                           self.train.seed)
                    print(f"[pretrain:{self.name}] log-mel statistics of {self.data.norm_stats_samples} random "
                          f"crops of the {len(self._main_list())} files (drawn with replacement): mean "
                          f"{stats[0]:.4f} std {stats[1]:.4f}", flush=True)
                stats = broadcast_object(stats, ctx)
            state["norm_stats"] = list(stats)
        if self.data.noise_ratio > 0 and "noise_norm_stats" not in state:
            stats = self._stats_of(self._noise_list(), self.crop_frames, self.data.norm_stats_samples,
                                   self.train.seed + 1) if ctx.is_main else None
            state["noise_norm_stats"] = list(broadcast_object(stats, ctx))
        if self.uses_labels and "classes" not in state:
            classes = None
            if ctx.is_main:
                classes = sorted({c for row in self._main_list().rows for c in str(row[self.data.label_column]).split(",")
                                  if c})
            state["classes"] = broadcast_object(classes, ctx)
        if "run_date" not in state:
            state["run_date"] = broadcast_object(datetime.date.today().strftime("%y%m%d"), ctx)

    def build_reader(self):
        reader = self._main_list()
        self._noise = self._noise_list()
        self._class_index = {c: i for i, c in enumerate(self.state.get("classes", []))}
        return _Repeat(reader, self.data.min_ds_size) if self.data.min_ds_size else reader

    def build_valid_reader(self):
        if not self.data.valid:
            return None
        extra = (self.data.target_column,) if self.uses_offline_target else ()
        keep = (self.data.label_column,) if self.uses_labels else ()
        return LogMelList(self.data.valid, self.data.root, extra_columns=extra, keep_columns=keep)

    def make_valid_example(self, raw: dict, rng: np.random.Generator) -> dict:
        return self.make_example(raw, rng, mix_noise=False)

    def _crop_lms(self, lms: np.ndarray, rng: np.random.Generator, usable: int | None = None) -> tuple[np.ndarray, int]:
        crop = self.crop_frames
        length = lms.shape[-1] if usable is None else min(usable, lms.shape[-1])
        start = random_crop(length, crop, rng)
        return crop_or_pad(lms[..., :length], start, crop).astype(np.float32), start

    def _normalise(self, lms: np.ndarray, rng: np.random.Generator, mix_noise: bool = True) -> torch.Tensor:
        """Standardise a raw log-mel crop; with noise: mix in the linear power domain first."""
        mean, std = self.state["norm_stats"]
        x = torch.from_numpy(lms) - mean
        if mix_noise and self._noise is not None and self.data.noise_ratio > 0:
            noise = np.asarray(self._noise[int(rng.integers(len(self._noise)))]["lms"], dtype=np.float32)
            start = random_crop(noise.shape[-1], self.crop_frames, rng)
            noise = torch.from_numpy(crop_or_pad(noise, start, self.crop_frames, repeat=True).astype(np.float32))
            noise = noise - self.state["noise_norm_stats"][0]
            x = log_mix_exp(noise, x, self.data.noise_ratio) if self.data.noise_ratio < 1 else noise
        return (x / std).unsqueeze(0)  # [1, 80, U]

    def _mask_noise(self, rng: np.random.Generator) -> torch.Tensor:
        n_freq, n_time = (a // b for a, b in zip(self.model_cfg.input_size, self.model_cfg.patch_size))
        return torch.from_numpy(rng.random(n_freq * n_time, dtype=np.float32))

    def make_example(self, raw: dict, rng: np.random.Generator, mix_noise: bool = True) -> dict:
        lms = np.asarray(raw["lms"])
        if lms.ndim != 2 or lms.shape[0] != self.model_cfg.input_size[0]:
            raise DataError(f"log-mel items must be [{self.model_cfg.input_size[0]}, T] (or [1, ., T]), got {lms.shape}")
        crop, _ = self._crop_lms(lms, rng)
        return {"lms": self._normalise(crop, rng, mix_noise), "mask_noise": self._mask_noise(rng)}

    # -- model / loss -------------------------------------------------------------------------
    def offline_dim(self) -> int | None:
        return None

    def build_model(self) -> M2DPretrainModel:
        model = M2DPretrainModel(self.model_cfg, self.objective, self.offline_dim(),
                                 norm_stats=tuple(self.state.get("norm_stats", DEFAULT_STATS)))
        if self.model_cfg.init_checkpoint:
            self._load_initial_weights(model, self.model_cfg.init_checkpoint)
        return model

    @staticmethod
    def _load_initial_weights(model: M2DPretrainModel, path: str) -> None:
        from ..upstreams.common.checkpoint import CheckpointError, load_checkpoint
        from ..upstreams.m2d.formats import find_weight_file

        file = find_weight_file(Path(path))
        obj = load_checkpoint(file, family="M2D")
        state = obj.get("model", obj) if isinstance(obj, dict) else None
        if not isinstance(state, dict):
            raise CheckpointError(f"{file}: not an M2D checkpoint (model.init_checkpoint)")
        own = model.state_dict()
        usable = {k: v for k, v in state.items() if k in own and k != "norm_stats" and v.shape == own[k].shape}
        missing = sorted(k for k in own if k not in usable and not k.startswith("offline_predictor") and k != "norm_stats")
        if missing:
            raise CheckpointError(f"{file} does not fit model.* of this config (missing or differently shaped: "
                                  f"{', '.join(missing[:5])}); model.init_checkpoint needs a full M2D checkpoint "
                                  "of the same size")
        model.load_state_dict(usable, strict=False)

    def compute_loss(self, model, batch):
        out = model(batch["lms"], batch["mask_noise"])
        return out["loss_m2d"], {}

    def after_step(self, model, step, total_steps):
        if self._schedule is None or self._schedule.total != max(2, total_steps):
            self._schedule = LinearSchedule(self.objective.ema_decay_init, self.objective.ema_decay, total_steps)
        decay = self._schedule(step - 1)  # the official step index starts at 0
        model.update_target(decay)
        return {"ema_decay": decay}

    def seconds_per_example(self) -> float:
        return self.crop_frames / 100.0

    # -- export -------------------------------------------------------------------------------
    def export(self, model, folder, *, step, epoch, optimizer=None, scaler=None) -> Path:
        """``<folder>/<model>-<F>x<T>p<pf>x<pt>-<YYMMDD>/checkpoint-<epoch>.pth`` holding
        ``{'model', 'optimizer', 'epoch', 'scaler', 'args'}`` as the official trainer writes it."""
        cfg, obj, train = self.model_cfg, self.objective, self.train
        run = Path(folder) / release_folder_name(cfg, self.state.get("run_date", datetime.date.today().strftime("%y%m%d")))
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        args = argparse.Namespace(
            model=cfg.model_name, input_size=list(cfg.input_size), patch_size=list(cfg.patch_size), sr="16k",
            decoder_depth=cfg.decoder_depth, mask_ratio=obj.mask_ratio, loss_fn=obj.loss_fn,
            norm_pix_loss=obj.norm_pix_loss, ema_decay_init=obj.ema_decay_init, ema_decay=obj.ema_decay,
            loss_m2d=obj.loss_m2d, loss_off=obj.loss_off, noise_ratio=self.data.noise_ratio,
            csv_main=self.data.csv_main, csv_bg_noise=self.data.csv_bg_noise or "", norm_stats=self.state.get("norm_stats"),
            batch_size=train.batch_size, accum_iter=train.accum_steps, epochs=train.epochs, blr=train.blr, lr=train.lr,
            weight_decay=train.weight_decay, clip_grad=train.clip_grad, seed=train.seed, epoch=epoch, step=step,
        )
        path = run / f"checkpoint-{epoch}.pth"
        return write_full(path, cfg.encoder_config(), state, args=args, optimizer=optimizer, epoch=epoch, scaler=scaler)


@register("m2ds", "m2d_s")
class M2DSRecipe(M2DRecipe):
    """M2D-S: M2D on (noisy) LibriSpeech log-mel + offline HuBERT layer-9 targets of the clean speech."""

    uses_offline_target = True
    find_unused_parameters = False

    def __init__(self, config: dict):
        super().__init__(config)
        pf, pt = self.model_cfg.patch_size
        if pf != self.model_cfg.input_size[0] or pt % 2 or self.crop_frames % 2:
            raise ConfigError("M2D-S needs patches spanning all mel bins with an even width (e.g. 80x2) and an even "
                              f"input length: one token = whole 20 ms HuBERT frames (got patch {pf}x{pt})")

    def offline_dim(self) -> int | None:
        return int(self.state.get("offline_dim", 768))

    def prepare(self, ctx) -> None:
        super().prepare(ctx)
        if "offline_dim" not in self.state:
            dim = None
            if ctx.is_main:
                first = self._main_list()[0][self.data.target_column]
                dim = int(np.asarray(first).shape[-1])
            self.state["offline_dim"] = broadcast_object(dim, ctx)

    def make_example(self, raw: dict, rng: np.random.Generator, mix_noise: bool = True) -> dict:
        lms = np.asarray(raw["lms"])
        feats = np.asarray(raw[self.data.target_column])
        if feats.ndim == 3:
            feats = feats[0]
        # 100 Hz frames vs 50 Hz teacher frames: crop both at aligned positions inside the part
        # covered by teacher frames (the official dataset trims the log-mel the same way).
        crop = self.crop_frames
        usable = max(crop, 2 * feats.shape[0])
        lms_crop, start = self._crop_lms(lms, rng, usable=usable)
        half = crop // 2
        target = crop_or_pad(feats, start // 2, half, axis=0).astype(np.float32)
        per_patch = self.model_cfg.patch_size[1] // 2
        if per_patch > 1:  # average the teacher frames inside one patch (80x4 patches)
            target = target.reshape(-1, per_patch, target.shape[-1]).mean(axis=1)
        return {"lms": self._normalise(lms_crop, rng, mix_noise), "mask_noise": self._mask_noise(rng),
                "offline_target": torch.from_numpy(target)}

    def compute_loss(self, model, batch):
        out = model(batch["lms"], batch["mask_noise"])
        obj = self.objective
        with torch.autocast(batch["lms"].device.type, enabled=False):
            loss_off = norm_mse(batch["offline_target"], out["offline_pred"], obj.norm_pix_loss, obj.loss_fn)
        loss = obj.loss_m2d * out["loss_m2d"] + obj.loss_off * loss_off
        return loss, {"loss_m2d": out["loss_m2d"].detach(), "loss_off": loss_off.detach()}


@register("m2das", "m2d_as")
class M2DASRecipe(M2DRecipe):
    """M2D-AS: M2D + AudioSet multi-label loss from a weighted list (``file_name,label,weight``)."""

    uses_labels = True

    def offline_dim(self) -> int | None:
        return len(self.state["classes"])

    def make_example(self, raw: dict, rng: np.random.Generator, mix_noise: bool = True) -> dict:
        example = super().make_example(raw, rng, mix_noise)
        labels = torch.zeros(len(self._class_index))
        for name in str(raw[self.data.label_column]).split(","):
            if name:
                if name not in self._class_index:
                    raise DataError(f"label {name!r} is not among the {len(self._class_index)} classes of this run")
                labels[self._class_index[name]] = 1.0
        example["labels"] = labels
        return example

    def compute_loss(self, model, batch):
        out = model(batch["lms"], batch["mask_noise"])
        obj = self.objective
        with torch.autocast(batch["lms"].device.type, enabled=False):
            logits = out["offline_pred"].float().mean(dim=1)
            loss_off = F.binary_cross_entropy_with_logits(logits, batch["labels"].float())
        loss = obj.loss_m2d * out["loss_m2d"] + obj.loss_off * loss_off
        return loss, {"loss_m2d": out["loss_m2d"].detach(), "loss_off": loss_off.detach()}


@register("m2dx", "m2d_x")
class M2DXRecipe(M2DRecipe):
    """M2D-X further pre-training: M2D + the features of a frozen M2D teacher as offline target
    (``train_audio.py --teacher``). As in the official loop, the online M2D branches see the clean
    crop and the teacher the noise-mixed one (the same crop when data.noise_ratio is 0)."""

    uses_teacher = True

    def __init__(self, config: dict):
        super().__init__(config)
        if not self.data.teacher:
            raise ConfigError("M2D-X needs data.teacher: an official M2D weight file whose features are the target")
        self._teacher = None

    def _load_teacher(self):
        from ..upstreams.m2d.config import resolve_config
        from ..upstreams.m2d.formats import read_checkpoint
        from ..upstreams.m2d.model import M2DModel

        loaded = read_checkpoint(self.data.teacher)
        config = resolve_config(loaded)
        teacher = M2DModel(config)
        state = dict(loaded.encoder_state)
        state["norm_stats"] = teacher.encoder.norm_stats
        teacher.encoder.load_state_dict(state)
        for param in teacher.parameters():
            param.requires_grad_(False)
        return teacher.eval()

    def prepare(self, ctx) -> None:
        super().prepare(ctx)
        if "offline_dim" not in self.state:
            self.state["offline_dim"] = self._load_teacher().config.feature_dim

    def offline_dim(self) -> int | None:
        return int(self.state["offline_dim"])

    def make_example(self, raw: dict, rng: np.random.Generator, mix_noise: bool = True) -> dict:
        lms = np.asarray(raw["lms"])
        crop, _ = self._crop_lms(lms, rng)
        mean, std = self.state["norm_stats"]
        clean = ((torch.from_numpy(crop) - mean) / std).unsqueeze(0)
        mixed = self._normalise(crop, rng, mix_noise)  # noise-mixed when data.noise_ratio > 0, else the same crop
        return {"lms": clean, "lms_teacher": mixed, "mask_noise": self._mask_noise(rng)}

    def compute_loss(self, model, batch):
        device = batch["lms"].device
        if self._teacher is None or next(self._teacher.parameters()).device != device:
            self._teacher = self._load_teacher().to(device)
        x = batch["lms_teacher"][:, 0]
        with torch.no_grad():
            frames = torch.full((x.shape[0],), x.shape[-1], device=device)
            layers, steps = self._teacher.encode_lms(x, frames)
            target = layers[-1][:, : int(steps[0])]
        out = model(batch["lms"], batch["mask_noise"])
        obj = self.objective
        pred = out["offline_pred"]
        if target.shape[1] != pred.shape[1]:
            raise DataError(f"teacher frames {target.shape[1]} != student frames {pred.shape[1]}: the teacher and "
                            "the student need the same patch width and a crop of whole teacher patches")
        with torch.autocast(device.type, enabled=False):
            loss_off = norm_mse(target, pred, obj.norm_pix_loss, obj.loss_fn)
        loss = obj.loss_m2d * out["loss_m2d"] + obj.loss_off * loss_off
        return loss, {"loss_m2d": out["loss_m2d"].detach(), "loss_off": loss_off.detach()}
