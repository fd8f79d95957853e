"""s3prl's ``run_downstream.py`` with the plugin entries registered and torch-2.x fixes.

Usage is exactly that of s3prl's runner, e.g.::

    python -m s3prl_plugins.run_downstream -m train -u m2d_local -k ckpt.pth -d fluent_commands \\
        -n my_ic_run --device cpu

No install into s3prl is needed. On top of the plain runner it

* registers every entry of :mod:`s3prl_plugins.hub` on ``s3prl.hub``;
* reads s3prl's own checkpoints (``-e dev-best.ckpt``, resume) under torch >= 2.6's
  weights-only loading by allowlisting the classes they contain;
* passes torchrun's ``LOCAL_RANK`` as ``--local_rank`` (s3prl 0.4.18 only knows the flag);
* uses this package's task config when ``-c`` is not given and ``./downstream/<task>/config.yaml``
  does not exist (the PyPI s3prl ships no task configs);
* ends with our own errors' message alone (a missing checkpoint, bad input), not under an 80-line
  traceback (``S3PRL_PLUGINS_TRACEBACK=1`` shows it).
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import compat
from ._cli import register_entries, reporting_errors, s3prl_package_dir, with_local_rank

CONFIG_ROOT = Path(__file__).resolve().parent / "s3prl_configs"


def _option(argv: list[str], *flags: str) -> str | None:
    for index, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def default_task_config(task: str) -> Path | None:
    """The config s3prl would use, else s3prl's installed one, else this package's."""
    for candidate in (
        Path("downstream") / task / "config.yaml",
        s3prl_package_dir() / "downstream" / task / "config.yaml",
        CONFIG_ROOT / task / "config.yaml",
    ):
        if candidate.is_file():
            return candidate.resolve()
    return None


def main(argv: list[str] | None = None) -> None:
    argv = with_local_rank(list(sys.argv[1:] if argv is None else argv))
    compat.apply()
    register_entries()
    task = _option(argv, "-d", "--downstream")
    if task and _option(argv, "-c", "--config") is None and _option(argv, "-e", "--past_exp") is None:
        config = default_task_config(task)
        if config is not None:
            argv += ["-c", str(config)]
    sys.argv = ["run_downstream.py", *argv]
    from s3prl import run_downstream

    with reporting_errors():
        run_downstream.main()


if __name__ == "__main__":
    main()
