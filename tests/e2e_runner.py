"""Runs several ``run_downstream.py`` invocations in one process (see helpers.run_downstream_e2e).

Each invocation goes through ``python -m s3prl_plugins.run_downstream``'s ``main`` - the real
s3prl runner with the plugin entries registered - exactly as on the command line.
"""
import json
import sys
from pathlib import Path

from s3prl_plugins.run_downstream import main


def checkpoint_to_evaluate(path: str) -> str:
    """s3prl writes dev-best.ckpt only when a dev score beats 0; after 20 steps on a random-weight
    upstream it may not, and then the run's last states-N.ckpt is evaluated instead."""
    wanted = Path(path)
    if wanted.exists() or wanted.name != "dev-best.ckpt":
        return path
    states = sorted(wanted.parent.glob("states-*.ckpt"), key=lambda p: int(p.stem.split("-")[-1]))
    return str(states[-1]) if states else path


for argv in json.load(open(sys.argv[1])):
    if "-e" in argv:
        argv[argv.index("-e") + 1] = checkpoint_to_evaluate(argv[argv.index("-e") + 1])
    print("== run_downstream.py", " ".join(argv), flush=True)
    main(list(argv))
