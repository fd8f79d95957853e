"""Tiny STaRHuBERT checkpoints in the release format (see ``upstreams/armhubert/testing.py``)."""
from __future__ import annotations

from pathlib import Path

from ..armhubert import testing as _shared

__all__ = ["make_checkpoint"]


def make_checkpoint(entry: str, directory: Path) -> dict:
    """``dict(ckpt=..., model_config=...)`` for a STaR entry (named releases go into the cache)."""
    if _shared.FLAVOUR_OF_ENTRY.get(entry) != _shared.STAR:
        raise KeyError(f"{entry!r} is not a STaRHuBERT entry")
    return _shared.make_checkpoint(entry, directory)
