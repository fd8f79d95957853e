"""Data readers, random crops, noise mixing and the resumable distributed batch sampler.

Every random choice of the input pipeline (crop offsets, noise clips, masks) is drawn from a
generator seeded with ``(seed, epoch, global position of the sample)``. A sample therefore gets
the same crop and mask whatever the number of processes, data-loader workers, or where a run
was resumed: 2 processes with batch b see exactly what 1 process with batch 2b sees.

Readers (all map-style, random access):

* :class:`LogMelList` - CSV of pre-computed log-mel ``.npy`` files (M2D's ``file_name`` column),
  memory-mapped; optional extra ``.npy`` columns (e.g. HuBERT features) and label columns.
* :class:`AudioList` - CSV/text list of audio files (any soundfile format).
* :func:`librispeech_list` - LibriSpeech folders through s3prl's bucket CSVs.
* :class:`TarShards` - webdataset-style ``.tar`` shards (``<key>.<ext>`` members), read by offset
  with the standard library (no webdataset dependency).
"""
from __future__ import annotations

import csv
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = [
    "DataError", "sample_rng", "read_table", "LogMelList", "AudioList", "librispeech_list", "TarShards",
    "load_audio", "random_crop", "log_mix_exp", "GlobalBatchSampler", "RecipeDataset", "AUDIO_EXTENSIONS", "progress",
    "resolve_path", "load_npy",
]

AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3", ".opus", ".m4a", ".aiff", ".aif")


class DataError(ValueError):
    """Training data that cannot be read; the message names the file and the fix."""


