"""The s3prl upstream of Dasheng and the builder of every Dasheng entry."""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from ..common.base import Upstream, announce
from ..common.checkpoint import resolve_entry_checkpoint
from ..common.config import options_from
from . import FAMILY
from .config import DashengOptions
from .formats import load_dasheng
from .model import DashengEncoder

__all__ = ["DashengUpstream", "build"]



class DashengUpstream(Upstream):
    """Hidden states of a Dasheng encoder at 25 Hz (640 samples per frame).

    ``hidden_states`` has ``depth + 1`` entries (embeddings, blocks 1..depth-1, final LayerNorm
    of the last block); ``last_hidden_state`` is the official model output. Hidden states are
    returned in float32 even when the encoder runs in bfloat16.
    """

    model_name = "dasheng"
    front_end_parts = ("model.front_end",)

    def __init__(self, encoder: DashengEncoder, batch_mode: str = "per_utterance"):
        super().__init__()
        self.model = encoder
        self.batch_mode = batch_mode
        self.downsample_rate = encoder.config.downsample_rate

    def encode(self, padded: Tensor, lengths: Tensor) -> dict:
        hidden = self.model(padded, lengths, batch_mode=self.batch_mode)
        if hidden[0].dtype != torch.float32:
            hidden = [h.float() for h in hidden]
        # frames past an utterance's own patches: zero (the base class), as when it runs alone
        return {"hidden_states": hidden, "frame_lengths": self.model.num_patches(lengths)}


def build(entry: str, ckpt: Any = None, model_config: Any = None, refresh: bool = False,
          **kwargs) -> DashengUpstream:
    """Every Dasheng entry: ``dasheng_local -k`` = the pip/Zenodo ``.pt`` file, or a Hugging Face
    ``mispeech/dasheng-*`` folder / its ``model.safetensors``; the named entries download their
    release, or read ``-k`` as a copy of it fetched by hand."""
    options = options_from(DashengOptions, model_config, kwargs, entry)
    path, release = resolve_entry_checkpoint(entry, FAMILY.release_for(entry), ckpt, refresh=refresh,
                                             local_entry="dasheng_local")
    overrides = {"num_heads": options.num_heads} if options.num_heads else {}
    encoder, fmt = load_dasheng(os.fspath(path), dtype=options.torch_dtype, overrides=overrides)
    cfg = encoder.config
    if release is not None and (cfg.embed_dim, cfg.depth) != (release.embed_dim, release.depth):
        announce(entry, f"{path} holds a {cfg.embed_dim}-wide, {cfg.depth}-block encoder, not the {release.title} "
                        f"release ({release.embed_dim} wide, {release.depth} blocks); is this the right file? "
                        "(-u dasheng_local reads any Dasheng checkpoint)", warning=True)
    announce(entry, f"{path}: {fmt} layout, width {cfg.embed_dim}, depth {cfg.depth}, {cfg.num_heads} heads")
    encoder.front_end.official_train_batchnorm = options.train_batchnorm == "official"
    return DashengUpstream(encoder, batch_mode=options.batch_mode)
