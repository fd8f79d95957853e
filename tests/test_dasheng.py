"""Dasheng upstream: formats, exactness against a from-the-spec reference, batching, errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from s3prl_plugins.upstreams.common.checkpoint import CheckpointError, cached_download_path
from s3prl_plugins.upstreams.common.config import ConfigError
from s3prl_plugins.upstreams.common.inputs import UpstreamInputError
from s3prl_plugins.upstreams.dasheng import hubconf
from s3prl_plugins.upstreams.dasheng.testing import (
    TINY_CONFIG, make_checkpoint, random_encoder, write_hf_checkpoint, write_pip_checkpoint,
)
from s3prl_plugins.upstreams.dasheng.formats import to_official_keys
from s3prl_plugins.upstreams.dasheng.releases import RELEASES as VARIANTS

SR = 16000


# --------------------------------------------------------------------------------------------
# An independent, literal rendering of the official math (torchaudio transforms, conv2d patches,
# explicit softmax attention, chunk by chunk) on the official state-dict names.
# --------------------------------------------------------------------------------------------
def reference_hidden(sd, num_heads, wav, x_length=None):
    """Hidden states of ``dasheng.Dasheng(...)(wav[, x_length])``: [emb, blocks 1..L-1, norm(L)]."""
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=512, win_length=512, hop_length=160, f_min=0, f_max=8000, n_mels=64, center=True)
    mel.spectrogram.window.copy_(sd["front_end.0.spectrogram.window"])
    mel.mel_scale.fb.copy_(sd["front_end.0.mel_scale.fb"])
    x = torchaudio.transforms.AmplitudeToDB(top_db=120)(mel(wav))  # [B, 64, F], floor over the batch
    bn = [sd[f"init_bn.1.{n}"] for n in ("running_mean", "running_var", "weight", "bias")]
    x = F.batch_norm(x.unsqueeze(2), bn[0], bn[1], bn[2], bn[3], False, 0.0, 1e-5).squeeze(2)
    x = F.conv2d(x.unsqueeze(1), sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=(64, 4))
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    mask = None
    if x_length is not None:
        mask = torch.arange(x.shape[-1]) >= (x_length // 640).unsqueeze(1)
    outs = []
    for start in range(0, x.shape[-1], 252):
        c = x[..., start:start + 252]
        c = c + sd["time_pos_embed"][..., : c.shape[-1]]
        c = (c + sd["freq_pos_embed"]).flatten(2).transpose(1, 2)  # [B, t, D]
        m = None if mask is None else mask[:, start:start + 252]
        states = [c]
        for i in range(depth):
            p = f"blocks.{i}."
            h = F.layer_norm(c, c.shape[-1:], sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
            b, n, d = h.shape
            qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
            q, k, v = qkv.reshape(b, n, 3, num_heads, d // num_heads).permute(2, 0, 3, 1, 4)
            att = (q @ k.transpose(-2, -1)) * (d // num_heads) ** -0.5
            if m is not None:
                att = att.masked_fill(m[:, None, None, :], torch.finfo(att.dtype).min)
            h = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
            c = c + F.linear(h, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
            h = F.layer_norm(c, c.shape[-1:], sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
            h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                         sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
            c = c + h
            states.append(c)
        states[-1] = F.layer_norm(c, c.shape[-1:], sd["norm.weight"], sd["norm.bias"], 1e-6)
        outs.append(states)
    return [torch.cat([o[i] for o in outs], dim=1) for i in range(depth + 1)]


def max_rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def assert_close_states(ours, ref, rows=slice(None), tol=1e-4):
    assert len(ours) == len(ref)
    t = ref[0].shape[1]
    for i, (h, r) in enumerate(zip(ours, ref)):
        err = max_rel(h[rows, :t], r)
        assert err < tol, f"hidden state {i}: max relative error {err:.2e}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dasheng")
    model = random_encoder(TINY_CONFIG, seed=3)
    pip = write_pip_checkpoint(model, directory / "tiny.pt")
    hf = write_hf_checkpoint(model, directory / "hf")
    return {"pip": str(pip), "hf": str(hf), "sd": to_official_keys(model.state_dict()), "dir": directory}


def wave(seconds, seed=0, scale=0.1):
    return torch.randn(int(seconds * SR), generator=torch.Generator().manual_seed(seed)) * scale


def run(upstream, wavs):
    with torch.no_grad():
        return upstream(wavs)


# --------------------------------------------------------------------------------------------
def test_pip_format_matches_reference(tiny):
    up = hubconf.dasheng_local(ckpt=tiny["pip"]).eval()
    assert up.get_downsample_rates("hidden_states") == 640
    for seconds, seed in ((0.3, 1), (1.0, 2), (3.7, 3)):
        wav = wave(seconds, seed)
        out = run(up, [wav])
        ref = reference_hidden(tiny["sd"], 2, wav[None])
        assert len(out["hidden_states"]) == TINY_CONFIG.depth + 1
        assert out["hidden_states"][0].shape[1] == math.ceil(len(wav) / 640)
        assert_close_states(out["hidden_states"], ref)
        assert torch.equal(out["last_hidden_state"], out["hidden_states"][-1])


def test_huggingface_format_equals_pip_format(tiny):
    wav = wave(2.3, 4)
    pip = run(hubconf.dasheng_local(ckpt=tiny["pip"]).eval(), [wav])["hidden_states"]
    for ckpt in (tiny["hf"], tiny["hf"] + "/model.safetensors"):
        up = hubconf.dasheng_local(ckpt=ckpt).eval()
        hf = run(up, [wav])["hidden_states"]
        for a, b in zip(hf, pip):
            torch.testing.assert_close(a, b, rtol=0, atol=0)  # the computed front end equals the stored one


def test_sizes_come_from_shapes_not_from_stored_config(tmp_path):
    from s3prl_plugins.upstreams.dasheng.config import DashengConfig

    cfg = DashengConfig(embed_dim=192, depth=3, num_heads=3, mlp_hidden_dim=384, chunk_patches=40)
    path = write_pip_checkpoint(random_encoder(cfg), tmp_path / "odd.pt")
    model = hubconf.dasheng_local(ckpt=str(path)).model
    assert (model.config.embed_dim, model.config.depth, model.config.num_heads) == (192, 3, 3)
    assert (model.config.mlp_hidden_dim, model.config.chunk_patches) == (384, 40)
    # a width whose head count no rule can tell: a clear error, and the -g override
    narrow = write_pip_checkpoint(random_encoder(DashengConfig(embed_dim=96, depth=1, num_heads=2, mlp_hidden_dim=96)),
                                  tmp_path / "narrow.pt")
    with pytest.raises(CheckpointError, match="num_heads"):
        hubconf.dasheng_local(ckpt=str(narrow))
    assert hubconf.dasheng_local(ckpt=str(narrow), num_heads=2).model.config.num_heads == 2


def test_long_input_chunks_restart_positions(tiny):
    wav = wave(12.0, 5)  # 1201 frames -> 300 patches = 252 + 48
    up = hubconf.dasheng_local(ckpt=tiny["pip"]).eval()
    out = run(up, [wav])["hidden_states"]
    ref = reference_hidden(tiny["sd"], 2, wav[None])
    assert ref[0].shape[1] == 300
    assert_close_states(out, ref)
    # the second chunk is encoded on its own: its embedding uses time positions 0..47 again
    emb = out[0][0]
    pos = tiny["sd"]["time_pos_embed"][0, :, 0]
    patches_minus_pos = emb[252:300] - pos[:, :48].T
    again = emb[:48] - pos[:, :48].T
    assert not torch.allclose(patches_minus_pos, again)  # different audio ...
    torch.testing.assert_close(emb[252:300] - patches_minus_pos, pos[:, :48].T)  # ... same positions


def test_batch_invariance(tiny):
    up = hubconf.dasheng_local(ckpt=tiny["pip"]).eval()
    quiet = wave(2.0, 7, scale=1e-5)
    quiet[: len(quiet) // 2] = 0  # digital silence: its top_db floor is far below a loud item's
    loud = wave(3.7, 6, scale=0.8)  # peaks above -100 dB + 120 dB: the batch floor would bite
    wavs = [loud, quiet, wave(12.0, 8), wave(0.05, 9), wave(0.3, 10)]
    batched = run(up, wavs)["hidden_states"]
    for i, wav in enumerate(wavs):
        alone = run(up, [wav])["hidden_states"]
        t = math.ceil(len(wav) / 640)  # s3prl's frame count, >= the utterance's own patches
        for layer, (a, b) in enumerate(zip(batched, alone)):
            assert a.shape[1] == math.ceil(max(map(len, wavs)) / 640)
            assert b.shape[1] == t
            err = max_rel(a[i, :t], b[0])  # own frames, and zeros after them as when alone
            assert err < 1e-5, f"item {i} layer {layer}: {err:.2e}"
        ref = reference_hidden(tiny["sd"], 2, wav[None])
        assert_close_states(alone, ref)


def test_official_batch_mode_reproduces_the_batched_official_forward(tiny):
    loud, quiet = wave(3.0, 11, scale=0.5), wave(2.0, 12, scale=1e-5)
    quiet[: len(quiet) // 2] = 0
    wavs = [loud, quiet]
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    lengths = torch.tensor([len(w) for w in wavs])
    ref = reference_hidden(tiny["sd"], 2, padded, x_length=lengths)
    official = run(hubconf.dasheng_local(ckpt=tiny["pip"], batch_mode="official").eval(), wavs)["hidden_states"]
    for i, wav in enumerate(wavs):  # each utterance's own frames; later ones are zero in both modes
        own = (1 + len(wav) // 160) // 4
        assert_close_states([h[i:i + 1, :own] for h in official], [r[i:i + 1, :own] for r in ref])
    # the default mode does not floor the quiet item at the loud item's level
    default = run(hubconf.dasheng_local(ckpt=tiny["pip"]).eval(), wavs)["hidden_states"]
    valid = (1 + len(quiet) // 160) // 4
    assert max_rel(default[-1][1, :valid], official[-1][1, :valid]) > 1e-2
    alone = reference_hidden(tiny["sd"], 2, quiet[None])
    assert max_rel(default[-1][1, :valid], alone[-1][0]) < 1e-4


def test_batch_mode_in_yaml_and_bad_values(tiny, tmp_path):
    config = tmp_path / "dasheng.yaml"
    config.write_text("batch_mode: official\n")
    assert hubconf.dasheng_local(ckpt=tiny["pip"], model_config=str(config)).batch_mode == "official"
    with pytest.raises(ConfigError, match="batch_mode"):
        hubconf.dasheng_local(ckpt=tiny["pip"], batch_mode="whole_batch")
    with pytest.raises(ConfigError, match="dtype"):
        hubconf.dasheng_local(ckpt=tiny["pip"], dtype="int8")


@pytest.mark.parametrize("samples", [1, 100, 300, 479, 480, 800])
def test_short_inputs(tiny, samples):
    up = hubconf.dasheng_local(ckpt=tiny["pip"])
    up.train()  # s3prl's probes also run forward + backward in train mode
    wavs = [wave(samples / SR, 13), wave(0.05, 14), wave(0.02, 15)]
    out = up(wavs)
    for h in out["hidden_states"]:
        assert h.shape == (3, math.ceil(max(map(len, wavs)) / 640), TINY_CONFIG.embed_dim)
        assert torch.isfinite(h).all()
    out["last_hidden_state"].sum().backward()
    assert torch.isfinite(up.model.patch_embed.proj.weight.grad).all()
    # shorter than one patch = the utterance zero-padded to one patch (480 samples)
    up.eval()
    short = wave(samples / SR, 16)
    if samples < 480:
        padded_to_patch = F.pad(short, (0, 480 - samples))
        a, b = run(up, [short])["hidden_states"], run(up, [padded_to_patch])["hidden_states"]
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)


def test_deterministic_and_train_eval_consistent(tiny):
    up = hubconf.dasheng_local(ckpt=tiny["pip"]).eval()
    wavs = [wave(1.0, 17), wave(0.7, 18)]
    a, b = run(up, wavs), run(up, wavs)
    up.train()
    c = run(up, wavs)
    for x, y, z in zip(a["hidden_states"], b["hidden_states"], c["hidden_states"]):
        assert torch.equal(x, y) and torch.equal(x, z)  # no dropout, BN always uses its statistics


def test_bfloat16_encoder_keeps_float32_front_end(tiny):
    up32 = hubconf.dasheng_local(ckpt=tiny["pip"]).eval()
    up16 = hubconf.dasheng_local(ckpt=tiny["pip"], dtype="bfloat16").eval()
    assert up16.model.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert up16.model.front_end.mel_fb.dtype == torch.float32
    assert up16.model.front_end.bn.running_var.dtype == torch.float32
    wav = wave(1.5, 19)
    a, b = run(up32, [wav])["last_hidden_state"], run(up16, [wav])["last_hidden_state"]
    assert b.dtype == torch.float32
    assert ((a - b).norm() / a.norm()) < 0.05


def test_named_entries_use_the_cache_and_explain_failed_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("S3PRL_PLUGINS_CACHE_DIR", str(tmp_path / "cache"))
    for name, variant in VARIANTS.items():
        assert variant.url.startswith("https://zenodo.org/records/11511780/files/")
        assert cached_download_path(variant.url).parent == tmp_path / "cache" / "download"

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    # torch.hub (the downloader of non-Hugging-Face files) holds its own reference to urlopen
    monkeypatch.setattr("torch.hub.urlopen", offline)
    with pytest.raises(CheckpointError, match="-u dasheng_06B -k <path>") as error:  # a copy fetched by hand
        hubconf.dasheng_06B()
    assert "dasheng_06b.pt" in str(error.value) and "network unreachable" in str(error.value)
    assert make_checkpoint("dasheng_base", tmp_path) == {"ckpt": None, "model_config": None}
    up = hubconf.dasheng_base(ckpt=None, model_config=None, refresh=False)
    assert len(run(up.eval(), [wave(0.5, 20)])["hidden_states"]) == TINY_CONFIG.depth + 1


def test_make_checkpoint_for_local_entry(tmp_path):
    for layout in ("pip", "huggingface"):
        spec = make_checkpoint("dasheng_local", tmp_path / layout, layout=layout)
        up = hubconf.dasheng_local(**spec)
        assert up.model.config.embed_dim == TINY_CONFIG.embed_dim


# --------------------------------------------------------------------------------------------
# bad checkpoints and inputs
# --------------------------------------------------------------------------------------------
def test_bad_checkpoints(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        hubconf.dasheng_local(ckpt=str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="No checkpoint"):
        hubconf.dasheng_local()
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        hubconf.dasheng_local(ckpt=str(empty))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(tiny["pip"], "rb").read()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        hubconf.dasheng_local(ckpt=str(truncated))
    other = tmp_path / "other.pt"
    torch.save({"model": {"encoder.layers.0.weight": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="no Dasheng encoder weights"):
        hubconf.dasheng_local(ckpt=str(other))
    m2d_like = tmp_path / "m2d.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(768, 1, 16, 16), "blocks.0.attn.qkv.weight": torch.zeros(3, 3),
                "pos_embed": torch.zeros(1, 2, 768)}, m2d_like)
    with pytest.raises(CheckpointError, match="m2d"):
        hubconf.dasheng_local(ckpt=str(m2d_like))
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        hubconf.dasheng_local(ckpt=str(folder))
    sd = dict(tiny["sd"])
    del sd["blocks.1.mlp.fc2.weight"]
    incomplete = tmp_path / "incomplete.pt"
    torch.save({"model": sd, "config": {}}, incomplete)
    with pytest.raises(CheckpointError, match="missing blocks.1.mlp.fc2.weight"):
        hubconf.dasheng_local(ckpt=str(incomplete))
    sd = dict(tiny["sd"])
    sd["norm.weight"] = torch.ones(7)
    wrong = tmp_path / "wrong.pt"
    torch.save({"model": sd, "config": {}}, wrong)
    with pytest.raises(CheckpointError, match="norm.weight has shape"):
        hubconf.dasheng_local(ckpt=str(wrong))


def test_bad_inputs(tiny):
    up = hubconf.dasheng_local(ckpt=tiny["pip"])
    with pytest.raises(UpstreamInputError, match="list"):
        up(torch.zeros(2, 16000))
    with pytest.raises(UpstreamInputError, match="empty"):
        up([torch.zeros(0)])
    with pytest.raises(UpstreamInputError, match="NaN"):
        up([torch.full((1000,), float("nan"))])
