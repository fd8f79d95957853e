"""The released Dasheng encoders (light module: no torch import)."""
from __future__ import annotations

from ..common.family import Release

__all__ = ["RELEASES"]

_ZENODO = "https://zenodo.org/records/11511780/files"


def _release(entry: str, title: str, file: str, embed_dim: int, depth: int, num_heads: int, hf_repo: str) -> Release:
    # the Zenodo file that ``dasheng.<name>()`` of the pip package downloads; the same weights are
    # on the Hugging Face hub as ``hf_repo`` (``encoder.``-prefixed safetensors), which -k also reads
    return Release(entry, title, f"{_ZENODO}/{file}?download=1",
                   description=f"{embed_dim} wide, {depth} blocks, {num_heads} heads; the same weights as the "
                               f"Hugging Face repository {hf_repo} (-k takes its folder too)",
                   facts={"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads, "hf_repo": hf_repo})


RELEASES: dict[str, Release] = {r.entry: r for r in (
    _release("dasheng_base", "Dasheng-Base (86M)", "dasheng_base.pt", 768, 12, 12, "mispeech/dasheng-base"),
    _release("dasheng_06B", "Dasheng-0.6B", "dasheng_06b.pt", 1280, 32, 16, "mispeech/dasheng-0.6B"),
    _release("dasheng_12B", "Dasheng-1.2B", "dasheng_12b.pt", 1536, 40, 24, "mispeech/dasheng-1.2B"),
)}
