"""Throughput, FLOPs and peak memory of the M2D upstream (full-size ViT-B, random weights).

    python benchmarks/bench_m2d.py [--device cpu|cuda] [--batch 8] [--seconds 10] [--repeats 3]

For each patch layout (16x16 with a 6.08 s unit, 80x2 with a 4 s unit) and two workloads
(``equal``: batch x --seconds; ``mixed``: lengths spread evenly from 20 % to 100 % of --seconds, as
in SUPERB batches) it times

* ``batched``: this package's upstream: one log-mel for the whole batch, every valid chunk of
  every utterance through the transformer together (SDPA; whole chunks unmasked, short last
  chunks grouped by length with a key padding mask);
* ``official-order``: the official wrapper's execution order, re-created with the same modules
  (the official code lives outside this repository): the zero-padded batch is transformed as if
  the padding were audio, and cut into chunks of the padded length, one chunk at a time for the
  whole batch, so short utterances also pay for the chunks of the longest one.

It prints audio seconds per wall second, the FLOPs of one batched forward counted with
``torch.utils.flop_counter.FlopCounterMode`` and the achieved fraction of ``--peak-gflops``
(default 146 GFLOP/s, the fp32 peak of the 2-core CPU this was developed on), and the peak
memory (CUDA: ``max_memory_allocated``; CPU: growth of the process's peak RSS, measured in a fresh
subprocess per configuration). Timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from s3prl_plugins.measure import rss_bytes, time_calls
from s3prl_plugins.upstreams.m2d.config import M2DConfig
from s3prl_plugins.upstreams.m2d.model import M2DModel
from s3prl_plugins.upstreams.m2d.upstream import M2DUpstream
from s3prl_plugins.upstreams.m2d.norm_stats import NormStats

VARIANTS = {
    "16x16": M2DConfig(input_size=(80, 608), patch_size=(16, 16), model_name="m2d_vit_base"),
    "80x2": M2DConfig(input_size=(80, 400), patch_size=(80, 2), model_name="m2d_s_vit_base"),
}


def build(config: M2DConfig, device: str) -> M2DUpstream:
    torch.manual_seed(0)
    model = M2DModel(config, -11.5, 4.3)
    upstream = M2DUpstream(model, NormStats(-11.5, 4.3, "benchmark")).to(device).eval()
    return upstream


def official_order(upstream: M2DUpstream, wavs):
    """The official wrapper's order: padded batch, chunk by chunk, padding treated as audio."""
    model = upstream.model
    unit, pt = model.config.input_size[1], model.config.patch_size[1]
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    full = torch.full((len(wavs),), padded.shape[1], device=padded.device)
    lms, _ = model.log_mel(padded, full)
    x = ((lms - model.norm_mean) / model.norm_std)[:, None]
    n = x.shape[-1]
    x = torch.nn.functional.pad(x, (0, (pt - n % unit % pt) % pt))
    chunks = [model.encoder(x[..., i:i + unit]) for i in range(0, n, unit)]
    return [torch.cat(layer, dim=1) for layer in zip(*chunks)]


def time_it(fn, device: str, repeats: int) -> float:
    return min(time_calls(fn, repeats=repeats, warmup=1, device=device))


def lengths_for(workload: str, batch: int, seconds: float) -> list[int]:
    if workload == "equal":
        return [int(seconds * 16000)] * batch
    return [int(seconds * 16000 * (0.2 + 0.8 * i / max(batch - 1, 1))) for i in range(batch)]


def measure(variant: str, workload: str, mode: str, device: str, batch: int, seconds: float, repeats: int) -> dict:
    upstream = build(VARIANTS[variant], device)
    generator = torch.Generator().manual_seed(0)
    lengths = lengths_for(workload, batch, seconds)
    wavs = [(0.1 * torch.randn(n, generator=generator)).to(device) for n in lengths]
    run = (lambda: upstream(wavs)) if mode == "batched" else (lambda: official_order(upstream, wavs))
    rss_before = rss_bytes("VmHWM")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        best = time_it(run, device, repeats)
        result = {"variant": variant, "workload": workload, "mode": mode, "device": device,
                  "seconds_per_batch": best, "audio_s_per_s": sum(lengths) / 16000 / best}
        if device.startswith("cuda"):
            result["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            result["peak_rss_growth_mb"] = (rss_bytes("VmHWM") - rss_before) / 2**20
        if True:  # FLOPs of both orders: the official one also encodes the padding
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                run()
            result["gflop_per_batch"] = counter.get_total_flops() / 1e9
            result["gflop_per_s"] = result["gflop_per_batch"] / best
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="16x16,80x2")
    parser.add_argument("--workloads", default="equal,mixed")
    parser.add_argument("--modes", default="batched,official-order")
    parser.add_argument("--peak-gflops", type=float, default=146.0, help="device fp32 peak for the utilisation figure")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args()

    if args.one:
        variant, workload, mode = args.one.split(":")
        print(json.dumps(measure(variant, workload, mode, args.device, args.batch, args.seconds, args.repeats)))
        return

    print(f"M2D ViT-B, batch {args.batch} x {args.seconds} s, device {args.device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    rows = []
    for variant in args.variants.split(","):
        for workload in args.workloads.split(","):
            for mode in args.modes.split(","):
                # a fresh process per configuration, so peak memory and caches do not carry over
                command = [sys.executable, __file__, "--one", f"{variant}:{workload}:{mode}", "--device", args.device,
                           "--batch", str(args.batch), "--seconds", str(args.seconds), "--repeats", str(args.repeats)]
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                row = json.loads(output.strip().splitlines()[-1])
                rows.append(row)
                memory = row.get("peak_mem_mb", row.get("peak_rss_growth_mb"))
                print(f"{variant:6s} {workload:6s} {mode:15s} {row['seconds_per_batch']:7.3f} s/batch "
                      f"{row['audio_s_per_s']:7.1f} audio-s/s  peak mem {memory:7.1f} MB  "
                      f"{row['gflop_per_batch']:7.1f} GFLOP/batch {row['gflop_per_s']:6.1f} GFLOP/s "
                      f"({100 * row['gflop_per_s'] / args.peak_gflops:.0f}% of {args.peak_gflops:g})", flush=True)
            times = {r["mode"]: r["seconds_per_batch"] for r in rows
                     if r["variant"] == variant and r["workload"] == workload}
            if len(times) == 2:
                print(f"  -> {variant} {workload}: batched is {times['official-order'] / times['batched']:.2f}x "
                      f"the official order's speed", flush=True)


if __name__ == "__main__":
    main()
