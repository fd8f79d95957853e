"""The family contract and its registry.

Every model family is one folder ``upstreams/<family>/`` with the same files for the same roles:

* ``__init__.py`` - ``FAMILY = Family(...)``: its releases, entries, fingerprint, builder,
  pre-training recipes and benchmark architectures, declared once (light imports only: s3prl
  imports every hub module at start-up);
* ``config.py`` - the model configuration and the ``-g``/keyword options (dataclasses);
* ``model.py`` - the one implementation;
* ``formats.py`` - one reader and one writer per official checkpoint format, and the fingerprint;
* ``releases.py`` - the named weights (light: no torch);
* ``upstream.py`` - the s3prl wrapper and ``build(entry, ckpt, model_config, refresh, **options)``;
* ``hubconf.py`` - the entries, generated from ``FAMILY``.

Families are found by listing the packages of ``s3prl_plugins.upstreams`` (plus the folders named in
``S3PRL_PLUGINS_FAMILY_PATH``), so adding a family means adding a folder: the hub, the installer's
pre-training shims, the benchmarks, the profiler and checkpoint detection all read this registry.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["gdrive_url", "Release", "Recipe", "Architecture", "Family", "families", "family", "family_of_entry", "entry_functions",
           "register", "make_test_checkpoint", "FOREIGN_ENTRIES", "fingerprint_of", "detect_family"]


def gdrive_url(file_id: str) -> str:
    """Direct-download URL of a public Google Drive file id (release tables use it)."""
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


@dataclass(frozen=True)
class Release:
    """A named released weight: the hub entry that downloads it and how."""

    entry: str
    title: str
    url: str
    #: file name in the download cache (None: from the URL)
    filename: str | None = None
    description: str = ""
    #: family-specific facts the builder reads (statistics, architecture, companion yaml, ...)
    facts: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        """The facts read as attributes (``release.stats``)."""
        facts = self.__dict__.get("facts") or {}
        if name in facts:
            return facts[name]
        raise AttributeError(f"{type(self).__name__} {self.__dict__.get('entry')!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Recipe:
    """A pre-training recipe of the family (``python -m s3prl_plugins.pretrain NAME``)."""

    name: str
    #: module that defines it with ``@register`` (imported only when pre-training)
    module: str
    #: shipped model config and s3prl runner config, for ``run_pretrain.py -u NAME``
    model_config: str
    runner_config: str


@dataclass(frozen=True)
class Architecture:
    """A full-size architecture for benchmarks and profiling: a release's shape with random weights."""

    name: str
    entry: str
    #: "module:function" writing the full-size checkpoint: (folder) -> dict(ckpt=..., model_config=...)
    writer: str
    large: bool = False


@dataclass
class Family:
    name: str
    title: str
    #: entries that take a checkpoint path (-k), besides the named releases
    entries: tuple[str, ...]
    #: the named releases, by entry: ``-k`` there is an already fetched copy of the release
    releases: Mapping[str, Release]
    #: the entry that reads any local file of this family (named in error messages)
    local_entry: str
    #: "module:function" of ``upstream.build(entry, ckpt, model_config, refresh, **options)``
    builder: str = "upstream:build"
    #: "module:function" (loaded object, joined parameter names) -> rank of the matching rule or
    #: None: tells this family's checkpoints apart (see :func:`detect_family`)
    fingerprint: str = "formats:fingerprint"
    #: "module:function" (entry, folder) -> dict(ckpt=..., model_config=...): tiny test checkpoints
    test_checkpoint: str = "testing:make_checkpoint"
    recipes: tuple[Recipe, ...] = ()
    architectures: tuple[Architecture, ...] = ()
    #: the family's package (``__name__`` of its ``__init__``), that the references are relative to
    package: str = ""
    #: one-line docstring per entry (generated entries show it in s3prl's listing)
    entry_docs: Mapping[str, str] = field(default_factory=dict)
    #: entries of ``entries`` that download a release when called without ``-k`` (official entry
    #: names such as ``armhubert``) -> that release's entry; with ``-k`` they read any checkpoint
    default_releases: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, reference: str) -> Callable:
        """``"module:function"`` relative to the family's package -> the function (imported now)."""
        module, _, name = reference.partition(":")
        return getattr(importlib.import_module(f"{self.package}.{module}"), name)

    @property
    def all_entries(self) -> tuple[str, ...]:
        return (*self.entries, *self.releases)

    def release_for(self, entry: str) -> Release | None:
        """The release ``entry`` downloads when called without ``-k``: its own (a named release)
        or its default one; None for entries that always need ``-k``."""
        return self.releases.get(entry) or self.releases.get(self.default_releases.get(entry, ""))

    def build(self, entry: str, ckpt=None, model_config=None, refresh: bool = False, **options):
        """The entry's upstream, in eval mode (s3prl's runner and ESPnet switch to train mode
        themselves when they fine-tune; a plain ``model(wavs)`` gets the deterministic features)."""
        return self.resolve(self.builder)(entry, ckpt, model_config, refresh, **options).eval()


