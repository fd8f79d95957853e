"""SUPERB hidden-set upstream: $entry exported by s3prl-plugins (self-contained; needs only
the packages in requirements.txt). Usage: UpstreamExpert(ckpt="./model.pt")."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
PACKAGE = "$package"
FORMAT = "$format"


def _import_package():
    """Register the private model package that model.pt's pickled classes refer to."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(
        PACKAGE, HERE / PACKAGE / "__init__.py", submodule_search_locations=[str(HERE / PACKAGE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def _resolve(ckpt) -> Path:
    path = Path(ckpt)
    if not path.exists() and not path.is_absolute() and (HERE / path).exists():
        path = HERE / path  # "./model.pt" relative to this folder, whatever the working directory
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt} not found: pass the model.pt of this folder ({HERE / 'model.pt'})")
    return path


class UpstreamExpert(nn.Module):
    """forward(list of 1-D 16 kHz float tensors) -> dict with hidden_states / last_hidden_state."""

    def __init__(self, ckpt: str = "./model.pt", model_config: str | None = None, **kwargs):
        super().__init__()
        _import_package()
        payload = torch.load(_resolve(ckpt), map_location="cpu", weights_only=False)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{ckpt} is not a model.pt written by s3prl-plugins' export_hidden ({FORMAT})")
        self.entry = payload["entry"]
        self.upstream = payload["upstream"]

    def get_downsample_rates(self, key: str) -> int:
        return self.upstream.get_downsample_rates(key)

    def forward(self, wavs):
        return self.upstream(wavs)
