"""Official-layout export of a training checkpoint (ours or an s3prl ``run_pretrain`` one)."""
from __future__ import annotations

from pathlib import Path

from .checkpointing import load_training_checkpoint

__all__ = ["export_checkpoint", "recipe_from_state"]


def recipe_from_state(config: dict, recipe_name: str | None = None):
    from .recipe import get_recipe

    name = recipe_name or config.get("recipe")
    return get_recipe(name)(config)


def export_checkpoint(path: str | Path, output: str | Path) -> Path:
    """Write the official layout of the model in ``path`` (a ``step-*.pt`` of the trainer, a run
    folder, or an s3prl ``states-*.ckpt`` written through ``run_pretrain.py -u <recipe>``)."""
    from ..upstreams.common.checkpoint import CheckpointError, load_checkpoint

    path = Path(path)
    if path.suffix == ".ckpt":
        state = load_checkpoint(path, family="s3prl pre-training")
        if not isinstance(state, dict) or "Upstream_Config" not in state or "Model" not in state:
            raise CheckpointError(f"{path} is not an s3prl checkpoint written by an s3prl_plugins recipe "
                                  "(no Upstream_Config/Model)")
        config = dict(state["Upstream_Config"])
        step = int(state.get("Step", 0)) + 1
        epoch = 0
    else:
        state = load_training_checkpoint(path)
        config, step = state["config"], int(state["step"])
        epoch = int(state.get("sampler", {}).get("epoch", 0))
        state = {"Model": state["model"], "Optimizer": state.get("optimizer"), "Scaler": state.get("scaler")}
    recipe = recipe_from_state(config)
    model = recipe.build_model()
    model.load_state_dict(state["Model"])
    optimizer = state.get("Optimizer")
    if optimizer is not None and not (isinstance(optimizer, dict) and "state" in optimizer):
        optimizer = None
    return recipe.export(model, Path(output), step=step, epoch=epoch, optimizer=optimizer,
                         scaler=state.get("Scaler"))
