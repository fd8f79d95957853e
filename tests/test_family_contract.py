"""The family contract: every family folder has the same files for the same roles, and a new family
is a new folder, nothing else edited (a toy family from a temporary folder runs through the hub,
checkpoint detection, the generated entries, the benchmarks' list and the pre-training tables)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from s3prl_plugins import hub
from s3prl_plugins.upstreams.common.family import families

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("__init__.py", "config.py", "model.py", "formats.py", "releases.py", "upstream.py", "hubconf.py",
         "testing.py", "README.md")


@pytest.mark.parametrize("name", sorted(families()))
def test_every_family_folder_has_the_contract_files_and_its_references_resolve(name):
    family = families()[name]
    folder = ROOT / "upstreams" / name
    assert sorted(p.name for p in folder.iterdir() if p.name in ROLES) == sorted(ROLES), name
    for reference in (family.builder, family.fingerprint, family.test_checkpoint,
                      *(a.writer for a in family.architectures)):
        assert callable(family.resolve(reference)), reference
    assert family.local_entry in family.entries
    assert set(family.all_entries) <= set(hub.__all__)
    assert all(hub.ENTRY_FAMILY[e] == name for e in family.all_entries)
    for recipe in family.recipes:
        assert (ROOT / "pretrain" / "configs" / recipe.model_config).is_file()
        assert (ROOT / "pretrain" / "configs" / "s3prl" / recipe.runner_config).is_file()


def test_the_tables_are_derived_from_the_registry():
    from s3prl_plugins import bench
    from s3prl_plugins.pretrain import RECIPE_MODULES, S3PRL_RECIPES
    from s3prl_plugins.pretrain.recipe import get_recipe

    recipes = {r.name for f in families().values() for r in f.recipes}
    assert recipes == set(S3PRL_RECIPES) == set(RECIPE_MODULES)
    assert {"m2d", "m2ds", "m2das", "m2dx", "dasheng", "melhubert", "armhubert", "maskhubert", "starhubert"} == recipes
    for name in recipes:
        assert get_recipe(name).name == name
    assert get_recipe("starwavlm").name == "starhubert"  # an alias declared by @register only
    architectures = {a.name for f in families().values() for a in f.architectures}
    assert set(bench.architectures()) == {bench.REFERENCE} | architectures


TOY = {
    "__init__.py": '''
        """A toy family: mean-pooled 10 ms frames through one linear layer."""
        from ..common.family import Architecture, Family, Recipe
        from .releases import RELEASES

        FAMILY = Family(name="toyfam", title="Toy", package=__name__, entries=("toyfam_local",),
                        releases=RELEASES, local_entry="toyfam_local",
                        recipes=(Recipe("toyrecipe", "s3prl_plugins.upstreams.toyfam.recipe", "toy.yaml",
                                        "config_runner_toy.yaml"),),
                        architectures=(Architecture("toyfam_small", "toyfam_local", "testing:write_full_size"),))
        ''',
    "config.py": '''
        from dataclasses import dataclass

        @dataclass
        class ToyOptions:
            scale: float = 1.0
        ''',
    "model.py": '''
        import torch
        from torch import nn

        class ToyModel(nn.Module):
            def __init__(self, dim=8):
                super().__init__()
                self.proj = nn.Linear(160, dim)

            def forward(self, padded):
                frames = padded.shape[1] // 160
                return [self.proj(padded[:, : frames * 160].reshape(padded.shape[0], frames, 160))]
        ''',
    "formats.py": '''
        import torch

        def fingerprint(obj, keys):
            return 15 if "toyfam.proj.weight" in keys else None

        def write_toy(path, state):
            torch.save({"model": {f"toyfam.{k}": v for k, v in state.items()}}, path)
            return path

        def read_toy(obj):
            return {k[len("toyfam."):]: v for k, v in obj["model"].items()}
        ''',
    "releases.py": '''
        RELEASES = {}
        ''',
    "upstream.py": '''
        from ..common.base import Upstream
        from ..common.checkpoint import check_family, load_checkpoint, resolve_checkpoint
        from ..common.config import options_from
        from .config import ToyOptions
        from .formats import read_toy
        from .model import ToyModel

        class ToyUpstream(Upstream):
            model_name = "toy"
            downsample_rate = 160

            def __init__(self, model, scale):
                super().__init__()
                self.model, self.scale = model, scale

            def encode(self, padded, lengths):
                return {"hidden_states": [h * self.scale for h in self.model(padded)]}

        def build(entry, ckpt=None, model_config=None, refresh=False, **kwargs):
            options = options_from(ToyOptions, model_config, kwargs, entry)
            path = resolve_checkpoint(ckpt, refresh=refresh, local_entry="toyfam_local")
            obj = load_checkpoint(path, family="Toy")
            check_family(obj, "toyfam", path, entry=entry)
            model = ToyModel()
            model.load_state_dict(read_toy(obj))
            return ToyUpstream(model, options.scale).eval()
        ''',
    "hubconf.py": '''
        from ..common.family import entry_functions as _entry_functions
        from . import FAMILY as _FAMILY

        globals().update(_entry_functions(_FAMILY))
        __all__ = list(_FAMILY.all_entries)
        ''',
    "testing.py": '''
        from pathlib import Path

        import torch

        from .formats import write_toy
        from .model import ToyModel

        def make_checkpoint(entry, directory):
            torch.manual_seed(0)
            path = write_toy(Path(directory) / "toy.pt", ToyModel().state_dict())
            return {"ckpt": str(path), "model_config": None}

        def write_full_size(directory):
            return make_checkpoint("toyfam_local", directory)
        ''',
}

DRIVER = '''
import json, sys, torch
from s3prl_plugins import hub, bench
from s3prl_plugins.pretrain import S3PRL_RECIPES
from s3prl_plugins.upstreams.common import checkpoint
from s3prl_plugins.upstreams.common.family import families, family_of_entry

family = family_of_entry("toyfam_local")
paths = family.resolve(family.test_checkpoint)("toyfam_local", sys.argv[1])
upstream = hub.toyfam_local(**paths, scale=2.0)
out = upstream([torch.randn(1600), torch.randn(800)])
wrong = None
try:
    hub.dasheng_local(ckpt=paths["ckpt"])
except checkpoint.CheckpointError as error:
    wrong = str(error)
print(json.dumps({
    "entries": [e for e in hub.__all__ if e.startswith("toyfam")], "family": hub.ENTRY_FAMILY["toyfam_local"],
    "shapes": [list(h.shape) for h in out["hidden_states"]],
    "detected": checkpoint.detect_family(torch.load(paths["ckpt"], weights_only=True)),
    "wrong_family_error": wrong, "recipes": sorted(S3PRL_RECIPES),
    "architectures": list(bench.architectures()), "families": sorted(families()),
}))
'''


def test_a_sixth_family_is_a_new_folder_and_nothing_else(tmp_path):
    folder = tmp_path / "families" / "toyfam"
    folder.mkdir(parents=True)
    for name, text in TOY.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    env = {**__import__("os").environ, "S3PRL_PLUGINS_FAMILY_PATH": str(tmp_path / "families")}
    result = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["entries"] == ["toyfam_local"] and found["family"] == "toyfam"
    assert found["shapes"] == [[2, 10, 8]]  # s3prl's frame count for 1600 samples at rate 160
    assert found["detected"] == "toyfam"
    assert "toyfam" in found["wrong_family_error"] and "-u toyfam_local" in found["wrong_family_error"]
    assert "toyrecipe" in found["recipes"] and "toyfam_small" in found["architectures"]
    assert {"m2d", "melhubert", "armhubert", "starhubert", "dasheng", "toyfam"} == set(found["families"])


@pytest.mark.parametrize("name", sorted(n for n, f in families().items() if f.releases))
def test_k_of_a_named_release_is_a_copy_of_it_in_every_family(name, tmp_path, monkeypatch):
    """One rule for ``-k`` on a named release entry, whatever the family: a copy of the release
    fetched by hand (blocked download, offline machine), read with the release's facts; without
    ``-k`` a failed download names exactly that fix."""
    import torch

    from s3prl_plugins.upstreams.common import checkpoint
    from s3prl_plugins.upstreams.common.checkpoint import CheckpointError
    from s3prl_plugins.upstreams.common.family import make_test_checkpoint

    family = families()[name]
    entry = sorted(family.releases)[0]
    monkeypatch.setenv("S3PRL_PLUGINS_CACHE_DIR", str(tmp_path / "cache"))
    assert make_test_checkpoint(entry, tmp_path / "made")["ckpt"] is None  # written where the download lands
    wavs = [torch.randn(16000, generator=torch.Generator().manual_seed(0)) * 0.1]
    with torch.no_grad():
        expected = getattr(hub, entry)()(wavs)["hidden_states"]

    (cached,) = [p for p in (tmp_path / "cache" / "download").iterdir() if p.is_file() and not p.name.endswith(".lock")]
    copy = tmp_path / "fetched by hand" / f"my-copy{cached.suffix}"  # renamed: the release's facts must still apply
    copy.parent.mkdir()
    cached.rename(copy)
    for extracted in [p for p in cached.parent.iterdir() if p.is_dir()]:  # an unpacked release zip
        shutil.rmtree(extracted)

    def offline(url, target):
        raise OSError("network unreachable")

    monkeypatch.setattr(checkpoint, "_fetch", offline)
    with pytest.raises(CheckpointError, match=f"-u {entry} -k <path>"):
        getattr(hub, entry)()
    with torch.no_grad():
        hidden = getattr(hub, entry)(ckpt=str(copy))(wavs)["hidden_states"]
    assert len(hidden) == len(expected)
    for got, want in zip(hidden, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for official_name, release in family.default_releases.items():
        assert family.release_for(official_name) is family.releases[release]
