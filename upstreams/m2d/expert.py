"""The s3prl upstream for M2D: argument handling of the entries, loading, and the forward pass."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..common.base import Upstream
from ..common.checkpoint import CheckpointError, resolve_checkpoint
from ..common.config import load_model_config, warn_unknown_keys
from .importers import find_weight_file, read_checkpoint, resolve_config
from .model import M2DConfig, M2DModel
from .norm_stats import (
    NormStats,
    RunningLogMelStats,
    choose_stats,
    known_tasks,
    missing_stats_message,
    parse_stats_text,
    stats_from_config,
    task_stats,
)

__all__ = ["M2DUpstream", "build_upstream", "split_ckpt_argument"]

logger = logging.getLogger(__name__)

_CONFIG_KEYS = ("norm_mean", "norm_std", "norm_task", "task", "input_size", "patch_size", "sample_rate", "model_name",
                "calcnorm_updates")


class M2DUpstream(Upstream):
    """M2D features for s3prl: 12 hidden states ``[B, T, 768 * F']`` (blocks 1-11 as they leave the
    block, block 12 after the final LayerNorm), one frame per patch column (160 x patch-width
    input samples), trimmed to s3prl's frame count."""

    model_name = "M2D"
    front_end_parts = ("model.front_end",)

    def __init__(self, model: M2DModel, stats: NormStats, *, collect_stats: RunningLogMelStats | None = None,
                 stats_updates: int = 10_000, ckpt_hint: str = "CKPT"):
        super().__init__()
        self.model = model
        self.config: M2DConfig = model.config
        self.downsample_rate = self.config.downsample_rate
        self.stats = stats
        self.collect_stats = collect_stats
        self.stats_updates = stats_updates
        self.ckpt_hint = ckpt_hint
        self._calls = 0

    def get_output_dim(self) -> int:
        return self.config.feature_dim

    def encode(self, padded: Tensor, lengths: Tensor) -> dict:
        model = self.model
        lms, frames = model.log_mel(padded, lengths)
        if self.collect_stats is not None:
            self._update_stats(lms, frames, padded.shape)
        lms = (lms - model.norm_mean) / model.norm_std
        hidden, _ = model.encode_lms(lms.to(self.encoder_dtype), frames)
        return {"hidden_states": hidden}

    def _update_stats(self, lms: Tensor, frames: Tensor, shape) -> None:
        self._calls += 1
        # s3prl's Featurizer probes the upstream once with one second of random noise at start-up;
        # that is not data-set audio.
        if self._calls == 1 and tuple(shape) == (1, 16000):
            return
        stats = self.collect_stats
        if stats.utterances >= self.stats_updates:
            return
        stats.update(lms, frames)
        done = stats.utterances >= self.stats_updates
        if done or stats.utterances % 1000 < lms.shape[0]:
            header = "final" if done else "running"
            print(f"[m2d_calcnorm] {header} {stats.report(self.ckpt_hint)}", flush=True)
            if done:
                print("[m2d_calcnorm] done measuring; the run continues unchanged "
                      "(stop it whenever you like).", flush=True)


def split_ckpt_argument(ckpt: Any) -> tuple[str | None, tuple[float, float] | None]:
    """Official ``-k PATH,MEAN,STD`` -> (PATH, (MEAN, STD)); a bare path -> (PATH, None).

    A path that itself exists wins over splitting (paths may contain commas). ``MEAN,STD`` alone
    (for named entries) -> (None, stats).
    """
    if ckpt is None:
        return None, None
    text = str(ckpt).strip()
    if not text:
        return None, None
    if os.path.exists(os.path.expanduser(text)):
        return text, None
    only_stats = parse_stats_text(text)
    if only_stats is not None:
        return None, only_stats
    parts = text.rsplit(",", 2)
    if len(parts) == 3:
        stats = parse_stats_text(f"{parts[1]},{parts[2]}")
        if stats is not None:
            return parts[0].strip(), stats
    return text, None


