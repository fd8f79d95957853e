"""M2D upstream: readers for every official layout, chunking, batching, statistics, bad input.

Small random-weight models (64-d, 2 layers) with the real code paths. The reference below re-does
the official runtime's procedure one utterance at a time (its own log-mel, a python loop over
chunks, no masks), so the batched implementation is checked against the plain definition.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchaudio

from s3prl_plugins.upstreams.common.checkpoint import CheckpointError, cached_download_path
from s3prl_plugins.upstreams.common.inputs import UpstreamInputError
from s3prl_plugins.upstreams.m2d import hubconf, testing
from s3prl_plugins.upstreams.m2d.config import parse_release_name
from s3prl_plugins.upstreams.m2d.model import M2DModel
from s3prl_plugins.upstreams.m2d.norm_stats import SUPERB_TASK_STATS, RunningLogMelStats
from s3prl_plugins.upstreams.m2d.releases import RELEASES

KS = SUPERB_TASK_STATS["speech_commands"]
EPS = torch.finfo(torch.float32).eps


def _wavs(*lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=generator) for n in lengths]


def _full(tmp_path, folder="m2d_vit_base-80x208p16x16-221006-mr7", **kwargs) -> Path:
    config = testing.tiny_config(folder)
    return testing.write_full_checkpoint(tmp_path / folder / "checkpoint-300.pth", config, **kwargs)


# ---------------------------------------------------------------------------------------------
# A plain re-statement of the official procedure, one utterance at a time
# ---------------------------------------------------------------------------------------------
def reference_hidden_states(model: M2DModel, wav: torch.Tensor) -> list[torch.Tensor]:
    cfg = model.config
    rate = cfg.sample_rate
    if rate != 16000:
        wav = torchaudio.functional.resample(wav, 16000, rate)
    mel = torchaudio.transforms.MelSpectrogram(
        rate, n_fft=rate // 40, win_length=rate // 40, hop_length=rate // 100, f_min=50, f_max=rate // 2,
        n_mels=80, power=2.0, center=True, pad_mode="reflect", norm="slaney", mel_scale="slaney",
    )(wav)
    lms = ((mel + EPS).log() - model.norm_mean) / model.norm_std
    x = lms[None, None]
    unit, pt = cfg.input_size[1], cfg.patch_size[1]
    n_freq, unit_steps = cfg.grid_size
    n = x.shape[-1]
    x = torch.nn.functional.pad(x, (0, (pt - n % unit % pt) % pt))
    enc = model.encoder
    per_layer = [[] for _ in enc.blocks]
    for i in range(math.ceil(n / unit)):
        chunk = x[..., i * unit:(i + 1) * unit]
        tokens = enc.patch_embed(chunk)
        steps = tokens.shape[1] // n_freq
        pos = enc.pos_embed[:, 1:].reshape(1, n_freq, unit_steps, -1)[:, :, :steps].reshape(1, n_freq * steps, -1)
        h = torch.cat([enc.cls_token + enc.pos_embed[:, :1], tokens + pos], dim=1)
        for index, block in enumerate(enc.blocks):
            h = block(h)
            out = enc.norm(h) if index == len(enc.blocks) - 1 else h
            per_layer[index].append(out[:, 1:].reshape(1, n_freq, steps, -1).transpose(1, 2).reshape(1, steps, -1))
    return [torch.cat(chunks, dim=1)[0] for chunks in per_layer]


def _assert_close(actual, expected, tol=2e-5):
    scale = expected.abs().max().clamp_min(1e-6)
    assert ((actual - expected).abs().max() / scale).item() < tol


@pytest.mark.parametrize("folder", [
    "m2d_vit_base-80x208p16x16-221006-mr7",   # unit a multiple of the patch width
    "m2d_vit_base-80x101p16x16-240101",       # 1001-style unit: frames dropped at every chunk edge
    "m2d_s_vit_base-80x100p80x2-230201",      # M2D-S 80x2 patches
    "m2d_vit_base-80x40p16x4-230529",         # 16x4 patches
])
def test_matches_per_utterance_reference_across_chunk_edges(tmp_path, folder):
    path = _full(tmp_path, folder)
    upstream = hubconf.m2d(ckpt=f"{path},{KS[0]},{KS[1]}")
    unit = testing.tiny_config(folder).input_size[1]
    # 0.3 s, just below / at / above one and two units (in 160-sample frames), and several chunks
    lengths = [4800, (unit - 2) * 160, (unit - 1) * 160, unit * 160 + 17, (2 * unit) * 160 - 1, 5 * unit * 160 + 999]
    wavs = _wavs(*lengths)
    with torch.no_grad():
        out = upstream(wavs)
        rate = upstream.get_downsample_rates("hidden_states")
        assert rate == 160 * testing.tiny_config(folder).patch_size[1]
        hidden = out["hidden_states"]
        assert len(hidden) == 2 and out["last_hidden_state"] is hidden[-1]
        assert all(h.shape == (len(wavs), len(range(0, max(lengths), rate)), upstream.get_output_dim()) for h in hidden)
        for b, wav in enumerate(wavs):
            expected = reference_hidden_states(upstream.model, wav)
            valid = min(expected[0].shape[0], round(len(wav) / rate))
            for layer, ref in zip(hidden, expected):
                _assert_close(layer[b, :valid], ref[:valid])


def test_batch_invariance_and_no_padding_leak(tmp_path):
    upstream = hubconf.m2d_local(ckpt=str(_full(tmp_path, "m2d_s_vit_base-80x100p80x2-230201")), model_config="ks")
    wavs = _wavs(700, 16000, 41000, 3300, 31999)  # 31999 samples: exactly two whole chunks
    with torch.no_grad():
        batch = upstream(wavs)["hidden_states"]
        for b, wav in enumerate(wavs):
            alone = upstream([wav])["hidden_states"]
            frames = alone[0].shape[1]
            for layer_batch, layer_alone in zip(batch, alone):
                _assert_close(layer_batch[b, :frames], layer_alone[0], tol=1e-5)
        # changing another item's audio never changes this item's frames
        other = upstream([wavs[0], torch.ones(41000)])["hidden_states"]
        frames = upstream([wavs[0]])["hidden_states"][0].shape[1]
        _assert_close(other[-1][0, :frames], batch[-1][0, :frames], tol=1e-5)


def test_every_official_layout_gives_the_same_features(tmp_path):
    folder = "m2d_vit_base-80x208p16x16-240101"
    config = testing.tiny_config(folder)
    writers = {
        "full legacy": lambda p: testing.write_full_checkpoint(p, config, seed=3),
        "full with norm_stats": lambda p: testing.write_full_checkpoint(p, config, seed=3, norm_stats=(-7.0, 4.0)),
        "M2D-S": lambda p: testing.write_full_checkpoint(p, config, seed=3, variant="m2d_s"),
        "M2D-AS": lambda p: testing.write_full_checkpoint(p, config, seed=3, variant="m2d_as"),
        "M2D-X": lambda p: testing.write_full_checkpoint(p, config, seed=3, variant="m2d_x"),
        "M2D-CLAP": lambda p: testing.write_full_checkpoint(p, config, seed=3, variant="m2d_clap"),
        "encoder only": lambda p: testing.write_encoder_only(p, config, seed=3),
        "CLAP encoder only": lambda p: testing.write_encoder_only(p, config, seed=3, clap=True),
        "EVAR fine-tuned": lambda p: testing.write_evar_checkpoint(p, config, seed=3),
        "CLAP 2025": lambda p: testing.write_clap2025_checkpoint(p, config, seed=3),
    }
    wavs = _wavs(9000, 40000)
    outputs = {}
    for index, (name, write) in enumerate(writers.items()):
        path = write(tmp_path / str(index) / folder / "weights.pth")
        with torch.no_grad():
            outputs[name] = hubconf.m2d_local(ckpt=f"{path},-10.0,4.0")(wavs)["hidden_states"]
    first = outputs.pop("full legacy")
    for name, hidden in outputs.items():
        for a, b in zip(hidden, first):
            assert torch.equal(a, b), name


def test_release_zip_from_named_entry(tmp_path, cache_root, capsys):
    spec = testing.make_checkpoint("m2d_s_vit_base_6s", tmp_path)
    assert spec["ckpt"] is None
    upstream = hubconf.m2d_s_vit_base_6s(ckpt="-10.5,4.1")
    assert upstream.config.input_size == (80, 608) and upstream.config.patch_size == (80, 2)
    assert (upstream.model.norm_mean, upstream.model.norm_std) == (-10.5, 4.1)
    assert upstream(_wavs(16000))["hidden_states"][0].shape == (1, 50, upstream.get_output_dim())
    # -k PATH on a named entry: a copy of the release fetched by hand (here: one that does not exist)
    with pytest.raises(CheckpointError, match="not found: /some/file.pth"):
        hubconf.m2d_s_vit_base_6s(ckpt="/some/file.pth")
    # a copy without statistics: the advice passes the same copy to the same entry
    capsys.readouterr()
    copy = tmp_path / "copy.zip"
    shutil.copy(cached_download_path(RELEASES["m2d_s_vit_base_6s"].url), copy)
    hubconf.m2d_s_vit_base_6s(ckpt=str(copy))
    assert f"`-u m2d_s_vit_base_6s -k {copy},MEAN,STD`" in capsys.readouterr().err


def test_32k_model_resamples_inside(tmp_path):
    testing.make_checkpoint("m2d_as_vit_base_32k", tmp_path)
    upstream = hubconf.m2d_as_vit_base_32k(model_config="er")
    assert upstream.config.sample_rate == 32000 and upstream.get_downsample_rates("x") == 2560
    wav = _wavs(16000 * 3 + 5)[0]
    with torch.no_grad():
        hidden = upstream([wav])["hidden_states"]
    assert hidden[0].shape[1] == len(range(0, len(wav), 2560))
    expected = reference_hidden_states(upstream.model, wav)
    _assert_close(hidden[-1][0], expected[-1][: hidden[-1].shape[1]])


def test_config_from_name_args_and_g(tmp_path):
    assert parse_release_name("m2d_s_vit_base-80x608p80x2-230220")["patch_size"] == (80, 2)
    assert parse_release_name("m2d_as_vit_base-80x608p16x16p32k-240413_enconly")["sample_rate"] == 32000
    parsed = parse_release_name("m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025")
    assert parsed["input_size"] == (80, 1001) and parsed["extra"] == ("B", "TI")
    assert parse_release_name("checkpoint-300") is None

    config = testing.tiny_config("m2d_s_vit_base-80x100p80x2-230201")
    # a renamed folder: the full checkpoint's stored args still tell the sizes
    full = testing.write_full_checkpoint(tmp_path / "renamed" / "checkpoint-1000.pth", config)
    assert hubconf.m2d_local(ckpt=f"{full},-10,4").config.input_size == (80, 100)
    # the file name is the second place the official runtime looks
    named = testing.write_encoder_only(tmp_path / "plain" / "m2d_s_vit_base-80x100p80x2-230201.pth", config)
    assert hubconf.m2d_local(ckpt=f"{named},-10,4").config.patch_size == (80, 2)
    # nothing says the sizes: a clear error, then -g fixes it
    bare = testing.write_encoder_only(tmp_path / "plain" / "weights.pth", config)
    with pytest.raises(CheckpointError, match="release folder name"):
        hubconf.m2d_local(ckpt=f"{bare},-10,4")
    yaml = tmp_path / "sizes.yaml"
    yaml.write_text("input_size: 80x100\npatch_size: 80x2\nnorm_mean: -10\nnorm_std: 4\n")
    assert hubconf.m2d_local(ckpt=str(bare), model_config=str(yaml)).config.input_size == (80, 100)
    # -g sizes and rate in either spelling, each unreadable value named
    up = hubconf.m2d_local(ckpt=str(bare), input_size=[80, 100], patch_size="80x2", sample_rate="16K",
                           norm_mean=-10, norm_std=4)
    assert (up.config.patch_size, up.config.sample_rate) == ((80, 2), 16000)
    for key, bad in (("patch_size", "80 by 2"), ("sample_rate", "fast")):
        options = {**dict(input_size="80x100", patch_size="80x2", norm_mean=-10, norm_std=4), key: bad}
        with pytest.raises(CheckpointError, match=f"-g.*{key} must look like.*{bad!r}"):
            hubconf.m2d_local(ckpt=str(bare), **options)


def test_name_that_disagrees_with_the_weights(tmp_path):
    config = testing.tiny_config("m2d_vit_base-80x208p16x16-240101")
    wrong = tmp_path / "m2d_s_vit_base-80x400p80x2-230201" / "checkpoint-300.pth"
    testing.write_full_checkpoint(wrong, config)
    with pytest.raises(CheckpointError, match=r"disagrees with the weights.*patch size 16x16"):
        hubconf.m2d_local(ckpt=f"{wrong},-10,4")
    wrong_len = tmp_path / "m2d_vit_base-80x608p16x16-240101" / "checkpoint-300.pth"
    testing.write_full_checkpoint(wrong_len, config)
    with pytest.raises(CheckpointError, match="positional rows"):
        hubconf.m2d_local(ckpt=f"{wrong_len},-10,4")


def test_statistics_from_all_sources(tmp_path, capsys):
    path = _full(tmp_path, norm_stats=(-6.5, 4.5))
    legacy = _full(tmp_path / "legacy")
    # 1. -k PATH,MEAN,STD (the official form), and the official keyword arguments
    up = hubconf.m2d(ckpt=f"{path},-11.0,4.25")
    assert (up.model.norm_mean, up.model.norm_std) == (-11.0, 4.25)
    up = hubconf.m2d_local(ckpt=str(path), norm_mean=-12.0, norm_std=4.0)
    assert (up.model.norm_mean, up.model.norm_std) == (-12.0, 4.0)
    # 2. -g YAML and -g SUPERB task name
    yaml = tmp_path / "stats.yaml"
    yaml.write_text("norm_mean: -9.5\nnorm_std: 3.5\n")
    up = hubconf.m2d_local(ckpt=str(path), model_config=str(yaml))
    assert (up.model.norm_mean, up.model.norm_std) == (-9.5, 3.5)
    for task in ("fluent_commands", "ic"):
        up = hubconf.m2d_local(ckpt=str(path), model_config=task)
        assert (up.model.norm_mean, up.model.norm_std) == SUPERB_TASK_STATS["fluent_commands"]
    # 3. the checkpoint's norm_stats
    capsys.readouterr()
    up = hubconf.m2d_local(ckpt=str(path))
    assert (up.model.norm_mean, up.model.norm_std) == (-6.5, 4.5)
    assert "norm_stats" in capsys.readouterr().out
    # 4. none: the official default, with a message that says how to give them
    up = hubconf.m2d_local(ckpt=str(legacy))
    assert (up.model.norm_mean, up.model.norm_std) == (-7.1, 4.2)
    message = capsys.readouterr().err
    assert "[m2d_local] warning: no normalisation statistics" in message
    assert "m2d_calcnorm" in message and ",MEAN,STD" in message
    # the statistics change the features
    wav = _wavs(8000)
    with torch.no_grad():
        a = hubconf.m2d(ckpt=f"{path},-11.0,4.25")(wav)["last_hidden_state"]
        b = hubconf.m2d(ckpt=f"{path},-7.0,4.25")(wav)["last_hidden_state"]
    assert not torch.allclose(a, b)


def test_bad_statistics_arguments(tmp_path):
    path = _full(tmp_path)
    half = tmp_path / "half.yaml"
    half.write_text("norm_mean: -9.5\n")
    with pytest.raises(CheckpointError, match="norm_std"):
        hubconf.m2d_local(ckpt=str(path), model_config=str(half))
    with pytest.raises(CheckpointError, match="neither a file nor a SUPERB task"):
        hubconf.m2d_local(ckpt=str(path), model_config="no_such_task")
    with pytest.raises(CheckpointError, match="PATH,MEAN,STD"):
        hubconf.m2d()
    with pytest.raises(ValueError, match="std > 0"):
        hubconf.m2d(ckpt=f"{path},-10,0")


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        hubconf.m2d_local(ckpt=str(tmp_path / "missing.pth"))
    good = _full(tmp_path)
    truncated = tmp_path / "m2d_vit_base-80x208p16x16-221006-mr7" / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        hubconf.m2d_local(ckpt=str(truncated))
    hubert_like = tmp_path / "hubert.pt"
    torch.save({"model": {"feature_extractor.conv_layers.0.0.weight": torch.zeros(1),
                          "encoder.layers.0.self_attn.k_proj.weight": torch.zeros(1),
                          "label_embs_concat": torch.zeros(1), "final_proj.weight": torch.zeros(1),
                          "mask_emb": torch.zeros(1)}}, hubert_like)
    with pytest.raises(CheckpointError, match="hubert"):
        hubconf.m2d_local(ckpt=str(hubert_like))
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"weight": torch.zeros(3)}, unrelated)
    with pytest.raises(CheckpointError, match="not an M2D encoder checkpoint"):
        hubconf.m2d_local(ckpt=str(unrelated))


def test_short_inputs_and_backward(tmp_path):
    upstream = hubconf.m2d(ckpt=f"{_full(tmp_path)},-10,4")
    for lengths in ([1], [150], [800], [800, 12, 16000]):
        out = upstream(_wavs(*lengths))
        for h in out["hidden_states"]:
            assert h.shape[1] == len(range(0, max(lengths), 2560)) and torch.isfinite(h).all()
    upstream.train()
    out = upstream(_wavs(800, 1600, 400))
    sum(h.square().mean() for h in out["hidden_states"]).backward()
    grad = upstream.model.encoder.patch_embed.proj.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(UpstreamInputError):
        upstream([torch.zeros(2, 1600)])
    with pytest.raises(UpstreamInputError):
        upstream([torch.full((1600,), float("nan"))])


def test_calcnorm_prints_exact_statistics_and_keeps_running(tmp_path, capsys):
    path = _full(tmp_path)
    yaml = tmp_path / "calc.yaml"
    yaml.write_text("calcnorm_updates: 3\n")
    upstream = hubconf.m2d_calcnorm(ckpt=f"{path},0,1", model_config=str(yaml))
    wavs = _wavs(8000, 12000, 5000, 7000)
    with torch.no_grad():
        upstream([torch.randn(16000)])  # the Featurizer's start-up probe: not counted
        first = upstream(wavs[:2])["last_hidden_state"]
        upstream(wavs[2:])
        again = upstream(wavs[:2])["last_hidden_state"]  # keeps running after the report
    assert torch.equal(first, again)  # normalisation does not drift while measuring
    out = capsys.readouterr().out
    expected = RunningLogMelStats()
    for wav in wavs:
        lms, frames = upstream.model.log_mel(wav[None], torch.tensor([len(wav)]))
        expected.update(lms, frames)
    values = torch.cat([upstream.model.log_mel(w[None], torch.tensor([len(w)]))[0].flatten() for w in wavs]).double()
    assert expected.mean == pytest.approx(values.mean().item(), rel=1e-9)
    assert expected.std == pytest.approx(values.std(unbiased=False).item(), rel=1e-6)
    import re

    final = out[out.index("final"):]
    mean, std = (float(v) for v in re.search(rf"-k {re.escape(str(path))},([-0-9.e]+),([-0-9.e]+)", final).groups())
    assert mean == pytest.approx(expected.mean, rel=1e-9) and std == pytest.approx(expected.std, rel=1e-9)
    assert f"norm_mean: {mean!r}" in final and f"norm_std: {std!r}" in final


def test_statistics_command_on_files(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    wav = _wavs(16000)[0]
    soundfile.write(tmp_path / "a.wav", wav.numpy(), 16000)
    result = subprocess.run([sys.executable, "-m", "s3prl_plugins.upstreams.m2d.norm_stats", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    stats = RunningLogMelStats()
    model = M2DModel(testing.tiny_config())
    stats.update(*model.log_mel(torch.from_numpy(soundfile.read(tmp_path / "a.wav", dtype="float32")[0])[None],
                                torch.tensor([16000])))
    assert f"mean={stats.mean!r}" in result.stdout


def test_log_mel_matches_nnaudio_when_installed():
    features = pytest.importorskip("nnAudio.features")
    from s3prl_plugins.upstreams.common.logmel import LogMelSpectrogram

    ours = LogMelSpectrogram(sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=80,
                             f_min=50, f_max=8000)
    official = features.MelSpectrogram(sr=16000, n_fft=400, win_length=400, hop_length=160, n_mels=80,
                                       fmin=50, fmax=8000, center=True, power=2, verbose=False)
    wavs = _wavs(16000, 4321)
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    power = ours.power_mel(padded, torch.tensor([len(w) for w in wavs]))
    for b, wav in enumerate(wavs):
        ref = official(wav[None])[0]
        _assert_close(power[b, :, : ref.shape[-1]], ref, tol=1e-5)


def test_hub_module_imports_without_torch():
    code = ("import sys; import s3prl_plugins.upstreams.m2d.hubconf as h; "
            "assert 'torch' not in sys.modules, 'hubconf imported torch'; print(len(h.__all__))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ))
    assert result.returncode == 0, result.stderr


def test_other_release_by_url_and_release_folder(tmp_path, cache_root):
    from s3prl_plugins.upstreams.m2d.releases import OTHER_RELEASE_URLS

    url = next(u for u in OTHER_RELEASE_URLS if "mr7_as_46ab246d" in u)  # the EVAR AS2M fine-tune
    folder = url.rsplit("/", 1)[1][: -len(".zip")]
    testing.write_release_zip(cached_download_path(url), folder, testing.write_evar_checkpoint)
    upstream = hubconf.m2d_local(ckpt=url, model_config="ks")
    assert upstream.config.input_size == (80, 1001)
    # a folder (the unzipped release) works too; two weight files in it are refused by name
    release = cached_download_path(url).with_suffix("")
    assert hubconf.m2d_local(ckpt=str(release), model_config="ks").config.input_size == (80, 1001)
    extra = next(release.rglob("*.pth")).with_name("other.pth")
    extra.write_bytes(b"")
    with pytest.raises(CheckpointError, match="several weight files"):
        hubconf.m2d_local(ckpt=str(release), model_config="ks")


@pytest.mark.parametrize("patch", [(16, 16), (16, 4), (80, 2)])
def test_patch_embedding_equals_the_strided_convolution(patch):
    from s3prl_plugins.upstreams.m2d.model import PatchEmbed

    torch.manual_seed(0)
    embed = PatchEmbed(patch, 32)
    x = torch.randn(3, 1, 80, 10 * patch[1])
    expected = embed.proj(x).flatten(2).transpose(1, 2)  # the official PatchEmbed
    _assert_close(embed(x), expected, tol=1e-5)
