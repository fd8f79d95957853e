"""STaRHuBERT / STaRWavLM upstreams (built on the ARMHuBERT student)."""
from __future__ import annotations

import logging

import pytest
import torch
import yaml

from s3prl_plugins.upstreams.common.student.config import ARM, STAR
from s3prl_plugins.upstreams.starhubert.releases import RELEASES
from s3prl_plugins.upstreams.common.student.testing import tiny_distiller, training_yaml, write_release_checkpoint
from s3prl_plugins.upstreams.common.checkpoint import CheckpointError
from s3prl_plugins.upstreams.starhubert import hubconf
from s3prl_plugins.upstreams.starhubert.testing import make_checkpoint

from .test_armhubert import _frames, _reference_official_batch, _wav

torch.set_num_threads(1)


@pytest.fixture
def star_ckpt(tmp_path):
    ckpt, config = tmp_path / "star.ckpt", tmp_path / "star.yaml"
    student = write_release_checkpoint(ckpt, tiny_distiller(STAR, heads=8), STAR, yaml_path=config, final_proj=True)
    return ckpt, config, student


@pytest.mark.parametrize("final_proj", [True, False])
def test_release_file_with_or_without_final_proj(tmp_path, final_proj):
    ckpt, config = tmp_path / "s.ckpt", tmp_path / "s.yaml"
    student = write_release_checkpoint(ckpt, tiny_distiller(STAR), STAR, yaml_path=config, final_proj=final_proj)
    upstream = hubconf.starhubert(ckpt=str(ckpt), model_config=str(config))
    assert not any(k.startswith("final_proj") for k in upstream.model.state_dict())
    wav = _wav(1.4)
    out = upstream([wav])
    with torch.no_grad():
        expected = student(wav[None], torch.tensor([wav.numel()]))["hidden_states"]
    assert len(out["hidden_states"]) == 4
    for got, want in zip(out["hidden_states"], expected):
        assert got.shape == (1, _frames(wav.numel()), 32)  # raw layer outputs, D wide
        torch.testing.assert_close(got[:, : want.shape[1]], want, rtol=1e-5, atol=1e-5)
    # batch-major, unlike the official wrapper's time-major last_hidden_state
    assert torch.equal(out["last_hidden_state"], out["hidden_states"][-1])


def test_local_entry_without_yaml(star_ckpt):
    ckpt, config, _ = star_ckpt
    a = hubconf.starhubert_local(ckpt=str(ckpt))([_wav(0.7)])
    b = hubconf.starhubert(ckpt=str(ckpt), model_config=str(config))([_wav(0.7)])
    assert all(torch.equal(x, y) for x, y in zip(a["hidden_states"], b["hidden_states"]))


def test_arm_only_yaml_keys_only_warn(tmp_path, caplog):
    """A STaR yaml never holds ARM-only keys officially (its config class would crash on them)."""
    ckpt, config = tmp_path / "s.ckpt", tmp_path / "s.yaml"
    write_release_checkpoint(ckpt, tiny_distiller(STAR), STAR, yaml_path=config,
                             extra_keys={"layerwise_proj": True, "pred_head_final_dim": 768})
    with caplog.at_level(logging.WARNING):
        upstream = hubconf.starhubert(ckpt=str(ckpt), model_config=str(config))
    assert "layerwise_proj" in caplog.text
    assert upstream([_wav(0.4)])["hidden_states"][0].shape[-1] == 32


def test_padded_batch_is_batch_invariant_and_flag_matches_official(star_ckpt, tmp_path):
    ckpt, _, _ = star_ckpt
    default = hubconf.starhubert_local(ckpt=str(ckpt))
    official = hubconf.starhubert_local(ckpt=str(ckpt), official_batching=True)
    wavs = [_wav(1.3), _wav(0.33, 1), _wav(0.8, 2)]
    batch = default(wavs)["hidden_states"]
    for i, wav in enumerate(wavs):
        frames = (wav.numel() - 400) // 320 + 1
        for b, a in zip(batch, default([wav])["hidden_states"]):
            torch.testing.assert_close(b[i, :frames], a[0, :frames], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        reference = _reference_official_batch(official.model, wavs)
    t = reference[0].shape[1]
    for got, want in zip(official(wavs)["hidden_states"], reference):
        torch.testing.assert_close(got[:, :t], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("entry", sorted(RELEASES))
def test_named_release_entries_load_from_the_cache(entry, tmp_path, cache_root):
    spec = make_checkpoint(entry, tmp_path)
    upstream = getattr(hubconf, entry)(**spec)
    out = upstream([_wav(0.6), _wav(0.2, 1)])
    assert len(out["hidden_states"]) == 4 and out["hidden_states"][0].shape == (2, _frames(int(0.6 * 16000)), 32)


def test_release_without_config_uses_its_companion_yaml(tmp_path, monkeypatch):
    """STaR files may lack hyper_parameters: the release's Drive yaml is fetched (here: cached)."""
    from s3prl_plugins.upstreams.common.checkpoint import cached_download_path

    monkeypatch.setenv("S3PRL_PLUGINS_CACHE_DIR", str(tmp_path / "cache"))
    release = RELEASES["starhubert_l"]
    write_release_checkpoint(cached_download_path(release.url, release.filename), tiny_distiller(STAR), STAR,
                             with_hparams=False)
    yaml_path = cached_download_path(release.yaml, release.filename.replace(".ckpt", ".yaml"))
    yaml_path.write_text(yaml.dump(training_yaml(tiny_distiller(STAR), model="starhubert")))
    out = hubconf.starhubert_l()([_wav(0.5)])
    assert out["hidden_states"][0].shape[-1] == 32


def test_arm_checkpoint_through_starhubert_says_which_entry_to_use(tmp_path):
    ckpt = tmp_path / "arm.ckpt"
    write_release_checkpoint(ckpt, tiny_distiller(ARM), ARM)
    with pytest.raises(CheckpointError, match="armhubert_local"):
        hubconf.starhubert_local(ckpt=str(ckpt))


def test_starhubert_local_needs_a_checkpoint():
    with pytest.raises(CheckpointError, match="starhubert_local -k"):
        hubconf.starhubert_local()
