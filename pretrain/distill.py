"""Distillation recipes of the ARMHuBERT family and STaRHuBERT, from a frozen HuBERT / WavLM teacher.

* ``armhubert`` (alias ``armwavlm``): ARMHuBERT, ARMHuBERT-S, ARMwavLM-S. Student with
  attention-map reuse, masking distillation, per-layer projection heads to the teacher's width.
* ``maskhubert``: the same objective, student without map reuse.
* ``starhubert`` (alias ``starwavlm``): STaRHuBERT / STaRWavLM. Student without heads nor mask
  embedding; layer-wise + intra-layer temporal Gram matrix losses (:mod:`.star`).

Facts from sungnyun/ARMHuBERT (``train.py``, ``conf/*``, ``models/*``; see the shipped configs for
the value of every setting and its source):

* the teacher runs twice per step, with its own span mask (fairseq ``compute_mask_indices``, the
  mask settings of the ``teacher`` yaml section, ``min_masks=2``, ``require_same_masks``) and
  without; the student replaces the SAME frames by its own ``mask_emb`` after its input dropout;
* masked frames are matched to the unmasked-input teacher, unmasked frames to the masked-input
  teacher: per frame the MSE (or L1) over the 768 channels of projection head l vs teacher layer l
  (post-LN output), summed over frames and layers and divided by B*T (T = padded frames of the
  batch, padded frames included): ``0.1 * (hint terms of layers 1..11) + 1.0 * (terms of layer 12)``;
* the student starts from random weights: fairseq ``init_bert_params`` in the transformer (every
  Linear N(0, 0.02), zero bias), Kaiming-normal convolutions, ``mask_emb`` U(0, 1);
* whole LibriSpeech utterances (no cropping) batched by length: the utterances sorted by length
  and cut into consecutive groups, the group order shuffled (the sampler's ``lengths`` mode).

Distributed training: each sample's mask is drawn from its own generator (:mod:`.data`), so masks
do not depend on the split of a batch across processes. What the official code computes per
process (``require_same_masks``' smallest mask count, the padded length T of the B*T
normaliser and of the teacher's input) is computed over the whole global micro-batch here (one
small all-reduce per micro-batch): 2 processes x batch b then train exactly like 1 process x 2b.
The official run (2 GPUs, one length bucket each) equalised and padded per GPU instead.
"""
from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..upstreams.common.config import ConfigError as StudentConfigError
from ..upstreams.common.student.config import ARM, STAR, StudentConfig, student_config
from ..upstreams.common.student.model import StudentModel
from ..upstreams.common.wave_cnn import parse_conv_layers
from .config import ConfigError
from .data import DataError, librispeech_list
from .masking import SPAN_SELECTIONS, span_mask
from .init import init_bert
from .recipe import Recipe, register
from .star import StarLossConfig, star_loss

__all__ = ["StudentSection", "DistillData", "MaskingDistillObjective", "ARMHuBERTRecipe", "MaskHuBERTRecipe",
           "STaRHuBERTRecipe", "init_student_like_official", "masking_distill_loss", "equalize_masks"]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class StudentSection:
    """``model:`` section: the official ``distiller`` yaml section, verbatim, plus our options."""

    #: the ``distiller`` section of the official training yaml (architecture, dropouts, ...)
    distiller: dict = field(default_factory=dict)
    #: name of the exported files (official ``train.output_dir``)
    release_name: str = "student"
    #: True: reproduce the official batch coupling in training (first GroupNorm statistics over the
    #: padding; reuse layers reading the map in (head, batch) order). False: every utterance is
    #: trained exactly as the batch-invariant upstream entry runs it.
    official_batching: bool = False
    #: "official": fairseq init_bert_params for the transformer (N(0, 0.02) Linears, zero biases);
    #: "pytorch": keep PyTorch's default Linear initialisation
    init: str = "official"
    #: also write the frozen teacher into the export under ``teacher_model.model.`` as the official
    #: files do (fairseq/s3prl teachers only: their parameter names are the official ones). No
    #: loader reads it; off by default (about 95M parameters more per file).
    export_teacher: bool = False

    def validate(self) -> None:
        if not isinstance(self.distiller, dict) or not self.distiller:
            raise ConfigError("model.distiller must hold the student's distiller section (encoder_layers, "
                              "encoder_embed_dim, conv_feature_layers, ...); see the shipped configs")
        if self.init not in ("official", "pytorch"):
            raise ConfigError(f"model.init must be official or pytorch, got {self.init!r}")


