"""s3prl's ``run_pretrain.py`` runnable from any folder, with torch-2.x fixes.

Usage is exactly that of s3prl's runner::

    python -m s3prl_plugins.run_pretrain -u <recipe> -n my_run -p /abs/or/relative/expdir --device cpu

s3prl 0.4.18's pre-training runner imports its modules top-level (``from pretrain.runner import
Runner``) and finds recipes with ``os.listdir('pretrain/')``, so it only works with the s3prl
package folder as the working directory and only sees recipes inside it. This wrapper

* turns every path argument into an absolute one;
* runs from a temporary overlay of the s3prl package (symbolic links to its files, plus this
  package's recipes from :data:`s3prl_plugins.pretrain.S3PRL_RECIPES` under ``pretrain/``), so
  ``-u <recipe>`` works without ``install_into_s3prl.py`` and s3prl's files are never touched;
* allowlists s3prl's checkpoint classes for weights-only loading (``-e``/``-a`` resume);
* passes torchrun's ``LOCAL_RANK`` on.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import compat
from ._cli import reporting_errors, s3prl_package_dir, with_local_rank

PATH_FLAGS = ("-p", "--expdir", "-c", "--config", "-g", "--upstream_config", "-e", "--past_exp", "-i", "--init_ckpt")


def absolute_paths(argv: list[str], cwd: Path) -> list[str]:
    out = list(argv)
    for index, arg in enumerate(out):
        for flag in PATH_FLAGS:
            if arg == flag and index + 1 < len(out):
                out[index + 1] = str((cwd / out[index + 1]).resolve())
            elif arg.startswith(flag + "=") and flag.startswith("--"):
                out[index] = f"{flag}={(cwd / arg.split('=', 1)[1]).resolve()}"
    return out


def build_overlay(package: Path, recipes: dict, root: Path) -> Path:
    """A folder that looks like the s3prl package, with ``recipes`` added under ``pretrain/``."""
    for item in package.iterdir():
        if item.name not in ("pretrain", "__pycache__"):
            (root / item.name).symlink_to(item)
    (root / "pretrain").mkdir()
    for item in (package / "pretrain").iterdir():
        if item.name != "__pycache__":
            (root / "pretrain" / item.name).symlink_to(item)
    for name, recipe in recipes.items():
        folder = root / "pretrain" / name
        if folder.exists():  # installed by install_into_s3prl.py: use that one
            continue
        folder.mkdir()
        (folder / "pretrain_expert.py").write_text(recipe["expert_shim"])
        for file_name, source in recipe.get("files", {}).items():
            shutil.copyfile(source, folder / file_name)
    return root


def main(argv: list[str] | None = None) -> None:
    argv = with_local_rank(list(sys.argv[1:] if argv is None else argv))
    argv = absolute_paths(argv, Path.cwd())
    package = s3prl_package_dir()
    compat.apply()
    from .pretrain import S3PRL_RECIPES

    overlay = build_overlay(package, dict(S3PRL_RECIPES), Path(tempfile.mkdtemp(prefix="s3prl_overlay_")))
    os.chdir(overlay)
    sys.path.insert(0, str(overlay))
    sys.argv = [str(overlay / "run_pretrain.py"), *argv]
    try:
        import run_pretrain  # s3prl's script, importable now that the overlay is on sys.path

        with reporting_errors():
            run_pretrain.main()
    finally:
        os.chdir(tempfile.gettempdir())
        shutil.rmtree(overlay, ignore_errors=True)


if __name__ == "__main__":
    main()
