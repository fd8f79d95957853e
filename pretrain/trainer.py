"""The training loop shared by every recipe.

One optimiser step = ``accum_steps`` micro-batches per process (gradients synchronised on the
last one), unscale, clip, step, schedule, then the recipe's ``after_step`` (EMA targets). The
recipe supplies model, loss and data; everything else lives here.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .checkpointing import (FORMAT, checkpoint_path, latest_checkpoint, load_training_checkpoint, prune_checkpoints,
                            rng_state, save_atomic, set_rng_state)
from .config import ConfigError, RunPaths
from .data import GlobalBatchSampler, RecipeDataset
from .distributed import DistContext, all_reduce_mean, gather_objects, setup_distributed
from .optim import WarmupCosine, build_optimizer
from .recipe import Recipe
from .validation import BestCheckpoints, SaveCommand, ValidationSampler, write_to_console

__all__ = ["Trainer", "Schedule", "plan_schedule", "seed_everything", "make_loader"]

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Schedule:
    """Step counts of a run, derived from the train config and the data size."""

    def __init__(self, total_steps: int, warmup_steps: int, steps_per_epoch: int, effective_batch: int, lr: float):
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.steps_per_epoch, self.effective_batch, self.lr = steps_per_epoch, effective_batch, lr


def plan_schedule(recipe: Recipe, num_items: int, world_size: int) -> Schedule:
    cfg = recipe.train
    effective = cfg.batch_size * cfg.accum_steps * world_size
    steps_per_epoch = cfg.steps_per_epoch or max(1, num_items // effective)
    total = cfg.total_steps if cfg.total_steps is not None else int(round(cfg.epochs * steps_per_epoch))
    if total < 1:
        raise ConfigError(f"the run would have {total} optimiser steps; raise train.epochs / train.total_steps")
    if cfg.warmup_steps is not None:
        warmup = cfg.warmup_steps
    elif cfg.warmup_epochs is not None:
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    else:
        warmup = 0
    lr = cfg.lr if cfg.lr is not None else cfg.blr * effective / 256
    return Schedule(total, min(warmup, total), steps_per_epoch, effective, lr)


def make_loader(dataset: RecipeDataset, sampler, num_workers: int, pin_memory: bool, collate=None,
                persistent: bool = True) -> DataLoader:
    # Own generator: creating an iterator must not consume the global RNG (exact resume).
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory, collate_fn=collate,
                      persistent_workers=persistent and num_workers > 0, generator=torch.Generator(),
                      multiprocessing_context="fork" if num_workers > 0 and sys.platform == "linux" else None)


class _Throughput:
    def __init__(self):
        self.start, self.samples = time.perf_counter(), 0

    def add(self, samples: int) -> None:
        self.samples += samples

    def rate(self) -> float:
        return self.samples / max(1e-9, time.perf_counter() - self.start)


@dataclass
class _Run:
    """What one ``fit`` carries from step to step."""

    module: nn.Module
    model: nn.Module  # the module, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine
    scaler: torch.amp.GradScaler
    sampler: GlobalBatchSampler
    schedule: Schedule
    autocast_dtype: torch.dtype | None
    step: int = 0
    stop: int = 0
    position: dict = field(default_factory=dict)
    valid_loader: DataLoader | None = None
    valid_every: int = 0
    loader: DataLoader | None = None
    batches: Any = None
    writer: Any = None
    bar: Any = None
    throughput: "_Throughput" = field(default_factory=lambda: _Throughput())
    pending: list = field(default_factory=list)
    last_logs: dict = field(default_factory=dict)
    finite: bool = True


class Trainer:
    """``Trainer(recipe, output_dir).fit()``; started by ``python -m s3prl_plugins.pretrain`` or
    ``torchrun ... -m s3prl_plugins.pretrain``."""

    def __init__(self, recipe: Recipe, output_dir: str | Path, *, resume: str | None = "auto",
                 stop_at: int | None = None, progress: bool = True, ctx: DistContext | None = None):
        self.recipe = recipe
        self.cfg = recipe.train
        self.paths = RunPaths(output_dir)
        self.resume = resume
        self.stop_at = stop_at
        self.progress = progress
        self.ctx = ctx or setup_distributed(self.cfg.device)
        #: every logged record of this process (loss curves for tests and notebooks)
        self.history: list[dict] = []
        #: steps whose update was skipped (non-finite gradient norm): in this run, and in a row
        self.skipped_steps = 0
        self.consecutive_skips = 0
        #: every validation of this process: {"step": N, <metric>: value, ...}
        self.valid_history: list[dict] = []
        self.best: BestCheckpoints | None = None
        self.on_save: SaveCommand | None = None

    # -- setup --------------------------------------------------------------------------------
    def _log(self, message: str) -> None:
        if self.ctx.is_main:
            write_to_console(f"[pretrain:{self.recipe.name}] {message}")

    def _resume_state(self) -> dict | None:
        if self.resume in (None, "", "none", "never"):
            return None
        if self.resume == "auto":
            found = latest_checkpoint(self.paths.checkpoints)
            state = load_training_checkpoint(found) if found else None
        else:
            state = load_training_checkpoint(Path(self.resume))
        if state is not None and "optimizer" not in state:
            from ..upstreams.common.checkpoint import CheckpointError

            raise CheckpointError(f"{state['path']} holds model weights only (a best validated state); resume "
                                  f"from a file in {self.paths.checkpoints} or the run folder")
        return state

    def _validation(self, schedule: Schedule):
        """(loader, every how many steps) of ``data.valid``, or (None, 0) without a validation list."""
        cfg, recipe, ctx = self.cfg, self.recipe, self.ctx
        reader = recipe.build_valid_reader()
        if reader is None:
            if cfg.keep_best or cfg.valid_every or cfg.valid_every_epochs:
                raise ConfigError("train.keep_best / train.valid_every need a validation list: set data.valid "
                                  "(see pretrain/README.md, 'Validation and the best checkpoints')")
            return None, 0
        dataset = RecipeDataset(reader, recipe.make_valid_example)
        sampler = ValidationSampler(len(dataset), cfg.valid_batch_size or cfg.batch_size, rank=ctx.rank,
                                    world_size=ctx.world_size, seed=cfg.seed, lengths=recipe.item_lengths(reader))
        loader = make_loader(dataset, sampler, cfg.num_workers, ctx.device.type == "cuda", recipe.collate,
                             persistent=False)
        if cfg.valid_every:
            every = cfg.valid_every
        else:
            every = max(1, int(round((cfg.valid_every_epochs or 1.0) * schedule.steps_per_epoch)))
        self._log(f"validation on {len(dataset)} items every {every} steps"
                  + (f"; the {cfg.keep_best} best by {cfg.best_metric} ({cfg.best_mode}) kept in {self.paths.best}"
                     if cfg.keep_best else ""))
        return loader, every

    def _precision(self):
        """(autocast dtype or None, use a gradient scaler). bf16 also autocasts on CPUs; fp16 needs
        a GPU (its gradient scaler is CUDA-only) and falls back to fp32 elsewhere."""
        device, precision = self.ctx.device, self.cfg.precision
        if precision == "fp32":
            return None, False
        if precision == "bf16":
            return torch.bfloat16, False
        if device.type != "cuda":
            self._log(f"precision fp16 needs a GPU; training in fp32 on {device}")
            return None, False
        return torch.float16, True

    def fit(self) -> dict:
        """Train to ``train.total_steps`` (or ``stop_at``), resuming where the run folder left off."""
        run = self._start()
        cfg, ctx = self.cfg, self.ctx
        while run.step < run.stop:
            grad_norm = self._optimizer_step(run)
            self._after_step(run, grad_norm)
        if run.bar is not None:
            run.bar.close()
        if run.step == run.schedule.total_steps and cfg.export_best != "none" and ctx.is_main:
            self._export_best()
        if self.on_save is not None:
            self._report_on_save(run.writer, wait=True)
        if run.writer is not None:
            run.writer.close()
        ctx.barrier()
        return {"step": run.step, "logs": run.last_logs, "output_dir": str(self.paths.root)}

    # -- the loop's parts ------------------------------------------------------------------------
    def _start(self) -> "_Run":
        """Data, model, optimiser, schedule, precision, validation and the resumed state, in the
        order that keeps every random draw of an uninterrupted run."""
        ctx, cfg, recipe = self.ctx, self.cfg, self.recipe
        state = self._resume_state()
        if state is not None:
            # Statistics computed by the first run (e.g. log-mel mean/std) are reused as they were.
            recipe.state.update(state["config"].get("recipe_state", {}))
        seed_everything(cfg.seed + ctx.rank)
        recipe.prepare(ctx)
        reader = recipe.build_reader()
        dataset = RecipeDataset(reader, recipe.make_example)
        sampler = GlobalBatchSampler(len(dataset), cfg.batch_size, rank=ctx.rank, world_size=ctx.world_size,
                                     seed=cfg.seed, lengths=recipe.item_lengths(reader))
        schedule = plan_schedule(recipe, len(dataset), ctx.world_size)
        module = recipe.build_model().to(ctx.device)
        optimizer = build_optimizer(module, cfg, schedule.lr, recipe.no_weight_decay)
        scheduler = WarmupCosine(optimizer, schedule.lr, schedule.warmup_steps, schedule.total_steps, cfg.min_lr_ratio,
                                 cfg.schedule, recipe.decay_steps(schedule.total_steps, schedule.warmup_steps))
        autocast_dtype, use_scaler = self._precision()
        run = _Run(module=module, model=module, optimizer=optimizer, scheduler=scheduler,
                   scaler=torch.amp.GradScaler("cuda", enabled=use_scaler), sampler=sampler, schedule=schedule,
                   autocast_dtype=autocast_dtype)
        run.valid_loader, run.valid_every = self._validation(schedule)
        if cfg.keep_best and ctx.is_main:
            self.best = BestCheckpoints(self.paths.best, cfg.keep_best, cfg.best_metric, cfg.best_mode)
            for warning in self.best.load_state_dict(state.get("best") if state is not None else None):
                self._log(warning)
        if cfg.on_save and ctx.is_main:
            self.on_save = SaveCommand(cfg.on_save, self.paths.on_save, self._log)
        if state is not None:
            self._restore(run, state)
        # (epoch, micro-batches consumed in it): what was trained on, whatever the loader prefetched
        run.position = {"epoch": sampler.epoch, "start": sampler.start}
        if ctx.enabled:
            run.model = nn.parallel.DistributedDataParallel(
                module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=recipe.find_unused_parameters)
        if cfg.compile:
            run.model = torch.compile(run.model)
        self._log(f"{ctx.world_size} process(es) x batch {cfg.batch_size} x accumulation {cfg.accum_steps} = "
                  f"effective batch {schedule.effective_batch}; {schedule.total_steps} steps "
                  f"({schedule.steps_per_epoch} per epoch), warm-up {schedule.warmup_steps}, peak lr {schedule.lr:.3g}, "
                  f"device {ctx.device}, precision {cfg.precision if autocast_dtype else 'fp32'}")
        n_params = sum(p.numel() for p in module.parameters() if p.requires_grad)
        self._log(f"{n_params / 1e6:.2f} M trainable parameters; {len(dataset)} training items")
        run.writer = self._tensorboard()
        run.loader = make_loader(dataset, sampler, cfg.num_workers, ctx.device.type == "cuda", recipe.collate)
        run.batches = iter(run.loader)
        run.bar = self._progress_bar(schedule.total_steps, run.step)
        module.train()
        run.stop = min(schedule.total_steps, self.stop_at) if self.stop_at else schedule.total_steps
        return run

    def _restore(self, run: "_Run", state: dict) -> None:
        ctx = self.ctx
        run.module.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        run.step = int(state["step"])
        self.skipped_steps, self.consecutive_skips = state.get("skipped_steps", (0, 0))
        run.sampler.set_position(state["sampler"]["epoch"], state["sampler"]["start"])
        rngs = state.get("rng") or []
        if len(rngs) == ctx.world_size:
            set_rng_state(rngs[ctx.rank])
        else:
            self._log(f"checkpoint was written by {len(rngs)} process(es), this run has {ctx.world_size}: "
                      "data order and crops resume exactly, process RNG states are re-seeded")
        self._log(f"resumed from {state['path']} at step {run.step}")

    def _next_batch(self, run: "_Run") -> dict:
        try:
            batch = next(run.batches)
        except StopIteration:
            run.sampler.set_position(run.sampler.epoch + 1, 0)
            run.batches = iter(run.loader)
            batch = next(run.batches)
        return {k: v.to(self.ctx.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _optimizer_step(self, run: "_Run") -> Tensor:
        """``accum_steps`` micro-batches (gradients synchronised on the last one), then the update
        unless the gradient norm is not finite; returns the norm."""
        ctx, cfg, recipe = self.ctx, self.cfg, self.recipe
        for micro in range(cfg.accum_steps):
            batch = self._next_batch(run)
            last = micro == cfg.accum_steps - 1
            skip_sync = ctx.enabled and not last and hasattr(run.model, "no_sync")
            with run.model.no_sync() if skip_sync else contextlib.nullcontext():
                with torch.autocast(ctx.device.type, dtype=run.autocast_dtype or torch.float32,
                                    enabled=run.autocast_dtype is not None):
                    loss, logs = recipe.compute_loss(run.model, batch)
                run.scaler.scale(loss / cfg.accum_steps).backward()
            run.pending.append({"loss": loss.detach(), **logs})
            run.throughput.add(cfg.batch_size * ctx.world_size)
        run.scaler.unscale_(run.optimizer)
        # every step: the norm (clipped to clip_grad, or just measured) and one host sync for
        # its finiteness; DDP's gradients are all-reduced, so every rank decides alike
        grad_norm = torch.nn.utils.clip_grad_norm_(
            run.module.parameters(), cfg.clip_grad if cfg.clip_grad is not None else float("inf"))
        run.finite = bool(torch.isfinite(grad_norm))
        if run.finite or run.scaler.is_enabled():
            run.scaler.step(run.optimizer)  # fp16: the scaler skips a non-finite step itself and lowers its scale
        run.scaler.update()
        run.optimizer.zero_grad(set_to_none=True)
        run.scheduler.step()
        run.step += 1
        run.position = self._advance(run.position, run.sampler.batches_per_epoch(), cfg.accum_steps)
        return grad_norm

    def _after_step(self, run: "_Run", grad_norm: Tensor) -> None:
        """EMA (or the skip bookkeeping), logs, validation, checkpoint, export, the on_save command."""
        cfg, step = self.cfg, run.step
        if run.finite:
            self.consecutive_skips = 0
            extra = self.recipe.after_step(run.module, step, run.schedule.total_steps)
        else:
            run.pending = run.pending[: len(run.pending) - cfg.accum_steps]  # its losses are not averaged in
            extra = self._skip(step, grad_norm, run.module, run.optimizer, run.scheduler, run.scaler, run.position,
                               run.schedule, run.writer)
        if (step % cfg.log_every == 0 or step == run.stop) and run.pending:
            run.last_logs = self._log_step(run.pending, step, run.scheduler, grad_norm, extra, run.throughput,
                                           run.writer, run.bar)
            run.pending = []
            if self.on_save is not None:
                self._report_on_save(run.writer)
        if run.bar is not None:
            run.bar.update(1)
        if run.valid_loader is not None and (step % run.valid_every == 0 or step == run.schedule.total_steps):
            self._validate(run.module, run.valid_loader, step, run.writer, run.autocast_dtype, run.position)
        if step % cfg.save_every == 0 or step == run.stop:
            checkpoint = self._save(run.module, run.optimizer, run.scheduler, run.scaler, run.position, step,
                                    run.schedule)
            export = None
            if cfg.export_every_save or step == run.schedule.total_steps or cfg.on_save:
                export = self._export(run.module, run.optimizer, run.scaler, step, run.schedule)
            if self.on_save is not None:
                self.on_save.start(step, checkpoint, export, self.paths.root)

    def _export_best(self) -> None:
        from .export import export_best

        average = self.cfg.export_best == "average"
        path = export_best(self.best.paths(), self.paths.exports, average=average, recipe=self.recipe)
        what = f"the average of the best {len(self.best.entries)} validated states" if average \
            else "the best validated state"
        self._log(f"exported {what} in the official layout: {path}")

    # -- pieces -------------------------------------------------------------------------------
    def _validate(self, module: nn.Module, loader: DataLoader, step: int, writer, autocast_dtype, position) -> dict:
        """The recipe's validation loss over the whole list in eval mode, averaged over items on
        every process; logged, and offered to the best-K bookkeeping. Leaves every RNG stream as
        it was, so validating never changes the training that follows."""
        ctx, recipe = self.ctx, self.recipe
        saved_rng = rng_state()
        was_training = module.training
        module.eval()
        sums: dict[str, torch.Tensor] = {}
        items = torch.zeros((), dtype=torch.float64, device=ctx.device)
        with torch.no_grad():
            for batch in loader:
                size = next(v for v in batch.values() if torch.is_tensor(v)).shape[0]
                batch = {k: v.to(ctx.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                with torch.autocast(ctx.device.type, dtype=autocast_dtype or torch.float32,
                                    enabled=autocast_dtype is not None):
                    loss, logs = recipe.compute_valid_loss(module, batch)
                for key, value in {"loss": loss, **logs}.items():
                    sums[key] = sums.get(key, 0.0) + value.detach().to(torch.float64) * size
                items += size
        module.train(was_training)
        set_rng_state(saved_rng)
        keys = list(sums)
        totals = torch.stack([sums[k] for k in keys] + [items])
        if ctx.enabled:
            import torch.distributed as dist

            dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        values = {k: float(totals[i] / totals[-1]) for i, k in enumerate(keys)}  # one host sync per validation
        self.valid_history.append({"step": step, **values})
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(f"valid/{key}", value, step)
        line = " ".join(f"{k}={v:.5g}" for k, v in values.items())
        if self.best is not None:
            metric = self.cfg.best_metric
            if metric not in values:
                raise ConfigError(f"train.best_metric {metric!r} is not among this recipe's validation values "
                                  f"({', '.join(values)})")
            kept = self.best.offer(step, values[metric], self._best_payload(module, step, metric, values[metric],
                                                                            position))
            ranked = self.best.ranked()
            line += (f"; {'kept among' if kept else 'not among'} the {self.cfg.keep_best} best by {metric} "
                     f"(best {ranked[0].value:.5g} at step {ranked[0].step})" if ranked else "")
        self._log(f"step {step} validation: {line}")
        return values

    def _best_payload(self, module: nn.Module, step: int, metric: str, value: float, position: dict) -> dict:
        """A best validated state: the model weights and what ``export`` needs (no optimiser)."""
        return {"format": FORMAT, "kind": "best", "recipe": self.recipe.name, "config": self.recipe.full_config(),
                "step": step, "sampler": dict(position), "metric": metric, "mode": self.cfg.best_mode,
                "value": value, "model": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}}

    def _report_on_save(self, writer, wait: bool = False) -> None:
        for step, code, log_path in self.on_save.poll(wait=wait):
            if writer is not None:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
                writer.add_text("on_save", f"exit code {code}\n\n    " + tail.replace("\n", "\n    "), step)

    def _skip(self, step, grad_norm, module, optimizer, scheduler, scaler, position, schedule, writer) -> dict:
        """A step without an update (its gradient norm is not finite): counted, logged, and after
        ``train.max_skipped_steps`` in a row the state is saved and the run stops."""
        self.skipped_steps += 1
        self.consecutive_skips += 1
        self._log(f"step {step}: gradient norm {float(grad_norm)}: update skipped ({self.consecutive_skips} in a "
                  f"row, {self.skipped_steps} in this run)")
        if writer is not None:
            writer.add_scalar("train/skipped_steps", self.skipped_steps, step)
        if self.consecutive_skips >= self.cfg.max_skipped_steps:
            self._save(module, optimizer, scheduler, scaler, position, step, schedule)
            raise FloatingPointError(
                f"{self.consecutive_skips} consecutive steps up to step {step} had a non-finite gradient norm, so "
                f"training stopped; the state is saved in {self.paths.checkpoints}. Lower train.lr, set "
                "train.clip_grad, use train.precision fp32, or check the data; resume with the same command "
                "(train.max_skipped_steps sets how many skips in a row are tolerated)")
        return {}

    @staticmethod
    def _advance(position: dict, per_epoch: int, micro_batches: int) -> dict:
        """The data position after ``micro_batches`` more micro-batches."""
        epoch, start = position["epoch"], position["start"] + micro_batches
        while start >= per_epoch:
            start -= per_epoch
            epoch += 1
        return {"epoch": epoch, "start": start}

    def _tensorboard(self):
        if not self.ctx.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                self._log("no tensorboard/tensorboardX installed: TensorBoard logging is off")
                return None
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        return SummaryWriter(str(self.paths.logs))

    def _progress_bar(self, total: int, initial: int):
        if not (self.ctx.is_main and self.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=self.recipe.name, dynamic_ncols=True, file=sys.stdout)

    def _log_step(self, pending, step, scheduler, grad_norm, extra, throughput, writer, bar) -> dict:
        keys = pending[0].keys()
        means = {k: torch.stack([p[k].float() for p in pending]).mean() for k in keys}
        values = {k: float(all_reduce_mean(v, self.ctx)) for k, v in means.items()}  # one sync per log step
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(f"loss is {values['loss']} at step {step}; lower train.lr or check the data")
        values["lr"] = scheduler.get_last_lr()
        if grad_norm is not None:
            values["grad_norm"] = float(grad_norm)
        values.update(extra)
        if self.skipped_steps:
            values["skipped_steps"] = float(self.skipped_steps)
        self.history.append({"step": step, **values})
        rate = throughput.rate()
        values["samples_per_s"] = rate
        seconds = self.recipe.seconds_per_example()
        if seconds:
            values["audio_s_per_s"] = rate * seconds
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(f"train/{key}", value, step)
        if bar is not None:
            shown = {"loss": f"{values['loss']:.4f}", "lr": f"{values['lr']:.2e}", "samples/s": f"{rate:.1f}"}
            if seconds:
                shown["audio s/s"] = f"{rate * seconds:.0f}"
            bar.set_postfix(shown, refresh=False)
        if self.ctx.is_main and not self.progress:
            print(f"[pretrain:{self.recipe.name}] step {step} " +
                  " ".join(f"{k}={v:.5g}" for k, v in values.items()), flush=True)
        return values

    def _save(self, module, optimizer, scheduler, scaler, sampler_state, step, schedule) -> None:
        rngs = gather_objects(rng_state(), self.ctx)
        if self.ctx.is_main:
            state = {
                "format": FORMAT,
                "recipe": self.recipe.name,
                "config": self.recipe.full_config(),
                "step": step,
                "total_steps": schedule.total_steps,
                "world_size": self.ctx.world_size,
                "model": module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "sampler": sampler_state,
                "rng": rngs,
                "skipped_steps": (self.skipped_steps, self.consecutive_skips),
                "best": self.best.state_dict() if self.best is not None else None,
            }
            path = checkpoint_path(self.paths.checkpoints, step)
            save_atomic(state, path)
            prune_checkpoints(self.paths.checkpoints, self.cfg.keep_last)
            if self.best is not None:
                self.best.prune()  # only now: the newest checkpoint no longer names the dropped states
        self.ctx.barrier()
        return checkpoint_path(self.paths.checkpoints, step)

    def _export(self, module, optimizer, scaler, step, schedule) -> Path | None:
        path = None
        if self.ctx.is_main:
            epoch = step // max(1, schedule.steps_per_epoch)
            path = self.recipe.export(module, self.paths.exports, step=step, epoch=epoch,
                                      optimizer=optimizer.state_dict(),
                                      scaler=scaler.state_dict() if scaler.is_enabled() else None)
            self._log(f"exported the model in the official layout: {path}")
        self.ctx.barrier()
        return path
