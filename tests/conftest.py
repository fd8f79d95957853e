"""Shared fixtures: generated speech data, an isolated download cache, s3prl runs."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Named entries download into the cache; tests pre-place files there and never touch ~/.cache.
_CACHE = Path(tempfile.mkdtemp(prefix="s3prl_plugins_cache_"))
os.environ.setdefault("S3PRL_PLUGINS_CACHE_DIR", str(_CACHE))


@pytest.fixture(scope="session")
def cache_root() -> Path:
    return Path(os.environ["S3PRL_PLUGINS_CACHE_DIR"])


@pytest.fixture(scope="session")
def superb_data(tmp_path_factory) -> dict:
    """KS, IC, LibriSpeech-layout and noise data made with espeak-ng (about 10 s, once per run)."""
    from s3prl_plugins.data import make_all

    return make_all(tmp_path_factory.mktemp("superb_data"), seed=0)


@pytest.fixture
def s3prl_copy(tmp_path) -> Path:
    """A pristine copy of the installed s3prl package (setup.sh installs into the real one)."""
    import shutil

    from s3prl_plugins import installer
    from s3prl_plugins._cli import s3prl_package_dir

    target = tmp_path / "site" / "s3prl"
    shutil.copytree(s3prl_package_dir(), target, ignore=shutil.ignore_patterns("__pycache__"))
    installer.uninstall(target, log=lambda *_: None)
    assert installer.BEGIN not in (target / "hub.py").read_text()
    return target
