"""The builder of the ARMHuBERT / ARMwavLM / MaskHuBERT entries (the shared student upstream)."""
from __future__ import annotations

from typing import Any

from ..common.student.upstream import StudentUpstream, build_student_upstream
from . import FAMILY
from .config import FLAVOUR

__all__ = ["StudentUpstream", "build"]


def build(entry: str, ckpt: Any = None, model_config: Any = None, refresh: bool = False, **kwargs) -> StudentUpstream:
    """``armhubert``/``maskhubert``: the official names (``-k .ckpt -g .yaml``, or the 960h release
    without ``-k``); ``*_local``: ``-k .ckpt [-g .yaml]``; the named releases download their file
    (``-k``: a copy of it fetched by hand)."""
    local_entry = "maskhubert_local" if entry.startswith("maskhubert") else "armhubert_local"
    return build_student_upstream(entry, FLAVOUR, ckpt, model_config, refresh, release=FAMILY.release_for(entry),
                                  local_entry=local_entry, **kwargs)
