"""Pre-training end to end: torchrun DDP equivalence, s3prl's run_pretrain.py through the installer,
and a pre-trained checkpoint running in s3prl's run_downstream.py."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from s3prl_plugins import installer

from .helpers import (accuracies, assert_same_training_state, export_cli, run_downstream_e2e,
                      run_installed_s3prl_pretrain, run_s3prl_pretrain, torchrun_pretrain)
from .test_pretrain import first_rows_list, pretrain_data, tiny_config, train  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_one_process_with_double_batch(pretrain_data, tmp_path):
    # small lr: float summation order differs between 1 and 2 processes and Adam's normalisation
    # turns that into parameter differences proportional to lr (about 6e-6 at lr 1e-4)
    cfg = tiny_config("m2d", pretrain_data, total_steps=3, batch_size=4, lr=5e-5, warmup_steps=0,
                      save_every=100, log_every=1, valid_every=3, keep_best=1)
    cfg["data"]["norm_stats"] = [-7.0, 3.5]
    cfg["data"]["valid"] = str(first_rows_list(pretrain_data["lms_csv"], 8, tmp_path / "valid.csv"))
    single = train("m2d", cfg, tmp_path / "single")
    cfg["train"]["batch_size"] = 2
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    printed = torchrun_pretrain("m2d", tmp_path / "ddp.yaml", tmp_path / "ddp")
    trained = assert_same_training_state(tmp_path / "single", tmp_path / "ddp", step=3)
    # the validation loss over the same 8 items, split 4 + 4 across the processes
    loss = float(re.search(r"step 3 validation: loss=(\S+?);", printed).group(1))
    assert loss == pytest.approx(single.valid_history[0]["loss"], rel=2e-4)
    assert [p.name for p in (tmp_path / "ddp" / "best").iterdir()] == ["step-000000003.pt"]
    from s3prl_plugins.pretrain.trainer import seed_everything

    seed_everything(cfg["train"]["seed"])  # the initial weights of both runs
    initial = single.recipe.build_model().state_dict()
    assert (trained["blocks.0.attn.qkv.weight"] - initial["blocks.0.attn.qkv.weight"]).abs().max() > 5e-5


@pytest.mark.slow
def test_run_pretrain_with_installed_m2d_recipe_then_downstream(pretrain_data, superb_data, s3prl_copy, tmp_path):
    installer.install(s3prl_copy, log=lambda *_: None)
    for name in ("m2d", "m2ds", "m2das", "m2dx", "dasheng"):
        folder = s3prl_copy / "pretrain" / name
        assert {"pretrain_expert.py", "config_model.yaml", "config_runner.yaml"} <= {p.name for p in folder.iterdir()}
    model_cfg = tiny_config("m2d", pretrain_data)
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(model_cfg))
    runner = {"runner": {"n_epochs": -1, "total_steps": 8, "gradient_clipping": 3.0, "gradient_accumulate_steps": 1,
                         "log_step": 4, "save_step": 4, "max_keep": 2, "fp16": False},
              "optimizer": {"name": "TorchOptim", "torch_optim_name": "AdamW", "lr": 1e-3, "betas": [0.9, 0.95],
                            "weight_decay": 0.05},
              "pretrain_expert": {"datarc": {"train_batch_size": 4, "num_workers": 0}}}
    (tmp_path / "runner.yaml").write_text(yaml.safe_dump(runner))
    # the wrapper (cd into the s3prl folder, absolute paths) running s3prl's own run_pretrain.py
    run_s3prl_pretrain(s3prl_copy, tmp_path, ["-u", "m2d", "-n", "tiny", "-p", "s3run", "-g", "model.yaml",
                                              "-c", "runner.yaml"])
    states = tmp_path / "s3run" / "states-8.ckpt"
    assert states.is_file()
    # -e resumes with the recipe config stored in the checkpoint (Upstream_Config): redo steps 5-8,
    # this time with the installed run_pretrain.py itself (weights-only loading of s3prl's
    # checkpoint through the installed compat block)
    first = torch.load(states, map_location="cpu", weights_only=False)
    states.unlink()
    run_installed_s3prl_pretrain(s3prl_copy, ["-e", str(tmp_path / "s3run" / "states-4.ckpt")])
    final = torch.load(states, map_location="cpu", weights_only=False)
    assert final["Step"] == first["Step"] == 7 and final["Updates"] == 8
    assert final["Upstream_Config"] == first["Upstream_Config"]  # same statistics, not recomputed

    checkpoint = export_cli(states, tmp_path / "export")
    assert checkpoint.parent.name.startswith("m2d_vit_base-80x160p16x16-") and checkpoint.name.startswith("checkpoint-")

    # the pre-trained model as an upstream in s3prl's downstream runner (generated KS data)
    dirs = run_downstream_e2e("m2d_local", checkpoint, None, superb_data, tmp_path / "downstream",
                              tasks=("speech_commands",))
    found = accuracies(dirs["speech_commands"])
    assert found.get("test"), found
    installer.uninstall(s3prl_copy, log=lambda *_: None)
    assert not (s3prl_copy / "pretrain" / "m2d").exists()


@pytest.mark.slow
def test_pretrained_dasheng_runs_in_run_downstream(pretrain_data, superb_data, tmp_path):
    train("dasheng", tiny_config("dasheng", pretrain_data, total_steps=4), tmp_path / "run")
    checkpoint = next((tmp_path / "run" / "export").glob("*.pt"))
    dirs = run_downstream_e2e("dasheng_local", checkpoint, None, superb_data, tmp_path / "downstream",
                              tasks=("speech_commands",))
    assert accuracies(dirs["speech_commands"]).get("test")
