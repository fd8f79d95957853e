"""Package SUPERB test predictions as the ``predict.zip`` that superbbenchmark.org/submit accepts.

``python -m s3prl_plugins.submit --ks EXPDIR --ic EXPDIR --er-fold1 EXPDIR ... -o OUTDIR`` copies
each task's test prediction file from its experiment folder into ``OUTDIR/predict/<task>_public/``
and zips that folder as ``OUTDIR/predict.zip``: the layout of ``s3prl/submit/submit.py`` in the
s3prl git repository (the PyPI package lacks it). Unlike that script, every file is checked first
(present, non-empty, the format the task's expert writes, no duplicate ids), an incomplete set of
emotion-recognition folds is refused (the leaderboard scores ER only with all five), and the zip
is written with Python's :mod:`zipfile` (no ``zip`` binary needed).

Run each task's ``run_downstream.py -m evaluate -e EXPDIR/dev-best.ckpt`` first: the prediction
files are those of the last test evaluation in the folder.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import xml.etree.ElementTree as ElementTree
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["Task", "TASKS", "SubmissionError", "check_prediction", "build_submission", "main"]

#: the 12 classes of s3prl's speech_commands (KS) dataset
KS_CLASSES = frozenset(["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"])
#: the 4 IEMOCAP classes of SUPERB's emotion (ER) task
ER_CLASSES = frozenset(["neu", "hap", "ang", "sad"])


class SubmissionError(ValueError):
    """A prediction that is missing or malformed, or an incomplete ER set."""


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SubmissionError(f"{path} is not UTF-8 text ({error})") from error
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise SubmissionError(f"{path} is empty: the test evaluation wrote no predictions "
                              "(run run_downstream.py -m evaluate -e EXPDIR/dev-best.ckpt)")
    return lines


def _unique_ids(path: Path, ids: list[str]) -> None:
    seen, duplicates = set(), []
    for utt in ids:
        if utt in seen:
            duplicates.append(utt)
        seen.add(utt)
    if duplicates:
        raise SubmissionError(f"{path}: {len(duplicates)} duplicate utterance ids, e.g. {duplicates[:3]}; "
                              "predictions from two runs were mixed into one file")


def _id_label(classes: frozenset | None, what: str) -> Callable[[Path], int]:
    def check(path: Path) -> int:
        lines = _lines(path)
        ids = []
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if len(fields) != 2:
                raise SubmissionError(f"{path}:{number}: expected '<utterance> <{what}>', got {line!r}")
            if classes is not None and fields[1] not in classes:
                raise SubmissionError(f"{path}:{number}: {fields[1]!r} is not a {what} of the task "
                                      f"({', '.join(sorted(classes))})")
            ids.append(fields[0])
        _unique_ids(path, ids)
        return len(lines)
    return check


def _check_ic(path: Path) -> int:
    lines = _lines(path)
    ids = []
    for number, line in enumerate(lines, 1):
        fields = line.split(",")
        if len(fields) != 4 or not all(f.strip() for f in fields):
            raise SubmissionError(f"{path}:{number}: expected 'utterance,action,object,location' (no header), got {line!r}")
        ids.append(fields[0])
    _unique_ids(path, ids)
    return len(lines)


def _check_scores(path: Path) -> int:
    lines = _lines(path)
    for number, line in enumerate(lines, 1):
        fields = line.split()
        try:
            float(fields[-1])
        except (ValueError, IndexError):
            raise SubmissionError(f"{path}:{number}: expected '<trial> <score>' with a numeric score, got {line!r}") from None
    return len(lines)


def _check_ark(path: Path) -> int:
    lines = _lines(path)
    ids = [line.split(maxsplit=1)[0] for line in lines]
    _unique_ids(path, ids)
    return len(lines)


def _check_nonempty_text(path: Path) -> int:
    return len(_lines(path))


def _check_xml(path: Path) -> int:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise SubmissionError(f"{path} is not valid XML ({error})") from error
    if root.tag != "stdlist":
        raise SubmissionError(f"{path}: root element is <{root.tag}>, expected the <stdlist> that QbE writes")
    return len(root)


def _check_sd(path: Path) -> int:
    files = [p for p in path.rglob("*") if p.is_file()]
    if not files:
        raise SubmissionError(f"{path} holds no prediction files; run the diarization test step "
                              "(downstream/diarization/score.sh) first")
    return len(files)


@dataclass(frozen=True)
class Task:
    flag: str
    folder: str
    source: str
    target: str
    check: Callable[[Path], int]
    help: str
    #: the run_downstream.py -d values that produce this task's predictions
    downstreams: tuple[str, ...] = ()


TASKS: tuple[Task, ...] = (
    Task("pr", "pr_public", "test-hyp.ark", "predict.ark", _check_ark, "phoneme recognition (ctc, LibriSpeech phones)", ("ctc",)),
    Task("sid", "sid_public", "test_predict.txt", "predict.txt", _id_label(None, "speaker"), "speaker identification (voxceleb1)", ("voxceleb1",)),
    Task("ks", "ks_public", "test_predict.txt", "predict.txt", _id_label(KS_CLASSES, "keyword class"), "keyword spotting (speech_commands)", ("speech_commands",)),
    Task("ic", "ic_public", "test_predict.csv", "predict.csv", _check_ic, "intent classification (fluent_commands)", ("fluent_commands",)),
    *(Task(f"er_fold{k}", f"er_fold{k}_public", f"test_fold{k}_predict.txt", "predict.txt",
           _id_label(ER_CLASSES, "emotion"), f"emotion recognition, test fold {k} (emotion, test_fold=fold{k})", ("emotion",))
      for k in range(1, 6)),
    Task("asr_no_lm", "asr_public", "test-clean-noLM-hyp.ark", "predict.ark", _check_ark, "ASR without LM (asr)", ("asr",)),
    Task("asr_with_lm", "asr_lm_public", "test-clean-LM-hyp.ark", "predict.ark", _check_ark, "ASR with LM (asr)", ("asr",)),
    Task("qbe", "qbe_public", "benchmark.stdlist.xml", "benchmark.stdlist.xml", _check_xml,
         "query by example (quesst14_dtw; the layer best on dev)", ("quesst14_dtw",)),
    Task("sf", "sf_public", "test-hyp.ark", "predict.ark", _check_ark, "slot filling (ctc on SNIPS)", ("ctc",)),
    Task("sv", "sv_public", "test_predict.txt", "predict.txt", _check_scores, "speaker verification (sv_voxceleb1)", ("sv_voxceleb1",)),
    Task("sd", "sd_public", "scoring/predictions", "scoring/predictions", _check_sd, "speaker diarization (diarization)", ("diarization",)),
    Task("se", "se_public", "test_metrics.txt", "metrics.txt", _check_nonempty_text, "speech enhancement", ("enhancement_stft", "enhancement_stft2")),
    Task("ss", "ss_public", "test_metrics.txt", "metrics.txt", _check_nonempty_text, "source separation", ("separation_stft", "separation_stft2")),
    Task("st", "st_public", "output-st-test.tsv", "predict.tsv", _check_nonempty_text, "speech translation", ("speech_translation",)),
)
TASK_BY_FLAG = {task.flag: task for task in TASKS}
ER_FLAGS = tuple(f"er_fold{k}" for k in range(1, 6))


def _downstream_of(expdir: Path) -> str | None:
    """The ``-d`` task recorded in the folder's ``args_*.yaml`` (None when there is none)."""
    import yaml

    for args_file in sorted(expdir.glob("args_*.yaml")):
        try:
            args = yaml.safe_load(args_file.read_text())
        except yaml.YAMLError:
            continue
        if isinstance(args, dict) and args.get("downstream"):
            return str(args["downstream"])
    return None


