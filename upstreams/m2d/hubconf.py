"""s3prl entries for M2D.

* ``m2d``: the official wrapper's entry, ``-k PATH,MEAN,STD`` (PATH: any official M2D weight file).
* ``m2d_calcnorm``: computes the log-mel statistics of the downstream data while training runs,
  prints them with the ``-k``/``-g`` to use, and keeps running (the official one exits).
* ``m2d_local``: ``-k PATH`` (optionally ``PATH,MEAN,STD``); statistics from ``-g`` (YAML with
  ``norm_mean``/``norm_std`` or a SUPERB task name) or the checkpoint.
* one entry per released weight (see ``releases.RELEASES``), downloaded into s3prl's cache;
  ``-k MEAN,STD`` and ``-g`` give the statistics.

Only light imports here: s3prl imports every hub module at start-up.
"""
from .releases import RELEASES as _RELEASES


def _build(**kwargs):
    from .expert import build_upstream

    return build_upstream(**kwargs)


def m2d(ckpt=None, model_config=None, refresh=False, **kwargs):
    """Official form: ``-u m2d -k /path/to/<release folder>/checkpoint-300.pth,MEAN,STD``."""
    return _build(entry="m2d", ckpt=ckpt, model_config=model_config, refresh=refresh,
                  norm_mean=kwargs.get("norm_mean"), norm_std=kwargs.get("norm_std"))


def m2d_calcnorm(ckpt=None, model_config=None, refresh=False, **kwargs):
    """``-u m2d_calcnorm -k PATH``: prints the data set's statistics and the -k/-g to use."""
    if ckpt is not None and "," in str(ckpt):
        from .expert import split_ckpt_argument

        ckpt = split_ckpt_argument(ckpt)[0] or str(ckpt).split(",")[0]
    return _build(entry="m2d_calcnorm", ckpt=ckpt, model_config=model_config, refresh=refresh, calcnorm=True)


def m2d_local(ckpt=None, model_config=None, refresh=False, norm_mean=None, norm_std=None, **kwargs):
    """``-u m2d_local -k PATH`` for every official M2D weight file (full, encoder-only, EVAR, CLAP)."""
    return _build(entry="m2d_local", ckpt=ckpt, model_config=model_config, refresh=refresh,
                  norm_mean=norm_mean, norm_std=norm_std)


def _named(entry, ckpt=None, model_config=None, refresh=False, norm_mean=None, norm_std=None, **kwargs):
    return _build(entry=entry, ckpt=ckpt, model_config=model_config, refresh=refresh,
                  url=_RELEASES[entry][1], norm_mean=norm_mean, norm_std=norm_std)


def _make_named(entry):
    folder, url, description = _RELEASES[entry]

    def function(ckpt=None, model_config=None, refresh=False, **kwargs):
        return _named(entry, ckpt=ckpt, model_config=model_config, refresh=refresh, **kwargs)

    function.__name__ = function.__qualname__ = entry
    function.__doc__ = f"{description}: {folder} ({url}). Statistics: -k MEAN,STD or -g."
    return function


for _entry in _RELEASES:
    globals()[_entry] = _make_named(_entry)

__all__ = ["m2d", "m2d_calcnorm", "m2d_local", *_RELEASES]
