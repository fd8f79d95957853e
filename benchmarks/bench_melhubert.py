"""Throughput, peak memory, parameters and MACs of the MelHuBERT upstream.

    python benchmarks/bench_melhubert.py                    # 20 + 10 ms, HuBERT Base, batch 8 x 10 s, CPU
    python benchmarks/bench_melhubert.py --official /path/to/Speech-SSL-Compression   # + official wrapper
    python benchmarks/bench_melhubert.py --device cuda

Rows (each in its own process, so the peak memory is that run's alone; weights are random, the
speed does not depend on their values):

* ``ours``: ``melhubert_local`` on a full-size checkpoint in the official file layout.
* ``official``: the author's s3prl wrapper (``s3prl_upstream`` of nervjack2/Speech-SSL-Compression,
  imported from ``--official``; never shipped with this package) on the same file. Its hidden
  states are compared with ours on the benchmark batch and the max relative error is printed.
* ``hubert_base``: torchaudio's HuBERT Base (random weights, all 12 layers' features) as the
  MAC reference: the paper reports MelHuBERT needs 33.5 % fewer MACs per second of speech.

MACs = FLOPs / 2 from ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions,
attention counted through the math SDPA backend; the FFT of the front end is not counted). Timings are the median of ``--repeats`` runs
after one warm-up (peak memory covers load + those runs); on the shared 2-core development machine they are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from s3prl_plugins.measure import CPU_PEAK_GFLOPS, rss_bytes, time_calls


def _rss_gib() -> float:
    """Peak resident memory of this process so far."""
    return rss_bytes("VmHWM") / 2**30


def _official_expert_class(folder: str):
    """Import ``s3prl_upstream/expert.py`` (which uses ``from ..interfaces import UpstreamBase``)
    as a subpackage of a throw-away package that provides s3prl's ``interfaces``."""
    import importlib

    root = Path(folder).expanduser().resolve()
    source = root / "s3prl_upstream" if (root / "s3prl_upstream").is_dir() else root
    if not (source / "expert.py").is_file():
        raise SystemExit(f"--official: no s3prl_upstream/expert.py under {root}")
    shim = Path(tempfile.mkdtemp(prefix="official_melhubert_"))
    package = shim / "official_melhubert"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "interfaces.py").write_text("from s3prl.upstream.interfaces import UpstreamBase\n")
    (package / "upstream").symlink_to(source, target_is_directory=True)
    sys.path.insert(0, str(shim))
    return importlib.import_module("official_melhubert.upstream.expert").UpstreamExpert


def _checkpoint(frame_period_ms: int, directory: Path) -> Path:
    from s3prl_plugins.upstreams.melhubert import testing
    from s3prl_plugins.upstreams.melhubert.config import MelHuBERTConfig

    config = MelHuBERTConfig(feat_emb_dim=4 * frame_period_ms)
    path = directory / f"melhubert-{frame_period_ms}ms-random.ckpt"
    if not path.exists():
        state = testing.random_state_dict(config, seed=frame_period_ms)
        testing.write_official_checkpoint(path, config, state=state, optimizer_state=False)
    return path


def _official_model(args, ckpt: Path):
    import torch

    expert_class = _official_expert_class(args.official)
    stats = Path(__file__).resolve().parents[1] / "upstreams/melhubert/stats/libri-960-mean-std.npy"
    load = torch.load
    torch.load = lambda *a, **k: load(*a, **{**k, "weights_only": False})  # Args is a Namespace
    try:
        return expert_class(str(ckpt), mode="melhubert", fp=args.fp, mean_std_npy_path=str(stats))
    finally:
        torch.load = load


