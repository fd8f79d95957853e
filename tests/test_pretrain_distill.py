"""Distillation recipes (armhubert, maskhubert, starhubert) on generated LibriSpeech-layout speech, CPU.

Teachers: tiny random HuBERT / WavLM saved in every accepted format (s3prl-converted HuBERT, as
s3prl's converter writes it from a fairseq file; s3prl's WavLM file; Hugging Face HubertModel and
WavLMModel folders). Students: 4-layer, 32-wide versions of the released architectures.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from s3prl_plugins.pretrain.config import load_yaml, CONFIG_DIR
from s3prl_plugins.pretrain.recipe import get_recipe
from s3prl_plugins.pretrain.trainer import Trainer
from s3prl_plugins.upstreams.armhubert.testing import tiny_distiller

from .helpers import assert_same_training_state, free_port, subprocess_env

LAYERS, DIM = 4, 32
#: which teacher format each recipe trains from (together: all four formats)
TEACHER_OF = {"armhubert": "s3prl_hubert", "armwavlm": "s3prl_wavlm", "maskhubert": "hf_hubert",
              "starhubert": "hf_wavlm"}
RECIPES = ("armhubert", "maskhubert", "starhubert")


def write_teachers(out: Path) -> dict[str, Path]:
    """A tiny random HuBERT and WavLM (LAYERS x DIM, HuBERT's CNN strides) in every teacher format."""
    import transformers
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    hf = dict(hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=2 * DIM,
              num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, conv_dim=(32,) * 7)
    transformers.HubertModel(transformers.HubertConfig(**hf)).save_pretrained(out / "hf_hubert")
    transformers.WavLMModel(transformers.WavLMConfig(**hf, num_buckets=16, max_bucket_distance=64)).save_pretrained(
        out / "hf_wavlm")
    cnn = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"
    task = HubertPretrainingConfig(label_rate=50.0)
    cfg = HubertConfig(label_rate=50.0, encoder_layers=LAYERS, encoder_embed_dim=DIM, encoder_ffn_embed_dim=2 * DIM,
                       encoder_attention_heads=2, conv_feature_layers=cnn, conv_pos=16, conv_pos_groups=4, final_dim=16)
    symbols = [list(range(10))]
    torch.save({"task_cfg": asdict(task), "model_cfg": asdict(cfg), "dictionaries_symbols": symbols,
                "model_weight": HubertModel(cfg, task, symbols).state_dict()}, out / "hubert_base_tiny.pt")
    wavlm_cfg = {"extractor_mode": "default", "encoder_layers": LAYERS, "encoder_embed_dim": DIM,
                 "encoder_ffn_embed_dim": 2 * DIM, "encoder_attention_heads": 2, "conv_feature_layers": cnn,
                 "conv_pos": 16, "conv_pos_groups": 4, "relative_position_embedding": True, "num_buckets": 16,
                 "max_distance": 64, "gru_rel_pos": True, "normalize": False, "mask_prob": 0.65}
    # the file name does not say "wavlm": the format is recognised from the weights
    torch.save({"cfg": wavlm_cfg, "model": WavLM(WavLMConfig(wavlm_cfg)).state_dict()}, out / "base_tiny.pt")
    return {"hf_hubert": out / "hf_hubert", "hf_wavlm": out / "hf_wavlm", "s3prl_hubert": out / "hubert_base_tiny.pt",
            "s3prl_wavlm": out / "base_tiny.pt"}


@pytest.fixture(scope="session")
def distill_data(superb_data, tmp_path_factory) -> dict:
    libri = superb_data["librispeech"]
    teachers = write_teachers(tmp_path_factory.mktemp("distill_teachers"))
    return {"libri_root": str(libri["root"]), "bucket_dir": str(libri["bucket_dir"]), "teachers": teachers}


def tiny_config(recipe: str, data: dict, *, dropout: bool = True, **train) -> dict:
    flavour = "star" if recipe == "starhubert" else "arm"
    distiller = tiny_distiller(flavour, reuse=recipe in ("armhubert", "armwavlm"), dim=DIM, heads=4, layers=LAYERS)
    if flavour == "arm":
        distiller["pred_head_final_dim"] = DIM  # the teacher's width
    if not dropout:  # dropout draws differ between 1 and 2 processes
        distiller.update(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0)
    cfg = {"recipe": recipe,
           "model": {"distiller": distiller, "release_name": f"tiny-{recipe}"},
           "data": {"libri_root": data["libri_root"], "bucket_dir": data["bucket_dir"], "train_sets": ["train-clean-100"],
                    "max_samples": 120000, "teacher": str(data["teachers"][TEACHER_OF[recipe]])},
           "train": {"batch_size": 2, "total_steps": 20, "lr": 2e-3, "warmup_steps": 2, "schedule": "linear",
                     "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.01, "clip_grad": None, "num_workers": 0,
                     "log_every": 1, "save_every": 10, "seed": 1, **train}}
    if flavour == "arm":
        cfg["objective"] = {"mask_prob": 0.4}
    return cfg


def train(cfg: dict, out: Path, **kwargs) -> Trainer:
    trainer = Trainer(get_recipe(cfg["recipe"])(copy.deepcopy(cfg)), out, progress=False, **kwargs)
    trainer.fit()
    return trainer


# ---------------------------------------------------------------------------------------------
# Shipped configs
# ---------------------------------------------------------------------------------------------
PUBLISHED = {
    "armhubert_960": 26_448_448, "armhubert_s_100": 22_394_080, "armhubert_s_960": 22_394_080,
    "armwavlm_s_100": 22_394_080, "armwavlm_s_960": 22_394_080, "maskhubert_960": 26_635_840,
    "starhubert_960": 22_308_592, "starhubert_100": 22_308_592, "starhubert_l_960": 26_630_752,
}
MILLIONS = {"armhubert_960": 26.45, "armhubert_s": 22.39, "armwavlm_s": 22.39, "maskhubert_960": 26.64,
            "starhubert_l": 26.63, "starhubert": 22.31}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_configs_build_the_published_students(name):
    from s3prl_plugins.upstreams.common.student.config import OFFICIAL_DISTILLER_FIELDS

    cfg = load_yaml(CONFIG_DIR / f"{name}.yaml")
    recipe = get_recipe(cfg["recipe"])(cfg)
    count = sum(p.numel() for p in recipe.build_model().parameters())
    published = next(v for k, v in MILLIONS.items() if name.startswith(k))
    assert count == PUBLISHED[name] and round(count / 1e6, 2) == published
    # the exported yaml holds only keys the official wrapper's config class accepts
    official = recipe.training_yaml()
    assert set(official["distiller"]) <= set(OFFICIAL_DISTILLER_FIELDS[recipe.official_model])
    assert official["model"] == recipe.official_model
    lr = {"armhubert": 5e-3, "maskhubert": 5e-4, "starhubert": 5e-4}[recipe.name]
    assert recipe.train.lr == lr and recipe.train.betas == (0.9, 0.98) and recipe.train.eps == 1e-6
    if recipe.name != "starhubert":
        assert recipe.objective.mask_prob == (0.4 if name.endswith("_100") else 0.8)
        assert recipe.layer_weights == [0.1] * 11 + [1.0]


# ---------------------------------------------------------------------------------------------
# Teacher and loss pieces
# ---------------------------------------------------------------------------------------------
def test_weight_decay_groups_follow_s3prl():
    """train.py's optimiser decays every parameter whose name lacks 'bias' (LayerNorm weights
    and mask_emb included); the M2D/Dasheng recipes keep timm's rule."""
    from s3prl_plugins.pretrain.optim import build_optimizer

    cfg = load_yaml(CONFIG_DIR / "armhubert_960.yaml")
    recipe = get_recipe(cfg["recipe"])(cfg)
    model = recipe.build_model()
    optimizer = build_optimizer(model, recipe.train, 1e-3, recipe.no_weight_decay)
    names = {id(p): n for n, p in model.named_parameters()}
    undecayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0.01 for p in g["params"]}
    assert undecayed and all("bias" in n for n in undecayed)
    assert "mask_emb" in decayed and "encoder.layer_norm.weight" in decayed
    assert len(undecayed) + len(decayed) == len(names)
    from s3prl_plugins.pretrain.recipe import Recipe

    assert Recipe.no_weight_decay(recipe, "blocks.0.norm1.weight", torch.zeros(4))  # timm's rule elsewhere
    assert not Recipe.no_weight_decay(recipe, "blocks.0.attn.qkv.weight", torch.zeros(4, 4))


