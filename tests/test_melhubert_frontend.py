"""The batched Kaldi fbank and MelHuBERT's front end against torchaudio's per-utterance path."""
from __future__ import annotations

import pytest
import torch
import torchaudio

from s3prl_plugins.upstreams.common.fbank import KaldiFbank, kaldi_mel_banks
from s3prl_plugins.upstreams.melhubert.config import load_stats
from s3prl_plugins.upstreams.melhubert.model import MelHuBERTFrontEnd

LENGTHS = (400, 401, 559, 560, 4800, 16000, 16001, 12345)


def _waves(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=generator) for n in lengths]


def _pad(waves):
    lengths = torch.tensor([len(w) for w in waves])
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths


def _torchaudio_fbank(wave, **options):
    return torchaudio.compliance.kaldi.fbank(wave[None], **options)


def test_mel_banks_equal_torchaudio():
    for bins, fft in ((40, 512), (80, 512), (23, 256)):
        reference, _ = torchaudio.compliance.kaldi.get_mel_banks(bins, fft, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
        assert torch.equal(kaldi_mel_banks(bins, fft, 16000.0, 20.0, 0.0)[:, :-1], reference)


@pytest.mark.parametrize("window_type", ["hamming", "povey", "hanning", "rectangular", "blackman"])
def test_batched_fbank_equals_torchaudio_per_utterance(window_type):
    waves = _waves(LENGTHS)
    padded, lengths = _pad(waves)
    options = dict(num_mel_bins=40, window_type=window_type)
    features, num_frames = KaldiFbank(**options)(padded * 2**15, lengths)
    assert features.shape[1] == int(num_frames.max())
    for index, wave in enumerate(waves):
        reference = _torchaudio_fbank(wave * 2**15, sample_frequency=16000, frame_length=25, frame_shift=10,
                                      dither=0.0, **options)
        assert int(num_frames[index]) == reference.shape[0] == 1 + (len(wave) - 400) // 160
        torch.testing.assert_close(features[index, : reference.shape[0]], reference, rtol=1e-5, atol=1e-4)


def test_fbank_refuses_dither_and_unsnipped_edges():
    with pytest.raises(ValueError, match="dither"):
        KaldiFbank(dither=1.0)
    with pytest.raises(ValueError, match="snip_edges"):
        KaldiFbank(snip_edges=False)
    with pytest.raises(ValueError, match="window_type"):
        KaldiFbank(window_type="kaiser")


def test_short_input_counts_as_one_zero_padded_window():
    fbank = KaldiFbank(num_mel_bins=40, window_type="hamming")
    wave = _waves([250])[0]
    features, num_frames = fbank(wave[None] * 2**15, torch.tensor([250]))
    reference = _torchaudio_fbank(torch.nn.functional.pad(wave, (0, 150)) * 2**15, num_mel_bins=40,
                                  window_type="hamming", dither=0.0)
    assert features.shape == (1, 1, 40) and int(num_frames[0]) == 1
    torch.testing.assert_close(features[0], reference, rtol=1e-5, atol=1e-4)


def _official_features(wave, stats, frame_period_ms):
    """The official recipe written out: torchaudio fbank of wave * 2**15, (x - mean) / std, and at
    20 ms the concatenation of even and odd frames with a zero partner for an odd last frame."""
    y = _torchaudio_fbank(wave * 2**15, num_mel_bins=40, sample_frequency=16000, window_type="hamming",
                          frame_length=25, frame_shift=10)
    y = (y - stats.mean) / stats.std
    if frame_period_ms == 20:
        even, odd = y[0::2], y[1::2]
        if odd.shape[0] != even.shape[0]:
            odd = torch.cat([odd, torch.zeros(1, y.shape[1])])
        y = torch.cat([even, odd], dim=1)
    return y


@pytest.mark.parametrize("frame_period_ms", [10, 20])
def test_front_end_matches_official_recipe(frame_period_ms):
    stats = load_stats("libri360")
    front_end = MelHuBERTFrontEnd(frame_period_ms, stats)
    waves = _waves(LENGTHS, seed=1)
    padded, lengths = _pad(waves)
    features, num_frames = front_end(padded, lengths)
    assert features.shape[-1] == 4 * frame_period_ms
    for index, wave in enumerate(waves):
        reference = _official_features(wave, stats, frame_period_ms)
        n = reference.shape[0]
        assert int(num_frames[index]) == n == front_end.num_frames_for(len(wave))
        torch.testing.assert_close(features[index, :n], reference, rtol=1e-5, atol=2e-5)
        # padding value of the official pad_sequence: 0 in the normalised domain
        assert torch.all(features[index, n:] == 0)
