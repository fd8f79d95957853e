"""``run_downstream.py -u melhubert_local`` end to end with the older runner layout and ``-g``.

The shared end-to-end test (test_end_to_end.py) runs every MelHuBERT entry with the current
official layout and default statistics; this one covers a 10 ms checkpoint in the older layout
(``Model`` + ``Upstream_Config['hubert']``) with statistics chosen by ``-g``, on KS and IC.
"""
from __future__ import annotations

import pytest

from s3prl_plugins.upstreams.melhubert import testing

from .helpers import accuracies, run_downstream_e2e


@pytest.mark.slow
def test_melhubert_local_10ms_older_layout_with_stats_yaml(superb_data, tmp_path):
    ckpt = testing.write_official_checkpoint(tmp_path / "ckpt" / "checkpoint-epoch-50.ckpt",
                                             testing.config_for(10), layout="Model")
    config = tmp_path / "melhubert.yaml"
    config.write_text("stats: libri360\n")
    expdirs = run_downstream_e2e("melhubert_local", ckpt, config, superb_data, tmp_path / "runs")
    for expdir in expdirs.values():
        acc = accuracies(expdir)
        assert set(acc) == {"dev", "test"}, f"{expdir}/log.log lacks dev/test accuracies: {acc}"
        assert len(acc["test"]) == 2 and acc["test"][0] == pytest.approx(acc["test"][1])
        # s3prl writes dev-best.ckpt only when a dev score beats 0 (else the last states-N.ckpt
        # is evaluated, see e2e_runner.py)
        assert (expdir / "dev-best.ckpt").is_file() or any(expdir.glob("states-*.ckpt"))