def test_teacher_formats_padded_and_masked(distill_data, monkeypatch):
    """Every format: the 12-layer convention, padding masks, and masking at GIVEN frames, checked
    against the models' own masking code (s3prl: its apply_mask; Hugging Face: mask_time_indices)."""
    from s3prl_plugins.pretrain.teacher import load_teacher

    torch.manual_seed(0)
    wave = torch.randn(2, 16000)
    lengths = torch.tensor([16000, 11000])
    wave[1, 11000:] = 0
    for name, path in distill_data["teachers"].items():
        teacher = load_teacher(path, normalize=False)
        assert teacher.num_layers == LAYERS and teacher.dim == DIM, name
        assert ("wavlm" in name) == (type(teacher.inner).__name__ in ("WavLM", "WavLMModel")), name
        plain = teacher.encode(wave, lengths)
        assert len(plain.hidden_states) == LAYERS + 1 and plain.layers[-1].shape == (2, 49, DIM), name
        assert plain.padding_mask[0].sum() == 0 and plain.padding_mask[1].sum() > 0, name
        alone = teacher.encode(wave[:1])
        torch.testing.assert_close(alone.layers[-1][0], plain.layers[-1][0], atol=1e-4, rtol=1e-4)
        mask = torch.zeros(2, 49, dtype=torch.bool)
        mask[0, 5:15] = mask[1, 20:26] = True
        masked = teacher.encode(wave, lengths, mask)
        assert (masked.layers[-1] - plain.layers[-1]).abs().max() > 1e-3, name
        none_masked = teacher.encode(wave, lengths, torch.zeros_like(mask))
        torch.testing.assert_close(none_masked.layers[-1], plain.layers[-1])
        pair = teacher.encode_pair(wave, lengths, mask)  # one CNN pass, both encoder passes in one batch
        for got, want in zip(pair, (plain, masked)):
            torch.testing.assert_close(got.hidden_states, want.hidden_states, atol=1e-5, rtol=1e-5)
            assert torch.equal(got.padding_mask, want.padding_mask)
        if teacher.kind == "s3prl":  # the model's own masking path with the mask forced
            module = sys.modules[type(teacher.inner).__module__]
            monkeypatch.setattr(module, "compute_mask_indices", lambda *a, **k: mask.numpy())
            sample_pad = torch.arange(16000)[None] >= lengths[:, None]
            if "wavlm" in name:
                reference, _ = teacher.inner.extract_features(wave, padding_mask=sample_pad, mask=True)
            else:
                reference = teacher.inner(wave, padding_mask=sample_pad, mask=True, features_only=True)["x"]
            torch.testing.assert_close(masked.layers[-1], reference, atol=1e-5, rtol=1e-5)
        else:  # Hugging Face's own mask_time_indices path
            reference = teacher.inner(wave, attention_mask=(~(torch.arange(16000)[None] >= lengths[:, None])).long(),
                                      mask_time_indices=mask).last_hidden_state
            torch.testing.assert_close(masked.layers[-1], reference)


