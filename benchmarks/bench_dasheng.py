"""Throughput, peak memory, parameters and MACs of the Dasheng upstream (base, 0.6B, 1.2B).

    python benchmarks/bench_dasheng.py                      # all sizes, batch 8 x 10 s, CPU
    python benchmarks/bench_dasheng.py --sizes base --official /path/with/dasheng  # + official code
    python benchmarks/bench_dasheng.py --device cuda --dtype bfloat16

Each (size, implementation) runs in its own process so that the peak resident memory (CPU) or
the peak allocated memory (CUDA) belongs to that run alone. Weights are random (speed does not
depend on their values); "official" is ``dasheng.Dasheng`` of the pip package (0.0.9) on the same
architecture, called as its batched API ``model(padded, x_length)``. Timings on a shared machine
are noisy; the script reports the median of ``--repeats`` runs after one warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

SIZES = {"base": (768, 12, 12), "06B": (1280, 32, 16), "12B": (1536, 40, 24)}
CPU_PEAK_GFLOPS = 146.0  # fp32 peak of the 2-core development machine


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def worker(args) -> dict:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    d, depth, heads = SIZES[args.size]
    lengths = [int(args.seconds * 16000)] * args.batch
    wavs = [torch.randn(n, device=device) * 0.1 for n in lengths]
    if args.impl == "ours":
        from s3prl_plugins.upstreams.dasheng.expert import DashengUpstream
        from s3prl_plugins.upstreams.dasheng.model import DashengConfig, DashengEncoder

        config = DashengConfig(embed_dim=d, depth=depth, num_heads=heads, mlp_hidden_dim=4 * d)
        encoder = DashengEncoder(config).eval()
        for module in (encoder.patch_embed, *encoder.blocks, encoder.norm):
            module.to(dtype)
        encoder.time_pos_embed.data = encoder.time_pos_embed.data.to(dtype)
        encoder.freq_pos_embed.data = encoder.freq_pos_embed.data.to(dtype)
        model = DashengUpstream(encoder).to(device).eval()
        params = sum(p.numel() for p in encoder.parameters())

        def step():
            return model(wavs)["last_hidden_state"]
    else:
        sys.path.insert(0, args.official)
        from dasheng.pretrained.pretrained import Dasheng

        model = Dasheng(embed_dim=d, depth=depth, num_heads=heads).to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        x_length = torch.tensor(lengths, device=device)

        def step():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                return model(padded, x_length=x_length)

    loaded_gib = _rss_gib()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        # The fused CPU/CUDA attention kernels are invisible to FlopCounterMode: count with the
        # math backend (same FLOPs, spelled out as matmuls), then time with the default kernels.
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    audio = sum(lengths) / 16000
    result = {
        "size": args.size, "impl": args.impl, "device": args.device, "dtype": args.dtype,
        "batch": f"{args.batch} x {args.seconds:g} s", "params_M": params / 1e6,
        "GMACs": flops / 2 / 1e9, "seconds": seconds, "audio_s_per_s": audio / seconds,
        "GFLOP_per_s": flops / seconds / 1e9,
        "peak_GiB": (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else _rss_gib()),
        "after_load_GiB": loaded_gib,
    }
    if device.type == "cpu" and dtype == torch.float32:
        result["fraction_of_peak"] = result["GFLOP_per_s"] / CPU_PEAK_GFLOPS
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="base,06B,12B")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large-repeats", type=int, default=1, help="repeats for the 1.2B model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--official", default=None,
                        help="folder that holds the official `dasheng` package (e.g. a pip --target dir)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    rows = []
    for size in args.sizes.split(","):
        for impl in ["ours"] + (["official"] if args.official else []):
            repeats = args.large_repeats if size == "12B" else args.repeats
            cmd = [sys.executable, __file__, "--worker", "1", "--size", size, "--impl", impl,
                   "--batch", str(args.batch), "--seconds", str(args.seconds), "--repeats", str(repeats),
                   "--device", args.device, "--dtype", args.dtype]
            if args.official:
                cmd += ["--official", args.official]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{size}/{impl} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(lines[-1][7:])
            rows.append(row)
            extra = f", {row['fraction_of_peak']:.0%} of fp32 peak" if "fraction_of_peak" in row else ""
            print(f"{size:>4} {impl:>8} {row['device']}/{row['dtype']} {row['batch']}: {row['seconds']:.2f} s/batch, "
                  f"{row['audio_s_per_s']:.1f} audio-s/s, peak {row['peak_GiB']:.2f} GiB "
                  f"(weights+init {row['after_load_GiB']:.2f}), {row['params_M']:.1f} M params, "
                  f"{row['GMACs']:.0f} GMACs/batch, {row['GFLOP_per_s']:.0f} GFLOP/s{extra}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
