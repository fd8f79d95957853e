"""Validation during pre-training: losses on data.valid, the best K states, their average, the
on_save command, resume with the bookkeeping, and the errors of a wrong setting."""
from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from s3prl_plugins.pretrain.cli import main as cli_main
from s3prl_plugins.pretrain.config import ConfigError
from s3prl_plugins.pretrain.data import sample_rng
from s3prl_plugins.pretrain.recipe import get_recipe
from s3prl_plugins.pretrain.trainer import Trainer
from s3prl_plugins.pretrain.validation import (VALID_EPOCH, BestCheckpoints, ValidationSampler,
                                               average_state_dicts)
from s3prl_plugins.upstreams.common.checkpoint import CheckpointError

from .helpers import accuracies, subprocess_env
from .test_pretrain import first_rows_list, pretrain_data, tiny_config  # noqa: F401  (fixture)


def _train(recipe: str, cfg: dict, out: Path, **kwargs) -> Trainer:
    trainer = Trainer(get_recipe(recipe)(copy.deepcopy(cfg)), out, progress=False, **kwargs)
    trainer.fit()
    return trainer


@pytest.fixture(scope="module")
def valid_csv(pretrain_data, tmp_path_factory) -> Path:
    """Eight log-mel files as a validation list."""
    return first_rows_list(pretrain_data["lms_csv"], 8, tmp_path_factory.mktemp("valid") / "valid.csv")


