"""Pre-training stack and recipes on generated speech (tiny models, CPU).

Data: the shared generated LibriSpeech-layout corpus and noise clips, turned into training data
by the package's own preparation CLIs (log-mel lists, HuBERT-layer features from a tiny random
Hugging Face teacher, a labelled AudioSet-style list, tar shards).
"""
from __future__ import annotations

import copy
import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from s3prl_plugins.pretrain import prepare
from s3prl_plugins.pretrain.cli import main as cli_main
from s3prl_plugins.pretrain.config import ConfigError, CONFIG_DIR, load_yaml
from s3prl_plugins.pretrain.data import GlobalBatchSampler, TarShards
from s3prl_plugins.pretrain.recipe import get_recipe
from s3prl_plugins.pretrain.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]

TINY_M2D = {"embed_dim": 64, "depth": 2, "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1,
            "decoder_num_heads": 2}
TRAIN = {"batch_size": 4, "total_steps": 20, "lr": 1e-3, "warmup_steps": 2, "num_workers": 0, "log_every": 1,
         "save_every": 10, "seed": 1}


@pytest.fixture(scope="session")
def pretrain_data(superb_data, tmp_path_factory) -> dict:
    """Every data layout the recipes read, made with ``s3prl_plugins.pretrain.prepare``."""
    out = tmp_path_factory.mktemp("pretrain_data")
    libri = Path(superb_data["librispeech"]["root"])
    lms_csv = prepare.prepare_logmel(libri / "train-clean-100", out / "lms", workers=2, progress=False)
    noise_csv = prepare.prepare_logmel(superb_data["noise"]["root"], out / "noise_lms", workers=2, progress=False)

    import transformers

    torch.manual_seed(0)
    teacher_cfg = transformers.HubertConfig(hidden_size=32, num_hidden_layers=9, num_attention_heads=2,
                                            intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                                            num_conv_pos_embedding_groups=4)
    transformers.HubertModel(teacher_cfg).save_pretrained(out / "tiny_hubert")
    hybrid_csv = prepare.prepare_librispeech(libri, out / "ls_hybrid", out / "tiny_hubert",
                                             splits=["train-clean-100"], progress=False)

    # AudioSet-style segment list: the "YouTube id" is the first 11 characters of each file name
    ids = sorted({Path(r["file_name"]).name[:11] for r in csv.DictReader(open(lms_csv))})
    segments = out / "segments.csv"
    lines = ["# Segments csv", "# num_ytids", "# YTID, start_seconds, end_seconds, positive_labels"]
    mids = ["/m/09x0r", "/m/05zppz", "/m/03qc9zr", "/m/0jbk"]
    for i, ytid in enumerate(ids):
        lines.append(f'{ytid}, 0.000, 10.000, "{mids[i % 4]},{mids[(i + 1) % 4]}"')
    segments.write_text("\n".join(lines) + "\n")
    weighted_csv = prepare.prepare_audioset_list(lms_csv, [segments], out / "lms" / "files_as_weighted.csv")

    shards = prepare.prepare_shards(libri / "train-clean-100", out / "shards", per_shard=4, workers=2, progress=False)
    return {"lms_csv": lms_csv, "noise_csv": noise_csv, "hybrid_csv": hybrid_csv, "weighted_csv": weighted_csv,
            "shards": shards, "teacher": out / "tiny_hubert", "root": out}


