"""MelHuBERT pre-training on generated LibriSpeech-layout speech (tiny models, CPU).

The whole pipeline runs once per session through the package's own steps: bucket CSVs, fbank +
statistics, stage-1 k-means and labels, 10 stage-1 steps, stage-2 k-means and labels on a layer
of the exported stage-1 model, 10 stage-2 steps. The tests then check each product.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from s3prl_plugins.pretrain import prepare
from s3prl_plugins.pretrain.data import DataError
from s3prl_plugins.pretrain.kmeans import fit_kmeans, nearest_centroid, write_labels
from s3prl_plugins.pretrain.melhubert import (FbankLabelList, frame_labels, normalise, official_upstream_config,
                                              stack_frame_pairs)
from s3prl_plugins.pretrain.recipe import get_recipe
from s3prl_plugins.pretrain.trainer import Trainer

SETS = ["train-clean-100", "dev-clean", "test-clean"]
CLUSTERS = 16
TINY_MODEL = {"encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 2,
              "conv_pos": 8, "conv_pos_groups": 2, "num_cluster": CLUSTERS}
TINY_TRAIN = {"batch_size": 4, "accum_steps": 1, "total_steps": 10, "lr": 1e-3, "schedule": "constant",
              "weight_decay": 0.0, "betas": [0.9, 0.999], "clip_grad": 10.0, "num_workers": 0, "log_every": 1,
              "save_every": 100, "seed": 1, "device": "cpu"}


def tiny_config(labels_csv, stats, frame_period_ms: int = 20, **train) -> dict:
    return {"recipe": "melhubert", "model": {"feat_emb_dim": 4 * frame_period_ms, **TINY_MODEL},
            "data": {"sets": [str(labels_csv)], "stats": str(stats), "sequence_length": 200},
            "train": {**TINY_TRAIN, **train}}


def train(cfg: dict, out: Path, **kwargs) -> Trainer:
    trainer = Trainer(get_recipe("melhubert")(copy.deepcopy(cfg)), out, progress=False, **kwargs)
    trainer.fit()
    return trainer


@pytest.fixture(scope="session")
def melhubert_data(superb_data, tmp_path_factory) -> dict:
    """Bucket CSVs, fbank features + statistics, stage-1 centroids and labels."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("melhubert_data")
    libri = Path(superb_data["librispeech"]["root"])
    buckets = prepare.prepare_buckets(libri, out / "len_for_bucket", sets=SETS, workers=2, progress=False)
    features_csv = prepare.prepare_fbank(libri, out / "features", bucket_dir=out / "len_for_bucket", sets=SETS,
                                         batch_size=4, workers=2, progress=False)
    km1 = fit_kmeans(features_csv, out / "km_stage1.npy", clusters=CLUSTERS, percent=1.0, progress=False, n_init=3)
    labels1 = write_labels(features_csv, km1, out / "labels_stage1", progress=False)
    return {"libri": libri, "buckets": buckets, "features_csv": features_csv,
            "stats": features_csv.parent / "mean-std.npy", "km1": km1, "labels1": labels1, "root": out}