def _m2d_config(data, valid_csv, **train):
    cfg = tiny_config("m2d", data, total_steps=6, save_every=100, log_every=1, **train)
    cfg["data"]["norm_stats"] = [-7.0, 3.5]
    cfg["data"]["valid"] = str(valid_csv)
    cfg["train"].update(valid_every=2, valid_batch_size=3, keep_best=2, export_best="best")
    return cfg


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_validation_logs_keeps_the_best_and_resumes_with_its_bookkeeping(pretrain_data, valid_csv, tmp_path):
    torch.set_num_threads(1)
    cfg = _m2d_config(pretrain_data, valid_csv)
    straight = _train("m2d", cfg, tmp_path / "straight")
    steps = [h["step"] for h in straight.valid_history]
    assert steps == [2, 4, 6] and all(np.isfinite(h["loss"]) for h in straight.valid_history)

    # the value is the recipe's loss in eval mode over every item (3 + 3 + 2 per batch, item-weighted)
    recipe = get_recipe("m2d")(copy.deepcopy(cfg))
    state = torch.load(tmp_path / "straight" / "checkpoints" / "step-000000006.pt", weights_only=True)
    recipe.state.update(state["config"]["recipe_state"])
    recipe.build_reader()
    reader = recipe.build_valid_reader()
    examples = [recipe.make_valid_example(reader[i], sample_rng(cfg["train"]["seed"], VALID_EPOCH, i))
                for i in range(len(reader))]
    model = recipe.build_model()
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        loss, _ = recipe.compute_valid_loss(model, recipe.collate(examples))
    assert float(loss) == pytest.approx(straight.valid_history[-1]["loss"], rel=1e-5)

    # the 2 best by the lowest loss, as files with their values
    ranked = sorted(straight.valid_history, key=lambda h: (h["loss"], h["step"]))[:2]
    best = sorted((tmp_path / "straight" / "best").glob("step-*.pt"))
    assert [p.name for p in best] == sorted(f"step-{h['step']:09d}.pt" for h in ranked)
    for path in best:
        saved = torch.load(path, weights_only=True)
        match = next(h for h in straight.valid_history if h["step"] == saved["step"])
        assert saved["value"] == match["loss"] and saved["metric"] == "loss" and saved["kind"] == "best"
    assert list((tmp_path / "straight" / "export" / "best").rglob("checkpoint-*.pth"))

    # TensorBoard has the validation curve
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "straight" / "tensorboard"))
    events.Reload()
    curve = events.Scalars("valid/loss")
    assert [e.step for e in curve] == [2, 4, 6]
    assert [e.value for e in curve] == pytest.approx([h["loss"] for h in straight.valid_history], rel=1e-6)

    # validating never changes the training: the same weights as a run without validation
    plain_cfg = copy.deepcopy(cfg)
    del plain_cfg["data"]["valid"]
    for key in ("valid_every", "valid_batch_size", "keep_best", "export_best"):
        del plain_cfg["train"][key]
    _train("m2d", plain_cfg, tmp_path / "plain")
    a, b = _weights(tmp_path / "straight" / "checkpoints" / "step-000000006.pt"), \
        _weights(tmp_path / "plain" / "checkpoints" / "step-000000006.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # killed at step 3, resumed: the same validations, the same best files, the same bookkeeping
    _train("m2d", cfg, tmp_path / "split", stop_at=3)
    first = torch.load(tmp_path / "split" / "checkpoints" / "step-000000003.pt", weights_only=True)["best"]
    assert [e["step"] for e in first["entries"]] == [2]
    (tmp_path / "split" / "best" / "step-000000005.pt").write_bytes(b"written after the checkpoint")
    resumed = _train("m2d", cfg, tmp_path / "split")
    assert [h["step"] for h in resumed.valid_history] == [4, 6]
    assert [h["loss"] for h in resumed.valid_history] == [h["loss"] for h in straight.valid_history[1:]]
    assert sorted(p.name for p in (tmp_path / "split" / "best").iterdir()) == [p.name for p in best]
    for path in best:
        x, y = _weights(path), _weights(tmp_path / "split" / "best" / path.name)
        assert all(torch.equal(x[k], y[k]) for k in x)
    final = torch.load(tmp_path / "split" / "checkpoints" / "step-000000006.pt", weights_only=True)["best"]
    assert final == torch.load(tmp_path / "straight" / "checkpoints" / "step-000000006.pt", weights_only=True)["best"]

    # a best state holds weights only: it exports, but does not resume
    with pytest.raises(CheckpointError, match="weights only"):
        _train("m2d", cfg, tmp_path / "other", resume=str(best[0]))
    assert cli_main(["export", str(best[0]), "--output", str(tmp_path / "exported")]) == 0


def test_dasheng_exports_the_average_of_the_best_states(pretrain_data, tmp_path, capsys):
    torch.set_num_threads(1)
    cfg = tiny_config("dasheng", pretrain_data, total_steps=3, save_every=100, log_every=1)
    cfg["data"]["valid"] = [str(pretrain_data["shards"][0])]
    cfg["train"].update(valid_every=1, keep_best=2, export_best="average")
    trainer = _train("dasheng", cfg, tmp_path / "run")
    assert [h["step"] for h in trainer.valid_history] == [1, 2, 3]
    best = sorted(trainer.valid_history, key=lambda h: (h["loss"], h["step"]))[:2]
    states = [_weights(tmp_path / "run" / "best" / f"step-{h['step']:09d}.pt") for h in best]
    # Dasheng's average_models: summed worst first, divided by the count
    expected = {k: (states[1][k].clone() + states[0][k]) / 2.0 for k in states[0] if states[0][k].is_floating_point()}

    from s3prl_plugins.upstreams.dasheng.formats import to_official_keys

    recipe = get_recipe("dasheng")(copy.deepcopy(cfg))
    model = recipe.build_model()
    model.load_state_dict({**states[0], **expected})
    want = to_official_keys(model.encoder.state_dict())
    exported = next((tmp_path / "run" / "export" / "average_best").glob("*.pt"))
    got = torch.load(exported, weights_only=True)["model"]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)

    # the same from the command line, and the file is what dasheng_local reads
    assert cli_main(["export", str(tmp_path / "run"), "--average-best", "--output", str(tmp_path / "cli")]) == 0
    again = torch.load(next((tmp_path / "cli" / "average_best").glob("*.pt")), weights_only=True)["model"]
    assert all(torch.equal(again[k], want[k]) for k in want)
    from s3prl_plugins import hub

    upstream = hub.dasheng_local(ckpt=str(exported)).eval()
    with torch.no_grad():
        hidden = upstream([torch.randn(16000)])["hidden_states"]
    assert len(hidden) == 3 and torch.isfinite(hidden[-1]).all()


def test_the_on_save_command_gets_each_export_and_its_output_is_kept(pretrain_data, tmp_path, capsys):
    cfg = tiny_config("m2d", pretrain_data, total_steps=2, save_every=1, log_every=1)
    cfg["data"]["norm_stats"] = [-7.0, 3.5]
    script = "import os, sys; print('export', sys.argv[2], os.path.getsize(sys.argv[1]))"
    cfg["train"]["on_save"] = f'{sys.executable} -c "{script}" {{export}} {{step}}'
    _train("m2d", cfg, tmp_path / "run")
    for step in (1, 2):
        log = (tmp_path / "run" / "on_save" / f"step-{step:09d}.log").read_text().splitlines()
        assert log[-1].startswith(f"export {step} ") and int(log[-1].split()[-1]) > 10_000
    out = capsys.readouterr().out
    assert "on_save command of step 2 exited with 0" in out


