"""STaR distillation losses (STaRHuBERT / STaRWavLM): temporal Gram matrices of teacher and student.

Paper: K. Jang, S. Kim, H. Kim, "STaR: Distilling Speech Temporal Relation for Lightweight Speech
Self-Supervised Learning Models", ICASSP 2024, pp. 10721-10725, arXiv 2312.09040. The authors released
the student model (``sungnyun/ARMHuBERT``, ``models/starhubert``) but no training code.

The objective. For a layer output H in R^{N x d} (N frames, d channels) the temporal Gram matrix (TGM) is
G = H H^T in R^{N x N}, G_ij = sum_k H_ik H_jk: it relates frames, not channels, so teacher and student
widths may differ and no projection head is needed.

* layer-wise TGM:   L_lw    = sum_{l=1..L} || G^{l,T} - G^{l,S} ||^2,        G^l  = H^l (H^l)^T
* intra-layer TGM:  L_intra = sum_{l=1..L} || Gv^{l,T} - Gv^{l,S} ||^2,      Gv^l = H^{l-1} (H^l)^T,
  the relation between the input H^{l-1} and the output H^l of transformer layer l (H^0 = the input
  of layer 1);
* average-attention map: L_attn = sum_l sum_t KL( mean_h A^{l,T}_{h,t} || mean_h A^{l,S}_{h,t} ), explored
  in the paper and left out of the final loss;
* final STaR loss = L_lw + L_intra.

Sources, by fact (the arXiv body was not readable from this workplace; equations (2)-(4) and the loss
selection table are as transcribed by the CMU 11-785 re-implementation report, ``report.pdf`` section 3
and Table 3, in github.com/Qingzheng-Wang/STaRHuBERT, which cites the paper for them):

* G = H H^T over frames, no normalisation: report eq. for G_ij; official figure ``assets/model_star.png``
  (N x d times d x N). -> ``normalization="none"``.
* squared distance summed over layers l = 1..L: report eqs. (3)-(4), which the report calls the mean
  squared error. -> ``distance="mse"`` (mean over the N^2 valid entries of each utterance) and unit
  layer weights. ``"sse"`` gives the literal squared Frobenius norm.
* intra-layer pairs (input, output) of a single transformer layer: README of sungnyun/ARMHuBERT
  ("Intra-layer TGM ... between the input and output of a single Transformer layer") and the figure
  (Gv^{l+1} from the outputs of layers l and l+1); eq. (4) sums from l = 1, which needs H^0 = the input
  of layer 1. -> ``zeroth_input="pre_trf"`` (LN(x + pos_conv(x)) of a post-LN HuBERT, before dropout,
  the ``pre_trf`` output of the official student model).
* final loss = layer-wise + intra-layer, equal weights, no attention term: README ("Incorporating two
  TGMs as the distillation objectives together"), abstract ("select the best combination as the final
  STaR loss"), report Table 3 (960 h: L_lw + L_intra 79.5 overall, + L_avg-attn 78.8).
  -> ``layer_wise_weight=1``, ``intra_layer_weight=1``, ``avg_attn_weight=0``.
* KL(teacher || student) per query frame for the attention term: report eq. (2).
* no masking distillation: the released STaR student has no ``mask_emb`` (official
  ``models/starhubert/model.py``), so its input was never masked; this module has no masked/unmasked split.
* Ls must equal Lt: every equation pairs layer l of the student with layer l of the teacher (12 and 12
  in the paper); no layer mapping is described, so other depths raise an error.

Not stated, our choices: the per-utterance normalisation by the number of valid entries (N^2 for the
Grams, N query frames for attention; the paper's batches are length-bucketed, its reduction over the
batch is not given) and the mean over utterances. The third-party re-implementation (github.com/
Qingzheng-Wang/STaRHuBERT, ``train_starhubert.py``) uses raw einsum Grams, ``F.mse_loss`` over the whole
padded batch, equal weights, and takes the CNN features as layer 0 in both terms (its layer-wise term
has 13 Grams): ``zeroth_input="post_cnn"`` with ``layer_wise_include_input=True`` reproduces that choice
(up to its padding handling).

Cost: 2L + 1 Grams per model (B T^2 D multiply-adds each), the student's with their backward; about
56 GFLOP per 15 s utterance (T = 750, L = 12, Ds = 432, Dt = 768) for forward + backward. Build the
config from a YAML section with ``pretrain.config.from_dict(StarLossConfig, section, "star")``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import ConfigError

__all__ = ["StarLossConfig", "star_loss", "temporal_gram", "NORMALIZATIONS", "DISTANCES", "ZEROTH_INPUTS"]

#: how a frame matrix H is scaled before its Gram matrix is taken (G = H H^T):
#: none: raw products (paper); dim: G / d; sqrt_dim: G / sqrt(d); frame_l2: unit-norm frames (cosine).
NORMALIZATIONS = ("none", "dim", "sqrt_dim", "frame_l2")
#: distance between teacher and student Grams, per utterance over its valid entries:
#: mse: mean squared difference over the n^2 valid entries; sse: their sum (squared Frobenius norm);
#: l1: mean absolute difference; kl: KL(teacher || student) of the row-wise softmax(G / kl_temperature)
#: over the valid columns, averaged over the n valid rows.
DISTANCES = ("mse", "sse", "l1", "kl")
#: which tensor the recipe passes as H^0 (``student_input`` / ``teacher_input``): pre_trf = the input of
#: transformer layer 1; post_cnn = the CNN features after their LayerNorm / projection; none = no H^0
#: (the intra-layer sum starts at layer 2).
ZEROTH_INPUTS = ("pre_trf", "post_cnn", "none")


@dataclass
class StarLossConfig:
    """Weights and choices of the STaR loss; the defaults are the paper's (see the module docstring)."""

    #: weight of L_layer-wise (paper: final loss = L_lw + L_intra)
    layer_wise_weight: float = 1.0
    #: weight of L_intra-layer (paper: equal to the layer-wise one)
    intra_layer_weight: float = 1.0
    #: weight of L_avg-attn (paper: explored, not in the final loss -> 0)
    avg_attn_weight: float = 0.0
    #: one weight per transformer layer l = 1..L, used by every term at layer l (0 drops the layer);
    #: None = all 1 (paper eqs. (2)-(4) sum over l = 1..L unweighted)
    layer_weights: Optional[Sequence[float]] = None
    #: also distil G^0 of H^0 in the layer-wise term (paper eq. (3) starts at l = 1 -> False; the
    #: third-party re-implementation includes it); its weight is ``input_weight``
    layer_wise_include_input: bool = False
    #: weight of the intra-layer Gram of layer 1 (H^0 x H^1) and of G^0 when included
    input_weight: float = 1.0
    #: H^0 for the first intra-layer Gram (README: input and output of one layer -> pre_trf)
    zeroth_input: str = "pre_trf"
    #: scaling of the Grams (paper: none)
    normalization: str = "none"
    #: distance between Grams (paper: squared error, "MSE")
    distance: str = "mse"
    #: softmax temperature of distance="kl" (applied after ``normalization``)
    kl_temperature: float = 1.0

    def validate(self, num_layers: Optional[int] = None) -> None:
        """Raise ConfigError naming the field and its allowed values when a choice is unusable."""
        for name, allowed in (("normalization", NORMALIZATIONS), ("distance", DISTANCES),
                              ("zeroth_input", ZEROTH_INPUTS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"star loss: {name}={value!r} is not supported; use one of {', '.join(allowed)}")
        for name in ("layer_wise_weight", "intra_layer_weight", "avg_attn_weight", "input_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"star loss: {name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.kl_temperature, (int, float)) and math.isfinite(self.kl_temperature)
                and self.kl_temperature > 0):
            raise ConfigError(f"star loss: kl_temperature must be a finite number > 0, got {self.kl_temperature!r}")
        if self.layer_weights is not None:
            if isinstance(self.layer_weights, (str, bytes)) or not isinstance(self.layer_weights, Sequence):
                raise ConfigError("star loss: layer_weights must be a list with one weight per transformer layer "
                                  f"(or null for all 1), got {self.layer_weights!r}")
            bad = [w for w in self.layer_weights
                   if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0]
            if bad:
                raise ConfigError("star loss: layer_weights must be finite numbers >= 0, "
                                  f"got {list(self.layer_weights)}")
            if num_layers is not None and len(self.layer_weights) != num_layers:
                raise ConfigError(f"star loss: layer_weights has {len(self.layer_weights)} entries but the models "
                                  f"have {num_layers} transformer layers; give one weight per layer")
        if self.layer_wise_include_input and self.zeroth_input == "none":
            raise ConfigError("star loss: layer_wise_include_input=True needs an H^0; set zeroth_input to "
                              "'pre_trf' or 'post_cnn'")
        if self.layer_wise_weight == 0 and self.intra_layer_weight == 0 and self.avg_attn_weight == 0:
            raise ConfigError("star loss: every term has weight 0; set layer_wise_weight, intra_layer_weight or "
                              "avg_attn_weight > 0")

    def weights(self, num_layers: int) -> list[float]:
        return [1.0] * num_layers if self.layer_weights is None else [float(w) for w in self.layer_weights]


def _prepare(hidden: Tensor, frame_mask: Tensor, normalization: str) -> Tensor:
    """H in float32 with padded frames zeroed and the normalisation folded in, so G = H H^T directly.

    Zeroed frames make the padded rows and columns of every Gram exactly 0 for both models, so they
    add nothing to any distance. Scaling H (T x d) instead of G (T x T) is the cheaper way to scale G.
    """
    hidden = hidden.float() * frame_mask
    dim = hidden.shape[-1]
    if normalization == "dim":
        hidden = hidden * dim ** -0.5
    elif normalization == "sqrt_dim":
        hidden = hidden * dim ** -0.25
    elif normalization == "frame_l2":
        hidden = F.normalize(hidden, dim=-1)
    return hidden


def temporal_gram(left: Tensor, right: Optional[Tensor] = None) -> Tensor:
    """TGM [B, T, T] of frame matrices [B, T, d]: left right^T (right defaults to left)."""
    return torch.matmul(left, (left if right is None else right).transpose(1, 2))


def _gram_distance(student: Tensor, teacher: Tensor, valid: Tensor, num_valid: Tensor,
                   cfg: StarLossConfig) -> Tensor:
    """Per-utterance distance [B] between Grams whose padded rows/columns are 0 in both."""
    if cfg.distance in ("mse", "sse"):
        total = (student - teacher).square().sum(dim=(1, 2))
        return total if cfg.distance == "sse" else total / num_valid.square()
    if cfg.distance == "l1":
        return (student - teacher).abs().sum(dim=(1, 2)) / num_valid.square()
    # kl: row-wise distributions over the valid columns; padded rows are dropped from the mean.
    columns = valid[:, None, :]
    fill = torch.finfo(student.dtype).min / 2  # finite, so an all-padded row stays NaN-free
    log_s = torch.log_softmax((student / cfg.kl_temperature).masked_fill(~columns, fill), dim=-1)
    log_t = torch.log_softmax((teacher / cfg.kl_temperature).masked_fill(~columns, fill), dim=-1)
    row_kl = (log_t.exp() * (log_t - log_s).masked_fill(~columns, 0.0)).sum(-1)
    return (row_kl * valid).sum(-1) / num_valid


def _attention_kl(student: Tensor, teacher: Tensor, valid: Tensor, num_valid: Tensor) -> Tensor:
    """Per-utterance KL(teacher || student) of head-averaged attention rows, mean over valid query frames."""
    if student.dim() == 4:
        student = student.float().mean(1)
    if teacher.dim() == 4:
        teacher = teacher.float().mean(1)
    student, teacher = student.float(), teacher.float()
    columns = valid[:, None, :]
    teacher = teacher.masked_fill(~columns, 0.0)
    log_s = torch.log(student.clamp_min(torch.finfo(student.dtype).tiny))
    row_kl = (torch.xlogy(teacher, teacher) - teacher * log_s).masked_fill(~columns, 0.0).sum(-1)
    return (row_kl * valid).sum(-1) / num_valid


def _check_layers(name: str, layers: Sequence[Tensor], batch: int, frames: int) -> None:
    if isinstance(layers, Tensor) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"star_loss: {name} must be a non-empty list of [B, T, D] tensors, one per transformer layer")
    for index, layer in enumerate(layers):
        if not isinstance(layer, Tensor) or layer.dim() != 3 or tuple(layer.shape[:2]) != (batch, frames):
            shape = tuple(layer.shape) if isinstance(layer, Tensor) else type(layer).__name__
            raise ValueError(f"star_loss: {name}[{index}] has shape {shape}; expected [B={batch}, T={frames}, D] "
                             "like `valid` (trim or pad the models' outputs to the same frames first)")
        if not layer.is_floating_point():
            raise ValueError(f"star_loss: {name}[{index}] has dtype {layer.dtype}; expected a float tensor")
    dims = {layer.shape[-1] for layer in layers}
    if len(dims) != 1:
        raise ValueError(f"star_loss: {name} mixes feature sizes {sorted(dims)}; all layers of one model share D")


