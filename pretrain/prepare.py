"""Data preparation for the pre-training recipes: ``python -m s3prl_plugins.pretrain.prepare <step>``.

Steps (each resumable: finished outputs are skipped; progress bars; parallel workers):

* ``logmel``      audio folder or list -> M2D log-mel ``.npy`` files ``[1, 80, T]`` + ``files.csv``
* ``librispeech`` LibriSpeech -> log-mel + HuBERT layer-9 features from a LOCAL teacher + CSV (M2D-S)
* ``audioset``    M2D file list + AudioSet segment CSVs -> weighted labelled list (M2D-AS)
* ``shards``      audio folder or list -> uncompressed webdataset ``.tar`` shards (Dasheng)
* ``buckets``     LibriSpeech folders -> s3prl bucket CSVs ``len_for_bucket/<set>.csv`` (MelHuBERT 1/4)
* ``fbank``       bucket CSVs -> raw 40-bin Kaldi fbank ``.npy`` + ``fbank.csv`` + ``mean-std.npy`` [2, 40] (2/4)
* ``kmeans``      fbank frames (stage 1) or a stage-1 model's layer (stage 2) -> k-means centroids (3/4)
* ``labels``      centroids -> per-utterance 10 ms cluster labels + the training list ``labels.csv`` (4/4)
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..upstreams.common.files import atomic_write, save_npy_atomic
from ..upstreams.common.inputs import pad_wavs
from .data import AUDIO_EXTENSIONS, DataError, load_audio
from .data import progress as _progress

__all__ = ["find_audio", "logmel_of", "prepare_logmel", "prepare_librispeech", "prepare_audioset_list",
           "prepare_shards", "prepare_buckets", "prepare_fbank", "main"]

SAMPLE_RATE = 16000


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
        from ..upstreams.m2d.config import FRONT_ENDS

        _FRONT_END = LogMelSpectrogram(**FRONT_ENDS[SAMPLE_RATE])
    x = torch.from_numpy(wave).unsqueeze(0)
    with torch.no_grad():
        lms, _ = _FRONT_END(x, torch.tensor([x.shape[1]]))
    return lms.numpy().astype(np.float32)


def _write_npy(path: Path, array: np.ndarray) -> None:
    save_npy_atomic(path, array)


def _pad_to(wave: np.ndarray, seconds: float) -> np.ndarray:
    need = int(round(seconds * SAMPLE_RATE))
    return np.pad(wave, (0, need - len(wave))) if len(wave) < need else wave


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, text.getvalue().encode())


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
        def write(handle) -> None:
            with tarfile.open(fileobj=handle, mode="w") as tar:
                for rel in group:
                    data = (root / rel).read_bytes()
                    key = rel.with_suffix("").as_posix().replace("/", "_").replace(".", "_")
                    info = tarfile.TarInfo(f"{key}{rel.suffix.lower()}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))

        return atomic_write(target, write)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(_progress(pool.map(run, enumerate(groups)), len(groups), "shards", progress))


# ---------------------------------------------------------------------------------------------
# MelHuBERT: bucket CSVs, fbank + statistics (k-means and labels live in .kmeans)
# ---------------------------------------------------------------------------------------------
def prepare_buckets(libri_root, output=None, *, sets: Sequence[str] | None = None, workers: int = 4,
                    progress: bool = True) -> list[Path]:
    """LibriSpeech folders -> s3prl's ``len_for_bucket/<set>.csv`` (``,file_path,length,label``,
    longest first, lengths in samples), the files s3prl's LibriSpeech readers expect; written by
    ``s3prl_plugins.data``'s ``write_bucket_csvs``. Sets whose CSV exists are skipped."""
    import soundfile

    from ..data.datasets import write_bucket_csvs

    libri_root = Path(libri_root)
    output = Path(output) if output else libri_root / "len_for_bucket"
    if not libri_root.is_dir():
        raise DataError(f"LibriSpeech root {libri_root} does not exist")
    sets = list(sets) if sets else sorted(p.name for p in libri_root.iterdir()
                                          if p.is_dir() and any(p.glob("*/*/*.flac")))
    written = []
    for name in sets:
        target = output / f"{name}.csv"
        if target.exists():
            written.append(target)
            continue
        files = sorted((libri_root / name).rglob("*.flac"))
        if not files:
            raise DataError(f"no .flac files under {libri_root / name}; is {libri_root} the LibriSpeech root "
                            "(holding train-clean-100/, dev-clean/, ...)?")
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            frames = list(_progress(pool.map(lambda f: soundfile.info(str(f)).frames, files), len(files),
                                    f"lengths of {name}", progress))
        written += write_bucket_csvs(libri_root, output, [name], lengths=dict(zip(files, frames)))
    return written


