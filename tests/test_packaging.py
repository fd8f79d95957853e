"""The wheel maps upstreams/ and pretrain/ into s3prl_plugins and carries the data files."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from s3prl_plugins import hub

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_layout(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    wheel = next(tmp_path.glob("s3prl_plugins-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert "upstreams" not in tops and "pretrain" not in tops, "must not install top-level upstreams/pretrain"
    for family in hub.FAMILIES:
        assert f"s3prl_plugins/upstreams/{family}/hubconf.py" in names, family
    assert "s3prl_plugins/pretrain/__init__.py" in names
    assert "s3prl_plugins/s3prl_configs/speech_commands/config.yaml" in names
    packaged = {n for n in names if n.startswith("s3prl_plugins/upstreams/")}
    for data in ROOT.glob("upstreams/**/*"):
        if data.suffix in (".npy", ".yaml", ".json") and "__pycache__" not in data.parts:
            assert "s3prl_plugins/" + data.relative_to(ROOT).as_posix() in packaged, data
    modules = {n for n in names if n.endswith(".py")}
    for source in ROOT.glob("upstreams/**/*.py"):
        if "__pycache__" not in source.parts:
            assert "s3prl_plugins/" + source.relative_to(ROOT).as_posix() in modules, f"{source} not packaged"
