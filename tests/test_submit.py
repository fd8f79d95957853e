"""predict.zip for the SUPERB leaderboard, from real KS/IC experiment folders (+ written ER folds)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import yaml

from s3prl_plugins import submit
from s3prl_plugins.submit import SubmissionError, build_submission
from tests.test_results import experiment_folders


@pytest.fixture(scope="session")
def expdirs(superb_data, tmp_path_factory) -> dict[str, Path]:
    return experiment_folders(superb_data, tmp_path_factory.getbasetemp() / "superb_tools")


def _er_fold(root: Path, fold: int, lines=("Ses0{k}F_impro01_F000 neu", "Ses0{k}M_script02_M011 hap")) -> Path:
    """An emotion experiment folder as s3prl's emotion expert leaves it after testing fold k."""
    expdir = root / f"er_fold{fold}"
    expdir.mkdir(parents=True)
    (expdir / "args_2026-01-01-00-00-00.yaml").write_text(yaml.safe_dump({"downstream": "emotion", "upstream": "x"}))
    (expdir / f"test_fold{fold}_predict.txt").write_text("".join(line.format(k=fold) + "\n" for line in lines))
    return expdir


def test_zip_layout_matches_s3prl_submit(expdirs, tmp_path):
    folds = {f"er_fold{k}": _er_fold(tmp_path / "er", k) for k in range(1, 6)}
    archive = build_submission({"ks": expdirs["speech_commands"], "ic": expdirs["fluent_commands"], **folds},
                               tmp_path / "out", log=lambda _: None)
    assert archive == tmp_path / "out" / "predict.zip"
    with zipfile.ZipFile(archive) as zf:
        files = {n for n in zf.namelist() if not n.endswith("/")}
        assert files == {"predict/ks_public/predict.txt", "predict/ic_public/predict.csv",
                         *(f"predict/er_fold{k}_public/predict.txt" for k in range(1, 6))}
        assert "predict/" in zf.namelist()  # folder entries, as `zip -r predict.zip predict/` writes
        assert zf.read("predict/ks_public/predict.txt") == (expdirs["speech_commands"] / "test_predict.txt").read_bytes()
        assert zf.read("predict/ic_public/predict.csv") == (expdirs["fluent_commands"] / "test_predict.csv").read_bytes()
        assert zf.read("predict/er_fold3_public/predict.txt").startswith(b"Ses03F")


def test_incomplete_er_is_refused(tmp_path):
    folds = {f"er_fold{k}": _er_fold(tmp_path, k) for k in range(1, 5)}
    with pytest.raises(SubmissionError, match=r"all 5 folds; missing --er-fold5"):
        build_submission(folds, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written
    messages = []
    build_submission(folds, tmp_path / "out", allow_partial_er=True, log=messages.append)
    assert any("will not score ER" in m for m in messages)


def test_format_checks(expdirs, tmp_path):
    ks = tmp_path / "ks"
    ks.mkdir()
    (ks / "test_predict.txt").write_text("a.wav yes\nb.wav maybe\n")
    with pytest.raises(SubmissionError, match=r"test_predict.txt:2: 'maybe' is not a keyword class"):
        build_submission({"ks": ks}, tmp_path / "out")
    (ks / "test_predict.txt").write_text("a.wav yes\na.wav no\n")
    with pytest.raises(SubmissionError, match="duplicate utterance ids"):
        build_submission({"ks": ks}, tmp_path / "out")
    (ks / "test_predict.txt").write_text("")
    with pytest.raises(SubmissionError, match="is empty"):
        build_submission({"ks": ks}, tmp_path / "out")

    ic = tmp_path / "ic"
    ic.mkdir()
    (ic / "test_predict.csv").write_text("test-0,activate,lights\n")
    with pytest.raises(SubmissionError, match="utterance,action,object,location"):
        build_submission({"ic": ic}, tmp_path / "out")

    with pytest.raises(SubmissionError, match="'fluent_commands' experiment, but this option takes a speech_commands"):
        build_submission({"ks": expdirs["fluent_commands"]}, tmp_path / "out")
    fold2 = _er_fold(tmp_path / "wrong", 2)
    with pytest.raises(SubmissionError, match="holds test_fold2_predict.txt: was it passed for the wrong fold"):
        build_submission({f"er_fold{k}": fold2 for k in range(1, 6)}, tmp_path / "out")


def test_cli(expdirs, tmp_path, capsys):
    out = tmp_path / "sub"
    assert submit.main(["--ks", str(expdirs["speech_commands"]), "--ic", str(expdirs["fluent_commands"]),
                        "-o", str(out)]) == 0
    assert (out / "predict.zip").is_file()
    assert submit.main(["--er_fold1", str(tmp_path), "-o", str(out)]) == 2  # s3prl's spelling works too
    assert "scored only with all 5 folds" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        submit.main(["--help"])
    assert exit_info.value.code == 0
    assert "--er-fold5" in capsys.readouterr().out
