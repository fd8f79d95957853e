"""The released STaRHuBERT / STaRWavLM checkpoints: the Google Drive files linked from the official
README (sungnyun/ARMHuBERT). The README's STaRHuBERT-S and -XS links are identical, so those two
entries download the same file; the loader warns when its size does not match (light module)."""
from __future__ import annotations

from ..common.family import Release

__all__ = ["RELEASES", "DEFAULT_RELEASE"]


def _drive(entry: str, title: str, ckpt_id: str, yaml_id: str, architecture: str | None, params: int | None,
           note: str, filename: str | None = None, approx_params_m: float | None = None) -> Release:
    return Release(entry, title, f"gdrive:{ckpt_id}", filename=filename or f"{title}.ckpt", description=note,
                   facts={"yaml": f"gdrive:{yaml_id}", "architecture": architecture, "params": params,
                          "approx_params_m": approx_params_m})


RELEASES: dict[str, Release] = {r.entry: r for r in (
    _drive("starhubert_l", "STaRHuBERT-L", "1La5jh0jPv-JCk2ECT2raRHtXMYYJNtsF", "1NpHhMVj7EE1Sx5eG3tX5fMCa4UUlrnwI",
           "STaRHuBERT-L", 26_630_752, "26.63M, HuBERT Base teacher"),
    _drive("starhubert_base", "STaRHuBERT", "1Zu1idRx-sVaqMvRsUKtttzkSn4df6TUr", "1C6ZcYM4Fcxj0vurid5N02BAANj4smr8U",
           "STaRHuBERT", 22_308_592, "22.31M, HuBERT Base teacher"),
    _drive("starhubert_s", "STaRHuBERT-S", "1sUpbDupbDtlCvN-49TblUn8GDmhV8MT8", "1OFjIo1UjxNrxEboKaT8Z-vtuL6xmyNsu",
           None, None, "14.1M (the README links S and XS to the same file)", "STaRHuBERT-S-XS.ckpt", 14.1),
    _drive("starhubert_xs", "STaRHuBERT-XS", "1sUpbDupbDtlCvN-49TblUn8GDmhV8MT8", "1OFjIo1UjxNrxEboKaT8Z-vtuL6xmyNsu",
           None, None, "9.39M (the README links S and XS to the same file)", "STaRHuBERT-S-XS.ckpt", 9.39),
    _drive("starwavlm_base", "STaRWavLM", "1gWq55o0HfarwgfRpY_2ncmr7jfhtIKR-", "1p79PqwbEarBDm2X7k2DEbsN_lE3pgqki",
           "STaRHuBERT", 22_308_592, "22.3M, WavLM Base teacher"),
)}

#: what the official entry name downloads when called without -k
DEFAULT_RELEASE = {"starhubert": "starhubert_base"}
