"""Pre-training recipes shared by the plugin families (imported as ``s3prl_plugins.pretrain``)."""

#: Recipes exposed to s3prl's ``run_pretrain.py -u <name>``: name -> {"expert_shim": source of the
#: ``pretrain_expert.py`` placed in ``<s3prl>/pretrain/<name>/``, "files": {file name: path of a
#: default config to copy beside it}}. ``install_into_s3prl.py`` installs them.
S3PRL_RECIPES: dict[str, dict] = {}
