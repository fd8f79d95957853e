"""Tiny ARMHuBERT-family checkpoints in the release format (the shared student fixtures)."""
from __future__ import annotations

from pathlib import Path

from ..common.student import testing as _student
from ..common.student.testing import tiny_distiller, training_yaml, write_release_checkpoint
from .config import FLAVOUR
from .releases import RELEASES

__all__ = ["tiny_distiller", "training_yaml", "write_release_checkpoint", "make_checkpoint",
           "write_full_size_armhubert", "write_full_size_armhubert_s", "write_full_size_maskhubert"]


def make_checkpoint(entry: str, directory: Path) -> dict:
    """``dict(ckpt=..., model_config=...)`` for an ARMHuBERT-family entry (named releases go into the cache)."""
    from . import FAMILY

    if entry not in FAMILY.all_entries:
        raise KeyError(f"{entry!r} is not an ARMHuBERT entry")
    return _student.make_checkpoint(entry, directory, flavour=FLAVOUR, release=RELEASES.get(entry))


write_full_size_armhubert = _student.write_full_size("ARMHuBERT", FLAVOUR)
write_full_size_armhubert_s = _student.write_full_size("ARMHuBERT-S", FLAVOUR)
write_full_size_maskhubert = _student.write_full_size("MaskHuBERT", FLAVOUR)
