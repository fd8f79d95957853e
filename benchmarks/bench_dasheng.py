"""Throughput, peak memory, parameters and MACs of the Dasheng upstream (base, 0.6B, 1.2B).

    python benchmarks/bench_dasheng.py                          # all sizes, batch 8 x 10 s, CPU
    python benchmarks/bench_dasheng.py --official /dir/with/dasheng --sizes base   # + official code
    python benchmarks/bench_dasheng.py --device cuda --dtype bfloat16

Each (size, implementation) runs in its own process so that the peak resident memory (CPU) or
peak allocated memory (CUDA) belongs to that run alone. With ``--official`` a third process holds
both models and alternates their timed runs, so that both see the same machine load (the speed
ratio of that run is the number to trust on a shared machine). Weights are random (speed does not
depend on their values); "official" is ``dasheng.Dasheng`` of the pip package (0.0.9) with the
same architecture, called as its batched API ``model(padded, x_length)``; ours returns all hidden
states as s3prl needs. ``--large-batch`` shortens the 1.2B runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from s3prl_plugins.measure import CPU_PEAK_GFLOPS, rss_bytes, time_calls

SIZES = {"base": (768, 12, 12), "06B": (1280, 32, 16), "12B": (1536, 40, 24)}


def _rss_gib() -> float:
    return rss_bytes("VmHWM") / 2**30


def _build(impl, size, dtype, device, official_dir):
    """(step function factory, parameter count) of one implementation."""
    import torch

    d, depth, heads = SIZES[size]
    if impl == "ours":
        from s3prl_plugins.upstreams.dasheng.upstream import DashengUpstream
        from s3prl_plugins.upstreams.dasheng.config import DashengConfig
        from s3prl_plugins.upstreams.dasheng.model import DashengEncoder

        encoder = DashengEncoder(DashengConfig(embed_dim=d, depth=depth, num_heads=heads, mlp_hidden_dim=4 * d))
        for module in (encoder.patch_embed, *encoder.blocks, encoder.norm):
            module.to(dtype)
        encoder.time_pos_embed.data = encoder.time_pos_embed.data.to(dtype)
        encoder.freq_pos_embed.data = encoder.freq_pos_embed.data.to(dtype)
        model = DashengUpstream(encoder).to(device).eval()

        def make_step(wavs):
            return lambda: model(wavs)["last_hidden_state"]
    else:
        sys.path.insert(0, official_dir)
        from dasheng.pretrained.pretrained import Dasheng

        model = Dasheng(embed_dim=d, depth=depth, num_heads=heads).to(device).eval()

        def make_step(wavs):
            padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
            x_length = torch.tensor([len(w) for w in wavs], device=device)

            def step():
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    return model(padded, x_length=x_length)
            return step
    return make_step, sum(p.numel() for p in model.parameters())


def worker(args) -> list[dict]:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    lengths = [int(args.seconds * 16000)] * args.batch
    wavs = [torch.randn(n, device=device) * 0.1 for n in lengths]
    impls = ["ours", "official"] if args.impl == "both" else [args.impl]
    steps, params = {}, {}
    for impl in impls:
        make_step, params[impl] = _build(impl, args.size, dtype, device, args.official)
        steps[impl] = make_step(wavs)
    loaded_gib = _rss_gib()
    flops, times = {}, {impl: [] for impl in impls}
    with torch.inference_mode():
        for impl in impls:
            # The fused attention kernels are invisible to FlopCounterMode: count with the math
            # backend (same FLOPs, spelled out as matmuls), then time with the default kernels.
            with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
                steps[impl]()  # also the warm-up
            flops[impl] = counter.get_total_flops()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.repeats):
            for impl in impls:  # alternate, so that both see the same machine load
                times[impl] += time_calls(steps[impl], repeats=1, warmup=0, device=device)
    audio = sum(lengths) / 16000
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else _rss_gib()
    rows = []
    for impl in impls:
        seconds = min(times[impl])
        row = {
            "size": args.size, "impl": impl, "device": args.device, "dtype": args.dtype,
            "batch": f"{args.batch} x {args.seconds:g} s", "params_M": params[impl] / 1e6,
            "GMACs": flops[impl] / 2 / 1e9, "seconds_min": seconds,
            "seconds_median": statistics.median(times[impl]), "audio_s_per_s": audio / seconds,
            "GFLOP_per_s": flops[impl] / seconds / 1e9,
        }
        if args.impl != "both":
            row.update(peak_GiB=peak, after_load_GiB=loaded_gib)
        if device.type == "cpu" and dtype == torch.float32:
            row["fraction_of_peak"] = row["GFLOP_per_s"] / CPU_PEAK_GFLOPS
        rows.append(row)
    if args.impl == "both":
        rows[0]["speedup_vs_official"] = min(times["official"]) / min(times["ours"])
    return rows


def _describe(row) -> str:
    text = (f"{row['size']:>4} {row['impl']:>8} {row['device']}/{row['dtype']} {row['batch']}: "
            f"{row['seconds_min']:.2f} s/batch (median {row['seconds_median']:.2f}), "
            f"{row['audio_s_per_s']:.1f} audio-s/s, {row['params_M']:.1f} M params, "
            f"{row['GMACs']:.0f} GMACs/batch, {row['GFLOP_per_s']:.0f} GFLOP/s")
    if "fraction_of_peak" in row:
        text += f" ({row['fraction_of_peak']:.0%} of fp32 peak)"
    if "peak_GiB" in row:
        text += f", peak {row['peak_GiB']:.2f} GiB (after building {row['after_load_GiB']:.2f})"
    if "speedup_vs_official" in row:
        text += f"; interleaved: {row['speedup_vs_official']:.2f}x the official speed"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="base,06B,12B")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large-batch", type=int, default=None, help="batch size of the 1.2B runs")
    parser.add_argument("--large-repeats", type=int, default=1, help="repeats of the 1.2B runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--official", default=None,
                        help="folder holding the official `dasheng` package (e.g. a pip --target dir)")
    parser.add_argument("--only-interleaved", action="store_true",
                        help="with --official: skip the separate memory runs, only time both together")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    results = []
    for size in args.sizes.split(","):
        large = size == "12B"
        impls = [] if args.official and args.only_interleaved else ["ours"]
        if args.official:
            impls += ([] if args.only_interleaved else ["official"]) + ["both"]
        for impl in impls:
            cmd = [sys.executable, __file__, "--worker", "--size", size, "--impl", impl,
                   "--batch", str(args.large_batch if large and args.large_batch else args.batch),
                   "--seconds", str(args.seconds),
                   "--repeats", str(args.large_repeats if large else args.repeats),
                   "--device", args.device, "--dtype", args.dtype]
            if args.official:
                cmd += ["--official", args.official]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{size}/{impl} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            for row in json.loads(lines[-1][len("RESULT "):]):
                row["run"] = "interleaved" if impl == "both" else "alone"
                results.append(row)
                print(f"[{row['run']:>11}] " + _describe(row), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
