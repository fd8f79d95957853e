"""ARMHuBERT / ARMwavLM / MaskHuBERT upstreams (the shared student is also STaRHuBERT's).

Checkpoints are written in the release layout (Lightning 1.7 ``.ckpt`` with the frozen teacher,
s3prl optimizer objects and the training yaml in ``hyper_parameters``) with random weights.
"""
from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from s3prl_plugins.upstreams.armhubert import hubconf
from s3prl_plugins.upstreams.common.student.config import ARM, PUBLISHED, STAR, student_config
from s3prl_plugins.upstreams.common.student.model import StudentModel
from s3prl_plugins.upstreams.armhubert.releases import RELEASES
from s3prl_plugins.upstreams.armhubert.testing import (
    make_checkpoint,
    tiny_distiller,
    training_yaml,
    write_release_checkpoint,
)
from s3prl_plugins.upstreams.common.checkpoint import CheckpointError, load_checkpoint
from s3prl_plugins.upstreams.common.inputs import UpstreamInputError

torch.set_num_threads(1)
SR = 16000


def _wav(seconds: float, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(int(seconds * SR), generator=torch.Generator().manual_seed(seed))


def _frames(num_samples: int) -> int:
    return len(range(0, num_samples, 320))


@pytest.fixture
def arm_ckpt(tmp_path):
    ckpt, config = tmp_path / "arm.ckpt", tmp_path / "arm.yaml"
    student = write_release_checkpoint(ckpt, tiny_distiller(ARM), ARM, yaml_path=config)
    return ckpt, config, student


# ------------------------------------------------------------------------------------------------
# Published architectures
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, flavour, exact, published_m",
    [
        ("ARMHuBERT", ARM, 26_448_448, 26.45),
        ("ARMHuBERT-S", ARM, 22_394_080, 22.39),
        ("MaskHuBERT", ARM, 26_635_840, 26.64),
        ("STaRHuBERT", STAR, 22_308_592, 22.31),
        ("STaRHuBERT-L", STAR, 26_630_752, 26.63),
    ],
)
def test_published_configs_have_the_published_parameter_counts(name, flavour, exact, published_m):
    model = StudentModel(student_config(PUBLISHED[name], flavour))
    count = sum(p.numel() for p in model.parameters())
    assert count == exact
    assert round(count / 1e6, 2) == published_m


def test_reuse_layers_have_no_query_and_key():
    model = StudentModel(student_config(PUBLISHED["ARMHuBERT"], ARM))
    keys = model.state_dict().keys()
    for layer in range(12):
        has_qk = f"encoder.layers.{layer}.self_attn.q_proj.weight" in keys
        assert has_qk == (layer % 2 == 0)
        assert f"encoder.layers.{layer}.self_attn.v_proj.weight" in keys
    assert model.feature_extractor.receptive_field == 400 and model.downsample_rate == 320


# ------------------------------------------------------------------------------------------------
# Loading the release layout
# ------------------------------------------------------------------------------------------------
def test_release_checkpoint_is_a_lightning_file_with_teacher_and_s3prl_objects(arm_ckpt):
    ckpt, _, _ = arm_ckpt
    obj = load_checkpoint(ckpt, family="armhubert")
    assert obj["pytorch-lightning_version"] == "1.7.7"
    keys = list(obj["state_dict"])
    assert any(k.startswith("teacher_model.model.") for k in keys)
    assert keys.index(next(k for k in keys if k.startswith("student_model."))) > 0  # teacher first
    schedule = obj["optimizer_states"][0]["param_groups"][0]["schedule"]
    assert "WarmupLinearSchedule" in type(schedule).__name__ or "WarmupLinearSchedule" in repr(schedule)
    assert obj["hyper_parameters"]["cfg"]["distiller"]["encoder_embed_dim"] == 32


@pytest.mark.parametrize("with_yaml", [True, False])
def test_official_entry_matches_the_student(arm_ckpt, with_yaml):
    ckpt, config, student = arm_ckpt
    upstream = hubconf.armhubert(ckpt=str(ckpt), model_config=str(config) if with_yaml else None)
    wav = _wav(1.3)
    out = upstream([wav])
    with torch.no_grad():
        expected = student(wav[None], torch.tensor([wav.numel()]))["hidden_states"]
    hidden = out["hidden_states"]
    assert len(hidden) == 4 and all(h.shape == (1, _frames(wav.numel()), 768) for h in hidden)
    for got, want in zip(hidden, expected):
        torch.testing.assert_close(got[:, : want.shape[1]], want, rtol=1e-5, atol=1e-5)
    assert torch.equal(out["last_hidden_state"], hidden[-1])
    assert upstream.get_downsample_rates("hidden_states") == 320