def _check_inputs(student_layers, teacher_layers, student_input, teacher_input, valid, cfg: StarLossConfig,
                  student_attention, teacher_attention) -> int:
    """Shapes and kinds of :func:`star_loss`'s arguments, with errors that say what to pass; returns L."""
    if not isinstance(valid, Tensor) or valid.dtype != torch.bool or valid.dim() != 2:
        raise ValueError("star_loss: valid must be a bool tensor [B, T] with True on real frames "
                         f"(got {valid.dtype if isinstance(valid, Tensor) else type(valid).__name__}"
                         f"{' ' + str(tuple(valid.shape)) if isinstance(valid, Tensor) else ''}); "
                         "for a padding mask pass ~padding_mask")
    batch, frames = valid.shape
    _check_layers("student_layers", student_layers, batch, frames)
    _check_layers("teacher_layers", teacher_layers, batch, frames)
    num_layers = len(student_layers)
    if len(teacher_layers) != num_layers:
        raise ValueError(f"star_loss: the student has {num_layers} transformer layers and the teacher "
                         f"{len(teacher_layers)}; STaR pairs layer l of the student with layer l of the teacher "
                         "(paper eqs. (3)-(4)) and describes no mapping between different depths; give both "
                         "models the same number of layers")
    cfg.validate(num_layers)
    use_input = cfg.zeroth_input != "none"
    if use_input:
        for name, tensor, layers in (("student_input", student_input, student_layers),
                                     ("teacher_input", teacher_input, teacher_layers)):
            if tensor is None:
                raise ValueError(f"star_loss: {name} is None but zeroth_input={cfg.zeroth_input!r}; pass the "
                                 "input of transformer layer 1 (or set zeroth_input='none')")
            _check_layers(name, [tensor], batch, frames)
            if tensor.shape[-1] != layers[0].shape[-1]:
                raise ValueError(f"star_loss: {name} has D={tensor.shape[-1]} but the layers have "
                                 f"D={layers[0].shape[-1]}; the intra-layer Gram needs H^0 in the layers' width")
    use_attention = cfg.avg_attn_weight > 0
    if use_attention:
        for name, maps in (("student_attention", student_attention), ("teacher_attention", teacher_attention)):
            if maps is None or isinstance(maps, Tensor) or len(maps) != num_layers:
                raise ValueError(f"star_loss: avg_attn_weight > 0 needs {name}: a list of {num_layers} attention "
                                 "probability tensors [B, H, T, T] or [B, T, T]")
            for index, attn in enumerate(maps):
                if not isinstance(attn, Tensor) or attn.dim() not in (3, 4) or \
                        tuple(attn.shape[:1]) + tuple(attn.shape[-2:]) != (batch, frames, frames):
                    raise ValueError(f"star_loss: {name}[{index}] must be [B, H, T, T] or [B, T, T] with "
                                     f"B={batch}, T={frames}; got "
                                     f"{tuple(attn.shape) if isinstance(attn, Tensor) else type(attn).__name__}")

    return num_layers


