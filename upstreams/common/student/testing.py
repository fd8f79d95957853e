"""Small random-weight checkpoints in the official release format, for tests and examples.

:func:`write_release_checkpoint` writes what the official ``train.py`` (PyTorch-Lightning 1.7.7)
saves: ``state_dict`` with a frozen teacher under ``teacher_model.model.`` followed by the student
under ``student_model.``, Lightning's bookkeeping, an s3prl ``Lamb`` optimizer state whose param
groups pickle a ``s3prl.optimizers.WarmupLinearSchedule`` object, the AMP scaler state, and the
training yaml in ``hyper_parameters['cfg']`` (pickled as Lightning's ``AttributeDict``).
"""
from __future__ import annotations

import contextlib
import copy
import sys
import types
from pathlib import Path

import torch

from ..checkpoint import cached_download_path
from ..family import Release
from ..files import full_size_writer
from .config import ARM, PUBLISHED, STAR, student_config
from .formats import write_release
from .model import StudentModel

__all__ = ["tiny_distiller", "training_yaml", "write_release_checkpoint", "make_checkpoint", "write_full_size"]


def tiny_distiller(flavour: str = ARM, *, reuse: bool = True, dim: int = 32, heads: int = 4, layers: int = 4) -> dict:
    """A small ``distiller`` section with the released layout (stride 320, 400-sample field)."""
    cfg = copy.deepcopy(PUBLISHED["ARMHuBERT" if flavour == ARM else "STaRHuBERT"])
    cfg.update(
        conv_feature_layers=f"[(16, 10, 5)] + [(16, 1, 1)] + [(16, 3, 2)] * 4 + [({dim}, 1, 1)] + [({dim}, 2, 2)] * 2",
        encoder_layers=layers,
        encoder_embed_dim=dim,
        encoder_ffn_embed_dim=2 * dim,
        encoder_attention_heads=heads,
        conv_pos=16,
        conv_pos_groups=4,
    )
    if flavour == ARM:
        if reuse:
            cfg["reuse_pattern"] = str([True, False] * (layers // 2) + [True] * (layers % 2))
        else:
            cfg.pop("reuse_pattern", None)
    return cfg


def training_yaml(distiller: dict, *, model: str = "armhubert", extra_keys: dict | None = None) -> dict:
    """The training yaml around ``distiller`` as the official ``dump_yaml`` writes it."""
    distiller = dict(distiller)
    distiller.setdefault("init_conv_layers", False)
    distiller.setdefault("init_encoder_layers", 0)
    distiller.update(extra_keys or {})
    return {
        "teacher": {"teacher_model": "./hubert_base_ls960.pt", "mask_length": 10, "mask_prob": 0.8,
                    "mask_selection": "uniform", "mask_other": 0.0, "no_mask_overlap": True, "mask_min_space": 1},
        "train": {"base_dir": "./", "output_dir": "tiny", "num_epochs": 1, "gpus": 1, "batch_size": 2,
                  "accumulate_grad_batches": 1, "use_fp16": True, "rec_loss_weight": 1.0, "rec_loss_type": "mse",
                  "distil_random_layer": 3, "random_layer_weight": 0.1},
        "distiller": distiller,
        "optimizer": {"name": "AdamW_with_schedule", "lr": 5.0e-3, "warmup_proportion": 0.05,
                      "betas": [0.9, 0.98], "eps": 1.0e-6, "weight_decay": 1.0e-6},
        "data": {"bucketing_path": "./data/len_for_bucket", "libri_root": "/db/LibriSpeech",
                 "train_set": ["train-clean-100"], "test_set": ["test-clean"]},
        "specaug": {"apply_time_mask": True},
        "model": model,
    }


def _tiny_teacher(seed: int) -> dict[str, torch.Tensor]:
    """A few HuBERT-Base-shaped key names with tiny tensors (the real one is ~95M parameters)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "mask_emb": (8,), "label_embs_concat": (4, 8),
        "feature_extractor.conv_layers.0.0.weight": (8, 1, 10),
        "feature_extractor.conv_layers.0.2.weight": (8,), "feature_extractor.conv_layers.0.2.bias": (8,),
        "post_extract_proj.weight": (8, 8), "post_extract_proj.bias": (8,),
        "encoder.pos_conv.0.bias": (8,), "encoder.pos_conv.0.weight_g": (1, 1, 4), "encoder.pos_conv.0.weight_v": (8, 4, 4),
        "encoder.layers.0.self_attn.k_proj.weight": (8, 8), "encoder.layers.0.fc1.weight": (16, 8),
        "encoder.layer_norm.weight": (8,), "layer_norm.weight": (8,), "final_proj.weight": (4, 8),
    }
    return {f"teacher_model.model.{k}": torch.randn(s, generator=g) for k, s in shapes.items()}


@contextlib.contextmanager
def _lightning_attribute_dict():
    """Pickle the hyper-parameters as ``pytorch_lightning.utilities.parsing.AttributeDict``."""
    try:
        from pytorch_lightning.utilities.parsing import AttributeDict  # type: ignore

        yield AttributeDict
        return
    except ImportError:
        pass
    names = ["pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing"]
    modules = {name: types.ModuleType(name) for name in names}
    cls = type("AttributeDict", (dict,), {"__module__": names[-1]})
    modules[names[-1]].AttributeDict = cls
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(modules)
    try:
        yield cls
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _optimizer_state(student: StudentModel) -> dict:
    from s3prl.optimizers import WarmupLinearSchedule

    schedule = WarmupLinearSchedule(warmup=0.05, t_total=1000)
    names = [n for n, _ in student.named_parameters()]
    decay = [i for i, n in enumerate(names) if "bias" not in n]
    no_decay = [i for i, n in enumerate(names) if "bias" in n]
    group = dict(lr=5e-3, schedule=schedule, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01,
                 max_grad_norm=-1, adam=True, correct_bias=True)
    state = {i: {"step": 10, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
             for i, p in enumerate(student.parameters()) if i < 3}
    return {"state": state, "param_groups": [dict(group, params=decay), dict(group, weight_decay=0.0, params=no_decay)]}


def write_release_checkpoint(path: Path, distiller: dict, flavour: str, *, seed: int = 0,
                             final_proj: bool = False, extra_keys: dict | None = None,
                             yaml_path: Path | None = None, with_hparams: bool = True,
                             perturb_norms: bool = True, teacher: dict | None = None) -> StudentModel:
    """Write a random-weight release ``.ckpt`` (and, if asked, its companion yaml); returns the student.

    ``perturb_norms`` moves biases and norm parameters off their initial 0/1, so that a parity check
    exercises every parameter; without it (fairseq's initialisation) the random features differ
    more between utterances, which suits a short downstream training run.
    """
    torch.manual_seed(seed)
    student = StudentModel(student_config(distiller, flavour)).eval()
    if perturb_norms:
        with torch.no_grad():
            for name, p in student.named_parameters():
                if name.endswith("bias") or "layer_norm" in name or "conv_layers.0.2" in name:
                    p.add_(0.1 * torch.randn_like(p))
    # ``teacher``: the teacher's own keys (written under teacher_model.model.); default: a tiny stand-in
    state: dict[str, torch.Tensor] = (
        {f"teacher_model.model.{k}": v for k, v in teacher.items()} if teacher is not None else _tiny_teacher(seed)
    )
    student_state = student.state_dict()
    if final_proj:
        student_state["final_proj.weight"] = torch.randn(768, student.cfg.encoder_embed_dim)
        student_state["final_proj.bias"] = torch.randn(768)
    student_state = {k: v.clone() for k, v in student_state.items()}
    model_name = "starhubert" if flavour == STAR else ("armhubert" if student.cfg.reuses_attention else "maskhubert")
    cfg = training_yaml(distiller, model=model_name, extra_keys=extra_keys)
    teacher_state = {k[len("teacher_model.model."):]: v for k, v in state.items()}
    with _lightning_attribute_dict() as attribute_dict:
        write_release(path, student_state, cfg, epoch=3, global_step=120, teacher_state=teacher_state,
                      optimizer_states=[_optimizer_state(student)],
                      scaler_state={"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                    "growth_interval": 2000, "_growth_tracker": 0},
                      hyper_parameters=attribute_dict(cfg=cfg), yaml_path=yaml_path, with_hparams=with_hparams)
    return student


def make_checkpoint(entry: str, directory: Path, *, flavour: str, release: Release | None = None) -> dict:
    """A tiny checkpoint for ``entry`` (of the ``flavour`` family): ``dict(ckpt=..., model_config=...)``.

    Official names get ``-k ckpt -g yaml``; ``*_local`` get ``-k ckpt`` alone (config read from
    the checkpoint); a named ``release`` is written into the download cache (``ckpt=None``), so
    ``S3PRL_PLUGINS_CACHE_DIR`` must point at the test's cache.
    """
    distiller = tiny_distiller(flavour, reuse=not entry.startswith("mask"))
    directory = Path(directory)
    if release is not None:
        target = cached_download_path(release.url, release.filename)
        write_release_checkpoint(target, distiller, flavour, final_proj=flavour == STAR, perturb_norms=False)
        return {"ckpt": None, "model_config": None}
    ckpt = directory / f"{entry}.ckpt"
    if entry.endswith("_local"):
        write_release_checkpoint(ckpt, distiller, flavour, final_proj=flavour == STAR, perturb_norms=False)
        return {"ckpt": str(ckpt), "model_config": None}
    config = directory / f"{entry}.yaml"
    write_release_checkpoint(ckpt, distiller, flavour, final_proj=flavour == STAR, yaml_path=config,
                             perturb_norms=False)
    return {"ckpt": str(ckpt), "model_config": str(config)}


def write_full_size(published: str, flavour: str):
    """A writer of a full-size random release of the ``published`` architecture (benchmarks)."""
    return full_size_writer(f"{published}.ckpt", lambda path: write_release_checkpoint(
        path, dict(PUBLISHED[published]), flavour, final_proj=flavour == STAR, yaml_path=path.with_suffix(".yaml")))
