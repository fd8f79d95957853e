"""Pre-training recipes shared by the plugin families (imported as ``s3prl_plugins.pretrain``)."""

#: Recipes exposed to s3prl's ``run_pretrain.py -u <name>``: name -> {"expert_shim": source of the
#: ``pretrain_expert.py`` placed in ``<s3prl>/pretrain/<name>/``, "files": {file name: path of a
#: default config to copy beside it}}. ``install_into_s3prl.py`` installs them.
S3PRL_RECIPES: dict[str, dict] = {}

#: Training recipes of ``python -m s3prl_plugins.pretrain <name>``: name (or alias) -> module that
#: defines it (with ``@recipe.register``). Imported only when the recipe is asked for. A new
#: recipe module adds its names here.
RECIPE_MODULES: dict[str, str] = {
    "m2d": "s3prl_plugins.pretrain.m2d",
    "m2ds": "s3prl_plugins.pretrain.m2d", "m2d_s": "s3prl_plugins.pretrain.m2d",
    "m2das": "s3prl_plugins.pretrain.m2d", "m2d_as": "s3prl_plugins.pretrain.m2d",
    "m2dx": "s3prl_plugins.pretrain.m2d", "m2d_x": "s3prl_plugins.pretrain.m2d",
    "dasheng": "s3prl_plugins.pretrain.dasheng", "dasheng_mae": "s3prl_plugins.pretrain.dasheng",
    "armhubert": "s3prl_plugins.pretrain.distill", "armwavlm": "s3prl_plugins.pretrain.distill",
    "maskhubert": "s3prl_plugins.pretrain.distill",
    "starhubert": "s3prl_plugins.pretrain.distill", "starwavlm": "s3prl_plugins.pretrain.distill",
    "melhubert": "s3prl_plugins.pretrain.melhubert",
}


def _recipe_entry(name: str, model_config: str, runner_config: str) -> dict:
    from pathlib import Path

    configs = Path(__file__).resolve().parent / "configs"
    shim = ("# Added by s3prl-plugins (install_into_s3prl.py); the recipe lives in s3prl_plugins.pretrain.\n"
            "from s3prl_plugins.pretrain.s3prl_expert import expert_class\n\n"
            f"UpstreamPretrainExpert = expert_class({name!r})\n")
    return {"expert_shim": shim, "files": {"config_model.yaml": str(configs / model_config),
                                           "config_runner.yaml": str(configs / "s3prl" / runner_config)}}


# Names avoid s3prl's prefix rule (run_pretrain.py matches `^<dir>_`): no name is another's prefix + "_".
S3PRL_RECIPES.update({
    "m2d": _recipe_entry("m2d", "m2d_vit_base-80x608p16x16.yaml", "config_runner_m2d.yaml"),
    "m2ds": _recipe_entry("m2ds", "m2d_s_vit_base-80x400p80x2.yaml", "config_runner_m2d.yaml"),
    "m2das": _recipe_entry("m2das", "m2d_as_vit_base-80x608p16x16.yaml", "config_runner_m2d.yaml"),
    "m2dx": _recipe_entry("m2dx", "m2d_x_vit_base-80x608p16x16.yaml", "config_runner_m2d.yaml"),
    "dasheng": _recipe_entry("dasheng", "dasheng_base.yaml", "config_runner_dasheng.yaml"),
    "armhubert": _recipe_entry("armhubert", "armhubert_960.yaml", "config_runner_armhubert.yaml"),
    "maskhubert": _recipe_entry("maskhubert", "maskhubert_960.yaml", "config_runner_maskhubert.yaml"),
    "starhubert": _recipe_entry("starhubert", "starhubert_960.yaml", "config_runner_starhubert.yaml"),
    "melhubert": _recipe_entry("melhubert", "melhubert_20ms.yaml", "config_runner_melhubert.yaml"),
})
