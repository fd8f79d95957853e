"""Validation during training: a held-out list evaluated with the recipe's own loss, the best K
model states kept by a chosen metric, their average (Dasheng's ``average_final_model``), and a
user command run at each save (M2D's ``quick_eval.sh`` pattern).

What the official trainers do, and what this module reproduces:

* ARMHuBERT (Lightning): ``v_loss`` on dev-clean every epoch (student and teacher without
  masking), ``save_top_k=3`` by the lowest ``v_loss``;
* Dasheng (ignite): the loss on ``cv_data`` every ``valid_every`` epochs, the 4 best encoders kept
  (``n_saved=4``) and averaged at the end;
* M2D: the loss on ``--csv_val`` every epoch (no noise mixing), ``quick_eval.sh <checkpoint>``
  started in the background at each save after ``--eval_after`` epochs.

Every validation item gets the crop and mask of its own generator (``sample_rng(seed,
VALID_EPOCH, index)``), so a validation loss is the same number at every evaluation of the same
weights, whatever the number of processes or loader workers.
"""
from __future__ import annotations

import math
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from .checkpointing import save_atomic

__all__ = ["VALID_EPOCH", "ValidationSampler", "BestCheckpoints", "average_state_dicts", "SaveCommand"]

#: the "epoch" of every validation item's generator (training epochs never reach it)
VALID_EPOCH = 2**31 - 1


class ValidationSampler(Sampler):
    """The whole validation list once, in a fixed order, as batches of ``(index, seed,
    VALID_EPOCH, index)`` keys for process ``rank``.

    Items are ordered by length when lengths are given (little padding), cut into global batches
    of ``batch_size * world_size``, and each process takes its contiguous slice. Every process
    gets the same number of batches of the same sizes (recipes all-reduce inside their losses):
    with several processes the list is padded by repeating its first items, as torch's
    ``DistributedSampler`` does, so up to ``world_size - 1`` items are counted twice."""

    def __init__(self, num_items: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 lengths: Sequence[int] | None = None):
        if num_items < 1:
            raise ValueError("the validation list is empty")
        order = list(range(num_items))
        if lengths is not None:
            order.sort(key=lambda i: (-int(lengths[i]), i))
        per_rank = math.ceil(num_items / world_size)
        padded = [order[i % num_items] for i in range(per_rank * world_size)]
        self.batches: list[list[tuple[int, int, int, int]]] = []
        global_batch = batch_size * world_size
        for first in range(0, len(padded), global_batch):
            chunk = padded[first:first + global_batch]
            size = len(chunk) // world_size
            mine = chunk[rank * size:(rank + 1) * size]
            self.batches.append([(index, seed, VALID_EPOCH, index) for index in mine])

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        return iter(self.batches)


@dataclass
class _Entry:
    step: int
    value: float
    name: str  # file name inside the best folder