@dataclass
class DistillData:
    """``data:`` section: LibriSpeech through s3prl's bucket CSVs, and the local teacher."""

    #: the folder the bucket CSVs' ``file_path`` column is relative to (official data.libri_root)
    libri_root: str = "data/LibriSpeech"
    #: s3prl's ``len_for_bucket`` folder with ``<set>.csv`` (official data.bucketing_path)
    bucket_dir: str = "data/len_for_bucket"
    train_sets: list = field(default_factory=lambda: ["train-clean-100", "train-clean-360", "train-other-500"])
    #: validation sets (bucket CSV names; official: dev-clean, every epoch)
    valid: list | None = None
    #: drop utterances longer / shorter than this many samples (official: none dropped; fewer than
    #: 400 samples give no frame at all)
    max_samples: int | None = None
    min_samples: int = 400
    #: local teacher checkpoint: fairseq/s3prl-converted ``hubert_base_ls960.pt``, s3prl-converted
    #: ``wavlm_base.pt`` or a Hugging Face HubertModel/WavLMModel folder (nothing is downloaded)
    teacher: str = "hubert_base_ls960.pt"
    #: auto, huggingface, hubert_local or wavlm_local
    teacher_kind: str = "auto"
    #: standardise each waveform before the teacher (official: no, HuBERT/WavLM Base use raw audio)
    teacher_normalize: bool = False

    def validate(self) -> None:
        if not self.train_sets:
            raise ConfigError("data.train_sets is empty; name the LibriSpeech sets (bucket CSV names) to train on")
        if self.teacher_kind not in ("auto", "huggingface", "hubert_local", "wavlm_local"):
            raise ConfigError(f"data.teacher_kind must be auto, huggingface, hubert_local or wavlm_local, "
                              f"got {self.teacher_kind!r}")


@dataclass
class MaskingDistillObjective:
    """``objective:`` section of armhubert/maskhubert (official ``teacher`` + ``train`` yaml keys)."""

    #: masking distillation (official); false = plain layer-to-layer distillation (no mask)
    masking: bool = True
    mask_prob: float = 0.8
    mask_length: int = 10
    mask_selection: str = "uniform"
    mask_other: float = 0.0
    no_mask_overlap: bool = True
    mask_min_space: int = 1
    min_masks: int = 2
    require_same_masks: bool = True
    #: "mse" or "l1" (official rec_loss_type)
    loss_type: str = "mse"
    #: student layers (1-based) distilled as hints, each to the same teacher layer; null = every
    #: layer but the last (official distil_random_layer = 11 of range(11))
    hint_layers: list | None = None
    hint_weight: float = 0.1
    #: weight of the last layer (student's last vs teacher's last)
    rec_weight: float = 1.0
    #: padded frames count in the sums (official); the normaliser stays B*T either way
    loss_on_padding: bool = True

    def validate(self) -> None:
        if self.mask_selection not in SPAN_SELECTIONS:
            raise ConfigError(f"objective.mask_selection must be one of {', '.join(SPAN_SELECTIONS)}, "
                              f"got {self.mask_selection!r}")
        if not 0.0 <= self.mask_prob <= 1.0 or self.mask_length < 1:
            raise ConfigError("objective.mask_prob must lie in [0, 1] and objective.mask_length be >= 1")
        if self.loss_type not in ("mse", "l1"):
            raise ConfigError(f"objective.loss_type must be mse or l1, got {self.loss_type!r}")
        if self.hint_layers is not None and any(not isinstance(l, int) or l < 1 for l in self.hint_layers):
            raise ConfigError(f"objective.hint_layers must be 1-based layer numbers, got {self.hint_layers}")


# ---------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------
def init_student_like_official(model: StudentModel) -> None:
    """fairseq ``init_bert_params`` over the transformer: every Linear N(0, 0.02) with zero bias
    (the CNN's Kaiming init, the positional convolution's init and ``mask_emb`` ~ U(0, 1) are already
    the official ones; the projection heads keep PyTorch's Linear init, as officially)."""
    init_bert(model.encoder)


