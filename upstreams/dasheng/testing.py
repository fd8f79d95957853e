"""Small random-weight Dasheng checkpoints in the official layouts, for tests and examples."""
from __future__ import annotations

import json
import pathlib
from pathlib import Path

import torch

from .model import DashengConfig, DashengEncoder

__all__ = ["make_checkpoint", "random_encoder", "official_state_dict", "write_pip_checkpoint",
           "write_hf_checkpoint", "TINY_CONFIG"]

#: two 64-dim heads, two blocks; the real chunk length (252 patches) and front end
TINY_CONFIG = DashengConfig(embed_dim=128, depth=2, num_heads=2, mlp_hidden_dim=512)


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


def official_state_dict(model: DashengEncoder) -> dict[str, torch.Tensor]:
    """The encoder's weights under the names of the pip package (``front_end.0.*``, ``init_bn.1.*``)."""
    out = {}
    for key, value in model.state_dict().items():
        if key == "front_end.window":
            key = "front_end.0.spectrogram.window"
        elif key == "front_end.mel_fb":
            key = "front_end.0.mel_scale.fb"
        elif key.startswith("front_end.bn."):
            key = "init_bn.1." + key[len("front_end.bn."):]
        out[key] = value.detach().clone()
    return out


def write_pip_checkpoint(model: DashengEncoder, path: Path) -> Path:
    """``{"model", "config"}`` as on Zenodo; the config is a training config with a Path in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {  # what dasheng's trainer stores: not the architecture, and not only primitives
        "outputdir": pathlib.PosixPath("/experiments/dasheng"),
        "mask_ratio": 0.75,
        "model": "dasheng_base",
        "model_args": {"target_length": 1008, "group_masking": True},
        "score_function": ("loss", -1),
    }
    torch.save({"model": official_state_dict(model), "config": config}, path)
    return path


def write_hf_checkpoint(model: DashengEncoder, folder: Path, name: str = "dasheng-base") -> Path:
    """A Hugging Face ``mispeech/dasheng-*`` folder: ``encoder.``-prefixed safetensors without the
    torchaudio front-end buffers, and config.json."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {f"encoder.{k}": v.contiguous() for k, v in official_state_dict(model).items()
             if not k.startswith("front_end")}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config
    config = {
        "architectures": ["DashengModel"],
        "auto_map": {"AutoConfig": "configuration_dasheng.DashengConfig",
                     "AutoModel": "modeling_dasheng.DashengModel"},
        "encoder_kwargs": {"depth": cfg.depth, "embed_dim": cfg.embed_dim, "num_heads": cfg.num_heads,
                           "patch_size": [cfg.n_mels, cfg.patch_frames],
                           "patch_stride": [cfg.n_mels, cfg.patch_frames],
                           "target_length": cfg.chunk_patches * cfg.patch_frames},
        "loss": "BCELoss", "model_type": "dasheng", "name": name,
        "torch_dtype": "float32", "transformers_version": "4.38.2",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def make_checkpoint(entry: str, directory: Path, *, layout: str = "pip",
                    config: DashengConfig = TINY_CONFIG) -> dict:
    """Write a small random checkpoint usable by ``entry``; returns ``dict(ckpt=..., model_config=...)``.

    Named entries get the file at their download cache path (``S3PRL_PLUGINS_CACHE_DIR``), so
    they run offline; ``layout="huggingface"`` writes a Hugging Face folder for ``dasheng_local``.
    """
    from ..common.checkpoint import cached_download_path
    from .variants import VARIANTS

    directory = Path(directory)
    model = random_encoder(config)
    if entry in VARIANTS:
        write_pip_checkpoint(model, cached_download_path(VARIANTS[entry].url))
        return {"ckpt": None, "model_config": None}
    if entry != "dasheng_local":
        raise ValueError(f"unknown Dasheng entry {entry!r}")
    if layout == "huggingface":
        return {"ckpt": str(write_hf_checkpoint(model, directory / "dasheng-hf")), "model_config": None}
    if layout != "pip":
        raise ValueError(f"layout must be 'pip' or 'huggingface', got {layout!r}")
    return {"ckpt": str(write_pip_checkpoint(model, directory / "dasheng_tiny.pt")), "model_config": None}
