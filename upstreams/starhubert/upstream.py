"""The builder of the STaRHuBERT / STaRWavLM entries (the shared student upstream)."""
from __future__ import annotations

from typing import Any

from ..common.student.upstream import StudentUpstream, build_student_upstream
from . import FAMILY
from .config import FLAVOUR

__all__ = ["StudentUpstream", "build"]


def build(entry: str, ckpt: Any = None, model_config: Any = None, refresh: bool = False, **kwargs) -> StudentUpstream:
    """``starhubert``: the official name (``-k .ckpt -g .yaml``, or STaRHuBERT without ``-k``);
    ``starhubert_local``: ``-k .ckpt [-g .yaml]``; the named releases download their file
    (``-k``: a copy of it fetched by hand)."""
    return build_student_upstream(entry, FLAVOUR, ckpt, model_config, refresh, release=FAMILY.release_for(entry),
                                  local_entry="starhubert_local", **kwargs)
