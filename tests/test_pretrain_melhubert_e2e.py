"""MelHuBERT pre-training end to end: torchrun DDP equivalence, s3prl's run_pretrain.py through the
installer, and the stage-2 export running in s3prl's run_downstream.py."""
from __future__ import annotations

import re

import pytest
import torch
import yaml

from s3prl_plugins import installer

from .helpers import (accuracies, assert_same_training_state, export_cli, run_downstream_e2e, run_s3prl_pretrain,
                      torchrun_pretrain)
from .test_pretrain_melhubert import melhubert_data, melhubert_runs, tiny_config, train  # noqa: F401  (fixtures)


def _step_losses(stdout: str) -> dict[int, float]:
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"\] step (\d+) loss=([0-9.eE+-]+)", stdout)}


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_one_process_with_double_batch(melhubert_data, tmp_path):
    """Crops and masks come from each sample's own generator and the loss is normalised by the
    masked-frame count of the global micro-batch, so 2 x batch 2 is 1 x batch 4 (up to float
    summation order, which Adam turns into differences of about lr x 1e-1). Dropout draws from
    each process's own torch generator (as in any DDP run), so it is off here."""
    torch.set_num_threads(1)
    cfg = tiny_config(melhubert_data["labels1"], melhubert_data["stats"], total_steps=3, lr=5e-5)
    cfg["model"].update(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    single = train(cfg, tmp_path / "single")
    cfg["train"]["batch_size"] = 2
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    printed = torchrun_pretrain("melhubert", tmp_path / "ddp.yaml", tmp_path / "ddp")
    # the logged loss (mean over processes) is the single-process loss of the same 4 utterances
    # (printed with 5 significant digits)
    ddp_losses = _step_losses(printed)
    for record in single.history:
        assert abs(ddp_losses[record["step"]] - record["loss"]) < 1e-4, (ddp_losses, single.history)
    trained = assert_same_training_state(tmp_path / "single", tmp_path / "ddp", step=3)
    from s3prl_plugins.pretrain.trainer import seed_everything

    seed_everything(cfg["train"]["seed"])  # the initial weights of both runs
    initial = single.recipe.build_model().state_dict()
    key = "encoder.layers.0.fc1.weight"
    assert (trained[key] - initial[key]).abs().max() > 5e-5  # the weights did move


@pytest.mark.slow
def test_run_pretrain_with_installed_melhubert_recipe(melhubert_data, s3prl_copy, tmp_path):
    installer.install(s3prl_copy, log=lambda *_: None)
    folder = s3prl_copy / "pretrain" / "melhubert"
    assert {"pretrain_expert.py", "config_model.yaml", "config_runner.yaml"} <= {p.name for p in folder.iterdir()}
    shipped_runner = yaml.safe_load((folder / "config_runner.yaml").read_text())
    assert shipped_runner["optimizer"]["torch_optim_name"] == "Adam" and "scheduler" not in shipped_runner
    model_cfg = tiny_config(melhubert_data["labels1"], melhubert_data["stats"])
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(model_cfg))
    runner = {"runner": {"n_epochs": -1, "total_steps": 4, "gradient_clipping": 10.0, "gradient_accumulate_steps": 2,
                         "log_step": 1, "save_step": 2, "max_keep": 2, "fp16": False},
              "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 1e-4, "betas": [0.9, 0.999],
                            "eps": 1e-8, "weight_decay": 0},
              "pretrain_expert": {"datarc": {"train_batch_size": 4, "num_workers": 0}}}
    (tmp_path / "runner.yaml").write_text(yaml.safe_dump(runner))
    run_s3prl_pretrain(s3prl_copy, tmp_path, ["-u", "melhubert", "-n", "tiny", "-p", "s3run", "-g", "model.yaml",
                                              "-c", "runner.yaml"])
    states = tmp_path / "s3run" / "states-4.ckpt"
    assert states.is_file()
    saved = torch.load(states, map_location="cpu", weights_only=False)
    assert saved["Upstream_Config"]["recipe_state"]["stats"]  # the statistics travel in the checkpoint

    checkpoint = export_cli(states, tmp_path / "export")
    assert checkpoint.name == "melhubert_20ms-step4.ckpt"
    official = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert list(official) == ["Optimizer", "Step", "Args", "Runner", "model", "Upstream_Config"]
    # s3prl's Adam (one group, model order) carried over with its moments
    assert len(official["Optimizer"]["state"]) == len(official["model"])
    for name, moments in zip(official["model"], official["Optimizer"]["state"].values()):
        assert moments["exp_avg"].shape == official["model"][name].shape
    for name, value in saved["Model"].items():
        assert torch.equal(official["model"][name], value)
    installer.uninstall(s3prl_copy, log=lambda *_: None)
    assert not (s3prl_copy / "pretrain" / "melhubert").exists()


@pytest.mark.slow
def test_stage2_export_runs_in_run_downstream(melhubert_runs, superb_data, tmp_path):
    folder = melhubert_runs["export2"]
    dirs = run_downstream_e2e("melhubert_local", melhubert_runs["ckpt2"], folder / "melhubert_local.yaml", superb_data,
                              tmp_path / "downstream", tasks=("speech_commands",))
    found = accuracies(dirs["speech_commands"])
    assert found.get("test"), found
