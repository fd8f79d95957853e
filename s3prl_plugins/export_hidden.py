"""Export any entry + checkpoint as a self-contained SUPERB hidden-set submission folder.

``python -m s3prl_plugins.export_hidden <entry> -k CKPT [-g CONFIG] -o OUTDIR`` writes::

    OUTDIR/expert.py           UpstreamExpert(ckpt="./model.pt"): the class the committee loads
    OUTDIR/model.pt            the built upstream (weights + configuration) and a probe output
    OUTDIR/requirements.txt    the third-party packages the code imports, pinned to this environment
    OUTDIR/<package>/          a private copy of the family's model code (plus the shared blocks)
    OUTDIR/check_expert.py     `python check_expert.py`: s3prl's upstream forward checks, standalone

The folder needs neither this package nor s3prl: ``expert.py`` imports the private copy by path,
and ``model.pt`` pickles the upstream built from that copy, so the classes it names live in the
folder. ``--check`` (on by default) runs ``check_expert.py`` in a fresh interpreter with site
packages but without this package, verifying what s3prl's ``test/test_upstream.py`` verifies
(deterministic eval output, stable layer count in train/eval mode, forward + backward on 0.05 s
inputs with batches of 1-3 and mixed lengths, frame counts) plus equality with the original
upstream on a stored probe.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import string
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Sequence

__all__ = ["ExportError", "export_hidden", "check_exported", "package_name", "main"]

UPSTREAMS_DIR = Path(__file__).resolve().parent.parent / "upstreams"
FORMAT = "s3prl_plugins.export_hidden/1"
#: files of a family folder that the exported model does not need
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "testing.py")
#: the programs written into the folder (package data: expert.py is a string.Template)
_PROGRAMS = Path(__file__).resolve().parent / "hidden_set"
_PROBE_SECONDS = 1.3
_PROBE_SEED = 1234


class ExportError(ValueError):
    """An export that cannot be made (unknown entry, existing folder, unpicklable model)."""


def package_name(entry: str) -> str:
    """The private package name inside the folder (unique per entry, so two exports can coexist)."""
    return "s3prl_hidden_" + re.sub(r"\W", "_", entry).lower()


def _upstreams_dir() -> Path:
    """The source folder of ``s3prl_plugins.upstreams`` (setuptools maps it from ``upstreams/``)."""
    spec = importlib.util.find_spec("s3prl_plugins.upstreams")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return UPSTREAMS_DIR


_COMPAT_IMPORT = re.compile(r"^from s3prl_plugins import compat$", re.M)


def _private_compat(target: Path) -> None:
    """The model code imports this package's version-dependent helpers as
    ``from s3prl_plugins import compat``; the private copy gets its own ``compat`` module instead."""
    shutil.copyfile(Path(__file__).resolve().parent / "compat.py", target / "compat.py")
    for path in target.glob("*/*.py"):
        text = path.read_text()
        if _COMPAT_IMPORT.search(text):
            path.write_text(_COMPAT_IMPORT.sub("from .. import compat", text))


def _family_closure(family: str, root: Path) -> list[str]:
    """``family`` and every sibling family it imports with ``from ..<other>`` (e.g. STaR -> ARM)."""
    needed, todo = [], [family]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.append(name)
        for path in (root / name).glob("*.py"):
            if path.name == "testing.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                    sibling = node.module.split(".")[0]
                    if sibling not in needed and (root / sibling).is_dir():
                        todo.append(sibling)
    return needed


def _third_party_imports(folder: Path) -> set[str]:
    """Top-level names of absolute imports in ``folder`` that are not standard library."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"}


def _requirements(modules: set[str]) -> list[str]:
    """``dist==version`` for each imported module (torch and torchaudio first)."""
    distributions = importlib.metadata.packages_distributions()
    lines = []
    for module in sorted(modules | {"torch"}, key=lambda m: (m not in ("torch", "torchaudio"), m)):
        for dist in distributions.get(module, [module]):
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                lines.append(dist)
                continue
            base = version.split("+")[0]  # local build tags (+cpu, +cu128) are not on PyPI
            lines.append(f"{dist}=={base}")
    return list(dict.fromkeys(lines))





def _probe(model) -> dict:
    import torch

    generator = torch.Generator().manual_seed(_PROBE_SEED)
    wav = torch.randn(int(_PROBE_SECONDS * 16000), generator=generator)
    model.eval()
    with torch.no_grad():
        states = model([wav])["hidden_states"]
    return {"wav": wav, "hidden_states": [h.detach().cpu().float().clone() for h in states]}


