"""Runs several ``run_downstream.py`` invocations in one process (see helpers.run_downstream_e2e).

Each invocation goes through ``python -m s3prl_plugins.run_downstream``'s ``main`` - the real
s3prl runner with the plugin entries registered - exactly as on the command line.
"""
import json
import sys

from helpers import checkpoint_to_evaluate  # this folder is sys.path[0] of the script
from s3prl_plugins.run_downstream import main

for argv in json.load(open(sys.argv[1])):
    if "-e" in argv:
        argv[argv.index("-e") + 1] = checkpoint_to_evaluate(argv[argv.index("-e") + 1])
    print("== run_downstream.py", " ".join(argv), flush=True)
    main(list(argv))
