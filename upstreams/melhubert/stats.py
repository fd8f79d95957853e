"""LibriSpeech log-mel normalisation statistics shipped with the package.

Each ``.npy`` file in ``stats/`` is the official ``libri-{100,360,960}-mean-std.npy``: a float64
``[2, 40]`` array, row 0 the per-bin mean and row 1 the per-bin standard deviation of the raw
40-bin Kaldi log-mel over the training subset. A released checkpoint must be used with the file
of its training data.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["NormalisationStats", "SHIPPED_STATS", "DEFAULT_STATS", "load_stats"]

_STATS_DIR = Path(__file__).resolve().parent / "stats"

#: name -> (file in stats/, description)
SHIPPED_STATS = {
    "libri100": ("libri-100-mean-std.npy", "LibriSpeech train-clean-100 (100 h)"),
    "libri360": ("libri-360-mean-std.npy", "LibriSpeech train-clean-360 (360 h)"),
    "libri960": ("libri-960-mean-std.npy", "LibriSpeech 960 h"),
}
DEFAULT_STATS = "libri960"


@dataclass(frozen=True)
class NormalisationStats:
    mean: torch.Tensor  # float32 [40]
    std: torch.Tensor  # float32 [40]
    description: str


def load_stats(choice: str | os.PathLike | None = None, *, num_bins: int = 40) -> NormalisationStats:
    """``choice``: ``libri100`` / ``libri360`` / ``libri960`` (default) or a path to a ``.npy``."""
    if choice is None or str(choice).strip() == "":
        choice = DEFAULT_STATS
    text = str(choice).strip()
    key = text.lower().replace("-", "").replace("_", "")
    if key in SHIPPED_STATS:
        filename, description = SHIPPED_STATS[key]
        path = _STATS_DIR / filename
        description = f"{description} ({key}, shipped)"
    else:
        path = Path(text).expanduser()
        description = str(path)
        if not path.is_file():
            raise ValueError(
                f"MelHuBERT: stats {text!r} is neither one of {', '.join(SHIPPED_STATS)} nor an "
                f"existing .npy file; set `stats:` in the -g yaml to one of those."
            )
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:
        raise ValueError(f"MelHuBERT: could not read statistics file {path} ({error}).") from error
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[0] != 2 or array.shape[1] != num_bins:
        raise ValueError(
            f"MelHuBERT: statistics file {path} has shape {tuple(array.shape)}; expected "
            f"[2, {num_bins}] (row 0 mean, row 1 std of the {num_bins}-bin log-mel)."
        )
    if not np.all(np.isfinite(array)) or not np.all(array[1] > 0):
        raise ValueError(f"MelHuBERT: statistics file {path} has a non-finite value or a std <= 0.")
    # float64 -> float32 like the official torch.Tensor(np_array) conversion
    mean = torch.tensor(array[0].reshape(-1), dtype=torch.float32)
    std = torch.tensor(array[1].reshape(-1), dtype=torch.float32)
    return NormalisationStats(mean, std, description)
