"""One codec per official checkpoint format: what a family's writer writes, its reader reads back
unchanged (configuration and every tensor), for every format of every family."""
from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch

from s3prl_plugins.upstreams.common.checkpoint import load_checkpoint


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------------------------
# M2D: full, encoder-only, EVAR, CLAP 2025, release zip
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["full", "encoder_only", "evar", "clap2025", "release_zip"])
def test_m2d_formats_round_trip(layout, tmp_path):
    from s3prl_plugins.upstreams.common.checkpoint import resolve_checkpoint
    from s3prl_plugins.upstreams.m2d import formats, testing
    from s3prl_plugins.upstreams.m2d.config import resolve_config

    folder_name = "m2d_vit_base-80x208p16x16-240101"
    config = testing.tiny_config(folder_name)
    encoder = testing.random_encoder_state(config, seed=5)
    path = tmp_path / folder_name / "checkpoint-7.pth"
    stats = (-9.25, 3.5)
    if layout == "full":
        formats.write_full(path, config, encoder, heads={"decoder_pred.bias": torch.ones(3)}, norm_stats=stats,
                           args=formats.release_args(config), epoch=7)
    elif layout == "encoder_only":
        formats.write_encoder_only(path, encoder, norm_stats=stats)
    elif layout == "evar":
        formats.write_evar(path, config, encoder, head={"mlp.mlp.0.bias": torch.zeros(5)}, norm_stats=stats)
    elif layout == "clap2025":
        formats.write_clap2025(path, config, encoder, heads={"logit_scale": torch.tensor(2.0)}, norm_stats=stats)
    else:
        formats.write_encoder_only(tmp_path / "staging" / "checkpoint-7.pth", encoder, norm_stats=stats)
        archive = formats.write_release_zip(tmp_path / f"{folder_name}.zip", folder_name,
                                            tmp_path / "staging" / "checkpoint-7.pth")
        path = formats.find_weight_file(resolve_checkpoint(archive))
    loaded = formats.read_checkpoint(path)
    _same_tensors(loaded.encoder_state, encoder)
    assert loaded.norm_stats == stats
    assert resolve_config(loaded) == config


# ---------------------------------------------------------------------------------------------
# Dasheng: the pip/Zenodo .pt and the Hugging Face folder
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["pip", "huggingface"])
def test_dasheng_formats_round_trip(layout, tmp_path):
    from s3prl_plugins.upstreams.dasheng import formats, testing

    model = testing.random_encoder(testing.TINY_CONFIG, seed=3)
    state = model.state_dict()
    if layout == "pip":
        path = formats.write_pip(tmp_path / "d.pt", model.config, state)
        assert load_checkpoint(path)["config"] == formats.architecture_config(model.config)
    else:
        path = formats.write_huggingface(tmp_path / "hf", model.config, state)
    official, hf_config, found = formats.read_state_dict(path)
    assert found == layout
    assert formats.config_from_state_dict(official, hf_config) == model.config
    read = formats.to_model_keys(official)
    expected = {k: v for k, v in state.items() if layout == "pip" or not k.startswith("front_end.")
                or k.startswith("front_end.bn.")}
    _same_tensors(read, expected)


# ---------------------------------------------------------------------------------------------
# MelHuBERT: the runner file (three vintages) and a plain state dict
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vintage", ["melhubert", "hubert", "Model"])
def test_melhubert_runner_format_round_trips(vintage, tmp_path):
    from s3prl_plugins.upstreams.melhubert import formats, testing

    config = testing.config_for(20)
    state = testing.random_state_dict(config, seed=2)
    args = argparse.Namespace(frame_period=20)
    path = formats.write_runner_checkpoint(tmp_path / "m.ckpt", state, config, step=42, optimizer={}, args=args,
                                           runner={"runner": {}}, vintage=vintage)
    imported = formats.read_melhubert_checkpoint(path)
    assert imported.config == config and imported.step == 42
    _same_tensors(imported.state_dict, dict(state))


def test_melhubert_state_dict_format_round_trips(tmp_path):
    from s3prl_plugins.upstreams.melhubert import formats, testing

    config = dataclasses.replace(testing.config_for(10), encoder_attention_heads=1)  # 48-dim: one 64-dim-ish head
    state = testing.random_state_dict(config, seed=4)
    torch.save(dict(state), tmp_path / "plain.pt")
    imported = formats.read_melhubert_checkpoint(tmp_path / "plain.pt", yaml_section=config.to_official())
    assert imported.config == config
    _same_tensors(imported.state_dict, dict(state))


# ---------------------------------------------------------------------------------------------
# ARMHuBERT / STaRHuBERT: the Lightning release file and its yaml
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", ["arm", "star"])
def test_student_release_format_round_trips(flavour, tmp_path):
    from s3prl_plugins.upstreams.common.student.formats import read_student, write_release
    from s3prl_plugins.upstreams.common.student.model import StudentModel
    from s3prl_plugins.upstreams.common.student.config import student_config
    from s3prl_plugins.upstreams.common.student.testing import tiny_distiller, training_yaml

    torch.manual_seed(0)
    distiller = tiny_distiller(flavour)
    model = StudentModel(student_config(distiller, flavour))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = training_yaml(distiller, model="armhubert" if flavour == "arm" else "starhubert")
    write_release(tmp_path / "s.ckpt", state, cfg, epoch=2, global_step=9, yaml_path=tmp_path / "s.yaml")
    for config in (None, tmp_path / "s.yaml"):  # the config stored in the file, or the yaml beside it
        loaded = read_student(tmp_path / "s.ckpt", config, flavour, entry=f"{flavour}_local")
        assert loaded.model.cfg == model.cfg
        _same_tensors(loaded.model.state_dict(), state)