def _prefetch(pool: ThreadPoolExecutor, function, items: Sequence, depth: int):
    """``function(item)`` for each item in order, at most ``depth`` of them in flight (``pool.map``
    would decode the whole corpus into memory ahead of the consumer)."""
    from collections import deque

    pending: deque = deque()
    upcoming = iter(items)
    for item in upcoming:
        pending.append(pool.submit(function, item))
        if len(pending) >= depth:
            break
    while pending:
        result = pending.popleft().result()
        following = next(upcoming, _END)
        if following is not _END:
            pending.append(pool.submit(function, following))
        yield result


_END = object()


def _melhubert_fbank():
    """The upstream front end's Kaldi fbank (the very module MelHuBERT uses at inference)."""
    from ..upstreams.melhubert.config import NormalisationStats
    from ..upstreams.melhubert.model import WAVEFORM_SCALE, MelHuBERTFrontEnd

    identity = NormalisationStats(torch.zeros(40), torch.ones(40), "none")
    return MelHuBERTFrontEnd(10, identity).fbank, WAVEFORM_SCALE


def _bucket_entries(libri_root: Path, bucket_dir: Path, sets: Sequence[str]) -> list[tuple[str, Path, int]]:
    """(key, audio path, samples) of every utterance in the bucket CSVs of ``sets``, longest first."""
    from .data import read_table

    entries = []
    for name in sets:
        csv_path = bucket_dir / f"{name}.csv"
        if not csv_path.is_file():
            raise DataError(f"{csv_path} does not exist; write it first: python -m s3prl_plugins.pretrain.prepare "
                            f"buckets {libri_root} --sets {name}")
        for row in read_table(csv_path):
            rel = Path(row["file_path"])
            entries.append((rel.with_suffix("").as_posix(), rel, int(row["length"])))
    entries.sort(key=lambda e: -e[2])
    return entries


