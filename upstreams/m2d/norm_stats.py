"""Normalisation statistics of the M2D log-mel input: where they come from, and how to compute them.

M2D standardises the log-mel spectrogram with one scalar mean and std. The official SUPERB recipe
uses the statistics of each downstream data set (``-k ckpt,mean,std``). Sources, first match wins:

1. ``-k PATH,MEAN,STD`` (or the ``norm_mean``/``norm_std`` keyword arguments);
2. ``-g``: a YAML file with ``norm_mean``/``norm_std``, or the name of a SUPERB task whose statistics
   the official README publishes (``-g speech_commands``, ``-g ks``, ...);
3. the checkpoint's own ``norm_stats`` (pre-training statistics; files from 2024 on);
4. otherwise the official runtime's default for the 2022 models, [-7.1, 4.2], with a warning.

The model always says which statistics it uses. :class:`RunningLogMelStats` accumulates exact
statistics over the valid frames of the utterances it sees (``m2d_calcnorm``, or ``python -m
s3prl_plugins.upstreams.m2d.norm_stats FILES...``).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import DEFAULT_STATS

__all__ = [
    "SUPERB_TASK_STATS",
    "DEFAULT_STATS",
    "NormStats",
    "parse_stats_text",
    "stats_from_options",
    "choose_stats",
    "RunningLogMelStats",
]

logger = logging.getLogger(__name__)

#: Published per-task statistics (superb/upstream/m2d/README.md and speech/bat/*.sh of nttcslab/m2d),
#: keyed by s3prl downstream name, with the usual task abbreviations as aliases.
SUPERB_TASK_STATS: dict[str, tuple[float, float]] = {
    "speech_commands": (-11.506255149841309, 4.314857482910156),
    "voxceleb1": (-10.571271, 4.3681135),
    "emotion": (-13.037399291992188, 3.619741439819336),
    "fluent_commands": (-13.017439842224121, 4.417759895324707),
    "ctc": (-10.43253231048584, 4.241369724273682),
    "sv_voxceleb1": (-11.070931, 4.1807961),
    "separation_stft2": (-9.58743667602539, 4.168412208557129),
}
_TASK_ALIASES = {
    "ks": "speech_commands", "sid": "voxceleb1", "er": "emotion", "ic": "fluent_commands",
    "pr": "ctc", "libriphone": "ctc", "ctc_libriphone": "ctc", "asv": "sv_voxceleb1",
    "ss": "separation_stft2",
}



@dataclass(frozen=True)
class NormStats:
    mean: float
    std: float
    source: str

    def __post_init__(self):
        if not (math.isfinite(self.mean) and math.isfinite(self.std)) or self.std <= 0:
            raise ValueError(f"normalisation statistics must be finite with std > 0, got mean={self.mean}, std={self.std}")


def parse_stats_text(text: str) -> tuple[float, float] | None:
    """``"-11.5,4.3"`` -> (-11.5, 4.3); None if ``text`` is not two numbers."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None


def task_stats(name: str) -> tuple[str, tuple[float, float]] | None:
    key = name.strip().lower().replace("-", "_")
    key = _TASK_ALIASES.get(key, key)
    return (key, SUPERB_TASK_STATS[key]) if key in SUPERB_TASK_STATS else None


def stats_from_options(options, where: str) -> NormStats | None:
    """The statistics an entry's options name (:class:`.config.M2DOptions`), or None."""
    if options.norm_mean is not None:
        return NormStats(float(options.norm_mean), float(options.norm_std), where)
    task = options.norm_task or options.task
    if task:
        found = task_stats(str(task))
        if found is None:
            raise ValueError(f"{where}: unknown SUPERB task {task!r} for norm statistics; known: {known_tasks()}")
        key, (mean, std) = found
        return NormStats(mean, std, f"the published statistics of the SUPERB task {key}")
    return None


def known_tasks() -> str:
    return ", ".join(list(SUPERB_TASK_STATS) + sorted(_TASK_ALIASES))


def choose_stats(
    *,
    explicit: tuple[float, float] | None,
    explicit_source: str,
    config_stats: NormStats | None,
    checkpoint_stats: tuple[float, float] | None,
) -> tuple[NormStats, bool]:
    """First available source; returns (stats, is_fallback_default)."""
    if explicit is not None:
        return NormStats(explicit[0], explicit[1], explicit_source), False
    if config_stats is not None:
        return config_stats, False
    if checkpoint_stats is not None:
        return NormStats(checkpoint_stats[0], checkpoint_stats[1], "the checkpoint's norm_stats (pre-training data)"), False
    return NormStats(*DEFAULT_STATS, "the official default for checkpoints without norm_stats"), True