def tiny_config(recipe: str, data: dict, **train) -> dict:
    if recipe == "m2d":
        cfg = {"model": {**TINY_M2D, "input_size": [80, 160], "patch_size": [16, 16]},
               "data": {"csv_main": str(data["lms_csv"]), "norm_stats_samples": 20}}
    elif recipe == "m2ds":
        cfg = {"model": {**TINY_M2D, "model_name": "m2d_s_vit_base", "input_size": [80, 100], "patch_size": [80, 2]},
               "objective": {"mask_ratio": 0.6, "loss_off": 0.5},
               "data": {"csv_main": str(data["hybrid_csv"]), "csv_bg_noise": str(data["noise_csv"]),
                        "noise_ratio": 0.2, "norm_stats_samples": 20}}
    elif recipe == "m2das":
        cfg = {"model": {**TINY_M2D, "model_name": "m2d_as_vit_base", "input_size": [80, 160], "patch_size": [16, 16]},
               "objective": {"loss_off": 1.0},
               "data": {"csv_main": str(data["weighted_csv"]), "norm_stats_samples": 20}}
    elif recipe == "m2dx":
        cfg = {"model": {**TINY_M2D, "model_name": "m2d_x_vit_base", "input_size": [80, 160], "patch_size": [16, 16]},
               "objective": {"loss_off": 1.0},
               "data": {"csv_main": str(data["lms_csv"]), "csv_bg_noise": str(data["noise_csv"]), "noise_ratio": 0.1,
                        "norm_stats_samples": 20}}
    elif recipe == "dasheng":
        cfg = {"model": {"embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_hidden_dim": 128, "decoder_embed_dim": 32,
                         "decoder_depth": 1, "decoder_num_heads": 2},
               "data": {"shards": [str(p) for p in data["shards"]], "crop_seconds": 2.0}}
    else:
        raise ValueError(recipe)
    cfg["recipe"] = recipe
    cfg["train"] = {**TRAIN, **train}
    return cfg


def first_rows_list(lms_csv: Path, count: int, out: Path) -> Path:
    """A log-mel list of the first ``count`` files of ``lms_csv`` with absolute paths (a validation list)."""
    root = Path(lms_csv).parent
    rows = list(csv.DictReader(open(lms_csv)))[:count]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("file_name\n" + "".join(f"{root / row['file_name']}\n" for row in rows))
    return out


def train(recipe: str, cfg: dict, out: Path, **kwargs) -> Trainer:
    trainer = Trainer(get_recipe(recipe)(copy.deepcopy(cfg)), out, progress=False, **kwargs)
    trainer.fit()
    return trainer


@pytest.fixture(scope="session")
def m2d_teacher(pretrain_data, tmp_path_factory) -> Path:
    """A tiny M2D trained for 2 steps, exported in the official layout (teacher / start for M2D-X)."""
    out = tmp_path_factory.mktemp("m2d_teacher")
    train("m2d", tiny_config("m2d", pretrain_data, total_steps=2), out)
    return next((out / "export").rglob("checkpoint-*.pth"))


