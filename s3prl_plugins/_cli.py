"""Helpers shared by the wrapper CLIs around s3prl's runners."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["s3prl_package_dir", "register_entries", "with_local_rank"]


def s3prl_package_dir() -> Path:
    """The installed ``s3prl`` package folder, found without importing ``s3prl.hub``."""
    spec = importlib.util.find_spec("s3prl")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("s3prl is not installed in this Python environment: pip install 's3prl-plugins[s3prl]' "
                         "(the PyPI s3prl 0.4.18) or pip install espnet-s3prl (ESPnet's fork)")
    return Path(list(spec.submodule_search_locations)[0])


def register_entries() -> list[str]:
    """Set every plugin entry on ``s3prl.hub`` so ``-u NAME`` resolves without an install."""
    import s3prl.hub as s3prl_hub

    from . import hub

    for name in hub.__all__:
        setattr(s3prl_hub, name, getattr(hub, name))
    return list(hub.__all__)


def with_local_rank(argv: list[str]) -> list[str]:
    """s3prl only knows ``--local_rank N``: translate torchrun's LOCAL_RANK and ``--local-rank``."""
    out: list[str] = []
    given = False
    for arg in argv:
        if arg.startswith("--local-rank"):
            arg = arg.replace("--local-rank", "--local_rank", 1)
        if arg.startswith("--local_rank"):
            given = True
        out.extend(arg.split("=", 1) if arg.startswith("--local_rank=") else [arg])
    if not given and "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        out += ["--local_rank", os.environ["LOCAL_RANK"]]
    return out
