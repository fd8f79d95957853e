"""s3prl's real downstream runner, once per code path (every entry is checked in-process by
``test_entries.py``; the family-specific runs are in ``test_<family>_e2e.py``).

* the installed s3prl as a user runs it: ``cd <s3prl package> && python run_downstream.py -m train
  -u m2d_local -k CKPT -d speech_commands`` (and ``fluent_commands``), then ``-m evaluate -e
  dev-best.ckpt``, with nothing but what ``install_into_s3prl.py`` put into s3prl (the compat
  shims of torchaudio >= 2.9 / huggingface_hub >= 1 / catalyst, s3prl's checkpoints under
  weights-only loading, the entries, the task configs);
* the wrapper ``python -m s3prl_plugins.run_downstream`` (no install needed) with a Lightning
  ``.ckpt`` entry (ARMHuBERT's stand-in pickles).

Each trains 20 steps on CPU on generated speech and evaluates; checked: the accuracy lines in
``log.log`` and the prediction files that a leaderboard submission is made of.
"""
from __future__ import annotations

import csv
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s3prl_plugins import hub
from s3prl_plugins._cli import s3prl_package_dir

from .helpers import TASKS, accuracies, checkpoint_to_evaluate, downstream_commands, run_downstream_e2e

KS_CLASSES = {"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"}


def _test_files(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.wav"))


def _checkpoint(entry: str, folder: Path) -> dict:
    family = importlib.import_module(f"s3prl_plugins.upstreams.{hub.ENTRY_FAMILY[entry]}.testing")
    return family.make_checkpoint(entry, folder)


def _check_runs(expdirs: dict, superb_data: dict) -> None:
    ks, ic = expdirs["speech_commands"], expdirs["fluent_commands"]
    for expdir in (ks, ic):
        acc = accuracies(expdir)
        assert set(acc) == {"dev", "test"}, f"{expdir}/log.log lacks dev/test accuracies: {acc}"
        # the -m evaluate run appends one more test result, equal to the training-time one
        assert len(acc["test"]) == 2 and acc["test"][0] == pytest.approx(acc["test"][1])
        assert all(0.0 <= a <= 1.0 for values in acc.values() for a in values)
        # s3prl keeps dev-best.ckpt only for a dev score above 0 (else the last states-N.ckpt is evaluated)
        assert (expdir / "dev-best.ckpt").is_file() or max(acc["dev"]) == 0.0


    ks_lines = (ks / "test_predict.txt").read_text().split("\n")
    ks_lines = [line for line in ks_lines if line.strip()]
    assert len(ks_lines) == _test_files(superb_data["ks"]["test_root"])
    assert {line.rsplit(" ", 1)[1] for line in ks_lines} <= KS_CLASSES

    test_csv = Path(superb_data["ic"]["root"]) / "data" / "test_data.csv"
    with open(test_csv) as handle:
        truth = list(csv.DictReader(handle))
    with open(ic / "test_predict.csv") as handle:
        predictions = [row for row in csv.reader(handle) if row]
    assert len(predictions) == len(truth)
    actions = {row["action"] for row in truth}
    assert all(len(row) == 4 and row[1] in actions | {"activate", "deactivate", "increase", "decrease", "bring", "change language"}
               for row in predictions)


@pytest.mark.slow
def test_installed_s3prl_run_downstream_as_a_user_runs_it(superb_data, tmp_path):
    """``python run_downstream.py`` inside the s3prl package (the README's path after the install)."""
    package = s3prl_package_dir()
    spec = _checkpoint("m2d_local", tmp_path / "ckpt")
    commands = downstream_commands("m2d_local", spec["ckpt"], spec.get("model_config"), superb_data, tmp_path / "runs")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    for argv in commands:
        if "-e" in argv:
            argv[argv.index("-e") + 1] = checkpoint_to_evaluate(argv[argv.index("-e") + 1])
        result = subprocess.run([sys.executable, "run_downstream.py", *argv], cwd=package, env=env,
                                capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, f"run_downstream.py {' '.join(argv)}:\n{result.stdout[-3000:]}\n" \
                                       f"{result.stderr[-5000:]}"
        assert "WARNING s3prl-plugins" not in result.stderr, result.stderr[-3000:]  # no shim or entry failed
    _check_runs({task: tmp_path / "runs" / task for task in TASKS}, superb_data)


@pytest.mark.slow
def test_wrapper_run_downstream_with_a_lightning_checkpoint(superb_data, tmp_path):
    """``python -m s3prl_plugins.run_downstream`` (nothing installed into s3prl needed)."""
    spec = _checkpoint("armhubert_local", tmp_path / "ckpt")
    expdirs = run_downstream_e2e("armhubert_local", spec["ckpt"], spec.get("model_config"), superb_data,
                                 tmp_path / "runs")
    _check_runs(expdirs, superb_data)
