"""s3prl entries for Dasheng (imports only light modules; the model loads inside the entries)."""
import os as _os

__all__ = ["dasheng_local", "dasheng_base", "dasheng_06B", "dasheng_12B"]


def dasheng_local(ckpt=None, model_config=None, refresh=False, **kwargs):
    """Dasheng from a local official checkpoint: ``-k`` = the pip/Zenodo ``.pt`` file, or a
    Hugging Face ``mispeech/dasheng-*`` folder / its ``model.safetensors``."""
    from ..common.checkpoint import resolve_checkpoint
    from .expert import load_upstream

    path = resolve_checkpoint(ckpt, refresh=refresh, local_entry="dasheng_local", what="the Dasheng checkpoint")
    return load_upstream(_os.fspath(path), model_config=model_config, **kwargs)


def _named(variant_name, model_config, refresh, kwargs):
    from ..common.checkpoint import resolve_checkpoint
    from .expert import load_upstream
    from .variants import VARIANTS

    variant = VARIANTS[variant_name]
    kwargs.pop("ckpt", None)  # the named entries always use the official release
    path = resolve_checkpoint(variant.url, refresh=refresh, local_entry="dasheng_local",
                              what=f"the official {variant_name} checkpoint")
    return load_upstream(_os.fspath(path), model_config=model_config, **kwargs)


def dasheng_base(ckpt=None, model_config=None, refresh=False, **kwargs):
    """Dasheng-Base (86M, 768 wide, 12 blocks), downloaded from Zenodo once and cached."""
    return _named("dasheng_base", model_config, refresh, kwargs)


def dasheng_06B(ckpt=None, model_config=None, refresh=False, **kwargs):
    """Dasheng-0.6B (1280 wide, 32 blocks), downloaded from Zenodo once and cached."""
    return _named("dasheng_06B", model_config, refresh, kwargs)


def dasheng_12B(ckpt=None, model_config=None, refresh=False, **kwargs):
    """Dasheng-1.2B (1536 wide, 40 blocks), downloaded from Zenodo once and cached."""
    return _named("dasheng_12B", model_config, refresh, kwargs)