class BestCheckpoints:
    """The K best model states by one validation metric, as files ``<folder>/step-<N>.pt``.

    The bookkeeping travels in every training checkpoint. Files that drop out of the best K are
    deleted only once a training checkpoint without them is written (:meth:`prune`), so a
    resumed run always finds every file its bookkeeping names; files written after the
    checkpoint a run resumes from are removed at resume (the resumed run recomputes them)."""

    def __init__(self, folder: Path, keep: int, metric: str, mode: str):
        self.folder, self.keep, self.metric, self.mode = Path(folder), keep, metric, mode
        self.entries: list[_Entry] = []

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def ranked(self) -> list[_Entry]:
        """Best first; ties keep the earlier step first."""
        sign = 1.0 if self.mode == "min" else -1.0
        return sorted(self.entries, key=lambda e: (sign * e.value, e.step))

    def offer(self, step: int, value: float, payload: dict) -> bool:
        """Keep the state of ``step`` if it ranks among the best K; returns whether it was kept."""
        if not math.isfinite(value):
            return False
        ranked = self.ranked()
        if len(ranked) >= self.keep and not self._better(value, ranked[-1].value):
            return False
        name = f"step-{step:09d}.pt"
        save_atomic(payload, self.folder / name)
        self.entries = [e for e in self.entries if e.step != step] + [_Entry(step, float(value), name)]
        self.entries = self.ranked()[: self.keep]
        return True

    def prune(self) -> None:
        """Delete the files no longer among the best K (call after a training checkpoint is written)."""
        if not self.folder.is_dir():
            return
        keep = {e.name for e in self.entries}
        for path in self.folder.glob("step-*.pt"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def state_dict(self) -> dict:
        return {"metric": self.metric, "mode": self.mode,
                "entries": [{"step": e.step, "value": e.value, "name": e.name} for e in self.entries]}

    def load_state_dict(self, state: dict | None) -> list[str]:
        """Restore the bookkeeping of a checkpoint; returns warnings (missing files, another metric)."""
        warnings = []
        if not state:
            self.prune()
            return warnings
        if (state.get("metric"), state.get("mode")) != (self.metric, self.mode):
            warnings.append(f"the best checkpoints were ranked by {state.get('metric')} ({state.get('mode')}), this "
                            f"run ranks by {self.metric} ({self.mode}): the earlier ranking is dropped")
            self.entries = []
        else:
            self.entries = [_Entry(int(e["step"]), float(e["value"]), str(e["name"])) for e in state["entries"]]
            missing = [e.name for e in self.entries if not (self.folder / e.name).is_file()]
            if missing:
                warnings.append(f"best checkpoint file(s) {', '.join(missing)} are missing from {self.folder}: "
                                "they are no longer ranked")
                self.entries = [e for e in self.entries if e.name not in missing]
            self.entries = self.ranked()[: self.keep]
        self.prune()
        return warnings

    def paths(self) -> list[Path]:
        """The kept files, best first."""
        return [self.folder / e.name for e in self.ranked()]


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of model states given best first, as Dasheng's
    ``utils.average_models`` computes it over ignite's saved checkpoints: summed worst first in each
    tensor's own dtype, then divided by the count. Integer tensors (BatchNorm's
    ``num_batches_tracked``) are the best state's; the official code sums 0-dim tensors without
    dividing, which touches only that counter, unused at inference."""
    if not states:
        raise ValueError("no model states to average")
    keys = list(states[0])
    for other in states[1:]:
        if list(other) != keys:
            raise ValueError("the model states to average have different parameter names")
    averaged = {}
    for key in keys:
        best = states[0][key]
        if not best.is_floating_point():
            averaged[key] = best.clone()
            continue
        total = states[-1][key].clone()
        for other in reversed(states[:-1]):
            total += other[key]
        averaged[key] = total / float(len(states))
    return averaged


class SaveCommand:
    """``train.on_save``: a shell command started in the background at each save (the M2D
    ``quick_eval.sh`` pattern), its output written to ``<run>/on_save/step-<N>.log``.

    Placeholders: ``{checkpoint}`` (the training checkpoint), ``{export}`` (the official-layout
    export written at that save), ``{step}``, ``{run}`` (the run folder)."""

    PLACEHOLDERS = ("checkpoint", "export", "step", "run")

    def __init__(self, template: str, folder: Path, log=print):
        self.template, self.folder, self.log = template, Path(folder), log
        self.running: list[tuple[int, subprocess.Popen, Path]] = []

    @classmethod
    def check(cls, template: str) -> None:
        from .config import ConfigError

        try:
            template.format(**{k: k for k in cls.PLACEHOLDERS})
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(f"train.on_save {template!r} has an unknown or malformed placeholder ({error}); "
                              f"use {', '.join('{' + k + '}' for k in cls.PLACEHOLDERS)}") from None

    def start(self, step: int, checkpoint: Path, export: Path | None, run: Path) -> None:
        values = {"checkpoint": shlex.quote(str(checkpoint)), "export": shlex.quote(str(export or "")),
                  "step": str(step), "run": shlex.quote(str(run))}
        command = self.template.format(**values)
        self.folder.mkdir(parents=True, exist_ok=True)
        log_path = self.folder / f"step-{step:09d}.log"
        handle = open(log_path, "w")
        handle.write(f"$ {command}\n")
        handle.flush()
        process = subprocess.Popen(command, shell=True, stdout=handle, stderr=subprocess.STDOUT, cwd=str(run))
        handle.close()
        self.running.append((step, process, log_path))
        self.log(f"step {step}: started the on_save command (output: {log_path})")

    def poll(self, wait: bool = False) -> list[tuple[int, int, Path]]:
        """Report the commands that have finished (``wait``: wait for all); returns (step, exit code, log)."""
        done, still = [], []
        for step, process, log_path in self.running:
            if wait and process.poll() is None:
                self.log(f"waiting for the on_save command of step {step} (output: {log_path})")
                process.wait()
            code = process.poll()
            if code is None:
                still.append((step, process, log_path))
                continue
            tail = log_path.read_text(errors="replace").splitlines()[-5:]
            self.log(f"on_save command of step {step} exited with {code}; last lines of {log_path}:\n    "
                     + "\n    ".join(tail))
            done.append((step, code, log_path))
        self.running = still
        return done


def write_to_console(message: str) -> None:
    """A line that does not break an active tqdm bar."""
    try:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stdout)
    except ImportError:
        print(message, flush=True)