def worker(args) -> dict:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    device = torch.device(args.device)
    lengths = [int(args.seconds * 16000)] * args.batch
    wavs = [torch.randn(n, device=device) * 0.1 for n in lengths]
    if args.impl == "hubert_base":
        import torchaudio

        model = torchaudio.models.hubert_base().to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        padded = torch.stack(wavs)
        step_lengths = torch.tensor(lengths, device=device)

        def step():
            return model.extract_features(padded, step_lengths)[0][-1]
    else:
        from s3prl_plugins.upstreams.melhubert.hubconf import melhubert_local

        ckpt = _checkpoint(args.fp, Path(args.workdir))
        if args.impl == "ours":
            model = melhubert_local(ckpt=str(ckpt)).to(device).eval()
            params = sum(p.numel() for p in model.model.parameters())
        else:
            model = _official_model(args, ckpt).to(device).eval()
            params = sum(p.numel() for p in model.upstream_model.parameters())

        def step():
            return model(wavs)["last_hidden_state"]

    loaded_gib = _rss_gib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        times = time_calls(step, repeats=args.repeats, warmup=1, device=device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else _rss_gib()
    # Counted after the timed runs so that its memory does not show in the peak. no_grad, not
    # inference_mode: FlopCounterMode hooks parameters, which fails on inference tensors of
    # parametrized (weight-normed) convolutions such as torchaudio's HuBERT. The math SDPA
    # backend is forced because FlopCounterMode has no formula for the fused CPU attention
    # kernel (it would count attention as free).
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    note = ""
    if args.impl == "official":
        from s3prl_plugins.upstreams.melhubert.hubconf import melhubert_local

        ours = melhubert_local(ckpt=str(ckpt)).to(device).eval()
        with torch.inference_mode():
            theirs, mine = model(wavs), ours(wavs)
        frames = theirs["hidden_states"][0].shape[1]
        error = max(float((a - b[:, :frames]).abs().max() / a.abs().max())
                    for a, b in zip(theirs["hidden_states"], mine["hidden_states"]))
        note = f"max rel err vs ours {error:.1e}"
    seconds = statistics.median(times)
    audio = sum(lengths) / 16000
    result = {
        "impl": args.impl, "fp_ms": args.fp if args.impl != "hubert_base" else 20, "device": args.device,
        "batch": f"{args.batch} x {args.seconds:g} s", "params_M": params / 1e6,
        "GMACs": flops / 2 / 1e9, "GMACs_per_audio_s": flops / 2 / 1e9 / audio, "seconds": seconds,
        "audio_s_per_s": audio / seconds, "GFLOP_per_s": flops / seconds / 1e9,
        "peak_GiB": peak, "after_load_GiB": loaded_gib, "note": note,
    }
    if device.type == "cpu":
        result["fraction_of_peak"] = result["GFLOP_per_s"] / CPU_PEAK_GFLOPS
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frame-periods", default="20,10")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--official", default=None,
                        help="Speech-SSL-Compression checkout (or its s3prl_upstream folder)")
    parser.add_argument("--no-hubert", action="store_true", help="skip the HuBERT Base reference")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--fp", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    plan = []
    for fp in map(int, args.frame_periods.split(",")):
        plan += [("ours", fp)] + ([("official", fp)] if args.official else [])
    if not args.no_hubert:
        plan.append(("hubert_base", 20))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_melhubert_") as workdir:
        # written here, not in the workers, so that their peak memory is the model's alone
        for fp in sorted({fp for impl, fp in plan if impl != "hubert_base"}):
            _checkpoint(fp, Path(workdir))
        for impl, fp in plan:
            cmd = [sys.executable, __file__, "--worker", "1", "--impl", impl, "--fp", str(fp),
                   "--batch", str(args.batch), "--seconds", str(args.seconds), "--repeats", str(args.repeats),
                   "--device", args.device, "--workdir", workdir]
            if args.official:
                cmd += ["--official", args.official]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{impl}/{fp} ms failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(lines[-1][7:])
            rows.append(row)
            extra = f", {row['fraction_of_peak']:.0%} of fp32 peak" if "fraction_of_peak" in row else ""
            name = f"{impl} {fp} ms" if impl != "hubert_base" else "HuBERT Base"
            print(f"{name:>16} {row['device']} {row['batch']}: {row['seconds']:.2f} s/batch, "
                  f"{row['audio_s_per_s']:.1f} audio-s/s, peak {row['peak_GiB']:.2f} GiB "
                  f"(after load {row['after_load_GiB']:.2f}), {row['params_M']:.2f} M params, "
                  f"{row['GMACs']:.0f} GMACs/batch = {row['GMACs_per_audio_s']:.2f} GMACs per audio second, "
                  f"{row['GFLOP_per_s']:.0f} GFLOP/s{extra} {row['note']}", flush=True)
    reference = next((r for r in rows if r["impl"] == "hubert_base"), None)
    if reference:
        for row in rows:
            if row["impl"] == "ours":
                ratio = row["GMACs_per_audio_s"] / reference["GMACs_per_audio_s"]
                change = f"{1 - ratio:.1%} fewer" if ratio < 1 else f"{ratio - 1:.1%} more"
                print(f"MACs per second of speech, MelHuBERT {row['fp_ms']} ms / HuBERT Base: {ratio:.3f} "
                      f"({change})", flush=True)
    for fp in {r["fp_ms"] for r in rows}:
        pair = {r["impl"]: r for r in rows if r["fp_ms"] == fp and r["impl"] in ("ours", "official")}
        if len(pair) == 2:
            print(f"{fp} ms speed-up over the official wrapper: "
                  f"{pair['official']['seconds'] / pair['ours']['seconds']:.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
