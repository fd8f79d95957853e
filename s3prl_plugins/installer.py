"""Register the plugin entries, task configs and pre-training recipes in an installed s3prl.

``python install_into_s3prl.py`` (or ``s3prl-plugins-install``) edits the installed s3prl (the PyPI
``s3prl`` 0.4.18 or ESPnet's fork ``espnet-s3prl``, told apart by their distribution metadata):

* appends one marked, guarded block to ``<s3prl>/hub.py`` that imports :mod:`s3prl_plugins.hub`
  (a failing plugin prints a warning and leaves s3prl's own upstreams working);
* puts one marked, guarded block at the top of ``<s3prl>/__init__.py``, ``run_pretrain.py`` and
  ``run_downstream.py`` (the files s3prl loads first) that applies :func:`s3prl_plugins.compat.apply`: the torchaudio >= 2.9,
  huggingface_hub >= 1 and catalyst shims, and the weights-only allowlist of s3prl's checkpoints;
* adds ``<s3prl>/downstream/<task>/config.yaml`` where the install lacks it (the PyPI s3prl ships
  none), never overwriting an existing file;
* adds ``<s3prl>/pretrain/<recipe>/`` shims for this package's pre-training recipes.

Every change is recorded in ``<s3prl>/.s3prl_plugins_manifest.json`` (with the hash of each file
written) before it is made; ``--uninstall`` restores each edited file byte for byte and removes
exactly the files that were added. A file that changed since it was written is the user's: it is
never overwritten or removed. Running it twice changes nothing the second time. All writes are
atomic (a temporary file with a fixed name, then a rename); a later run removes any temporary file
an interrupted one left.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import compat

MANIFEST = ".s3prl_plugins_manifest.json"
BACKUP_DIR = ".s3prl_plugins_backup"
TMP_SUFFIX = ".s3prl-plugins.tmp"
BEGIN = "# >>> s3prl-plugins >>> (added by install_into_s3prl.py; undo with --uninstall)"
END = "# <<< s3prl-plugins <<<"
HUB_BLOCK = f"""{BEGIN}
try:
    from s3prl_plugins.hub import *  # noqa: F401,F403
except Exception as _s3prl_plugins_error:  # a broken plugin must not break s3prl's own upstreams
    import sys as _s3prl_plugins_sys
    print(f"WARNING s3prl-plugins entries not loaded: {{_s3prl_plugins_error!r}}", file=_s3prl_plugins_sys.stderr)
{END}
"""
COMPAT_BEGIN = "# >>> s3prl-plugins compat >>> (added by install_into_s3prl.py; undo with --uninstall)"
COMPAT_END = "# <<< s3prl-plugins compat <<<"
COMPAT_BLOCK = f"""{COMPAT_BEGIN}
try:  # torchaudio >= 2.9 / huggingface_hub >= 1 / catalyst shims, weights-only allowlist (no-ops where not needed)
    import s3prl_plugins.compat as _s3prl_plugins_compat
    _s3prl_plugins_compat.apply()
    del _s3prl_plugins_compat
except Exception as _s3prl_plugins_error:
    import sys as _s3prl_plugins_sys
    print(f"WARNING s3prl-plugins compat shims not applied: {{_s3prl_plugins_error!r}}", file=_s3prl_plugins_sys.stderr)
{COMPAT_END}
"""


@dataclass(frozen=True)
class MarkedEdit:
    """A block the installer puts into one of s3prl's own files."""

    rel: str
    block: str
    begin: str
    end: str
    at_top: bool  # after a leading shebang/encoding line; else appended


