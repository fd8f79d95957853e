"""The released checkpoints (light module: no torch import).

ARM/Mask: Hugging Face ``sungnyun/ARMHuBERT``; STaR: the Google Drive files linked from the
official README (sungnyun/ARMHuBERT). The README's STaRHuBERT-S and -XS links are identical, so
those two entries download the same file; the loader warns when its size does not match.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["Release", "RELEASES", "HF_BASE"]

HF_BASE = "https://huggingface.co/sungnyun/ARMHuBERT/resolve/main/"


class Release(NamedTuple):
    title: str
    flavour: str  # "arm" or "star"
    ckpt: str  # URL or gdrive:<id>
    filename: str  # name of the cached file
    yaml: str | None  # companion yaml (Drive id) used when the checkpoint has no config
    architecture: str | None  # key of config.PUBLISHED, the fallback architecture
    params: int | None  # expected parameter count of the student (None: not published exactly)
    note: str = ""


def _hf(title: str, architecture: str, params: int, note: str) -> Release:
    return Release(title, "arm", HF_BASE + f"{title}.ckpt", f"{title}.ckpt", None, architecture, params, note)


def _drive(title: str, ckpt_id: str, yaml_id: str, architecture: str | None, params: int | None, note: str,
           filename: str | None = None) -> Release:
    return Release(title, "star", f"gdrive:{ckpt_id}", filename or f"{title}.ckpt", f"gdrive:{yaml_id}",
                   architecture, params, note)


RELEASES: dict[str, Release] = {
    "armhubert_960h": _hf("ARMHuBERT-960h", "ARMHuBERT", 26_448_448, "26.45M, HuBERT Base teacher, LibriSpeech 960h"),
    "armhubert_s_100h": _hf("ARMHuBERT-S-100h", "ARMHuBERT-S", 22_394_080, "22.39M, HuBERT Base teacher, train-clean-100"),
    "armhubert_s_960h": _hf("ARMHuBERT-S-960h", "ARMHuBERT-S", 22_394_080, "22.39M, HuBERT Base teacher, LibriSpeech 960h"),
    "armwavlm_s_100h": _hf("ARMwavLM-S-100h", "ARMHuBERT-S", 22_394_080, "22.39M, WavLM Base teacher, train-clean-100"),
    "armwavlm_s_960h": _hf("ARMwavLM-S-960h", "ARMHuBERT-S", 22_394_080, "22.39M, WavLM Base teacher, LibriSpeech 960h"),
    "maskhubert_960h": _hf("MaskHuBERT-960h", "MaskHuBERT", 26_635_840, "26.64M, no map reuse, LibriSpeech 960h"),
    "starhubert_l": _drive("STaRHuBERT-L", "1La5jh0jPv-JCk2ECT2raRHtXMYYJNtsF", "1NpHhMVj7EE1Sx5eG3tX5fMCa4UUlrnwI",
                           "STaRHuBERT-L", 26_630_752, "26.63M, HuBERT Base teacher"),
    "starhubert_base": _drive("STaRHuBERT", "1Zu1idRx-sVaqMvRsUKtttzkSn4df6TUr", "1C6ZcYM4Fcxj0vurid5N02BAANj4smr8U",
                              "STaRHuBERT", 22_308_592, "22.31M, HuBERT Base teacher"),
    "starhubert_s": _drive("STaRHuBERT-S", "1sUpbDupbDtlCvN-49TblUn8GDmhV8MT8", "1OFjIo1UjxNrxEboKaT8Z-vtuL6xmyNsu",
                           None, None, "14.1M (the README links S and XS to the same file)", "STaRHuBERT-S-XS.ckpt"),
    "starhubert_xs": _drive("STaRHuBERT-XS", "1sUpbDupbDtlCvN-49TblUn8GDmhV8MT8", "1OFjIo1UjxNrxEboKaT8Z-vtuL6xmyNsu",
                            None, None, "9.39M (the README links S and XS to the same file)", "STaRHuBERT-S-XS.ckpt"),
    "starwavlm_base": _drive("STaRWavLM", "1gWq55o0HfarwgfRpY_2ncmr7jfhtIKR-", "1p79PqwbEarBDm2X7k2DEbsN_lE3pgqki",
                             "STaRHuBERT", 22_308_592, "22.3M, WavLM Base teacher"),
}

#: published sizes that cannot be checked exactly (approximate, in millions)
APPROX_PARAMS_M = {"starhubert_s": 14.1, "starhubert_xs": 9.39}

#: what the official entry names download when called without -k
DEFAULT_RELEASE = {"armhubert": "armhubert_960h", "maskhubert": "maskhubert_960h", "starhubert": "starhubert_base"}
