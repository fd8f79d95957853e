"""Span masks of HuBERT-style masked prediction and masking distillation.

A reimplementation of fairseq's ``compute_mask_indices`` (``fairseq/data/data_utils.py``) for one
utterance at a time, with the random draws taken from a given ``numpy.random.Generator``. The
recipes call it in ``make_example`` with the sample's own generator (see :mod:`.data`), so a
sample gets the same mask whatever the number of processes, workers or where a run resumed.

Per utterance of ``n`` valid frames (fairseq with a padding mask):

* number of spans ``int(mask_prob * n / mask_length + U[0, 1))`` (probabilistic rounding), at
  least ``min_masks``;
* span lengths: ``static`` = ``mask_length``; ``uniform`` = integers in
  ``[other, 2 * mask_length]``; ``normal`` = ``N(mask_length, other)`` rounded, at least 1;
  ``poisson`` = ``Poisson(mask_length)`` rounded;
* starts: with overlap allowed, distinct starts drawn without replacement from
  ``[0, n - shortest span)`` (spans may overlap and run past the end, where they are cut); with
  ``no_overlap``, spans are placed longest first into the free intervals, an interval chosen with
  probability proportional to its length, keeping ``min_space`` free frames between spans;
* ``require_same_masks`` (a batch property): rows with more masked frames than the smallest row
  keep a random subset of that size (:func:`equalize_mask_counts`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["SPAN_SELECTIONS", "span_mask_indices", "span_mask", "equalize_mask_counts", "batch_span_mask"]

SPAN_SELECTIONS = ("static", "uniform", "normal", "poisson")


def _span_lengths(count: int, rng: np.random.Generator, mask_length: int, selection: str, other: float) -> np.ndarray:
    if selection == "static":
        return np.full(count, mask_length, dtype=np.int64)
    if selection == "uniform":
        return rng.integers(int(other), mask_length * 2 + 1, size=count).astype(np.int64)
    if selection == "normal":
        return np.maximum(1, np.rint(rng.normal(mask_length, other, size=count))).astype(np.int64)
    if selection == "poisson":
        return np.rint(rng.poisson(mask_length, size=count)).astype(np.int64)
    raise ValueError(f"unknown mask selection {selection!r}; use one of {', '.join(SPAN_SELECTIONS)}")


def _place_without_overlap(num_frames: int, lengths: np.ndarray, min_space: int, rng: np.random.Generator) -> list[int]:
    """Spans placed longest first into free intervals (fairseq's ``no_overlap`` branch)."""
    starts: list[int] = []
    parts = [(0, num_frames)]
    keep_length = int(lengths.min())
    for length in sorted(lengths.tolist(), reverse=True):
        sizes = np.array([e - s if e - s >= length + min_space else 0 for s, e in parts], dtype=np.float64)
        if sizes.sum() == 0:
            break
        s, e = parts.pop(int(rng.choice(len(parts), p=sizes / sizes.sum())))
        start = int(rng.integers(s, e - length))
        starts.extend(range(start, start + length))
        if start - s - min_space >= keep_length:
            parts.append((s, start - min_space + 1))
        if e - start - length - min_space > keep_length:
            parts.append((start + length + min_space, e))
    return starts


def span_mask_indices(num_frames: int, rng: np.random.Generator, *, mask_prob: float, mask_length: int,
                      selection: str = "static", other: float = 0.0, min_masks: int = 0, no_overlap: bool = False,
                      min_space: int = 0) -> np.ndarray:
    """Sorted, unique masked frame indices of one utterance with ``num_frames`` valid frames."""
    if not 0.0 <= mask_prob <= 1.0 or mask_length < 1:
        raise ValueError(f"mask_prob must lie in [0, 1] and mask_length be >= 1 (got {mask_prob}, {mask_length})")
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    count = max(int(min_masks), int(mask_prob * num_frames / float(mask_length) + rng.random()))
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    lengths = _span_lengths(count, rng, mask_length, selection, other)
    if lengths.sum() == 0:
        lengths[0] = min(mask_length, num_frames - 1)
    if no_overlap:
        indices = np.asarray(_place_without_overlap(num_frames, lengths, min_space, rng), dtype=np.int64)
    else:
        shortest = int(lengths.min())
        if num_frames - shortest <= count:
            shortest = num_frames - count - 1
        choices = num_frames - shortest
        if choices < count:  # too short for distinct starts: mask everything that fits
            return np.arange(num_frames, dtype=np.int64)
        starts = rng.choice(choices, count, replace=False)
        indices = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)]).astype(np.int64)
    return np.unique(indices[indices < num_frames])


def span_mask(num_frames: int, rng: np.random.Generator, **kwargs) -> np.ndarray:
    """Boolean mask ``[num_frames]`` (True = masked); keyword arguments as :func:`span_mask_indices`."""
    mask = np.zeros(num_frames, dtype=bool)
    mask[span_mask_indices(num_frames, rng, **kwargs)] = True
    return mask


def equalize_mask_counts(masks: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """fairseq's ``require_same_masks``: every boolean row keeps a random subset of its masked
    frames, as many as the row with the fewest."""
    fewest = min(int(m.sum()) for m in masks)
    out = []
    for mask in masks:
        mask = np.asarray(mask, dtype=bool).copy()
        indices = np.flatnonzero(mask)
        if len(indices) > fewest:
            mask[:] = False
            mask[rng.choice(indices, fewest, replace=False)] = True
        out.append(mask)
    return out


def batch_span_mask(valid_frames: Sequence[int], max_frames: int, rng: np.random.Generator, *,
                    require_same_masks: bool = False, **kwargs) -> torch.Tensor:
    """``[B, max_frames]`` bool mask for a padded batch (padded frames never masked), all rows
    drawn from ``rng`` in order."""
    rows = [span_mask(int(n), rng, **kwargs) for n in valid_frames]
    if require_same_masks and rows:
        rows = equalize_mask_counts(rows, rng)
    out = torch.zeros(len(rows), max_frames, dtype=torch.bool)
    for i, row in enumerate(rows):
        n = min(len(row), max_frames)
        out[i, :n] = torch.from_numpy(row[:n])
    return out
