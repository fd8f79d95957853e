"""Tiny STaRHuBERT checkpoints in the release format (the shared student fixtures)."""
from __future__ import annotations

from pathlib import Path

from ..common.student import testing as _student
from .config import FLAVOUR
from .releases import RELEASES

__all__ = ["make_checkpoint", "write_full_size_starhubert", "write_full_size_starhubert_l"]


def make_checkpoint(entry: str, directory: Path) -> dict:
    """``dict(ckpt=..., model_config=...)`` for a STaR entry (named releases go into the cache)."""
    from . import FAMILY

    if entry not in FAMILY.all_entries:
        raise KeyError(f"{entry!r} is not a STaRHuBERT entry")
    return _student.make_checkpoint(entry, directory, flavour=FLAVOUR, release=RELEASES.get(entry))


write_full_size_starhubert = _student.write_full_size("STaRHuBERT", FLAVOUR)
write_full_size_starhubert_l = _student.write_full_size("STaRHuBERT-L", FLAVOUR)
