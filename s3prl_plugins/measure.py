"""Timing and memory measurement shared by ``s3prl_plugins.bench`` and ``benchmarks/*.py``.

* :func:`time_calls` - wall-clock seconds of repeated calls after warm-up, with the device
  synchronised around each call (CUDA kernels are asynchronous);
* :func:`rss_bytes` / :func:`reset_peak_rss` - resident memory of this process from
  ``/proc/self/status`` (``VmRSS`` now, ``VmHWM`` peak; resetting the peak needs Linux);
* :data:`CPU_PEAK_GFLOPS` - the fp32 matmul peak of the 2-core development machine, the
  denominator of every "fraction of peak" the benchmarks report.
"""
from __future__ import annotations

import resource
from pathlib import Path
from typing import Callable

__all__ = ["CPU_PEAK_GFLOPS", "synchronize", "time_calls", "rss_bytes", "reset_peak_rss"]

#: fp32 matmul peak of the 2-core development machine (GFLOP/s)
CPU_PEAK_GFLOPS = 146.0


def synchronize(device) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], *, repeats: int, warmup: int = 1, device="cpu") -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls, measured with
    ``torch.utils.benchmark.Timer`` (which synchronises CUDA around each timing) at the current
    thread count."""
    import torch
    from torch.utils import benchmark

    for _ in range(warmup):
        fn()
    synchronize(device)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return [timer.timeit(number=1).raw_times[0] for _ in range(repeats)]


def rss_bytes(field: str = "VmHWM") -> int:
    """``VmHWM`` (peak resident memory) or ``VmRSS`` (current) of this process in bytes.

    /proc is read because ``ru_maxrss`` of a forked worker also carries the parent's size at fork
    time; the getrusage value is the fallback where /proc does not exist.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current resident size (Linux: ``clear_refs`` 5); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
