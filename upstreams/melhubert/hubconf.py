"""s3prl entries for MelHuBERT (light at import time: torch loads inside the entries).

* ``melhubert_local -k PATH [-g YAML]``: any MelHuBERT checkpoint (official runner files of
  every vintage, plain state dicts). ``-g`` yaml: ``stats: libri960 | libri360 | libri100 |
  /path/mean-std.npy`` (default libri960) and, for state dicts without a stored config, the
  official model yaml section ``melhubert: {...}``.
* One named entry per released checkpoint (downloaded from Google Drive and cached like
  s3prl's other named upstreams), using the statistics of its training data unless ``-g``
  says otherwise; ``melhubert`` is the 20 ms 960 h stage-2 model.

Output: 13 hidden states (projected input features, then the 12 layers) at 50 frames/s
(20 ms models) or 100 frames/s (10 ms), the frame period read from the checkpoint. Inputs
shorter than one 25 ms window (400 samples), which crash the official code, are zero-padded to
one window.
"""
from __future__ import annotations

from .variants import DEFAULT_NAMED, RELEASED

__all__ = ["melhubert_local", "melhubert", *RELEASED]


def melhubert_local(ckpt=None, model_config=None, refresh=False, **kwargs):
    """MelHuBERT from a local checkpoint: ``-u melhubert_local -k PATH [-g stats.yaml]``."""
    from ..common.checkpoint import resolve_checkpoint
    from .expert import from_checkpoint

    path = resolve_checkpoint(ckpt, refresh=refresh, local_entry="melhubert_local", what="the MelHuBERT checkpoint")
    return from_checkpoint(path, model_config, default_stats="libri960", entry="melhubert_local")


def _named(entry: str, ckpt=None, model_config=None, refresh=False, **kwargs):
    from ..common.checkpoint import resolve_checkpoint
    from .expert import from_checkpoint

    release = RELEASED[entry]
    source = ckpt or release.url  # -k overrides the download (a file fetched by hand)
    path = resolve_checkpoint(
        source, refresh=refresh, local_entry="melhubert_local", filename=release.filename,
        what=f"{release.title} ({release.filename}, Google Drive id {release.gdrive_id})",
    )
    return from_checkpoint(path, model_config, default_stats=release.stats,
                           expected_frame_period_ms=release.frame_period_ms, entry=entry)


def _make_entry(entry: str):
    release = RELEASED[entry]

    def named_entry(ckpt=None, model_config=None, refresh=False, **kwargs):
        return _named(entry, ckpt=ckpt, model_config=model_config, refresh=refresh, **kwargs)

    named_entry.__name__ = named_entry.__qualname__ = entry
    named_entry.__doc__ = (
        f"{release.title} (Google Drive id {release.gdrive_id}); normalised with the "
        f"{release.stats} statistics unless -g sets `stats:`."
    )
    return named_entry


for _entry in RELEASED:
    globals()[_entry] = _make_entry(_entry)


def melhubert(ckpt=None, model_config=None, refresh=False, **kwargs):
    """The 20 ms 960 h stage-2 MelHuBERT, recommended by the author for feature extraction."""
    return _named(DEFAULT_NAMED, ckpt=ckpt, model_config=model_config, refresh=refresh, **kwargs)