def _official_loss(pred, target, m_target, mask_indices, hint_weight=0.1, rec_weight=1.0):
    """train.py's calculate_loss (mse), transcribed with its boolean indexing."""
    batch, layers, frames, _ = target.shape
    mask_ = mask_indices.unsqueeze(1).repeat_interleave(layers - 1, dim=1)
    mse = torch.nn.functional.mse_loss
    mask_hint = mse(pred[:, :-1][mask_], target[:, :-1][mask_], reduction="none").mean(-1).sum() / batch / frames
    mask_rec = mse(pred[:, -1][mask_indices], target[:, -1][mask_indices], reduction="none").mean(-1).sum() / batch / frames
    unmask_hint = mse(pred[:, :-1][~mask_], m_target[:, :-1][~mask_], reduction="none").mean(-1).sum() / batch / frames
    unmask_rec = mse(pred[:, -1][~mask_indices], m_target[:, -1][~mask_indices], reduction="none").mean(-1).sum() / batch / frames
    parts = {"mask_hint_loss": mask_hint, "unmask_hint_loss": unmask_hint, "mask_rec_loss": mask_rec,
             "unmask_rec_loss": unmask_rec}
    return (mask_hint + unmask_hint) * hint_weight + (mask_rec + unmask_rec) * rec_weight, parts


