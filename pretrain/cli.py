"""``python -m s3prl_plugins.pretrain``: train a recipe, list recipes, export a checkpoint."""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from .config import CONFIG_DIR, ConfigError, apply_overrides, load_yaml, shipped_config

EPILOG = textwrap.dedent("""\
    examples:
      # M2D on AudioSet log-mels (prepare them first: python -m s3prl_plugins.pretrain.prepare logmel --help)
      python -m s3prl_plugins.pretrain m2d --config m2d_vit_base-80x608p16x16 --output runs/m2d

      # the same on 4 GPUs of one machine, and on 2 machines x 4 GPUs
      torchrun --nproc_per_node=4 -m s3prl_plugins.pretrain m2d --config m2d_vit_base-80x608p16x16 --output runs/m2d
      torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
          -m s3prl_plugins.pretrain m2d --config m2d_vit_base-80x608p16x16 --output runs/m2d

      # M2D-S with the official loss weights and noise ratio, overriding single values
      python -m s3prl_plugins.pretrain m2ds --config m2d_s_vit_base-80x400p80x2 --loss_m2d 1 --loss_off 0.5 \\
          --noise_ratio 0.2 --set train.batch_size=256 --set train.accum_steps=2 --output runs/m2ds

      # MelHuBERT: fbank + k-means labels first (python -m s3prl_plugins.pretrain.prepare --help, steps buckets,
      # fbank, kmeans, labels), then stage 1; stage 2 = the same with labels from a stage-1 layer (*_stage2 configs)
      python -m s3prl_plugins.pretrain melhubert --config melhubert_20ms --output runs/melhubert_20ms_stage1

      # a run resumes by itself from its output folder; or from a given checkpoint:
      python -m s3prl_plugins.pretrain m2d --config my.yaml --output runs/m2d --resume runs/m2d/checkpoints/step-000010000.pt

      # write the official layout from any training checkpoint (also done at the end of a run)
      python -m s3prl_plugins.pretrain export runs/m2d/checkpoints/step-000010000.pt --output exported/

      # validation list, the 4 best states kept and averaged at the end (Dasheng's official setting)
      python -m s3prl_plugins.pretrain dasheng --config dasheng_base --set 'data.valid=[data/shards/vggsound_test/*.tar]' \
          --set train.keep_best=4 --set train.export_best=average --output runs/dasheng
      # the best, or the average of the kept best states, of a run folder, in the official layout
      python -m s3prl_plugins.pretrain export runs/dasheng --best --output exported/
      python -m s3prl_plugins.pretrain export runs/dasheng --average-best --output exported/

    --config takes a YAML path or the name of a shipped config: {configs}.
    Batch sizes are per process; the effective batch (batch x accumulation x processes) is printed at start.
    """)


def _parser() -> argparse.ArgumentParser:
    shipped = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    parser = argparse.ArgumentParser(
        prog="python -m s3prl_plugins.pretrain",
        description="Pre-train an M2D / M2D-S / M2D-AS / M2D-X / Dasheng model (recipes: m2d, m2ds, m2das, m2dx, "
                    "dasheng). "
                    "MelHuBERT: recipe melhubert (10/20 ms, stage 1 and 2). "
                    "Distillation from a local HuBERT/WavLM teacher: armhubert (ARMHuBERT, ARMwavLM), maskhubert, "
                    "starhubert. "
                    "Use `list` to see recipes and shipped configs, `export` to convert a training checkpoint.",
        epilog=EPILOG.format(configs=shipped), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe name (m2d, m2ds, m2das, m2dx, dasheng), or `list`, or `export`")
    parser.add_argument("checkpoint", nargs="?", help="(export only) the training checkpoint or run folder")
    parser.add_argument("--config", "-c", help="YAML config file or shipped config name")
    parser.add_argument("--output", "-o", help="run folder: checkpoints/, tensorboard/, export/ (official layout)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set train.lr=1e-4 (repeatable)")
    parser.add_argument("--resume", default="auto",
                        help="'auto' (default: continue from the newest checkpoint in --output), 'never', or a path")
    parser.add_argument("--stop-at", type=int, help="stop after this many steps (checkpoint written), as if preempted")
    parser.add_argument("--no-progress", action="store_true", help="print log lines instead of a progress bar")
    parser.add_argument("--best", action="store_true",
                        help="(export only) export the best validated state of the run folder CHECKPOINT")
    parser.add_argument("--average-best", action="store_true",
                        help="(export only) export the average of the kept best validated states of the run folder")
    official = parser.add_argument_group("official M2D-S/M2D-AS options (shortcuts for --set)")
    official.add_argument("--loss_m2d", type=float, help="weight of the M2D loss (objective.loss_m2d)")
    official.add_argument("--loss_off", type=float, help="weight of the offline-target loss (objective.loss_off)")
    official.add_argument("--noise_ratio", type=float, help="background-noise mixing ratio (data.noise_ratio)")
    return parser


def load_config(path_or_name: str | None, overrides: list[str]) -> dict:
    if not path_or_name:
        raise ConfigError("--config is required (a YAML file or a shipped config name; see `list`)")
    path = Path(path_or_name)
    if not path.is_file() and not path.suffix:
        path = shipped_config(path_or_name)
    return apply_overrides(load_yaml(path), overrides)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .recipe import get_recipe, recipe_names

    try:
        if args.recipe == "list":
            print("recipes:", ", ".join(recipe_names()))
            print("shipped configs:", ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))))
            return 0
        if args.recipe == "export":
            from .export import export_checkpoint

            if not args.checkpoint or not args.output:
                raise ConfigError("usage: python -m s3prl_plugins.pretrain export CHECKPOINT --output FOLDER "
                                  "(or RUN_FOLDER --best / --average-best)")
            if args.best or args.average_best:
                from .export import best_states_of_run, export_best

                print(export_best(best_states_of_run(args.checkpoint), args.output, average=args.average_best))
            else:
                print(export_checkpoint(args.checkpoint, args.output))
            return 0
        overrides = list(args.overrides)
        for flag, key in (("loss_m2d", "objective.loss_m2d"), ("loss_off", "objective.loss_off"),
                          ("noise_ratio", "data.noise_ratio")):
            if getattr(args, flag) is not None:
                overrides.append(f"{key}={getattr(args, flag)}")
        config = load_config(args.config, overrides)
        recipe = get_recipe(args.recipe)(config)
        if not args.output:
            raise ConfigError("--output is required (the run folder)")
        from .trainer import Trainer

        try:
            Trainer(recipe, args.output, resume=args.resume, stop_at=args.stop_at, progress=not args.no_progress).fit()
        finally:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
        return 0
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as error:
        from .data import DataError
        from ..upstreams.common.checkpoint import CheckpointError

        if isinstance(error, (DataError, CheckpointError)):
            print(f"error: {error}", file=sys.stderr)
            return 2
        raise
