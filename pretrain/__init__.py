"""Pre-training recipes shared by the plugin families (imported as ``s3prl_plugins.pretrain``)."""
