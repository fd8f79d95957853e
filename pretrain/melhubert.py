"""MelHuBERT pre-training recipe: masked prediction of k-means labels from log-mel frames.

Facts from nervjack2/MelHuBERT (``dataset.py``, ``model.py``, ``pretrain_expert.py``,
``runner.py``, ``config/*.yaml``):

* input: the 40-bin Kaldi fbank of the waveform x 2**15, normalised with the training set's
  per-bin mean/std (a ``[2, 40]`` ``.npy``); 20 ms models concatenate 10 ms frames ``2i`` and
  ``2i+1`` (an odd last frame gets a zero partner after normalisation);
* labels: one cluster id per 10 ms frame; 20 ms models take ``labels[::2]``;
* random crops of ``sequence_length`` frames at the model's rate (750 at 20 ms, 1500 at 10 ms:
  15 s), the same offset for features and labels; utterances of <= 320 10 ms frames are dropped;
* masking before the projection: fairseq span masks (``mask_prob`` 0.7, ``mask_length`` 5,
  static, at least 2 spans, overlap allowed) over each utterance's valid frames; masked input
  frames are set to 0 (``learnable_mask_emb: False``);
* the network is the upstream's :class:`MelHuBERTModel` unchanged; ``final_proj`` of its last
  layer is scored with plain cross-entropy on the masked valid frames (``pred_masked_weight``
  1, ``pred_nomask_weight`` 0), no cosine/temperature;
* Adam lr 1e-4 constant, betas (0.9, 0.999), no weight decay, gradient-norm clip 10, fp32,
  buckets of 4 length-sorted utterances x 8 accumulation steps, 200 epochs, seed 1337.

Loss normalisation: the official loss is the mean cross-entropy over the masked frames of the
micro-batch. Here the sum over this process's masked frames is divided by the mean number of
masked frames per process (one all-reduce of a count), so the average that DDP takes over
processes equals the single-process mean over the whole global micro-batch: with one process
it is exactly the official loss, with N processes x batch b it equals one process x batch N*b.
"""
from __future__ import annotations

import argparse
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..upstreams.melhubert.config import MelHuBERTConfig, load_stats
from ..upstreams.melhubert.formats import official_model_section, runner_args, write_runner_checkpoint
from ..upstreams.melhubert.model import MelHuBERTModel
from ..upstreams.common.files import save_atomic, save_npy_atomic, write_text_atomic
from ..upstreams.common.masks import padding_mask
from .config import ConfigError
from .data import DataError, load_npy, random_crop, read_table, resolve_path
from .masking import SPAN_SELECTIONS, span_mask
from .optim import param_groups
from .init import init_bert
from .recipe import Recipe, register

__all__ = ["MelHuBERTObjective", "MelHuBERTData", "FbankLabelList", "MelHuBERTForPretraining", "MelHuBERTRecipe",
           "normalise", "stack_frame_pairs", "frame_labels", "resolve_stats", "stats_array", "official_upstream_config",
           "official_adam_state", "export_runner_checkpoint",
           "LABEL_RATE_MS", "MIN_LENGTH_FRAMES"]

#: label files hold one cluster id per 10 ms frame, whatever the model's frame period
LABEL_RATE_MS = 10
#: the official ``max_timestep: -320``: utterances of at most 3.2 s are not trained on
MIN_LENGTH_FRAMES = 320


@dataclass
class MelHuBERTObjective:
    """Masking and loss options (the official model yaml's names)."""

    mask_prob: float = 0.7
    mask_length: int = 5
    mask_selection: str = "static"
    mask_other: float = 0.0
    #: the official model calls ``compute_mask_indices(..., min_masks=2)``
    min_masks: int = 2
    no_mask_overlap: bool = False
    mask_min_space: int = 1
    pred_masked_weight: float = 1.0
    #: 0 = the official ``skip_nomask: True`` (unmasked frames are not scored)
    pred_nomask_weight: float = 0.0

    def validate(self) -> None:
        if not 0.0 < self.mask_prob <= 1.0 or self.mask_length < 1:
            raise ConfigError("objective.mask_prob must lie in (0, 1] and objective.mask_length be >= 1")
        if self.mask_selection not in SPAN_SELECTIONS:
            raise ConfigError(f"objective.mask_selection must be one of {', '.join(SPAN_SELECTIONS)}")
        if self.pred_masked_weight < 0 or self.pred_nomask_weight < 0 or \
                self.pred_masked_weight + self.pred_nomask_weight == 0:
            raise ConfigError("objective.pred_masked_weight / pred_nomask_weight must be >= 0, not both 0")


