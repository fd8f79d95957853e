"""s3prl entries for STaRHuBERT and STaRWavLM (the student is shared with ARMHuBERT).

* ``starhubert``: the official entry name and arguments, ``-k <.ckpt> -g <.yaml>`` (``-g``
  optional when the checkpoint carries its training yaml). Without ``-k`` it downloads
  STaRHuBERT (22.3M).
* ``starhubert_local``: ``-k <.ckpt>`` with or without ``-g``.
* one entry per release: ``starhubert_l``, ``starhubert_base``, ``starhubert_s``,
  ``starhubert_xs`` (the official README links S and XS to the same file), ``starwavlm_base``.

``hidden_states`` are the 12 raw layer outputs [B, T, D]; ``last_hidden_state`` is batch-major
(the official wrapper returns it time-major). ``final_proj.*`` in the files is dropped.
Only light imports here.
"""
from ..armhubert.releases import DEFAULT_RELEASE as _DEFAULT_RELEASE
from ..armhubert.releases import RELEASES as _RELEASES

_FLAVOUR = "star"


def _build(entry, ckpt, model_config, refresh, release=None, **kwargs):
    from ..armhubert.entries import build_upstream

    return build_upstream(entry=entry, flavour=_FLAVOUR, ckpt=ckpt, model_config=model_config,
                          refresh=refresh, release=release, **kwargs)


def starhubert(ckpt=None, model_config=None, refresh=False, **kwargs):
    """Official form ``-u starhubert -k <.ckpt> -g <.yaml>``."""
    return _build("starhubert", ckpt, model_config, refresh, _DEFAULT_RELEASE["starhubert"], **kwargs)


def starhubert_local(ckpt=None, model_config=None, refresh=False, **kwargs):
    """``-u starhubert_local -k <.ckpt> [-g <.yaml>]``."""
    return _build("starhubert_local", ckpt, model_config, refresh, **kwargs)


def _make_named(entry):
    release = _RELEASES[entry]

    def function(ckpt=None, model_config=None, refresh=False, **kwargs):
        return _build(entry, ckpt, model_config, refresh, entry, **kwargs)

    function.__name__ = function.__qualname__ = entry
    function.__doc__ = (f"{release.title} ({release.note}), downloaded from Google Drive ({release.ckpt}). "
                        "-k: an already downloaded copy; -g: the companion yaml or options.")
    return function


_NAMED = [name for name, release in _RELEASES.items() if release.flavour == _FLAVOUR]
for _entry in _NAMED:
    globals()[_entry] = _make_named(_entry)

__all__ = ["starhubert", "starhubert_local", *_NAMED]
