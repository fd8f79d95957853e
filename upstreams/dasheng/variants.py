"""The released Dasheng encoders (timm-style registry of named variants)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DashengVariant", "VARIANTS", "heads_for_width"]


@dataclass(frozen=True)
class DashengVariant:
    name: str
    embed_dim: int
    depth: int
    num_heads: int
    #: the Zenodo file that ``dasheng.<name>()`` of the pip package downloads
    url: str
    #: the same weights on the Hugging Face hub (``encoder.``-prefixed safetensors)
    hf_repo: str


_ZENODO = "https://zenodo.org/records/11511780/files"

VARIANTS: dict[str, DashengVariant] = {
    v.name: v
    for v in (
        DashengVariant("dasheng_base", 768, 12, 12, f"{_ZENODO}/dasheng_base.pt?download=1", "mispeech/dasheng-base"),
        DashengVariant("dasheng_06B", 1280, 32, 16, f"{_ZENODO}/dasheng_06b.pt?download=1", "mispeech/dasheng-0.6B"),
        DashengVariant("dasheng_12B", 1536, 40, 24, f"{_ZENODO}/dasheng_12b.pt?download=1", "mispeech/dasheng-1.2B"),
    )
}

#: widths of the releases -> their head counts (head dim 64, except 80 for the 0.6B model)
_HEADS_BY_WIDTH = {v.embed_dim: v.num_heads for v in VARIANTS.values()}


def heads_for_width(embed_dim: int) -> int | None:
    """Head count of a released width; other widths use 64-dim heads when they divide evenly.

    The head count is not visible in any tensor shape and the configs stored in the official
    files are not trustworthy (the pip loaders override them), so it comes from the width.
    """
    if embed_dim in _HEADS_BY_WIDTH:
        return _HEADS_BY_WIDTH[embed_dim]
    if embed_dim % 64 == 0:
        return embed_dim // 64
    return None