@dataclass
class MelHuBERTData:
    """Training lists written by ``python -m s3prl_plugins.pretrain.prepare labels``.

    ``sets``: CSVs with ``file_path`` (raw fbank ``.npy`` [T, 40]), ``label_path`` (cluster ids
    ``.npy`` [T] at 10 ms) and ``length`` (T, 10 ms frames); relative paths are read from
    ``root`` (default: each CSV's folder). ``stats``: the ``[2, 40]`` mean/std ``.npy`` of the
    ``fbank`` step (or ``libri100``/``libri360``/``libri960``, the official files).
    """

    sets: list[str] | None = None
    root: str | None = None
    stats: str | None = None
    #: crop length in frames of the model's rate; null = 15 s (750 at 20 ms, 1500 at 10 ms)
    sequence_length: int | None = None
    #: utterances with at most this many 10 ms frames are dropped (official max_timestep -320)
    min_length_frames: int = MIN_LENGTH_FRAMES
    #: utterances with more 10 ms frames are dropped (null: keep all)
    max_length_frames: int | None = None
    #: true when the .npy features are already normalised with ``stats`` (the official
    #: preprocess.sh data); false for the raw fbank of the ``fbank`` step
    features_normalised: bool = False
    #: validation lists in the layout of ``sets`` (e.g. dev-clean through the same preparation
    #: steps); the official runner validates on nothing
    valid: list[str] | None = None

    def validate(self) -> None:
        if not self.sets:
            raise ConfigError("data.sets must list the training CSVs written by "
                              "`python -m s3prl_plugins.pretrain.prepare labels` (file_path,label_path,length)")
        if isinstance(self.sets, str):
            self.sets = [self.sets]
        if isinstance(self.valid, str):
            self.valid = [self.valid]
        if not self.stats:
            raise ConfigError("data.stats must name the [2, 40] mean/std .npy written by "
                              "`python -m s3prl_plugins.pretrain.prepare fbank` (or libri100/libri360/libri960)")
        if self.sequence_length is not None and self.sequence_length < 1:
            raise ConfigError("data.sequence_length must be >= 1 frame (or null for 15 s)")