@pytest.fixture(scope="session")
def melhubert_runs(melhubert_data, tmp_path_factory) -> dict:
    """Stage 1 (10 steps), stage-2 labels from its export (layer 2), stage 2 (10 steps), 20 ms."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("melhubert_runs")
    data = melhubert_data
    stage1 = train(tiny_config(data["labels1"], data["stats"]), out / "stage1")
    ckpt1 = out / "stage1" / "export" / "melhubert_20ms-step10.ckpt"
    km2 = fit_kmeans(data["features_csv"], out / "km_stage2.npy", checkpoint=str(ckpt1), layer=2, clusters=CLUSTERS,
                     percent=1.0, progress=False, n_init=3)
    labels2 = write_labels(data["features_csv"], km2, out / "labels_stage2", progress=False)
    stage2 = train(tiny_config(labels2, data["stats"]), out / "stage2")
    return {"stage1": stage1, "stage2": stage2, "ckpt1": ckpt1, "km2": km2, "labels2": labels2,
            "export2": out / "stage2" / "export", "ckpt2": out / "stage2" / "export" / "melhubert_20ms-step10.ckpt"}


# ---------------------------------------------------------------------------------------------
# Data preparation
# ---------------------------------------------------------------------------------------------
def test_bucket_csvs_are_s3prl_layout(melhubert_data, superb_data):
    for path in melhubert_data["buckets"]:
        ours = list(csv.reader(open(path)))
        reference = list(csv.reader(open(Path(superb_data["librispeech"]["bucket_dir"]) / path.name)))
        assert ours[0] == ["", "file_path", "length", "label"]
        assert ours == reference  # the shared writer, lengths read from the files
    # resumable: an existing CSV is kept as is
    before = melhubert_data["buckets"][0].stat().st_mtime_ns
    prepare.prepare_buckets(melhubert_data["libri"], melhubert_data["root"] / "len_for_bucket", sets=SETS[:1],
                            progress=False)
    assert melhubert_data["buckets"][0].stat().st_mtime_ns == before


def test_fbank_statistics_are_mean_and_std_of_every_frame(melhubert_data):
    rows = list(csv.DictReader(open(melhubert_data["features_csv"])))
    assert len(rows) == 15 and [int(r["length"]) for r in rows] == sorted((int(r["length"]) for r in rows), reverse=True)
    frames = np.concatenate([np.load(melhubert_data["features_csv"].parent / r["file_path"]) for r in rows])
    assert frames.shape[1] == 40 and frames.dtype == np.float32
    stats = np.load(melhubert_data["stats"])
    assert stats.shape == (2, 40) and stats.dtype == np.float64  # the official libri-*-mean-std.npy layout
    np.testing.assert_allclose(stats[0], frames.astype(np.float64).mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats[1], frames.astype(np.float64).std(0), rtol=1e-6)


@pytest.mark.parametrize("frame_period_ms", [10, 20])
def test_training_features_equal_the_upstream_front_end(melhubert_data, frame_period_ms):
    """What the recipe trains on (fbank .npy -> stats -> pairs) is what melhubert_local computes
    from the waveform at inference."""
    from s3prl_plugins.pretrain.data import load_audio
    from s3prl_plugins.upstreams.melhubert.config import load_stats
    from s3prl_plugins.upstreams.melhubert.model import MelHuBERTFrontEnd

    stats = load_stats(str(melhubert_data["stats"]))
    front_end = MelHuBERTFrontEnd(frame_period_ms, stats)
    rows = list(csv.DictReader(open(melhubert_data["features_csv"])))
    for row in rows[:: 7]:
        wave = torch.from_numpy(load_audio(str(melhubert_data["libri"] / (row["key"] + ".flac"))))
        expected, frames = front_end(wave[None], torch.tensor([len(wave)]))
        ours = normalise(np.load(melhubert_data["features_csv"].parent / row["file_path"]), stats.mean, stats.std)
        if frame_period_ms == 20:
            ours = stack_frame_pairs(ours)
        assert ours.shape == expected[0].shape and int(frames) == ours.shape[0]
        assert (ours - expected[0]).abs().max() <= 1e-5


def test_stage1_kmeans_and_labels(melhubert_data):
    meta = json.loads(melhubert_data["km1"].with_suffix(".json").read_text())
    assert meta["source"] == "fbank" and meta["clusters"] == CLUSTERS and meta["dim"] == 40
    assert meta["kmeans"].startswith("sklearn") and meta["options"]["reassignment_ratio"] == 0.0
    centroids = torch.from_numpy(np.load(melhubert_data["km1"]))
    stats = np.load(melhubert_data["stats"])
    rows = list(csv.DictReader(open(melhubert_data["labels1"])))
    assert list(rows[0]) == ["file_path", "label_path", "length"]
    used = set()
    for row in rows:
        fbank = np.load(row["file_path"])
        labels = np.load(melhubert_data["labels1"].parent / row["label_path"])
        assert labels.dtype == np.int16 and labels.shape == (len(fbank),) == (int(row["length"]),)
        normalised = torch.from_numpy(((fbank - stats[0]) / stats[1]).astype(np.float32))
        assert np.array_equal(labels, nearest_centroid(normalised, centroids).numpy())
        used |= set(labels.tolist())
    assert len(used) > CLUSTERS // 2
    # resumable: existing label files are kept, the list rewritten identically
    before = open(melhubert_data["labels1"]).read()
    write_labels(melhubert_data["features_csv"], melhubert_data["km1"], melhubert_data["labels1"].parent, progress=False)
    assert open(melhubert_data["labels1"]).read() == before


# ---------------------------------------------------------------------------------------------
# Examples, batches and loss
# ---------------------------------------------------------------------------------------------
def _synthetic_list(tmp_path: Path, lengths: list[int]) -> tuple[Path, Path]:
    """Fbank whose frame t holds t in every bin, labels = t, stats mean 0 / std 1."""
    rows = []
    for n, length in enumerate(lengths):
        fbank = np.repeat(np.arange(length, dtype=np.float32)[:, None], 40, axis=1)
        np.save(tmp_path / f"f{n}.npy", fbank)
        np.save(tmp_path / f"l{n}.npy", np.arange(length, dtype=np.int32))
        rows.append([f"f{n}.npy", f"l{n}.npy", length])
    with open(tmp_path / "list.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_path", "label_path", "length"])
        writer.writerows(rows)
    np.save(tmp_path / "stats.npy", np.stack([np.zeros(40), np.ones(40)]))
    return tmp_path / "list.csv", tmp_path / "stats.npy"


@pytest.mark.parametrize("frame_period_ms", [10, 20])
def test_crops_keep_features_and_labels_aligned(tmp_path, frame_period_ms):
    listing, stats = _synthetic_list(tmp_path, [320, 321, 1001])
    cfg = tiny_config(listing, stats, frame_period_ms)
    cfg["model"]["num_cluster"] = 2048
    cfg["data"]["sequence_length"] = 120
    recipe = get_recipe("melhubert")(cfg)
    reader = recipe.build_reader()
    assert reader.lengths == [1001, 321]  # <= 320 frames (3.2 s) dropped, longest first
    for index in range(len(reader)):
        for seed in range(5):
            example = recipe.make_example(reader[index], np.random.default_rng(seed))
            features, labels, mask = example["features"], example["labels"], example["mask"]
            assert features.shape == (120, 4 * frame_period_ms) and labels.shape == mask.shape == (120,)
            start = int(labels[0]) // (frame_period_ms // 10)
            first_10ms = (start + torch.arange(120)) * (frame_period_ms // 10)
            assert torch.equal(labels, first_10ms)  # 20 ms: label of the first 10 ms frame of each pair
            assert torch.equal(features[:, 0], first_10ms.float())
            if frame_period_ms == 20:
                assert torch.equal(features[:, 40], first_10ms.float() + 1)
            # fairseq span masks: >= 2 spans of 5 frames, about 1 - (1 - 0.7 / 5) ** 5 of the frames
            assert mask.dtype == torch.bool and 10 <= int(mask.sum()) <= 110
            again = recipe.make_example(reader[index], np.random.default_rng(seed))
            assert all(torch.equal(example[k], again[k]) for k in example)


def test_already_normalised_features_are_taken_as_they_are(tmp_path):
    listing, _ = _synthetic_list(tmp_path, [400])
    np.save(tmp_path / "stats.npy", np.stack([np.full(40, 5.0), np.full(40, 2.0)]))
    cfg = tiny_config(listing, tmp_path / "stats.npy", 10)
    cfg["model"]["num_cluster"] = 2048
    cfg["data"]["sequence_length"] = 1500
    raw = get_recipe("melhubert")(cfg)
    cfg["data"]["features_normalised"] = True  # e.g. the official preprocess.sh features
    ready = get_recipe("melhubert")(cfg)
    item = raw.build_reader()[0]
    assert torch.equal(raw.make_example(item, np.random.default_rng(0))["features"][:, 0], (torch.arange(400.0) - 5) / 2)
    assert torch.equal(ready.make_example(item, np.random.default_rng(0))["features"][:, 0], torch.arange(400.0))


def test_odd_last_frame_gets_a_zero_partner_and_no_crop_for_short_utterances(tmp_path):
    listing, stats = _synthetic_list(tmp_path, [401])
    cfg = tiny_config(listing, stats, 20)
    cfg["model"]["num_cluster"] = 2048
    cfg["data"]["sequence_length"] = 750
    recipe = get_recipe("melhubert")(cfg)
    example = recipe.make_example(recipe.build_reader()[0], np.random.default_rng(0))
    features = example["features"]
    assert features.shape == (201, 80)
    assert torch.equal(features[-1, :40], torch.full((40,), 400.0)) and torch.equal(features[-1, 40:], torch.zeros(40))
    assert torch.equal(example["labels"], torch.arange(0, 401, 2))


def test_label_files_of_a_different_length_are_refused():
    with pytest.raises(DataError, match="labels for 500 fbank frames"):
        frame_labels(np.zeros(498), 500, 10, where="x.npy")
    assert len(frame_labels(np.zeros(251), 501, 20)) == 251  # labels already at 20 ms are accepted
    assert len(frame_labels(np.zeros(501), 501, 20)) == 251


def test_loss_is_cross_entropy_on_masked_valid_frames_with_zeroed_inputs(melhubert_data):
    from s3prl_plugins.upstreams.melhubert.model import MelHuBERTModel

    torch.manual_seed(0)
    recipe = get_recipe("melhubert")(tiny_config(melhubert_data["labels1"], melhubert_data["stats"]))
    reader = recipe.build_reader()
    recipe.data.sequence_length = 10_000  # no crop: three different lengths in one padded batch
    batch = recipe.collate([recipe.make_example(reader[i], np.random.default_rng(i)) for i in (0, 7, 14)])
    assert batch["padding_mask"].any() and not batch["padding_mask"][0].any()
    model = recipe.build_model().eval()
    loss, logs = recipe.compute_loss(model, batch)

    masked_input = batch["features"].clone()
    masked_input[batch["mask"]] = 0.0
    hidden = MelHuBERTModel.forward(model, masked_input, batch["padding_mask"])[-1]
    selected = batch["mask"] & ~batch["padding_mask"]
    expected = torch.nn.functional.cross_entropy(model.final_proj(hidden[selected]), batch["labels"][selected])
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    assert 0 <= float(logs["acc_masked"]) <= 1
    # labels of unmasked or padded frames play no part
    changed = dict(batch, labels=batch["labels"].masked_fill(~selected, 3))
    assert torch.equal(recipe.compute_loss(model, changed)[0], loss)
    # pred_nomask_weight > 0 (skip_nomask: False) adds the weighted mean over unmasked valid frames
    recipe.objective.pred_nomask_weight = 0.5
    scoring = recipe.build_model().eval()
    scoring.load_state_dict(model.state_dict())
    unmasked = ~batch["mask"] & ~batch["padding_mask"]
    expected_u = torch.nn.functional.cross_entropy(model.final_proj(hidden[unmasked]), batch["labels"][unmasked])
    both, logs = recipe.compute_loss(scoring, batch)
    torch.testing.assert_close(both, expected + 0.5 * expected_u, rtol=1e-6, atol=1e-6)
    assert "acc_unmasked" in logs


# ---------------------------------------------------------------------------------------------
# Training, stage 2, export
# ---------------------------------------------------------------------------------------------
def test_both_stages_train_and_the_loss_decreases(melhubert_runs):
    for stage in ("stage1", "stage2"):
        losses = [h["loss"] for h in melhubert_runs[stage].history]
        assert len(losses) == 10 and all(np.isfinite(losses))
        assert np.mean(losses[-3:]) < 0.97 * np.mean(losses[:3]), (stage, losses)


def test_stage2_labels_come_from_the_stage1_layer(melhubert_data, melhubert_runs):
    """Stage-2 labels = nearest centroid of layer 2 of the exported stage-1 model as
    melhubert_local computes it from the waveform; 20 ms labels repeated to 10 ms."""
    from s3prl_plugins.pretrain.data import load_audio
    from s3prl_plugins.upstreams.melhubert.upstream import build

    meta = json.loads(melhubert_runs["km2"].with_suffix(".json").read_text())
    assert meta["source"] == "layer" and meta["layer"] == 2 and meta["dim"] == 32 and meta["frame_period_ms"] == 20
    # normalised with the statistics the stage-1 model was trained with (its export's copy)
    assert meta["stats"] == str(melhubert_runs["ckpt1"].parent / "mean-std.npy")
    upstream = build("melhubert_local", melhubert_runs["ckpt1"], {"stats": str(melhubert_data["stats"])}).eval()
    centroids = torch.from_numpy(np.load(melhubert_runs["km2"]))
    features = {r["key"]: r for r in csv.DictReader(open(melhubert_data["features_csv"]))}
    agree = total = 0
    for row in list(csv.DictReader(open(melhubert_runs["labels2"])))[::4]:
        labels = np.load(melhubert_runs["labels2"].parent / row["label_path"])
        assert labels.shape == (int(row["length"]),)
        assert np.array_equal(labels[0::2][: len(labels) // 2], labels[1::2])  # pairs: one 20 ms label
        key = row["label_path"][: -len(".npy")]
        assert key in features
        wave = torch.from_numpy(load_audio(str(melhubert_data["libri"] / (key + ".flac"))))
        with torch.no_grad():
            hidden = upstream([wave])["hidden_states"][2][0]
            frames = upstream.frontend.num_frames_for(len(wave))
            expected = nearest_centroid(hidden[:frames], centroids).numpy()
        agree += int((labels[0::2] == expected).sum())
        total += len(expected)
    assert agree >= 0.99 * total  # float rounding may flip near ties


def test_export_is_the_official_runner_layout(melhubert_data, melhubert_runs):
    from s3prl_plugins.upstreams.common.checkpoint import load_checkpoint
    from s3prl_plugins.upstreams.melhubert.formats import read_melhubert_checkpoint

    folder = melhubert_runs["export2"]
    assert sorted(p.name for p in folder.iterdir()) == ["mean-std.npy", "melhubert_20ms-step10.ckpt",
                                                        "melhubert_20ms-step10.weights.pt", "melhubert_local.yaml"]
    state = load_checkpoint(melhubert_runs["ckpt2"], family="MelHuBERT")
    assert list(state) == ["Optimizer", "Step", "Args", "Runner", "model", "Upstream_Config"]
    assert isinstance(state["Args"], argparse.Namespace) and state["Args"].frame_period == 20
    assert state["Step"] == 10 and state["Runner"]["runner"]["gradient_clipping"] == 10.0
    assert state["Runner"]["datarc"]["max_timestep"] == -320
    section = state["Upstream_Config"]["melhubert"]
    assert len(section) == 29 and section["mask_prob"] == 0.7 and section["mask_before_proj"] is True
    assert section["skip_nomask"] is True and section["feat_emb_dim"] == 80
    model = melhubert_runs["stage2"].recipe.build_model()
    names = [n for n, _ in model.named_parameters()]
    assert list(state["model"]) == list(model.state_dict()) and "final_proj.weight" in state["model"]
    # Adam moments in model parameter order, one group: the official runner's optimizer loads it
    adam = state["Optimizer"]
    assert len(adam["param_groups"]) == 1 and adam["param_groups"][0]["weight_decay"] == 0
    assert sorted(adam["state"]) == list(range(len(names)))
    for i, name in enumerate(names):
        assert adam["state"][i]["exp_avg"].shape == state["model"][name].shape, name
    official_adam = torch.optim.Adam([torch.nn.Parameter(t.clone()) for t in state["model"].values()], lr=1e-4)
    official_adam.load_state_dict(adam)
    # weights-only export: plain tensors and values, same weights and architecture
    weights = torch.load(folder / "melhubert_20ms-step10.weights.pt", weights_only=True)
    assert weights["config"] == section
    a = read_melhubert_checkpoint(melhubert_runs["ckpt2"])
    b = read_melhubert_checkpoint(folder / "melhubert_20ms-step10.weights.pt")
    assert a.config == b.config and all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    # the statistics trained with travel with the model
    np.testing.assert_array_equal(np.load(folder / "mean-std.npy"), np.load(melhubert_data["stats"]))
    assert official_upstream_config(melhubert_runs["stage2"].recipe.model_cfg) == section


def test_export_loads_in_melhubert_local_and_matches_the_trained_model(melhubert_data, melhubert_runs):
    import s3prl_plugins.hub as hub

    folder = melhubert_runs["export2"]
    upstream = hub.melhubert_local(ckpt=str(melhubert_runs["ckpt2"]), model_config=str(folder / "melhubert_local.yaml"))
    upstream.eval()
    assert str(folder / "mean-std.npy") in upstream.frontend.stats_description
    trained = melhubert_runs["stage2"].recipe.build_model()
    trained.load_state_dict(torch.load(melhubert_runs["stage2"].paths.checkpoints / "step-000000010.pt",
                                       weights_only=True)["model"])
    trained.eval()
    wave = torch.randn(16000 * 2) * 0.1
    with torch.no_grad():
        out = upstream([wave])
        features, frames = upstream.frontend(wave[None], torch.tensor([len(wave)]))
        expected = trained(features, None)
    assert len(out["hidden_states"]) == 3
    for ours, ref in zip(out["hidden_states"], expected):
        torch.testing.assert_close(ours[0, : int(frames)], ref[0], rtol=1e-5, atol=1e-5)


def test_resume_is_exact(melhubert_data, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(melhubert_data["labels1"], melhubert_data["stats"], 10, total_steps=6, save_every=100)
    cfg["data"]["sequence_length"] = 150
    train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "split", stop_at=3)
    resumed = train(cfg, tmp_path / "split")
    assert resumed.history[0]["step"] == 4
    a = torch.load(tmp_path / "straight" / "checkpoints" / "step-000000006.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "step-000000006.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["config"]["recipe_state"]["stats"] == b["config"]["recipe_state"]["stats"]


def test_shipped_configs_hold_the_official_values():
    from s3prl_plugins.pretrain.config import load_yaml, shipped_config

    for name, fp, crop in (("melhubert_20ms", 20, 750), ("melhubert_10ms", 10, 1500),
                           ("melhubert_20ms_stage2", 20, 750), ("melhubert_10ms_stage2", 10, 1500)):
        recipe = get_recipe("melhubert")(load_yaml(shipped_config(name)))
        t, o, d, m = recipe.train, recipe.objective, recipe.data, recipe.model_cfg
        assert m.frame_period_ms == fp and m.encoder_layers == 12 and m.encoder_embed_dim == 768
        assert m.num_cluster == 512 and d.sequence_length == crop and d.min_length_frames == 320
        assert (o.mask_prob, o.mask_length, o.mask_selection, o.min_masks, o.no_mask_overlap) == (0.7, 5, "static", 2,
                                                                                               False)
        assert (o.pred_masked_weight, o.pred_nomask_weight) == (1.0, 0.0)
        assert (t.lr, t.schedule, t.weight_decay, tuple(t.betas), t.eps, t.clip_grad) == (1e-4, "constant", 0.0,
                                                                                        (0.9, 0.999), 1e-8, 10.0)
        assert (t.batch_size, t.accum_steps, t.epochs, t.seed, t.precision) == (4, 8, 200, 1337, "fp32")
        assert ("stage2" in name) == ("labels_stage2" in d.sets[0])


def test_prepare_cli_help_and_clear_errors(melhubert_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepare.main(["kmeans", "--help"])
    assert "MiniBatchKMeans" in capsys.readouterr().out
    assert prepare.main(["fbank", str(melhubert_data["libri"]), str(tmp_path / "f"), "--sets", "train-other-500",
                         "--bucket-dir", str(melhubert_data["root"] / "len_for_bucket")]) == 2
    assert "prepare buckets" in capsys.readouterr().err
    assert prepare.main(["kmeans", str(melhubert_data["features_csv"]), str(tmp_path / "km.npy"), "--layer", "3"]) == 2
    assert "--layer needs --checkpoint" in capsys.readouterr().err
    assert prepare.main(["labels", str(melhubert_data["features_csv"]), str(tmp_path / "none.npy"),
                         str(tmp_path / "l")]) == 2
    assert "prepare kmeans" in capsys.readouterr().err
    from s3prl_plugins.pretrain.config import ConfigError

    with pytest.raises(ConfigError, match="data.sets"):
        get_recipe("melhubert")({"model": {}, "data": {"stats": "libri960"}})


def test_reader_names_missing_columns(tmp_path):
    (tmp_path / "bad.csv").write_text("file_path,length\na.npy,400\n")
    with pytest.raises(DataError, match="label_path"):
        FbankLabelList([tmp_path / "bad.csv"])


def test_fbank_step_resumes_without_recomputing(melhubert_data):
    features_csv = melhubert_data["features_csv"]
    folder = features_csv.parent
    first = folder / list(csv.DictReader(open(features_csv)))[0]["file_path"]
    before = (first.stat().st_mtime_ns, features_csv.read_text(), np.load(folder / "mean-std.npy"))
    assert prepare.main(["fbank", str(melhubert_data["libri"]), str(folder), "--sets", ",".join(SETS),
                         "--bucket-dir", str(melhubert_data["root"] / "len_for_bucket")]) == 0
    assert first.stat().st_mtime_ns == before[0] and features_csv.read_text() == before[1]
    np.testing.assert_array_equal(np.load(folder / "mean-std.npy"), before[2])
