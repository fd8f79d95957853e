"""Span masks (fairseq's compute_mask_indices, per utterance) and length-bucketed batches."""
from __future__ import annotations

import numpy as np
import pytest

from s3prl_plugins.pretrain.data import GlobalBatchSampler
from s3prl_plugins.pretrain.masking import batch_span_mask, equalize_mask_counts, span_mask, span_mask_indices


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of the runs of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), (ends - starts).tolist()))


def test_static_overlapping_spans_cover_the_expected_fraction():
    """p = 0.7, span 5 (MelHuBERT): ~0.7 n / 5 spans of 5 with overlaps, so about
    1 - exp(-0.7) ~ 0.50 of the frames end up masked (HuBERT's well-known ~50 %)."""
    rng = np.random.default_rng(0)
    fractions, counts = [], []
    for _ in range(200):
        mask = span_mask(1000, rng, mask_prob=0.7, mask_length=5, min_masks=2)
        fractions.append(mask.mean())
        counts.append(mask.sum())
    assert 0.47 < np.mean(fractions) < 0.53
    assert max(counts) <= 141 * 5  # at most int(0.7 * 1000 / 5 + 1) spans of 5


def test_span_count_uses_probabilistic_rounding_and_min_masks():
    rng = np.random.default_rng(1)
    # 0.5 * 10 / 5 = 1 span (+U[0,1) rounds down to 1); min_masks 2 raises it to two spans of 5
    for _ in range(20):
        idx = span_mask_indices(10, rng, mask_prob=0.5, mask_length=5, min_masks=2)
        assert 5 <= len(idx) <= 10
    # tiny utterances never index past their end
    for n in range(1, 8):
        idx = span_mask_indices(n, rng, mask_prob=0.8, mask_length=10, min_masks=2)
        assert (idx < n).all() and len(np.unique(idx)) == len(idx)
    assert len(span_mask_indices(0, rng, mask_prob=0.8, mask_length=10)) == 0


def test_uniform_no_overlap_spans_keep_their_distance():
    """ARMHuBERT's teacher mask: uniform lengths in [0, 20], no overlap, min_space 1."""
    rng = np.random.default_rng(2)
    for _ in range(50):
        mask = span_mask(400, rng, mask_prob=0.8, mask_length=10, selection="uniform", other=0, min_masks=2,
                         no_overlap=True, min_space=1)
        spans = _spans(mask)
        assert all(length <= 20 for _, length in spans)
        for (s0, l0), (s1, _) in zip(spans, spans[1:]):
            assert s1 - (s0 + l0) >= 1
    with pytest.raises(ValueError, match="unknown mask selection"):
        span_mask(10, rng, mask_prob=0.5, mask_length=2, selection="gaussian")


def test_same_generator_same_mask_and_batches_pad_with_false():
    a = span_mask(300, np.random.default_rng([7, 0, 3]), mask_prob=0.7, mask_length=5)
    b = span_mask(300, np.random.default_rng([7, 0, 3]), mask_prob=0.7, mask_length=5)
    assert (a == b).all()
    batch = batch_span_mask([50, 80, 20], 80, np.random.default_rng(3), mask_prob=0.8, mask_length=10,
                            selection="uniform", no_overlap=True, min_space=1, min_masks=2, require_same_masks=True)
    assert batch.shape == (3, 80)
    assert not batch[0, 50:].any() and not batch[2, 20:].any()
    assert len(set(batch.sum(1).tolist())) == 1  # require_same_masks
    rows = equalize_mask_counts([np.array([1, 1, 1, 0], bool), np.array([0, 1, 0, 0], bool)], np.random.default_rng(0))
    assert [r.sum() for r in rows] == [1, 1] and rows[0][3] == 0


def test_bucketed_batches_group_lengths_split_across_ranks_and_resume():
    lengths = [5, 90, 40, 41, 7, 88, 60, 61, 3, 89]
    ordered = sorted(range(10), key=lambda i: -lengths[i])
    one = list(GlobalBatchSampler(10, 4, seed=3, lengths=lengths))
    assert len(one) == 2
    for batch in one:
        members = [key[0] for key in batch]
        positions = sorted(ordered.index(i) for i in members)
        assert positions == list(range(positions[0], positions[0] + 4))  # neighbours in length
    ranks = [list(GlobalBatchSampler(10, 2, rank=r, world_size=2, seed=3, lengths=lengths)) for r in range(2)]
    for step, batch in enumerate(one):
        assert batch == ranks[0][step] + ranks[1][step]
    resumed = GlobalBatchSampler(10, 4, seed=3, lengths=lengths)
    resumed.set_position(0, 1)
    assert list(resumed) == one[1:]
    # another epoch visits the batches in another order / drops another remainder
    epochs = set()
    sampler = GlobalBatchSampler(10, 4, seed=3, lengths=lengths, auto_epoch=True)
    for _ in range(6):
        epochs.add(tuple(k[0] for b in sampler for k in b))
    assert len(epochs) > 1
    with pytest.raises(ValueError, match="item lengths"):
        GlobalBatchSampler(10, 4, lengths=[1, 2])