def test_local_entry_reads_config_from_checkpoint(arm_ckpt):
    ckpt, config, _ = arm_ckpt
    a = hubconf.armhubert_local(ckpt=str(ckpt))([_wav(0.8)])
    b = hubconf.armhubert_local(ckpt=str(ckpt), model_config=str(config))([_wav(0.8)])
    for x, y in zip(a["hidden_states"], b["hidden_states"]):
        assert torch.equal(x, y)


def test_unknown_yaml_keys_warn_instead_of_failing(tmp_path, caplog):
    ckpt, config = tmp_path / "x.ckpt", tmp_path / "x.yaml"
    write_release_checkpoint(ckpt, tiny_distiller(ARM), ARM, yaml_path=config,
                             extra_keys={"some_new_option": 3, "another": "x"})
    with caplog.at_level(logging.WARNING):
        upstream = hubconf.armhubert(ckpt=str(ckpt), model_config=str(config))
    assert "some_new_option" in caplog.text and "another" in caplog.text
    assert len(upstream([_wav(0.5)])["hidden_states"]) == 4


def test_maskhubert_entries_and_official_entry_agree(tmp_path):
    ckpt, config = tmp_path / "mask.ckpt", tmp_path / "mask.yaml"
    write_release_checkpoint(ckpt, tiny_distiller(ARM, reuse=False), ARM, yaml_path=config)
    wavs = [_wav(1.0), _wav(0.4, 1)]
    a = hubconf.maskhubert(ckpt=str(ckpt), model_config=str(config))(wavs)
    b = hubconf.armhubert(ckpt=str(ckpt), model_config=str(config))(wavs)
    c = hubconf.maskhubert_local(ckpt=str(ckpt))(wavs)
    for x, y, z in zip(a["hidden_states"], b["hidden_states"], c["hidden_states"]):
        assert torch.equal(x, y) and torch.equal(x, z)


def test_bare_student_state_dict_with_yaml(tmp_path, arm_ckpt):
    _, config, student = arm_ckpt
    bare = tmp_path / "student.pt"
    torch.save(student.state_dict(), bare)
    out = hubconf.armhubert_local(ckpt=str(bare), model_config=str(config))([_wav(0.6)])
    assert len(out["hidden_states"]) == 4


@pytest.mark.parametrize("entry", sorted(RELEASES))
def test_named_release_entries_load_from_the_cache(entry, tmp_path, cache_root):
    spec = make_checkpoint(entry, tmp_path)
    assert spec["ckpt"] is None
    upstream = getattr(hubconf, entry)(**spec)
    out = upstream([_wav(0.7), _wav(0.3, 2)])
    assert out["hidden_states"][0].shape == (2, _frames(int(0.7 * SR)), 768)


def test_named_entry_without_network_names_the_file_and_the_fix(tmp_path, monkeypatch):
    from s3prl_plugins.upstreams.common import checkpoint

    monkeypatch.setenv("S3PRL_PLUGINS_CACHE_DIR", str(tmp_path / "empty_cache"))

    def offline(url, target):  # what urllib / huggingface_hub raise without a network, without their retries
        raise OSError("network unreachable")

    monkeypatch.setattr(checkpoint, "_fetch", offline)
    # the fix it names: the entry itself with a copy fetched by hand (the release's facts still apply)
    with pytest.raises(CheckpointError, match=r"(?s)ARMHuBERT-S-960h\.ckpt.*-u armhubert_s_960h -k <path>"):
        hubconf.armhubert_s_960h()
    # an official entry name that downloads a default release names that release's entry
    with pytest.raises(CheckpointError, match=r"(?s)ARMHuBERT-960h\.ckpt.*-u armhubert_960h -k <path>"):
        hubconf.armhubert()


# ------------------------------------------------------------------------------------------------
# Frames, batching and the official batched behaviour
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds", [0.01, 0.05, 0.3, 1.0, 2.37])
def test_frame_count_is_what_s3prl_expects(arm_ckpt, seconds):
    ckpt, config, _ = arm_ckpt
    upstream = hubconf.armhubert(ckpt=str(ckpt), model_config=str(config))
    wav = _wav(seconds)
    out = upstream([wav])
    assert all(h.shape[1] == _frames(wav.numel()) for h in out["hidden_states"])
    assert all(torch.isfinite(h).all() for h in out["hidden_states"])


