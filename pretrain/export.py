"""Official-layout export of a training checkpoint (ours or an s3prl ``run_pretrain`` one)."""
from __future__ import annotations

from pathlib import Path

from .checkpointing import load_training_checkpoint

__all__ = ["export_checkpoint", "recipe_from_state", "export_best", "best_states_of_run"]


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


def best_states_of_run(run: str | Path) -> list[Path]:
    """The best validated states of a run folder (``<run>/best/step-*.pt``), best first."""
    folder = Path(run) / "best"
    from ..upstreams.common.checkpoint import CheckpointError

    found = sorted(folder.glob("step-*.pt")) if folder.is_dir() else []
    if not found:
        raise CheckpointError(f"no best validated states in {folder}: train with data.valid and train.keep_best >= 1")
    ranked = []
    for path in found:
        state = load_training_checkpoint(path)
        if state.get("kind") != "best":
            raise CheckpointError(f"{path} is not a best validated state of s3prl_plugins.pretrain")
        sign = 1.0 if state.get("mode", "min") == "min" else -1.0
        ranked.append((sign * float(state["value"]), int(state["step"]), path))
    return [path for *_, path in sorted(ranked)]


def export_best(paths: list[Path], output: str | Path, *, average: bool, recipe=None) -> Path:
    """The official layout of the best state (``paths[0]``) into ``<output>/best``, or of the
    average of all ``paths`` (best first; :func:`.validation.average_state_dicts`) into
    ``<output>/average_best``."""
    from .validation import average_state_dicts

    if not paths:
        from ..upstreams.common.checkpoint import CheckpointError

        raise CheckpointError("no best validated state to export (did any validation run?)")
    states = [load_training_checkpoint(p) for p in (paths if average else paths[:1])]
    best = states[0]
    recipe = recipe or recipe_from_state(best["config"])
    import torch

    with torch.random.fork_rng(devices=[]):  # building a model draws initial weights
        model = recipe.build_model()
    weights = average_state_dicts([s["model"] for s in states]) if average else best["model"]
    model.load_state_dict(weights)
    folder = Path(output) / ("average_best" if average else "best")
    step = int(best["step"])
    epoch = int(best.get("sampler", {}).get("epoch", 0))
    return recipe.export(model, folder, step=step, epoch=epoch)
