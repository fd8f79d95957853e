"""Small real-speech data sets in the layouts that s3prl's task and pre-training readers expect."""
from __future__ import annotations

import csv
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .synth import SAMPLE_RATE, add_noise, noise, speak, speaker

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "house", "tree", "wow", "marvin")

#: (action, object, location) -> phrasings, in the Fluent Speech Commands slot vocabulary
INTENTS = {
    ("activate", "lights", "kitchen"): ["turn on the lights in the kitchen", "kitchen lights on"],
    ("deactivate", "lights", "bedroom"): ["switch off the lights in the bedroom", "bedroom lights off"],
    ("increase", "heat", "none"): ["turn up the heat", "make it warmer"],
    ("decrease", "volume", "none"): ["turn down the volume", "make it quieter"],
    ("activate", "music", "none"): ["play the music", "start the music"],
    ("deactivate", "music", "none"): ["stop the music", "pause the music"],
    ("bring", "shoes", "none"): ["bring me my shoes", "fetch my shoes"],
    ("change language", "Chinese", "none"): ["switch the language to chinese", "use chinese"],
    ("increase", "heat", "washroom"): ["turn up the heat in the washroom", "washroom heat up"],
}

SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "a journey of a thousand miles begins with a single step",
    "the rain in spain stays mainly in the plain",
    "every morning the baker opens the shop before sunrise",
    "the old clock in the hall struck twelve times",
    "we walked along the river until the light began to fade",
    "a small boat drifted slowly past the sleeping harbour",
    "he read the letter twice and then folded it away",
    "the children laughed as the kite climbed into the wind",
    "bright stars filled the sky above the quiet village",
    "the train was late so we waited on the cold platform",
    "she painted the fence a pale shade of green",
    "thunder rolled across the valley after midnight",
    "the library keeps its rarest books behind glass",
    "a gentle breeze carried the smell of fresh bread",
)

Progress = Callable[[Iterable, int, str], Iterable]


def _plain(items: Iterable, total: int, desc: str) -> Iterable:
    return items


def _tqdm(items: Iterable, total: int, desc: str) -> Iterable:
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="clip")


def _write_wav(path: Path, wave: np.ndarray) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave, SAMPLE_RATE, subtype="PCM_16")


def _render(jobs: list[tuple[Path, Callable[[], np.ndarray]]], desc: str, progress: Progress, workers: int) -> None:
    """Run the synthesis jobs in parallel (espeak-ng is a subprocess) and write each file."""

    def run(job):
        path, make = job
        _write_wav(path, make())
        return path

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in progress(pool.map(run, jobs), len(jobs), desc):
            pass


def ks_split_of(speaker_id: str) -> str:
    """Where s3prl's Speech Commands split puts a speaker prefix: dev, discarded or train."""
    max_per_class = 2 ** 27 - 1
    digest = int(hashlib.sha1(speaker_id.encode()).hexdigest(), 16)
    percentage = (digest % (max_per_class + 1)) * (100.0 / max_per_class)
    return "dev" if percentage < 10 else ("discarded" if percentage < 20 else "train")


def ks_speaker_ids(num_train: int, num_dev: int) -> tuple[list[str], list[str]]:
    """Eight-hex-digit speaker prefixes that hash into s3prl's train and dev ranges."""
    train, dev = [], []
    candidate = 0
    while len(train) < num_train or len(dev) < num_dev:
        sid = f"{candidate:08x}"
        split = ks_split_of(sid)
        if split == "train" and len(train) < num_train:
            train.append(sid)
        elif split == "dev" and len(dev) < num_dev:
            dev.append(sid)
        candidate += 1
    return train, dev


