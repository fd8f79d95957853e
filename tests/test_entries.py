"""The fast tier of every entry of ``s3prl_plugins.hub.__all__``, in-process, through the installed s3prl.

For each entry a small random-weight checkpoint in its official format (the family's
``testing.make_checkpoint``), then:

* ``getattr(s3prl.hub, entry)(ckpt=..., model_config=...)`` - what ``run_downstream.py -u`` and the
  hidden parity check call - on a padded batch: the s3prl upstream contract;
* ``s3prl.nn.S3PRLUpstream(entry, path_or_url=..., extra_conf=...)`` + ``s3prl.nn.Featurizer`` as
  ESPnet's ``S3prlFrontend`` uses them (built and probed in eval mode, then trained): forward and
  backward on a padded batch with lengths, gradients reaching the upstream.

The real runners (``run_downstream.py`` / ``run_pretrain.py``) run once per code path in
``test_end_to_end.py`` and the pre-training end-to-end tests.
"""
from __future__ import annotations

import importlib

import pytest
import torch

from s3prl_plugins import hub

LENGTHS = (16000, 9600, 4321)  # samples; one of them not a multiple of any frame rate


@pytest.fixture(autouse=True)
def _same_random_weights_in_any_order():
    """make_checkpoint draws from torch's global generator: the same weights whatever ran before."""
    torch.manual_seed(0)


def _spec(entry: str, folder) -> dict:
    family = importlib.import_module(f"s3prl_plugins.upstreams.{hub.ENTRY_FAMILY[entry]}.testing")
    return family.make_checkpoint(entry, folder)


def _waves(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=generator) for n in LENGTHS]


@pytest.mark.parametrize("entry", hub.__all__)
def test_entry_through_s3prl_hub(entry, tmp_path):
    import s3prl.hub as s3prl_hub

    spec = _spec(entry, tmp_path / "ckpt")
    model = getattr(s3prl_hub, entry)(ckpt=spec.get("ckpt"), model_config=spec.get("model_config"))
    # built in eval mode, as the s3prl hub's own upstreams are used: model(wavs) is deterministic
    in_train_mode = [name for name, module in model.named_modules() if module.training]
    assert not in_train_mode, f"{entry}: built with modules in train mode: {in_train_mode[:5]}"
    rate = model.get_downsample_rates("hidden_states")
    assert isinstance(rate, int) and rate > 0
    with torch.no_grad():
        out = model(_waves())
    states = out["hidden_states"]
    assert isinstance(states, (list, tuple)) and len(states) > 1
    frames = len(range(0, max(LENGTHS), rate))
    sizes = {h.shape[-1] for h in states}
    for h in states:
        assert h.shape[:2] == (len(LENGTHS), frames) and h.dtype == torch.float32 and torch.isfinite(h).all()
    assert len(sizes) == 1, f"{entry}: hidden sizes differ between layers: {sizes}"


