"""The released ARMHuBERT, ARMwavLM and MaskHuBERT checkpoints, on Hugging Face ``sungnyun/ARMHuBERT``
(light module: no torch import). ``facts``: the fallback architecture (a key of
``common.student.config.PUBLISHED``) and the student's exact parameter count."""
from __future__ import annotations

from ..common.family import Release

__all__ = ["RELEASES", "HF_BASE", "DEFAULT_RELEASE"]

HF_BASE = "https://huggingface.co/sungnyun/ARMHuBERT/resolve/main/"


def _hf(entry: str, title: str, architecture: str, params: int, note: str) -> Release:
    url = HF_BASE + f"{title}.ckpt"
    return Release(entry, title, url, filename=f"{title}.ckpt", description=note,
                   facts={"yaml": None, "architecture": architecture, "params": params})


RELEASES: dict[str, Release] = {r.entry: r for r in (
    _hf("armhubert_960h", "ARMHuBERT-960h", "ARMHuBERT", 26_448_448, "26.45M, HuBERT Base teacher, LibriSpeech 960h"),
    _hf("armhubert_s_100h", "ARMHuBERT-S-100h", "ARMHuBERT-S", 22_394_080, "22.39M, HuBERT Base teacher, train-clean-100"),
    _hf("armhubert_s_960h", "ARMHuBERT-S-960h", "ARMHuBERT-S", 22_394_080, "22.39M, HuBERT Base teacher, LibriSpeech 960h"),
    _hf("armwavlm_s_100h", "ARMwavLM-S-100h", "ARMHuBERT-S", 22_394_080, "22.39M, WavLM Base teacher, train-clean-100"),
    _hf("armwavlm_s_960h", "ARMwavLM-S-960h", "ARMHuBERT-S", 22_394_080, "22.39M, WavLM Base teacher, LibriSpeech 960h"),
    _hf("maskhubert_960h", "MaskHuBERT-960h", "MaskHuBERT", 26_635_840, "26.64M, no map reuse, LibriSpeech 960h"),
)}

#: what the official entry names download when called without -k
DEFAULT_RELEASE = {"armhubert": "armhubert_960h", "maskhubert": "maskhubert_960h"}