MARKED_EDITS = (
    MarkedEdit("__init__.py", COMPAT_BLOCK, COMPAT_BEGIN, COMPAT_END, at_top=True),
    MarkedEdit("run_pretrain.py", COMPAT_BLOCK, COMPAT_BEGIN, COMPAT_END, at_top=True),
    # ESPnet's fork imports huggingface_hub in run_downstream.py before anything of s3prl
    MarkedEdit("run_downstream.py", COMPAT_BLOCK, COMPAT_BEGIN, COMPAT_END, at_top=True),
    MarkedEdit("hub.py", HUB_BLOCK, BEGIN, END, at_top=False),
)
CONFIG_ROOT = Path(__file__).resolve().parent / "s3prl_configs"
INSTALL_HINT = ("pip install 's3prl-plugins[s3prl]' (the PyPI s3prl 0.4.18) or pip install espnet-s3prl "
                "(ESPnet's fork), then run this again")


class InstallError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
def find_s3prl(explicit: str | None = None) -> Path:
    """The s3prl package folder (wheel, editable install or clone), without importing s3prl.hub."""
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if not (path / "hub.py").is_file():
            raise InstallError(f"{path} is not an s3prl package folder (no hub.py there).")
        return path
    spec = importlib.util.find_spec("s3prl")
    if spec is None or not spec.submodule_search_locations:
        raise InstallError(f"s3prl is not installed for {sys.executable}. Install it first: {INSTALL_HINT}.")
    path = Path(list(spec.submodule_search_locations)[0]).resolve()
    if not (path / "hub.py").is_file():
        raise InstallError(f"found s3prl at {path}, but it has no hub.py; reinstall it: {INSTALL_HINT}.")
    return path


def temporary_path(path: Path) -> Path:
    """The one temporary name used for ``path``: a killed run leaves it where the next run looks."""
    return path.with_name(f".{path.name}{TMP_SUFFIX}")


def atomic_write(path: Path, data: bytes) -> None:
    """Write via the one temporary name of ``path``, then rename: never a half-written file, and a
    killed run's leftover is where the next run looks (the permissions of a file it replaces kept)."""
    from .upstreams.common.files import atomic_write as write

    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    write(path, data, temporary=temporary_path(path), mode=mode)


def remove_leftovers(package: Path) -> list[Path]:
    """Temporary files that a killed run of the installer left in the s3prl tree."""
    found = [p for p in package.rglob(f".*{TMP_SUFFIX}") if p.is_file()]
    for path in found:
        path.unlink()
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def strip_block(text: bytes, begin: str = BEGIN, end: str = END) -> tuple[bytes, bool]:
    """``text`` without the marked block (and the newline the installer added after it)."""
    start = text.find(begin.encode())
    if start < 0:
        return text, False
    stop = text.find(end.encode(), start)
    if stop < 0:
        raise InstallError(f"a file holds the start marker {begin!r} but not its end; remove the block by hand.")
    stop += len(end)
    if text[stop:stop + 1] == b"\n":
        stop += 1
    return text[:start] + text[stop:], True


def block_of(text: bytes, begin: str, end: str) -> bytes | None:
    """The marked block as it stands in ``text`` (None if absent)."""
    stripped, found = strip_block(text, begin, end)
    if not found:
        return None
    start = text.find(begin.encode())
    return text[start:start + len(text) - len(stripped)]


def with_block(original: bytes, edit: MarkedEdit) -> bytes:
    if not edit.at_top:
        base = original if original.endswith(b"\n") or not original else original + b"\n"
        return base + edit.block.encode()
    lines = original.splitlines(keepends=True)
    head = 0  # keep a shebang and an encoding declaration on the first lines
    while head < min(2, len(lines)) and (lines[head].startswith(b"#!") or b"coding" in lines[head][:40]
                                         and lines[head].startswith(b"#")):
        head += 1
    if head and not lines[head - 1].endswith(b"\n"):
        lines[head - 1] += b"\n"
    return b"".join(lines[:head]) + edit.block.encode() + b"".join(lines[head:])


def git_checkout_of(path: Path) -> Path | None:
    """The git work tree that tracks ``path`` (None if none, or if the tree ignores it)."""
    for parent in [path, *path.parents]:
        if (parent / ".git").exists():
            try:
                ignored = subprocess.run(["git", "-C", str(parent), "check-ignore", "-q", str(path)],
                                         capture_output=True, timeout=30).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ignored = False
            return None if ignored else parent
    return None


