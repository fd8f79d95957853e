"""Building the s3prl upstream for every entry of the ARMHuBERT and STaRHuBERT families."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..common.checkpoint import CheckpointError, resolve_checkpoint
from ..common.config import load_model_config
from .checkpoint import FAMILY, read_student
from .config import PUBLISHED
from .expert import StudentUpstream, parse_flag
from .releases import APPROX_PARAMS_M, RELEASES, Release

__all__ = ["build_upstream"]

logger = logging.getLogger(__name__)

#: accepted spellings of the batching option (kwarg or yaml key)
_BATCHING_KEYS = ("official_batching", "official_batched_reuse")


def _release_config(release: Release, *, refresh: bool, entry: str):
    """Config of a release whose checkpoint has none: its companion yaml, else the published one."""

    def fetch() -> Mapping:
        if release.yaml is not None:
            try:
                path = resolve_checkpoint(release.yaml, refresh=refresh, local_entry=f"{FAMILY[release.flavour]}_local",
                                          filename=release.filename.replace(".ckpt", ".yaml"),
                                          what=f"the {release.title} yaml")
                cfg = load_model_config(path)
                if isinstance(cfg.get("distiller"), Mapping):
                    return cfg["distiller"]
            except CheckpointError:
                if release.architecture is None:
                    raise
                logger.warning("%s: could not fetch the companion yaml; using the published architecture", entry)
        if release.architecture is None:
            raise CheckpointError(
                f"{entry}: the {release.title} checkpoint has no configuration and its yaml could not be read; "
                f"pass it with -g (yaml: {release.yaml})."
            )
        return PUBLISHED[release.architecture]

    return fetch


def _check_size(model, release: Release, entry: str) -> None:
    count = sum(p.numel() for p in model.parameters())
    if release.params is not None and count != release.params:
        logger.warning("%s: the loaded student has %d parameters, the %s release %d; is this the right file?",
                       entry, count, release.title, release.params)
    approx = APPROX_PARAMS_M.get(entry)
    if approx is not None and abs(count / 1e6 - approx) > 0.05 * approx:
        logger.warning(
            "%s: the downloaded file holds a %.2fM-parameter student, not the %.2fM %s; the official README "
            "links STaRHuBERT-S and -XS to the same file.", entry, count / 1e6, approx, release.title)


def build_upstream(
    *,
    entry: str,
    flavour: str,
    ckpt: Any = None,
    model_config: Any = None,
    refresh: bool = False,
    release: str | None = None,
    **kwargs,
) -> StudentUpstream:
    """``release``: name in :data:`RELEASES` to download when ``ckpt`` is None."""
    family = FAMILY[flavour]
    local_entry = "maskhubert_local" if entry.startswith("maskhubert") else f"{family}_local"
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in _BATCHING_KEYS}
    if kwargs:
        logger.warning("%s: ignoring unknown arguments %s", entry, ", ".join(sorted(kwargs)))
    info = RELEASES.get(release) if release else None
    if ckpt is None or str(ckpt).strip() == "":
        if info is None:
            resolve_checkpoint(None, local_entry=entry)  # raises: no checkpoint given
        path = resolve_checkpoint(info.ckpt, refresh=refresh, local_entry=local_entry,
                                  filename=info.filename, what=f"the {info.title} checkpoint")
    else:
        # an explicit -k wins; the release then only names what an official entry would download
        info = None
        path = resolve_checkpoint(ckpt, refresh=refresh, local_entry=local_entry)
    if path.is_dir():
        raise CheckpointError(f"{entry}: {path} is a folder; pass the .ckpt file (-k path/to/<name>.ckpt).")
    fallback = _release_config(info, refresh=refresh, entry=entry) if info is not None else None
    loaded = read_student(path, model_config, flavour, entry=entry, fallback_config=fallback)
    for key in _BATCHING_KEYS:
        if key in loaded.options:
            options.setdefault(key, loaded.options[key])
    official = False
    for key in _BATCHING_KEYS:
        if key in options:
            official = parse_flag(options[key], key)
    if info is not None:
        _check_size(loaded.model, info, entry)
    name = info.title if info is not None else entry
    return StudentUpstream(loaded.model, name=name, official_batching=official)