_FAMILIES: dict[str, Family] = {}
_ENTRY_OWNER: dict[str, str] = {}
_FAILED: dict[str, BaseException] = {}
_SCANNED = False


def register(family_obj: Family, package: str) -> Family:
    """Add ``family_obj`` (defined in ``package``); entry names must be unique over all families."""
    family_obj.package = family_obj.package or package
    for entry, release in family_obj.default_releases.items():
        if entry not in family_obj.entries or release not in family_obj.releases:
            raise RuntimeError(f"{family_obj.name}: default release {entry!r} -> {release!r} names no entry/release")
    for entry in family_obj.all_entries:
        owner = _ENTRY_OWNER.get(entry)
        if owner is not None and owner != family_obj.name:
            raise RuntimeError(f"entry {entry!r} is defined by both {owner} and {family_obj.name}")
    _FAMILIES[family_obj.name] = family_obj
    for entry in family_obj.all_entries:
        _ENTRY_OWNER[entry] = family_obj.name
    return family_obj


def _extra_paths() -> list[str]:
    return [p for p in os.environ.get("S3PRL_PLUGINS_FAMILY_PATH", "").split(os.pathsep) if p]


def _scan() -> None:
    """Import every family package once: the built-in folders and ``S3PRL_PLUGINS_FAMILY_PATH``."""
    global _SCANNED
    # the package that holds the family folders: s3prl_plugins.upstreams, or the private copy of a
    # hidden-set export
    upstreams = importlib.import_module(__name__.rsplit(".", 2)[0])

    for path in _extra_paths():
        if path not in upstreams.__path__:
            upstreams.__path__.append(path)
    for info in sorted(pkgutil.iter_modules(upstreams.__path__), key=lambda m: m.name):
        if not info.ispkg or info.name == "common" or info.name.startswith("_"):
            continue
        package = f"{upstreams.__name__}.{info.name}"
        if any(f.package == package for f in _FAMILIES.values()):
            continue
        try:
            module = importlib.import_module(package)
            found = getattr(module, "FAMILY", None)
            if isinstance(found, Family):
                register(found, package)
        except Exception as error:  # noqa: BLE001 - a broken family never hides the others
            _FAILED[info.name] = error
            print(f"WARNING s3prl-plugins: {info.name} entries not loaded: {error!r}", file=sys.stderr)
    _SCANNED = True


def families(rescan: bool = False) -> dict[str, Family]:
    """Every registered family by name (found on first use; ``rescan`` looks for new folders)."""
    if rescan or not _SCANNED:
        _scan()
    return dict(_FAMILIES)


def failed_families() -> dict[str, BaseException]:
    families()
    return dict(_FAILED)


def family(name: str) -> Family:
    found = families().get(name)
    if found is None:
        raise KeyError(f"no model family {name!r}; known: {', '.join(families())}")
    return found


def family_of_entry(entry: str) -> Family:
    families()
    owner = _ENTRY_OWNER.get(entry)
    if owner is None:
        raise KeyError(f"no plugin entry {entry!r}")
    return _FAMILIES[owner]


