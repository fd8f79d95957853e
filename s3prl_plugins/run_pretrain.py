"""s3prl's ``run_pretrain.py`` runnable from any folder, with torch-2.x fixes.

Usage is exactly that of s3prl's runner::

    python -m s3prl_plugins.run_pretrain -u <recipe> -n my_run -p /abs/or/relative/expdir --device cpu

s3prl 0.4.18's pre-training runner imports its modules top-level (``from pretrain.runner import
Runner``), so it only works with the s3prl package folder as the working directory. This wrapper
turns every path argument into an absolute one, changes into that folder, allowlists s3prl's
checkpoint classes for weights-only loading (``-e``/``-a`` resume) and passes torchrun's
``LOCAL_RANK`` on.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from . import compat
from ._cli import s3prl_package_dir, with_local_rank

PATH_FLAGS = ("-p", "--expdir", "-c", "--config", "-g", "--upstream_config", "-e", "--past_exp", "-i", "--init_ckpt")


def absolute_paths(argv: list[str], cwd: Path) -> list[str]:
    out = list(argv)
    for index, arg in enumerate(out):
        for flag in PATH_FLAGS:
            if arg == flag and index + 1 < len(out):
                out[index + 1] = str((cwd / out[index + 1]).resolve())
            elif arg.startswith(flag + "=") and flag.startswith("--"):
                out[index] = f"{flag}={(cwd / arg.split('=', 1)[1]).resolve()}"
    return out


def main(argv: list[str] | None = None) -> None:
    argv = with_local_rank(list(sys.argv[1:] if argv is None else argv))
    argv = absolute_paths(argv, Path.cwd())
    package = s3prl_package_dir()
    compat.apply()
    os.chdir(package)
    sys.path.insert(0, str(package))
    sys.argv = [str(package / "run_pretrain.py"), *argv]
    import run_pretrain  # s3prl's script, importable now that its folder is on sys.path

    run_pretrain.main()


if __name__ == "__main__":
    main()