@pytest.mark.parametrize("reuse", [True, False], ids=["armhubert", "maskhubert"])
def test_default_is_batch_invariant(tmp_path, reuse):
    ckpt = tmp_path / "m.ckpt"
    write_release_checkpoint(ckpt, tiny_distiller(ARM, reuse=reuse), ARM)
    upstream = hubconf.armhubert_local(ckpt=str(ckpt))
    wavs = [_wav(1.2), _wav(0.37, 1), _wav(0.05, 2), _wav(0.9, 3)]
    batch = upstream(wavs)["hidden_states"]
    for i, wav in enumerate(wavs):
        alone = upstream([wav])["hidden_states"]
        frames = (wav.numel() - 400) // 320 + 1
        for b, a in zip(batch, alone):
            torch.testing.assert_close(b[i, :frames], a[0, :frames], rtol=1e-4, atol=1e-5)


def test_lone_row_padded_beyond_its_length_equals_the_unpadded_row(tmp_path):
    """Distillation pads a micro-batch to the longest utterance of all processes, so a batch of
    one can carry padding: its valid frames must still equal the unpadded run."""
    torch.manual_seed(0)
    model = StudentModel(student_config(tiny_distiller(ARM, reuse=True), ARM)).eval()
    wav = _wav(0.6)
    padded = torch.nn.functional.pad(wav, (0, 4000))[None]
    with torch.no_grad():
        alone = model(wav[None], torch.tensor([wav.numel()]))["hidden_states"]
        extra = model(padded, torch.tensor([wav.numel()]))["hidden_states"]
    frames = alone[0].shape[1]
    for a, b in zip(alone, extra):
        torch.testing.assert_close(b[:, :frames], a, rtol=1e-4, atol=1e-5)


