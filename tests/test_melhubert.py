"""MelHuBERT upstream: checkpoint layouts, frame periods, statistics, exactness, bad input."""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import urllib.error
from collections import OrderedDict

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
import yaml

from s3prl_plugins.upstreams.common.checkpoint import CheckpointError, cached_download_path
from s3prl_plugins.upstreams.common.inputs import UpstreamInputError
from s3prl_plugins.upstreams.melhubert import hubconf, testing
from s3prl_plugins.upstreams.melhubert.config import MelHuBERTConfig
from s3prl_plugins.upstreams.melhubert.config import load_stats
from s3prl_plugins.upstreams.melhubert.releases import RELEASES as RELEASED

from .test_melhubert_frontend import _official_features

AUDIO = "/work/shared/audio/1001-134707-0000.flac"


def _speech(seconds: float) -> torch.Tensor:
    try:
        wave, rate = soundfile.read(AUDIO, dtype="float32")
        wave = torch.from_numpy(wave)
    except Exception:  # the shared clip is optional: fall back to a speech-like chirp mix
        t = torch.arange(16000 * 20) / 16000
        wave = 0.1 * torch.sin(2 * math.pi * (120 + 80 * torch.sin(3 * t)) * t) + 0.01 * torch.randn(t.shape)
    n = int(seconds * 16000)
    return wave.repeat(1 + n // len(wave))[:n].clone()


def _load(path, model_config=None):
    return hubconf.melhubert_local(ckpt=str(path), model_config=model_config).eval()


def _hidden(model, wavs):
    with torch.no_grad():
        return model([w.clone() for w in wavs])


def _yaml(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return str(path)


# ---------------------------------------------------------------------------------------------
# An independent re-derivation of the official forward pass (explicit attention, -inf masks,
# legacy weight norm, per-utterance torchaudio features), to check the fast path against.
# ---------------------------------------------------------------------------------------------
def _reference_hidden_states(state, config: MelHuBERTConfig, wavs, stats):
    feats = [_official_features(w, stats, config.frame_period_ms) for w in wavs]
    lengths = torch.tensor([f.shape[0] for f in feats])
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    pad = torch.arange(x.shape[1])[None] >= lengths[:, None]
    x = F.linear(x, state["pre_extract_proj.weight"], state["pre_extract_proj.bias"])
    x[pad] = 0
    outputs = [x.clone()]
    g, v = state["encoder.pos_conv.0.weight_g"], state["encoder.pos_conv.0.weight_v"]
    weight = g * v / v.norm(dim=(0, 1), keepdim=True)
    k = weight.shape[-1]
    conv = F.conv1d(x.transpose(1, 2), weight, state["encoder.pos_conv.0.bias"], padding=k // 2,
                    groups=config.conv_pos_groups)
    conv = conv[..., :-1] if k % 2 == 0 else conv
    x = x + F.gelu(conv).transpose(1, 2)
    dim, heads = config.encoder_embed_dim, config.encoder_attention_heads
    x = F.layer_norm(x, (dim,), state["encoder.layer_norm.weight"], state["encoder.layer_norm.bias"])
    b, t, _ = x.shape
    for i in range(config.encoder_layers):
        p = lambda name: state[f"encoder.layers.{i}.{name}"]  # noqa: E731
        split = lambda y: y.view(b, t, heads, dim // heads).transpose(1, 2)  # noqa: E731
        q = split(F.linear(x, p("self_attn.q_proj.weight"), p("self_attn.q_proj.bias")) * (dim // heads) ** -0.5)
        kk = split(F.linear(x, p("self_attn.k_proj.weight"), p("self_attn.k_proj.bias")))
        vv = split(F.linear(x, p("self_attn.v_proj.weight"), p("self_attn.v_proj.bias")))
        scores = (q @ kk.transpose(-1, -2)).masked_fill(pad[:, None, None, :], float("-inf"))
        attn = (scores.softmax(-1) @ vv).transpose(1, 2).reshape(b, t, dim)
        attn = F.linear(attn, p("self_attn.out_proj.weight"), p("self_attn.out_proj.bias"))
        x = F.layer_norm(x + attn, (dim,), p("self_attn_layer_norm.weight"), p("self_attn_layer_norm.bias"))
        ffn = F.linear(F.gelu(F.linear(x, p("fc1.weight"), p("fc1.bias"))), p("fc2.weight"), p("fc2.bias"))
        x = F.layer_norm(x + ffn, (dim,), p("final_layer_norm.weight"), p("final_layer_norm.bias"))
        outputs.append(x)
    return outputs, lengths


def _max_rel(a, b):
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("frame_period_ms", [10, 20])
def test_hidden_states_match_reference_math(tmp_path, frame_period_ms):
    config = testing.config_for(frame_period_ms)
    state = testing.random_state_dict(config, seed=3)
    path = testing.write_official_checkpoint(tmp_path / "m.ckpt", config, state=state)
    model = _load(path)
    stats = load_stats("libri960")
    for wavs in ([_speech(0.3)], [_speech(2.05)], [_speech(3.0), _speech(0.3), _speech(1.23)]):
        ours = _hidden(model, wavs)
        reference, _ = _reference_hidden_states(state, config, wavs, stats)
        assert len(ours["hidden_states"]) == config.encoder_layers + 1
        for mine, ref in zip(ours["hidden_states"], reference):
            # every official row, padded rows of the batch included
            assert _max_rel(ref, mine[:, : ref.shape[1]]) < 1e-5
        assert torch.equal(ours["last_hidden_state"], ours["hidden_states"][-1])


@pytest.mark.parametrize("frame_period_ms,rate", [(10, 160), (20, 320)])
def test_frame_period_comes_from_stored_config(tmp_path, frame_period_ms, rate):
    path = testing.write_official_checkpoint(tmp_path / "melhubert-20ms-named-wrongly.ckpt",
                                             testing.config_for(frame_period_ms))
    model = _load(path)
    assert model.get_downsample_rates("hidden_states") == rate
    wavs = [_speech(1.0), _speech(0.37)]
    out = _hidden(model, wavs)
    assert all(h.shape == (2, len(range(0, 16000, rate)), 48) for h in out["hidden_states"])


@pytest.mark.parametrize("layout", ["melhubert", "hubert", "Model", "state_dict"])
def test_official_layouts_round_trip(tmp_path, layout):
    config = testing.config_for(20)
    state = testing.random_state_dict(config, seed=5)
    path = testing.write_official_checkpoint(tmp_path / f"{layout}.ckpt", config, layout=layout, state=state)
    model = _load(path)
    loaded = model.model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    if layout == "state_dict":  # no stored config: heads are inferred as 64-dim (48 -> 1 head)
        config = dataclasses.replace(config, encoder_attention_heads=1)
    assert model.model.config == config


def test_runner_file_holds_a_pickled_namespace(tmp_path):
    """The official file is not weights-only loadable by default under torch >= 2.6."""
    path = testing.write_official_checkpoint(tmp_path / "last-step.ckpt", testing.config_for(20))
    # a fresh interpreter: this one may have imported s3prl, whose installed compat block
    # allowlists argparse.Namespace for s3prl's own checkpoints
    plain = subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=True)"],
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode != 0 and "Namespace" in plain.stderr
    assert _load(path) is not None


def test_wrapped_and_pruned_state_dicts(tmp_path):
    config = testing.config_for(10)
    state = testing.random_state_dict(config, seed=6)
    # DistributedDataParallel prefix + parametrized weight-norm names
    renamed = OrderedDict()
    for key, value in state.items():
        key = key.replace("pos_conv.0.weight_g", "pos_conv.0.parametrizations.weight.original0")
        key = key.replace("pos_conv.0.weight_v", "pos_conv.0.parametrizations.weight.original1")
        renamed["module." + key] = value
    torch.save(renamed, tmp_path / "ddp.pt")
    loaded = _load(tmp_path / "ddp.pt").model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)

    # Speech-SSL-Compression weight pruning: w = w_orig * w_mask
    pruned = OrderedDict(state)
    weight = pruned.pop("encoder.layers.0.fc1.weight")
    mask = (torch.rand(weight.shape) > 0.5).float()
    pruned["encoder.layers.0.fc1.weight_orig"], pruned["encoder.layers.0.fc1.weight_mask"] = weight, mask
    path = testing.write_official_checkpoint(tmp_path / "wp.ckpt", config, state=pruned)
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["Pruning"] = {"amount": 0.5}
    torch.save(checkpoint, path)
    loaded = _load(path).model.state_dict()
    assert torch.equal(loaded["encoder.layers.0.fc1.weight"], weight * mask)


def test_classifier_shape_and_absence_do_not_matter(tmp_path):
    config = testing.config_for(20)
    state = testing.random_state_dict(config, seed=8)
    # a stage-2 classifier of another size than the stored yaml's num_cluster
    state["final_proj.weight"], state["final_proj.bias"] = torch.randn(7, 48), torch.randn(7)
    path = testing.write_official_checkpoint(tmp_path / "k7.ckpt", config, state=state)
    wav = [_speech(0.5)]
    reference = _hidden(_load(path), wav)
    without = OrderedDict((k, v) for k, v in state.items() if not k.startswith("final_proj."))
    torch.save(without, tmp_path / "no_classifier.pt")
    g = _yaml(tmp_path, "g.yaml", {"melhubert": config.to_official()})
    for a, b in zip(reference["hidden_states"], _hidden(_load(tmp_path / "no_classifier.pt", g), wav)["hidden_states"]):
        assert torch.equal(a, b)


def test_state_dict_architecture_from_yaml_section(tmp_path):
    config = testing.config_for(20, encoder_attention_heads=2)  # not inferable from shapes
    state = testing.random_state_dict(config, seed=7)
    torch.save(state, tmp_path / "plain.pt")
    inferred = _load(tmp_path / "plain.pt")
    assert inferred.model.config.encoder_attention_heads == 1  # 48 / 64-dim heads, rounded up to 1
    g = _yaml(tmp_path, "g.yaml", {"melhubert": config.to_official(), "stats": "libri100"})
    model = _load(tmp_path / "plain.pt", g)
    assert model.model.config == config


def test_stats_selection(tmp_path, capsys):
    path = testing.write_official_checkpoint(tmp_path / "m.ckpt", testing.config_for(20))
    default = _load(path)
    assert "LibriSpeech 960 h" in capsys.readouterr().out
    expected = np.load(f"{hubconf.__file__.rsplit('/', 1)[0]}/stats/libri-960-mean-std.npy")
    assert torch.equal(default.frontend.mean, torch.tensor(expected[0], dtype=torch.float32))
    assert torch.equal(default.frontend.std, torch.tensor(expected[1], dtype=torch.float32))

    wav = [_speech(1.0)]
    outputs = {}
    for choice in ("libri100", "libri360", "libri960"):
        model = _load(path, _yaml(tmp_path, f"{choice}.yaml", {"stats": choice}))
        assert choice in capsys.readouterr().out
        outputs[choice] = _hidden(model, wav)["hidden_states"][1]
    assert torch.equal(outputs["libri960"], _hidden(default, wav)["hidden_states"][1])
    assert not torch.allclose(outputs["libri100"], outputs["libri360"])

    custom = np.stack([np.full(40, 10.0), np.full(40, 2.0)])
    np.save(tmp_path / "mine.npy", custom)
    model = _load(path, _yaml(tmp_path, "custom.yaml", {"stats": str(tmp_path / "mine.npy")}))
    assert str(tmp_path / "mine.npy") in capsys.readouterr().out
    assert torch.all(model.frontend.mean == 10.0) and torch.all(model.frontend.std == 2.0)

    with pytest.raises(ValueError, match="libri960"):
        _load(path, _yaml(tmp_path, "bad.yaml", {"stats": "libri500"}))
    np.save(tmp_path / "wrong.npy", np.ones((2, 80)))
    with pytest.raises(ValueError, match=r"\[2, 40\]"):
        _load(path, _yaml(tmp_path, "wrong.yaml", {"stats": str(tmp_path / "wrong.npy")}))


def test_batch_invariance(tmp_path):
    for frame_period_ms in (10, 20):
        model = _load(testing.write_official_checkpoint(tmp_path / f"{frame_period_ms}.ckpt",
                                                        testing.config_for(frame_period_ms)))
        wavs = [_speech(2.0), _speech(0.05), _speech(1.337), _speech(0.02)]
        batch = _hidden(model, wavs)
        rate = model.get_downsample_rates("hidden_states")
        for index, wav in enumerate(wavs):
            alone = _hidden(model, [wav])
            frames = len(range(0, len(wav), rate))  # what s3prl's Featurizer reads
            for a, b in zip(alone["hidden_states"], batch["hidden_states"]):
                assert a.shape[1] == frames
                torch.testing.assert_close(b[index, :frames], a[0], rtol=1e-4, atol=1e-5)


def test_short_inputs_are_padded_to_one_window(tmp_path):
    model = _load(testing.write_official_checkpoint(tmp_path / "m.ckpt", testing.config_for(20)))
    for samples in (1, 100, 399):
        out = _hidden(model, [_speech(samples / 16000)])
        frames = len(range(0, samples, 320))  # 1 or 2: one fbank frame, plus masked padding
        assert all(h.shape[1] == frames and torch.isfinite(h).all() for h in out["hidden_states"])
    with pytest.raises(UpstreamInputError, match="empty"):
        model([torch.zeros(0)])


def test_forward_backward_in_train_mode(tmp_path):
    model = _load(testing.write_official_checkpoint(tmp_path / "m.ckpt", testing.config_for(20))).train()
    out = model([_speech(0.5), _speech(0.05)])
    sum(h.sum() for h in out["hidden_states"]).backward()
    assert model.model.encoder.layers[0].fc1.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# bad checkpoints
# ---------------------------------------------------------------------------------------------
def test_other_family_checkpoint_is_named(tmp_path):
    hubert_like = {"model": {"feature_extractor.conv_layers.0.0.weight": torch.zeros(512, 1, 10),
                             "encoder.layers.0.self_attn.k_proj.weight": torch.zeros(768, 768),
                             "final_proj.weight": torch.zeros(256, 768), "mask_emb": torch.zeros(768)}}
    torch.save(hubert_like, tmp_path / "hubert.pt")
    with pytest.raises(CheckpointError, match="hubert"):
        _load(tmp_path / "hubert.pt")
    m2d_like = {"patch_embed.proj.weight": torch.zeros(768, 1, 16, 16),
                "blocks.0.attn.qkv.weight": torch.zeros(2304, 768)}
    torch.save(m2d_like, tmp_path / "m2d.pth")
    with pytest.raises(CheckpointError, match="m2d"):
        _load(tmp_path / "m2d.pth")


def test_truncated_and_missing_files(tmp_path):
    path = testing.write_official_checkpoint(tmp_path / "m.ckpt", testing.config_for(20))
    data = path.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        _load(tmp_path / "cut.ckpt")
    with pytest.raises(CheckpointError, match="not found"):
        _load(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="-k"):
        hubconf.melhubert_local(ckpt=None)


def test_missing_upstream_config(tmp_path):
    path = testing.write_official_checkpoint(tmp_path / "m.ckpt", testing.config_for(20), layout="no_upstream_config")
    with pytest.raises(CheckpointError, match="Upstream_Config.*-g"):
        _load(path)
    g = _yaml(tmp_path, "model.yaml", {"melhubert": testing.config_for(20).to_official()})
    assert _load(path, g).model.config == testing.config_for(20)


def test_unsupported_and_mismatched_configs(tmp_path):
    config = testing.config_for(20)
    path = testing.write_official_checkpoint(tmp_path / "m.ckpt", config)
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["Upstream_Config"]["melhubert"]["layer_norm_first"] = True
    torch.save(checkpoint, tmp_path / "lnf.ckpt")
    with pytest.raises(CheckpointError, match="layer_norm_first"):
        _load(tmp_path / "lnf.ckpt")
    checkpoint["Upstream_Config"]["melhubert"]["layer_norm_first"] = False
    checkpoint["Upstream_Config"]["melhubert"]["encoder_layers"] = 3
    torch.save(checkpoint, tmp_path / "layers.ckpt")
    with pytest.raises(CheckpointError, match="do not fit"):
        _load(tmp_path / "layers.ckpt")
    checkpoint["Upstream_Config"] = {"task": {}}
    torch.save(checkpoint, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="melhubert"):
        _load(tmp_path / "other.ckpt")
    head_pruned = torch.load(path, weights_only=False)
    head_pruned["Pruned_heads"] = [{0: [1]}]
    torch.save(head_pruned, tmp_path / "hp.ckpt")
    with pytest.raises(CheckpointError, match="head-pruned"):
        _load(tmp_path / "hp.ckpt")


# ---------------------------------------------------------------------------------------------
# named entries
# ---------------------------------------------------------------------------------------------
def test_named_entries_use_cache_and_training_stats(tmp_path, cache_root, capsys):
    for entry, release in RELEASED.items():
        spec = testing.make_checkpoint(entry, tmp_path)
        assert spec["ckpt"] is None
        model = getattr(hubconf, entry)(**spec).eval()
        printed = capsys.readouterr().out
        assert model.frame_period_ms == release.frame_period_ms
        assert release.stats in printed
        assert torch.equal(model.frontend.mean, load_stats(release.stats).mean)
    assert hubconf.melhubert.__doc__ and "melhubert" in hubconf.__all__


def test_named_entry_trusts_config_over_release_name(tmp_path, cache_root, capsys):
    release = RELEASED["melhubert_20ms_100h_stage1"]  # one of the two links once swapped
    testing.write_official_checkpoint(cached_download_path(release.url, release.filename), testing.config_for(10))
    model = hubconf.melhubert_20ms_100h_stage1()
    assert model.get_downsample_rates("x") == 160
    assert "[melhubert_20ms_100h_stage1] warning: MelHuBERT-20ms 100-hour stage 1 is released as a 20 ms model" in capsys.readouterr().err
    testing.make_checkpoint("melhubert_20ms_100h_stage1", tmp_path)  # restore for other tests


def test_impossible_download_names_file_and_the_fix(tmp_path, cache_root, monkeypatch):
    release = RELEASED["melhubert_10ms_960h_stage2"]
    cached_download_path(release.url, release.filename).unlink(missing_ok=True)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    # torch.hub (the downloader of non-Hugging-Face files) holds its own reference to urlopen
    monkeypatch.setattr("torch.hub.urlopen", offline)
    with pytest.raises(CheckpointError) as error:
        hubconf.melhubert_10ms_960h_stage2()
    message = str(error.value)
    # the fix it names: this entry with a copy fetched by hand (the release's statistics still apply)
    assert release.filename in message and "-u melhubert_10ms_960h_stage2 -k <path>" in message
    assert release.gdrive_id in message and "no network" in message


def test_entries_are_in_the_hub_and_hubconf_is_light():
    from s3prl_plugins import hub

    assert {"melhubert_local", "melhubert", *RELEASED} <= set(hub.__all__)
    code = ("import sys, s3prl_plugins.upstreams.melhubert.hubconf as h; "
            "assert 'torch' not in sys.modules, 'hubconf imported torch'; print(len(h.__all__))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(2 + len(RELEASED))
