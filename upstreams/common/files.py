"""Atomic file writes: a temporary file in the same folder, flushed to disk, then renamed.

A crash or a kill never leaves a half-written file under the final name; the only helper for it in
the package (checkpoints, exports, prepared data, the installer's edits of s3prl).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["atomic_write", "save_atomic", "save_npy_atomic", "write_text_atomic", "full_size_writer"]


def atomic_write(path: str | os.PathLike, content: bytes | Callable[[BinaryIO], Any], *,
                 temporary: str | os.PathLike | None = None, mode: int | None = None) -> Path:
    """Write ``content`` (bytes, or a function that writes to the open binary file) to ``path``.

    ``temporary``: a fixed temporary name (the installer's, so a killed run's leftover is found);
    by default a fresh one. ``mode``: permission bits of the result (default: the umask's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if temporary is None:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        handle = os.fdopen(fd, "wb")
    else:
        name = str(temporary)
        handle = open(name, "wb")
    try:
        with handle:
            if isinstance(content, (bytes, bytearray)):
                handle.write(content)
            else:
                content(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(name, mode)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return path


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` written atomically."""
    import torch

    return atomic_write(path, lambda handle: torch.save(obj, handle))


def save_npy_atomic(path: str | os.PathLike, array) -> Path:
    """``numpy.save`` written atomically."""
    import numpy as np

    return atomic_write(path, lambda handle: np.save(handle, array))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, text.encode())


def full_size_writer(name: str, write: Callable[[Path], Any]) -> Callable[[str | os.PathLike], dict]:
    """An ``Architecture.writer`` (benchmarks, profiling): ``write(path)`` puts a full-size random
    checkpoint at ``folder / name`` the first time; every call returns the entry's arguments."""
    def writer(folder: str | os.PathLike) -> dict:
        path = Path(folder) / name
        if not path.exists():
            write(path)
        return {"ckpt": str(path), "model_config": None}
    return writer