# ---------------------------------------------------------------------------------------------
# Features and labels (shared with the k-means / label steps)
# ---------------------------------------------------------------------------------------------
def normalise(fbank: np.ndarray | Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Raw fbank [T, 40] -> float32 ``(x - mean) / std``, the upstream front end's arithmetic."""
    # np.array copies: feature files are memory-mapped read-only
    x = fbank if torch.is_tensor(fbank) else torch.from_numpy(np.array(fbank, dtype=np.float32))
    return (x.float() - mean) / std


def stack_frame_pairs(features: Tensor) -> Tensor:
    """[T, 40] normalised 10 ms frames -> [ceil(T/2), 80]: row i = [frame 2i, frame 2i+1], a zero
    partner for an odd last frame (the upstream's 20 ms front end)."""
    if features.shape[0] % 2:
        features = F.pad(features, (0, 0, 0, 1))
    return features.reshape(-1, 2 * features.shape[1])


def frame_labels(labels: np.ndarray, num_frames_10ms: int, frame_period_ms: int, *,
                 where: str = "label file") -> np.ndarray:
    """10 ms label file -> labels at the model's rate (20 ms: every other label, the label of
    the first 10 ms frame of each pair, as the official data set). A file already at 20 ms
    (``ceil(T / 2)`` labels) is taken as is for 20 ms models."""
    labels = np.asarray(labels).reshape(-1)
    if len(labels) == num_frames_10ms:
        return labels[::2] if frame_period_ms == 20 else labels
    if frame_period_ms == 20 and len(labels) == -(-num_frames_10ms // 2):
        return labels
    raise DataError(f"{where}: {len(labels)} labels for {num_frames_10ms} fbank frames; label files hold one "
                    "label per 10 ms frame. Re-create them with `python -m s3prl_plugins.pretrain.prepare labels` "
                    "from the same fbank features")


def resolve_stats(choice: str):
    """The upstream's ``load_stats`` (shipped name or ``.npy`` path; float32 tensors), with a
    configuration error instead of a ValueError."""
    try:
        return load_stats(choice)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def stats_array(choice: str) -> np.ndarray:
    """The float64 ``[2, 40]`` array behind ``choice`` (checked by ``load_stats`` first)."""
    from ..upstreams.melhubert import config as shipped

    resolve_stats(choice)
    key = str(choice).strip().lower().replace("-", "").replace("_", "")
    if key in shipped.SHIPPED_STATS:
        path = Path(shipped.__file__).resolve().parent / "stats" / shipped.SHIPPED_STATS[key][0]
    else:
        path = Path(str(choice).strip()).expanduser()
    return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64).reshape(2, 40)


class FbankLabelList:
    """Rows of the training CSVs (``file_path,label_path,length``), sorted longest first, with
    utterances outside ``[min_length_frames + 1, max_length_frames]`` dropped (official filter)."""

    def __init__(self, csv_paths: Sequence[str | os.PathLike], root: str | os.PathLike | None = None,
                 min_length_frames: int = MIN_LENGTH_FRAMES, max_length_frames: int | None = None):
        rows = []
        for csv_path in csv_paths:
            table = read_table(csv_path)
            missing = [c for c in ("file_path", "label_path", "length") if c not in table[0]]
            if missing:
                raise DataError(f"{csv_path} lacks the column(s) {missing} (has {list(table[0])}); write training "
                                "lists with `python -m s3prl_plugins.pretrain.prepare labels`")
            base = Path(root) if root else Path(csv_path).resolve().parent
            for row in table:
                length = int(row["length"])
                if length <= min_length_frames or (max_length_frames and length > max_length_frames):
                    continue
                rows.append((resolve_path(base, row["file_path"]), resolve_path(base, row["label_path"]), length))
        if not rows:
            raise DataError(f"no utterance of {[str(p) for p in csv_paths]} is longer than {min_length_frames} "
                            "10 ms frames (data.min_length_frames)")
        rows.sort(key=lambda r: -r[2])
        self.feature_files = [r[0] for r in rows]
        self.label_files = [r[1] for r in rows]
        self.lengths = [r[2] for r in rows]

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        fbank = load_npy(self.feature_files[index], "the training CSV")
        labels = load_npy(self.label_files[index], "the training CSV")
        if fbank.ndim != 2 or fbank.shape[1] != 40:
            raise DataError(f"{self.feature_files[index]} has shape {fbank.shape}; expected [T, 40] raw fbank")
        return {"fbank": fbank, "labels": labels, "where": str(self.label_files[index])}


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
def init_official(model: MelHuBERTModel) -> None:
    """The official initialisation: fairseq's ``init_bert_params`` on the encoder (Linear
    weights N(0, 0.02), biases 0; the positional convolution keeps its own init), PyTorch's
    defaults for ``pre_extract_proj`` and ``final_proj``."""
    init_bert(model.encoder)


class MelHuBERTForPretraining(MelHuBERTModel):
    """The upstream's network (same parameter names, same inference ``forward``) plus the
    masked-prediction loss. ``forward(features, padding_mask, mask, labels)`` with ``labels``
    returns summed cross-entropies and counts (normalised by the recipe, see the module doc)."""

    def __init__(self, config: MelHuBERTConfig, score_unmasked: bool = False):
        super().__init__(config)
        self.score_unmasked = score_unmasked
        init_official(self)

    def forward(self, features: Tensor, padding_mask: Tensor | None = None, mask: Tensor | None = None,
                labels: Tensor | None = None):
        if labels is None:
            return super().forward(features, padding_mask)
        if mask is None:
            raise ValueError("masked prediction needs the mask")
        # masking before the projection: masked input frames are 0 (official mask_emb = 0)
        hidden = super().forward(features.masked_fill(mask.unsqueeze(-1), 0.0), padding_mask)[-1]
        valid = torch.ones_like(mask) if padding_mask is None else ~padding_mask
        out = {}
        for name, selected in (("masked", mask & valid), ("unmasked", ~mask & valid)):
            if name == "unmasked" and not self.score_unmasked:
                break
            logits = self.final_proj(hidden[selected]).float()
            target = labels[selected]
            out[f"ce_{name}"] = F.cross_entropy(logits, target, reduction="sum")
            out[f"n_{name}"] = selected.sum()
            out[f"correct_{name}"] = (logits.argmax(-1) == target).sum().detach()
        return out


def _mean_count_per_process(count: Tensor) -> Tensor:
    """Number of frames summed over processes / number of processes (1 process: the count)."""
    import torch.distributed as dist

    count = count.float()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        count = count.clone()
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
        count = count / dist.get_world_size()
    return count.clamp_min(1.0)


# ---------------------------------------------------------------------------------------------
# Official checkpoint layout
# ---------------------------------------------------------------------------------------------
def official_upstream_config(model_cfg: MelHuBERTConfig, objective: MelHuBERTObjective | None = None) -> dict:
    """The 29 keys of the official ``melhubert:`` model yaml section."""
    objective = objective or MelHuBERTObjective()
    return official_model_section(model_cfg, _training_options(objective))


def _training_options(objective: MelHuBERTObjective) -> dict:
    return dict(
        pred_masked_weight=float(objective.pred_masked_weight), pred_nomask_weight=float(objective.pred_nomask_weight),
        skip_masked=objective.pred_masked_weight == 0, skip_nomask=objective.pred_nomask_weight == 0,
        mask_prob=float(objective.mask_prob), mask_length=int(objective.mask_length),
        mask_selection=objective.mask_selection, mask_other=float(objective.mask_other),
        no_mask_overlap=bool(objective.no_mask_overlap), mask_min_space=int(objective.mask_min_space),
    )


def _adam_group(num_params: int, *, lr: float, betas, eps: float) -> dict:
    """One parameter group of ``torch.optim.Adam(params, lr, betas, eps, weight_decay=0)``."""
    template = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=lr, betas=tuple(betas), eps=eps, weight_decay=0)
    group = dict(template.state_dict()["param_groups"][0])
    group["params"] = list(range(num_params))
    return group


