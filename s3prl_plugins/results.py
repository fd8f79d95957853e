"""Collect s3prl downstream experiment folders into one table, and show Featurizer layer weights.

``python -m s3prl_plugins.results table ROOT_OR_EXPDIR... [-o results.md] [--csv results.csv]``
finds every s3prl experiment folder (a folder with ``args_*.yaml`` written by
``run_downstream.py``) below the given paths and writes one row per upstream (entry + checkpoint)
and one column per task: the test score of the best dev checkpoint, as the leaderboard reports it.

``python -m s3prl_plugins.results layers EXPDIR/dev-best.ckpt [-o weights.png]`` prints the
softmax-normalised weights that the Featurizer learned for each upstream layer (SUPERB users read
them to pick layers), and plots them with matplotlib when it is installed.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import yaml

__all__ = ["Experiment", "read_experiment", "find_experiments", "collect", "results_table", "write_markdown",
           "write_csv", "read_tensorboard_scalars", "read_tensorboard_series", "layer_weights", "plot_layer_weights", "main"]

#: The main score of each task and whether higher is better (s3prl 0.4.18 experts). The
#: classification experts write it to log.log; the others (ASR, PR/SF via ctc, ASV) only to
#: tensorboard, as ``<prefix>/<split>-<metric>``; the first metric found there is used.
TASK_METRIC: dict[str, tuple[tuple[str, bool], ...]] = {
    "speech_commands": (("acc", True),), "fluent_commands": (("acc", True),), "emotion": (("acc", True),),
    "voxceleb1": (("acc", True),), "asr": (("wer", False),),
    "ctc": (("per", False), ("wer", False), ("slot_type_f1", True), ("slot_value_cer", False)),
    "sv_voxceleb1": (("EER", False),),
}
#: short SUPERB names of the tasks, for column headers
TASK_SHORT = {"speech_commands": "KS", "fluent_commands": "IC", "emotion": "ER", "voxceleb1": "SID", "asr": "ASR",
              "ctc": "PR", "sv_voxceleb1": "ASV", "diarization": "SD", "quesst14_dtw": "QbE", "audio_snips": "SF"}

_SCORE_LINE = re.compile(r"^(?P<new>New best on )?(?P<split>[\w.-]+) at step (?P<step>\d+): (?P<value>[-+0-9.eE]+|nan|inf)$")


class ResultsError(ValueError):
    """A folder or checkpoint that is not what the command expects."""


@dataclass
class Experiment:
    expdir: Path
    task: str
    upstream: str
    upstream_ckpt: str | None
    #: {split: [(step, value), ...]} in file order, from log.log
    scores: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    best_dev: tuple[int, float] | None = None
    evaluated: bool = False
    #: last value of each tensorboard scalar tag (e.g. ``speech_commands/test-acc``)
    scalars: dict[str, float] = field(default_factory=dict)
    metric: str = "score"
    higher_is_better: bool = True
    #: every ``upstream*`` argument of the training run (-u, -k, -g, -f, -s, -l, ...): a table row
    upstream_args: dict = field(default_factory=dict)

    @property
    def test_score(self) -> float | None:
        """The test score of the dev-best checkpoint: the last ``test`` line (``-m evaluate -e
        dev-best.ckpt`` appends it), else the test line logged at the best dev step."""
        tests = self.scores.get("test") or self.scores.get("test-clean") or []
        if not tests:
            return None
        if self.evaluated or self.best_dev is None:
            return tests[-1][1]
        at_best = [value for step, value in tests if step == self.best_dev[0]]
        return at_best[-1] if at_best else None

    @property
    def label(self) -> str:
        ckpt = Path(self.upstream_ckpt).name if self.upstream_ckpt else None
        return f"{self.upstream} ({ckpt})" if ckpt else self.upstream

    @property
    def row_key(self) -> tuple:
        """What makes two experiments the same upstream: all of its run_downstream arguments
        (M2D releases are all named checkpoint-300.pth: the file name alone is not enough)."""
        args = {"upstream": self.upstream, "upstream_ckpt": self.upstream_ckpt, **self.upstream_args}
        return tuple(sorted((k, str(v)) for k, v in args.items() if v not in (None, False, "")))


#: run_downstream's defaults: arguments equal to them do not show in a row's label
_UPSTREAM_DEFAULTS = {"upstream_feature_selection": "hidden_states", "upstream_model_name": "model.pt",
                      "upstream_refresh": "False", "upstream_trainable": "False",
                      "upstream_feature_normalize": "False"}
_FLAGS = {"upstream_model_config": "-g", "upstream_trainable": "-f", "upstream_refresh": "-r", "upstream_feature_selection": "-s",
          "upstream_layer_selection": "-l", "upstream_feature_normalize": "--upstream_feature_normalize",
          "upstream_revision": "--upstream_revision", "upstream_model_name": "--upstream_model_name"}


def _row_labels(keys: Sequence[tuple]) -> dict[tuple, str]:
    """A readable, unique label per row: the entry, as much of the checkpoint path as tells the
    rows apart, and the arguments that differ from run_downstream's defaults."""
    def describe(key: tuple, depth: int) -> str:
        args = dict(key)
        parts = ["/".join(Path(args["upstream_ckpt"]).parts[-depth:])] if args.get("upstream_ckpt") else []
        for name, value in key:
            if name in ("upstream", "upstream_ckpt") or _UPSTREAM_DEFAULTS.get(name) == value:
                continue
            flag = _FLAGS.get(name, "--" + name)
            parts.append(flag if value == "True" else f"{flag} {Path(value).name if name.endswith('config') else value}")
        return args["upstream"] + (f" ({', '.join(parts)})" if parts else "")

    for depth in range(1, 64):
        labels = {key: describe(key, depth) for key in keys}
        if len(set(labels.values())) == len(labels):
            break
    return labels


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ResultsError(f"{path} is not valid YAML: {error}") from error
    return data if isinstance(data, dict) else {}


