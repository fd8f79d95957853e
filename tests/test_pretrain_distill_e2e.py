"""Distillation end to end: the installer's run_pretrain shims (armhubert, maskhubert, starhubert),
s3prl's run_pretrain.py -u armhubert / starhubert (the official AdamW_with_schedule optimiser),
export to the release layout, and the exported students as upstreams in s3prl's run_downstream.py
(generated KS data)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from s3prl_plugins import installer
from s3prl_plugins.upstreams.common.checkpoint import load_checkpoint

from .helpers import E2E_RUNNER, accuracies, downstream_commands, export_cli, run_s3prl_pretrain, subprocess_env
from .test_pretrain_distill import distill_data, tiny_config, train  # noqa: F401  (fixture)


@pytest.mark.slow
def test_run_pretrain_distill_recipes_then_downstream(distill_data, superb_data, s3prl_copy, tmp_path):
    installer.install(s3prl_copy, log=lambda *_: None)
    for name in ("armhubert", "maskhubert", "starhubert"):
        folder = s3prl_copy / "pretrain" / name
        assert {"pretrain_expert.py", "config_model.yaml", "config_runner.yaml"} <= {p.name for p in folder.iterdir()}
        shipped = yaml.safe_load((folder / "config_runner.yaml").read_text())
        assert shipped["optimizer"]["name"] == "AdamW_with_schedule"

    # ARMHuBERT and STaRHuBERT through s3prl's own runner (its optimiser: the official AdamW_with_schedule)
    # 3 steps < 4 utterances: s3prl names the last file states-3.ckpt (not states-epoch-N.ckpt)
    runner = {"runner": {"n_epochs": -1, "total_steps": 3, "gradient_clipping": 1.0e9, "gradient_accumulate_steps": 1,
                         "log_step": 2, "save_step": 2, "max_keep": 2, "fp16": False},
              "optimizer": {"name": "AdamW_with_schedule", "lr": 2e-3, "warmup_proportion": 0.05, "betas": [0.9, 0.98],
                            "eps": 1e-6, "weight_decay": 1e-6},
              "pretrain_expert": {"datarc": {"train_batch_size": 2, "num_workers": 0}}}
    (tmp_path / "runner.yaml").write_text(yaml.safe_dump(runner))
    exports = {}
    for recipe in ("armhubert", "starhubert"):
        (tmp_path / f"{recipe}.yaml").write_text(yaml.safe_dump(tiny_config(recipe, distill_data, total_steps=3)))
        run_s3prl_pretrain(s3prl_copy, tmp_path, ["-u", recipe, "-n", recipe, "-p", f"s3{recipe}",
                                                  "-g", f"{recipe}.yaml", "-c", "runner.yaml"])
        states = tmp_path / f"s3{recipe}" / "states-3.ckpt"
        saved = load_checkpoint(states, family="s3prl pre-training")  # pickles s3prl's optimizers.* schedule
        assert saved["Recipe"] == recipe and ("mask_emb" in saved["Model"]) == (recipe == "armhubert")
        exports[recipe] = export_cli(states, tmp_path / "export")
        assert exports[recipe].name == f"tiny-{recipe}.ckpt" and exports[recipe].with_suffix(".yaml").is_file()

    # MaskHuBERT through the standalone trainer
    train(tiny_config("maskhubert", distill_data, total_steps=2), tmp_path / "maskhubert")
    exports["maskhubert"] = tmp_path / "maskhubert" / "export" / "tiny-maskhubert.ckpt"

    # the three exports as upstreams in run_downstream.py (official form -k ckpt -g yaml, and _local -k)
    plan = []
    runs = {"armhubert": (exports["armhubert"], exports["armhubert"].with_suffix(".yaml")),
            "maskhubert_local": (exports["maskhubert"], None),
            "starhubert": (exports["starhubert"], exports["starhubert"].with_suffix(".yaml"))}
    for entry, (ckpt, config) in runs.items():
        plan += downstream_commands(entry, ckpt, config, superb_data, tmp_path / "downstream" / entry,
                                    tasks=("speech_commands",))
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    result = subprocess.run([sys.executable, str(E2E_RUNNER), str(tmp_path / "plan.json")], cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    for entry in runs:
        found = accuracies(tmp_path / "downstream" / entry / "speech_commands")
        assert found.get("test"), (entry, found)
    installer.uninstall(s3prl_copy, log=lambda *_: None)
    assert not (s3prl_copy / "pretrain" / "armhubert").exists()
