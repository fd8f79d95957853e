"""Frozen speech teachers from LOCAL checkpoints only (no network): HuBERT / WavLM layer outputs.

* a Hugging Face ``HubertModel``/``WavLMModel`` folder (``config.json`` + weights), read with
  ``local_files_only=True``;
* a fairseq HuBERT checkpoint (``hubert_base_ls960.pt``) or an s3prl-converted one, read through
  s3prl's own ``hubert_local`` / ``wavlm_local`` entries (s3prl converts fairseq files itself).

``teacher(wave [B, N]) -> list of [B, T, D]``: index 0 is the input of the first transformer
layer, index i the output of layer i (the convention of Hugging Face's ``hidden_states`` and of
s3prl's upstreams), so ``layers[9]`` is HuBERT layer 9 (M2D-S's offline target).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["TeacherError", "LocalTeacher", "load_teacher"]


class TeacherError(ValueError):
    pass


class LocalTeacher(nn.Module):
    def __init__(self, model: nn.Module, kind: str, normalize: bool):
        super().__init__()
        self.model, self.kind, self.normalize = model.eval(), kind, normalize
        for param in self.model.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def forward(self, wave: torch.Tensor) -> list[torch.Tensor]:
        if wave.dim() != 2:
            raise TeacherError(f"teacher input must be [B, samples], got {tuple(wave.shape)}")
        wave = wave.float()
        if self.normalize:  # Wav2Vec2Processor(do_normalize=True): zero mean, unit variance per utterance
            wave = (wave - wave.mean(dim=1, keepdim=True)) / torch.sqrt(wave.var(dim=1, keepdim=True) + 1e-7)
        if self.kind == "huggingface":
            out = self.model(wave, output_hidden_states=True)
            return list(out.hidden_states)
        out = self.model([w for w in wave])
        return list(out["hidden_states"])


def load_teacher(path: str | os.PathLike, *, device: str | torch.device = "cpu", normalize: bool = True,
                 kind: str = "auto") -> LocalTeacher:
    """``kind``: ``huggingface``, ``hubert_local``, ``wavlm_local`` or ``auto`` (a folder with
    config.json is Hugging Face; a file is a fairseq/s3prl checkpoint, HuBERT unless its name says WavLM)."""
    path = Path(path)
    if not path.exists():
        raise TeacherError(f"teacher checkpoint {path} does not exist; give a local Hugging Face HubertModel folder "
                           "or a fairseq hubert_base_ls960.pt (nothing is downloaded)")
    if kind == "auto":
        if path.is_dir():
            kind = "huggingface"
        else:
            kind = "wavlm_local" if "wavlm" in path.name.lower() else "hubert_local"
    if kind == "huggingface":
        if not (path / "config.json").is_file():
            raise TeacherError(f"{path} has no config.json: not a Hugging Face model folder")
        import transformers

        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        model = transformers.AutoModel.from_pretrained(str(path), config=config, local_files_only=True)
        if hasattr(model.config, "layerdrop"):
            model.config.layerdrop = 0.0
    elif kind in ("hubert_local", "wavlm_local"):
        import importlib

        from ..upstreams.common.checkpoint import load_checkpoint

        obj = load_checkpoint(path, family="HuBERT/WavLM teacher")
        # A raw fairseq file ({"cfg"/"args", "model"}) goes through s3prl's converter, which writes
        # <name>.converted.pt next to it; s3prl-converted files ("model_weight") load directly.
        raw_fairseq = isinstance(obj, dict) and "model_weight" not in obj and "model" in obj and (
            "cfg" in obj or "args" in obj)
        del obj
        family = "hubert" if kind == "hubert_local" else "wavlm"
        hubconf = importlib.import_module(f"s3prl.upstream.{family}.hubconf")
        extra = {"fairseq": True} if raw_fairseq and family == "hubert" else {}
        model = getattr(hubconf, kind)(ckpt=str(path), **extra)
    else:
        raise TeacherError(f"unknown teacher kind {kind!r}")
    return LocalTeacher(model, "huggingface" if kind == "huggingface" else "s3prl", normalize).to(device)
