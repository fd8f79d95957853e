"""Side by side: the official implementation against our entry, same checkpoint, same input.

For every architecture below, a random-weight checkpoint is written in its official format at full
size; then fresh processes alternate (official, ours, ours, official, ...), each loading the
checkpoint the way s3prl does (``getattr(hub, entry)(ckpt=..., model_config=...)`` for ours, the
official wrapper's hubconf / ``UpstreamExpert`` for theirs, the ``dasheng`` package's
``Dasheng.from_pretrained`` for Dasheng) and timing ``model(wavs)`` under ``torch.no_grad`` with
``torch.utils.benchmark.Timer``. Printed per architecture and input shape:

* the time of each side per pair and the ratio official / ours (above 1: ours is faster), and the
  median ratio over the pairs;
* FLOPs of one forward (``torch.utils.flop_counter``, attention included) and the achieved
  fraction of the CPU's fp32 matmul peak (measured here with a large ``torch.mm``, or
  ``--peak-gflops``);
* the peak resident memory of the forward (``VmHWM`` reset right before it, weights included);
* the largest relative difference of the outputs (ours against the official, every layer that
  both return, the first utterance).

Setup (once): ``bash benchmarks/setup_official.sh`` (a virtual environment with fairseq, timm and
einops beside this package, and the official repositories at their pinned commits), then
``~/.cache/s3prl-plugins/venvs/official/bin/python benchmarks/bench_official.py``. Options:
``--models armhubert,m2d_vit_base`` (default: all but the Dasheng 0.6B/1.2B), ``--shapes 8x10,1x10``,
``--pairs 3``, ``--threads 2``, ``--json out.json``. Not a test: a shared machine makes the
absolute numbers noisy; the ratio of alternating fresh processes is what to read.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Pair:
    name: str
    #: (folder) -> dict of what both sides need (paths)
    write: Callable[[Path], dict]
    #: official kind of benchmarks/official.py and its keyword arguments, from the written paths
    official: Callable[[dict], tuple[str, dict]]
    #: our hub entry and its keyword arguments
    ours: Callable[[dict], tuple[str, dict]]
    large: bool = False


def _m2d(input_size, patch_size, model_name):
    def write(folder: Path) -> dict:
        from s3prl_plugins.upstreams.m2d import testing
        from s3prl_plugins.upstreams.m2d.config import M2DConfig

        path = folder / f"{model_name}-{input_size[0]}x{input_size[1]}p{patch_size[0]}x{patch_size[1]}-random" / \
            "checkpoint-300.pth"
        if not path.exists():
            testing.write_encoder_only(path, M2DConfig(input_size=input_size, patch_size=patch_size,
                                                       model_name=model_name))
        return {"ckpt": f"{path},-7.1,4.2"}
    return write


def _melhubert(frame_period_ms):
    def write(folder: Path) -> dict:
        from s3prl_plugins.upstreams.melhubert import testing
        from s3prl_plugins.upstreams.melhubert.config import MelHuBERTConfig
        from s3prl_plugins.upstreams.melhubert import config as stats

        path = folder / f"melhubert_{frame_period_ms}ms.ckpt"
        if not path.exists():
            testing.write_official_checkpoint(path, MelHuBERTConfig(feat_emb_dim=4 * frame_period_ms),
                                              optimizer_state=False)
        # the official wrapper reads the statistics from a path; ours defaults to the same file
        return {"ckpt": str(path), "fp": frame_period_ms,
                "stats": str(stats._STATS_DIR / stats.SHIPPED_STATS[stats.DEFAULT_STATS][0])}
    return write


def _student(published, flavour):
    def write(folder: Path) -> dict:
        from s3prl_plugins.upstreams.common.student import testing
        from s3prl_plugins.upstreams.common.student.config import PUBLISHED

        path, yaml_path = folder / f"{published}.ckpt", folder / f"{published}.yaml"
        if not path.exists():
            testing.write_release_checkpoint(path, dict(PUBLISHED[published]), flavour, final_proj=flavour == "star",
                                             yaml_path=yaml_path)
        return {"ckpt": str(path), "model_config": str(yaml_path)}
    return write


def _dasheng(embed_dim, depth, heads):
    def write(folder: Path) -> dict:
        from s3prl_plugins.upstreams.dasheng import testing
        from s3prl_plugins.upstreams.dasheng.config import DashengConfig

        path = folder / f"dasheng_{embed_dim}d{depth}l.pt"
        if not path.exists():
            config = DashengConfig(embed_dim=embed_dim, depth=depth, num_heads=heads, mlp_hidden_dim=4 * embed_dim)
            testing.write_pip_checkpoint(testing.random_encoder(config), path)
        return {"ckpt": str(path)}
    return write


def _student_pair(name, published, flavour, kind):
    return Pair(name, _student(published, flavour),
                lambda p: (kind, {"ckpt": p["ckpt"], "model_config": p["model_config"]}),
                lambda p: (kind, {"ckpt": p["ckpt"], "model_config": p["model_config"]}))


def _dasheng_pair(name, embed_dim, depth, heads, large=False):
    return Pair(name, _dasheng(embed_dim, depth, heads), lambda p: ("dasheng", {"ckpt": p["ckpt"], "variant": name}),
                lambda p: ("dasheng_local", {"ckpt": p["ckpt"]}), large=large)


PAIRS = {p.name: p for p in (
    Pair("m2d_vit_base", _m2d((80, 608), (16, 16), "m2d_vit_base"),
         lambda p: ("m2d", {"ckpt": p["ckpt"]}), lambda p: ("m2d", {"ckpt": p["ckpt"]})),
    Pair("m2d_s_vit_base_80x2", _m2d((80, 400), (80, 2), "m2d_s_vit_base"),
         lambda p: ("m2d", {"ckpt": p["ckpt"]}), lambda p: ("m2d", {"ckpt": p["ckpt"]})),
    Pair("melhubert_20ms", _melhubert(20),
         lambda p: ("melhubert", {"ckpt": p["ckpt"], "fp": 20, "mean_std_npy_path": p["stats"]}),
         lambda p: ("melhubert_local", {"ckpt": p["ckpt"]})),
    Pair("melhubert_10ms", _melhubert(10),
         lambda p: ("melhubert", {"ckpt": p["ckpt"], "fp": 10, "mean_std_npy_path": p["stats"]}),
         lambda p: ("melhubert_local", {"ckpt": p["ckpt"]})),
    _student_pair("armhubert", "ARMHuBERT", "arm", "armhubert"),
    _student_pair("armhubert_s", "ARMHuBERT-S", "arm", "armhubert"),
    _student_pair("maskhubert", "MaskHuBERT", "arm", "maskhubert"),
    _student_pair("starhubert", "STaRHuBERT", "star", "starhubert"),
    _student_pair("starhubert_l", "STaRHuBERT-L", "star", "starhubert"),
    _dasheng_pair("dasheng_base", 768, 12, 12),
    _dasheng_pair("dasheng_06B", 1280, 32, 16, large=True),
    _dasheng_pair("dasheng_12B", 1536, 40, 24, large=True),
)}


# ---------------------------------------------------------------------------------------------
# One side in a fresh process
# ---------------------------------------------------------------------------------------------
def _hidden_states(out) -> list:
    import torch

    if torch.is_tensor(out):  # the dasheng package: the last layer
        return [out]
    return list(out["hidden_states"])


def run_side(spec: dict) -> dict:
    import torch
    from torch.utils import benchmark

    from s3prl_plugins import compat
    from s3prl_plugins.measure import reset_peak_rss, rss_bytes

    torch.set_num_threads(spec["threads"])
    pair = PAIRS[spec["pair"]]
    paths = spec["paths"]
    if spec["side"] == "official":
        sys.path.insert(0, str(HERE))
        from official import official_upstream

        kind, kwargs = pair.official(paths)
        model = official_upstream(kind, **kwargs)
    else:
        compat.apply()
        import s3prl.hub as hub

        entry, kwargs = pair.ours(paths)
        model = getattr(hub, entry)(**kwargs).eval()
    generator = torch.Generator().manual_seed(0)
    batch, samples = spec["batch"], int(spec["seconds"] * 16000)
    wavs = [torch.randn(samples, generator=generator) * 0.1 for _ in range(batch)]
    call = (lambda: model(torch.stack(wavs))) if pair.official(paths)[0] == "dasheng" and spec["side"] == "official" \
        else (lambda: model(wavs))
    result = {"side": spec["side"], "pair": spec["pair"], "batch": batch, "threads": torch.get_num_threads()}
    with torch.no_grad():
        out = call()  # warm-up (allocator, kernel choice)
        if spec.get("save_states"):
            first = [h[0].detach().float().clone() for h in _hidden_states(out)]
            torch.save(first, spec["save_states"])
        del out
        base = rss_bytes("VmRSS")
        reset_peak_rss()
        timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=spec["threads"])
        measurement = timer.timeit(number=1)
        times = [measurement.raw_times[0]]
        for _ in range(spec["repeats"] - 1):
            times.append(timer.timeit(number=1).raw_times[0])
        result["peak_mib"] = (rss_bytes("VmHWM") - base) / 2**20
        result["peak_total_mib"] = rss_bytes("VmHWM") / 2**20
        result["times"] = times
        if spec.get("count_flops"):
            with compat.flop_counter() as counter:
                call()
            result["flops"] = counter.get_total_flops()
    return result


def matmul_peak_gflops(threads: int, sizes=(2048, 3072, 4096), repeats: int = 5) -> float:
    """The best fp32 ``torch.mm`` rate of this CPU with ``threads`` threads (GFLOP/s), over a few
    square sizes: the denominator of every "fraction of peak" printed."""
    import time

    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size), torch.randn(size, size)
        out = torch.mm(a, b)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def _worker(spec: dict, python: str, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    command = [python, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{spec['side']} {spec['pair']} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compare(official_path: Path, ours_path: Path) -> float:
    import torch

    theirs, ours = torch.load(official_path), torch.load(ours_path)
    if len(theirs) == 1 and len(ours) > 1:  # the dasheng package returns the last layer only
        ours = ours[-1:]
    worst = 0.0
    for a, b in zip(ours, theirs):
        frames = min(a.shape[0], b.shape[0])
        a, b = a[:frames], b[:frames]
        worst = max(worst, float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)))
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--models", default=",".join(n for n, p in PAIRS.items() if not p.large),
                        help=f"comma-separated, from: {', '.join(PAIRS)}")
    parser.add_argument("--shapes", default="8x10,1x10", help="BATCHxSECONDS list (default: 8x10,1x10)")
    parser.add_argument("--pairs", type=int, default=3, help="official/ours process pairs per model and shape")
    parser.add_argument("--repeats", type=int, default=2, help="timed forwards per process (the fastest counts)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peak-gflops", type=float, help="fp32 matmul peak (default: measured)")
    parser.add_argument("--work-dir", type=Path, help="checkpoints and saved outputs (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_side(json.loads(args.worker))))
        return 0

    peak = args.peak_gflops or matmul_peak_gflops(args.threads)
    shapes = [tuple(float(v) if i else int(v) for i, v in enumerate(s.split("x"))) for s in args.shapes.split(",")]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_official_"))
    rows = []
    print(f"fp32 matmul peak with {args.threads} threads: {peak:.0f} GFLOP/s; {args.pairs} alternating pairs of "
          f"fresh processes per row, the fastest of {args.repeats} forwards each\n")
    header = (f"{'model':<20}{'input':>8}  {'official s':>10}{'ours s':>8}  {'ratios (official/ours)':<24}{'median':>7}"
              f"{'GFLOP':>8}{'peak% off':>10}{'peak% ours':>11}{'MiB off':>9}{'MiB ours':>9}{'max rel diff':>13}")
    print(header)
    for name in args.models.split(","):
        pair = PAIRS[name]
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        paths = pair.write(folder)
        for batch, seconds in shapes:
            results = {"official": [], "ours": []}
            for index in range(args.pairs):
                order = ("official", "ours") if index % 2 == 0 else ("ours", "official")
                for side in order:
                    spec = {"pair": name, "side": side, "paths": paths, "batch": batch, "seconds": seconds,
                            "threads": args.threads, "repeats": args.repeats, "count_flops": index == 0,
                            "save_states": str(folder / f"{side}-{batch}.pt") if index == 0 else None}
                    results[side].append(_worker(spec, sys.executable, args.timeout))
            official = [min(r["times"]) for r in results["official"]]
            ours = [min(r["times"]) for r in results["ours"]]
            ratios = [o / u for o, u in zip(official, ours)]
            flops_official = results["official"][0]["flops"]
            flops_ours = results["ours"][0]["flops"]
            diff = _compare(folder / f"official-{batch}.pt", folder / f"ours-{batch}.pt")
            row = {"model": name, "batch": batch, "seconds": seconds, "official_s": official, "ours_s": ours,
                   "ratios": ratios, "median_ratio": statistics.median(ratios),
                   "flops_official": flops_official, "flops_ours": flops_ours,
                   "peak_fraction_official": flops_official / statistics.median(official) / 1e9 / peak,
                   "peak_fraction_ours": flops_ours / statistics.median(ours) / 1e9 / peak,
                   "peak_mib_official": max(r["peak_mib"] for r in results["official"]),
                   "peak_mib_ours": max(r["peak_mib"] for r in results["ours"]),
                   "max_rel_diff": diff, "peak_gflops": peak, "threads": args.threads}
            rows.append(row)
            print(f"{name:<20}{f'{batch}x{seconds:g}s':>8}  {statistics.median(official):>10.3f}"
                  f"{statistics.median(ours):>8.3f}  {' '.join(f'{r:.2f}' for r in ratios):<24}"
                  f"{row['median_ratio']:>7.2f}{flops_ours / 1e9:>8.0f}{100 * row['peak_fraction_official']:>9.0f}%"
                  f"{100 * row['peak_fraction_ours']:>10.0f}%{row['peak_mib_official']:>9.0f}{row['peak_mib_ours']:>9.0f}"
                  f"{diff:>13.1e}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