@pytest.mark.parametrize("entry", hub.__all__)
def test_entry_through_s3prl_nn_as_espnet_uses_it(entry, tmp_path):
    from s3prl.nn import Featurizer, S3PRLUpstream

    spec = _spec(entry, tmp_path / "ckpt")
    extra = {"model_config": spec["model_config"]} if spec.get("model_config") is not None else {}
    torch.manual_seed(0)
    upstream = S3PRLUpstream(entry, path_or_url=spec.get("ckpt"), extra_conf=extra)
    if getattr(getattr(upstream.upstream, "model", None), "feature_grad_mult", None) is not None:
        upstream.upstream.model.feature_grad_mult = 1.0  # what S3prlFrontend does
    featurizer = Featurizer(upstream)
    assert upstream.training  # S3PRLUpstream probes in eval mode, then trains
    waves = _waves(1)
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lengths = torch.tensor(LENGTHS)
    states, state_lengths = upstream(padded, lengths)
    rate = upstream.downsample_rates[0]
    for h, h_len in zip(states, state_lengths):
        assert h.shape[0] == len(LENGTHS) and h_len.tolist() == [(n - 1) // rate + 1 for n in LENGTHS]
    feats, feat_lengths = featurizer(states, state_lengths)
    assert feats.shape[0] == len(LENGTHS) and feats.shape[-1] == featurizer.output_size
    valid = torch.arange(feats.shape[1])[None, :] < feat_lengths[:, None]
    (feats * valid[..., None]).square().mean().backward()
    grads = [p.grad for p in upstream.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), f"{entry}: no gradient reached it"


#: 0.3-5 s; multiples of 320 and 640 and not (4.3 s and 1.9 s are where the ARM family's trailing
#: frame used to differ between a batch and the utterance alone)
MIXED_LENGTHS = (4800, 30400, 68800, 80000, 12345, 50001)


@pytest.mark.parametrize("entry", hub.__all__)
def test_frames_s3prl_keeps_are_batch_invariant(entry, tmp_path):
    """Each utterance's first ``round(len / rate)`` frames (what s3prl's Featurizer and s3prl.nn
    keep) in a padded batch of mixed lengths equal the utterance run alone, on every layer."""
    import s3prl.hub as s3prl_hub

    spec = _spec(entry, tmp_path / "ckpt")
    model = getattr(s3prl_hub, entry)(ckpt=spec.get("ckpt"), model_config=spec.get("model_config"))
    # built in eval mode, as the s3prl hub's own upstreams are used: model(wavs) is deterministic
    in_train_mode = [name for name, module in model.named_modules() if module.training]
    assert not in_train_mode, f"{entry}: built with modules in train mode: {in_train_mode[:5]}"
    rate = model.get_downsample_rates("hidden_states")
    generator = torch.Generator().manual_seed(2)
    waves = [0.1 * torch.randn(n, generator=generator) for n in MIXED_LENGTHS]
    with torch.no_grad():
        batched = model(waves)["hidden_states"]
        for index, wave in enumerate(waves):
            alone = model([wave])["hidden_states"]
            keep = round(len(wave) / rate)
            for layer, (b, a) in enumerate(zip(batched, alone)):
                kept_b, kept_a = b[index, :keep], a[0, :keep]
                assert kept_b.shape == kept_a.shape == (min(keep, a.shape[1]), a.shape[-1])
                scale = max(1.0, float(kept_a.abs().max()))
                error = float((kept_b - kept_a).abs().max()) / scale
                assert error < 1e-4, f"{entry}: utterance {index} ({len(wave)} samples) layer {layer}: {error:.2e}"


@pytest.mark.parametrize("entry", hub.__all__)
def test_every_floating_input_dtype_is_accepted_the_same_way(entry, tmp_path):
    """float64, float16 and bfloat16 waveforms are converted to the model's dtype (one rule in
    the shared base class), not refused deep inside a convolution."""
    import s3prl.hub as s3prl_hub

    spec = _spec(entry, tmp_path / "ckpt")
    model = getattr(s3prl_hub, entry)(ckpt=spec.get("ckpt"), model_config=spec.get("model_config")).eval()
    waves = _waves(3)
    with torch.no_grad():
        reference = model(waves)["hidden_states"]
        for dtype, tolerance in ((torch.float64, 1e-5), (torch.float16, 5e-2), (torch.bfloat16, 2e-1)):
            out = model([w.to(dtype) for w in waves])["hidden_states"]
            for h, r in zip(out, reference):
                assert h.shape == r.shape and h.dtype == torch.float32
                error = float((h - r).abs().max()) / max(1.0, float(r.abs().max()))
                assert error < tolerance, f"{entry}: {dtype} input differs by {error:.2e}"


def test_mixed_devices_are_named_before_anything_runs():
    from s3prl_plugins.upstreams.common.inputs import UpstreamInputError, validate_wavs

    meta = torch.empty(100, device="meta")  # a second device without a GPU
    with pytest.raises(UpstreamInputError, match=r"different devices \['cpu', 'meta'\]"):
        validate_wavs([torch.zeros(100), meta], model="m")


@pytest.mark.parametrize("entry", hub.__all__)
def test_a_bfloat16_model_keeps_its_front_end_in_float32(entry, tmp_path):
    """``model.to(torch.bfloat16)`` (what a GPU user does for speed): the front end stays float32
    (no rounding of its weights either), the encoder runs in bfloat16, the features stay close."""
    import s3prl.hub as s3prl_hub

    spec = _spec(entry, tmp_path / "ckpt")
    model = getattr(s3prl_hub, entry)(ckpt=spec.get("ckpt"), model_config=spec.get("model_config")).eval()
    def tensors(m):  # buffers that are not saved (filterbanks, windows) too
        return dict([*m.named_parameters(), *m.named_buffers()])

    front = {name: t.clone() for name, t in tensors(model).items() if id(t) in model._front_end_tensors()}
    waves = _waves(4)
    with torch.no_grad():
        reference = model(waves)["hidden_states"]
        model = model.to(torch.bfloat16)
        out = model(waves)["hidden_states"]
    state = tensors(model)
    assert front, f"{entry}: no front-end tensors declared"
    for name, before in front.items():
        assert state[name].dtype == before.dtype and torch.equal(state[name], before), name
    assert model.encoder_dtype == torch.bfloat16
    for h, r in zip(out, reference):
        error = float((h.float() - r).abs().max()) / max(1.0, float(r.abs().max()))
        assert error < 1e-1, f"{entry}: bfloat16 model differs by {error:.2e}"