def _import_private(package: str, folder: Path):
    spec = importlib.util.spec_from_file_location(package, folder / package / "__init__.py",
                                                  submodule_search_locations=[str(folder / package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    spec.loader.exec_module(module)
    return module


def _forget(package: str) -> None:
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]


def export_hidden(entry: str, out_dir: str | Path, *, ckpt: str | None = None, model_config: str | None = None,
                  refresh: bool = False, overwrite: bool = False) -> Path:
    """Write the submission folder for ``entry`` (see the module docstring); returns ``out_dir``."""
    import torch

    from . import hub

    if entry not in hub.__all__:
        raise ExportError(f"unknown entry {entry!r}; the plugin entries are: {', '.join(hub.__all__)}")
    family = hub.ENTRY_FAMILY[entry]
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportError(f"{out_dir} exists and is not empty; pass --overwrite or choose another -o folder")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    root = _upstreams_dir()
    package = package_name(entry)
    target = out_dir / package
    target.mkdir()
    (target / "__init__.py").write_text(f'"""Model code of {entry} (a private copy of s3prl-plugins\' '
                                        f'{family} family; imported by ../expert.py)."""\n')
    for name in ["common", *(f for f in _family_closure(family, root) if f != "common")]:
        shutil.copytree(root / name, target / name, ignore=_SKIP)
    _private_compat(target)

    _forget(package)
    try:
        private = _import_private(package, out_dir)
        hubconf = importlib.import_module(f"{package}.{family}.hubconf")
        upstream = getattr(hubconf, entry)(ckpt=ckpt, model_config=model_config, refresh=refresh)
        upstream = upstream.cpu().eval()
        payload = {"format": FORMAT, "entry": entry, "family": family, "upstream": upstream,
                   "probe": _probe(upstream)}
        try:
            torch.save(payload, out_dir / "model.pt")
        except (TypeError, AttributeError, RuntimeError) as error:  # pickling failures
            raise ExportError(f"the {entry} upstream cannot be pickled ({error}); report this as a bug of the "
                              f"{family} family") from error
        del private
    finally:
        _forget(package)

    expert = string.Template((_PROGRAMS / "expert.py").read_text())
    (out_dir / "expert.py").write_text(expert.substitute(entry=entry, package=package, format=FORMAT))
    shutil.copyfile(_PROGRAMS / "check_expert.py", out_dir / "check_expert.py")
    requirements = _requirements(_third_party_imports(target))
    (out_dir / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return out_dir


def _site_packages() -> list[str]:
    """Where torch and the other requirements live (not where this package does)."""
    import torch

    here = str(Path(__file__).resolve().parent.parent)
    paths = [str(Path(torch.__file__).resolve().parent.parent)]
    import site

    paths += [p for p in site.getsitepackages() if p not in paths]
    return [p for p in paths if Path(p).resolve() != Path(here).resolve()]


def check_exported(out_dir: str | Path, *, timeout: float = 600) -> str:
    """Run ``check_expert.py`` in a fresh ``python -S`` interpreter in which this package is not
    importable (site-packages on the path, but no .pth hooks such as an editable install's);
    returns its output, raises :class:`ExportError` on failure."""
    out_dir = Path(out_dir).resolve()
    bootstrap = textwrap.dedent(f"""
        import importlib.abc, importlib.util, runpy, sys

        class _NoPlugins(importlib.abc.MetaPathFinder):  # even if it sits in site-packages
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "s3prl_plugins":
                    raise ModuleNotFoundError("s3prl_plugins is blocked in the hidden-set check")
                return None

        sys.path[:] = [p for p in sys.path if p not in ("", {str(Path.cwd())!r})] + {_site_packages()!r}
        sys.meta_path.insert(0, _NoPlugins())
        try:
            importlib.util.find_spec("s3prl_plugins")
            sys.exit("s3prl_plugins is importable in the check interpreter; the check would prove nothing")
        except ModuleNotFoundError:
            pass
        runpy.run_path({str(out_dir / 'check_expert.py')!r}, run_name="__main__")
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME")}
    env.setdefault("OMP_NUM_THREADS", "1")
    result = subprocess.run([sys.executable, "-S", "-c", bootstrap], cwd=str(out_dir), capture_output=True,
                            text=True, timeout=timeout, env=env)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise ExportError(f"the exported folder {out_dir} failed its checks:\n{output[-4000:]}")
    return output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m s3prl_plugins.export_hidden",
        description="Write a self-contained SUPERB hidden-set folder (expert.py, model.pt, requirements.txt, "
                    "the model code, check_expert.py) for an entry and checkpoint, then check it in a fresh "
                    "interpreter without s3prl-plugins.",
        epilog="example:\n  python -m s3prl_plugins.export_hidden melhubert_local -k melhubert.ckpt -o hidden_set\n"
               "  (then: cd hidden_set && python check_expert.py; upload the folder to your private HF repo)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entry", help="plugin entry name as given to run_downstream.py -u")
    parser.add_argument("-k", "--ckpt", help="checkpoint, as run_downstream.py -k")
    parser.add_argument("-g", "--model_config", help="model config yaml, as run_downstream.py -g")
    parser.add_argument("-r", "--refresh", action="store_true", help="download the checkpoint again")
    parser.add_argument("-o", "--output", required=True, help="folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the forward checks in a fresh interpreter")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        folder = export_hidden(args.entry, args.output, ckpt=args.ckpt, model_config=args.model_config,
                               refresh=args.refresh, overwrite=args.overwrite)
        print(f"wrote {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))
        if args.check:
            print(check_exported(folder), end="")
    except (ExportError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
