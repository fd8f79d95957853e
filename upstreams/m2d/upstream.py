"""The s3prl upstream for M2D: argument handling of the entries, loading, and the forward pass."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..common.base import Upstream, announce
from ..common.checkpoint import CheckpointError, resolve_entry_checkpoint
from ..common.config import options_from
from ..common.family import Release
from ..common.masks import num_frames_s3prl
from . import FAMILY
from .config import M2DConfig, M2DOptions, resolve_config
from .formats import find_weight_file, read_checkpoint
from .model import M2DModel
from .norm_stats import (
    DEFAULT_STATS,
    NormStats,
    RunningLogMelStats,
    choose_stats,
    known_tasks,
    missing_stats_message,
    parse_stats_text,
    stats_from_options,
    task_stats,
)
from .releases import RELEASES

__all__ = ["M2DUpstream", "build", "split_ckpt_argument"]



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
        # exactly the frames s3prl keeps: nothing to trim or pad afterwards
        keep = num_frames_s3prl(padded.shape[-1], self.downsample_rate)
        hidden, _ = model.encode_lms(lms.to(self.encoder_dtype), frames, out_steps=keep)
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


def _options(model_config: Any, kwargs: dict, entry: str) -> tuple[M2DOptions, NormStats | None]:
    """-g is a YAML file (or mapping) or a SUPERB task name; keyword options overlay it."""
    if isinstance(model_config, str) and model_config.strip() and not os.path.isfile(os.path.expanduser(model_config)):
        found = task_stats(model_config)
        if found is None:
            raise CheckpointError(
                f"{entry}: -g {model_config!r} is neither a file nor a SUPERB task with published statistics "
                f"({known_tasks()})."
            )
        key, (mean, std) = found
        source = f"the published statistics of the SUPERB task {key} (-g {model_config})"
        return options_from(M2DOptions, None, kwargs, entry), NormStats(mean, std, source)
    try:  # as every M2D loading problem, a CheckpointError
        options = options_from(M2DOptions, model_config, kwargs, entry)
        stats = stats_from_options(options, f"the model config (-g {model_config})")
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    return options, stats


def _weight_file(entry: str, path_text: str | None, refresh: bool) -> tuple[Path, Release | None]:
    """The local weight file of an entry and the release whose facts apply: a named release
    downloaded once, or ``-k`` (for a named release: a copy of it fetched by hand)."""
    release = FAMILY.release_for(entry)
    if release is None and path_text is None:
        form = "PATH,MEAN,STD" if entry == "m2d" else "PATH"
        raise CheckpointError(f"{entry} needs a checkpoint: -u {entry} -k {form} (an official M2D .pth, "
                              f"its release folder, a release .zip or its URL).")
    location, release = resolve_entry_checkpoint(entry, release, path_text, refresh=refresh, local_entry="m2d_local")
    return find_weight_file(Path(location), what=entry), release


def _model(config: M2DConfig, loaded, stats: NormStats) -> M2DModel:
    model = M2DModel(config, stats.mean, stats.std)
    state = dict(loaded.encoder_state)
    state["norm_stats"] = torch.tensor(loaded.norm_stats if loaded.norm_stats else DEFAULT_STATS)
    try:
        model.encoder.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{loaded.path}: the tensors do not fit {config.describe()}: {error}") from None
    return model


def build(entry: str, ckpt: Any = None, model_config: Any = None, refresh: bool = False, *,
          norm_mean: float | None = None, norm_std: float | None = None, **kwargs) -> M2DUpstream:
    """Every M2D entry (see ``hubconf``): ``m2d -k PATH,MEAN,STD``, ``m2d_local -k PATH``,
    ``m2d_calcnorm -k PATH`` and the named releases (``-k MEAN,STD``, or ``-k PATH[,MEAN,STD]`` with
    PATH a copy of the release fetched by hand: its zip, folder or ``.pth``)."""
    if entry == "m2d_calcnorm" and ckpt is not None and "," in str(ckpt):
        ckpt = split_ckpt_argument(ckpt)[0] or str(ckpt).split(",")[0]
    path_text, explicit = split_ckpt_argument(ckpt)
    explicit_source = f"-k {ckpt}" if explicit is not None else ""
    if (norm_mean is None) != (norm_std is None):
        raise CheckpointError(f"{entry}: pass both norm_mean and norm_std, or neither.")
    if norm_mean is not None:
        explicit, explicit_source = (float(norm_mean), float(norm_std)), "the norm_mean/norm_std arguments"
    options, config_stats = _options(model_config, kwargs, entry)  # before any download
    weight_file, release = _weight_file(entry, path_text, refresh)
    loaded = read_checkpoint(weight_file, entry="m2d_local" if entry in RELEASES else entry)
    config = resolve_config(loaded, options, release_folder=release.folder if release is not None else None)
    stats, is_default = choose_stats(explicit=explicit, explicit_source=explicit_source,
                                     config_stats=config_stats, checkpoint_stats=loaded.norm_stats)
    collector, updates = None, 0
    if entry == "m2d_calcnorm":
        collector, updates = RunningLogMelStats(), int(options.calcnorm_updates)
        # Features stay normalised with fixed statistics, so this run (and a later -m evaluate of
        # it) is deterministic; the statistics measured here are for the real run.
        print(f"[m2d_calcnorm] measuring the log-mel statistics of the first {updates} utterances of this run; "
              f"meanwhile features are normalised with mean={stats.mean}, std={stats.std} from {stats.source}.",
              flush=True)
    elif is_default:
        named = entry in RELEASES
        hint = path_text if named else str(weight_file)  # a named entry's -k is its release's copy
        announce(entry, missing_stats_message(entry, hint, named=named), warning=True)
    else:
        announce(entry, f"normalising the log-mel with mean={stats.mean}, std={stats.std} from {stats.source}.")
    announce(entry, f"{weight_file}: {config.describe()} ({loaded.layout})")
    upstream = M2DUpstream(_model(config, loaded, stats), stats, collect_stats=collector, stats_updates=updates,
                           ckpt_hint=str(weight_file))
    return upstream