def conv_output_frames(conv_layers, num_samples: int) -> int:
    """Frames of a waveform CNN for ``num_samples`` samples (0 when too short)."""
    frames = num_samples
    for _, kernel, stride in conv_layers:
        if frames < kernel:
            return 0
        frames = (frames - kernel) // stride + 1
    return frames


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_batch_shape(num_samples: int, mask: Tensor | None, device: torch.device) -> tuple[int, Tensor | None]:
    """(padded length, smallest mask count) over every process's micro-batch: the values one
    process holding the whole global batch would see. One all-reduce (on ``device``: NCCL needs
    GPU tensors); the length reaches the host."""
    fewest = mask.sum(1).min() if mask is not None and mask.shape[0] else None
    if not _distributed():
        return num_samples, fewest
    import torch.distributed as dist

    stats = torch.stack([torch.tensor(num_samples, device=device, dtype=torch.long),
                         -(fewest if fewest is not None else torch.tensor(0, device=device)).long()])
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    return int(stats[0]), (-stats[1] if fewest is not None else None)


def equalize_masks(mask: Tensor, rank: Tensor, keep: Tensor) -> Tensor:
    """fairseq's ``require_same_masks`` on the device: every row keeps its ``keep`` masked frames of
    lowest ``rank`` (a random permutation drawn per sample), i.e. a uniformly random subset."""
    if mask.shape[1] == 0:
        return mask
    ranked = rank.masked_fill(~mask, torch.iinfo(rank.dtype).max)
    order = ranked.sort(dim=1).values
    index = (keep - 1).clamp(min=0, max=mask.shape[1] - 1).view(1, 1).expand(mask.shape[0], 1)
    threshold = order.gather(1, index)
    return mask & (ranked <= threshold) & (keep > 0)