# ---------------------------------------------------------------------------------------------
# What we ship, and the manifest of what was done
# ---------------------------------------------------------------------------------------------
def recipes() -> dict:
    """Pre-training recipes to expose to s3prl's run_pretrain.py (name -> files)."""
    from .pretrain import S3PRL_RECIPES

    return dict(S3PRL_RECIPES)


def shipped_files(package: Path) -> dict[str, bytes]:
    """Every file the install may add: relative path -> content."""
    files: dict[str, bytes] = {}
    for config in sorted(CONFIG_ROOT.glob("*/config.yaml")):
        if (package / "downstream" / config.parent.name).is_dir():  # else this s3prl has no such task
            files[f"downstream/{config.parent.name}/config.yaml"] = config.read_bytes()
    for name, recipe in sorted(recipes().items()):
        clashes = [d.name for d in (package / "pretrain").iterdir()
                   if d.is_dir() and d.name != name and name.startswith(d.name + "_")]
        if clashes:
            raise InstallError(f"recipe name {name!r} would clash with s3prl's pretrain/{clashes[0]} (prefix rule)")
        files[f"pretrain/{name}/pretrain_expert.py"] = recipe["expert_shim"].encode()
        for file_name, source in recipe.get("files", {}).items():
            files[f"pretrain/{name}/{file_name}"] = Path(source).read_bytes()
    return files


def read_manifest(package: Path) -> dict | None:
    """The manifest, in the current layout (an older install's layout is converted)."""
    path = package / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InstallError(f"{path} is corrupted ({error}); restore the edited files from {package / BACKUP_DIR} "
                           "by hand.")
    if "edited" not in manifest:  # written before the compat blocks: hub.py only, created as a list
        manifest = {"provider": manifest.get("s3prl_version", "?"), "edited": {"hub.py": manifest.get("hub_sha256")},
                    "created": {rel: None for rel in manifest.get("created", [])}}
    return manifest


def ours(path: Path, recorded: str | None, shipped: bytes | None) -> bool:
    """Whether an added file is still what the installer wrote (else the user changed it)."""
    data = path.read_bytes()
    return sha256(data) == recorded if recorded else data == shipped


@dataclass
class Plan:
    package: Path
    writes: dict[Path, bytes] = field(default_factory=dict)  # path -> new content
    created: dict[str, str] = field(default_factory=dict)  # added file -> sha256 of its content
    blocks: dict[str, str] = field(default_factory=dict)  # edited file -> sha256 of our block in it
    notes: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = []
        for path in self.writes:
            rel = str(path.relative_to(self.package))
            lines.append(("add " if rel in self.created else "edit ") + rel)
        return lines + self.notes


def plan_install(package: Path, manifest: dict | None) -> Plan:
    plan = Plan(package)
    written_blocks = (manifest or {}).get("blocks", {})
    for edit in MARKED_EDITS:
        target = package / edit.rel
        if not target.is_file():
            continue
        current = target.read_bytes()
        present = block_of(current, edit.begin, edit.end)
        if present is not None and present != edit.block.encode() and edit.rel in written_blocks \
                and sha256(present) != written_blocks[edit.rel]:
            plan.notes.append(f"keep {edit.rel}: its s3prl-plugins block was edited since the install, so the "
                              "edit is yours (remove the block to get this version's)")
            continue
        original, _ = strip_block(current, edit.begin, edit.end)
        wanted = with_block(original, edit)
        if wanted != current:
            plan.writes[target] = wanted
        plan.blocks[edit.rel] = sha256(edit.block.encode())
    previously = (manifest or {}).get("created", {})
    for rel, data in shipped_files(package).items():
        target = package / rel
        if rel in previously:
            if not target.exists():
                plan.writes[target] = data
            elif not ours(target, previously[rel], data):
                plan.notes.append(f"keep {rel}: changed since it was installed, so it is yours now "
                                  "(delete it to get this package's version)")
                continue
            elif target.read_bytes() != data:
                plan.writes[target] = data
            plan.created[rel] = sha256(data)
        elif target.exists():
            if rel.startswith("pretrain/") and target.read_bytes() != data:
                raise InstallError(f"{target} exists and was not written by this installer; not overwriting it.")
            if rel.startswith("downstream/"):
                continue  # s3prl's own (or the user's) task config: never touched
            plan.created[rel] = sha256(data)  # identical to ours: adopt it
        else:
            plan.writes[target] = data
            plan.created[rel] = sha256(data)
    return plan