def prepare_fbank(libri_root, output, *, bucket_dir=None, sets: Sequence[str] = ("train-clean-100",),
                  batch_size: int = 16, workers: int = 4, device: str = "cpu", progress: bool = True) -> Path:
    """LibriSpeech utterances of the bucket CSVs -> raw 40-bin Kaldi fbank ``<output>/fbank/<key>.npy``
    (float32 [T, 40], 10 ms frames; key = the audio path without suffix), the list
    ``<output>/fbank.csv`` (``key,file_path,length``, longest first) and the statistics
    ``<output>/mean-std.npy`` (float64 [2, 40]: per-bin mean and std over every frame, the
    official layout). Existing feature files are reused (they still count in the statistics)."""
    libri_root, output = Path(libri_root), Path(output)
    bucket_dir = Path(bucket_dir) if bucket_dir else libri_root / "len_for_bucket"
    entries = _bucket_entries(libri_root, bucket_dir, sets)
    fbank, scale = _melhubert_fbank()
    fbank.to(device)
    sums = np.zeros((2, 40))  # per-bin sum and sum of squares, float64
    frames_total = 0
    rows = []

    def accumulate(key: str, features: np.ndarray) -> None:
        nonlocal frames_total
        x = features.astype(np.float64)
        sums[0] += x.sum(axis=0)
        sums[1] += (x * x).sum(axis=0)
        frames_total += len(x)
        rows.append([key, f"fbank/{key}.npy", len(x)])

    todo = []
    for key, rel, _ in entries:
        target = output / "fbank" / f"{key}.npy"
        if target.exists():
            accumulate(key, np.load(target))
        else:
            todo.append((key, rel))
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        loaded = _prefetch(pool, lambda batch: [load_audio(str(libri_root / rel), SAMPLE_RATE) for _, rel in batch],
                           batches, depth=2 * max(1, workers))
        for batch, waves in _progress(zip(batches, loaded), len(batches), "fbank", progress):
            padded, lengths = pad_wavs([torch.from_numpy(w) for w in waves])
            with torch.inference_mode():
                features, num_frames = fbank(padded.to(device) * scale, lengths.to(device))
            features, num_frames = features.cpu().numpy(), num_frames.cpu().tolist()
            for (key, _), feats, n in zip(batch, features, num_frames):
                feats = np.ascontiguousarray(feats[:n], dtype=np.float32)
                _write_npy(output / "fbank" / f"{key}.npy", feats)
                accumulate(key, feats)
    if frames_total == 0:
        raise DataError(f"no utterances in {bucket_dir} for sets {list(sets)}")
    mean = sums[0] / frames_total
    std = np.sqrt(np.maximum(sums[1] / frames_total - mean * mean, 0.0))
    if not np.all(std > 0):
        raise DataError("some fbank bin has zero variance over the data (silent or constant audio?)")
    save_npy_atomic(output / "mean-std.npy", np.stack([mean, std]))
    rows.sort(key=lambda r: -r[2])
    _write_csv(output / "fbank.csv", ["key", "file_path", "length"], rows)
    return output / "fbank.csv"


def _melhubert_step(args) -> int:
    from .kmeans import fit_kmeans, write_labels

    def names(text: str) -> list[str]:
        return [n for n in text.split(",") if n]

    if args.step == "buckets":
        for path in prepare_buckets(args.libri_root, args.output, sets=names(args.sets), workers=args.workers):
            print(path)
    elif args.step == "fbank":
        csv_path = prepare_fbank(args.libri_root, args.output, bucket_dir=args.bucket_dir, sets=names(args.sets),
                                 batch_size=args.batch_size, workers=args.workers, device=args.device)
        print(csv_path)
        print(csv_path.parent / "mean-std.npy")
    elif args.step == "kmeans":
        print(fit_kmeans(args.features_csv, args.output, stats=args.stats, checkpoint=args.checkpoint,
                         layer=args.layer, clusters=args.clusters, percent=args.percent, seed=args.seed,
                         device=args.device, batch_size=args.batch_size, n_init=args.n_init, max_iter=args.max_iter))
    else:
        print(write_labels(args.features_csv, args.kmeans, args.output, device=args.device))
    return 0


def _add_m2d_dasheng_steps(sub) -> None:
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


