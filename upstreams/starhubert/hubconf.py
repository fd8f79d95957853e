"""s3prl entries of the family, generated from ``FAMILY`` (see ``__init__.py``); light at import time."""
from ..common.family import entry_functions as _entry_functions
from . import FAMILY as _FAMILY

globals().update(_entry_functions(_FAMILY))
__all__ = list(_FAMILY.all_entries)