def test_masking_loss_equals_the_official_formula():
    from s3prl_plugins.pretrain.distill import masking_distill_loss

    g = torch.Generator().manual_seed(0)
    pred, target, m_target = (torch.randn(3, 4, 17, 8, generator=g) for _ in range(3))
    mask = torch.rand(3, 17, generator=g) < 0.5
    loss, logs = masking_distill_loss(list(pred.unbind(1)), list(target.unbind(1)), list(m_target.unbind(1)), mask,
                                      [0.1, 0.1, 0.1, 1.0])
    official, parts = _official_loss(pred, target, m_target, mask)
    torch.testing.assert_close(loss, official)
    torch.testing.assert_close(logs, parts)  # logged before the weights, as train.py logs them


def test_require_same_masks_keeps_a_subset_of_the_smallest_count():
    from s3prl_plugins.pretrain.distill import equalize_masks
    from s3prl_plugins.pretrain.masking import span_mask

    rng = np.random.default_rng(0)
    rows = [span_mask(n, rng, mask_prob=0.8, mask_length=10, selection="uniform", min_masks=2, no_overlap=True,
                      min_space=1) for n in (120, 90, 100)]
    mask = torch.zeros(3, 120, dtype=torch.bool)
    rank = torch.zeros(3, 120, dtype=torch.long)
    for i, row in enumerate(rows):
        mask[i, : len(row)] = torch.from_numpy(row)
        rank[i, : len(row)] = torch.from_numpy(rng.permutation(len(row)))
    fewest = mask.sum(1).min()
    kept = equalize_masks(mask, rank, fewest)
    assert (kept.sum(1) == fewest).all() and not (kept & ~mask).any()
    assert torch.equal(kept[mask.sum(1).argmin()], mask[mask.sum(1).argmin()])


def test_star_zeroth_input_choices(distill_data):
    """H^0 of the first intra-layer Gram: the input of layer 1 (paper), the CNN features (the
    third-party choice, also as G^0 in the layer-wise term) or none."""
    from s3prl_plugins.pretrain.data import sample_rng

    losses = {}
    for zeroth, include in (("pre_trf", False), ("post_cnn", True), ("none", False)):
        cfg = tiny_config("starhubert", distill_data)
        cfg["objective"] = {"zeroth_input": zeroth, "layer_wise_include_input": include}
        recipe = get_recipe("starhubert")(cfg)
        reader = recipe.build_reader()
        torch.manual_seed(0)
        model = recipe.build_model().eval()
        batch = recipe.collate([recipe.make_example(reader[i], sample_rng(0, 0, i)) for i in range(2)])
        loss, logs = recipe.compute_loss(model, batch)
        loss.backward()
        assert torch.isfinite(loss) and model.encoder.layers[0].fc1.weight.grad is not None
        losses[zeroth] = float(loss)
    assert losses["none"] < losses["pre_trf"] and len(set(losses.values())) == 3, losses


