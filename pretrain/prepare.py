"""Data preparation for the pre-training recipes: ``python -m s3prl_plugins.pretrain.prepare <step>``.

Steps (each resumable: finished outputs are skipped; progress bars; parallel workers):

* ``logmel``      audio folder or list -> M2D log-mel ``.npy`` files ``[1, 80, T]`` + ``files.csv``
* ``librispeech`` LibriSpeech -> log-mel + HuBERT layer-9 features from a LOCAL teacher + CSV (M2D-S)
* ``audioset``    M2D file list + AudioSet segment CSVs -> weighted labelled list (M2D-AS)
* ``shards``      audio folder or list -> uncompressed webdataset ``.tar`` shards (Dasheng)
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .data import AUDIO_EXTENSIONS, DataError, load_audio

__all__ = ["find_audio", "logmel_of", "prepare_logmel", "prepare_librispeech", "prepare_audioset_list",
           "prepare_shards", "main"]

SAMPLE_RATE = 16000


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool = True):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True)


def find_audio(source: str | os.PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> tuple[Path, list[Path]]:
    """(root, files relative to it) of an audio folder (searched recursively) or a list file
    (one path per line, or a CSV with file_name/file_path)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p.relative_to(source) for p in source.rglob("*") if p.suffix.lower() in extensions)
        root = source
    elif source.is_file():
        root = source.resolve().parent
        if source.suffix == ".csv":
            from .data import read_table

            rows = read_table(source)
            column = next((c for c in ("file_name", "file_path", "path") if c in rows[0]), None)
            if column is None:
                raise DataError(f"{source}: no file_name/file_path column")
            files = [Path(r[column]) for r in rows]
        else:
            files = [Path(line.split("\t")[0].strip()) for line in source.read_text().splitlines() if line.strip()]
    else:
        raise DataError(f"{source} is neither an audio folder nor a list file")
    if not files:
        raise DataError(f"no audio files ({', '.join(extensions)}) found in {source}")
    return root, files


_FRONT_END = None


def logmel_of(wave: np.ndarray) -> np.ndarray:
    """M2D's log-mel (80 bins, 25 ms / 10 ms, 50-8000 Hz, Slaney, ``log(mel + eps)``) -> [1, 80, T]."""
    global _FRONT_END
    if _FRONT_END is None:
        from ..upstreams.common.logmel import LogMelSpectrogram
        from ..upstreams.m2d.model import FRONT_ENDS

        _FRONT_END = LogMelSpectrogram(**FRONT_ENDS[SAMPLE_RATE])
    x = torch.from_numpy(wave).unsqueeze(0)
    with torch.no_grad():
        lms, _ = _FRONT_END(x, torch.tensor([x.shape[1]]))
    return lms.numpy().astype(np.float32)


def _write_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def _pad_to(wave: np.ndarray, seconds: float) -> np.ndarray:
    need = int(round(seconds * SAMPLE_RATE))
    return np.pad(wave, (0, need - len(wave))) if len(wave) < need else wave


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def prepare_logmel(source, output, *, csv_name: str = "files.csv", min_seconds: float = 0.0, workers: int = 4,
                   progress: bool = True) -> Path:
    """Every audio file -> ``<output>/<same relative path>.npy`` (float32 [1, 80, T]); the list
    ``<output>/<csv_name>`` (column ``file_name``, paths relative to ``output``)."""
    root, files = find_audio(source)
    output = Path(output)

    def run(rel: Path) -> str:
        target = output / rel.with_suffix(".npy")
        if not target.exists():
            wave = _pad_to(load_audio(str(root / rel), SAMPLE_RATE), min_seconds)
            _write_npy(target, logmel_of(wave))
        return target.relative_to(output).as_posix()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # parallelism comes from the worker threads
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            names = list(_progress(pool.map(run, files), len(files), "log-mel", progress))
    finally:
        torch.set_num_threads(threads)
    csv_path = output / csv_name
    _write_csv(csv_path, ["file_name"], [[n] for n in names])
    return csv_path