def missing_stats_message(entry: str, ckpt_hint: str | None, *, named: bool = False) -> str:
    """What to do when no statistics were given. ``ckpt_hint``: the ``-k`` path (None for a named
    entry that downloaded its release); ``named``: ``entry`` is a named release, whose ``-k``
    path is a copy of it."""
    if ckpt_hint is None:
        give = f"`-u {entry} -k MEAN,STD`"
        compute = f"`-u m2d_calcnorm -k <the .pth of {entry}>`"
    else:
        give = f"`-u {entry if named else 'm2d'} -k {ckpt_hint},MEAN,STD`"
        compute = f"`-u m2d_calcnorm -k {ckpt_hint}`"
    return (
        f"no normalisation statistics were given and the checkpoint has none, so the "
        f"official runtime's AudioSet default mean={DEFAULT_STATS[0]}, std={DEFAULT_STATS[1]} is used. The "
        f"official SUPERB recipe normalises with the downstream data set's statistics: pass them as {give}, "
        f"or `-g TASK` for a task with published statistics ({', '.join(SUPERB_TASK_STATS)}), or `-g` a YAML "
        f"with norm_mean/norm_std; compute them with {compute}."
    )


class RunningLogMelStats:
    """Exact running mean/std of log-mel values over the valid frames of every utterance seen.

    Unlike the official ``RunningNorm`` (an average of per-batch means that counts the padding of
    each batch), every valid time-frequency value counts once. Sums are kept in float64.
    """

    def __init__(self):
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.utterances = 0

    def update(self, lms, frames) -> None:
        """``lms`` [B, F, T] un-normalised log-mel, ``frames`` [B] valid frames per item."""
        from ..common.masks import padding_mask

        valid = ~padding_mask(frames.to(lms.device), lms.shape[-1])
        values = lms.detach().double() * valid.unsqueeze(1)
        n = int(frames.sum()) * lms.shape[1]
        self.count += n
        self.total += float(values.sum())
        self.total_sq += float((values * values).sum())
        self.utterances += lms.shape[0]

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)

    @property
    def std(self) -> float:
        var = self.total_sq / max(self.count, 1) - self.mean ** 2
        return math.sqrt(max(var, 0.0))

    def report(self, ckpt_hint: str = "CKPT") -> str:
        return (
            f"M2D log-mel statistics over {self.utterances} utterances ({self.count} values): "
            f"mean={self.mean!r}, std={self.std!r}\n"
            f"  use them with: -u m2d -k {ckpt_hint},{self.mean!r},{self.std!r}\n"
            f"  or a YAML for -g containing:\n    norm_mean: {self.mean!r}\n    norm_std: {self.std!r}"
        )


def _iter_audio(paths: list[str]):
    exts = {".wav", ".flac", ".ogg", ".mp3"}
    for text in paths:
        path = Path(text)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in exts)
        elif path.suffix.lower() in (".txt", ".lst", ".list"):
            yield from (Path(line.strip()) for line in path.read_text().splitlines() if line.strip())
        else:
            yield path


def main(argv: list[str] | None = None) -> int:
    """Compute the statistics of a downstream data set from its audio files."""
    parser = argparse.ArgumentParser(
        prog="python -m s3prl_plugins.upstreams.m2d.norm_stats",
        description="Mean/std of M2D's log-mel input over audio files (for -k ckpt,mean,std or -g).",
    )
    parser.add_argument("paths", nargs="+", help="audio files, folders (searched recursively) or .txt lists")
    parser.add_argument("--sample-rate", type=int, default=16000, choices=[16000, 32000],
                        help="model input rate: 32000 for the p32k models (audio is resampled as the upstream does)")
    parser.add_argument("--limit", type=int, default=0, help="stop after this many files (0: all)")
    parser.add_argument("--ckpt", default="CKPT", help="checkpoint path to print in the suggested -k")
    args = parser.parse_args(argv)

    import soundfile
    import torch
    import torchaudio

    from .config import FRONT_ENDS, INPUT_SAMPLE_RATE
    from ..common.logmel import LogMelSpectrogram

    front_end = LogMelSpectrogram(**FRONT_ENDS[args.sample_rate])
    stats = RunningLogMelStats()
    for index, path in enumerate(_iter_audio(args.paths)):
        if args.limit and index >= args.limit:
            break
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        wav = torch.from_numpy(data).mean(dim=1)
        if rate != INPUT_SAMPLE_RATE:
            wav = torchaudio.functional.resample(wav, rate, INPUT_SAMPLE_RATE)
        if args.sample_rate != INPUT_SAMPLE_RATE:
            wav = torchaudio.functional.resample(wav, INPUT_SAMPLE_RATE, args.sample_rate)
        lms, frames = front_end(wav.unsqueeze(0), torch.tensor([wav.numel()]))
        stats.update(lms, frames)
    if stats.utterances == 0:
        print("no audio files found", file=sys.stderr)
        return 1
    print(stats.report(args.ckpt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
