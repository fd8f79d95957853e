"""The released M2D weights (GitHub release zips of nttcslab/m2d) and the entry names for them.

Each zip holds a folder named like the zip with one ``.pth`` inside; the folder name carries the
model configuration, so the zips are used as they are (downloaded and unpacked into the cache).
Kept free of torch imports: ``hubconf`` reads it when s3prl imports its hub.
"""
from __future__ import annotations

from ..common.family import Release

__all__ = ["RELEASES", "OTHER_RELEASE_URLS"]

_BASE = "https://github.com/nttcslab/m2d/releases/download"

#: entry name -> the release (``facts["folder"]``: the release folder name, which holds the configuration)
RELEASES: dict[str, Release] = {}


def _add(entry: str, tag: str, folder: str, description: str) -> None:
    RELEASES[entry] = Release(entry, folder, f"{_BASE}/{tag}/{folder}.zip", description=description,
                              facts={"folder": folder})


_add("m2d_vit_base", "v0.1.0", "m2d_vit_base-80x608p16x16-221006-mr7",
     "M2D/0.7, AudioSet, 16x16 patches (full pre-training checkpoint)")
_add("m2d_vit_base_mr6", "v0.1.0", "m2d_vit_base-80x608p16x16-221006-mr6",
     "M2D/0.6, AudioSet, 16x16 patches (full pre-training checkpoint)")
_add("m2d_vit_base_16x4", "v0.1.0", "m2d_vit_base-80x200p16x4-230529",
     "M2D/0.7, AudioSet, 16x4 patches (40 ms frames)")
_add("m2d_s_vit_base_4s", "v0.2.0", "m2d_s_vit_base-80x400p80x2-230201",
     "M2D-S, LibriSpeech, 80x2 patches (20 ms frames), 4.0 s unit")
_add("m2d_s_vit_base_5s", "v0.2.0", "m2d_s_vit_base-80x512p80x2-230301",
     "M2D-S, LibriSpeech, 80x2 patches (20 ms frames), 5.12 s unit")
_add("m2d_s_vit_base_6s", "v0.2.0", "m2d_s_vit_base-80x608p80x2-230220",
     "M2D-S, LibriSpeech, 80x2 patches (20 ms frames), 6.08 s unit")
_add("m2d_as_vit_base", "v0.1.0", "m2d_as_vit_base-80x608p16x16-240213",
     "M2D-AS (M2D-X with AudioSet labels), 16x16 patches")
_add("m2d_as_vit_base_32k", "v0.1.0", "m2d_as_vit_base-80x608p16x16p32k-240413_enconly",
     "M2D-AS at 32 kHz (encoder only); the 16 kHz input is resampled inside the upstream")
_add("m2d_clap_vit_base", "v0.1.0", "m2d_clap_vit_base-80x608p16x16-240128",
     "M2D-CLAP 2024 audio tower, 16x16 patches")
_add("m2d_clap_vit_base_2025", "v0.5.0", "m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025",
     "M2D-CLAP 2025 audio tower (10.01 s unit)")

#: Other published files, loadable with `-u m2d_local -k <URL>` (no entry of their own).
OTHER_RELEASE_URLS = [
    f"{_BASE}/v0.1.0/m2d_vit_base-80x608p16x16-221006-mr7_enconly.zip",
    f"{_BASE}/v0.1.0/m2d_vit_base-80x608p16x16-220930-mr7_enconly.zip",
    f"{_BASE}/v0.3.0/m2d_clap_vit_base-80x1001p16x16-240128_AS-FT_enconly.zip",
    f"{_BASE}/v0.3.0/m2d_as_vit_base-80x1001p16x16-240213_AS-FT_enconly.zip",
    f"{_BASE}/v0.3.0/m2d_vit_base-80x1001p16x16-221006-mr7_as_46ab246d.zip",
    f"{_BASE}/v0.3.0/m2d_as_vit_base-80x1001p16x16p32k-240413_AS-FT_enconly.zip",
]
