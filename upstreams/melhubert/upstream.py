"""The s3prl upstream of MelHuBERT (waveforms -> hidden states) and the builder of its entries."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ..common.base import Upstream, announce
from ..common.checkpoint import CheckpointError, resolve_entry_checkpoint
from ..common.config import options_from
from ..common.masks import fit_frames, num_frames_s3prl, padding_mask
from .config import DEFAULT_STATS, MelHuBERTOptions, NormalisationStats, load_stats
from .formats import ImportedCheckpoint, read_melhubert_checkpoint
from .model import MelHuBERTFrontEnd, MelHuBERTModel
from . import FAMILY

__all__ = ["MelHuBERTUpstream", "build"]


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


def build(entry: str, ckpt: Any = None, model_config: Any = None, refresh: bool = False,
          **kwargs) -> MelHuBERTUpstream:
    """Every MelHuBERT entry: ``melhubert_local``/``melhubert -k PATH`` (any MelHuBERT checkpoint;
    ``melhubert`` without ``-k`` downloads the recommended release) and the named releases
    (downloaded, or ``-k`` a copy fetched by hand), with the ``-g`` options
    (:class:`~.config.MelHuBERTOptions`). Releases default to their training data's statistics,
    other files to LibriSpeech 960 h."""
    options = options_from(MelHuBERTOptions, model_config, kwargs, entry)
    path, release = resolve_entry_checkpoint(entry, FAMILY.release_for(entry), ckpt, refresh=refresh,
                                             local_entry="melhubert_local")
    imported = read_melhubert_checkpoint(path, yaml_section=options.melhubert, entry=entry)
    stats = load_stats(options.stats or (release.facts["stats"] if release is not None else DEFAULT_STATS))
    fp = imported.config.frame_period_ms
    announce(entry, f"{path}: {imported.layout}; {fp} ms frames (feat_emb_dim {imported.config.feat_emb_dim}); "
                    f"normalisation statistics: {stats.description}")
    expected = release.facts["frame_period_ms"] if release is not None else None
    if expected is not None and expected != fp:
        announce(entry, f"{release.title} is released as a {expected} ms model but this file is a {fp} ms model "
                        f"(feat_emb_dim {imported.config.feat_emb_dim}); using {fp} ms as stored. The official "
                        "README once swapped two links.", warning=True)
    return MelHuBERTUpstream(imported, stats)
