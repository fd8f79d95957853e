"""Every s3prl entry of the plugin families, in one module.

s3prl resolves ``-u NAME`` with ``getattr(s3prl.hub, NAME)``. The installer appends a guarded
``from s3prl_plugins.hub import *`` to s3prl's ``hub.py``; the wrapper CLIs set the same names on
``s3prl.hub`` at run time. Each family's ``hubconf`` imports only light modules, so importing this
module (and therefore ``s3prl.hub``) stays fast: torch and the models load inside the entries.
"""
from __future__ import annotations

import importlib as _importlib
import sys as _sys

#: the families whose ``upstreams/<family>/hubconf.py`` contribute entries
FAMILIES = ("m2d", "melhubert", "armhubert", "starhubert", "dasheng")

#: entry name -> family
ENTRY_FAMILY: dict[str, str] = {}
#: family -> the error that kept its entries out (a broken family never hides the others)
FAILED_FAMILIES: dict[str, BaseException] = {}

__all__: list[str] = []


def _collect() -> None:
    for family in FAMILIES:
        try:
            module = _importlib.import_module(f"s3prl_plugins.upstreams.{family}.hubconf")
            names = list(module.__all__)
        except Exception as error:  # noqa: BLE001 - report and keep the other families
            FAILED_FAMILIES[family] = error
            # print, not only log: s3prl configures no logging handler at hub import time
            print(f"WARNING s3prl-plugins: {family} entries not loaded: {error!r}", file=_sys.stderr)
            continue
        for name in names:
            if name in ENTRY_FAMILY:
                raise RuntimeError(f"entry {name!r} is defined by both {ENTRY_FAMILY[name]} and {family}")
            globals()[name] = getattr(module, name)
            ENTRY_FAMILY[name] = family
            __all__.append(name)


_collect()