def check_writable(package: Path, paths) -> None:
    for path in [package / "hub.py", package / MANIFEST, *paths]:
        target = path if path.exists() else path.parent
        while not target.exists():
            target = target.parent
        if not os.access(target, os.W_OK):
            raise InstallError(
                f"cannot write {target}: this s3prl install is not writable by you. Use a virtual "
                "environment you own (see the README), or run with the permissions of its owner."
            )


def check_provider(package: Path, force: bool, log) -> compat.S3prlProvider:
    provider = compat.s3prl_provider(package)
    if not provider.tested:
        tested = ", ".join(f"{name} {'/'.join(versions)}" for name, versions in compat.TESTED_PROVIDERS.items())
        message = f"{provider} at {package} is untested (this package is tested with {tested})"
        if not force:
            raise InstallError(message + f"; install a tested one ({INSTALL_HINT}) or pass --force to install anyway.")
        log("warning: " + message)
    return provider


def install(package: Path, *, dry_run: bool = False, force: bool = False, log=print) -> bool:
    provider = check_provider(package, force, log)
    manifest = read_manifest(package)
    plan = plan_install(package, manifest)
    leftovers = [] if dry_run else remove_leftovers(package)
    for path in leftovers:
        log(f"removed {path.relative_to(package)} (left by an interrupted run)")
    if not plan.writes and manifest is not None and set(plan.created) <= set(manifest.get("created", {})) \
            and set(plan.blocks) <= set(manifest.get("blocks", {})):
        for note in plan.notes:
            log(f"  {note}")
        log(f"s3prl-plugins is already installed in {package} ({provider}); nothing changed.")
        return bool(leftovers)
    log(("would change" if dry_run else "installing into") + f" {package} ({provider}):")
    for line in plan.describe():
        log(f"  {line}")
    repo = git_checkout_of(package)
    if repo is not None:
        log(f"warning: {package} is inside the git checkout {repo}; the edits will show in `git status`.")
    if dry_run:
        return bool(plan.writes)
    check_writable(package, list(plan.writes))
    if manifest is None:
        manifest = {"provider": str(provider), "edited": {}, "created": {}}
    for edit in MARKED_EDITS:  # back up each original before its first edit
        target = package / edit.rel
        if target in plan.writes and edit.rel not in manifest["edited"]:
            original, _ = strip_block(target.read_bytes(), edit.begin, edit.end)
            atomic_write(package / BACKUP_DIR / f"{edit.rel}.orig", original)
            manifest["edited"][edit.rel] = sha256(original)
    manifest["created"] = {**manifest.get("created", {}), **plan.created}
    manifest["blocks"] = {**manifest.get("blocks", {}), **plan.blocks}
    # Manifest first: an interrupted install can always be undone.
    atomic_write(package / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    for path, data in plan.writes.items():
        atomic_write(path, data)
    log(f"done: {len(plan.writes)} file(s) written; undo with `python install_into_s3prl.py --uninstall`.")
    return True


def _remove_empty_parents(path: Path, package: Path) -> None:
    parent = path.parent
    while parent != package and parent.is_dir() and not any(p for p in parent.iterdir() if p.name != "__pycache__"):
        for cache in parent.glob("__pycache__"):
            for item in cache.iterdir():
                item.unlink()
            cache.rmdir()
        parent.rmdir()
        parent = parent.parent


def _remove_backups(package: Path) -> None:
    for edit in MARKED_EDITS:
        (package / BACKUP_DIR / f"{edit.rel}.orig").unlink(missing_ok=True)
    backup_dir = package / BACKUP_DIR
    if backup_dir.is_dir() and not any(backup_dir.iterdir()):
        backup_dir.rmdir()


def _our_blocks(package: Path, manifest: dict | None, log) -> dict[str, tuple[Path, bytes, bytes]]:
    """Files with our marked block: rel -> (path, current bytes, bytes without the block); a block
    edited since the install is the user's and left."""
    edits = {}
    for edit in MARKED_EDITS:
        target = package / edit.rel
        if not target.is_file():
            continue
        current = target.read_bytes()
        stripped, found = strip_block(current, edit.begin, edit.end)
        recorded_block = (manifest or {}).get("blocks", {}).get(edit.rel)
        if found and recorded_block and sha256(block_of(current, edit.begin, edit.end)) != recorded_block:
            log(f"  keep {edit.rel}: its s3prl-plugins block was edited since the install; remove it by hand")
            continue
        if found:
            edits[edit.rel] = (target, current, stripped)
    return edits


def _undo_interrupted(package: Path, dry_run: bool, log) -> bool:
    """No manifest and no block: an install killed before its manifest leaves at most a temporary
    file and backups."""
    stray = ([] if dry_run else remove_leftovers(package)) + [
        p for p in (package / BACKUP_DIR / f"{e.rel}.orig" for e in MARKED_EDITS) if p.is_file()]
    if not dry_run:
        _remove_backups(package)
    if stray:
        log(f"removed what an interrupted install left in {package}: "
            + ", ".join(str(p.relative_to(package)) for p in stray))
        return True
    log(f"s3prl-plugins is not installed in {package}; nothing to remove.")
    return False


def _restores(package: Path, manifest: dict | None, edits: dict, unverified: list[str], log) -> dict[Path, bytes]:
    """The bytes each edited file goes back to: its backup when nothing else changed, else the
    file without our block."""
    restores: dict[Path, bytes] = {}
    for rel, (target, _, stripped) in edits.items():
        backup = package / BACKUP_DIR / f"{rel}.orig"
        recorded = (manifest or {}).get("edited", {}).get(rel)
        restored = stripped
        if backup.exists() and (manifest is None or sha256(backup.read_bytes()) == recorded):
            if stripped.rstrip(b"\n") == backup.read_bytes().rstrip(b"\n"):
                restored = backup.read_bytes()  # byte for byte, trailing newline included
            else:
                log(f"warning: {rel} was edited after the install; keeping those edits and removing only our block.")
        else:
            unverified.append(f"{rel} (no backup to compare with: only our block is removed)")
        restores[target] = restored
    return restores


def _added_files(package: Path, manifest: dict | None, unverified: list[str]) -> tuple[list[Path], list[str]]:
    """(files to remove, files changed since the install and therefore kept)."""
    if manifest is not None:
        created = dict(manifest.get("created", {}))
    else:  # no manifest: our added files are the ones whose content is exactly what we ship
        created = {rel: None for rel, data in shipped_files(package).items()
                   if (package / rel).is_file() and (package / rel).read_bytes() == data}
        unverified.append("the manifest is missing: added files are recognised by their content only; a file "
                          "changed since the install cannot be told from s3prl's own and is left")
    shipped = shipped_files(package) if any(v is None for v in created.values()) else {}
    removes, kept = [], []
    for rel, recorded in created.items():
        path = package / rel
        if not path.exists():
            continue
        if ours(path, recorded, shipped.get(rel)):
            removes.append(path)
        else:
            kept.append(rel)
    return removes, kept


def uninstall(package: Path, *, dry_run: bool = False, log=print) -> bool:
    manifest = read_manifest(package)
    edits = _our_blocks(package, manifest, log)
    if manifest is None and not edits:
        return _undo_interrupted(package, dry_run, log)
    unverified: list[str] = []
    restores = _restores(package, manifest, edits, unverified, log)
    removes, kept = _added_files(package, manifest, unverified)
    log(("would remove" if dry_run else "removing") + f" s3prl-plugins from {package}:")
    for target in restores:
        log(f"  restore {target.relative_to(package)}")
    for path in removes:
        log(f"  remove {path.relative_to(package)}")
    for rel in kept:
        log(f"  keep {rel}: changed since it was installed, so it is yours")
    if dry_run:
        return True
    check_writable(package, [*restores, *removes])
    remove_leftovers(package)
    for target, data in restores.items():
        if data != target.read_bytes():
            atomic_write(target, data)
    for path in removes:
        path.unlink()
        _remove_empty_parents(path, package)
    _remove_backups(package)
    (package / MANIFEST).unlink(missing_ok=True)
    if unverified or kept:
        for line in unverified:
            log(f"note: {line}")
        log("done: s3prl-plugins removed; s3prl is back to its state before the install except where noted above.")
    else:
        log("done: s3prl is back to its state before the install.")
    return True


CHECK_CODE = r"""
import json, sys, logging
logging.basicConfig(level=logging.WARNING)
import s3prl.hub as hub
from s3prl_plugins import hub as plugins
import s3prl_plugins.compat as s3prl_plugins_compat
options = set(hub.options())
missing = [name for name in plugins.__all__ if name not in options or not callable(getattr(hub, name, None))]
print(json.dumps({"entries": len(plugins.__all__), "missing": missing, "s3prl_entries": len(options),
                  "shims": {k: v for k, v in s3prl_plugins_compat.apply().items() if v},
                  "failed": {k: repr(v) for k, v in plugins.FAILED_FAMILIES.items()}}))
"""


def check(package: Path, *, log=print) -> bool:
    """Verify in a fresh interpreter that ``s3prl.hub.options()`` lists every plugin entry."""
    for edit in MARKED_EDITS:
        target = package / edit.rel
        if target.is_file() and edit.begin.encode() not in target.read_bytes():
            log(f"check failed: the s3prl-plugins block is not in {target}; run the installer.")
            return False
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package.parent), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", CHECK_CODE], capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        log("check failed: `import s3prl.hub` raised:\n" + result.stderr[-3000:])
        return False
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if report["failed"]:
        log(f"check failed: families not loaded: {report['failed']}")
        return False
    if report["missing"] or report["entries"] == 0:
        log(f"check failed: s3prl.hub does not list {report['missing'] or 'any plugin entry'}")
        return False
    shims = "; ".join(f"{k}: {', '.join(v)}" for k, v in report["shims"].items()) or "none needed"
    log(f"check passed: s3prl.hub lists all {report['entries']} plugin entries "
        f"({report['s3prl_entries']} entries in total); compat shims: {shims}.")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="install_into_s3prl.py",
        description="Register the s3prl-plugins upstreams, task configs and pre-training recipes in the "
                    "installed s3prl (idempotent; --uninstall restores every file).",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--uninstall", action="store_true", help="remove everything the install added")
    action.add_argument("--check", action="store_true", help="verify in a subprocess that s3prl.hub lists our entries")
    parser.add_argument("--dry-run", action="store_true", help="print what would change and change nothing")
    parser.add_argument("--s3prl-dir", help="the s3prl package folder to edit (default: the importable s3prl)")
    parser.add_argument("--force", action="store_true", help="install into an s3prl version this package is not tested with")
    args = parser.parse_args(argv)
    try:
        package = find_s3prl(args.s3prl_dir)
        if args.check:
            return 0 if check(package) else 1
        if args.uninstall:
            uninstall(package, dry_run=args.dry_run)
            return 0
        install(package, dry_run=args.dry_run, force=args.force)
        if not args.dry_run:
            return 0 if check(package) else 1
        return 0
    except InstallError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except PermissionError as error:  # the same refusal for every command, whichever file it met first
        print(f"error: cannot write {error.filename}: this s3prl install is not writable by you. Use a virtual "
              "environment you own (see the README), or run with the permissions of its owner.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
