"""Thin experts for s3prl's ``run_pretrain.py -u <recipe>`` (placed by the installer).

s3prl's runner owns the optimiser (``config_runner.yaml``: ``optimizer``, ``runner``), the loop and
its ``states-*.ckpt``; the recipe supplies model, data and loss exactly as in the standalone
trainer. ``-g`` is the recipe YAML (same file format as ``python -m s3prl_plugins.pretrain``).
``pretrain_expert.datarc`` in the runner config gives ``train_batch_size``, ``num_workers`` and
optionally ``data`` (a mapping that overrides the recipe's ``data`` section).

Checkpoints keep the runner's ``Config`` untouched and store the recipe config (with its computed
statistics) under ``Upstream_Config``, which is what the runner hands back on ``-e`` resume, and
the model weights under ``Model``. Convert one to the official layout with
``python -m s3prl_plugins.pretrain export states-N.ckpt --output DIR``.
"""
from __future__ import annotations

import copy
from collections import defaultdict

import torch
from torch import nn

from .config import ConfigError, load_yaml
from .data import GlobalBatchSampler, RecipeDataset
from .distributed import DistContext
from .recipe import get_recipe
from .trainer import make_loader, seed_everything

__all__ = ["PluginPretrainExpert", "expert_class"]


class PluginPretrainExpert(nn.Module):
    """s3prl's ``UpstreamPretrainExpert`` interface around a recipe (see s3prl pretrain/runner.py)."""

    recipe_name = "m2d"

    def __init__(self, datarc: dict, upstream_config, device: str = "cuda", multi_gpu: bool = False, **kwargs):
        super().__init__()
        datarc = dict(datarc or {})
        config = copy.deepcopy(upstream_config) if isinstance(upstream_config, dict) else load_yaml(upstream_config)
        config.setdefault("recipe", self.recipe_name)
        if datarc.get("data"):
            config["data"] = {**config.get("data", {}), **datarc["data"]}
        config.setdefault("train", {})
        if "train_batch_size" in datarc:
            config["train"]["batch_size"] = int(datarc["train_batch_size"])
        if "num_workers" in datarc:
            config["train"]["num_workers"] = int(datarc["num_workers"])
        if config["train"].get("total_steps") is None and config["train"].get("epochs") is None:
            raise ConfigError("the recipe config (-g) needs train.total_steps (the EMA schedule follows it); set it "
                              "to the runner's total_steps")
        self.recipe = get_recipe(config["recipe"])(config)
        self.device = torch.device(device)
        self.multi_gpu = multi_gpu
        if multi_gpu:
            print(f"[{self.recipe_name}] --multi_gpu is ignored: s3prl's runner has no DDP; run on several GPUs with "
                  f"torchrun --nproc_per_node=N -m s3prl_plugins.pretrain {self.recipe_name} --config ...")
        ctx = DistContext(device=self.device)
        seed_everything(self.recipe.train.seed)
        self.recipe.prepare(ctx)
        reader = self.recipe.build_reader()
        self.item_lengths = self.recipe.item_lengths(reader)
        self.dataset = RecipeDataset(reader, self.recipe.make_example)
        self.model = self.recipe.build_model()
        self.updates = 0
        print(f"[{self.recipe_name}] s3prl expert: recipe {self.recipe.name}, {len(self.dataset)} items, "
              f"{sum(p.numel() for p in self.model.parameters() if p.requires_grad) / 1e6:.2f} M trainable parameters")
        if getattr(self.recipe.data, "valid", None):
            print(f"[{self.recipe_name}] data.valid is not used: s3prl's run_pretrain.py has no validation step; "
                  f"validate and keep the best states with python -m s3prl_plugins.pretrain {self.recipe_name} ...")

    # -- runner interface ---------------------------------------------------------------------
    def get_train_dataloader(self):
        cfg = self.recipe.train
        sampler = GlobalBatchSampler(len(self.dataset), cfg.batch_size, seed=cfg.seed, auto_epoch=True,
                                     lengths=self.item_lengths)
        return make_loader(self.dataset, sampler, cfg.num_workers, self.device.type == "cuda", self.recipe.collate)

    def forward(self, data, records=None, global_step=0, log_step=1000, **kwargs):
        records = records if records is not None else defaultdict(list)
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in data.items()}
        loss, logs = self.recipe.compute_loss(self.model, batch)
        for key, value in logs.items():
            records[key].append(float(value))
        return loss, records

    def on_before_zero_grad(self):
        # called once per optimiser step by the runner
        self.updates += 1
        extra = self.recipe.after_step(self.model, self.updates, self._total_steps())
        return extra

    def _total_steps(self) -> int:
        cfg = self.recipe.train
        if cfg.total_steps is not None:
            return cfg.total_steps
        return int(cfg.epochs * max(1, len(self.dataset) // (cfg.batch_size * cfg.accum_steps)))

    def log_records(self, records, logger, prefix, global_step, **kwargs):
        for key, values in records.items():
            if values:
                logger.add_scalar(f"{prefix}{key}", sum(values) / len(values), global_step=global_step)

    def add_state_to_save(self, all_states):
        all_states["Upstream_Config"] = self.recipe.full_config()
        all_states["Model"] = self.model.state_dict()
        all_states["Recipe"] = self.recipe.name
        all_states["Updates"] = self.updates
        return all_states

    def load_model(self, all_states):
        if "Model" not in all_states:
            raise ConfigError("this checkpoint has no 'Model' entry: it was not written by an s3prl_plugins recipe")
        self.model.load_state_dict(all_states["Model"])
        # The runner resumes at global step Step + 1 (it saves pbar.n); count EMA steps the same way.
        self.updates = int(all_states.get("Step", all_states.get("Updates", 0)))


_CLASSES: dict[str, type] = {}


def expert_class(recipe: str) -> type:
    """The ``UpstreamPretrainExpert`` class for ``recipe`` (one subclass per recipe name)."""
    if recipe not in _CLASSES:
        get_recipe(recipe)  # validates the name
        _CLASSES[recipe] = type(f"{recipe.capitalize()}PretrainExpert", (PluginPretrainExpert,),
                                {"recipe_name": recipe, "__module__": __name__})
    return _CLASSES[recipe]

