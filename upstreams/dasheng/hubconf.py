"""s3prl entries for Dasheng, generated from ``FAMILY`` (see ``__init__.py``): ``dasheng_local``
(``-k`` = an official checkpoint file or folder) and one entry per release, downloaded into s3prl's
cache. Light at import time: torch loads inside the entries."""
from ..common.family import entry_functions as _entry_functions
from . import FAMILY as _FAMILY

globals().update(_entry_functions(_FAMILY))
__all__ = list(_FAMILY.all_entries)