@pytest.mark.parametrize("recipe", ["m2d", "m2ds", "m2das", "m2dx", "dasheng"])
def test_loss_decreases_over_20_steps(recipe, pretrain_data, tmp_path, request):
    torch.set_num_threads(1)
    cfg = tiny_config(recipe, pretrain_data)
    if recipe == "m2dx":
        teacher = request.getfixturevalue("m2d_teacher")
        cfg["data"]["teacher"] = str(teacher)
        cfg["model"]["init_checkpoint"] = str(teacher)  # further pre-training starts from the teacher
    trainer = train(recipe, cfg, tmp_path / "run")
    losses = [h["loss"] for h in trainer.history]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[:4]), losses
    if recipe in ("m2ds", "m2das", "m2dx"):  # both terms are trained
        assert trainer.history[-1]["loss_off"] < trainer.history[0]["loss_off"]
    exported = list((tmp_path / "run" / "export").rglob("*.p*"))
    assert len(exported) == 1
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def _params(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_resume_is_exact(pretrain_data, tmp_path):
    torch.set_num_threads(1)
    # two loader worker processes: crops, noise and masks must not depend on which worker made them
    cfg = tiny_config("m2ds", pretrain_data, total_steps=6, save_every=100, num_workers=2)
    train("m2ds", cfg, tmp_path / "straight")
    train("m2ds", cfg, tmp_path / "split", stop_at=3)  # "killed" after 3 steps (checkpoint written)
    assert [p.name for p in (tmp_path / "split" / "checkpoints").iterdir()] == ["step-000000003.pt"]
    resumed = train("m2ds", cfg, tmp_path / "split")  # resumes automatically from the run folder
    assert resumed.history[0]["step"] == 4
    a = _params(tmp_path / "straight" / "checkpoints" / "step-000000006.pt")
    b = _params(tmp_path / "split" / "checkpoints" / "step-000000006.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_checkpoints_keep_last_k_and_are_atomic(pretrain_data, tmp_path):
    cfg = tiny_config("m2d", pretrain_data, total_steps=6, save_every=1, keep_last=2)
    train("m2d", cfg, tmp_path / "run")
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-000000005.pt", "step-000000006.pt"]  # no temporary files left behind
    state = torch.load(tmp_path / "run" / "checkpoints" / names[-1], weights_only=True)  # plain values only
    assert {"model", "optimizer", "scheduler", "sampler", "rng", "config", "step"} <= set(state)
    assert state["config"]["recipe_state"]["norm_stats"]


def test_sampler_splits_global_batches_and_resumes():
    one = [b for b in GlobalBatchSampler(10, 4, seed=3)]
    ranks = [list(GlobalBatchSampler(10, 2, rank=r, world_size=2, seed=3)) for r in range(2)]
    for step, batch in enumerate(one):
        assert batch == ranks[0][step] + ranks[1][step]
    resumed = GlobalBatchSampler(10, 4, seed=3)
    resumed.set_position(0, 1)
    assert list(resumed) == one[1:]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        GlobalBatchSampler(3, 4)


def test_librispeech_bucket_reader(superb_data):
    from s3prl_plugins.pretrain.data import librispeech_list

    libri = superb_data["librispeech"]
    reader = librispeech_list(libri["root"], libri["bucket_dir"], ["train-clean-100", "dev-clean"])
    assert len(reader) == 12
    lengths = sorted(int(r["length"]) for r in csv.DictReader(open(Path(libri["bucket_dir"]) / "train-clean-100.csv")))
    limit = lengths[4]
    short = librispeech_list(libri["root"], libri["bucket_dir"], ["train-clean-100"], max_samples=limit)
    assert len(short) == 5 and all(len(short[i]["wave"]) <= limit for i in range(len(short)))


def test_tar_shards_read_every_member(pretrain_data, superb_data):
    reader = TarShards(pretrain_data["shards"])
    flacs = sorted((Path(superb_data["librispeech"]["root"]) / "train-clean-100").rglob("*.flac"))
    assert len(reader) == len(flacs)
    import soundfile

    expected = sorted(len(soundfile.read(str(f))[0]) for f in flacs)
    assert sorted(len(reader[i]["wave"]) for i in range(len(reader))) == expected


def test_prepared_data_layouts(pretrain_data):
    rows = list(csv.DictReader(open(pretrain_data["hybrid_csv"])))
    root = Path(pretrain_data["hybrid_csv"]).parent
    lms = np.load(root / rows[0]["file_name"])
    feats = np.load(root / rows[0]["target_file"])
    assert lms.shape[:2] == (1, 80) and lms.shape[2] >= 700  # padded to >= 7 s
    assert feats.shape[1] == 32 and abs(feats.shape[0] - lms.shape[2] // 2) <= 2  # 50 Hz vs 100 Hz
    weighted = list(csv.DictReader(open(pretrain_data["weighted_csv"])))
    assert {"file_name", "label", "weight"} <= set(weighted[0]) and float(weighted[0]["weight"]) > 0


def test_exported_m2d_checkpoints_load_in_m2d_local(pretrain_data, tmp_path):
    from s3prl_plugins import hub

    for recipe in ("m2ds", "m2das"):
        train(recipe, tiny_config(recipe, pretrain_data, total_steps=2), tmp_path / recipe)
        path = next((tmp_path / recipe / "export").rglob("checkpoint-*.pth"))
        name = "m2d_s_vit_base-80x100p80x2" if recipe == "m2ds" else "m2d_as_vit_base-80x160p16x16"
        assert path.parent.name.startswith(name + "-")
        payload = torch.load(path, weights_only=False)
        assert set(payload) == {"model", "optimizer", "epoch", "scaler", "args"}
        assert "offline_predictor.weight" in payload["model"] and "target_blocks.0.attn.qkv.weight" in payload["model"]
        upstream = hub.m2d_local(ckpt=str(path))
        out = upstream([torch.randn(16000), torch.randn(12000)])
        assert len(out["hidden_states"]) == 2
        rate = upstream.get_downsample_rates("hidden_states")
        assert out["hidden_states"][0].shape[1] == len(range(0, 16000, rate))


def test_exported_dasheng_loads_in_dasheng_local(pretrain_data, tmp_path):
    from s3prl_plugins import hub

    cfg = tiny_config("dasheng", pretrain_data, total_steps=3)
    trainer = train("dasheng", cfg, tmp_path / "run")
    path = next((tmp_path / "run" / "export").glob("*.pt"))
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"model", "config"}
    assert "init_bn.1.running_mean" in payload["model"] and "front_end.0.mel_scale.fb" in payload["model"]
    # the BatchNorm learned its statistics of the dB log-mel (negative) during pre-training
    assert int(payload["model"]["init_bn.1.num_batches_tracked"]) == 3
    assert payload["model"]["init_bn.1.running_mean"].mean() < -0.1
    upstream = hub.dasheng_local(ckpt=str(path)).eval()
    wave = torch.randn(16000)
    out = upstream([wave])
    assert out["hidden_states"][-1].shape == (1, 25, 64)
    assert trainer.history[-1]["step"] == 3


def test_config_errors_are_clear(pretrain_data, tmp_path):
    from s3prl_plugins.pretrain.config import apply_overrides

    # YAML 1.1 reads 1e-4 as a string: numbers are coerced, words are refused clearly
    cfg = apply_overrides(tiny_config("m2d", pretrain_data), ["train.lr=1e-4", "objective.mask_ratio=6e-1"])
    recipe = get_recipe("m2d")(cfg)
    assert recipe.train.lr == 1e-4 and recipe.objective.mask_ratio == 0.6
    with pytest.raises(ConfigError, match="train.lr must be a number"):
        get_recipe("m2d")(apply_overrides(cfg, ["train.lr=fast"]))
    cfg = tiny_config("m2d", pretrain_data)
    cfg["train"]["learning_rate"] = 1.0
    with pytest.raises(ConfigError, match="learning_rate.*Known keys"):
        get_recipe("m2d")(cfg)
    cfg = tiny_config("m2d", pretrain_data)
    cfg["objective"] = {"loss_off": 0.5}
    with pytest.raises(ConfigError, match="use m2ds, m2das or m2dx"):
        get_recipe("m2d")(cfg)
    with pytest.raises(ConfigError, match="unknown recipe 'hubert'"):
        get_recipe("hubert")
    cfg = tiny_config("m2ds", pretrain_data)
    cfg["model"]["patch_size"] = [16, 4]
    with pytest.raises(ConfigError, match="M2D-S needs patches"):
        get_recipe("m2ds")(cfg)
    # CLI: missing data file -> message naming the file, exit code 2, no traceback
    cfg = tiny_config("m2d", pretrain_data)
    cfg["data"]["csv_main"] = str(tmp_path / "missing.csv")
    import yaml

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    assert cli_main(["m2d", "--config", str(tmp_path / "bad.yaml"), "--output", str(tmp_path / "o")]) == 2


def test_shipped_configs_build_full_size_models():
    """Every shipped config is valid, and the M2D / Dasheng models have the official sizes
    (ViT-Base encoders; the MelHuBERT and distillation sizes are checked in their own tests)."""
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        config = load_yaml(path)
        recipe = get_recipe(config["recipe"])(config)
        if config["recipe"] not in ("m2d", "m2ds", "m2das", "m2dx", "dasheng"):
            continue
        if config["recipe"] == "dasheng" and recipe.model_cfg.embed_dim > 768:
            continue  # 0.6B / 1.2B: too large to build in CI
        recipe.state.update({"norm_stats": [-7.1, 4.2], "classes": [str(i) for i in range(527)],
                             "offline_dim": 3840 if config["recipe"] == "m2dx" else 768})
        if config["recipe"] == "m2dx":
            recipe.model_cfg.init_checkpoint = None  # the placeholder release path is not on the CI machine
        with torch.device("meta"):
            model = recipe.build_model()
        encoder = model.encoder if config["recipe"] == "dasheng" else model
        names = [n for n, _ in encoder.named_parameters()
                 if n.startswith(("blocks.", "patch_embed", "cls_token", "norm.", "time_pos", "freq_pos"))]
        count = sum(dict(encoder.named_parameters())[n].numel() for n in names)
        if config["recipe"] == "dasheng":
            assert count == 85_447_808 - 2 * 64  # the released base without the BatchNorm affine parameters
        else:
            assert 85_000_000 < count < 86_500_000, (path.name, count)
        if config["recipe"] == "m2das":
            assert model.offline_predictor.weight.shape == (527, 3840)
        if config["recipe"] == "m2dx":
            assert model.offline_predictor.weight.shape == (3840, 3840)


def test_cli_help_and_list():
    result = subprocess.run([sys.executable, "-m", "s3prl_plugins.pretrain", "--help"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0 and "torchrun --nproc_per_node=4" in result.stdout and "--loss_off" in result.stdout
    result = subprocess.run([sys.executable, "-m", "s3prl_plugins.pretrain", "list"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert "m2ds" in result.stdout and "dasheng_base" in result.stdout
    result = subprocess.run([sys.executable, "-m", "s3prl_plugins.pretrain.prepare", "--help"], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0 and "librispeech" in result.stdout


def test_learning_rate_schedules_and_ema_schedule():
    from s3prl_plugins.pretrain.optim import LinearSchedule, WarmupCosine

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    cosine = WarmupCosine(optimizer, 1.0, warmup=10, total=110, min_ratio=0.1)
    assert cosine.lr_at(0) == 0 and cosine.lr_at(5) == 0.5 and cosine.lr_at(10) == 1.0
    assert abs(cosine.lr_at(60) - 0.55) < 1e-9 and abs(cosine.lr_at(110) - 0.1) < 1e-9
    linear = WarmupCosine(optimizer, 1.0, warmup=0, total=100, shape="linear")
    assert abs(linear.lr_at(25) - 0.75) < 1e-9
    constant = WarmupCosine(optimizer, 1e-4, warmup=0, total=100, shape="constant")
    assert constant.lr_at(99) == 1e-4
    cosine.step()
    state = cosine.state_dict()
    again = WarmupCosine(optimizer, 1.0, warmup=10, total=110, min_ratio=0.1)
    again.load_state_dict(state)
    assert optimizer.param_groups[0]["lr"] == 0.1  # step 1 of 10 warm-up steps
    ema = LinearSchedule(0.99995, 0.99999, 1000)  # M2D: init + (final - init) * step / (total - 1)
    assert ema(0) == 0.99995 and abs(ema(999) - 0.99999) < 1e-12


def test_teacher_formats(pretrain_data, tmp_path):
    """Hugging Face folder and s3prl-converted HuBERT checkpoint: the same layer convention."""
    from dataclasses import asdict

    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    from s3prl_plugins.pretrain.teacher import TeacherError, load_teacher

    task = HubertPretrainingConfig(label_rate=50.0)
    cfg = HubertConfig(label_rate=50.0, encoder_layers=9, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                       encoder_attention_heads=2, conv_feature_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
                       conv_pos=16, conv_pos_groups=4, final_dim=16)
    symbols = [list(range(10))]
    state = {"task_cfg": asdict(task), "model_cfg": asdict(cfg), "model_weight": HubertModel(cfg, task, symbols).state_dict(),
             "dictionaries_symbols": symbols}
    torch.save(state, tmp_path / "hubert_tiny.pt")
    wave = torch.randn(1, 32000)
    for path in (pretrain_data["teacher"], tmp_path / "hubert_tiny.pt"):
        layers = load_teacher(path)(wave)
        assert len(layers) == 10 and layers[9].shape == (1, 99, 32), path
    with pytest.raises(TeacherError, match="nothing is downloaded"):
        load_teacher(tmp_path / "missing")


@pytest.mark.parametrize("recipe", ["m2ds", "dasheng"])
def test_bf16_autocast_keeps_losses_in_float32(recipe, pretrain_data, tmp_path, monkeypatch):
    """bf16 autocast (CPU here, GPU in real runs): the blocks run in bf16, the loss stays float32."""
    seen = {}
    cls = get_recipe(recipe)
    original = cls.compute_loss

    def spy(self, model, batch):
        if "hooked" not in seen:
            block = (model.encoder if recipe == "dasheng" else model).blocks[0]
            block.attn.qkv.register_forward_hook(lambda m, i, o: seen.update(qkv=o.dtype) and None)
            seen["hooked"] = True
        loss, logs = original(self, model, batch)
        seen.setdefault("loss", loss.dtype)
        return loss, logs

    monkeypatch.setattr(cls, "compute_loss", spy)
    trainer = train(recipe, tiny_config(recipe, pretrain_data, total_steps=3, precision="bf16"), tmp_path / "run")
    assert seen["qkv"] == torch.bfloat16 and seen["loss"] == torch.float32
    assert all(np.isfinite(h["loss"]) for h in trainer.history)


def _poisoned(recipe, bad_calls):
    """The recipe's loss, times NaN on the given calls (a batch that makes the gradient non-finite)."""
    real, calls = recipe.compute_loss, {"n": 0}

    def compute_loss(model, batch):
        calls["n"] += 1
        loss, logs = real(model, batch)
        return (loss * float("nan") if calls["n"] in bad_calls else loss), logs

    recipe.compute_loss = compute_loss
    return recipe


def test_a_non_finite_gradient_skips_that_update(pretrain_data, tmp_path):
    cfg = tiny_config("m2d", pretrain_data, total_steps=4, log_every=1, save_every=100)
    cfg["data"]["norm_stats"] = [-7.0, 3.5]
    trainer = Trainer(_poisoned(get_recipe("m2d")(copy.deepcopy(cfg)), {2}), tmp_path / "run", progress=False)
    trainer.fit()
    assert trainer.skipped_steps == 1 and trainer.consecutive_skips == 0
    assert [r["step"] for r in trainer.history] == [1, 3, 4]  # step 2 had no update and no loss to log
    assert trainer.history[-1]["skipped_steps"] == 1.0
    state = torch.load(next((tmp_path / "run" / "checkpoints").glob("step-*.pt")), weights_only=True)
    assert state["skipped_steps"] == (1, 0)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_consecutive_non_finite_gradients_stop_with_a_saved_state(pretrain_data, tmp_path):
    cfg = tiny_config("m2d", pretrain_data, total_steps=6, log_every=1, save_every=100, max_skipped_steps=2)
    cfg["data"]["norm_stats"] = [-7.0, 3.5]
    trainer = Trainer(_poisoned(get_recipe("m2d")(copy.deepcopy(cfg)), {2, 3, 4, 5, 6}), tmp_path / "run",
                      progress=False)
    with pytest.raises(FloatingPointError, match="2 consecutive steps up to step 3"):
        trainer.fit()
    saved = torch.load(tmp_path / "run" / "checkpoints" / "step-000000003.pt", weights_only=True)
    assert saved["step"] == 3 and saved["skipped_steps"] == (2, 2)


def test_dasheng_decays_every_parameter_and_its_cosine_outlasts_the_run():
    """The official trainer: one AdamW over model.parameters(); the cosine spans epoch_length x
    epochs iterations after the warm-up (ignite), so the run ends above min_lr_ratio x lr."""
    import dataclasses

    from s3prl_plugins.pretrain.optim import WarmupCosine, build_optimizer
    from s3prl_plugins.pretrain.recipe import Recipe

    recipe = get_recipe("dasheng")(load_yaml(CONFIG_DIR / "dasheng_base.yaml"))
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    cfg = dataclasses.replace(recipe.train, optimizer="adamw")  # the shipped adamw8bit needs bitsandbytes
    groups = build_optimizer(model, cfg, 1e-3, recipe.no_weight_decay).param_groups
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    assert len(decayed) == 4 and all(g["weight_decay"] == recipe.train.weight_decay for g in groups if g["params"])
    total, warmup = 10_000, 300  # 3 of 100 epochs, as shipped
    cosine = WarmupCosine(torch.optim.SGD(model.parameters(), lr=1.0), 1.0, warmup, total, 0.1,
                          decay_steps=recipe.decay_steps(total, warmup))
    expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (total - warmup) / total))
    assert abs(cosine.lr_at(total) - expected) < 1e-12 and 0.101 < expected < 0.103
    assert Recipe.decay_steps(recipe, total, warmup) is None  # every other recipe: the rest of the run


def test_m2d_statistics_are_the_official_draw(pretrain_data):
    """Files drawn with replacement (as np.random.randint), one random crop each, mean and the
    unbiased std (torch.std) of all their values."""
    from s3prl_plugins.pretrain.data import LogMelList, crop_or_pad, random_crop
    from s3prl_plugins.pretrain.m2d import M2DRecipe

    reader = LogMelList(str(pretrain_data["lms_csv"]), None)
    mean, std = M2DRecipe._stats_of(reader, 64, 30, seed=5)
    rng = np.random.default_rng(5)
    picks = rng.integers(0, len(reader), size=30)
    crops = []
    for index in picks:
        lms = np.asarray(reader[int(index)]["lms"], dtype=np.float64)
        crops.append(crop_or_pad(lms, random_crop(lms.shape[-1], 64, rng), 64))
    values = torch.from_numpy(np.stack(crops))
    assert mean == pytest.approx(float(values.mean()), rel=1e-12)
    assert std == pytest.approx(float(values.std()) + float(np.finfo(np.float32).eps), rel=1e-12)


def test_dasheng_mae_target_is_the_official_batch_wide_log_mel():
    """The MAE target (the upstream front end's log_mel_db, batch-wide floor) equals the official
    front end: torchaudio's MelSpectrogram then AmplitudeToDB(top_db=120) over the whole batch."""
    import torchaudio

    from s3prl_plugins.upstreams.dasheng.model import DashengFrontEnd

    wave = torch.randn(3, 16000, generator=torch.Generator().manual_seed(3)) * 0.1
    wave[0] *= 100  # a loud item sets the batch-wide floor (peak - 120 dB) above the quiet item's own range
    wave[1] *= 1e-4
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=512, hop_length=160,
                                               f_min=0.0, n_mels=64, center=True)
    expected = torchaudio.transforms.AmplitudeToDB(top_db=120)(mel(wave))
    got = DashengFrontEnd(64).log_mel_db(wave, per_utterance=False)
    assert got.shape == (3, 64, 101)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert float(got[1].min()) == pytest.approx(float(expected.amax()) - 120, abs=1e-3)