def _terms(student: list, teacher: list, valid: Tensor, num_valid: Tensor, cfg: StarLossConfig, weights,
           student_attention, teacher_attention) -> tuple[Tensor, Tensor, Tensor]:
    """Per-utterance layer-wise, intra-layer and attention terms ([B] each) of the prepared layers."""
    num_layers, use_input = len(student) - 1, cfg.zeroth_input != "none"
    zero = num_valid.new_zeros(valid.shape[0])
    layer_wise, intra_layer, avg_attn = zero, zero, zero
    if cfg.layer_wise_weight > 0:
        first = 0 if cfg.layer_wise_include_input else 1
        for index in range(first, num_layers + 1):
            weight = cfg.input_weight if index == 0 else weights[index - 1]
            if weight:
                layer_wise = layer_wise + weight * _gram_distance(
                    temporal_gram(student[index]), temporal_gram(teacher[index]), valid, num_valid, cfg)
    if cfg.intra_layer_weight > 0:
        for index in range(1 if use_input else 2, num_layers + 1):
            weight = weights[index - 1] * (cfg.input_weight if index == 1 and use_input else 1.0)
            if weight:
                intra_layer = intra_layer + weight * _gram_distance(
                    temporal_gram(student[index - 1], student[index]),
                    temporal_gram(teacher[index - 1], teacher[index]), valid, num_valid, cfg)
    if cfg.avg_attn_weight > 0:
        for index in range(num_layers):
            if weights[index]:
                avg_attn = avg_attn + weights[index] * _attention_kl(
                    student_attention[index], teacher_attention[index].detach(), valid, num_valid)

    return layer_wise, intra_layer, avg_attn


