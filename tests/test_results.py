"""Results table and Featurizer layer weights, on experiment folders of real s3prl runs."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest
import torch

from s3prl_plugins import results
from tests.helpers import accuracies, run_downstream_e2e

#: a tiny upstream whose 20-step KS and IC runs both reach a dev score > 0 (so dev-best.ckpt exists)
ENTRY = "dasheng_local"
_FOLDERS: dict[str, dict[str, Path]] = {}


def experiment_folders(data: dict, root: Path) -> dict[str, Path]:
    """KS and IC experiment folders (train + evaluate of dev-best), made once per test session and
    shared with test_submit.py."""
    if "runs" not in _FOLDERS:
        from s3prl_plugins.upstreams.dasheng import testing

        paths = testing.make_checkpoint(ENTRY, root / "ckpt")
        _FOLDERS["runs"] = run_downstream_e2e(ENTRY, paths["ckpt"], paths["model_config"], data, root / "exp")
    return _FOLDERS["runs"]


@pytest.fixture(scope="session")
def expdirs(superb_data, tmp_path_factory) -> dict[str, Path]:
    return experiment_folders(superb_data, tmp_path_factory.getbasetemp() / "superb_tools")


def test_table_of_real_runs(expdirs, tmp_path):
    root = expdirs["speech_commands"].parent
    experiments = {e.task: e for e in results.collect([root])}
    assert set(experiments) == {"speech_commands", "fluent_commands"}
    for task, e in experiments.items():
        logged = accuracies(expdirs[task])
        assert e.upstream == ENTRY and e.evaluated
        if max(logged["dev"]) > 0:
            assert e.best_dev is not None and e.best_dev[1] == max(logged["dev"])
        else:  # s3prl records a best dev score (and dev-best.ckpt) only above 0
            assert e.best_dev is None
        assert e.test_score == logged["test"][-1]  # the -m evaluate line
        assert e.scalars[f"{task}/test-acc"] == pytest.approx(e.test_score, abs=1e-6)

    markdown = results.write_markdown(list(experiments.values()))
    header = markdown.splitlines()[0]
    assert "IC acc" in header and "KS acc" in header
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {ENTRY}"))
    assert f"{experiments['speech_commands'].test_score:.4f}" in row

    out_md, out_csv = tmp_path / "table.md", tmp_path / "table.csv"
    assert results.main(["table", str(root), "-o", str(out_md), "--csv", str(out_csv)]) == 0
    assert out_md.read_text() == markdown
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert {r["task"] for r in rows} == {"speech_commands", "fluent_commands"}
    assert all(float(r["test"]) == experiments[r["task"]].test_score for r in rows)


def test_layer_weights_of_dev_best(expdirs, tmp_path, capsys):
    checkpoint = expdirs["fluent_commands"] / "dev-best.ckpt"
    if not checkpoint.exists():  # dev score never above 0: the run's last checkpoint holds the weights
        checkpoint = max(expdirs["fluent_commands"].glob("states-*.ckpt"), key=lambda p: int(p.stem.split("-")[-1]))
    weights = results.layer_weights(checkpoint)
    stored = torch.load(checkpoint, weights_only=False)["Featurizer"]["weights"]
    assert weights == pytest.approx(torch.softmax(stored, -1).tolist())
    assert math.isclose(sum(weights), 1.0, rel_tol=1e-6)
    assert max(weights) != min(weights)  # trained, no longer uniform

    plot = tmp_path / "weights.png"
    code = results.main(["layers", str(checkpoint), "-o", str(plot), "--csv", str(tmp_path / "w.csv")])
    captured = capsys.readouterr()
    assert captured.out.count("layer ") == len(weights)
    assert len((tmp_path / "w.csv").read_text().splitlines()) == len(weights) + 1
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert code == 1 and not plot.exists() and "matplotlib is not installed" in captured.err
    else:
        assert code == 0 and plot.stat().st_size > 0


def test_bad_inputs(tmp_path, capsys):
    with pytest.raises(results.ResultsError, match="no s3prl experiment folders"):
        results.collect([tmp_path])
    not_downstream = tmp_path / "model.ckpt"
    torch.save({"model": {}}, not_downstream)
    with pytest.raises(results.ResultsError, match="no 'Featurizer' entry"):
        results.layer_weights(not_downstream)
    assert results.main(["table", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_tasks_that_log_to_tensorboard_only(tmp_path):
    """ASR (like PR/SF/ASV) writes no log.log lines: its WER comes from the event files."""
    from tensorboardX import SummaryWriter

    expdir = tmp_path / "asr"
    expdir.mkdir()
    (expdir / "args_2026-01-01-00-00-00.yaml").write_text("mode: train\ndownstream: asr\nupstream: m2d_local\n")
    writer = SummaryWriter(str(expdir))
    for step, dev, test in [(100, 40.0, 41.0), (200, 30.0, 31.5), (300, 30.0, 29.0)]:
        writer.add_scalar("asr/dev-clean-wer", dev, step)
        writer.add_scalar("asr/test-clean-wer", test, step)
    writer.close()
    (experiment,) = results.collect([tmp_path])
    assert (experiment.metric, experiment.higher_is_better) == ("wer", False)
    assert experiment.best_dev == (200, 30.0)  # lower is better; the first best is kept, as s3prl does
    assert experiment.test_score == 31.5
    assert "| ASR wer |" in results.write_markdown([experiment]).splitlines()[0] + "|"


def test_rows_are_keyed_by_all_upstream_arguments(expdirs, tmp_path):
    """Two M2D releases are both checkpoint-300.pth: they stay two rows; a rerun with the same
    arguments shares a cell and says so (no score is silently dropped)."""
    import shutil

    import yaml

    source = expdirs["speech_commands"]
    folders = {}
    for name, ckpt in (("mr7", "/w/m2d_vit_base-80x608p16x16-mr7/checkpoint-300.pth"),
                       ("mr6", "/w/m2d_vit_base-80x608p16x16-mr6/checkpoint-300.pth"),
                       ("mr6_again", "/w/m2d_vit_base-80x608p16x16-mr6/checkpoint-300.pth")):
        folder = tmp_path / name
        shutil.copytree(source, folder)
        for args_file in folder.glob("args_*.yaml"):
            args = yaml.safe_load(args_file.read_text())
            args["upstream_ckpt"] = ckpt
            args_file.write_text(yaml.safe_dump(args))
        folders[name] = folder
    experiments = results.collect([tmp_path])
    header, rows = results.results_table(experiments)
    labels = [row[0] for row in rows]
    assert len(rows) == 2 and len(set(labels)) == 2
    assert any("mr7/checkpoint-300.pth" in label for label in labels)
    assert any("mr6/checkpoint-300.pth" in label for label in labels)
    mr6 = next(row for row in rows if "mr6" in row[0])
    assert mr6[1].count("/") == 1  # both reruns' scores are in the cell
    notes = results.shared_cells(experiments)
    assert len(notes) == 1 and str(folders["mr6"]) in notes[0] and str(folders["mr6_again"]) in notes[0]
    assert "Several experiments in one cell" in results.write_markdown(experiments)