def check_prediction(task: Task, expdir: str | Path) -> int:
    """Check ``task``'s prediction file in ``expdir``; returns its number of predictions."""
    expdir = Path(expdir)
    if not expdir.is_dir():
        raise SubmissionError(f"--{task.flag.replace('_', '-')}: {expdir} is not a folder")
    downstream = _downstream_of(expdir)
    if task.downstreams and downstream is not None and downstream not in task.downstreams:
        raise SubmissionError(f"--{task.flag.replace('_', '-')}: {expdir} is a '{downstream}' experiment, but this "
                              f"option takes a {' or '.join(task.downstreams)} experiment folder")
    source = expdir / task.source
    exists = source.is_dir() if task.flag == "sd" else source.is_file()
    if not exists:
        hint = ""
        if task.flag.startswith("er_fold"):
            others = sorted(p.name for p in expdir.glob("test_fold*_predict.txt"))
            if others:
                hint = f"; this folder holds {', '.join(others)}: was it passed for the wrong fold?"
        raise SubmissionError(f"--{task.flag.replace('_', '-')}: {source} not found; run "
                              f"run_downstream.py -m evaluate -e {expdir}/dev-best.ckpt first{hint}")
    return task.check(source)


def build_submission(expdirs: dict[str, str | Path], output_dir: str | Path, *, allow_partial_er: bool = False,
                     log: Callable[[str], None] = print) -> Path:
    """Check every prediction, then write ``output_dir/predict/`` and ``output_dir/predict.zip``.

    ``expdirs`` maps task flags (``ks``, ``ic``, ``er_fold1``, ...) to experiment folders. Nothing
    is written unless every check passes.
    """
    unknown = sorted(set(expdirs) - set(TASK_BY_FLAG))
    if unknown:
        raise SubmissionError(f"unknown task(s) {unknown}; known: {', '.join(TASK_BY_FLAG)}")
    if not expdirs:
        raise SubmissionError("no task given; pass at least one of --ks, --ic, --er-fold1..5, --sid, ...")
    folds = [flag for flag in ER_FLAGS if flag in expdirs]
    if folds and len(folds) < 5 and not allow_partial_er:
        missing = ", ".join("--" + f.replace("_", "-") for f in ER_FLAGS if f not in expdirs)
        raise SubmissionError(f"emotion recognition is scored only with all 5 folds; missing {missing} "
                              "(train and evaluate each fold with -o config.downstream_expert.datarc.test_fold=foldK, "
                              "or leave ER out)")
    counts = {flag: check_prediction(TASK_BY_FLAG[flag], path) for flag, path in expdirs.items()}

    output_dir = Path(output_dir)
    predict_dir = output_dir / "predict"
    if predict_dir.exists():
        shutil.rmtree(predict_dir)  # a stale task from an earlier call must not slip into the zip
    predict_dir.mkdir(parents=True)
    for task in TASKS:  # s3prl's order
        if task.flag not in expdirs:
            continue
        source = Path(expdirs[task.flag]) / task.source
        target = predict_dir / task.folder / task.target
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
            shift = Path(expdirs[task.flag]) / "frame_shift"
            if shift.is_file():
                shutil.copyfile(shift, predict_dir / task.folder / "frame_shift")
        else:
            shutil.copyfile(source, target)
        log(f"{task.folder}: {counts[task.flag]} predictions from {source}")
    if folds and len(folds) < 5:
        log(f"warning: only {len(folds)} ER folds included; the leaderboard will not score ER")

    archive = output_dir / "predict.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        # the same members as `cd OUTDIR && zip -r predict.zip predict/`: folders included
        for path in sorted([predict_dir, *predict_dir.rglob("*")]):
            zf.write(path, path.relative_to(output_dir).as_posix())
    log(f"wrote {archive} ({len(expdirs)} task(s): {', '.join(TASK_BY_FLAG[f].folder for f in expdirs)})")
    return archive


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m s3prl_plugins.submit",
        description="Check SUPERB test predictions and write OUTDIR/predict.zip for superbbenchmark.org/submit "
                    "(the layout of s3prl's submit/submit.py). Each option takes the experiment folder (-p of "
                    "run_downstream.py) after `-m evaluate -e EXPDIR/dev-best.ckpt` has run in it.",
        epilog="example:\n  python -m s3prl_plugins.submit --ks result/ks --ic result/ic "
               "--er-fold1 result/er1 ... --er-fold5 result/er5 -o submission",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    for task in TASKS:
        flags = dict.fromkeys(["--" + task.flag.replace("_", "-"), "--" + task.flag])  # s3prl spells --er_fold1
        parser.add_argument(*flags, dest=task.flag, metavar="EXPDIR", help=f"{task.help}: reads {task.source}")
    parser.add_argument("-o", "--output-dir", "--output_dir", dest="output_dir", default="submission",
                        help="folder for predict/ and predict.zip (default: ./submission)")
    parser.add_argument("--allow-partial-er", action="store_true",
                        help="accept fewer than 5 ER folds (they will not be scored)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    expdirs = {task.flag: getattr(args, task.flag) for task in TASKS if getattr(args, task.flag) is not None}
    try:
        build_submission(expdirs, args.output_dir, allow_partial_er=args.allow_partial_er)
    except SubmissionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
