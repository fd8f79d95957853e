"""Every entry of ``s3prl_plugins.hub.__all__`` through s3prl's real downstream runner.

For each entry: a small random-weight checkpoint in an official format (written by the family's
``testing.make_checkpoint``), then ``run_downstream.py -m train`` (20 steps on CPU) and
``-m evaluate -e dev-best.ckpt`` of SUPERB keyword spotting (KS) and intent classification (IC)
on generated speech. Checked: the accuracy lines in ``log.log`` and the prediction files that a
leaderboard submission is made of.
"""
from __future__ import annotations

import csv
import importlib
from pathlib import Path

import pytest

from s3prl_plugins import hub

from .helpers import accuracies, run_downstream_e2e

KS_CLASSES = {"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"}


def _test_files(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.wav"))


@pytest.mark.slow
@pytest.mark.parametrize("entry", hub.__all__)
def test_entry_trains_and_evaluates_on_ks_and_ic(entry, superb_data, tmp_path, cache_root):
    family = importlib.import_module(f"s3prl_plugins.upstreams.{hub.ENTRY_FAMILY[entry]}.testing")
    spec = family.make_checkpoint(entry, tmp_path / "ckpt")
    expdirs = run_downstream_e2e(entry, spec.get("ckpt"), spec.get("model_config"), superb_data, tmp_path / "runs")

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