def make_ks(out: Path, *, seed: int = 0, train_speakers: int = 4, dev_speakers: int = 2,
            test_per_class: int = 3, progress: Progress = _plain, workers: int = 2) -> dict:
    """Speech Commands v1 layout: ``train/<word>/<spk>_nohash_<n>.wav`` and ``test/<class>/``."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    train_ids, dev_ids = ks_speaker_ids(train_speakers, dev_speakers)
    voices = {sid: speaker(i, rng) for i, sid in enumerate(train_ids + dev_ids)}
    test_voices = [speaker(i + 7, rng) for i in range(test_per_class)]
    jobs: list[tuple[Path, Callable[[], np.ndarray]]] = []

    def clip(word: str, who, clip_seed: int) -> Callable[[], np.ndarray]:
        def make() -> np.ndarray:
            wave = speak(word, who)[: SAMPLE_RATE]  # Speech Commands clips last at most 1 s
            return add_noise(np.pad(wave, (0, max(0, SAMPLE_RATE - len(wave)))), np.random.default_rng(clip_seed))
        return make

    words = KEYWORDS + UNKNOWN_WORDS[:4]
    for sid, who in voices.items():
        for w, word in enumerate(words):
            jobs.append((out / "train" / word / f"{sid}_nohash_0.wav", clip(word, who, seed * 7919 + len(jobs))))
    for k, kind in enumerate(("white", "pink", "brown", "hum")):
        path = out / "train" / "_background_noise_" / f"{kind}_noise.wav"
        jobs.append((path, (lambda kind=kind, k=k: noise(kind, 3.0, np.random.default_rng(seed * 31 + k)))))
    for i, who in enumerate(test_voices):
        for word in KEYWORDS:
            jobs.append((out / "test" / word / f"test{i:02d}_nohash_0.wav", clip(word, who, seed * 104729 + len(jobs))))
        unknown = UNKNOWN_WORDS[4 + i % 4]
        jobs.append((out / "test" / "_unknown_" / f"{unknown}_test{i:02d}_nohash_0.wav", clip(unknown, who, seed + len(jobs))))
        jobs.append((out / "test" / "_silence_" / f"silence{i:02d}_nohash_0.wav",
                     (lambda i=i: noise(("white", "pink", "brown")[i % 3], 1.0, np.random.default_rng(seed * 17 + i)))))
    _render(jobs, "KS (speech commands)", progress, workers)
    return {"root": out / "train", "test_root": out / "test", "train_speakers": train_ids, "dev_speakers": dev_ids}


def make_ic(out: Path, *, seed: int = 0, train_speakers: int = 4, valid_speakers: int = 1, test_speakers: int = 2,
            progress: Progress = _plain, workers: int = 2) -> dict:
    """Fluent Speech Commands layout: ``wavs/speakers/<spk>/<id>.wav`` + ``data/<split>_data.csv``."""
    rng = np.random.default_rng(seed + 1)
    out = Path(out)
    splits = {"train": train_speakers, "valid": valid_speakers, "test": test_speakers}
    rows: dict[str, list[dict]] = {s: [] for s in splits}
    jobs = []
    index = 0
    for split, count in splits.items():
        for s in range(count):
            spk_index = index
            index += 1
            who = speaker(spk_index * 5 + 3, rng)
            spk = f"spk{spk_index:02d}"
            for (action, obj, location), phrasings in INTENTS.items():
                # training speakers say every phrasing, held-out speakers one of them
                chosen = phrasings if split == "train" else [phrasings[s % len(phrasings)]]
                for p, text in enumerate(chosen):
                    rel = f"wavs/speakers/{spk}/{split}-{len(rows[split]):04d}.wav"
                    rows[split].append({"path": rel, "speakerId": spk, "transcription": text,
                                        "action": action, "object": obj, "location": location})
                    clip_seed = seed * 1_000_003 + len(jobs)
                    jobs.append((out / rel, (lambda text=text, who=who, cs=clip_seed:
                                             add_noise(speak(text, who), np.random.default_rng(cs)))))
    _render(jobs, "IC (fluent speech commands)", progress, workers)
    (out / "data").mkdir(parents=True, exist_ok=True)
    fields = ["path", "speakerId", "transcription", "action", "object", "location"]
    for split, split_rows in rows.items():
        with open(out / "data" / f"{split}_data.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", *fields])  # pandas-style index column, as the released CSVs have
            for i, row in enumerate(split_rows):
                writer.writerow([i, *(row[f] for f in fields)])
    return {"root": out, "num_intents": len(INTENTS)}


def make_librispeech(out: Path, *, seed: int = 0, splits: dict[str, int] | None = None, utterances_per_speaker: int = 3,
                     progress: Progress = _plain, workers: int = 2) -> dict:
    """LibriSpeech layout ``<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` with ``.trans.txt``
    files, plus s3prl's bucket CSVs ``len_for_bucket/<split>.csv`` (``,file_path,length,label``)."""
    import soundfile

    rng = np.random.default_rng(seed + 2)
    out = Path(out)
    splits = splits or {"train-clean-100": 3, "dev-clean": 1, "test-clean": 1}
    jobs, transcripts = [], {}
    spk_counter = 0
    for split, num_speakers in splits.items():
        for _ in range(num_speakers):
            spk = 100 + 11 * spk_counter
            chapter = 1000 + 7 * spk_counter
            who = speaker(spk_counter * 3 + 1, rng)
            spk_counter += 1
            lines = []
            for u in range(utterances_per_speaker):
                # 2-4 sentences: utterances of about 3-8 s, long enough for pre-training crops
                picks = rng.choice(len(SENTENCES), size=int(rng.integers(2, 5)), replace=False)
                text = " ".join(SENTENCES[i] for i in picks)
                utt_id = f"{spk}-{chapter}-{u:04d}"
                lines.append(f"{utt_id} {text.upper()}")
                path = out / split / str(spk) / str(chapter) / f"{utt_id}.flac"
                jobs.append((path, text, who, seed * 65537 + len(jobs)))
            transcripts[out / split / str(spk) / str(chapter) / f"{spk}-{chapter}.trans.txt"] = lines

    def run(job):
        path, text, who, clip_seed = job
        path.parent.mkdir(parents=True, exist_ok=True)
        wave = add_noise(speak(text, who), np.random.default_rng(clip_seed), snr_db=35)
        soundfile.write(str(path), wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        return path, len(wave)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        lengths = dict(progress(pool.map(run, jobs), len(jobs), "LibriSpeech-layout corpus"))
    for path, lines in transcripts.items():
        path.write_text("\n".join(lines) + "\n")
    write_bucket_csvs(out, out / "len_for_bucket", splits=list(splits), lengths=lengths)
    return {"root": out, "bucket_dir": out / "len_for_bucket", "splits": list(splits)}


def write_bucket_csvs(libri_root: Path, bucket_dir: Path, splits: list[str], lengths: dict | None = None) -> list[Path]:
    """s3prl's ``len_for_bucket/<split>.csv``: rows sorted longest first, paths relative to the root."""
    import soundfile

    bucket_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split in splits:
        files = sorted((libri_root / split).rglob("*.flac"))
        rows = []
        for path in files:
            length = (lengths or {}).get(path) or soundfile.info(str(path)).frames
            rows.append((path.relative_to(libri_root).as_posix(), int(length)))
        rows.sort(key=lambda r: -r[1])
        target = bucket_dir / f"{split}.csv"
        with open(target, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", "file_path", "length", "label"])
            for i, (rel, length) in enumerate(rows):
                writer.writerow([i, rel, length, ""])
        written.append(target)
    return written


def make_noise(out: Path, *, seed: int = 0, clips_per_kind: int = 2, seconds: float = 4.0,
               progress: Progress = _plain, workers: int = 2) -> dict:
    """Background-noise clips (coloured noise, hum, babble) for denoising pre-training, plus
    ``files.csv`` listing them (one ``file_name`` column)."""
    out = Path(out)
    jobs = []
    for k, kind in enumerate(("white", "pink", "brown", "hum")):
        for c in range(clips_per_kind):
            jobs.append((out / f"{kind}_{c:02d}.wav",
                         (lambda kind=kind, s=seed * 1009 + k * 101 + c: noise(kind, seconds, np.random.default_rng(s)))))

    def babble(c: int) -> np.ndarray:
        rng = np.random.default_rng(seed * 7 + c)
        total = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
        for v in range(4):  # four talkers at once
            text = " ".join(SENTENCES[i] for i in rng.choice(len(SENTENCES), 2, replace=False))
            wave = speak(text, speaker(v * 2 + c, rng))
            start = int(rng.integers(0, SAMPLE_RATE // 2))
            wave = wave[: len(total) - start]
            total[start:start + len(wave)] += wave
        return (total / (np.abs(total).max() + 1e-9) * 0.3).astype(np.float32)

    for c in range(clips_per_kind):
        jobs.append((out / f"babble_{c:02d}.wav", (lambda c=c: babble(c))))
    _render(jobs, "noise clips", progress, workers)
    with open(out / "files.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name"])
        for path, _ in jobs:
            writer.writerow([path.name])
    return {"root": out, "files": [p for p, _ in jobs]}


def make_all(out: Path, *, seed: int = 0, progress: Progress = _plain, workers: int = 2) -> dict:
    out = Path(out)
    return {
        "ks": make_ks(out / "speech_commands", seed=seed, progress=progress, workers=workers),
        "ic": make_ic(out / "fluent_speech_commands", seed=seed, progress=progress, workers=workers),
        "librispeech": make_librispeech(out / "LibriSpeech", seed=seed, progress=progress, workers=workers),
        "noise": make_noise(out / "noise", seed=seed, progress=progress, workers=workers),
    }