def star_loss(student_layers: Sequence[Tensor], teacher_layers: Sequence[Tensor], student_input: Optional[Tensor],
              teacher_input: Optional[Tensor], valid: Tensor, cfg: Optional[StarLossConfig] = None, *,
              student_attention: Optional[Sequence[Tensor]] = None,
              teacher_attention: Optional[Sequence[Tensor]] = None) -> tuple[Tensor, dict[str, Tensor]]:
    """STaR loss of a padded batch: a float32 scalar and detached per-term batch means for logging.

    Args:
        student_layers / teacher_layers: the L outputs of the transformer layers, [B, T, Ds] / [B, T, Dt]
            (post-LN layer outputs; Ds and Dt may differ; L must be equal).
        student_input / teacher_input: H^0 [B, T, D], the tensor named by ``cfg.zeroth_input`` (may be
            None when it is "none").
        valid: bool [B, T], True on real frames. Padded frames contribute nothing.
        cfg: the loss configuration (defaults: the paper's).
        student_attention / teacher_attention: only when ``cfg.avg_attn_weight > 0``: per layer the
            attention probabilities [B, H, T, T] or their head mean [B, T, T], computed with the key
            padding mask.

    Reduction: each utterance b gets loss_b = w_lw * sum_l w_l d(G^{l,S}_b, G^{l,T}_b) + w_intra * sum_l
    w_l d(Gv^{l,S}_b, Gv^{l,T}_b) [+ w_attn * sum_l w_l KL_b], every distance normalised by that
    utterance's own valid entries, so padding and batch composition do not change loss_b; the loss is
    the mean of loss_b over the B utterances. Under DDP the averaged gradients of equal-sized per-rank
    batches therefore equal one process on the concatenated batch.

    The teacher tensors are detached; the computation runs in float32 with autocast disabled; nothing
    here synchronises with the host."""
    cfg = StarLossConfig() if cfg is None else cfg
    num_layers = _check_inputs(student_layers, teacher_layers, student_input, teacher_input, valid, cfg,
                               student_attention, teacher_attention)
    use_input, use_attention = cfg.zeroth_input != "none", cfg.avg_attn_weight > 0
    weights = cfg.weights(num_layers)
    with torch.autocast(valid.device.type, enabled=False):
        frame_mask = valid.to(torch.float32)[..., None]
        num_valid = valid.sum(-1).to(torch.float32).clamp_min(1.0)  # an empty utterance adds 0, not NaN

        def prepare_all(layers: Sequence[Tensor], zeroth: Optional[Tensor], detach: bool) -> list[Optional[Tensor]]:
            # each H is prepared once and shared by G^l and by the intra-layer Grams of layers l and l+1
            hs = [zeroth if use_input else None] + list(layers)
            return [None if h is None else _prepare(h.detach() if detach else h, frame_mask, cfg.normalization)
                    for h in hs]

        student = prepare_all(student_layers, student_input, detach=False)
        teacher = prepare_all(teacher_layers, teacher_input, detach=True)

        layer_wise, intra_layer, avg_attn = _terms(student, teacher, valid, num_valid, cfg, weights,
                                                   student_attention, teacher_attention)
        per_utterance = (cfg.layer_wise_weight * layer_wise + cfg.intra_layer_weight * intra_layer
                         + cfg.avg_attn_weight * avg_attn)
        loss = per_utterance.mean()

    logs = {"loss": loss.detach(), "layer_wise": layer_wise.mean().detach(),
            "intra_layer": intra_layer.mean().detach()}
    if use_attention:
        logs["avg_attn"] = avg_attn.mean().detach()
    return loss, logs
