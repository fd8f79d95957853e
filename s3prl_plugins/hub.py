"""Every s3prl entry of the plugin families, in one module.

s3prl resolves ``-u NAME`` with ``getattr(s3prl.hub, NAME)``. The installer appends a guarded
``from s3prl_plugins.hub import *`` to s3prl's ``hub.py``; the wrapper CLIs set the same names on
``s3prl.hub`` at run time. The entries come from the family registry
(:mod:`s3prl_plugins.upstreams.common.family`): each family's ``hubconf`` module, generated from
its ``FAMILY``. Families import only light modules, so importing this module (and therefore
``s3prl.hub``) stays fast: torch and the models load inside the entries.
"""
from __future__ import annotations

import importlib as _importlib
import sys as _sys

from .upstreams.common import family as _registry

#: the registered families' names (see the registry)
FAMILIES: tuple[str, ...] = tuple(_registry.families())
#: entry name -> family name
ENTRY_FAMILY: dict[str, str] = {}
#: family -> the error that kept its entries out (a broken family never hides the others)
FAILED_FAMILIES: dict[str, BaseException] = {}

__all__: list[str] = []


def _collect() -> None:
    for name, family in _registry.families().items():
        try:
            module = _importlib.import_module(f"{family.package}.hubconf")
            names = list(module.__all__)
        except Exception as error:  # noqa: BLE001 - report and keep the other families
            FAILED_FAMILIES[name] = error
            # print, not only log: s3prl configures no logging handler at hub import time
            print(f"WARNING s3prl-plugins: {name} entries not loaded: {error!r}", file=_sys.stderr)
            continue
        for entry in names:
            if entry in ENTRY_FAMILY:
                raise RuntimeError(f"entry {entry!r} is defined by both {ENTRY_FAMILY[entry]} and {name}")
            globals()[entry] = getattr(module, entry)
            ENTRY_FAMILY[entry] = name
            __all__.append(entry)
    FAILED_FAMILIES.update(_registry.failed_families())


_collect()