def test_validation_settings_that_cannot_work_are_refused(pretrain_data, valid_csv, tmp_path):
    cfg = tiny_config("m2d", pretrain_data, total_steps=2, keep_best=2)
    with pytest.raises(ConfigError, match="data.valid"):
        _train("m2d", cfg, tmp_path / "a")
    with pytest.raises(ConfigError, match="keep_best >= 1"):
        get_recipe("m2d")(tiny_config("m2d", pretrain_data, export_best="average"))
    with pytest.raises(ConfigError, match="unknown or malformed placeholder"):
        get_recipe("m2d")(tiny_config("m2d", pretrain_data, on_save="eval.sh {weights}"))
    with pytest.raises(ConfigError, match="at most one of train.valid_every"):
        get_recipe("m2d")(tiny_config("m2d", pretrain_data, valid_every=2, valid_every_epochs=1))
    cfg = _m2d_config(pretrain_data, valid_csv, best_metric="accuracy")
    with pytest.raises(ConfigError, match="'accuracy' is not among this recipe's validation values \\(loss\\)"):
        _train("m2d", cfg, tmp_path / "b")


def test_validation_sampler_gives_every_process_the_same_batches():
    one = ValidationSampler(7, 3)
    assert [[k[0] for k in b] for b in one] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(k[2] == VALID_EPOCH and k[3] == k[0] for b in one for k in b)
    ranks = [list(ValidationSampler(7, 2, rank=r, world_size=2)) for r in range(2)]
    assert [len(b) for b in ranks[0]] == [len(b) for b in ranks[1]] == [2, 2]
    covered = sorted(k[0] for r in ranks for b in r for k in b)
    assert covered == [0, 0, 1, 2, 3, 4, 5, 6]  # one item repeated to fill the last global batch
    by_length = ValidationSampler(4, 4, lengths=[5, 9, 1, 9])
    assert [k[0] for k in next(iter(by_length))] == [1, 3, 0, 2]


def test_best_bookkeeping_deletes_only_after_a_checkpoint_and_survives_a_kill(tmp_path):
    best = BestCheckpoints(tmp_path, keep=2, metric="loss", mode="min")
    for step, value in ((1, 3.0), (2, 2.0), (3, 2.5)):
        best.offer(step, value, {"step": step})
    assert [e.step for e in best.ranked()] == [2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000001.pt", "step-000000002.pt",
                                                          "step-000000003.pt"]  # 1 still named by the last checkpoint
    saved = best.state_dict()
    best.prune()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000002.pt", "step-000000003.pt"]
    assert not best.offer(4, 2.7, {"step": 4}) and best.offer(5, float("-1"), {"step": 5})
    # killed now; the run resumes from the checkpoint that holds `saved`
    again = BestCheckpoints(tmp_path, keep=2, metric="loss", mode="min")
    assert again.load_state_dict(saved) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000002.pt", "step-000000003.pt"]
    (tmp_path / "step-000000003.pt").unlink()
    warnings = BestCheckpoints(tmp_path, keep=2, metric="loss", mode="min").load_state_dict(saved)
    assert "step-000000003.pt are missing" in warnings[0]
    higher = BestCheckpoints(tmp_path / "max", keep=1, metric="acc", mode="max")
    higher.offer(1, 0.5, {})
    higher.offer(2, 0.7, {})
    assert [e.step for e in higher.ranked()] == [2]


def test_average_state_dicts_is_the_official_mean():
    best = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    worse = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    out = average_state_dicts([best, worse])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 3  # the counter of the best
    with pytest.raises(ValueError, match="different parameter names"):
        average_state_dicts([best, {"v": torch.zeros(2)}])


@pytest.mark.slow
def test_the_readme_cpu_run_works_as_written(tmp_path):
    """pretrain/README.md's CPU run, command for command: data, shards, a tiny Dasheng with
    validation and the averaged best states, then that export in s3prl's run_downstream.py."""
    text = (Path(__file__).resolve().parents[1] / "pretrain" / "README.md").read_text()
    block = re.search(r"<!-- cpu-smoke -->\n```bash\n(.*?)```\n<!-- /cpu-smoke -->", text, re.S).group(1)
    bin_dir = str(Path(sys.executable).parent)  # `python` is this environment's
    env = subprocess_env(PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", "")]))
    result = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "exported the average of the best 2 validated states" in result.stdout
    assert len(list((tmp_path / "runs" / "dasheng_cpu" / "best").glob("step-*.pt"))) == 2
    found = accuracies(tmp_path / "result" / "downstream" / "ks_dasheng_cpu")
    assert len(found["dev"]) == 2 and len(found["test"]) == 2
