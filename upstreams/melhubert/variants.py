"""The released MelHuBERT checkpoints (nervjack2/MelHuBERT README, ids as fixed on 2023-11-01).

Light module (no torch import): the hub entries are generated from this table.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReleasedCheckpoint", "RELEASED", "DEFAULT_NAMED"]


@dataclass(frozen=True)
class ReleasedCheckpoint:
    entry: str
    title: str  # the README's name
    gdrive_id: str
    frame_period_ms: int  # as released; the loader still trusts the stored config
    stats: str  # normalisation statistics of the training data
    filename: str  # local cache name

    @property
    def url(self) -> str:
        from ..common.checkpoint import gdrive_url

        return gdrive_url(self.gdrive_id)


RELEASED = {
    r.entry: r
    for r in (
        ReleasedCheckpoint("melhubert_20ms_360h_stage1", "MelHuBERT-20ms 360-hour stage 1",
                           "1mSR40Vdl2gT1rlZORleKPb2gcryQHW5m", 20, "libri360", "melhubert-20ms-360h-stage1.ckpt"),
        ReleasedCheckpoint("melhubert_20ms_360h_stage2", "MelHuBERT-20ms 360-hour stage 2",
                           "11wzYf8u9pXPvQyQU2Wodx79W31Ka2e0Z", 20, "libri360", "melhubert-20ms-360h-stage2.ckpt"),
        ReleasedCheckpoint("melhubert_10ms_360h_stage1", "MelHuBERT-10ms 360-hour stage 1",
                           "1YZP9nBSRaQ_Z2cFaFLmLkGilEYsEHb2b", 10, "libri360", "melhubert-10ms-360h-stage1.ckpt"),
        ReleasedCheckpoint("melhubert_20ms_100h_stage1", "MelHuBERT-20ms 100-hour stage 1",
                           "1ppz5w5eTGOL81QjYqwxRwFFmq-hqInD6", 20, "libri100", "melhubert-20ms-100h-stage1.ckpt"),
        ReleasedCheckpoint("melhubert_10ms_960h_stage2", "MelHuBERT-10ms 960-hour stage 2",
                           "18u2u-528uDh5T7R1bp1wvWJ2ygcrNlzx", 10, "libri960", "melhubert-10ms-960h-stage2.ckpt"),
        ReleasedCheckpoint("melhubert_20ms_960h_stage2", "MelHuBERT-20ms 960-hour stage 2",
                           "1Fn_C5VoH5iV3LdvBEjvfAsbMPhWFFPdd", 20, "libri960", "melhubert-20ms-960h-stage2.ckpt"),
    )
}

#: ``melhubert`` (no suffix): the model the author recommends for feature extraction (issue #7)
DEFAULT_NAMED = "melhubert_20ms_960h_stage2"
