"""s3prl upstream wrapper around :class:`DashengEncoder`."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..common.base import Upstream
from ..common.config import ConfigError, load_model_config, warn_unknown_keys
from .importers import load_dasheng
from .model import DashengEncoder

__all__ = ["load_upstream", "DashengUpstream", "MODEL_CONFIG_KEYS"]

logger = logging.getLogger(__name__)

#: options of the ``-g`` YAML (or keyword arguments of the entries)
MODEL_CONFIG_KEYS = {
    # "per_utterance" (default): every utterance's frames equal running it alone.
    # "official": dasheng's batched ``model(padded, x_length)``, i.e. the top_db floor over the
    # whole batch, the STFT of the zero-padded batch and the key mask ``N // 640``.
    "batch_mode": "per_utterance",
    # encoder weights' dtype: float32 or bfloat16 (the front end is always float32). float16 is
    # not offered: its range cannot hold the finite attention mask of fully padded chunks.
    "dtype": "float32",
    # only for encoder widths outside the released ones whose head count is not 64-dim
    "num_heads": None,
    # train mode (s3prl -f, ESPnet): "fixed" (default) normalises the log-mel with the stored
    # BatchNorm statistics; "official" is dasheng's BatchNorm2d (batch statistics, running ones
    # updated), so the same utterance's features then depend on its batch
    "train_batchnorm": "fixed",
}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _options(model_config: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    options = {**MODEL_CONFIG_KEYS, **load_model_config(model_config), **kwargs}
    warn_unknown_keys(options, MODEL_CONFIG_KEYS, "dasheng model config")
    if options["train_batchnorm"] not in ("fixed", "official"):
        raise ConfigError(f"dasheng: train_batchnorm must be 'fixed' or 'official', got {options['train_batchnorm']!r}")
    if options["batch_mode"] not in ("per_utterance", "official"):
        raise ConfigError(f"dasheng: batch_mode must be 'per_utterance' or 'official', got {options['batch_mode']!r}")
    dtype = options["dtype"]
    if isinstance(dtype, str):
        if dtype.replace("torch.", "") not in _DTYPES:
            raise ConfigError(f"dasheng: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        dtype = _DTYPES[dtype.replace("torch.", "")]
    options["dtype"] = dtype
    return options


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


def load_upstream(ckpt: str | os.PathLike, model_config: Any = None, **kwargs) -> DashengUpstream:
    """Load an official Dasheng checkpoint (pip/Zenodo ``.pt`` or Hugging Face) for s3prl."""
    options = _options(model_config, kwargs)
    overrides = {"num_heads": options["num_heads"]} if options["num_heads"] else {}
    encoder, fmt = load_dasheng(ckpt, dtype=options["dtype"], overrides=overrides)
    cfg = encoder.config
    logger.info("dasheng: loaded %s (%s layout): width %d, depth %d, %d heads", ckpt, fmt,
                cfg.embed_dim, cfg.depth, cfg.num_heads)
    encoder.front_end.official_train_batchnorm = options["train_batchnorm"] == "official"
    return DashengUpstream(encoder, batch_mode=options["batch_mode"])
