"""s3prl entries for MelHuBERT, generated from ``FAMILY`` (see ``__init__.py``).

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
one window. Light at import time: torch loads inside the entries.
"""
from ..common.family import entry_functions as _entry_functions
from . import FAMILY as _FAMILY

globals().update(_entry_functions(_FAMILY))
__all__ = list(_FAMILY.all_entries)
