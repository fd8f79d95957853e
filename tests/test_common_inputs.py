"""Input checks, padding and frame bookkeeping shared by every upstream."""
import pytest
import torch

from s3prl_plugins.upstreams.common.base import Upstream
from s3prl_plugins.upstreams.common.inputs import UpstreamInputError, pad_wavs, validate_wavs
from s3prl_plugins.upstreams.common.masks import (
    conv_output_lengths, fit_frames, num_frames_s3prl, padding_mask, zero_padded_frames)


@pytest.mark.parametrize("bad, words", [
    (torch.zeros(2, 16000), "list(batch)"),
    (torch.zeros(16000), "wrap it in a list"),
    ("wav.wav", "expected a list"),
    ([], "empty"),
    ([torch.zeros(2, 16000)], "multi-channel"),
    ([torch.zeros(1, 1, 16000)], "mono"),
    ([torch.zeros(16000, dtype=torch.int16)], "int16"),
    ([torch.tensor([0.0, float("nan"), 0.1])], "NaN"),
    ([torch.tensor([0.0, float("inf")])], "NaN or Inf"),
    ([torch.zeros(0)], "empty"),
    ([[0.0, 0.1]], "not a torch.Tensor"),
])
def test_bad_input_gets_a_clear_error(bad, words):
    with pytest.raises(UpstreamInputError, match="my_model") as info:
        validate_wavs(bad, model="my_model")
    assert words in str(info.value)


def test_nan_error_names_the_utterance():
    with pytest.raises(UpstreamInputError, match=r"\[1\]"):
        validate_wavs([torch.zeros(10), torch.tensor([float("nan")])], model="m")


def test_pad_wavs_and_masks():
    wavs = [torch.ones(5), torch.ones(3)]
    padded, lengths = pad_wavs(wavs)
    assert padded.shape == (2, 5) and lengths.tolist() == [5, 3]
    assert padded[1, 3:].abs().sum() == 0
    assert padding_mask(lengths).tolist() == [[False] * 5, [False] * 3 + [True] * 2]
    assert pad_wavs(wavs, min_length=8)[0].shape == (2, 8)


@pytest.mark.parametrize("n, rate, expected", [(16000, 320, 50), (16001, 320, 51), (1, 160, 1), (0, 160, 0)])
def test_num_frames_is_len_of_range(n, rate, expected):
    assert num_frames_s3prl(n, rate) == expected == len(range(0, n, rate))


def test_fit_frames_trims_and_pads():
    x = torch.randn(2, 4, 3)
    assert torch.equal(fit_frames(x, 2), x[:, :2])
    y = fit_frames(x, 6)
    assert y.shape == (2, 6, 3) and y[:, 4:].abs().sum() == 0 and torch.equal(y[:, :4], x)


def test_conv_lengths_and_zeroing():
    lengths = torch.tensor([400, 720])
    assert conv_output_lengths(lengths, [400], [160]).tolist() == [1, 3]
    x = torch.ones(2, 3, 1)
    assert zero_padded_frames(x, torch.tensor([1, 3]))[:, :, 0].tolist() == [[1, 0, 0], [1, 1, 1]]


class _Tiny(Upstream):
    downsample_rate = 160
    model_name = "tiny"

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(160, 4)

    def encode(self, padded, lengths):
        frames = padded[:, : padded.shape[1] // 160 * 160].reshape(padded.shape[0], -1, 160)
        h = self.proj(frames)
        return {"hidden_states": [h, h * 2]}


def test_base_upstream_shapes_outputs_like_s3prl():
    model = _Tiny()
    out = model([torch.randn(1000), torch.randn(500)])
    assert len(out["hidden_states"]) == 2
    assert all(h.shape == (2, len(range(0, 1000, 160)), 4) for h in out["hidden_states"])
    assert out["last_hidden_state"] is out["hidden_states"][-1]
    assert model.get_downsample_rates("hidden_states") == 160
    with pytest.raises(UpstreamInputError, match="tiny"):
        model([])


def test_base_upstream_is_abstract():
    with pytest.raises(TypeError):
        Upstream()
