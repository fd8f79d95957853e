"""s3prl entries for ARMHuBERT, ARMwavLM and MaskHuBERT.

* ``armhubert`` / ``maskhubert``: the official entry names and arguments, ``-k <.ckpt> -g <.yaml>``
  (``-g`` optional: the Lightning checkpoint carries its training yaml). Without ``-k`` they
  download ARMHuBERT-960h / MaskHuBERT-960h.
* ``armhubert_local`` / ``maskhubert_local``: ``-k <.ckpt>`` with or without ``-g``.
* one entry per release (``armhubert_960h``, ``armhubert_s_100h``, ``armhubert_s_960h``,
  ``armwavlm_s_100h``, ``armwavlm_s_960h``, ``maskhubert_960h``), downloaded into s3prl's cache.

``hidden_states`` are the 12 projection-head outputs [B, T, 768], as in the official wrapper.
A ``-g`` yaml (or keyword) ``official_batching: true`` reproduces the official numbers for padded
batches (the default treats each utterance as if alone). Only light imports here.
"""
from .releases import DEFAULT_RELEASE as _DEFAULT_RELEASE
from .releases import RELEASES as _RELEASES

_FLAVOUR = "arm"


def _build(entry, ckpt, model_config, refresh, release=None, **kwargs):
    from .entries import build_upstream

    return build_upstream(entry=entry, flavour=_FLAVOUR, ckpt=ckpt, model_config=model_config,
                          refresh=refresh, release=release, **kwargs)


def armhubert(ckpt=None, model_config=None, refresh=False, **kwargs):
    """Official form ``-u armhubert -k <.ckpt> -g <.yaml>`` (ARMHuBERT, ARMwavLM, MaskHuBERT files)."""
    return _build("armhubert", ckpt, model_config, refresh, _DEFAULT_RELEASE["armhubert"], **kwargs)


def maskhubert(ckpt=None, model_config=None, refresh=False, **kwargs):
    """Official form ``-u maskhubert -k <.ckpt> -g <.yaml>``."""
    return _build("maskhubert", ckpt, model_config, refresh, _DEFAULT_RELEASE["maskhubert"], **kwargs)


def armhubert_local(ckpt=None, model_config=None, refresh=False, **kwargs):
    """``-u armhubert_local -k <.ckpt> [-g <.yaml>]``."""
    return _build("armhubert_local", ckpt, model_config, refresh, **kwargs)


def maskhubert_local(ckpt=None, model_config=None, refresh=False, **kwargs):
    """``-u maskhubert_local -k <.ckpt> [-g <.yaml>]``."""
    return _build("maskhubert_local", ckpt, model_config, refresh, **kwargs)


def _make_named(entry):
    release = _RELEASES[entry]

    def function(ckpt=None, model_config=None, refresh=False, **kwargs):
        return _build(entry, ckpt, model_config, refresh, entry, **kwargs)

    function.__name__ = function.__qualname__ = entry
    function.__doc__ = (f"{release.title} ({release.note}), downloaded from {release.ckpt}. "
                        "-k: an already downloaded copy; -g: options such as official_batching.")
    return function


_NAMED = [name for name, release in _RELEASES.items() if release.flavour == _FLAVOUR]
for _entry in _NAMED:
    globals()[_entry] = _make_named(_entry)

__all__ = ["armhubert", "maskhubert", "armhubert_local", "maskhubert_local", *_NAMED]