def official_adam_state(model: nn.Module, optimizer: dict | None, *, lr: float, betas, eps: float) -> dict:
    """Optimizer state as the official single-group ``torch.optim.Adam`` over
    ``model.parameters()`` (what its runner saves and can resume from). Our AdamW with
    weight_decay 0 is the same update; its two parameter groups (no-decay / decay) are merged
    back into model order. Unknown layouts give an empty state (moments start from zero)."""
    params = [p for p in model.parameters()]
    group = _adam_group(len(params), lr=lr, betas=betas, eps=eps)
    state: dict[int, dict] = {}
    if isinstance(optimizer, dict) and "state" in optimizer and "param_groups" in optimizer:
        groups = optimizer["param_groups"]
        counts = [len(g["params"]) for g in groups]
        order = None
        if counts == [len(params)]:
            order = list(range(len(params)))  # already one group in model order (s3prl's runner)
        else:
            ours = param_groups(model, 0.0)
            if [len(g["params"]) for g in ours] == counts:
                index = {id(p): i for i, p in enumerate(params)}
                order = [index[id(p)] for g in ours for p in g["params"]]
        if order is not None:
            flat = [pid for g in groups for pid in g["params"]]
            for position, pid in enumerate(flat):
                if pid in optimizer["state"]:
                    state[order[position]] = {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v)
                                              for k, v in optimizer["state"][pid].items()}
    return {"state": state, "param_groups": [group]}