def test_bad_configs_are_refused_clearly(distill_data, tmp_path):
    from s3prl_plugins.pretrain.config import ConfigError
    from s3prl_plugins.pretrain.teacher import TeacherError, load_teacher

    with pytest.raises(TeacherError, match="nothing is downloaded"):
        load_teacher(tmp_path / "hubert_base_ls960.pt")
    # a raw fairseq checkpoint needs fairseq for s3prl's converter: said so, with the alternatives
    raw = torch.load(distill_data["teachers"]["s3prl_hubert"], weights_only=False)
    torch.save({"cfg": {"model": raw["model_cfg"], "task": raw["task_cfg"]}, "model": raw["model_weight"]},
               tmp_path / "hubert_raw.pt")
    try:
        import fairseq  # noqa: F401
    except ImportError:
        with pytest.raises(TeacherError, match="needs fairseq"):
            load_teacher(tmp_path / "hubert_raw.pt")

    cfg = tiny_config("maskhubert", distill_data)
    cfg["model"]["distiller"]["reuse_pattern"] = str([True, False] * 2)
    with pytest.raises(ConfigError, match="without attention-map reuse"):
        get_recipe("maskhubert")(cfg)
    cfg = tiny_config("armhubert", distill_data)
    cfg["objective"]["hint_layers"] = [4]
    with pytest.raises(ConfigError, match="hint_layers"):
        get_recipe("armhubert")(cfg)
    cfg = tiny_config("armhubert", distill_data)
    cfg["model"]["distiller"]["init_encoder_layers"] = 2
    with pytest.raises(ConfigError, match="init_encoder_layers"):
        get_recipe("armhubert")(cfg)
    cfg = tiny_config("starhubert", distill_data)
    cfg["objective"] = {"distance": "cosine"}
    with pytest.raises(ConfigError, match="distance"):
        get_recipe("starhubert")(cfg)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["armhubert", "armwavlm", "maskhubert", "starhubert"])