def prepare_librispeech(libri_root, output, teacher, *, splits: Sequence[str] | None = None, layer: int = 9,
                        min_seconds: float = 7.0, device: str = "cpu", normalize: bool = True,
                        csv_name: str = "files_ls960_hybrid.csv", progress: bool = True) -> Path:
    """LibriSpeech utterances (padded with zeros to ``min_seconds``, as the official script does)
    -> ``<rel>.npy`` log-mel and ``<rel>.hubert{layer}.npy`` teacher features [T', D];
    CSV columns ``file_name,target_file``."""
    from .teacher import load_teacher

    libri_root, output = Path(libri_root), Path(output)
    splits = list(splits) if splits else sorted(p.name for p in libri_root.iterdir() if p.name.startswith("train"))
    files = sorted(p.relative_to(libri_root) for s in splits for p in (libri_root / s).rglob("*.flac"))
    if not files:
        raise DataError(f"no .flac files under {libri_root} in {splits}")
    model = load_teacher(teacher, device=device, normalize=normalize)
    rows = []
    for rel in _progress(files, len(files), f"log-mel + teacher layer {layer}", progress):
        lms_path = output / rel.with_suffix(".npy")
        feat_path = output / rel.with_suffix(f".hubert{layer}.npy")
        if not (lms_path.exists() and feat_path.exists()):
            wave = _pad_to(load_audio(str(libri_root / rel), SAMPLE_RATE), min_seconds)
            layers = model(torch.from_numpy(wave).unsqueeze(0).to(device))
            if layer >= len(layers):
                raise DataError(f"the teacher has {len(layers) - 1} layers; --layer {layer} does not exist")
            _write_npy(feat_path, layers[layer][0].float().cpu().numpy())
            _write_npy(lms_path, logmel_of(wave))
        rows.append([lms_path.relative_to(output).as_posix(), feat_path.relative_to(output).as_posix()])
    csv_path = output / csv_name
    _write_csv(csv_path, ["file_name", "target_file"], rows)
    return csv_path


