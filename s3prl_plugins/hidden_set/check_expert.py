"""Standalone forward checks of this folder's UpstreamExpert (what s3prl's test/test_upstream.py
and the Featurizer require). Run: python check_expert.py   (exit status 0 = all passed)."""
import importlib.util
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RATE = 16000


def load_expert():
    spec = importlib.util.spec_from_file_location("_hidden_set_expert", HERE / "expert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.UpstreamExpert(ckpt=str(HERE / "model.pt"))


def pseudo_wavs(seconds, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(int(s * RATE), generator=generator) for s in seconds]


def hidden_states(model, wavs):
    out = model(wavs)
    assert isinstance(out, dict), f"forward must return a dict, got {type(out).__name__}"
    hs = out.get("hidden_states")
    assert isinstance(hs, (list, tuple)) and len(hs) > 0, "'hidden_states' must be a non-empty list"
    rate = model.get_downsample_rates("hidden_states")
    rate = rate[0] if isinstance(rate, (list, tuple)) else rate
    assert isinstance(rate, int) and rate > 0, f"get_downsample_rates gave {rate!r}"
    max_len = max(len(w) for w in wavs)
    expected = len(range(0, max_len, rate))
    for i, h in enumerate(hs):
        assert h.dim() == 3 and h.shape[0] == len(wavs), f"hidden_states[{i}] has shape {tuple(h.shape)}"
        assert h.shape == hs[0].shape, f"hidden_states[{i}] {tuple(h.shape)} != hidden_states[0] {tuple(hs[0].shape)}"
        assert h.shape[1] == expected, f"{h.shape[1]} frames for {max_len} samples at rate {rate}; expected {expected}"
        assert torch.isfinite(h).all(), f"hidden_states[{i}] has NaN/Inf"
    assert "last_hidden_state" not in out or out["last_hidden_state"].shape == hs[-1].shape
    return hs


def main():
    torch.manual_seed(0)
    model = load_expert().eval()
    payload = torch.load(HERE / "model.pt", map_location="cpu", weights_only=False)
    probe = payload["probe"]
    checks = []
    with torch.no_grad():
        hs = hidden_states(model, [probe["wav"]])
        assert len(hs) == len(probe["hidden_states"]), "layer count differs from the exporting environment"
        worst = 0.0
        for h, ref in zip(hs, probe["hidden_states"]):
            worst = max(worst, ((h - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item())
        assert worst < 1e-4, f"output differs from the original upstream (max relative error {worst:.2e})"
        checks.append(f"matches the original upstream (max rel. error {worst:.1e})")

        wavs = pseudo_wavs([1.0, 1.7, 0.6], seed=1)
        first = hidden_states(model, wavs)
        again = hidden_states(model, wavs)
        assert all(torch.allclose(a, b) for a, b in zip(first, again)), "eval-mode output is not deterministic"
        for seed in (2, 3):
            assert len(hidden_states(model, pseudo_wavs([0.8, 1.2], seed))) == len(first), "layer count varies (eval)"
        checks.append(f"deterministic in eval mode; {len(first)} layers")
        hidden_states(model, pseudo_wavs([1.0], seed=4))
        checks.append("1 s probe (Featurizer init)")
    model.train()
    with torch.no_grad():
        for seed in (5, 6):
            assert len(hidden_states(model, pseudo_wavs([0.8, 1.2], seed))) == len(first), "layer count varies (train)"
    checks.append("same layer count in train mode")
    with torch.autograd.set_detect_anomaly(True):
        for seconds in ([0.05], [0.05, 0.05], [0.05, 0.5, 1.0]):
            wavs = [w.requires_grad_() for w in pseudo_wavs(seconds, seed=7)]
            total = sum(h.sum() for h in hidden_states(model, wavs))
            total.backward()
            assert all(w.grad is not None for w in wavs), "no gradient reaches the input"
    checks.append("forward + backward on 0.05 s inputs, batches of 1-3, mixed lengths")
    for line in checks:
        print("ok:", line)
    print(f"all checks passed for {payload['entry']}")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        sys.exit(1)
