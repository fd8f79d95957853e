"""The builder of the ARMHuBERT / ARMwavLM / MaskHuBERT entries (the shared student upstream)."""
from __future__ import annotations

from typing import Any

from ..common.student.config import ARM
from ..common.student.upstream import StudentUpstream, build_student_upstream
from .releases import DEFAULT_RELEASE, RELEASES

__all__ = ["StudentUpstream", "build"]


def build(entry: str, ckpt: Any = None, model_config: Any = None, refresh: bool = False, **kwargs) -> StudentUpstream:
    """``armhubert``/``maskhubert``: the official names (``-k .ckpt -g .yaml``, or the 960h release
    without ``-k``); ``*_local``: ``-k .ckpt [-g .yaml]``; the named releases download their file."""
    release = RELEASES.get(DEFAULT_RELEASE.get(entry, entry))
    local_entry = "maskhubert_local" if entry.startswith("maskhubert") else "armhubert_local"
    return build_student_upstream(entry, ARM, ckpt, model_config, refresh, release=release, local_entry=local_entry,
                                  **kwargs)
