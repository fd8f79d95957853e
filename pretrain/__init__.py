"""Pre-training recipes of the plugin families (imported as ``s3prl_plugins.pretrain``).

Each family declares its recipes in its ``FAMILY`` (``upstreams/<family>/__init__.py``): the
module that defines the recipe with ``@recipe.register`` and the shipped model and s3prl runner
configs. The tables below are derived from that registry, nothing here is kept by hand.
"""
from pathlib import Path as _Path

from ..upstreams.common.family import families as _families

_CONFIGS = _Path(__file__).resolve().parent / "configs"


def _shim(name: str, model_config: str, runner_config: str) -> dict:
    shim = ("# Added by s3prl-plugins (install_into_s3prl.py); the recipe lives in s3prl_plugins.pretrain.\n"
            "from s3prl_plugins.pretrain.s3prl_expert import expert_class\n\n"
            f"UpstreamPretrainExpert = expert_class({name!r})\n")
    return {"expert_shim": shim, "files": {"config_model.yaml": str(_CONFIGS / model_config),
                                           "config_runner.yaml": str(_CONFIGS / "s3prl" / runner_config)}}


#: Training recipes of ``python -m s3prl_plugins.pretrain <name>``: name -> module that defines it
#: (imported only when the recipe is asked for; aliases are declared by ``@register``).
RECIPE_MODULES: dict[str, str] = {r.name: r.module for f in _families().values() for r in f.recipes}

#: Recipes exposed to s3prl's ``run_pretrain.py -u <name>``: name -> {"expert_shim": source of the
#: ``pretrain_expert.py`` placed in ``<s3prl>/pretrain/<name>/``, "files": {file name: path of a
#: default config to copy beside it}}. ``install_into_s3prl.py`` installs them. Names avoid
#: s3prl's prefix rule (run_pretrain.py matches ``^<dir>_``): no name is another's prefix + "_".
S3PRL_RECIPES: dict[str, dict] = {r.name: _shim(r.name, r.model_config, r.runner_config)
                                  for f in _families().values() for r in f.recipes}
