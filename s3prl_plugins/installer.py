"""Register the plugin entries, task configs and pre-training recipes in an installed s3prl.

``python install_into_s3prl.py`` (or ``s3prl-plugins-install``) edits the installed s3prl:

* appends one marked, guarded block to ``<s3prl>/hub.py`` that imports :mod:`s3prl_plugins.hub`
  (a failing plugin logs a warning and leaves s3prl's own upstreams working);
* adds ``<s3prl>/downstream/<task>/config.yaml`` where the install lacks it (the PyPI s3prl ships
  none), never overwriting an existing file;
* adds ``<s3prl>/pretrain/<recipe>/`` shims for this package's pre-training recipes.

Every change is recorded in ``<s3prl>/.s3prl_plugins_manifest.json``; ``--uninstall`` restores
``hub.py`` byte for byte and removes exactly the files that were added. Running it twice changes
nothing the second time. All writes are atomic (temporary file + rename).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TESTED_S3PRL = "0.4.18"
MANIFEST = ".s3prl_plugins_manifest.json"
BACKUP_DIR = ".s3prl_plugins_backup"
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
CONFIG_ROOT = Path(__file__).resolve().parent / "s3prl_configs"


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
        raise InstallError(
            f"s3prl is not installed for {sys.executable}. Install it first: "
            f"pip install s3prl=={TESTED_S3PRL} (or run the README's install command)."
        )
    path = Path(list(spec.submodule_search_locations)[0]).resolve()
    if not (path / "hub.py").is_file():
        raise InstallError(f"found s3prl at {path}, but it has no hub.py; reinstall s3prl=={TESTED_S3PRL}.")
    return path


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def strip_block(text: bytes) -> tuple[bytes, bool]:
    """``text`` without our marked block (and the newline the installer added before it)."""
    begin, end = BEGIN.encode(), END.encode()
    start = text.find(begin)
    if start < 0:
        return text, False
    stop = text.find(end, start)
    if stop < 0:
        raise InstallError("hub.py holds the start marker of the s3prl-plugins block but not its end; fix it by hand.")
    stop += len(end)
    if text[stop:stop + 1] == b"\n":
        stop += 1
    return text[:start] + text[stop:], True


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


@dataclass
class Plan:
    package: Path
    writes: dict[Path, bytes] = field(default_factory=dict)  # path -> new content
    created: list[str] = field(default_factory=list)  # relative paths the install adds
    notes: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = []
        for path in self.writes:
            rel = path.relative_to(self.package)
            lines.append(("add " if str(rel) in self.created else "edit ") + str(rel))
        return lines + self.notes


def recipes() -> dict:
    """Pre-training recipes to expose to s3prl's run_pretrain.py (name -> files)."""
    from .pretrain import S3PRL_RECIPES

    return dict(S3PRL_RECIPES)


def plan_install(package: Path, manifest: dict | None) -> Plan:
    plan = Plan(package)
    hub = package / "hub.py"
    current = hub.read_bytes()
    original, had_block = strip_block(current)
    if had_block and manifest is None:
        plan.notes.append("hub.py had a block without a manifest: the block is rewritten")
    base = original if original.endswith(b"\n") or not original else original + b"\n"
    wanted = base + HUB_BLOCK.encode()
    if wanted != current:
        plan.writes[hub] = wanted
    previously = set((manifest or {}).get("created", []))
    for config in sorted(CONFIG_ROOT.glob("*/config.yaml")):
        task = config.parent.name
        target = package / "downstream" / task / "config.yaml"
        rel = str(target.relative_to(package))
        if not target.parent.is_dir():
            continue  # this s3prl has no such task
        if target.exists():
            if rel in previously and target.read_bytes() != config.read_bytes():
                plan.writes[target] = config.read_bytes()
                plan.created.append(rel)
            elif rel in previously:
                plan.created.append(rel)
            continue
        plan.writes[target] = config.read_bytes()
        plan.created.append(rel)
    for name, recipe in sorted(recipes().items()):
        folder = package / "pretrain" / name
        clashes = [d.name for d in (package / "pretrain").iterdir()
                   if d.is_dir() and d.name != name and name.startswith(d.name + "_")]
        if clashes:
            raise InstallError(f"recipe name {name!r} would clash with s3prl's pretrain/{clashes[0]} (prefix rule)")
        files = {"pretrain_expert.py": recipe["expert_shim"].encode(), **{
            fname: Path(src).read_bytes() for fname, src in recipe.get("files", {}).items()}}
        for fname, data in files.items():
            target = folder / fname
            rel = str(target.relative_to(package))
            if target.exists() and rel not in previously:
                raise InstallError(f"{target} exists and was not written by this installer; not overwriting it.")
            if not target.exists() or target.read_bytes() != data:
                plan.writes[target] = data
            plan.created.append(rel)
    return plan


def read_manifest(package: Path) -> dict | None:
    path = package / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InstallError(f"{path} is corrupted ({error}); restore hub.py from {package / BACKUP_DIR} by hand.")