def progress(iterable: Iterable, total: int, desc: str, enabled: bool = True):
    """``iterable`` behind a tqdm bar (the preparation steps' progress display)."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True)


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The generator of one sample: depends only on the run seed, the epoch and the sample's
    global position in that epoch."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(position)])


# ---------------------------------------------------------------------------------------------
# Lists
# ---------------------------------------------------------------------------------------------
def read_table(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV with a header (a pandas index column without a name is dropped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file list {path} does not exist; make it with `python -m s3prl_plugins.pretrain.prepare`.")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [{k: v for k, v in row.items() if k} for row in reader]
    if not rows:
        raise DataError(f"file list {path} has no rows")
    return rows


def resolve_path(root: Path | None, name: str) -> Path:
    """``name`` from a file list: absolute as is, else relative to ``root``."""
    path = Path(name)
    return path if path.is_absolute() or root is None else root / path


def load_npy(path: Path, where: str = "the file list") -> np.ndarray:
    """A listed ``.npy`` file, memory-mapped; missing or unreadable files are DataErrors."""
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise DataError(f"{path} (listed in {where}) does not exist; check data.root") from None
    except ValueError as error:
        raise DataError(f"{path} is not a readable .npy file ({error}); recreate it") from None


class LogMelList:
    """Pre-computed log-mel spectrograms ``[1, n_mels, T]`` or ``[n_mels, T]`` stored as ``.npy``.

    ``csv`` lists them in the column ``file_name`` (paths relative to ``root``, M2D's layout);
    ``extra_columns`` name other ``.npy`` columns to load alongside (e.g. ``target_file`` with
    HuBERT features ``[T', D]``); ``keep_columns`` are returned as strings (e.g. ``label``).
    """

    def __init__(self, csv_path: str | os.PathLike, root: str | os.PathLike | None = None,
                 extra_columns: Sequence[str] = (), keep_columns: Sequence[str] = ()):
        self.rows = read_table(csv_path)
        self.root = Path(root) if root else Path(csv_path).resolve().parent
        missing = [c for c in ("file_name", *extra_columns, *keep_columns) if c not in self.rows[0]]
        if missing:
            raise DataError(f"{csv_path} lacks the column(s) {missing}; it has {list(self.rows[0])}")
        self.extra_columns = tuple(extra_columns)
        self.keep_columns = tuple(keep_columns)

    def __len__(self) -> int:
        return len(self.rows)

    def _load(self, name: str) -> np.ndarray:
        return load_npy(resolve_path(self.root, name))

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        lms = self._load(row["file_name"])
        if lms.ndim == 3:
            lms = lms[0]
        item: dict[str, Any] = {"lms": lms}
        for column in self.extra_columns:
            item[column] = self._load(row[column])
        for column in self.keep_columns:
            item[column] = row[column]
        return item


def load_audio(source, sample_rate: int = 16000, *, where: str = "") -> np.ndarray:
    """Mono float32 waveform at ``sample_rate`` from a path or a file-like object."""
    import soundfile

    try:
        wave, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise DataError(f"cannot decode audio {where or source}: {error}") from None
    wave = wave.mean(axis=1)
    if rate != sample_rate:
        import torchaudio

        wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, sample_rate).numpy()
    return np.ascontiguousarray(wave, dtype=np.float32)


class AudioList:
    """Audio files listed in a CSV (column ``file_name`` or ``file_path``) or a plain text list."""

    def __init__(self, list_path: str | os.PathLike, root: str | os.PathLike | None = None, sample_rate: int = 16000):
        list_path = Path(list_path)
        self.root = Path(root) if root else list_path.resolve().parent
        self.sample_rate = sample_rate
        if list_path.suffix == ".csv":
            rows = read_table(list_path)
            column = next((c for c in ("file_name", "file_path", "path") if c in rows[0]), None)
            if column is None:
                raise DataError(f"{list_path}: no file_name/file_path column (has {list(rows[0])})")
            self.files = [r[column] for r in rows]
        else:
            if not list_path.is_file():
                raise DataError(f"audio list {list_path} does not exist")
            self.files = [line.split("\t")[0].strip() for line in list_path.read_text().splitlines() if line.strip()]
        if not self.files:
            raise DataError(f"audio list {list_path} is empty")

    #: length of every file in samples when the list states it (bucket CSVs), else None
    lengths: list[int] | None = None

    @classmethod
    def from_files(cls, files: Sequence[str | os.PathLike], root=None, sample_rate: int = 16000,
                   lengths: Sequence[int] | None = None) -> "AudioList":
        obj = cls.__new__(cls)
        obj.root, obj.sample_rate, obj.files = (Path(root) if root else None), sample_rate, [str(f) for f in files]
        obj.lengths = [int(n) for n in lengths] if lengths is not None else None
        return obj

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = resolve_path(self.root, self.files[index])
        if not path.is_file():
            raise DataError(f"audio file {path} (listed in the file list) does not exist; check data.root")
        return {"wave": load_audio(str(path), self.sample_rate, where=str(path))}


def librispeech_list(libri_root: str | os.PathLike, bucket_dir: str | os.PathLike, sets: Sequence[str],
                     max_samples: int | None = None, min_samples: int | None = None) -> AudioList:
    """Files of LibriSpeech ``sets`` from s3prl's bucket CSVs (``,file_path,length,label``),
    optionally filtered by length in samples."""
    files, lengths = [], []
    for name in sets:
        for row in read_table(Path(bucket_dir) / f"{name}.csv"):
            length = int(row["length"])
            if (max_samples and length > max_samples) or (min_samples and length < min_samples):
                continue
            files.append(row["file_path"])
            lengths.append(length)
    if not files:
        raise DataError(f"no LibriSpeech files left in {bucket_dir} for sets {list(sets)} after length filtering")
    return AudioList.from_files(files, root=libri_root, lengths=lengths)


@dataclass(frozen=True)
class _Member:
    shard: int
    offset: int
    size: int
    name: str


class TarShards:
    """webdataset-style shards: each sample is the group of tar members sharing a key
    (``<key>.flac``, ``<key>.json``...). Members are indexed once (headers only) and read by
    offset, so any sample can be fetched at random without decompressing a whole shard."""

    def __init__(self, shards: Sequence[str | os.PathLike], sample_rate: int = 16000,
                 audio_extensions: Sequence[str] = AUDIO_EXTENSIONS):
        self.shards = [Path(s) for s in shards]
        if not self.shards:
            raise DataError("no .tar shards given (data.shards)")
        self.sample_rate = sample_rate
        self.samples: list[dict[str, _Member]] = []
        for number, shard in enumerate(self.shards):
            if not shard.is_file():
                raise DataError(f"shard {shard} does not exist")
            groups: dict[str, dict[str, _Member]] = {}
            try:
                with tarfile.open(shard, mode="r:") as tar:  # uncompressed only: members must be seekable
                    for info in tar:
                        if not info.isfile():
                            continue
                        base = os.path.basename(info.name)
                        key, _, ext = base.partition(".")
                        prefix = os.path.dirname(info.name)
                        groups.setdefault(f"{prefix}/{key}", {})[ext.lower()] = _Member(number, info.offset_data,
                                                                                         info.size, info.name)
            except tarfile.ReadError as error:
                raise DataError(f"{shard} is not an uncompressed tar file ({error}); write shards with "
                                "`python -m s3prl_plugins.pretrain.prepare shards`") from None
            for key in sorted(groups):
                audio = {e: m for e, m in groups[key].items() if "." + e.split(".")[-1] in audio_extensions}
                if audio:
                    self.samples.append(groups[key])
        if not self.samples:
            raise DataError(f"no audio members ({', '.join(audio_extensions)}) in the {len(self.shards)} shard(s)")
        self._audio_exts = tuple(e.lstrip(".") for e in audio_extensions)

    def __len__(self) -> int:
        return len(self.samples)

    def read_member(self, member: _Member) -> bytes:
        with open(self.shards[member.shard], "rb") as handle:
            handle.seek(member.offset)
            return handle.read(member.size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        group = self.samples[index]
        ext = next(e for e in group if e.split(".")[-1] in self._audio_exts)
        member = group[ext]
        data = self.read_member(member)
        wave = load_audio(io.BytesIO(data), self.sample_rate, where=f"{self.shards[member.shard]}:{member.name}")
        return {"wave": wave}


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------
def random_crop(length: int, crop: int, rng: np.random.Generator) -> int:
    """Start of a uniformly random ``crop`` inside ``length`` (0 when the input is shorter)."""
    return int(rng.integers(0, length - crop + 1)) if length > crop else 0


def crop_or_pad(array: np.ndarray, start: int, crop: int, axis: int = -1, repeat: bool = False) -> np.ndarray:
    """``array[start:start+crop]`` along ``axis``; shorter inputs are zero-padded at the end
    (``repeat=True``: tiled instead, M2D's treatment of short noise clips)."""
    array = np.asarray(array)
    length = array.shape[axis]
    if length >= crop:
        return np.take(array, range(start, start + crop), axis=axis)
    if repeat and length > 0:
        reps = -(-crop // length)
        tiled = np.concatenate([array] * reps, axis=axis)
        return np.take(tiled, range(crop), axis=axis)
    pad = [(0, 0)] * array.ndim
    pad[axis] = (0, crop - length)
    return np.pad(array, pad)


def log_mix_exp(noise: torch.Tensor, speech: torch.Tensor, ratio: float) -> torch.Tensor:
    """Mix two log-power spectrograms in the linear power domain:
    ``log(ratio * exp(noise) + (1 - ratio) * exp(speech))`` (M2D-S's background-noise mixing)."""
    mixed = ratio * noise.exp() + (1.0 - ratio) * speech.exp()
    return torch.log(mixed.clamp_min(torch.finfo(mixed.dtype).eps))


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------
class GlobalBatchSampler(Sampler):
    """Batches of ``(index, seed, epoch, position)`` keys for one process of a data-parallel run.

    Each epoch is a permutation of the data set (seeded by ``seed + epoch``), cut into global
    micro-batches of ``batch_size * world_size`` samples; process ``rank`` takes its contiguous
    slice of every global micro-batch. The incomplete tail of an epoch is dropped. With
    ``lengths`` (bucketing, as s3prl's LibriSpeech readers), each global micro-batch holds items
    adjacent in the length-sorted list and only the order of the batches is random.
    :meth:`state_dict` / :meth:`load_state_dict` hold (epoch, micro-batches consumed), so a run
    resumes in the middle of an epoch. With ``auto_epoch`` every full iteration advances the
    epoch (for runners that simply loop over the loader, like s3prl's).
    """

    def __init__(self, num_items: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 auto_epoch: bool = False, lengths: Sequence[int] | None = None):
        if num_items < batch_size * world_size:
            raise DataError(f"the data set has {num_items} items, fewer than one global batch "
                            f"({batch_size} x {world_size} processes); use more data or a smaller train.batch_size")
        self.num_items, self.batch_size = num_items, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.auto_epoch = auto_epoch
        self.by_length = None
        if lengths is not None:
            if len(lengths) != num_items:
                raise DataError(f"{len(lengths)} item lengths for {num_items} items")
            # longest first, ties by index: s3prl's bucketing order
            self.by_length = sorted(range(num_items), key=lambda i: (-int(lengths[i]), i))
        self.epoch = 0
        self.start = 0  # micro-batches already consumed in this epoch

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        return self.num_items // self.global_batch - self.start

    def batches_per_epoch(self) -> int:
        return self.num_items // self.global_batch

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict) -> None:
        self.set_position(state["epoch"], state["start"])

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        g = self.global_batch
        if self.by_length is None:
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            # Global batches of neighbours in length (little padding), visited in a random order;
            # a random offset makes the dropped remainder differ between epochs.
            count = self.num_items // g
            offset = int(torch.randint(self.num_items - count * g + 1, (1,), generator=generator))
            groups = torch.randperm(count, generator=generator).tolist()
            order = [self.by_length[offset + b * g + j] for b in groups for j in range(g)]
        for batch in range(self.start, self.num_items // g):
            first = batch * g + self.rank * self.batch_size
            yield [(order[pos], self.seed, self.epoch, pos) for pos in range(first, first + self.batch_size)]
        if self.auto_epoch:
            self.epoch, self.start = self.epoch + 1, 0


class RecipeDataset(Dataset):
    """``reader[index]`` passed through the recipe's ``make_example(raw, rng)``; indexed by the
    sampler's ``(index, seed, epoch, position)`` keys."""

    def __init__(self, reader, make_example: Callable[[dict, np.random.Generator], dict]):
        self.reader = reader
        self.make_example = make_example

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, key) -> dict:
        index, seed, epoch, position = key
        return self.make_example(self.reader[index], sample_rng(seed, epoch, position))