def test_loss_decreases_over_20_steps_and_the_export_loads(recipe, distill_data, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(recipe, distill_data)
    cfg["model"]["export_teacher"] = recipe == "armhubert"  # the s3prl HuBERT teacher, as in the official files
    trainer = train(cfg, tmp_path / "run")
    losses = [h["loss"] for h in trainer.history]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
    if recipe != "starhubert":
        assert {"mask_rec_loss", "unmask_rec_loss", "mask_hint_loss"} <= set(trainer.history[-1])
    else:
        assert {"layer_wise", "intra_layer"} <= set(trainer.history[-1])

    # the export in the release layout loads through the family's entries (-k ckpt [-g yaml])
    from s3prl_plugins import hub

    ckpt = tmp_path / "run" / "export" / f"tiny-{recipe}.ckpt"
    config = ckpt.with_suffix(".yaml")
    official = yaml.safe_load(config.read_text())
    assert official["model"] == trainer.recipe.official_model and official["distiller"]["encoder_layers"] == LAYERS
    raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert raw["pytorch-lightning_version"] == "1.7.7" and raw["global_step"] == 20
    assert raw["hyper_parameters"]["cfg"]["distiller"] == official["distiller"]
    final = torch.load(tmp_path / "run" / "checkpoints" / "step-000000020.pt", weights_only=False)["model"]
    assert {k[len("student_model."):] for k in raw["state_dict"] if k.startswith("student_model.")} == set(final)
    teacher_keys = [k for k in raw["state_dict"] if k.startswith("teacher_model.model.")]
    assert (recipe == "armhubert") == ("teacher_model.model.mask_emb" in teacher_keys)
    if teacher_keys:  # the teacher first, then the student (module registration order of train.py)
        assert list(raw["state_dict"])[0].startswith("teacher_model.model.")
    entry = "starhubert" if recipe == "starhubert" else ("maskhubert" if recipe == "maskhubert" else "armhubert")
    wavs = [torch.randn(16000), torch.randn(9000)]
    outputs = []
    for name, kwargs in ((entry, {"ckpt": str(ckpt), "model_config": str(config)}),
                         (f"{entry}_local", {"ckpt": str(ckpt)})):
        upstream = getattr(hub, name)(**kwargs).eval()
        with torch.no_grad():
            outputs.append(upstream(wavs)["hidden_states"])
    assert len(outputs[0]) == LAYERS and outputs[0][0].shape == (2, 50, DIM)
    torch.testing.assert_close(outputs[0], outputs[1])
    # the upstream is the trained student (its layer outputs / heads on an unpadded input)
    student = trainer.recipe.build_model()
    student.load_state_dict(final)
    with torch.no_grad():
        expected = student.eval()(wavs[0][None], torch.tensor([16000]))["hidden_states"][-1]
        single = getattr(hub, entry)(ckpt=str(ckpt), model_config=str(config)).eval()([wavs[0]])["hidden_states"][-1]
    torch.testing.assert_close(single[:, : expected.shape[1]], expected)


@pytest.mark.parametrize("recipe", RECIPES)
def test_resume_continues_exactly(recipe, distill_data, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(recipe, distill_data, total_steps=6, save_every=3)
    straight = train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "resumed", stop_at=3)
    resumed = train(cfg, tmp_path / "resumed")
    assert [h["step"] for h in resumed.history] == [4, 5, 6]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history[3:]]
    a = torch.load(tmp_path / "straight" / "checkpoints" / "step-000000006.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "step-000000006.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


DDP_DRIVER = """
import copy, json, sys, torch
from s3prl_plugins.pretrain.distributed import setup_distributed
from s3prl_plugins.pretrain.recipe import get_recipe
from s3prl_plugins.pretrain.trainer import Trainer
torch.set_num_threads(1)
ctx = setup_distributed("cpu")
for cfg, out in json.load(open(sys.argv[1])):
    Trainer(get_recipe(cfg["recipe"])(copy.deepcopy(cfg)), out, progress=False, ctx=ctx).fit()
torch.distributed.destroy_process_group()
"""


def test_ddp_two_gloo_processes_equal_one_process_with_double_batch(distill_data, tmp_path):
    """Masks, mask-count equalisation, padding and the B*T normaliser do not depend on the split."""
    torch.set_num_threads(1)
    jobs, singles = [], {}
    for recipe in RECIPES:
        cfg = tiny_config(recipe, distill_data, dropout=False, total_steps=3, lr=5e-5, warmup_steps=0, save_every=100,
                          batch_size=4)
        singles[recipe] = train(cfg, tmp_path / f"single-{recipe}")
        ddp = copy.deepcopy(cfg)
        ddp["train"]["batch_size"] = 2
        jobs.append([ddp, str(tmp_path / f"ddp-{recipe}")])
    # starhubert through the user's command (torchrun -m s3prl_plugins.pretrain), the other two in one
    # torchrun of a small driver (one process-group start for both)
    star_cfg, star_out = jobs.pop()
    (tmp_path / "star.yaml").write_text(yaml.safe_dump(star_cfg))
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "driver.py").write_text(DDP_DRIVER)
    env = subprocess_env()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    printed = ""
    for command in ([*torchrun, f"--master_port={free_port()}", str(tmp_path / "driver.py"), str(tmp_path / "jobs.json")],
                    [*torchrun, f"--master_port={free_port()}", "-m", "s3prl_plugins.pretrain", "starhubert", "--config",
                     str(tmp_path / "star.yaml"), "--output", star_out, "--no-progress"]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        printed += result.stdout
    assert printed.count("2 process(es) x batch 2 x accumulation 1 = effective batch 4") == len(RECIPES)
    for recipe in RECIPES:
        trained = assert_same_training_state(tmp_path / f"single-{recipe}", tmp_path / f"ddp-{recipe}", step=3)
        # the runs did train (the comparison is not between untouched initial weights)
        initial = singles[recipe].recipe
        torch.manual_seed(1)
        start = initial.build_model().state_dict()
        moved = max((trained[k] - start[k]).abs().max() for k in start if k.endswith("fc1.weight"))
        assert moved > 5e-5, recipe


def test_distillation_validates_without_masking(distill_data, tmp_path):
    """The official validation_step: student and teacher on unmasked input."""
    cfg = tiny_config("armhubert", distill_data, total_steps=2, save_every=100)
    cfg["data"]["valid"] = ["dev-clean"]
    cfg["train"]["valid_every"] = 2
    trainer = Trainer(get_recipe("armhubert")(copy.deepcopy(cfg)), tmp_path / "run", progress=False)
    trainer.fit()
    (values,) = trainer.valid_history
    assert values["mask_hint_loss"] == 0.0 and values["mask_rec_loss"] == 0.0
    assert values["loss"] == pytest.approx(0.1 * values["unmask_hint_loss"] + values["unmask_rec_loss"], rel=1e-6)