def export_runner_checkpoint(path: str | os.PathLike, state_dict: dict[str, Tensor], model_cfg: MelHuBERTConfig,
                              *, objective: MelHuBERTObjective | None = None, step: int = 0,
                              optimizer: dict | None = None, args: argparse.Namespace | None = None,
                              runner: dict | None = None) -> Path:
    """The file the official runner writes (``pretrain_expert.save_model``): ``Optimizer``,
    ``Step``, ``Args`` (an ``argparse.Namespace``), ``Runner``, ``model``, ``Upstream_Config``
    ``{'melhubert': ...}``, in this order; written atomically."""
    if args is None:
        args = runner_args(model_cfg.frame_period_ms, str(Path(path).parent))
    if optimizer is None:
        optimizer = {"state": {}, "param_groups": [_adam_group(len(state_dict), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)]}
    write_runner_checkpoint(path, state_dict, model_cfg, step=step, optimizer=optimizer, args=args, runner=runner or {},
                            training=_training_options(objective or MelHuBERTObjective()))
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------------------------
@register("melhubert")
class MelHuBERTRecipe(Recipe):
    ModelConfig, ObjectiveConfig, DataConfig = MelHuBERTConfig, MelHuBERTObjective, MelHuBERTData

    def __init__(self, config: dict):
        super().__init__(config)
        self.frame_period_ms = self.model_cfg.frame_period_ms
        self.stack = self.frame_period_ms // LABEL_RATE_MS
        if self.data.sequence_length is None:
            self.data.sequence_length = 15_000 // self.frame_period_ms
        self._mean = self._std = None

    # -- statistics: read once, kept in the checkpoints (they travel with the model) -----------
    def prepare(self, ctx) -> None:
        if "stats" not in self.state:
            self.state["stats"] = stats_array(self.data.stats).tolist()
            self.state["stats_source"] = resolve_stats(self.data.stats).description

    def _stats(self) -> tuple[Tensor, Tensor]:
        if self._mean is None:
            if "stats" not in self.state:
                self.prepare(None)
            mean, std = self.state["stats"]
            # float64 values -> float32, as the upstream's load_stats converts the .npy
            self._mean = torch.tensor(mean, dtype=torch.float32)
            self._std = torch.tensor(std, dtype=torch.float32)
        return self._mean, self._std

    def stats_array(self) -> np.ndarray:
        """The float64 [2, 40] statistics trained with (the official .npy layout)."""
        self._stats()
        return np.asarray(self.state["stats"], dtype=np.float64)

    # -- data -------------------------------------------------------------------------------
    def build_reader(self) -> FbankLabelList:
        return FbankLabelList(self.data.sets, self.data.root, self.data.min_length_frames, self.data.max_length_frames)

    def build_valid_reader(self) -> FbankLabelList | None:
        if not self.data.valid:
            return None
        return FbankLabelList(self.data.valid, self.data.root, self.data.min_length_frames, self.data.max_length_frames)

    def item_lengths(self, reader) -> Sequence[int]:
        return reader.lengths  # s3prl-style buckets of similar lengths

    def make_example(self, raw: dict, rng: np.random.Generator) -> dict:
        mean, std = self._stats()
        fbank = raw["fbank"]
        labels = frame_labels(raw["labels"], fbank.shape[0], self.frame_period_ms, where=raw.get("where", "label file"))
        if self.data.features_normalised:
            features = torch.from_numpy(np.array(fbank, dtype=np.float32))
        else:
            features = normalise(fbank, mean, std)
        if self.stack == 2:
            features = stack_frame_pairs(features)
        crop = self.data.sequence_length
        start = random_crop(features.shape[0], crop, rng)
        features = features[start:start + crop]
        labels = np.asarray(labels[start:start + crop], dtype=np.int64)
        obj = self.objective
        mask = span_mask(features.shape[0], rng, mask_prob=obj.mask_prob, mask_length=obj.mask_length,
                         selection=obj.mask_selection, other=obj.mask_other, min_masks=obj.min_masks,
                         no_overlap=obj.no_mask_overlap, min_space=obj.mask_min_space)
        if labels.size and (labels.min() < 0 or labels.max() >= self.model_cfg.num_cluster):
            raise DataError(f"{raw.get('where', '')}: cluster ids outside [0, {self.model_cfg.num_cluster}); "
                            "set model.num_cluster to the number of k-means clusters")
        return {"features": features.contiguous(), "labels": torch.from_numpy(labels), "mask": torch.from_numpy(mask)}

    def collate(self, examples: list[dict]) -> dict:
        lengths = torch.tensor([e["features"].shape[0] for e in examples], dtype=torch.long)
        longest, dim = int(lengths.max()), examples[0]["features"].shape[1]
        features = torch.zeros(len(examples), longest, dim)
        labels = torch.zeros(len(examples), longest, dtype=torch.long)
        mask = torch.zeros(len(examples), longest, dtype=torch.bool)
        for i, e in enumerate(examples):
            n = e["features"].shape[0]
            features[i, :n], labels[i, :n], mask[i, :n] = e["features"], e["labels"], e["mask"]
        padding = padding_mask(lengths, longest)
        return {"features": features, "labels": labels, "mask": mask, "padding_mask": padding}

    # -- model and loss ---------------------------------------------------------------------
    def build_model(self) -> MelHuBERTForPretraining:
        return MelHuBERTForPretraining(self.model_cfg, score_unmasked=self.objective.pred_nomask_weight > 0)

    def compute_loss(self, model, batch):
        out = model(batch["features"], batch["padding_mask"], batch["mask"], batch["labels"])
        obj = self.objective
        loss = out["ce_masked"].new_zeros(())
        logs = {}
        for name, weight in (("masked", obj.pred_masked_weight), ("unmasked", obj.pred_nomask_weight)):
            if f"ce_{name}" not in out:
                continue
            count = _mean_count_per_process(out[f"n_{name}"])
            if weight > 0:
                loss = loss + weight * out[f"ce_{name}"] / count
            logs[f"acc_{name}"] = (out[f"correct_{name}"].float() / out[f"n_{name}"].clamp_min(1)).detach()
        return loss, logs

    def seconds_per_example(self) -> float:
        return self.data.sequence_length * self.frame_period_ms / 1000.0

    # -- export -----------------------------------------------------------------------------
    def _runner_section(self) -> dict:
        t, d = self.train, self.data
        return {
            "runner": {"n_epochs": t.epochs if t.epochs is not None else -1,
                       "total_steps": t.total_steps if t.total_steps is not None else -1,
                       "gradient_clipping": t.clip_grad, "gradient_accumulate_steps": t.accum_steps,
                       "log_step": t.log_every, "save_every_x_epochs": 50},
            "optimizer": {"lr": t.lr, "betas": list(t.betas), "eps": t.eps, "weight_decay": t.weight_decay},
            "datarc": {"num_workers": t.num_workers, "train_batch_size": t.batch_size,
                       "max_timestep": -int(d.min_length_frames), "sequence_length": int(d.sequence_length),
                       "sets": [str(s) for s in d.sets]},
        }

    def export(self, model, folder, *, step, epoch, optimizer=None, scaler=None) -> Path:
        """``<folder>/melhubert_<fp>ms-step<N>.ckpt`` (official runner layout, loads in
        ``melhubert_local`` and the official ``MelHuBERTModel``), ``...weights.pt`` (weights and
        model config only), ``mean-std.npy`` (the statistics trained with) and
        ``melhubert_local.yaml`` (the ``-g`` file that points ``melhubert_local`` at them)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fp, t = self.frame_period_ms, self.train
        stem = f"melhubert_{fp}ms-step{step}"
        stats_path = folder / "mean-std.npy"
        save_npy_atomic(stats_path, self.stats_array())
        state = OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())
        adam = official_adam_state(model, optimizer, lr=float(t.lr or 1e-4), betas=t.betas, eps=t.eps)
        args = runner_args(fp, str(folder), runner_config="config_runner.yaml", upstream_config="config_model.yaml",
                           seed=t.seed, device=t.device)
        path = export_runner_checkpoint(folder / f"{stem}.ckpt", state, self.model_cfg, objective=self.objective,
                                         step=step, optimizer=adam, args=args, runner=self._runner_section())
        save_atomic({"model": state, "config": official_upstream_config(self.model_cfg, self.objective)},
                    folder / f"{stem}.weights.pt")
        write_text_atomic(
            folder / "melhubert_local.yaml",
            "# -g file for `run_downstream.py -u melhubert_local -k <this folder>/" + f"{stem}.ckpt -g <this file>`\n"
            f"stats: {json.dumps(str(stats_path.resolve()))}\n")
        return path
