"""Helpers shared by the wrapper CLIs around s3prl's runners."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import warnings
from pathlib import Path

__all__ = ["s3prl_package_dir", "import_s3prl_hub", "register_entries", "with_local_rank", "reporting_errors"]

#: what importing s3prl.hub prints about upstreams nobody asked for
_IMPORT_NOISE = ("ESPnet is not installed, cannot use espnet_hubert upstream",)


def s3prl_package_dir() -> Path:
    """The installed ``s3prl`` package folder, found without importing ``s3prl.hub``."""
    spec = importlib.util.find_spec("s3prl")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("s3prl is not installed in this Python environment: pip install 's3prl-plugins[s3prl]' "
                         "(the PyPI s3prl 0.4.18) or pip install espnet-s3prl (ESPnet's fork)")
    return Path(list(spec.submodule_search_locations)[0])


def import_s3prl_hub():
    """``import s3prl.hub`` without the deprecation warnings and notices that s3prl's own upstream
    modules print at import time (torchaudio's ``set_audio_backend``, torch.jit, "ESPnet is not
    installed"): they are about s3prl's code, not the user's command, and come before ``--help``."""
    import logging

    def not_noise(record: logging.LogRecord) -> bool:
        return record.getMessage() not in _IMPORT_NOISE

    logging.getLogger("s3prl.upstream.espnet_hubert.expert").addFilter(not_noise)  # logged at import
    buffer = io.StringIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*deprecated.*", category=UserWarning)
        with contextlib.redirect_stdout(buffer):
            import s3prl.hub as s3prl_hub
    for line in buffer.getvalue().splitlines():
        if line.strip() not in _IMPORT_NOISE:
            print(line)
    return s3prl_hub


def register_entries() -> list[str]:
    """Set every plugin entry on ``s3prl.hub`` so ``-u NAME`` resolves without an install."""
    s3prl_hub = import_s3prl_hub()

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


@contextlib.contextmanager
def reporting_errors():
    """Our own errors (a missing checkpoint, bad input, a bad config: every exception class of
    ``s3prl_plugins``) end the command with their message alone, not under s3prl's traceback;
    ``S3PRL_PLUGINS_TRACEBACK=1`` shows the traceback too."""
    try:
        yield
    except Exception as error:
        ours = type(error).__module__.startswith("s3prl_plugins")
        if not ours or os.environ.get("S3PRL_PLUGINS_TRACEBACK") == "1":
            raise
        print(f"error: {error}\n(set S3PRL_PLUGINS_TRACEBACK=1 to see where it was raised)", file=sys.stderr)
        raise SystemExit(2) from None