def masking_distill_loss(pred: list[Tensor], unmasked_target: list[Tensor], masked_target: list[Tensor],
                         mask: Tensor, weights: list[float], *, loss_type: str = "mse",
                         valid: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The official masking-distillation loss (float32).

    ``pred[i]`` [B, T, D] (projection heads), ``unmasked_target[i]`` / ``masked_target[i]`` the
    teacher layers it is matched to, ``weights[i]`` its weight (the official: 0.1 for the hint
    layers, 1.0 for the last, given last). Masked frames are compared with the unmasked-input
    teacher, unmasked frames with the masked-input teacher; per frame the mean over channels; the
    sums over frames are divided by B*T. ``valid`` (True = real frame) drops padded frames from the
    sums when given."""
    batch, frames = mask.shape
    scale = 1.0 / float(batch * frames)
    masked_frames = mask.float()
    unmasked_frames = (~mask).float()
    if valid is not None:
        masked_frames, unmasked_frames = masked_frames * valid, unmasked_frames * valid
    zero = pred[0].new_zeros((), dtype=torch.float32)
    hint, rec = {"mask": zero, "unmask": zero}, {"mask": zero, "unmask": zero}  # unweighted, for the logs
    loss = zero
    with torch.autocast(mask.device.type, enabled=False):
        for index, (p, tu, tm, w) in enumerate(zip(pred, unmasked_target, masked_target, weights)):
            p = p.float()
            if loss_type == "mse":
                err_u = (p - tu.float()).pow(2).mean(-1)
                err_m = err_u if tm is tu else (p - tm.float()).pow(2).mean(-1)
            else:
                err_u = (p - tu.float()).abs().mean(-1)
                err_m = err_u if tm is tu else (p - tm.float()).abs().mean(-1)
            on_masked = (err_u * masked_frames).sum() * scale
            on_unmasked = (err_m * unmasked_frames).sum() * scale
            bucket = rec if index == len(pred) - 1 else hint
            bucket["mask"] = bucket["mask"] + on_masked
            bucket["unmask"] = bucket["unmask"] + on_unmasked
            loss = loss + w * (on_masked + on_unmasked)
    # the official train.py logs the four sums before their weights (0.1 hints, 1.0 last layer)
    logs = {"mask_hint_loss": hint["mask"].detach(), "unmask_hint_loss": hint["unmask"].detach(),
            "mask_rec_loss": rec["mask"].detach(), "unmask_rec_loss": rec["unmask"].detach()}
    return loss, logs


# ---------------------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------------------
class _DistillRecipe(Recipe):
    """Shared machinery: student, LibriSpeech reader, padded batches, the frozen teacher, export."""

    ModelConfig, DataConfig = StudentSection, DistillData
    flavour = ARM
    #: ``model`` key of the official yaml (the ``-m`` of train.py)
    official_model = "armhubert"

    def __init__(self, config: dict):
        super().__init__(config)
        try:
            self.student_cfg: StudentConfig = student_config(self.model_cfg.distiller, self.flavour,
                                                             where="model.distiller")
        except StudentConfigError as error:
            raise ConfigError(str(error)) from None
        self.conv_layers = tuple(parse_conv_layers(self.model_cfg.distiller.get(
            "conv_feature_layers", StudentConfig.conv_feature_layers)))
        # official options that every released config leaves off and this recipe does not implement
        distiller = self.model_cfg.distiller
        for key, off in (("init_conv_layers", False), ("init_encoder_layers", 0), ("freeze_student_mask", False),
                         ("update_teacher_mask", False)):
            if distiller.get(key, off) not in (off, None):
                raise ConfigError(f"model.distiller.{key}={distiller[key]!r} is not supported (every released "
                                  f"config uses {off!r}): the student starts from random weights with its own mask_emb")
        self._teacher = None
        self._mean_seconds = 0.0

    # -- data ---------------------------------------------------------------------------------
    def build_reader(self):
        data = self.data
        reader = librispeech_list(data.libri_root, data.bucket_dir, list(data.train_sets),
                                  max_samples=data.max_samples, min_samples=data.min_samples)
        if reader.lengths:
            self._mean_seconds = float(np.mean(reader.lengths)) / 16000.0
        return reader

    def build_valid_reader(self):
        data = self.data
        if not data.valid:
            return None
        sets = [data.valid] if isinstance(data.valid, str) else list(data.valid)
        return librispeech_list(data.libri_root, data.bucket_dir, sets, max_samples=data.max_samples,
                                min_samples=data.min_samples)

    def item_lengths(self, reader):
        return getattr(reader, "lengths", None)

    def no_weight_decay(self, name: str, param) -> bool:
        # s3prl's AdamW_with_schedule grouping used by train.py: only names containing "bias" are
        # not decayed (its "LayerNorm.weight" pattern matches no name here, so norms and
        # mask_emb decay too)
        return "bias" in name

    def seconds_per_example(self) -> float:
        return self._mean_seconds

    def _frames(self, num_samples: int) -> int:
        return conv_output_frames(self.conv_layers, num_samples)

    def make_example(self, raw: dict, rng: np.random.Generator) -> dict:
        wave = np.asarray(raw["wave"], dtype=np.float32)
        if wave.ndim != 1:
            raise DataError(f"expected mono audio, got shape {wave.shape}")
        if self._frames(len(wave)) < 1:
            raise DataError(f"an utterance of {len(wave)} samples gives no frame (the CNN needs at least "
                            f"{self._frames_needed()} samples); raise data.min_samples")
        return {"wave": torch.from_numpy(wave), "length": torch.tensor(len(wave))}

    def _frames_needed(self) -> int:
        n = 1
        for _, kernel, stride in reversed(self.conv_layers):
            n = (n - 1) * stride + kernel
        return n

    def collate(self, examples: list[dict]) -> dict:
        lengths = torch.stack([e["length"] for e in examples])
        wave = torch.zeros(len(examples), int(lengths.max()))
        for row, example in enumerate(examples):
            wave[row, : len(example["wave"])] = example["wave"]
        batch = {"wave": wave, "lengths": lengths}
        if "mask" in examples[0]:
            frames = max(len(e["mask"]) for e in examples)
            mask = torch.zeros(len(examples), frames, dtype=torch.bool)
            rank = torch.zeros(len(examples), frames, dtype=torch.long)
            for row, example in enumerate(examples):
                mask[row, : len(example["mask"])] = example["mask"]
                rank[row, : len(example["rank"])] = example["rank"]
            batch.update(mask=mask, rank=rank)
        return batch

    # -- model --------------------------------------------------------------------------------
    def build_model(self) -> StudentModel:
        model = StudentModel(self.student_cfg)
        if self.model_cfg.init == "official":
            init_student_like_official(model)
        return model

    def prepare(self, ctx) -> None:
        self.teacher(torch.device("cpu"))  # fail early on a bad teacher, before the first step

    def teacher(self, device: torch.device):
        """The frozen teacher on ``device`` (loaded once; kept outside the student's state dict)."""
        if self._teacher is None:
            from .teacher import load_teacher

            # building a model draws random initial weights: keep the run's RNG streams untouched so
            # that a resumed run continues exactly
            with torch.random.fork_rng(devices=[]):
                self._teacher = load_teacher(self.data.teacher, normalize=self.data.teacher_normalize,
                                             kind=self.data.teacher_kind)
            if self._teacher.num_layers < self.student_cfg.encoder_layers:
                raise ConfigError(f"the teacher has {self._teacher.num_layers} layers, the student "
                                  f"{self.student_cfg.encoder_layers}: layer l is distilled from teacher layer l")
        if next(self._teacher.parameters()).device != device:
            self._teacher = self._teacher.to(device)
        return self._teacher.eval()

    def _pad_batch(self, batch: dict) -> dict:
        """Pad the micro-batch to the global padded length (DDP) and equalise mask counts."""
        wave, mask = batch["wave"], batch.get("mask")
        length, fewest = global_batch_shape(wave.shape[1], mask, wave.device)
        if length > wave.shape[1]:
            wave = F.pad(wave, (0, length - wave.shape[1]))
        frames = self._frames(wave.shape[1])
        out = dict(batch, wave=wave)
        if mask is not None:
            grow = frames - mask.shape[1]
            mask = F.pad(mask, (0, grow)) if grow > 0 else mask[:, :frames]
            rank = F.pad(batch["rank"], (0, grow)) if grow > 0 else batch["rank"][:, :frames]
            if getattr(self.objective, "require_same_masks", False):
                mask = equalize_masks(mask, rank, fewest)
            out.update(mask=mask, rank=rank)
        return out

    # -- export -------------------------------------------------------------------------------
    def training_yaml(self) -> dict:
        """The official training yaml of this run (``-g`` of the official wrappers)."""
        train = self.train
        return {
            "teacher": self._teacher_section(),
            "train": {"base_dir": "./", "output_dir": self.model_cfg.release_name, "checkpoint": None,
                      "num_epochs": train.epochs, "gpus": 1, "batch_size": train.batch_size,
                      "accumulate_grad_batches": train.accum_steps, "use_fp16": train.precision == "fp16",
                      "use_apex": False, "monitor_losses": True, **self._train_section(),
                      "delete_projections": False, "specaug": False, "mask_prob_schedule": ""},
            "distiller": self._official_distiller(),
            "optimizer": {"name": "AdamW_with_schedule", "lr": train.lr,
                          "warmup_proportion": (train.warmup_epochs / train.epochs
                                                if train.warmup_epochs is not None and train.epochs else None),
                          "betas": list(train.betas), "eps": train.eps, "weight_decay": train.weight_decay},
            "data": {"bucketing_path": self.data.bucket_dir, "libri_root": self.data.libri_root,
                     "train_set": list(self.data.train_sets), "test_set": ["test-clean"]},
            "model": self.official_model,
        }

    def _teacher_section(self) -> dict:
        return {"teacher_model": str(self.data.teacher)}

    def _train_section(self) -> dict:
        return {}

    def _official_distiller(self) -> dict:
        from ..upstreams.common.student.formats import official_distiller

        return official_distiller(self.model_cfg.distiller, self.official_model)

    def export(self, model, folder, *, step, epoch, optimizer=None, scaler=None) -> Path:
        """``<folder>/<release_name>.ckpt`` (Lightning layout: ``state_dict`` with ``student_model.*``,
        ``hyper_parameters['cfg']`` = the training yaml) and ``<release_name>.yaml`` beside it: what
        ``-u armhubert|maskhubert|starhubert -k <.ckpt> -g <.yaml>`` loads, ours and the official."""
        from ..upstreams.common.student.formats import write_release

        folder = Path(folder)
        name = self.model_cfg.release_name
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        cfg = self.training_yaml()
        cfg["train"]["global_step"] = int(step)
        cfg["train"]["exported"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d_%Hh%Mm%Ss")
        teacher_state = None
        if self.model_cfg.export_teacher:
            teacher = self.teacher(torch.device("cpu"))
            if teacher.kind != "s3prl":
                raise ConfigError("model.export_teacher needs a fairseq/s3prl teacher file (a Hugging Face folder's "
                                  "parameter names are not the official teacher_model.model.* ones)")
            teacher_state = {k: v.detach().cpu() for k, v in teacher.inner.state_dict().items()}
        return write_release(folder / f"{name}.ckpt", state, cfg, epoch=epoch, global_step=step,
                             teacher_state=teacher_state, optimizer_states=[optimizer] if optimizer else [],
                             scaler_state=scaler, yaml_path=folder / f"{name}.yaml")


@register("armhubert", "armwavlm")
class ARMHuBERTRecipe(_DistillRecipe):
    """ARMHuBERT / ARMHuBERT-S / ARMwavLM-S: masking distillation into a map-reusing student."""

    ObjectiveConfig = MaskingDistillObjective
    official_model = "armhubert"

    def __init__(self, config: dict):
        super().__init__(config)
        layers = self.student_cfg.encoder_layers
        obj = self.objective
        hints = list(range(1, layers)) if obj.hint_layers is None else sorted(set(obj.hint_layers))
        if any(l >= layers for l in hints):
            raise ConfigError(f"objective.hint_layers {obj.hint_layers} must lie in 1..{layers - 1} (layer {layers} "
                              "is the last-layer term)")
        self.student_layers = hints + [layers]
        self.layer_weights = [obj.hint_weight] * len(hints) + [obj.rec_weight]
        # DDP: mask_emb gets no gradient without masking, heads of undistilled layers never
        self.find_unused_parameters = (not obj.masking) or len(self.student_layers) < layers
        self._check_student()

    def _check_student(self) -> None:
        """Any reuse pattern (all True = MaskHuBERT's plain student, which the official armhubert
        class builds as well)."""

    def make_example(self, raw: dict, rng: np.random.Generator) -> dict:
        example = super().make_example(raw, rng)
        obj = self.objective
        if obj.masking:
            frames = self._frames(int(example["length"]))
            mask = span_mask(frames, rng, mask_prob=obj.mask_prob, mask_length=obj.mask_length,
                             selection=obj.mask_selection, other=obj.mask_other, min_masks=obj.min_masks,
                             no_overlap=obj.no_mask_overlap, min_space=obj.mask_min_space)
            example["mask"] = torch.from_numpy(mask)
            # a random order of the frames: which masked frames survive require_same_masks
            example["rank"] = torch.from_numpy(rng.permutation(frames).astype(np.int64))
        return example

    def make_valid_example(self, raw: dict, rng: np.random.Generator) -> dict:
        # the official validation_step: student and teacher without masking
        return _DistillRecipe.make_example(self, raw, rng)

    def compute_loss(self, model, batch):
        batch = self._pad_batch(batch)
        wave, lengths = batch["wave"], batch["lengths"]
        teacher = self.teacher(wave.device)
        mask = batch.get("mask")
        if mask is not None:  # the teacher with and without its mask (one CNN pass)
            unmasked, masked = teacher.encode_pair(wave, lengths, mask)
        else:
            unmasked = masked = teacher.encode(wave, lengths)
        out = model(wave, lengths, mask_indices=mask, official_batching=self.model_cfg.official_batching)
        pred = [out["hidden_states"][l - 1] for l in self.student_layers]
        frames = pred[0].shape[1]
        if unmasked.hidden_states[0].shape[1] < frames:
            raise DataError(f"the teacher gives {unmasked.hidden_states[0].shape[1]} frames, the student {frames}: "
                            "their CNNs must have the same total stride and receptive field")
        if pred[0].shape[-1] != teacher.dim:
            raise ConfigError(f"the student's projection heads give {pred[0].shape[-1]} channels, the teacher has "
                              f"{teacher.dim}: set model.distiller.pred_head_final_dim to {teacher.dim}")
        last = teacher.num_layers
        teacher_layers = [l if l < self.student_layers[-1] else last for l in self.student_layers]
        target_u = [unmasked.hidden_states[l][:, :frames] for l in teacher_layers]
        target_m = [masked.hidden_states[l][:, :frames] for l in teacher_layers] if mask is not None else target_u
        if mask is None:
            mask = torch.zeros(wave.shape[0], frames, dtype=torch.bool, device=wave.device)
        valid = None
        if not self.objective.loss_on_padding and out["padding_mask"] is not None:
            valid = (~out["padding_mask"]).float()
        return masking_distill_loss(pred, target_u, target_m, mask, self.layer_weights,
                                    loss_type=self.objective.loss_type, valid=valid)

    def _teacher_section(self) -> dict:
        obj = self.objective
        return {"teacher_model": str(self.data.teacher), "mask_length": obj.mask_length, "mask_prob": obj.mask_prob,
                "mask_selection": obj.mask_selection, "mask_other": obj.mask_other,
                "no_mask_overlap": obj.no_mask_overlap, "mask_min_space": obj.mask_min_space}

    def _train_section(self) -> dict:
        obj = self.objective
        return {"rec_loss_weight": obj.rec_weight, "rec_loss_type": obj.loss_type,
                "distil_random_layer": len(self.student_layers) - 1, "random_layer_weight": obj.hint_weight}

    def _official_distiller(self) -> dict:
        distiller = super()._official_distiller()
        distiller.setdefault("pred_head_final_dim", self.student_cfg.pred_head_final_dim)
        return distiller


@register("maskhubert")
class MaskHuBERTRecipe(ARMHuBERTRecipe):
    """MaskHuBERT: masking distillation into a student without attention-map reuse."""

    official_model = "maskhubert"

    def _check_student(self) -> None:
        if self.student_cfg.reuses_attention:
            raise ConfigError("maskhubert trains a student without attention-map reuse: remove "
                              "model.distiller.reuse_pattern (or use the armhubert recipe)")


@register("starhubert", "starwavlm")
class STaRHuBERTRecipe(_DistillRecipe):
    """STaRHuBERT / STaRWavLM: temporal Gram matrix distillation (layer-wise + intra-layer)."""

    ObjectiveConfig = StarLossConfig
    flavour = STAR
    official_model = "starhubert"

    def __init__(self, config: dict):
        super().__init__(config)
        obj = self.objective
        obj.validate(self.student_cfg.encoder_layers)
        if obj.avg_attn_weight > 0:
            raise ConfigError("objective.avg_attn_weight > 0 (the average-attention term, not in the final STaR "
                              "loss) is not wired into this recipe; set it to 0")

    def compute_loss(self, model, batch):
        batch = self._pad_batch(batch)
        wave, lengths = batch["wave"], batch["lengths"]
        teacher = self.teacher(wave.device)
        target = teacher.encode(wave, lengths)
        zeroth = self.objective.zeroth_input  # H^0: the input of layer 1 (pre_trf), the CNN features, or none
        out = model(wave, lengths, official_batching=self.model_cfg.official_batching,
                    return_layer_input=zeroth == "pre_trf", return_features=zeroth == "post_cnn")
        layers = out["layer_results"]
        frames = layers[0].shape[1]
        if target.hidden_states[0].shape[1] < frames:
            raise DataError(f"the teacher gives {target.hidden_states[0].shape[1]} frames, the student {frames}: "
                            "their CNNs must have the same total stride and receptive field")
        count = len(layers)
        if teacher.num_layers != count:
            raise ConfigError(f"STaR pairs student layer l with teacher layer l: the student has {count} layers, "
                              f"the teacher {teacher.num_layers}; give the student as many layers as the teacher")
        teacher_layers = [h[:, :frames] for h in target.layers]
        pad = out["padding_mask"]
        valid = torch.ones(wave.shape[0], frames, dtype=torch.bool, device=wave.device) if pad is None else ~pad
        student_input = {"pre_trf": out.get("layer_input"), "post_cnn": out.get("features")}.get(zeroth)
        teacher_input = {"pre_trf": target.layer_input, "post_cnn": target.features}.get(zeroth)
        return star_loss(layers, teacher_layers, student_input,
                         None if teacher_input is None else teacher_input[:, :frames], valid, self.objective)

    def _train_section(self) -> dict:
        return {"star_loss": {f.name: copy.deepcopy(getattr(self.objective, f.name))
                              for f in fields(self.objective)}}