def check_writable(package: Path, paths) -> None:
    for path in [package / "hub.py", *paths]:
        target = path if path.exists() else path.parent
        while not target.exists():
            target = target.parent
        if not os.access(target, os.W_OK):
            raise InstallError(
                f"cannot write {target}: this s3prl install is not writable by you. Use a virtual "
                "environment you own (see the README), or run with the permissions of its owner."
            )


def install(package: Path, *, dry_run: bool = False, force: bool = False, log=print) -> bool:
    version_file = package / "version.txt"
    version = version_file.read_text().strip() if version_file.exists() else "unknown"
    if version != TESTED_S3PRL:
        message = f"s3prl {version} at {package} is untested (this package is tested with {TESTED_S3PRL})"
        if not force:
            raise InstallError(message + "; install s3prl==0.4.18 or pass --force to install anyway.")
        log("warning: " + message)
    manifest = read_manifest(package)
    plan = plan_install(package, manifest)
    if not plan.writes and manifest is not None:
        log(f"s3prl-plugins is already installed in {package}; nothing changed.")
        return False
    log(("would change" if dry_run else "installing into") + f" {package}:")
    for line in plan.describe():
        log(f"  {line}")
    repo = git_checkout_of(package)
    if repo is not None:
        log(f"warning: {package} is inside the git checkout {repo}; the edits will show in `git status`.")
    if dry_run:
        return bool(plan.writes)
    check_writable(package, list(plan.writes))
    hub = package / "hub.py"
    backup = package / BACKUP_DIR / "hub.py.orig"
    if manifest is None:
        original_raw, _ = strip_block(hub.read_bytes())
        atomic_write(backup, original_raw)
        manifest = {"s3prl_version": version, "hub_sha256": sha256(original_raw), "created": []}
    created = sorted(set(manifest.get("created", [])) | set(plan.created))
    manifest["created"] = created
    # Manifest first: an interrupted install can always be undone.
    atomic_write(package / MANIFEST, json.dumps(manifest, indent=2).encode())
    for path, data in plan.writes.items():
        atomic_write(path, data)
    log(f"done: {len(plan.writes)} file(s) written; undo with `python install_into_s3prl.py --uninstall`.")
    return True


def uninstall(package: Path, *, dry_run: bool = False, log=print) -> bool:
    manifest = read_manifest(package)
    hub = package / "hub.py"
    current = hub.read_bytes()
    stripped, had_block = strip_block(current)
    if manifest is None and not had_block:
        log(f"s3prl-plugins is not installed in {package}; nothing to remove.")
        return False
    backup = package / BACKUP_DIR / "hub.py.orig"
    if manifest and backup.exists() and sha256(backup.read_bytes()) == manifest.get("hub_sha256"):
        restored = backup.read_bytes()
        if sha256(stripped.rstrip(b"\n")) != sha256(restored.rstrip(b"\n")):
            log("warning: hub.py was edited after the install; keeping those edits and removing only our block.")
            restored = stripped
    else:
        restored = stripped
    created = list((manifest or {}).get("created", []))
    log(("would remove" if dry_run else "removing") + f" s3prl-plugins from {package}:")
    log("  restore hub.py")
    for rel in created:
        log(f"  remove {rel}")
    if dry_run:
        return True
    if restored != current:
        atomic_write(hub, restored)
    for rel in created:
        path = package / rel
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != package and parent.is_dir() and not any(p for p in parent.iterdir() if p.name != "__pycache__"):
            for cache in parent.glob("__pycache__"):
                for item in cache.iterdir():
                    item.unlink()
                cache.rmdir()
            parent.rmdir()
            parent = parent.parent
    backup.unlink(missing_ok=True)
    if backup.parent.is_dir() and not any(backup.parent.iterdir()):
        backup.parent.rmdir()
    (package / MANIFEST).unlink(missing_ok=True)
    log("done: s3prl is back to its state before the install.")
    return True


CHECK_CODE = r"""
import json, sys, logging
logging.basicConfig(level=logging.WARNING)
import s3prl.hub as hub
from s3prl_plugins import hub as plugins
options = set(hub.options())
missing = [name for name in plugins.__all__ if name not in options or not callable(getattr(hub, name, None))]
print(json.dumps({"entries": len(plugins.__all__), "missing": missing, "s3prl_entries": len(options),
                  "failed": {k: repr(v) for k, v in plugins.FAILED_FAMILIES.items()}}))
"""


def check(package: Path, *, log=print) -> bool:
    """Verify in a fresh interpreter that ``s3prl.hub.options()`` lists every plugin entry."""
    if BEGIN.encode() not in (package / "hub.py").read_bytes():
        log(f"check failed: the s3prl-plugins block is not in {package / 'hub.py'}; run the installer.")
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
    log(f"check passed: s3prl.hub lists all {report['entries']} plugin entries "
        f"({report['s3prl_entries']} entries in total).")
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
    parser.add_argument("--force", action="store_true", help=f"install into an s3prl other than {TESTED_S3PRL}")
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


if __name__ == "__main__":
    sys.exit(main())