def make_test_checkpoint(entry: str, folder) -> dict:
    """A tiny random checkpoint for ``entry`` in its official format (its family's
    ``test_checkpoint``): ``dict(ckpt=..., model_config=...)`` to pass to the entry."""
    owner = family_of_entry(entry)
    return owner.resolve(owner.test_checkpoint)(entry, folder)


def entry_functions(family_obj: Family) -> dict[str, Callable]:
    """The s3prl hub functions of a family: ``name(ckpt=None, model_config=None, refresh=False, **kw)``."""

    def make(entry: str) -> Callable:
        def function(ckpt=None, model_config=None, refresh=False, **kwargs):
            return family_obj.build(entry, ckpt, model_config, refresh, **kwargs)

        function.__name__ = function.__qualname__ = entry
        release = family_obj.releases.get(entry)
        doc = family_obj.entry_docs.get(entry)
        if doc is None and release is not None:
            doc = f"{release.title}: {release.description} ({release.url}). -k: a copy of it fetched by hand."
        function.__doc__ = doc or f"{family_obj.title}: -u {entry} -k CHECKPOINT [-g MODEL_CONFIG]."
        function.__module__ = f"{family_obj.package}.hubconf"
        return function

    return {entry: make(entry) for entry in family_obj.all_entries}


# ---------------------------------------------------------------------------------------------
# Telling checkpoints apart
# ---------------------------------------------------------------------------------------------
#: s3prl's own families whose files users mix up with ours, and the entry that reads them
FOREIGN_ENTRIES = {"hubert": "hubert_local", "wavlm": "wavlm_local", "distilhubert": "distiller_local"}


def _foreign_fingerprint(obj: Any, keys: str) -> tuple[int, str] | None:
    """(rank, family) of s3prl's own families (see :func:`detect_family` for the ranks)."""
    if isinstance(obj, Mapping) and "Distiller" in obj:
        return 0, "distilhubert"
    if "rel_attn_embed" in keys or "relative_attention_bias" in keys or "grep_linear" in keys:
        return 40, "wavlm"
    has_cnn = "feature_extractor.conv_layers" in keys
    if has_cnn and ("label_embs_concat" in keys or ("final_proj" in keys and "mask_emb" in keys)):
        return 70, "hubert"
    return None


def _tensor_keys(obj: Any) -> list[str]:
    """Parameter names of the model held by ``obj``, whatever the container layout."""
    if not isinstance(obj, Mapping):
        return []
    for key in ("model", "Model", "state_dict", "Distiller"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner:
            return [str(k) for k in inner.keys()]
    import torch

    return [str(k) for k, v in obj.items() if isinstance(v, torch.Tensor)]


def fingerprint_of(obj: Any) -> str:
    """The newline-joined parameter names of a loaded checkpoint, what fingerprints read."""
    return "\n".join(_tensor_keys(obj))


def detect_family(obj: Any) -> str | None:
    """Which family a loaded checkpoint belongs to: one of ours, an s3prl family from
    :data:`FOREIGN_ENTRIES`, or None when no fingerprint matches.

    Each family's fingerprint returns the rank of the rule that matched (or None); the lowest
    rank wins, so the specific rules of one family can come before the general ones of another.
    The ranks in use: 0 s3prl distiller; 5 MelHuBERT runner config; 10 a distilled student
    (``student_model.*``); 20 Dasheng positional tables; 30 ViT patch embedding + fused qkv (M2D);
    40 WavLM; 50 student with projection heads; 60 MelHuBERT without CNN; 70 HuBERT; 80 any other
    wav2vec2-style student."""
    keys = fingerprint_of(obj)
    matches = []
    foreign = _foreign_fingerprint(obj, keys)
    if foreign is not None:
        matches.append(foreign)
    for candidate in families().values():
        rank = candidate.resolve(candidate.fingerprint)(obj, keys)
        if rank is not None:
            matches.append((rank, candidate.name))
    return min(matches)[1] if matches else None


def local_entry_of(name: str) -> str | None:
    """The entry to suggest for a detected family."""
    if name in FOREIGN_ENTRIES:
        return FOREIGN_ENTRIES[name]
    found = families().get(name)
    return found.local_entry if found is not None else None
