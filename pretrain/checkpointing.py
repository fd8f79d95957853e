"""Resumable training checkpoints: written atomically, the last K kept, RNG states included.

A checkpoint holds only tensors and plain Python values, so it loads with torch's
weights-only unpickler. Official-layout model files are written separately by each recipe's
``export`` (see the recipes).
"""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from ..upstreams.common.files import save_atomic

__all__ = ["save_atomic", "checkpoint_path", "list_checkpoints", "latest_checkpoint", "prune_checkpoints",
           "rng_state", "set_rng_state", "load_training_checkpoint", "FORMAT"]

FORMAT = "s3prl_plugins.pretrain/1"
_NAME = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step-{step:09d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def prune_checkpoints(folder: Path, keep_last: int) -> None:
    for old in list_checkpoints(folder)[:-keep_last]:
        old.unlink(missing_ok=True)


def rng_state() -> dict:
    """The RNG states of this process (torch CPU and CUDA, numpy, random) as plain values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_training_checkpoint(path: Path) -> dict:
    from ..upstreams.common.checkpoint import CheckpointError

    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path / "checkpoints") or latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"no step-*.pt checkpoint in {path} or {path / 'checkpoints'}")
        path = found
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or foreign files
        raise CheckpointError(f"cannot read training checkpoint {path}: {error}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint of s3prl_plugins.pretrain (expected "
                              f"format {FORMAT}); official model files cannot be resumed from")
    state["path"] = str(path)
    return state
