"""Size, compute and speed of the ARMHuBERT-family students against a HuBERT Base-sized model.

For every published architecture (random weights, the real code path of the s3prl upstream):

* parameters (the published table: ARMHuBERT 26.45M, ARMHuBERT-S 22.39M, MaskHuBERT 26.64M,
  STaRHuBERT 22.31M, STaRHuBERT-L 26.63M);
* MACs in the SUPERB-challenge protocol the papers use (``s3prl_plugins.profile``: 32 test-clean
  lengths, 224.86 s, one utterance per forward; published: HuBERT Base 1669G, ARMHuBERT-S 449.4G,
  STaRHuBERT 463.5G, STaRHuBERT-L 511.9G), and per 10 s of audio with
  ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2) as a fraction of HuBERT Base's;
* throughput (seconds of audio per wall-clock second) and peak resident memory for a batch of
  8 x 10 s, forward only, fp32, and the achieved GFLOP/s as a fraction of the CPU's fp32 peak.

HuBERT Base-sized = the same student code with HuBERT Base's shape (7 convs x 512 channels,
768-d, 12 x 3072 FFN, 12 heads), 94.4M parameters.

Usage: ``python benchmarks/bench_armhubert.py [--batch 8] [--seconds 10] [--repeats 3]
[--peak-gflops 146] [--models ARMHuBERT,STaRHuBERT,...] [--device cpu]``. On a shared machine the
timings are noisy; every model runs in its own subprocess so peak memory is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from s3prl_plugins.measure import reset_peak_rss, rss_bytes, synchronize, time_calls

HUBERT_BASE = {
    "extractor_mode": "default",
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "conv_pos": 128,
    "conv_pos_groups": 16,
}
MODELS = ["ARMHuBERT", "ARMHuBERT-S", "MaskHuBERT", "STaRHuBERT", "STaRHuBERT-L", "HuBERT-Base-sized"]
PUBLISHED_MACS_G = {"HuBERT-Base-sized": 1669.0, "ARMHuBERT-S": 449.4, "STaRHuBERT": 463.5, "STaRHuBERT-L": 511.9}


def _rss_mib(field: str) -> float:
    return rss_bytes(field) / 2**20


def measure(name: str, batch: int, seconds: float, repeats: int, device: str, superb_macs: bool = True) -> dict:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from s3prl_plugins.upstreams.common.student.config import ARM, PUBLISHED, STAR, student_config
    from s3prl_plugins.upstreams.common.student.upstream import StudentUpstream
    from s3prl_plugins.upstreams.common.student.model import StudentModel

    if name == "HuBERT-Base-sized":
        cfg = student_config(HUBERT_BASE, STAR)
    else:
        cfg = student_config(PUBLISHED[name], STAR if name.startswith("STaR") else ARM)
    torch.manual_seed(0)
    upstream = StudentUpstream(StudentModel(cfg), name=name).to(device).eval()
    params = sum(p.numel() for p in upstream.parameters())
    samples = int(seconds * 16000)
    one = [torch.randn(samples, device=device) * 0.1]
    wavs = [torch.randn(samples, device=device) * 0.1 for _ in range(batch)]
    with torch.inference_mode():
        # the math backend, so that attention's matmuls are counted (fused CPU kernels are not)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            upstream(one)
        flops_per_utt = counter.get_total_flops()
        upstream(wavs)  # warm-up
        synchronize(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        base_rss = _rss_mib("VmRSS")
        tracked = reset_peak_rss()
        times = time_calls(lambda: upstream(wavs), repeats=repeats, warmup=0, device=device)
    best = min(times)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else (_rss_mib("VmHWM") - base_rss if tracked else float("nan")))
    superb = None
    if superb_macs and device != "meta":
        from s3prl_plugins.profile import profile_upstream

        result = profile_upstream(upstream, name=name, device=device, attention_terms=False)
        superb = result.macs / 1e9
    return {
        "model": name,
        "params": params,
        "superb_gmacs": superb,
        "gmacs_per_10s": flops_per_utt / 2 / 1e9 * (10.0 / seconds),
        "batch_seconds": best,
        "audio_s_per_s": batch * seconds / best,
        "gflops_per_s": flops_per_utt * batch / best / 1e9,
        "peak_mib": peak,
        "threads": torch.get_num_threads(),
    }


def _write_full_release(path: str) -> None:
    """An ARMHuBERT release file with a HuBERT Base-sized teacher (what the real files carry)."""
    from s3prl_plugins.upstreams.common.student.config import ARM, PUBLISHED, STAR, student_config
    from s3prl_plugins.upstreams.common.student.model import StudentModel
    from s3prl_plugins.upstreams.common.student.testing import write_release_checkpoint

    teacher = StudentModel(student_config(HUBERT_BASE, STAR)).state_dict()
    write_release_checkpoint(path, dict(PUBLISHED["ARMHuBERT"]), ARM, teacher=teacher)


def measure_loading(path: str, how: str) -> dict:
    """Peak resident memory while loading ``path``: our entry vs a plain ``torch.load``."""
    import torch

    from s3prl_plugins.upstreams.armhubert import hubconf, testing  # noqa: F401 - imports are not loading
    from s3prl_plugins.upstreams.common import checkpoint  # noqa: F401

    base = _rss_mib("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    if how == "entry":
        from s3prl_plugins.upstreams.armhubert.hubconf import armhubert_local

        model = armhubert_local(ckpt=path)
        kept = sum(p.numel() for p in model.parameters())
    else:
        from s3prl_plugins.upstreams.common.student.testing import _lightning_attribute_dict

        with _lightning_attribute_dict():  # the class the file pickles, when Lightning is absent
            obj = torch.load(path, map_location="cpu", weights_only=False)
        kept = sum(v.numel() for v in obj["state_dict"].values())
    return {"how": how, "seconds": time.perf_counter() - start, "peak_mib": _rss_mib("VmHWM") - base,
            "params_kept": kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-gflops", type=float, default=146.0, help="fp32 peak of the machine")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--loading", action="store_true",
                        help="also measure the memory of loading a release file that holds the teacher")
    parser.add_argument("--no-superb-macs", action="store_true",
                        help="skip the SUPERB-protocol MACs (32 test-clean lengths, one utterance per forward)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--load-one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batch, args.seconds, args.repeats, args.device,
                                 superb_macs=not args.no_superb_macs)))
        return
    if args.load_one:
        print(json.dumps(measure_loading(*args.load_one)))
        return
    if args.loading:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "ARMHuBERT-with-teacher.ckpt")
            _write_full_release(path)
            size = os.path.getsize(path) / 2**20
            for how in ("entry", "torch.load"):
                out = subprocess.run([sys.executable, __file__, "--load-one", path, how], capture_output=True, text=True)
                if out.returncode:
                    print(out.stderr[-2000:], file=sys.stderr)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"loading a {size:.0f} MiB release file ({how}): peak +{r['peak_mib']:.0f} MiB, "
                      f"{r['seconds']:.1f} s, {r['params_kept'] / 1e6:.2f}M parameters kept")
    rows = []
    for name in args.models.split(","):
        command = [sys.executable, __file__, "--one", name, "--batch", str(args.batch), "--seconds",
                   str(args.seconds), "--repeats", str(args.repeats), "--device", args.device]
        if args.no_superb_macs:
            command.append("--no-superb-macs")
        out = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
        if out.returncode:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["model"] == "HuBERT-Base-sized"), None)
    print(f"batch {args.batch} x {args.seconds:g} s, {args.device}, {rows[0]['threads'] if rows else '?'} threads; "
          "timings on a shared machine are noisy")
    header = (f"{'model':<18}{'params':>12}{'SUPERB GMACs':>13}{'paper':>8}{'GMACs/10s':>11}{'xHuBERT':>9}{'paper x':>9}"
              f"{'batch s':>9}{'audio s/s':>11}{'GFLOP/s':>9}{'% peak':>8}{'peak MiB':>10}")
    print(header)
    for r in rows:
        ratio = r["gmacs_per_10s"] / base["gmacs_per_10s"] if base else float("nan")
        paper = PUBLISHED_MACS_G.get(r["model"])
        paper_ratio = f"{paper / PUBLISHED_MACS_G['HuBERT-Base-sized']:.3f}" if paper else "-"
        superb = f"{r['superb_gmacs']:.1f}" if r.get("superb_gmacs") is not None else "-"
        print(f"{r['model']:<18}{r['params'] / 1e6:>11.2f}M{superb:>13}{paper if paper else '-':>8}"
              f"{r['gmacs_per_10s']:>11.1f}{ratio:>9.3f}{paper_ratio:>9}"
              f"{r['batch_seconds']:>9.2f}{r['audio_s_per_s']:>11.1f}{r['gflops_per_s']:>9.1f}"
              f"{100 * r['gflops_per_s'] / args.peak_gflops:>7.1f}%{r['peak_mib']:>10.0f}")


if __name__ == "__main__":
    main()
