"""s3prl wrapper: waveforms -> MelHuBERT hidden states."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..common.base import Upstream
from ..common.checkpoint import CheckpointError
from ..common.config import ConfigError, load_model_config, warn_unknown_keys
from ..common.masks import fit_frames, num_frames_s3prl, padding_mask
from .checkpoint import ImportedCheckpoint, read_melhubert_checkpoint
from .frontend import MelHuBERTFrontEnd
from .model import MelHuBERTModel
from .stats import NormalisationStats, load_stats

__all__ = ["MelHuBERTUpstream", "UpstreamExpert", "from_checkpoint"]

#: keys of the -g yaml: ``stats`` picks the normalisation statistics; ``melhubert`` is the
#: official model yaml section, used for state dicts that do not store their architecture.
MODEL_CONFIG_KEYS = ("stats", "melhubert")


class MelHuBERTUpstream(Upstream):
    """``hidden_states``: 13 tensors ``[B, T, 768]`` = the projected input features, then the
    output of each of the 12 transformer layers (the official s3prl wrapper's layout);
    ``last_hidden_state`` = the last layer. 50 frames/s (rate 320) for 20 ms models, 100
    frames/s (rate 160) for 10 ms models, taken from the checkpoint's ``feat_emb_dim``.
    """

    model_name = "MelHuBERT"
    front_end_parts = ("frontend",)

    def __init__(self, imported: ImportedCheckpoint, stats: NormalisationStats):
        super().__init__()
        config = imported.config
        self.model = MelHuBERTModel(config)
        missing, unexpected = self.model.load_state_dict(imported.state_dict, strict=False)
        # an export without the pre-training classifier is fine: it plays no part in features
        missing = [key for key in missing if not key.startswith("final_proj.")]
        if missing or unexpected:
            raise CheckpointError(
                "MelHuBERT: the checkpoint's weights do not fit its config "
                f"(feat_emb_dim={config.feat_emb_dim}, {config.encoder_layers} layers): "
                f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
                f"unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}."
            )
        self.frontend = MelHuBERTFrontEnd(config.frame_period_ms, stats)
        self.downsample_rate = 160 * config.frame_period_ms // 10

    @property
    def frame_period_ms(self) -> int:
        return self.model.config.frame_period_ms

    def encode(self, padded: Tensor, lengths: Tensor) -> dict:
        features, num_frames = self.frontend(padded, lengths)
        # s3prl reads len(range(0, n, rate)) frames per utterance, 1-3 more than the fbank
        # gives. Those frames are run as masked padding, whose values depend only on the
        # utterance and the position (padded inputs are zero, padded keys are masked), so an
        # utterance gives the same frames alone as in any batch, and the official model's
        # padded rows are reproduced too.
        total = num_frames_s3prl(padded.shape[1], self.downsample_rate)
        features = fit_frames(features, total)
        if features.shape[0] == 1 and self.frontend.num_frames_for(padded.shape[1]) == total:
            mask = None  # nothing to mask: SDPA can take its unmasked kernel
        else:
            mask = padding_mask(num_frames, total)
        hidden_states = self.model(features.to(self.encoder_dtype), mask)
        return {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1]}


def _read_model_config(model_config: Any) -> dict:
    try:
        cfg = load_model_config(model_config)
    except ConfigError as error:
        raise ConfigError(f"MelHuBERT: {error}") from None
    warn_unknown_keys(cfg, MODEL_CONFIG_KEYS, "MelHuBERT -g config")
    section = cfg.get("melhubert")
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError("MelHuBERT: the 'melhubert' key of the -g yaml must be a mapping of model options.")
    return cfg


def from_checkpoint(
    path: str | os.PathLike,
    model_config: Any = None,
    *,
    default_stats: str | None = None,
    expected_frame_period_ms: int | None = None,
    entry: str = "melhubert_local",
) -> MelHuBERTUpstream:
    """Build the upstream from a local checkpoint file and the optional ``-g`` yaml.

    ``default_stats`` is used when the yaml has no ``stats`` key (named entries pass the
    statistics of their training data; ``melhubert_local`` falls back to 960 h).
    """
    cfg = _read_model_config(model_config)
    imported = read_melhubert_checkpoint(path, yaml_section=cfg.get("melhubert"), entry=entry)
    stats_choice = cfg.get("stats", default_stats)
    stats = load_stats(stats_choice)
    fp = imported.config.frame_period_ms
    print(
        f"[MelHuBERT] {path}: {imported.layout}; {fp} ms frames "
        f"(feat_emb_dim {imported.config.feat_emb_dim}); normalisation statistics: {stats.description}",
        flush=True,
    )
    if expected_frame_period_ms is not None and expected_frame_period_ms != fp:
        print(
            f"[MelHuBERT] warning: {entry} is released as a {expected_frame_period_ms} ms model but this "
            f"file is a {fp} ms model (feat_emb_dim {imported.config.feat_emb_dim}); using {fp} ms as "
            "stored. The official README once swapped two links.",
            flush=True,
        )
    return MelHuBERTUpstream(imported, stats)


# s3prl's naming
UpstreamExpert = MelHuBERTUpstream
