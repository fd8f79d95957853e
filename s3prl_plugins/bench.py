"""Speed, size and memory of every plugin architecture next to a HuBERT Base reference.

``python -m s3prl_plugins.bench [-o bench_out]`` builds each released architecture at full size
with random weights, writes it as an official-format checkpoint and loads it through the real
entry (``m2d_local``, ``melhubert_local``, ...), exactly as ``run_downstream.py`` would. Then, on a
batch of 8 x 10 s (by default) and on CPU plus, where present, CUDA, it measures:

* params (upstream only) and MACs per second of audio (FlopCounterMode, see ``profile``);
* latency of one batch forward under ``torch.no_grad`` (median of ``--repeats`` after a warm-up)
  and throughput in multiples of real time (audio seconds / latency);
* peak memory of the forward: CPU peak resident set (VmHWM, reset before the forward; includes
  the weights), CUDA ``max_memory_allocated``.

Each architecture runs in its own subprocess, so peak memory and thread settings do not leak
between models. Outputs: ``bench.md``, ``bench.csv``, ``bench.json`` and, when matplotlib is
installed, ``bench.png`` (throughput against parameters). ``--checkpoint ENTRY CKPT [CONFIG]``
benchmarks given checkpoints instead of or besides the random-weight architectures.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .measure import reset_peak_rss, rss_bytes, synchronize, time_calls

if TYPE_CHECKING:
    from .upstreams.common.family import Architecture

__all__ = ["architectures", "REFERENCE", "measure", "run_benchmarks", "write_outputs", "main"]


#: the HuBERT Base reference row (built in-process, no checkpoint)
REFERENCE = "hubert_base_reference"


def architectures() -> dict[str, "Architecture | None"]:
    """Every benchmarked architecture: the reference, then each family's (the registry's)."""
    from .upstreams.common.family import families

    found: dict[str, Architecture | None] = {REFERENCE: None}
    for family in families().values():
        for arch in family.architectures:
            found[arch.name] = arch
    return found


def _family_of(arch: Architecture):
    from .upstreams.common.family import family_of_entry

    return family_of_entry(arch.entry)


def _tiny_reference():
    """A 2-layer HuBERT-shaped model (torchaudio) for --tiny smoke runs."""
    import torchaudio

    from .profile import HubertBaseReference

    return HubertBaseReference(torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=None, extractor_conv_bias=False,
        encoder_embed_dim=32, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4,
        encoder_num_layers=2, encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=64,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0,
        aux_num_out=None))


def _build(spec: dict):
    """The upstream for one worker spec (runs inside the worker process)."""
    from . import hub
    from .profile import HubertBaseReference

    if spec.get("entry_checkpoint"):
        entry, ckpt, config = spec["entry_checkpoint"]
        return getattr(hub, entry)(ckpt=ckpt, model_config=config)
    arch = architectures()[spec["arch"]]
    if arch is None:
        return _tiny_reference() if spec["tiny"] else HubertBaseReference()
    directory = Path(spec["work_dir"]) / ("tiny" if spec["tiny"] else "full") / arch.name
    directory.mkdir(parents=True, exist_ok=True)
    family = _family_of(arch)
    if spec["tiny"]:
        paths = family.resolve(family.test_checkpoint)(arch.entry, directory)
    else:
        paths = family.resolve(arch.writer)(directory)
    return getattr(hub, arch.entry)(**paths)


def measure(spec: dict) -> dict:
    """Benchmark one model on one device (called in a worker process)."""
    import torch

    from .profile import count_macs, count_parameters

    device = spec["device"]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    model = _build(spec).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    samples = int(spec["seconds"] * 16000)
    wavs = [torch.randn(samples, generator=generator).to(device) for _ in range(spec["batch"])]
    audio_seconds = spec["batch"] * spec["seconds"]

    macs, _ = count_macs(model, wavs)
    with torch.no_grad():
        model(wavs)  # warm-up (allocator, kernel selection)
        synchronize(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        reset = reset_peak_rss()
        times = time_calls(lambda: model(wavs), repeats=spec["repeats"], warmup=0, device=device)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
        peak_kind = "cuda max_memory_allocated"
    else:
        peak = rss_bytes("VmHWM")
        peak_kind = "cpu peak RSS" if reset else "cpu peak RSS (since process start)"
    latency = statistics.median(times)
    return {
        "name": spec.get("label") or spec["arch"], "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)",
        "params": count_parameters(model), "macs_per_second": macs / audio_seconds,
        "batch": spec["batch"], "seconds": spec["seconds"], "latency_s": latency,
        "throughput_x_realtime": audio_seconds / latency, "peak_memory_bytes": peak, "peak_memory_kind": peak_kind,
        "repeats": spec["repeats"], "tiny": spec["tiny"],
    }


def _run_worker(spec: dict, timeout: float) -> dict:
    env = dict(os.environ)
    if spec.get("threads"):
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    command = [sys.executable, "-m", "s3prl_plugins.bench", "--worker", json.dumps(spec)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"name": spec.get("label") or spec["arch"], "device": spec["device"], "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        last = (result.stderr or result.stdout or f"exit status {result.returncode}").strip().splitlines()[-1]
        return {"name": spec.get("label") or spec["arch"], "device": spec["device"], "error": last[:500]}
    return json.loads(lines[-1])


def run_benchmarks(archs: Sequence[str], checkpoints: Sequence[Sequence[str]], devices: Sequence[str], *,
                   batch: int, seconds: float, repeats: int, work_dir: Path, tiny: bool, threads: int | None,
                   timeout: float, log: Callable[[str], None] = print) -> list[dict]:
    specs = [{"arch": a, "label": a} for a in archs]
    specs += [{"arch": None, "label": f"{c[0]}:{Path(c[1]).name}", "entry_checkpoint": [c[0], c[1], c[2] if len(c) > 2 else None]}
              for c in checkpoints]
    rows = []
    for device in devices:
        for spec in specs:
            spec = dict(spec, device=device, batch=batch, seconds=seconds, repeats=repeats, work_dir=str(work_dir),
                        tiny=tiny, threads=threads)
            log(f"  {spec['label']} on {device} ...")
            row = _run_worker(spec, timeout)
            log(f"    {_summary(row)}")
            rows.append(row)
    return rows


def _summary(row: dict) -> str:
    if "error" in row:
        return f"failed: {row['error']}"
    return (f"{row['params'] / 1e6:.2f} M params, {row['macs_per_second'] / 1e9:.2f} GMACs/s, "
            f"{row['latency_s']:.3f} s, {row['throughput_x_realtime']:.1f}x real time")


COLUMNS = ["name", "device", "params_M", "GMACs_per_s", "latency_s", "throughput_x_realtime", "peak_memory_GiB",
           "batch", "seconds", "device_name", "error"]


def _table_rows(rows: Sequence[dict]) -> list[dict]:
    out = []
    for row in rows:
        if "error" in row:
            out.append({"name": row["name"], "device": row["device"], "error": row["error"]})
            continue
        out.append({
            "name": row["name"], "device": row["device"], "params_M": f"{row['params'] / 1e6:.2f}",
            "GMACs_per_s": f"{row['macs_per_second'] / 1e9:.2f}", "latency_s": f"{row['latency_s']:.3f}",
            "throughput_x_realtime": f"{row['throughput_x_realtime']:.1f}",
            "peak_memory_GiB": "" if row["peak_memory_bytes"] is None else f"{row['peak_memory_bytes'] / 2**30:.2f}",
            "batch": row["batch"], "seconds": row["seconds"], "device_name": row["device_name"], "error": "",
        })
    return out


def plot(rows: Sequence[dict], path: Path) -> bool:
    """Throughput against parameters (log-log), one series per device; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for device in dict.fromkeys(r["device"] for r in rows):
        good = [r for r in rows if r["device"] == device and "error" not in r]
        axis.scatter([r["params"] / 1e6 for r in good], [r["throughput_x_realtime"] for r in good], label=device)
        for r in good:
            axis.annotate(r["name"], (r["params"] / 1e6, r["throughput_x_realtime"]), fontsize=7)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("parameters (M)")
    axis.set_ylabel("throughput (x real time)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_outputs(rows: Sequence[dict], out_dir: Path, note: str = "") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = _table_rows(rows)
    with open(out_dir / "bench.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    shown = COLUMNS[:7] + ["error"] * any(r.get("error") for r in table)
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in shown) + " |" for r in table]
    (out_dir / "bench.md").write_text("\n".join(lines) + "\n\n" + note + "\n")
    (out_dir / "bench.json").write_text(json.dumps(list(rows), indent=2))
    written = [out_dir / "bench.md", out_dir / "bench.csv", out_dir / "bench.json"]
    if plot([r for r in rows], out_dir / "bench.png"):
        written.append(out_dir / "bench.png")
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m s3prl_plugins.bench",
        description="Benchmark every plugin architecture (random weights, official full-size configs, loaded "
                    "through the real entries) and a HuBERT Base reference: params, MACs/s, latency, "
                    "throughput and peak memory on CPU and CUDA. Writes bench.md/.csv/.json (+ bench.png "
                    "with matplotlib).",
        epilog="architectures: " + ", ".join(architectures()) + "\nexamples:\n"
               "  python -m s3prl_plugins.bench -o bench_out\n"
               "  python -m s3prl_plugins.bench --archs hubert_base_reference,melhubert_20ms --devices cpu\n"
               "  python -m s3prl_plugins.bench --archs none --checkpoint melhubert_local my.ckpt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="bench_out", help="folder for the outputs (default: bench_out)")
    parser.add_argument("--archs", default="default",
                        help="comma-separated architecture names, 'default' (all but the >0.5B Dasheng models), "
                             "'all', or 'none' (only --checkpoint runs)")
    parser.add_argument("--checkpoint", nargs="+", action="append", default=[], metavar="ARG",
                        help="ENTRY CKPT [MODEL_CONFIG]: also benchmark this entry with this checkpoint (repeatable)")
    parser.add_argument("--devices", default="auto", help="comma-separated devices; 'auto' = cpu plus cuda if available")
    parser.add_argument("--batch", type=int, default=8, help="utterances per batch (default 8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per utterance (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards after one warm-up (median reported)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--work-dir", help="where the random full-size checkpoints are written and reused "
                                           "(default: OUTPUT/checkpoints)")
    parser.add_argument("--tiny", action="store_true", help="tiny test-size models (a smoke test of the tool, not a benchmark)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per model and device")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return 0
    if args.archs == "default":
        archs = [name for name, arch in architectures().items() if arch is None or not arch.large]
    elif args.archs == "all":
        archs = list(architectures())
    elif args.archs == "none":
        archs = []
    else:
        archs = [a.strip() for a in args.archs.split(",") if a.strip()]
        unknown = [a for a in archs if a not in architectures()]
        if unknown:
            parser.error(f"unknown architecture(s) {unknown}; known: {', '.join(architectures())}")
    for item in args.checkpoint:
        if len(item) not in (2, 3):
            parser.error(f"--checkpoint takes ENTRY CKPT [MODEL_CONFIG], got {item}")
    if not archs and not args.checkpoint:
        parser.error("nothing to benchmark: give --archs or --checkpoint")
    if args.batch < 1 or args.seconds < 0.05 or args.repeats < 1:
        parser.error("--batch and --repeats must be >= 1 and --seconds >= 0.05")
    if args.devices == "auto":
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    out_dir = Path(args.output)
    work_dir = Path(args.work_dir) if args.work_dir else out_dir / "checkpoints"
    print(f"benchmarking {len(archs) + len(args.checkpoint)} model(s) on {', '.join(devices)}: batch {args.batch} x "
          f"{args.seconds:g} s, median of {args.repeats}")
    rows = run_benchmarks(archs, args.checkpoint, devices, batch=args.batch, seconds=args.seconds,
                          repeats=args.repeats, work_dir=work_dir, tiny=args.tiny, threads=args.threads,
                          timeout=args.timeout)
    note = (f"Batch {args.batch} x {args.seconds:g} s of random audio, random weights"
            f"{' (TINY test models: not a benchmark)' if args.tiny else ' in the official full-size architectures'}; "
            f"latency = median of {args.repeats} forwards under no_grad after a warm-up; throughput = audio seconds / "
            "latency; MACs from torch.utils.flop_counter (FLOPs / 2); peak memory: CPU peak RSS during the forward "
            "(weights included), CUDA max_memory_allocated. CPU numbers are noisy on a shared machine.")
    written = write_outputs(rows, out_dir, note)
    print("wrote " + ", ".join(str(p) for p in written))
    if not any(p.suffix == ".png" for p in written):
        print("(no bench.png: matplotlib is not installed; pip install matplotlib for the plot)")
    return 1 if all("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
