"""The espeak-ng data generator: layouts that s3prl's readers accept, determinism."""
from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from s3prl_plugins.data import INTENTS, KEYWORDS, ks_speaker_ids, ks_split_of, make_ic, make_ks


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_ks_layout_matches_s3prl_split(superb_data):
    from s3prl.downstream.speech_commands.dataset import CLASSES
    from s3prl.downstream.speech_commands.expert import split_dataset

    ks = superb_data["ks"]
    train, dev = split_dataset(ks["root"])
    assert train and dev
    assert {c for c, _ in train} >= set(KEYWORDS) and {c for c, _ in dev} >= set(KEYWORDS)
    test_classes = {p.name for p in Path(ks["test_root"]).iterdir() if p.is_dir()}
    assert test_classes == set(CLASSES)
    for noise in (Path(ks["root"]) / "_background_noise_").glob("*.wav"):
        info = soundfile.info(str(noise))
        assert info.samplerate == 16000 and info.frames >= 16000
    clip = next(Path(ks["root"], "yes").glob("*.wav"))
    assert soundfile.info(str(clip)).samplerate == 16000


def test_speaker_prefixes_hash_into_both_splits():
    train, dev = ks_speaker_ids(3, 2)
    assert [ks_split_of(s) for s in train] == ["train"] * 3
    assert [ks_split_of(s) for s in dev] == ["dev"] * 2


def test_ic_csvs_cover_every_slot_in_train(superb_data):
    import pandas as pd

    root = Path(superb_data["ic"]["root"])
    frames = {s: pd.read_csv(root / "data" / f"{s}_data.csv") for s in ("train", "valid", "test")}
    for split, frame in frames.items():
        assert {"path", "action", "object", "location"} <= set(frame.columns)
        for slot in ("action", "object", "location"):
            assert set(frame[slot]) <= set(frames["train"][slot]), (split, slot)
        first = root / frame.loc[0, "path"]
        assert soundfile.info(str(first)).samplerate == 16000
    assert len(set(zip(frames["train"].action, frames["train"].object, frames["train"].location))) == len(INTENTS)


def test_librispeech_layout_and_buckets(superb_data):
    info = superb_data["librispeech"]
    root = Path(info["root"])
    for split in info["splits"]:
        with open(Path(info["bucket_dir"]) / f"{split}.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert rows and list(rows[0]) == ["", "file_path", "length", "label"]
        lengths = [int(r["length"]) for r in rows]
        assert lengths == sorted(lengths, reverse=True)
        for row in rows:
            path = root / row["file_path"]
            assert soundfile.info(str(path)).frames == int(row["length"])
            utt = path.stem
            spk, chapter, _ = utt.split("-")
            assert path.parent == root / split / spk / chapter
            transcript = (path.parent / f"{spk}-{chapter}.trans.txt").read_text()
            assert any(line.startswith(utt + " ") and line[len(utt) + 1:].isupper() for line in transcript.splitlines())
    assert all(soundfile.info(str(p)).frames >= 3.2 * 16000 for p in root.rglob("*.flac"))


def test_noise_clips(superb_data):
    noise = superb_data["noise"]
    assert len(noise["files"]) >= 8
    names = (Path(noise["root"]) / "files.csv").read_text().split()[1:]
    assert all((Path(noise["root"]) / n).is_file() for n in names)


def test_same_seed_same_files(tmp_path):
    make_ks(tmp_path / "a", seed=3, train_speakers=1, dev_speakers=1, test_per_class=1)
    make_ks(tmp_path / "b", seed=3, train_speakers=1, dev_speakers=1, test_per_class=1)
    make_ks(tmp_path / "c", seed=4, train_speakers=1, dev_speakers=1, test_per_class=1)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")


def test_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "s3prl_plugins.data", "ic", "--out", str(tmp_path / "ic"), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "ic" / "data" / "train_data.csv").is_file()
    helptext = subprocess.run([sys.executable, "-m", "s3prl_plugins.data", "--help"], capture_output=True, text=True)
    assert "speech_commands_root" in helptext.stdout


def test_missing_espeak_is_a_clear_error(monkeypatch, tmp_path):
    from s3prl_plugins.data import synth

    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(synth.SynthesisError, match="apt-get install espeak-ng"):
        make_ic(tmp_path, train_speakers=1, valid_speakers=1, test_speakers=1)