def _model_options(model_config: Any, entry: str) -> tuple[dict, NormStats | None]:
    """-g is a YAML file or a SUPERB task name."""
    if model_config is None or (isinstance(model_config, str) and not model_config.strip()):
        return {}, None
    if isinstance(model_config, str) and not os.path.isfile(os.path.expanduser(model_config)):
        found = task_stats(model_config)
        if found is None:
            raise CheckpointError(
                f"{entry}: -g {model_config!r} is neither a file nor a SUPERB task with published statistics "
                f"({known_tasks()})."
            )
        key, (mean, std) = found
        return {}, NormStats(mean, std, f"the published statistics of the SUPERB task {key} (-g {model_config})")
    options = load_model_config(model_config)
    warn_unknown_keys(options, _CONFIG_KEYS, f"{entry} model config")
    try:
        stats = stats_from_config(options, f"the model config (-g {model_config})")
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    return options, stats


def build_upstream(
    *,
    entry: str,
    ckpt: Any = None,
    model_config: Any = None,
    refresh: bool = False,
    url: str | None = None,
    norm_mean: float | None = None,
    norm_std: float | None = None,
    calcnorm: bool = False,
) -> M2DUpstream:
    """Shared body of every M2D entry (see ``hubconf``)."""
    path_text, explicit = split_ckpt_argument(ckpt)
    explicit_source = f"-k {ckpt}" if explicit is not None else ""
    if (norm_mean is None) != (norm_std is None):
        raise CheckpointError(f"{entry}: pass both norm_mean and norm_std, or neither.")
    if norm_mean is not None:
        explicit, explicit_source = (float(norm_mean), float(norm_std)), "the norm_mean/norm_std arguments"

    options, config_stats = _model_options(model_config, entry)  # before any download
    if url is not None:
        if path_text is not None:
            raise CheckpointError(
                f"{entry} downloads its own weights; -k takes only MEAN,STD here (got {ckpt!r}). "
                f"For a local file use -u m2d_local -k PATH."
            )
        location = resolve_checkpoint(url, refresh=refresh, local_entry="m2d_local", what=f"the {entry} weights")
    else:
        if path_text is None:
            form = "PATH,MEAN,STD" if entry == "m2d" else "PATH"
            raise CheckpointError(f"{entry} needs a checkpoint: -u {entry} -k {form} (an official M2D .pth, "
                                  f"its release folder, a release .zip or its URL).")
        location = resolve_checkpoint(path_text, refresh=refresh, local_entry="m2d_local")
    weight_file = find_weight_file(Path(location), what=entry)
    loaded = read_checkpoint(weight_file, entry=entry if url is None else "m2d_local")
    config = resolve_config(loaded, options)
    stats, is_default = choose_stats(
        explicit=explicit, explicit_source=explicit_source,
        config_stats=config_stats, checkpoint_stats=loaded.norm_stats,
    )
    ckpt_hint = str(weight_file)

    model = M2DModel(config, stats.mean, stats.std)
    state = dict(loaded.encoder_state)
    state["norm_stats"] = torch.tensor(loaded.norm_stats if loaded.norm_stats else (-7.1, 4.2))
    try:
        model.encoder.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{weight_file}: the tensors do not fit {config.describe()}: {error}") from None

    collector = None
    if calcnorm:
        collector = RunningLogMelStats()
        updates = int(options.get("calcnorm_updates", 10_000))
        # Features stay normalised with fixed statistics, so this run (and a later -m evaluate of
        # it) is deterministic; the statistics measured here are for the real run.
        print(f"[m2d_calcnorm] measuring the log-mel statistics of the first {updates} utterances of this run; "
              f"meanwhile features are normalised with mean={stats.mean}, std={stats.std} from {stats.source}.",
              flush=True)
    else:
        updates = 0
        if is_default:
            message = missing_stats_message(entry, None if url is not None else ckpt_hint)
        else:
            message = f"{entry}: normalising the log-mel with mean={stats.mean}, std={stats.std} from {stats.source}."
        print(f"[{entry}] {message}", flush=True)
    logger.info("%s: loaded %s (%s) from %s", entry, config.describe(), loaded.layout, weight_file)
    upstream = M2DUpstream(model, stats, collect_stats=collector, stats_updates=updates, ckpt_hint=ckpt_hint)
    upstream.eval()
    return upstream