def _add_melhubert_steps(sub) -> None:
    p = sub.add_parser("buckets", help="MelHuBERT 1/4: LibriSpeech folders -> s3prl bucket CSVs (file, length)",
                       description="Write s3prl's len_for_bucket/<set>.csv (,file_path,length,label; lengths in "
                                   "samples, longest first) for LibriSpeech sets. Existing CSVs are kept.")
    p.add_argument("libri_root", help="LibriSpeech root (holding train-clean-100/, ...)")
    p.add_argument("--output", help="bucket folder (default: <libri_root>/len_for_bucket)")
    p.add_argument("--sets", default="", help="comma-separated sets (default: every folder with .flac files)")
    p.add_argument("--workers", type=int, default=4)
    p = sub.add_parser("fbank", help="MelHuBERT 2/4: 40-bin Kaldi fbank .npy + [2, 40] mean/std",
                       description="Raw 40-bin Kaldi fbank of every utterance (the upstream front end's fbank: "
                                   "waveform x 2**15, hamming 25 ms / 10 ms, dither 0) -> OUTPUT/fbank/<key>.npy, "
                                   "the list OUTPUT/fbank.csv and the statistics OUTPUT/mean-std.npy (float64 "
                                   "[2, 40]: mean, std; the official libri-*-mean-std.npy layout). Resumable.")
    p.add_argument("libri_root")
    p.add_argument("output", help="feature folder, e.g. data/melhubert/libri360")
    p.add_argument("--sets", default="train-clean-100", help="comma-separated bucket CSV names (default %(default)s)")
    p.add_argument("--bucket-dir", help="s3prl bucket folder (default: <libri_root>/len_for_bucket)")
    p.add_argument("--batch-size", type=int, default=16, help="utterances per fbank batch")
    p.add_argument("--workers", type=int, default=4, help="audio decoding threads")
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("kmeans", help="MelHuBERT 3/4: fit k-means on fbank frames (stage 1) or a model layer (stage 2)",
                       description="scikit-learn MiniBatchKMeans with fairseq simple_kmeans' settings on the "
                                   "frames of --percent of the utterances. Stage 1: the normalised fbank frames. "
                                   "Stage 2: hidden state --layer of the stage-1 model --checkpoint (0 = projected "
                                   "input, k = transformer layer k). Writes OUTPUT.npy (centroids) + OUTPUT.json.")
    p.add_argument("features_csv", help="fbank.csv of the fbank step")
    p.add_argument("output", help="centroid file, e.g. data/melhubert/km_stage1.npy")
    p.add_argument("--stats", help="[2, 40] mean/std .npy (default: stage 2: mean-std.npy beside --checkpoint, the "
                                   "statistics it was trained with, if there; else mean-std.npy beside features_csv)")
    p.add_argument("--checkpoint", help="stage 2: the stage-1 model (.ckpt / .weights.pt of its export)")
    p.add_argument("--layer", type=int, help="stage 2: which hidden state to cluster (HuBERT Base iteration 2: 6)")
    p.add_argument("--clusters", type=int, default=512, help="number of clusters (default %(default)s)")
    p.add_argument("--percent", type=float, default=0.1,
                   help="fraction of utterances to fit on (default %(default)s; <= 0 or >= 1: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="device of the stage-1 model (stage 2)")
    p.add_argument("--batch-size", type=int, default=10000, help="MiniBatchKMeans batch size (default %(default)s)")
    p.add_argument("--n-init", type=int, default=20, help="MiniBatchKMeans initialisations (default %(default)s)")
    p.add_argument("--max-iter", type=int, default=100, help="MiniBatchKMeans epochs (default %(default)s)")
    p = sub.add_parser("labels", help="MelHuBERT 4/4: cluster labels (10 ms) + the training list labels.csv",
                       description="Nearest-centroid label of every frame, with the features the k-means was "
                                   "fitted on (read from its .json), written as OUTPUT/<key>.npy at 10 ms (20 ms "
                                   "models' labels repeated) and the training list OUTPUT/labels.csv "
                                   "(file_path,label_path,length) for data.sets. Existing label files are kept.")
    p.add_argument("features_csv", help="fbank.csv of the fbank step")
    p.add_argument("kmeans", help="centroids of the kmeans step (.npy with its .json)")
    p.add_argument("output", help="label folder, e.g. data/melhubert/labels_stage1")
    p.add_argument("--device", default="cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m s3prl_plugins.pretrain.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    _add_m2d_dasheng_steps(sub)
    _add_melhubert_steps(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.step in ("buckets", "fbank", "kmeans", "labels"):
            return _melhubert_step(args)
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
    except Exception as error:  # teacher / stage-1 checkpoint loading problems
        from ..upstreams.common.checkpoint import CheckpointError
        from .config import ConfigError
        from .teacher import TeacherError

        if isinstance(error, (TeacherError, CheckpointError, ConfigError)):
            print(f"error: {error}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
