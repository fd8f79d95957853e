"""The released MelHuBERT checkpoints (nervjack2/MelHuBERT README, ids as fixed on 2023-11-01).

Light module (no torch import): the hub entries are generated from this table. ``facts``: the
frame period as released (the loader still trusts the stored config) and the normalisation
statistics of the training data.
"""
from __future__ import annotations

from ..common.family import Release, gdrive_url

__all__ = ["RELEASES", "DEFAULT_RELEASE"]

def _release(entry: str, title: str, gdrive_id: str, frame_period_ms: int, stats: str, filename: str) -> Release:
    return Release(entry, title, gdrive_url(gdrive_id), filename=filename,
                   description=f"Google Drive id {gdrive_id}; normalised with the {stats} statistics unless -g sets "
                               "`stats:`",
                   facts={"gdrive_id": gdrive_id, "frame_period_ms": frame_period_ms, "stats": stats})


RELEASES: dict[str, Release] = {r.entry: r for r in (
    _release("melhubert_20ms_360h_stage1", "MelHuBERT-20ms 360-hour stage 1",
             "1mSR40Vdl2gT1rlZORleKPb2gcryQHW5m", 20, "libri360", "melhubert-20ms-360h-stage1.ckpt"),
    _release("melhubert_20ms_360h_stage2", "MelHuBERT-20ms 360-hour stage 2",
             "11wzYf8u9pXPvQyQU2Wodx79W31Ka2e0Z", 20, "libri360", "melhubert-20ms-360h-stage2.ckpt"),
    _release("melhubert_10ms_360h_stage1", "MelHuBERT-10ms 360-hour stage 1",
             "1YZP9nBSRaQ_Z2cFaFLmLkGilEYsEHb2b", 10, "libri360", "melhubert-10ms-360h-stage1.ckpt"),
    _release("melhubert_20ms_100h_stage1", "MelHuBERT-20ms 100-hour stage 1",
             "1ppz5w5eTGOL81QjYqwxRwFFmq-hqInD6", 20, "libri100", "melhubert-20ms-100h-stage1.ckpt"),
    _release("melhubert_10ms_960h_stage2", "MelHuBERT-10ms 960-hour stage 2",
             "18u2u-528uDh5T7R1bp1wvWJ2ygcrNlzx", 10, "libri960", "melhubert-10ms-960h-stage2.ckpt"),
    _release("melhubert_20ms_960h_stage2", "MelHuBERT-20ms 960-hour stage 2",
             "1Fn_C5VoH5iV3LdvBEjvfAsbMPhWFFPdd", 20, "libri960", "melhubert-20ms-960h-stage2.ckpt"),
)}

#: what ``melhubert`` (no suffix) downloads without -k: the model the author recommends for feature
#: extraction (issue #7)
DEFAULT_RELEASE = {"melhubert": "melhubert_20ms_960h_stage2"}