def read_tensorboard_series(expdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the tensorboard event files of ``expdir``: ``{tag: [(step, value), ...]}``
    in file order (tensorboard's ``EventAccumulator``, all events kept)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    except ImportError:  # the runner could not have run without it; be lenient anyway
        return {}
    series: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(expdir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        events = EventAccumulator(str(path), size_guidance={SCALARS: 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
    return series


def read_tensorboard_scalars(expdir: Path) -> dict[str, float]:
    """The last value of every tensorboard scalar of ``expdir``."""
    return {tag: values[-1][1] for tag, values in read_tensorboard_series(expdir).items()}


def _scores_from_tensorboard(experiment: "Experiment", series: dict) -> None:
    """Fill scores/best dev of tasks that log their metric to tensorboard only."""
    for metric, higher in TASK_METRIC.get(experiment.task, ()):
        found = {}
        for tag, values in series.items():
            match = re.match(rf"^[^/]+/(?P<split>[\w.-]+?)-{re.escape(metric)}$", tag, flags=re.IGNORECASE)
            if match:
                found[match["split"]] = values
        if not found:
            continue
        experiment.metric, experiment.higher_is_better = metric, higher
        experiment.scores = dict(found)
        dev = next((found[s] for s in ("dev", "dev-clean", "valid") if s in found), None)
        if dev:
            pick = max if higher else min
            experiment.best_dev = pick(dev, key=lambda sv: sv[1])  # the earliest best, as s3prl keeps it
        return


def read_experiment(expdir: str | Path) -> Experiment:
    """Read one experiment folder written by ``run_downstream.py``."""
    expdir = Path(expdir)
    args_files = sorted(expdir.glob("args_*.yaml"))
    if not args_files:
        raise ResultsError(f"{expdir} is not an s3prl experiment folder (no args_*.yaml from run_downstream.py)")
    runs = [_read_yaml(p) for p in args_files]
    first = next((r for r in runs if r.get("mode") == "train"), runs[0])
    task = first.get("downstream")
    upstream = first.get("upstream")
    if not task or not upstream:
        raise ResultsError(f"{args_files[0]} names no downstream/upstream; was it written by run_downstream.py?")
    experiment = Experiment(expdir=expdir, task=task, upstream=upstream, upstream_ckpt=first.get("upstream_ckpt"),
                            evaluated=any(r.get("mode") == "evaluate" for r in runs),
                            upstream_args={k: v for k, v in first.items()
                                           if k.startswith("upstream_") and k != "upstream_ckpt"})
    log = expdir / "log.log"
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            match = _SCORE_LINE.match(line.strip())
            if not match:
                continue
            step, value = int(match["step"]), float(match["value"])
            if match["new"]:
                if match["split"].startswith("dev"):
                    experiment.best_dev = (step, value)
            else:
                experiment.scores.setdefault(match["split"], []).append((step, value))
    metric, higher = TASK_METRIC.get(task, (("score", True),))[0]
    experiment.metric, experiment.higher_is_better = metric, higher
    series = read_tensorboard_series(expdir)
    experiment.scalars = {tag: values[-1][1] for tag, values in series.items()}
    if not experiment.scores:
        _scores_from_tensorboard(experiment, series)
    return experiment


def find_experiments(paths: Iterable[str | Path]) -> list[Path]:
    """Every folder at or below ``paths`` that holds an ``args_*.yaml`` of run_downstream.py."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise ResultsError(f"{path} does not exist")
        candidates = [path] if path.is_dir() else []
        candidates += sorted({p.parent for p in path.rglob("args_*.yaml")}) if path.is_dir() else []
        for folder in candidates:
            if any(folder.glob("args_*.yaml")) and folder not in found:
                found.append(folder)
    return found


def collect(paths: Iterable[str | Path]) -> list[Experiment]:
    folders = find_experiments(paths)
    if not folders:
        raise ResultsError(f"no s3prl experiment folders (with args_*.yaml) under {', '.join(map(str, paths))}")
    return [read_experiment(folder) for folder in folders]


def results_table(experiments: Sequence[Experiment]) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: one row per upstream (all of its arguments), one column per task (test
    score of dev-best). Where several experiments fill one cell, the cell lists every score."""
    tasks = sorted({e.task for e in experiments}, key=lambda t: (TASK_SHORT.get(t, t)))
    keys: list[tuple] = []
    cells: dict[tuple, list[str]] = {}
    for e in experiments:
        if e.row_key not in keys:
            keys.append(e.row_key)
        score = e.test_score
        text = "n/a" if score is None or math.isnan(score) else f"{score:.4f}"
        if not e.evaluated and score is not None:
            text += "*"
        cells.setdefault((e.row_key, e.task), []).append(text)
    labels = _row_labels(keys)
    metric = {e.task: e.metric for e in experiments}
    header = ["upstream"] + [f"{TASK_SHORT.get(t, t)} {metric[t]}" for t in tasks]
    rows = [[labels[k]] + [" / ".join(cells.get((k, t), [])) for t in tasks] for k in keys]
    return header, rows


def shared_cells(experiments: Sequence[Experiment]) -> list[str]:
    """A line for each table cell that more than one experiment fills (same upstream arguments
    and task: reruns), naming the experiment folders, so no score is hidden."""
    groups: dict[tuple, list[Experiment]] = {}
    for e in experiments:
        groups.setdefault((e.row_key, e.task), []).append(e)
    labels = _row_labels(list(dict.fromkeys(e.row_key for e in experiments)))
    return [f"{labels[key]} / {task}: {len(group)} experiments ({', '.join(str(e.expdir) for e in group)}), "
            "their scores in file order" for (key, task), group in groups.items() if len(group) > 1]


def write_markdown(experiments: Sequence[Experiment]) -> str:
    header, rows = results_table(experiments)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    lines.append("Test score of the best dev checkpoint; `*`: no `-m evaluate -e dev-best.ckpt` run yet "
                 "(the test line logged at the best dev step is shown).")
    for line in shared_cells(experiments):
        lines.append(f"Several experiments in one cell: {line}.")
    lines.append("")
    lines.append("| expdir | task | upstream | best dev (step) | test | evaluated |")
    lines.append("|---|---|---|---|---|---|")
    for e in experiments:
        dev = f"{e.best_dev[1]:.4f} ({e.best_dev[0]})" if e.best_dev else "none"
        test = "n/a" if e.test_score is None else f"{e.test_score:.4f}"
        lines.append(f"| {e.expdir} | {e.task} | {e.label} | {dev} | {test} | {'yes' if e.evaluated else 'no'} |")
    return "\n".join(lines) + "\n"


def write_csv(experiments: Sequence[Experiment]) -> str:
    """Long format: one line per experiment with its scores and tensorboard test scalars."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["expdir", "task", "upstream", "upstream_ckpt", "metric", "best_dev_step", "best_dev",
                     "test", "evaluated", "test_scalars"])
    for e in experiments:
        test_scalars = ";".join(f"{k}={v:g}" for k, v in sorted(e.scalars.items()) if "/test" in k)
        writer.writerow([e.expdir, e.task, e.upstream, e.upstream_ckpt or "", e.metric,
                         e.best_dev[0] if e.best_dev else "", e.best_dev[1] if e.best_dev else "",
                         "" if e.test_score is None else e.test_score, int(e.evaluated), test_scalars])
    return buffer.getvalue()


def layer_weights(checkpoint: str | Path) -> list[float]:
    """Softmax of the Featurizer's layer weights stored in a downstream checkpoint (``dev-best.ckpt``)."""
    import torch

    from .upstreams.common.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint, family="s3prl downstream")
    if not isinstance(state, dict) or "Featurizer" not in state:
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise ResultsError(f"{checkpoint} has no 'Featurizer' entry (found {keys}); pass a checkpoint that "
                           "run_downstream.py saved in an experiment folder, e.g. EXPDIR/dev-best.ckpt")
    weights = state["Featurizer"].get("weights") if isinstance(state["Featurizer"], dict) else None
    if weights is None:
        raise ResultsError(f"{checkpoint}: the Featurizer has no layer weights; the run used a single layer "
                           "(-l N) or a feature that is one tensor (-s KEY), so there is nothing to plot")
    return torch.softmax(weights.float(), dim=-1).tolist()


def text_bars(weights: Sequence[float], width: int = 40) -> str:
    top = max(weights)
    return "\n".join(f"layer {i:2d} {w:7.4f} " + "#" * max(1, round(width * w / top)) for i, w in enumerate(weights))


def plot_layer_weights(weights: Sequence[float], output: str | Path, title: str = "") -> bool:
    """Save a bar plot; returns False (and writes nothing) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axis = plt.subplots(figsize=(max(4, 0.4 * len(weights) + 2), 3))
    axis.bar(range(len(weights)), weights)
    axis.axhline(1 / len(weights), color="grey", linestyle="--", linewidth=0.8, label="uniform")
    axis.set_xlabel("layer (0 = first hidden state)")
    axis.set_ylabel("softmax weight")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m s3prl_plugins.results",
        description="Tabulate s3prl downstream experiment folders, or show the Featurizer's learned layer weights.")
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("table", help="one row per upstream, one column per task (test score of dev-best)",
                           description="Find run_downstream.py experiment folders (args_*.yaml) below the given "
                                       "paths and tabulate the test score of the best dev checkpoint.")
    table.add_argument("paths", nargs="+", help="experiment folders or folders that contain them")
    table.add_argument("-o", "--output", help="write the markdown table here (default: print it)")
    table.add_argument("--csv", help="also write one CSV line per experiment here")
    layers = sub.add_parser("layers", help="Featurizer layer weights of a dev-best.ckpt",
                            description="Print (and plot, if matplotlib is installed) softmax(Featurizer weights) "
                                        "from a checkpoint saved by run_downstream.py.")
    layers.add_argument("checkpoint", help="EXPDIR/dev-best.ckpt (or any states-*.ckpt)")
    layers.add_argument("-o", "--output", help="PNG to write (needs matplotlib)")
    layers.add_argument("--csv", help="write layer,weight lines here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "table":
            experiments = collect(args.paths)
            markdown = write_markdown(experiments)
            if args.output:
                Path(args.output).write_text(markdown)
                print(f"wrote {args.output} ({len(experiments)} experiments)")
            else:
                print(markdown, end="")
            if args.csv:
                Path(args.csv).write_text(write_csv(experiments))
                print(f"wrote {args.csv}")
            return 0
        weights = layer_weights(args.checkpoint)
        print(text_bars(weights))
        if args.csv:
            Path(args.csv).write_text("layer,weight\n" + "".join(f"{i},{w}\n" for i, w in enumerate(weights)))
        if args.output:
            if plot_layer_weights(weights, args.output, title=str(Path(args.checkpoint).parent.name)):
                print(f"wrote {args.output}")
            else:
                print(f"matplotlib is not installed, so {args.output} was not written; the weights are printed "
                      "above (pip install matplotlib, or use --csv)", file=sys.stderr)
                return 1
        return 0
    except (ResultsError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