def _read_segments(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """YTID -> comma-joined label ids from AudioSet's ``*_segments.csv`` (3 comment lines)."""
    labels = {}
    for path in paths:
        with open(path, newline="") as handle:
            for row in csv.reader(handle, skipinitialspace=True):
                if not row or row[0].startswith("#") or len(row) < 4:
                    continue
                labels[row[0]] = row[3].strip('"')
    return labels


def prepare_audioset_list(files_csv, segments: Sequence[str | os.PathLike], output) -> Path:
    """M2D's ``make_as_weighted_list``: label every file of ``files_csv`` by its YouTube id (the
    first 11 characters of its name) and give it the AudioMAE sample weight
    ``(sum over its labels of 1000 / (count + 100)) ** (1 / 1.5)``. Columns ``file_name,label,weight``."""
    from .data import read_table

    labels = _read_segments(segments)
    rows = read_table(files_csv)
    if "file_name" not in rows[0]:
        raise DataError(f"{files_csv}: no file_name column")
    assigned, missing = [], []
    for row in rows:
        ytid = Path(row["file_name"]).name[:11]
        if ytid in labels:
            assigned.append((row["file_name"], labels[ytid]))
        else:
            missing.append(row["file_name"])
    if missing:
        raise DataError(f"{len(missing)} files have no labels in the segment CSVs (first: {missing[0]}); "
                        "pass every *_segments.csv the files come from")
    counts: dict[str, int] = {}
    for _, label in assigned:
        for mid in label.split(","):
            counts[mid] = counts.get(mid, 0) + 1
    out_rows = []
    for name, label in assigned:
        weight = sum(1000.0 / (counts[mid] + 100) for mid in label.split(",")) ** (1.0 / 1.5)
        out_rows.append([name, label, f"{weight:.6f}"])
    output = Path(output)
    _write_csv(output, ["file_name", "label", "weight"], out_rows)
    return output


def prepare_shards(source, output, *, per_shard: int = 10000, prefix: str = "shard", workers: int = 4,
                   progress: bool = True) -> list[Path]:
    """Audio files -> ``<output>/<prefix>-000000.tar`` ... with members ``<key>.<ext>`` (the file
    bytes unchanged) as ``dasheng``'s ``wavlist_to_tar`` writes them; finished shards are kept."""
    root, files = find_audio(source)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    groups = [files[i:i + per_shard] for i in range(0, len(files), per_shard)]

    def run(item) -> Path:
        number, group = item
        target = output / f"{prefix}-{number:06d}.tar"
        if target.exists():
            return target
        fd, tmp = tempfile.mkstemp(dir=output, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as tar:
            for index, rel in enumerate(group):
                data = (root / rel).read_bytes()
                key = rel.with_suffix("").as_posix().replace("/", "_").replace(".", "_")
                info = tarfile.TarInfo(f"{key}{rel.suffix.lower()}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, target)
        return target

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(_progress(pool.map(run, enumerate(groups)), len(groups), "shards", progress))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s3prl_plugins.pretrain.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("logmel", help="audio -> M2D log-mel .npy + files.csv")
    p.add_argument("source", help="audio folder (recursive) or list file")
    p.add_argument("output", help="output folder (files.csv is written there)")
    p.add_argument("--min-seconds", type=float, default=0.0, help="zero-pad shorter audio (official AudioSet: 6.1)")
    p.add_argument("--csv-name", default="files.csv")
    p.add_argument("--workers", type=int, default=4)
    p = sub.add_parser("librispeech", help="LibriSpeech -> log-mel + HuBERT layer features (M2D-S)")
    p.add_argument("libri_root")
    p.add_argument("output")
    p.add_argument("--teacher", required=True, help="LOCAL Hugging Face HubertModel folder or fairseq hubert .pt")
    p.add_argument("--splits", default="", help="comma-separated, default: every train* folder")
    p.add_argument("--layer", type=int, default=9)
    p.add_argument("--min-seconds", type=float, default=7.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-normalize", action="store_true", help="feed the raw waveform (default: zero-mean/unit-var)")
    p = sub.add_parser("audioset", help="M2D file list + AudioSet segment CSVs -> weighted labelled list (M2D-AS)")
    p.add_argument("files_csv", help="e.g. data/files_audioset.csv (column file_name)")
    p.add_argument("output", help="e.g. data/files_as_weighted.csv")
    p.add_argument("--segments", nargs="+", required=True,
                   help="local copies of eval_segments.csv, balanced_train_segments.csv, unbalanced_train_segments.csv")
    p = sub.add_parser("shards", help="audio -> uncompressed .tar shards (Dasheng)")
    p.add_argument("source")
    p.add_argument("output")
    p.add_argument("--per-shard", type=int, default=10000)
    p.add_argument("--prefix", default="shard")
    p.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        if args.step == "logmel":
            print(prepare_logmel(args.source, args.output, csv_name=args.csv_name, min_seconds=args.min_seconds,
                                 workers=args.workers))
        elif args.step == "librispeech":
            splits = [s for s in args.splits.split(",") if s]
            print(prepare_librispeech(args.libri_root, args.output, args.teacher, splits=splits, layer=args.layer,
                                      min_seconds=args.min_seconds, device=args.device, normalize=not args.no_normalize))
        elif args.step == "audioset":
            print(prepare_audioset_list(args.files_csv, args.segments, args.output))
        else:
            for path in prepare_shards(args.source, args.output, per_shard=args.per_shard, prefix=args.prefix,
                                       workers=args.workers):
                print(path)
        return 0
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # teacher loading problems
        from .teacher import TeacherError

        if isinstance(error, TeacherError):
            print(f"error: {error}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
