"""The profiler: SUPERB challenge protocol, HuBERT Base's published 1669 G, CPU attention counting."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from s3prl_plugins import profile
from s3prl_plugins.profile import (HUBERT_BASE_PUBLISHED, SUPERB_CHALLENGE_LENGTHS, HubertBaseReference, ProfileError,
                                   count_macs, profile_upstream)


def test_protocol_lengths_are_the_challenge_set():
    assert len(SUPERB_CHALLENGE_LENGTHS) == 32
    assert list(SUPERB_CHALLENGE_LENGTHS) == sorted(SUPERB_CHALLENGE_LENGTHS)
    assert sum(SUPERB_CHALLENGE_LENGTHS) / 16000 == pytest.approx(224.86)


def test_hubert_base_reproduces_published_macs():
    with torch.device("meta"):
        model = HubertBaseReference()
    result = profile_upstream(model, name="hubert_base", device="meta")
    # matrix products and convolutions alone, then with the element-wise attention terms that the
    # challenge's DeepSpeed profiler counted for nn.MultiheadAttention
    assert result.macs == 1_665_522_780_160
    assert result.macs_with_mha_terms == HUBERT_BASE_PUBLISHED["macs"]
    assert result.macs_per_second == pytest.approx(7.407e9, rel=1e-3)
    # torchaudio's HuBERT Base lacks the pre-training-only final_proj, label embeddings and mask
    # embedding (768*256+256 + 504*256 + 768) that the challenge's count included
    assert result.params + 326_656 == HUBERT_BASE_PUBLISHED["params"]


class _Attention(torch.nn.Module):
    def forward(self, wavs):
        x = torch.stack(list(wavs))[:, :4096].reshape(len(wavs), 2, 64, 32)  # [B, heads, T, d]
        return F.scaled_dot_product_attention(x, x, x)


def test_cpu_attention_kernel_is_counted():
    wavs = [torch.randn(4096)]
    macs, terms = count_macs(_Attention(), wavs, attention_terms=True)
    assert macs == 2 * (2 * 64 * 64 * 32)  # Q K^T and P V, per head
    meta_macs, _ = count_macs(_Attention(), [w.to("meta") for w in wavs])
    assert meta_macs == macs
    assert terms == 4 * 2 * 64 * 32 + 4 * 2 * 64 * 64


def test_entry_profile_and_cli(tmp_path, capsys):
    from s3prl_plugins.upstreams.melhubert import testing

    paths = testing.make_checkpoint("melhubert_local", tmp_path)
    model = profile.build_upstream("melhubert_local", **paths)
    one = profile_upstream(model, lengths=[16000], attention_terms=False)
    three = profile_upstream(model, lengths=[16000, 32000])
    assert one.params == sum(p.numel() for p in model.parameters())
    assert three.per_utterance_macs[0] == one.macs
    # linear parts double, attention quadruples
    assert 2.0 <= three.per_utterance_macs[1] / three.per_utterance_macs[0] < 4.0
    assert three.total_seconds == 3.0

    out = tmp_path / "profile.json"
    assert profile.main(["melhubert_local", "-k", paths["ckpt"], "--seconds", "1,2", "--json", str(out)]) == 0
    report = capsys.readouterr().out
    assert "MACs per second" in report and f"{three.params:,}" in report
    saved = json.loads(out.read_text())
    assert saved["macs"] == three.macs and saved["lengths"] == [16000, 32000]


def test_errors_are_clear(capsys):
    with pytest.raises(ProfileError, match="800 samples"):
        profile_upstream(torch.nn.Identity(), lengths=[100])
    assert profile.main(["no_such_entry"]) == 2
    assert "unknown entry 'no_such_entry'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        profile.main([])  # neither an entry nor --reference


def test_the_waveform_cnn_counts_as_the_convolutions_it_computes():
    """The channels-last CNN accumulates its taps with in-place baddbmm_, which torch's counter
    misses (ARM-family MACs came out 10 % low before compat.flop_counter counted it)."""
    from s3prl_plugins import compat
    from s3prl_plugins.upstreams.common.wave_cnn import WaveformCNN

    cnn = WaveformCNN([(8, 10, 5), (8, 3, 2), (8, 2, 2)], mode="layer_norm")
    with torch.no_grad(), compat.flop_counter() as counter:
        cnn(torch.randn(2, 1600))
    frames = [(1600 - 10) // 5 + 1]  # 319, then 159 and 79
    frames += [(frames[0] - 3) // 2 + 1]
    frames += [(frames[1] - 2) // 2 + 1]
    macs_per_utterance = frames[0] * 8 * 1 * 10 + frames[1] * 8 * 8 * 3 + frames[2] * 8 * 8 * 2
    assert counter.get_total_flops() == 2 * 2 * macs_per_utterance
