"""Random-weight MelHuBERT checkpoints in the official file layouts (for tests and benchmarks).

``write_official_checkpoint`` writes exactly what nervjack2/MelHuBERT ``pretrain_expert.py``
saves (``Optimizer``, ``Step``, ``Args`` as an ``argparse.Namespace``, ``Runner``, ``model``,
``Upstream_Config``), or one of the older/other layouts the loader accepts.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from ..common.files import full_size_writer
from .config import MelHuBERTConfig
from .formats import VINTAGES, official_model_section, runner_args, write_runner_checkpoint
from .releases import DEFAULT_RELEASE, RELEASES

__all__ = ["TINY_CONFIG", "LAYOUTS", "random_state_dict", "write_official_checkpoint", "make_checkpoint"]

#: small enough for CPU end-to-end runs, with every code path of the full model
TINY_CONFIG = dict(
    encoder_layers=2, encoder_embed_dim=48, encoder_ffn_embed_dim=96, encoder_attention_heads=4,
    conv_pos=16, conv_pos_groups=4, num_cluster=16,
)

#: layout name -> what the file looks like
LAYOUTS = {
    **VINTAGES,
    "state_dict": "plain state dict (tensors only)",
    "no_upstream_config": "official runner file without Upstream_Config (invalid)",
}


def config_for(frame_period_ms: int = 20, **overrides) -> MelHuBERTConfig:
    fields = dict(TINY_CONFIG)
    fields.update(overrides)
    return MelHuBERTConfig(feat_emb_dim=4 * frame_period_ms, **fields)


def random_state_dict(config: MelHuBERTConfig, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """Official-named weights; every tensor (incl. LayerNorm and biases) is random so that a
    mix-up of any two parameters shows in the outputs."""
    from .model import MelHuBERTModel

    generator = torch.Generator().manual_seed(seed)
    model = MelHuBERTModel(config)
    state = OrderedDict()
    for name, tensor in model.state_dict().items():
        noise = torch.randn(tensor.shape, generator=generator)
        if name.endswith("layer_norm.weight"):
            value = 1.0 + 0.1 * noise
        elif name.endswith("weight_g"):
            value = tensor * (1.0 + 0.1 * noise.abs())
        elif name.endswith("weight_v") or name.endswith("weight"):
            value = noise * (0.5 / tensor.shape[-1] ** 0.5 if tensor.dim() > 1 else 0.02)
        else:
            value = 0.02 * noise
        state[name] = value.contiguous()
    return state


def _model_yaml(config: MelHuBERTConfig) -> dict:
    # the compression repo's yamls also carried the unused final_dim
    return {**official_model_section(config), "final_dim": 40}


def write_official_checkpoint(path: str | Path, config: MelHuBERTConfig, *, layout: str = "melhubert",
                              seed: int = 0, state: dict | None = None, optimizer_state: bool = True) -> Path:
    """``optimizer_state=False`` leaves the Adam moments out (the file is 3x smaller)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; one of {sorted(LAYOUTS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = random_state_dict(config, seed) if state is None else state
    if layout == "state_dict":
        torch.save(state, path)
        return path
    params = [torch.nn.Parameter(t.clone()) for t in state.values()] if optimizer_state else []
    optimizer = torch.optim.Adam(params or [torch.nn.Parameter(torch.zeros(1))], lr=1e-4,
                                 betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    for p in params:
        p.grad = torch.zeros_like(p)
    if params:
        optimizer.step()
    fp = config.frame_period_ms
    args = runner_args(fp, "result/melhubert")
    runner = {
        "runner": {"n_epochs": 200, "total_steps": 632600, "gradient_clipping": 10.0,
                   "gradient_accumulate_steps": 8, "log_step": 2500, "save_every_x_epochs": 50},
        "optimizer": {"name": "Adam", "lr": 1.0e-4},
        "datarc": {"sets": ["train-clean-360"], "train_batch_size": 4, "sequence_length": 750 * 20 // fp},
    }
    if layout == "no_upstream_config":
        from .formats import runner_checkpoint

        checkpoint = runner_checkpoint(state, config, step=1000, optimizer=optimizer.state_dict(), args=args,
                                       runner=runner)
        del checkpoint["Upstream_Config"]
        torch.save(checkpoint, path)
        return path
    return write_runner_checkpoint(path, state, config, step=1000, optimizer=optimizer.state_dict(), args=args,
                                   runner=runner, vintage=layout, model_section=_model_yaml(config))


def make_checkpoint(entry: str, directory: Path) -> dict:
    """A tiny random checkpoint usable by ``entry`` (see the s3prl-plugins test contract)."""
    directory = Path(directory)
    if entry == "melhubert_local":
        path = write_official_checkpoint(directory / "melhubert-tiny.ckpt", config_for(20))
        return {"ckpt": str(path), "model_config": None}
    name = DEFAULT_RELEASE.get(entry, entry)
    if name not in RELEASES:
        raise ValueError(f"{entry!r} is not a MelHuBERT entry")
    from ..common.checkpoint import cached_download_path

    release = RELEASES[name]
    target = cached_download_path(release.url, release.filename)
    write_official_checkpoint(target, config_for(release.facts["frame_period_ms"]))
    return {"ckpt": None, "model_config": None}


def _full_size(frame_period_ms: int):
    config = MelHuBERTConfig(feat_emb_dim=4 * frame_period_ms)
    return full_size_writer(f"melhubert_{frame_period_ms}ms.ckpt",
                            lambda path: write_official_checkpoint(path, config, optimizer_state=False))


#: full-size random checkpoints for the benchmarks (``FAMILY.architectures``)
write_full_size_20ms = _full_size(20)
write_full_size_10ms = _full_size(10)
