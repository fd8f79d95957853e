"""s3prl entries for M2D, generated from ``FAMILY`` (see ``__init__.py``).

* ``m2d``: the official wrapper's entry, ``-k PATH,MEAN,STD`` (PATH: any official M2D weight file).
* ``m2d_calcnorm``: computes the log-mel statistics of the downstream data while training runs,
  prints them with the ``-k``/``-g`` to use, and keeps running (the official one exits).
* ``m2d_local``: ``-k PATH`` (optionally ``PATH,MEAN,STD``); statistics from ``-g`` (YAML with
  ``norm_mean``/``norm_std`` or a SUPERB task name) or the checkpoint.
* one entry per released weight (see ``releases.RELEASES``), downloaded into s3prl's cache;
  ``-k MEAN,STD`` and ``-g`` give the statistics.

Only light imports here: s3prl imports every hub module at start-up.
"""
from ..common.family import entry_functions as _entry_functions
from . import FAMILY as _FAMILY

globals().update(_entry_functions(_FAMILY))
__all__ = list(_FAMILY.all_entries)
