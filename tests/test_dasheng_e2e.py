"""``run_downstream.py -u dasheng_local`` end to end with the Hugging Face layout and options.

The shared end-to-end test (test_end_to_end.py) runs every Dasheng entry with the pip/Zenodo
file; this one covers the other official layout and a ``-g`` model config on keyword spotting.
"""
from __future__ import annotations

import pytest

from s3prl_plugins.upstreams.dasheng.testing import make_checkpoint

from .helpers import accuracies, run_downstream_e2e


@pytest.mark.slow
def test_dasheng_local_huggingface_folder_with_model_config(superb_data, tmp_path):
    spec = make_checkpoint("dasheng_local", tmp_path / "ckpt", layout="huggingface")
    config = tmp_path / "dasheng.yaml"
    config.write_text("batch_mode: per_utterance\ndtype: float32\n")
    expdirs = run_downstream_e2e("dasheng_local", spec["ckpt"], config, superb_data, tmp_path / "runs",
                                 tasks=("speech_commands",))
    acc = accuracies(expdirs["speech_commands"])
    assert set(acc) == {"dev", "test"}
    assert len(acc["test"]) == 2 and acc["test"][0] == pytest.approx(acc["test"][1])
