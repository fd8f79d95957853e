"""Random-weight Dasheng checkpoints in the official formats, for tests, examples and benchmarks:
thin calls of the writers in ``formats.py``."""
from __future__ import annotations

import pathlib
from pathlib import Path

import torch

from ..common.files import full_size_writer
from .config import DashengConfig
from .formats import write_huggingface, write_pip
from .model import DashengEncoder
from .releases import RELEASES

__all__ = ["make_checkpoint", "random_encoder", "write_pip_checkpoint", "write_hf_checkpoint", "TINY_CONFIG",
           "ZENODO_TRAINING_CONFIG"]

#: two 64-dim heads, two blocks; the real chunk length (252 patches) and front end
TINY_CONFIG = DashengConfig(embed_dim=128, depth=2, num_heads=2, mlp_hidden_dim=512)

#: what dasheng's trainer stores as "config" in the Zenodo files: not the architecture, and not only primitives
ZENODO_TRAINING_CONFIG = {
    "outputdir": pathlib.PosixPath("/experiments/dasheng"),
    "mask_ratio": 0.75,
    "model": "dasheng_base",
    "model_args": {"target_length": 1008, "group_masking": True},
    "score_function": ("loss", -1),
}


def random_encoder(config: DashengConfig = TINY_CONFIG, seed: int = 0) -> DashengEncoder:
    """An encoder with random weights and plausible BatchNorm statistics of dB log-mels."""
    torch.manual_seed(seed)
    model = DashengEncoder(config).eval()
    with torch.no_grad():
        bn = model.front_end.bn
        bn.running_mean.uniform_(-60.0, -10.0)
        bn.running_var.uniform_(50.0, 400.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.num_batches_tracked.fill_(1000)
        for name, param in model.named_parameters():
            if name.endswith("bias") and not name.startswith("front_end"):
                param.normal_(0.0, 0.02)
    return model


def write_pip_checkpoint(model: DashengEncoder, path: Path) -> Path:
    """``model`` as a Zenodo file: ``{"model", "config"}`` with the trainer's config."""
    return write_pip(path, model.config, model.state_dict(), stored_config=ZENODO_TRAINING_CONFIG)


def write_hf_checkpoint(model: DashengEncoder, folder: Path, name: str = "dasheng-base") -> Path:
    return write_huggingface(folder, model.config, model.state_dict(), name=name)


def make_checkpoint(entry: str, directory: Path, *, layout: str = "pip",
                    config: DashengConfig = TINY_CONFIG) -> dict:
    """Write a small random checkpoint usable by ``entry``; returns ``dict(ckpt=..., model_config=...)``.

    Named entries get the file at their download cache path (``S3PRL_PLUGINS_CACHE_DIR``), so
    they run offline; ``layout="huggingface"`` writes a Hugging Face folder for ``dasheng_local``.
    """
    from ..common.checkpoint import cached_download_path

    directory = Path(directory)
    model = random_encoder(config)
    if entry in RELEASES:
        write_pip_checkpoint(model, cached_download_path(RELEASES[entry].url))
        return {"ckpt": None, "model_config": None}
    if entry != "dasheng_local":
        raise ValueError(f"unknown Dasheng entry {entry!r}")
    if layout == "huggingface":
        return {"ckpt": str(write_hf_checkpoint(model, directory / "dasheng-hf")), "model_config": None}
    if layout != "pip":
        raise ValueError(f"layout must be 'pip' or 'huggingface', got {layout!r}")
    return {"ckpt": str(write_pip_checkpoint(model, directory / "dasheng_tiny.pt")), "model_config": None}


def _write_full_size(entry: str):
    release = RELEASES[entry]
    config = DashengConfig(embed_dim=release.embed_dim, depth=release.depth, num_heads=release.num_heads,
                           mlp_hidden_dim=4 * release.embed_dim)
    return full_size_writer(f"{entry}.pt", lambda path: write_pip_checkpoint(random_encoder(config), path))


write_full_size_base = _write_full_size("dasheng_base")
write_full_size_06B = _write_full_size("dasheng_06B")
write_full_size_12B = _write_full_size("dasheng_12B")
