"""Hidden-set export: the folder loads and passes s3prl's forward checks without s3prl_plugins."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from s3prl_plugins import export_hidden as export
from s3prl_plugins import hub
from s3prl_plugins.export_hidden import ExportError, check_exported, export_hidden

# What the committee's fresh environment looks like: torch & co. installed, this package not. -S
# skips site (and with it any editable-install .pth hook); only torch's site-packages is added.
_LOAD_ALONE = r"""
import importlib.util, json, sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")] + [SITE]
assert importlib.util.find_spec("s3prl_plugins") is None, "s3prl_plugins must not be importable here"
import torch
spec = importlib.util.spec_from_file_location("expert", FOLDER + "/expert.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = module.UpstreamExpert(ckpt="./model.pt").eval()
wavs = torch.load(FOLDER + "/../wavs.pt")
with torch.no_grad():
    out = model(wavs)
torch.save([h for h in out["hidden_states"]], FOLDER + "/../exported_states.pt")
print(json.dumps({"rate": model.get_downsample_rates("hidden_states"),
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("s3prl", "s3prl_plugins"))}))
"""


def _make(entry: str, directory: Path) -> dict:
    family = hub.ENTRY_FAMILY[entry]
    return importlib.import_module(f"s3prl_plugins.upstreams.{family}.testing").make_checkpoint(entry, directory)


@pytest.mark.parametrize("entry", ["starhubert_local", "m2d_local"])
def test_export_loads_alone_and_matches(entry, tmp_path):
    paths = _make(entry, tmp_path / "ckpt")
    folder = export_hidden(entry, tmp_path / "hidden", **paths)
    package = export.package_name(entry)
    assert {p.name for p in folder.iterdir()} == {"expert.py", "model.pt", "requirements.txt", "check_expert.py", package}
    if entry == "starhubert_local":  # STaR shares ARMHuBERT's student (common/student): the copy holds it
        assert (folder / package / "common" / "student" / "model.py").is_file()
        assert not (folder / package / "armhubert").exists()
    assert not list(folder.rglob("testing.py"))
    requirements = (folder / "requirements.txt").read_text().split()
    assert requirements[0] == f"torch=={torch.__version__.split('+')[0]}"
    with zipfile.ZipFile(folder / "model.pt") as zf:
        pickle = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    assert b"s3prl_plugins.upstreams" not in pickle and package.encode() in pickle

    wavs = [torch.randn(16000, generator=torch.Generator().manual_seed(3)), torch.randn(9000)]
    torch.save(wavs, tmp_path / "wavs.pt")
    site = str(Path(torch.__file__).resolve().parents[1])
    script = _LOAD_ALONE.replace("SITE", repr(site)).replace("FOLDER", repr(str(folder)))
    result = subprocess.run([sys.executable, "-S", "-c", script], cwd=folder, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["modules"] == []  # neither s3prl nor s3prl_plugins was imported

    original = getattr(hub, entry)(**paths).eval()
    assert report["rate"] == original.get_downsample_rates("hidden_states")
    with torch.no_grad():
        expected = original(wavs)["hidden_states"]
    exported = torch.load(tmp_path / "exported_states.pt")
    assert len(exported) == len(expected)
    for got, want in zip(exported, expected):
        # another process may use another thread count, so float sums may differ in the last bits
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    output = check_exported(folder)  # the standalone s3prl-style forward checks
    assert "all checks passed" in output and "forward + backward on 0.05 s" in output


def test_refusals(tmp_path):
    paths = _make("melhubert_local", tmp_path / "ckpt")
    folder = export_hidden("melhubert_local", tmp_path / "hidden", **paths)
    with pytest.raises(ExportError, match="exists and is not empty; pass --overwrite"):
        export_hidden("melhubert_local", folder, **paths)
    with pytest.raises(ExportError, match="unknown entry 'nope'"):
        export_hidden("nope", tmp_path / "other")
    # a damaged folder fails its check, with the reason
    torch.save({"format": "something else"}, folder / "model.pt")
    with pytest.raises(ExportError, match="not a model.pt written by s3prl-plugins"):
        check_exported(folder)
    assert export.main(["melhubert_local", "-k", paths["ckpt"], "-o", str(folder)]) == 2
