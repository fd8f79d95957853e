"""Finding, downloading and reading checkpoints; :func:`check_family` asks the registry
(``family.py``, the families' fingerprints) whose file a loaded checkpoint is.

Official releases are torch pickles holding more than tensors (an ``argparse.Namespace`` of
training arguments, a PyTorch-Lightning ``AttributeDict``, s3prl's ``optimizers.*`` schedule
objects). Since torch 2.6 ``torch.load`` refuses those by default. :func:`load_checkpoint` keeps
the safe weights-only unpickler and lets every foreign class in the file be rebuilt as an inert
stand-in object (a dict that records its pickled state), so nothing from the file is executed and
no process-wide ``weights_only=False`` is needed.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.parse
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from s3prl_plugins import compat

from .family import gdrive_url

__all__ = [
    "CheckpointError",
    "MissingCheckpointError",
    "StandIn",
    "cache_dir",
    "cached_download_path",
    "resolve_checkpoint",
    "resolve_entry_checkpoint",
    "load_checkpoint",
    "detect_family",
    "check_family",
    "strip_prefix",
    "gdrive_url",
]

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist or no checkpoint was given."""


# ---------------------------------------------------------------------------------------------
# Cache and downloads (the layout of s3prl.util.download, so both share one cache)
# ---------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Root of the download cache: ``$S3PRL_PLUGINS_CACHE_DIR`` or s3prl's ``~/.cache/s3prl``."""
    root = os.environ.get("S3PRL_PLUGINS_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "s3prl"


def _url_basename(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    name = os.path.basename(parsed.path) or "download"
    query = urllib.parse.parse_qs(parsed.query)
    if "id" in query and name in ("uc", "download", "open"):
        name = query["id"][0]
    return name


def _download_url(text: str) -> str:
    """``gdrive:<id>`` (the release tables' short form) -> its download URL; others unchanged."""
    return gdrive_url(text.split(":", 1)[1]) if text.startswith("gdrive:") else text


def cached_download_path(url: str, filename: str | None = None) -> Path:
    """Where ``url`` (or ``gdrive:<id>``) is cached: ``<cache>/download/<sha256(url)>.<basename>``
    like s3prl."""
    url = _download_url(url)
    digest = hashlib.sha256(url.encode()).hexdigest()
    return cache_dir() / "download" / f"{digest}.{filename or _url_basename(url)}"


_HF_FILE = re.compile(r"^https://huggingface\.co/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")


def _fetch(url: str, target: Path) -> None:
    """Download ``url`` to ``target`` with the libraries: ``huggingface_hub`` for Hugging Face
    files (token, retries, resumable), ``torch.hub`` otherwise (a temporary file, then a rename)."""
    hf = _HF_FILE.match(url.split("?")[0])
    if hf is not None:
        from huggingface_hub import hf_hub_download

        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as folder:
            fetched = hf_hub_download(hf["repo"], hf["file"], revision=hf["revision"], local_dir=folder)
            os.replace(fetched, target)
        return
    from torch.hub import download_url_to_file

    download_url_to_file(url, str(target), progress=True)


def _download(url: str, target: Path, *, local_entry: str | None, what: str, refresh: bool = False) -> None:
    """Fetch ``url`` into the cache once: a file lock makes the other processes of a distributed
    run wait and then find the file (with ``refresh``: the file another process fetched while this
    one waited), instead of downloading it again. The download lands beside ``target`` and
    replaces it only once checked, so a failed refresh keeps the file that was there."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    asked = time.time()
    with FileLock(str(target) + ".lock"):
        if target.exists() and (not refresh or target.stat().st_mtime >= asked):
            return
        partial = target.with_name(f".{target.name}.download")
        try:
            _fetch(url, partial)
            with open(partial, "rb") as handle:
                head = handle.read(512).lstrip().lower()
            if head.startswith((b"<!doctype html", b"<html")):
                raise OSError("the server answered with a web page instead of the file "
                              "(Google Drive quota or a sign-in page)")
            os.replace(partial, target)
        except Exception as error:  # network errors, HTTP errors, HTML answers
            partial.unlink(missing_ok=True)
            hint = f" and pass it to `-u {local_entry} -k <path>`" if local_entry else ""
            raise CheckpointError(
                f"Could not download {what} from {url} ({type(error).__name__}: {error}). "
                f"Fetch the file by hand, save it as {target}{hint}."
            ) from error


def _extract_zip(archive: Path) -> Path:
    folder = archive.with_suffix("")
    if folder.is_dir():
        return folder
    tmp = Path(tempfile.mkdtemp(dir=archive.parent, prefix=folder.name + ".unzip"))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
    except zipfile.BadZipFile as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{archive} is not a valid zip archive ({error}); delete it and download again.")
    os.replace(tmp, folder)
    return folder


def resolve_checkpoint(
    ckpt: str | os.PathLike | None,
    *,
    refresh: bool = False,
    local_entry: str | None = None,
    filename: str | None = None,
    what: str = "the checkpoint",
) -> Path:
    """Turn ``-k`` into a local path: a file or folder, an http(s) URL, ``gdrive:<id>``, or a zip.

    URLs are downloaded once into the cache (``refresh=True`` downloads again). A ``.zip`` (as
    released on GitHub) is extracted next to the cached file and the folder is returned.
    """
    if ckpt is None or str(ckpt).strip() == "":
        entry = f"-u {local_entry} " if local_entry else ""
        raise MissingCheckpointError(f"No checkpoint given: pass it with `{entry}-k /path/to/checkpoint`.")
    text = str(ckpt).strip()
    text = _download_url(text)
    if re.match(r"^https?://", text):
        target = cached_download_path(text, filename)
        if refresh or not target.exists():
            _download(text, target, local_entry=local_entry, what=what, refresh=refresh)
        path = target
    else:
        path = Path(text).expanduser()
        if not path.exists():
            raise MissingCheckpointError(
                f"Checkpoint not found: {path} (resolved from -k {text!r}); check the path."
            )
    if path.is_file() and path.suffix == ".zip":
        return _extract_zip(path)
    return path


def resolve_entry_checkpoint(entry: str, release, ckpt, *, refresh: bool = False,
                             local_entry: str) -> tuple[Path, Any]:
    """``-k`` of an entry, the same in every family. ``release`` is what the entry downloads
    without ``-k`` (``Family.release_for``):

    * a named release (``release.entry == entry``): ``-k PATH`` is a copy of that release fetched
      by hand (a blocked download, an offline machine) and the release's facts still apply;
    * a default release (official entry names such as ``armhubert``): ``-k`` is any checkpoint of
      the family, and the release plays no part;
    * no release: ``-k`` is required.

    Returns the local path and the release whose facts apply (None for a checkpoint of one's own).
    """
    given = ckpt is not None and str(ckpt).strip() != ""
    if release is None or (given and release.entry != entry):
        return resolve_checkpoint(ckpt, refresh=refresh, local_entry=local_entry), None
    if given:
        return resolve_checkpoint(ckpt, refresh=refresh, local_entry=entry), release
    # a failed download names the release's own entry: there a copy fetched by hand keeps the facts
    path = resolve_checkpoint(release.url, refresh=refresh, local_entry=release.entry, filename=release.filename,
                              what=f"the {release.title} checkpoint")
    return path, release


# ---------------------------------------------------------------------------------------------
# Reading torch pickles
# ---------------------------------------------------------------------------------------------
class StandIn:
    """Inert replacement for a class found in a checkpoint but not trusted to be imported.

    Constructor arguments and pickled state are recorded but never acted upon. A foreign dict or
    list subclass (Lightning's ``AttributeDict``) is rebuilt as a plain ``dict``/``list`` instead
    (torch >= 2.10 fills only exact ones), the same on every torch.
    """

    _pickled_name = "?"

    def __init__(self, *args, **kwargs):  # called for REDUCE; keep the arguments only
        self.__dict__["pickle_args"] = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and (state[1] is None or isinstance(state[1], dict)):
            state, slots = state
            self.__dict__.update(slots or {})
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["pickle_state"] = state

    def __reduce__(self):  # re-saving a loaded checkpoint writes plain dicts
        return (dict, (dict(vars(self)),))

    def __repr__(self):
        return f"<stand-in for {self._pickled_name}: {vars(self)!r}>"


_STAND_INS: dict[tuple[str, str], type] = {}


def _plain(container: type):
    """``__new__`` of a stand-in for a foreign ``container`` subclass: an exact ``container``."""
    return staticmethod(lambda cls, *args, **kwargs: container())


def _stand_in_class(full_name: str, kind: str) -> type:
    """One class per pickled name: ``kind`` "object" (attributes recorded), "mapping" or "sequence"."""
    cls = _STAND_INS.get((full_name, kind))
    if cls is None:
        name = compat.STAND_IN_NAME.format(full_name)  # so the unpickler's rejections name the class
        body = {"_pickled_name": full_name, "__qualname__": name}
        if kind != "object":
            body["__new__"] = _plain(dict if kind == "mapping" else list)
        cls = _STAND_INS[(full_name, kind)] = type(name, (StandIn,), body)
    return cls


def _safe_global_for(full_name: str, containers: dict[str, str]):
    real = argparse.Namespace if full_name == "argparse.Namespace" else compat.numpy_global(full_name)
    if real is not None:
        return (real, full_name)
    return (_stand_in_class(full_name, containers.get(full_name, "object")), full_name)


def _torch_load(path: Path, mmap: bool) -> Any:
    """Weights-only load that admits the file's foreign globals as stand-ins (or safe real ones).

    Each refusal of the unpickler teaches one fact (a global to admit, or that a class is a dict or
    list subclass) and the load is tried again; a zip file lists its globals up front."""
    names: list[str] = []
    containers: dict[str, str] = {}  # pickled name -> "mapping" | "sequence"
    if zipfile.is_zipfile(path):
        try:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # older layouts inside a zip; the retry loop below still works
            names = []
    for _ in range(64):
        allowed = [_safe_global_for(n, containers) for n in names]
        if any(n.startswith("numpy") for n in names):
            allowed += compat.numpy_dtype_classes()
        with torch.serialization.safe_globals(allowed):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except Exception as error:
                rejection = compat.unpickler_rejection(error)
                if rejection is None:
                    raise
                kind, name = rejection
                if kind == "global" and name not in names:
                    names.append(name)
                elif kind != "global" and containers.get(name) != kind:
                    containers[name] = kind
                else:
                    raise
    raise CheckpointError(f"{path}: too many foreign classes in the pickle")


def _unpickling_reason(error: BaseException) -> str:
    """The unpickler's own reason, without torch's advice to load with ``weights_only=False``
    (running a checkpoint's code is exactly what the weights-only reader avoids)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return lines[0] if lines else type(error).__name__


def load_checkpoint(path: str | os.PathLike, *, family: str = "this model") -> Any:
    """Read a ``.pt``/``.pth``/``.ckpt`` pickle or a ``.safetensors`` file onto the CPU.

    Large zip-format files are memory-mapped, so only the tensors a caller keeps take RAM.
    """
    path = Path(path)
    if not path.exists():
        raise MissingCheckpointError(f"{family}: checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{family}: {path} is a folder; pass the checkpoint file inside it.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{family}: {path} is empty (0 bytes); download it again.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return _torch_load(path, mmap=zipfile.is_zipfile(path))
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(
            f"{family}: could not read {path} as a checkpoint ({type(error).__name__}: {_unpickling_reason(error)}). "
            "The file may be truncated or corrupted (download it again) or not a PyTorch checkpoint."
        ) from error


# ---------------------------------------------------------------------------------------------
# Telling families apart (each family's fingerprint lives in its formats.py; see family.py)
# ---------------------------------------------------------------------------------------------
def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Keys that start with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def detect_family(obj: Any) -> str | None:
    """Best guess of which model family a loaded checkpoint belongs to (None if unknown)."""
    from .family import detect_family as detect

    return detect(obj)


def check_family(obj: Any, expected: str | tuple[str, ...], path: str | os.PathLike, entry: str | None = None) -> None:
    """Raise a clear error when ``obj`` is recognisably another family's checkpoint."""
    allowed = (expected,) if isinstance(expected, str) else tuple(expected)
    found = detect_family(obj)
    if found is None or found in allowed:
        return
    here = f"-u {entry}" if entry else allowed[0]
    from .family import local_entry_of

    suggestion = local_entry_of(found)
    use = f"; load it with -u {suggestion}" if suggestion else ""
    raise CheckpointError(f"{path} looks like a {found} checkpoint, not {'/'.join(allowed)} ({here}){use}.")
