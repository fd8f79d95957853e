"""The official M2D SUPERB workflow through the real ``run_downstream.py``, on generated KS data.

Step 1 (README of the official wrapper): ``-u m2d_calcnorm -k CKPT`` measures the data set's
log-mel statistics; ours prints them with the ``-k`` to use and finishes the run. Step 2: the
printed ``-u m2d -k CKPT,MEAN,STD`` (the form the official ``ks.sh`` uses) trains and evaluates.
The shared end-to-end test runs every entry with its default files; this one chains the steps.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from s3prl_plugins.upstreams.m2d import testing

from .helpers import E2E_RUNNER, accuracies, downstream_commands


def _run(commands, workdir) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    plan = workdir / "plan.json"
    plan.write_text(json.dumps(commands))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    result = subprocess.run([sys.executable, str(E2E_RUNNER), str(plan)], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


@pytest.mark.slow
def test_calcnorm_then_m2d_with_the_printed_statistics(superb_data, tmp_path):
    folder = "m2d_s_vit_base-80x200p80x2-230201"
    weight = testing.write_full_checkpoint(tmp_path / folder / "checkpoint-1000.pth",
                                           testing.tiny_config(folder, embed_dim=128), variant="m2d_s")
    calc_config = tmp_path / "calcnorm.yaml"
    calc_config.write_text("calcnorm_updates: 40\n")
    train_only = downstream_commands("m2d_calcnorm", weight, calc_config, superb_data, tmp_path / "calc",
                                     tasks=("speech_commands",))[:1]
    output = _run(train_only, tmp_path / "calc")
    match = re.search(rf"final .*\n\s+use them with: -u m2d -k ({re.escape(str(weight))},[-0-9.e]+,[0-9.e]+)", output)
    assert match, output[-3000:]
    assert (tmp_path / "calc" / "speech_commands" / "states-20.ckpt").is_file()  # the run went on to the end

    ckpt = match.group(1)
    _run(downstream_commands("m2d", ckpt, None, superb_data, tmp_path / "runs", tasks=("speech_commands",)),
         tmp_path / "runs")
    acc = accuracies(tmp_path / "runs" / "speech_commands")
    assert set(acc) == {"dev", "test"}
    assert len(acc["test"]) == 2 and acc["test"][0] == pytest.approx(acc["test"][1])
