"""The official implementations, fetched at pinned commits, and their s3prl wrappers as s3prl calls them.

Nothing of the official code is in this repository: ``fetch`` clones each repository at its
pinned commit into a cache folder (default ``~/.cache/s3prl-plugins/official``,
``S3PRL_PLUGINS_OFFICIAL`` moves it) and prepares it as its README says (M2D: the MAE files and
``patch_m2d.diff``). Dasheng's official code is the ``dasheng`` package from PyPI.

    python benchmarks/official.py fetch                  # from github.com / raw.githubusercontent.com
    python benchmarks/official.py fetch --mirrors DIR    # from local git copies DIR/<owner>+<name>[/repo]
    python benchmarks/official.py check                  # import every official wrapper

The official code needs packages this project does not: ``fairseq`` (ARMHuBERT, MaskHuBERT,
STaRHuBERT; ``fairseq-fixed`` 0.12.3.1 is fairseq 0.12.2 made importable on Python 3.11),
``timm`` and ``einops`` (M2D). ``bash benchmarks/setup_official.sh`` makes a virtual environment
with them beside this package (see benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import types
import urllib.request
from pathlib import Path

#: repository -> pinned commit (the versions the parity notes in ../shared were checked against)
PINS = {
    "nttcslab/m2d": "f0c4128d4e89b1ab4e303f03141067b34aadf128",
    "sungnyun/ARMHuBERT": "e687addf71d826c202d73b61f6fc177a240c5027",
    "nervjack2/Speech-SSL-Compression": "a9726e5ffa070bd55eb2cbe86f02e231a0a7ef85",
}
#: single files the M2D README fetches into its checkout with curl before ``patch -p1 < patch_m2d.diff``
M2D_FILES = {
    "util/lars.py": ("facebookresearch/mae", "efb2a8062c206524e35e47d04501ed4f544c0ae8", "util/lars.py"),
    "util/lr_decay.py": ("facebookresearch/mae", "efb2a8062c206524e35e47d04501ed4f544c0ae8", "util/lr_decay.py"),
    "util/lr_sched.py": ("facebookresearch/mae", "efb2a8062c206524e35e47d04501ed4f544c0ae8", "util/lr_sched.py"),
    "util/misc.py": ("facebookresearch/mae", "efb2a8062c206524e35e47d04501ed4f544c0ae8", "util/misc.py"),
    "m2d/pos_embed.py": ("facebookresearch/mae", "efb2a8062c206524e35e47d04501ed4f544c0ae8", "util/pos_embed.py"),
    "train_audio.py": ("facebookresearch/mae", "efb2a8062c206524e35e47d04501ed4f544c0ae8", "main_pretrain.py"),
    "speech/train_speech.py": ("facebookresearch/mae", "efb2a8062c206524e35e47d04501ed4f544c0ae8", "main_pretrain.py"),
    "audioset/train_as.py": ("facebookresearch/mae", "efb2a8062c206524e35e47d04501ed4f544c0ae8", "main_pretrain.py"),
    "clap/train_clap.py": ("facebookresearch/mae", "efb2a8062c206524e35e47d04501ed4f544c0ae8", "main_pretrain.py"),
    "mae_train_audio.py": ("facebookresearch/mae", "efb2a8062c206524e35e47d04501ed4f544c0ae8", "main_pretrain.py"),
    "m2d/engine_pretrain_m2d.py": ("facebookresearch/mae", "efb2a8062c206524e35e47d04501ed4f544c0ae8",
                                   "engine_pretrain.py"),
    "m2d/models_mae.py": ("facebookresearch/mae", "efb2a8062c206524e35e47d04501ed4f544c0ae8", "models_mae.py"),
    "m2d/timm_layers_pos_embed.py": ("huggingface/pytorch-image-models", "e9373b1b925b2546706d78d25294de596bad4bfe",
                                     "timm/layers/pos_embed.py"),
}


def cache_root() -> Path:
    return Path(os.environ.get("S3PRL_PLUGINS_OFFICIAL", Path.home() / ".cache" / "s3prl-plugins" / "official"))


def checkout(repo: str) -> Path:
    return cache_root() / repo.replace("/", "+")


def _mirror(mirrors: Path | None, repo: str) -> Path | None:
    if mirrors is None:
        return None
    for candidate in (mirrors / repo.replace("/", "+") / "repo", mirrors / repo.replace("/", "+"), mirrors / repo):
        if candidate.exists():
            return candidate
    return None


def _git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _clone(repo: str, commit: str, mirrors: Path | None) -> Path:
    dest = checkout(repo)
    if dest.is_dir() and (dest / ".git").exists() and _git("rev-parse", "HEAD", cwd=dest).strip() == commit:
        print(f"{repo}: {dest} is at {commit[:7]}")
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    source = _mirror(mirrors, repo)
    url = str(source) if source else f"https://github.com/{repo}.git"
    print(f"{repo}: cloning {url} at {commit[:7]} into {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _git("clone", "--quiet", "--no-checkout", url, str(dest))
    _git("-c", "advice.detachedHead=false", "checkout", "--quiet", commit, cwd=dest)
    return dest


def _file(repo: str, commit: str, path: str, mirrors: Path | None) -> bytes:
    source = _mirror(mirrors, repo)
    if source is not None:
        git_dir = source if (source / "objects").is_dir() else source / ".git"
        return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"], check=True,
                              capture_output=True).stdout
    url = f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def fetch(mirrors: Path | None = None) -> None:
    for repo, commit in PINS.items():
        dest = _clone(repo, commit, mirrors)
        if repo == "nttcslab/m2d" and not (dest / "m2d" / "models_mae.py").exists():
            for target, (source_repo, source_commit, path) in M2D_FILES.items():
                (dest / target).parent.mkdir(parents=True, exist_ok=True)
                (dest / target).write_bytes(_file(source_repo, source_commit, path, mirrors))
            # util/analyze_repr.py (daisukelab/general-learning, unpinned) is used by training only
            subprocess.run(["patch", "-p1", "-s", "-i", "patch_m2d.diff"], cwd=dest, check=True)
            print(f"{repo}: MAE files fetched and patch_m2d.diff applied")
    print(f"official code ready in {cache_root()}")


# ---------------------------------------------------------------------------------------------
# The official wrappers, imported as s3prl imports an upstream
# ---------------------------------------------------------------------------------------------
def _overlay() -> Path:
    """``s3prl.upstream.<name>`` packages pointing at the official wrapper folders (the layout their
    READMEs ask for: the wrapper inside s3prl's ``upstream`` folder), without touching s3prl."""
    import s3prl.upstream

    folder = cache_root() / "s3prl_upstream_overlay"
    links = {
        "m2d_official": checkout("nttcslab/m2d") / "superb" / "upstream" / "m2d",
        "melhubert_official": checkout("nervjack2/Speech-SSL-Compression") / "s3prl_upstream",
        "armhubert_official": checkout("sungnyun/ARMHuBERT") / "models" / "armhubert",
        "maskhubert_official": checkout("sungnyun/ARMHuBERT") / "models" / "maskhubert",
        "starhubert_official": checkout("sungnyun/ARMHuBERT") / "models" / "starhubert",
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        if not target.is_dir():
            raise FileNotFoundError(f"{target} is missing: run `python benchmarks/official.py fetch` first")
        link = folder / name
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    # the M2D wrapper imports `.m2d.m2d.runtime_audio`: the whole M2D repository inside its folder
    inner = checkout("nttcslab/m2d") / "superb" / "upstream" / "m2d" / "m2d"
    if not inner.exists():
        inner.symlink_to(checkout("nttcslab/m2d"), target_is_directory=True)
    if str(folder) not in s3prl.upstream.__path__:
        s3prl.upstream.__path__.append(str(folder))
    return folder


def _compat_for_official() -> None:
    """Runtime settings the official code needs on today's stack (nothing of it is edited):
    full unpickling for its ``torch.load`` calls (torch >= 2.6 defaults to weights only), and a
    stand-in ``pytorch_lightning`` for the ``AttributeDict`` a Lightning checkpoint pickles."""
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        import pytorch_lightning  # noqa: F401
    except ImportError:
        parsing = types.ModuleType("pytorch_lightning.utilities.parsing")

        class AttributeDict(dict):
            def __getattr__(self, key):
                return self[key]

        parsing.AttributeDict = AttributeDict
        for name, module in (("pytorch_lightning", types.ModuleType("pytorch_lightning")),
                             ("pytorch_lightning.utilities", types.ModuleType("pytorch_lightning.utilities")),
                             ("pytorch_lightning.utilities.parsing", parsing)):
            sys.modules.setdefault(name, module)
    from s3prl_plugins import compat

    compat.apply()  # s3prl's own imports on today's torchaudio / huggingface_hub


def official_upstream(kind: str, ckpt: str, model_config: str | None = None, **options):
    """The official s3prl wrapper of ``kind`` built as s3prl's hub builds it.

    ``kind``: ``m2d`` (``ckpt`` = "file,mean,std"), ``melhubert`` (``options``: fp, mean_std_npy_path),
    ``armhubert``/``maskhubert``/``starhubert`` (``model_config`` = the training yaml), ``dasheng``
    (the pip package's model; its forward returns the last layer)."""
    _compat_for_official()
    if kind == "dasheng":
        # the package's own constructor of the variant (``dasheng_base(path)`` etc.): the released
        # files store their training configuration, not the architecture, so the heads come from it
        from dasheng.pretrained import pretrained

        return getattr(pretrained, options["variant"])(path=ckpt).eval()
    _overlay()
    if kind == "m2d":
        hubconf = importlib.import_module("s3prl.upstream.m2d_official.hubconf")
        return hubconf.m2d(ckpt=ckpt).eval()
    if kind == "melhubert":
        expert = importlib.import_module("s3prl.upstream.melhubert_official.expert")
        return expert.UpstreamExpert(ckpt, mode="melhubert", fp=options["fp"],
                                     mean_std_npy_path=options["mean_std_npy_path"]).eval()
    if kind in ("armhubert", "maskhubert", "starhubert"):
        expert = importlib.import_module(f"s3prl.upstream.{kind}_official.expert")
        return expert.UpstreamExpert(ckpt, model_config).eval()
    raise ValueError(f"unknown official kind {kind!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_parser = sub.add_parser("fetch", help="clone the official repositories at their pinned commits")
    fetch_parser.add_argument("--mirrors", type=Path, help="folder of local git copies named <owner>+<name>")
    sub.add_parser("check", help="import every official wrapper")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        fetch(args.mirrors)
        return 0
    _compat_for_official()
    _overlay()
    for name in ("m2d_official.expert", "melhubert_official.expert", "armhubert_official.expert",
                 "maskhubert_official.expert", "starhubert_official.expert"):
        importlib.import_module(f"s3prl.upstream.{name}")
        print(f"ok: s3prl.upstream.{name}")
    import dasheng.pretrained.pretrained  # noqa: F401

    print("ok: dasheng (pip)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