def _reference_official_batch(model: StudentModel, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Independent, loop-based restatement of the official numbers for a padded batch: fairseq
    time-major layout, GroupNorm over the padded row, -inf key masking, and reuse layers that
    read the (head, batch)-ordered map as if it were (batch, head)-ordered, then softmax it again."""
    cfg = model.cfg
    lengths = torch.tensor([w.numel() for w in wavs])
    x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True).unsqueeze(1)
    for i, block in enumerate(model.feature_extractor.conv_layers):
        conv = block[0]
        x = F.conv1d(x, conv.weight, stride=conv.stride)
        if i == 0:
            gn = block[2]
            x = F.group_norm(x, gn.num_groups, gn.weight, gn.bias, gn.eps)
        x = F.gelu(x)
    x = F.layer_norm(x.transpose(1, 2), (x.shape[1],), model.layer_norm.weight, model.layer_norm.bias)
    frames = lengths
    for _, k, s in cfg.conv_feature_layers:
        frames = torch.div(frames - k, s, rounding_mode="floor") + 1
    b, t, d = x.shape
    pad = torch.arange(t)[None] >= frames[:, None]
    x = x.masked_fill(pad[..., None], 0.0)
    conv = model.encoder.pos_conv[0]
    v, g = conv.weight_v, conv.weight_g
    weight = g * v / v.norm(dim=(0, 1), keepdim=True)
    pos = F.conv1d(x.transpose(1, 2), weight, conv.bias, padding=cfg.conv_pos // 2, groups=cfg.conv_pos_groups)
    x = x + F.gelu(pos[:, :, :-1]).transpose(1, 2)
    enc = model.encoder
    x = F.layer_norm(x, (d,), enc.layer_norm.weight, enc.layer_norm.bias).transpose(0, 1)  # T B D
    h = cfg.encoder_attention_heads
    hd = d // h
    outputs, previous = [], None
    for layer, computes in zip(enc.layers, cfg.reuse_pattern):
        att = layer.self_attn
        value = att.v_proj(x).reshape(t, b * h, hd).transpose(0, 1)  # (b h) T hd
        if computes:
            q = (att.q_proj(x) * hd ** -0.5).reshape(t, b * h, hd).transpose(0, 1)
            k = att.k_proj(x).reshape(t, b * h, hd).transpose(0, 1)
            scores = torch.bmm(q, k.transpose(1, 2)).view(b, h, t, t)
            scores = scores.masked_fill(pad[:, None, None, :], float("-inf")).view(b * h, t, t)
            probs = torch.softmax(scores, dim=-1)
            previous = probs.view(b, h, t, t).transpose(0, 1)  # what fairseq returns: H B T T
        else:
            flat = previous.contiguous().view(b * h, t, t)  # (h b) order read as (b h)
            flat = flat.view(b, h, t, t).masked_fill(pad[:, None, None, :], float("-inf")).view(b * h, t, t)
            probs = torch.softmax(flat, dim=-1)
        attn = torch.bmm(probs, value).transpose(0, 1).reshape(t, b, d)
        x = layer.self_attn_layer_norm(x + att.out_proj(attn))
        x = layer.final_layer_norm(x + layer.fc2(F.gelu(layer.fc1(x))))
        outputs.append(x.transpose(0, 1))
    if cfg.flavour == ARM:
        return [head(o) for head, o in zip(model.proj_head, outputs)]
    return outputs


@pytest.mark.parametrize("reuse", [True, False], ids=["armhubert", "maskhubert"])
def test_official_batching_flag_reproduces_the_official_padded_batch(tmp_path, reuse):
    ckpt = tmp_path / "m.ckpt"
    write_release_checkpoint(ckpt, tiny_distiller(ARM, reuse=reuse), ARM)
    flag = tmp_path / "flag.yaml"
    flag.write_text("official_batching: true\n")
    official = hubconf.armhubert_local(ckpt=str(ckpt), model_config=str(flag))
    default = hubconf.armhubert_local(ckpt=str(ckpt))
    assert official.official_batching and not default.official_batching
    wavs = [_wav(1.1), _wav(0.45, 1), _wav(0.8, 2)]
    with torch.no_grad():
        reference = _reference_official_batch(official.model, wavs)
    got = official(wavs)["hidden_states"]
    ours = default(wavs)["hidden_states"]
    t = reference[0].shape[1]
    for g, r in zip(got, reference):
        torch.testing.assert_close(g[:, :t], r, rtol=1e-4, atol=1e-5)
    # the default differs on the padded rows (GroupNorm statistics; reuse mixes heads too)
    assert max((o[1:, :t] - r[1:]).abs().max().item() for o, r in zip(ours, reference)) > 1e-3
    # a single utterance is the same either way
    single = [_wav(0.9, 5)]
    for a, b in zip(official(single)["hidden_states"], default(single)["hidden_states"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_official_batching_also_as_keyword(arm_ckpt):
    ckpt, config, _ = arm_ckpt
    assert hubconf.armhubert(ckpt=str(ckpt), model_config=str(config), official_batching=True).official_batching


def test_official_batching_trains_on_a_padded_single_utterance(arm_ckpt):
    ckpt, config, _ = arm_ckpt
    upstream = hubconf.armhubert(ckpt=str(ckpt), model_config=str(config), official_batching=True).train()
    # a batch of one padded beyond its length (as in a DDP-wide padded batch)
    out = upstream.model(torch.cat([_wav(0.3), torch.zeros(1600)]).unsqueeze(0), torch.tensor([4800]),
                         official_batching=True)
    sum(h.sum() for h in out["hidden_states"]).backward()
    assert all(p.grad is not None for p in upstream.model.encoder.parameters() if p.requires_grad)


def test_gradients_reach_the_waveform_through_a_frozen_cnn(arm_ckpt):
    ckpt, config, _ = arm_ckpt
    upstream = hubconf.armhubert(ckpt=str(ckpt), model_config=str(config))
    for parameter in upstream.model.feature_extractor.parameters():
        parameter.requires_grad_(False)
    wav = _wav(0.3).requires_grad_()
    sum(h.sum() for h in upstream([wav])["hidden_states"]).backward()
    assert wav.grad is not None and torch.isfinite(wav.grad).all() and wav.grad.abs().sum() > 0


def test_forward_backward_in_train_mode_on_short_mixed_batch(arm_ckpt):
    ckpt, config, _ = arm_ckpt
    upstream = hubconf.armhubert(ckpt=str(ckpt), model_config=str(config)).train()
    wavs = [_wav(0.05), _wav(0.2, 1), _wav(0.07, 2)]
    out = upstream(wavs)
    assert len(out["hidden_states"]) == 4
    sum(h.sum() for h in out["hidden_states"]).backward()
    grads = [p.grad for p in upstream.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    upstream.eval()
    with torch.no_grad():
        a, b = upstream(wavs), upstream(wavs)
    assert all(torch.equal(x, y) for x, y in zip(a["hidden_states"], b["hidden_states"]))


# ------------------------------------------------------------------------------------------------
# Bad inputs and bad checkpoints
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "wavs, match",
    [
        ([], "empty"),
        (torch.zeros(2, 16000), "list"),
        ([torch.zeros(2, 16000)], "shape"),
        ([torch.zeros(16000, dtype=torch.int16)], "dtype"),
        ([torch.full((16000,), math.nan)], "NaN"),
        ([torch.zeros(0)], "empty"),
    ],
)
def test_bad_inputs_are_refused_clearly(arm_ckpt, wavs, match):
    ckpt, config, _ = arm_ckpt
    upstream = hubconf.armhubert(ckpt=str(ckpt), model_config=str(config))
    with pytest.raises(UpstreamInputError, match=match):
        upstream(wavs)


def test_missing_truncated_and_absent_checkpoints(tmp_path, arm_ckpt):
    ckpt, _, _ = arm_ckpt
    with pytest.raises(CheckpointError, match="not found"):
        hubconf.armhubert_local(ckpt=str(tmp_path / "nope.ckpt"))
    with pytest.raises(CheckpointError, match="-k"):
        hubconf.armhubert_local()
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated|corrupted"):
        hubconf.armhubert_local(ckpt=str(truncated))


def test_star_checkpoint_through_armhubert_says_which_entry_to_use(tmp_path):
    ckpt = tmp_path / "star.ckpt"
    write_release_checkpoint(ckpt, tiny_distiller(STAR), STAR)
    with pytest.raises(CheckpointError, match="starhubert_local"):
        hubconf.armhubert_local(ckpt=str(ckpt))


def test_checkpoint_without_config_asks_for_the_yaml(tmp_path):
    ckpt = tmp_path / "nohp.ckpt"
    write_release_checkpoint(ckpt, tiny_distiller(ARM), ARM, with_hparams=False)
    with pytest.raises(CheckpointError, match="-g"):
        hubconf.armhubert_local(ckpt=str(ckpt))


def test_yaml_that_does_not_fit_the_weights(tmp_path, arm_ckpt):
    ckpt, _, _ = arm_ckpt
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.dump(training_yaml(tiny_distiller(ARM, dim=48))))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        hubconf.armhubert(ckpt=str(ckpt), model_config=str(wrong))
    unsupported = tmp_path / "prenorm.yaml"
    unsupported.write_text(yaml.dump(training_yaml(dict(tiny_distiller(ARM), layer_norm_first=True))))
    with pytest.raises(CheckpointError, match="layer_norm_first"):
        hubconf.armhubert(ckpt=str(ckpt), model_config=str(unsupported))
    with pytest.raises(CheckpointError, match="not found"):
        hubconf.armhubert(ckpt=str(ckpt), model_config=str(tmp_path / "missing.yaml"))


def test_file_without_student_weights(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.encoder.weight": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match="student_model"):
        hubconf.armhubert_local(ckpt=str(path))


def test_model_config_booleans_are_read_as_booleans():
    from s3prl_plugins.upstreams.common.config import ConfigError

    distiller = dict(tiny_distiller(ARM), conv_bias="false", layer_grad_scale="true")
    config = student_config(distiller, ARM)
    assert config.conv_bias is False and config.layer_grad_scale is True
    with pytest.raises(ConfigError, match="conv_bias"):
        student_config(dict(distiller, conv_bias="maybe"), ARM)


def test_bad_official_batching_value(arm_ckpt, tmp_path):
    ckpt, _, _ = arm_ckpt
    flag = tmp_path / "flag.yaml"
    flag.write_text("official_batching: maybe\n")
    with pytest.raises(ValueError, match="official_batching"):
        hubconf.armhubert_local(ckpt=str(ckpt), model_config=str(flag))


def test_layer_grad_scale_scales_gradients_only(tmp_path):
    """The official layer_grad_scale: forward unchanged; the last layer's own output gets
    (1 - 1/2) of the gradient that already passed the (1/2) factor: 1/4 in all."""
    grads, outputs = {}, {}
    for scale in (False, True):
        ckpt = tmp_path / f"g{scale}.ckpt"
        write_release_checkpoint(ckpt, dict(tiny_distiller(STAR), layer_grad_scale=scale), STAR, seed=3)
        from s3prl_plugins.upstreams.starhubert.hubconf import starhubert_local

        upstream = starhubert_local(ckpt=str(ckpt))
        hidden = upstream([_wav(0.6)])["hidden_states"]
        hidden[-1].sum().backward()
        grads[scale] = upstream.model.encoder.layers[-1].fc2.bias.grad.clone()
        outputs[scale] = hidden[-1].detach()
    assert torch.equal(outputs[False], outputs[True])
    torch.testing.assert_close(grads[True], grads[False] / 4, rtol=1e-5, atol=1e-8)


def test_flat_distiller_yaml_and_options_only_yaml(tmp_path, arm_ckpt):
    ckpt, _, _ = arm_ckpt
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.dump(dict(tiny_distiller(ARM), official_batching=True)))
    upstream = hubconf.armhubert_local(ckpt=str(ckpt), model_config=str(flat))
    assert upstream.official_batching
    options = tmp_path / "options.yaml"
    options.write_text("official_batched_reuse: true\n")
    assert hubconf.armhubert_local(ckpt=str(ckpt), model_config=str(options)).official_batching
