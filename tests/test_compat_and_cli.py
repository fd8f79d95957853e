"""torch/torchaudio compatibility fixes and the wrapper CLIs."""
from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from s3prl_plugins import compat, hub
from s3prl_plugins._cli import with_local_rank
from s3prl_plugins.run_downstream import default_task_config
from s3prl_plugins.run_pretrain import absolute_paths


def test_local_rank_translation(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert with_local_rank(["-m", "train", "--local-rank=1"]) == ["-m", "train", "--local_rank", "1"]
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert with_local_rank(["-m", "train"])[-2:] == ["--local_rank", "3"]
    assert with_local_rank(["--local_rank", "0"]) == ["--local_rank", "0"]
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert with_local_rank(["-m", "train"]) == ["-m", "train"]


def test_pretrain_paths_become_absolute(tmp_path):
    argv = absolute_paths(["-u", "x", "-n", "run", "-p", "exp", "--config=cfg.yaml"], tmp_path)
    assert argv[5] == str(tmp_path / "exp") and argv[6] == f"--config={tmp_path / 'cfg.yaml'}"
    assert argv[:5] == ["-u", "x", "-n", "run", "-p"]


def test_s3prl_checkpoints_load_weights_only(tmp_path):
    """What run_downstream -e and run_pretrain resume read: Namespace + s3prl schedule objects."""
    from s3prl.optimizers import get_optimizer

    model = torch.nn.Linear(2, 2)
    optimizer = get_optimizer([model], 10, {"name": "AdamW_with_schedule", "lr": 1e-3, "warmup_proportion": 0.1})
    torch.save({"Args": argparse.Namespace(mode="train"), "Optimizer": optimizer.state_dict()}, tmp_path / "s.ckpt")
    code = textwrap.dedent(f"""
        import torch
        try:
            torch.load({str(tmp_path / 's.ckpt')!r}, map_location='cpu')
            print('loaded-before')
        except Exception:
            print('refused-before')
        from s3prl_plugins import compat
        compat.allow_s3prl_checkpoints()
        print(torch.load({str(tmp_path / 's.ckpt')!r}, map_location='cpu')['Args'].mode)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused-before", "train"]


def test_torchaudio_shim_functions(tmp_path):
    """The >= 2.9 replacements, checked against torchaudio 2.8's own behaviour."""
    import soundfile

    wave = torch.randn(2, 22050) * 0.1
    soundfile.write(str(tmp_path / "a.wav"), wave.t().numpy(), 22050, subtype="FLOAT")
    loaded, rate = compat._soundfile_load(tmp_path / "a.wav")
    assert rate == 22050 and torch.allclose(loaded, wave, atol=1e-6)
    out, new_rate = compat._apply_effects_file(tmp_path / "a.wav", [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]])
    assert new_rate == 16000 and out.shape[0] == 1 and abs(out.shape[1] - 16000) <= 1
    info = compat._soundfile_info(tmp_path / "a.wav")
    assert (info.sample_rate, info.num_frames, info.num_channels) == (22050, 22050, 2)


SHIMS_PROBE = textwrap.dedent("""
    import json, torchaudio, huggingface_hub
    names = ("load", "info", "set_audio_backend", "save", "sox_effects")
    before = {n: getattr(torchaudio, n, None) for n in names}
    hf_before = {n: getattr(huggingface_hub, n, None) for n in ("HfApi", "get_token", "snapshot_download")}
    from s3prl_plugins import compat
    first = {k: list(v) for k, v in compat.apply().items()}
    again = {k: list(v) for k, v in compat.apply().items()}
    changed = [n for n in names if before[n] is not None and getattr(torchaudio, n) is not before[n]]
    hf_changed = [n for n, v in hf_before.items() if getattr(huggingface_hub, n) is not v]
    from huggingface_hub import HfFolder, Repository  # what s3prl's runners import at top level
    from catalyst.data.sampler import DistributedSamplerWrapper
    shares = [list(DistributedSamplerWrapper(list(range(10, 16)), num_replicas=2, rank=r, shuffle=False))
              for r in (0, 1)]
    print(json.dumps(dict(first=first, again=again, changed=changed, hf_changed=hf_changed, shares=shares,
                          torchaudio=torchaudio.__version__, hub=huggingface_hub.__version__)))
""")


def test_shims_only_add_what_is_missing():
    """compat.apply() adds the names s3prl needs and changes no working function (ESPnet's and the
    user's torchaudio calls return what they did); a second call adds nothing."""
    import importlib.metadata
    import importlib.util
    import json

    out = subprocess.run([sys.executable, "-c", SHIMS_PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["again"] == report["first"]  # idempotent: nothing added twice
    new_torchaudio = compat.version_tuple(report["torchaudio"]) >= (2, 9)
    expected = ["set_audio_backend", "info", "sox_effects"] if new_torchaudio else []
    if new_torchaudio and importlib.util.find_spec("torchcodec") is None:
        expected.insert(2, "load")  # torchaudio's own load needs TorchCodec there: it could only raise
    assert report["first"]["torchaudio"] == expected
    assert report["changed"] == (["load"] if "load" in expected else [])
    assert report["first"]["huggingface_hub"] == (
        ["HfFolder", "Repository"] if compat.version_tuple(report["hub"]) >= (1,) else [])
    assert report["hf_changed"] == []
    try:
        importlib.metadata.distribution("catalyst")
        real_catalyst = True
    except importlib.metadata.PackageNotFoundError:
        real_catalyst = False
    assert report["first"]["catalyst"] == ([] if real_catalyst else ["data.sampler.DistributedSamplerWrapper"])
    # catalyst's split: each rank takes every second of the wrapped sampler's indices
    assert report["shares"] == [[10, 12, 14], [11, 13, 15]]


def test_removed_hub_pushing_says_how_to_push():
    with pytest.raises(RuntimeError, match="huggingface_hub<1"):
        compat._Repository(local_dir="x", clone_from="user/repo")


def test_default_task_config_falls_back_to_ours(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = default_task_config("fluent_commands")
    assert config is not None and config.name == "config.yaml" and config.is_file()
    (tmp_path / "downstream" / "fluent_commands").mkdir(parents=True)
    (tmp_path / "downstream" / "fluent_commands" / "config.yaml").write_text("runner: {}\n")
    assert default_task_config("fluent_commands") == (tmp_path / "downstream/fluent_commands/config.yaml").resolve()


def test_every_entry_has_the_s3prl_signature():
    assert hub.__all__ and not hub.FAILED_FAMILIES, hub.FAILED_FAMILIES
    for name in hub.__all__:
        params = inspect.signature(getattr(hub, name)).parameters
        assert list(params)[:3] == ["ckpt", "model_config", "refresh"], name
        assert params["ckpt"].default is None and params["model_config"].default is None
        assert params["refresh"].default is False
        assert any(p.kind is p.VAR_KEYWORD for p in params.values()), name


def test_entries_do_not_shadow_s3prl_and_import_light():
    code = textwrap.dedent("""
        import sys
        import s3prl_plugins.hub as plugins
        heavy = [m for m in ("torch", "torchaudio", "numpy") if m in sys.modules]
        print("HEAVY", heavy)
        import s3prl.hub as hub
        clash = [n for n in plugins.__all__ if n in vars(hub) and getattr(hub, n) is not getattr(plugins, n)]
        print("CLASH", clash)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout and "CLASH []" in out.stdout


@pytest.mark.parametrize("entry", [n for n in hub.__all__ if n.endswith("_local")])
def test_local_entries_ask_for_a_checkpoint(entry):
    with pytest.raises((FileNotFoundError, ValueError), match="-k"):
        getattr(hub, entry)(ckpt=None, model_config=None)


def test_every_family_can_make_test_checkpoints():
    import importlib

    for family in hub.FAMILIES:
        testing = importlib.import_module(f"s3prl_plugins.upstreams.{family}.testing")
        assert callable(testing.make_checkpoint), family


@pytest.mark.slow
def test_wrapper_help_lists_plugin_entries():
    out = subprocess.run([sys.executable, "-m", "s3prl_plugins.run_downstream", "-h"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert all(name in out.stdout for name in hub.__all__[:3])
    pre = subprocess.run([sys.executable, "-m", "s3prl_plugins.run_pretrain", "-h"], capture_output=True,
                         text=True, timeout=600)
    assert pre.returncode == 0 and "--upstream" in pre.stdout, pre.stderr


TOY_RECIPE = '''
import torch
from torch.utils.data import DataLoader


class UpstreamPretrainExpert(torch.nn.Module):
    """Smallest s3prl pre-training expert: a linear model fitting random targets."""

    def __init__(self, datarc, upstream_config, device="cpu", multi_gpu=False, **kwargs):
        super().__init__()
        self.device = device
        self.model = torch.nn.Linear(4, 1)
        gen = torch.Generator().manual_seed(0)
        self.data = [(torch.randn(8, 4, generator=gen), torch.randn(8, 1, generator=gen)) for _ in range(4)]

    def get_train_dataloader(self):
        return DataLoader(self.data, batch_size=1, collate_fn=lambda x: x[0])

    def forward(self, data, records={}, global_step=0, log_step=1000, **kwargs):
        x, y = data
        loss = torch.nn.functional.mse_loss(self.model(x), y)
        return loss, records

    def load_model(self, all_states):
        self.model.load_state_dict(all_states["Model"])

    def add_state_to_save(self, all_states):
        all_states["Model"] = self.model.state_dict()
        return all_states

    def on_before_zero_grad(self):
        pass

    def log_records(self, records, logger, prefix, global_step, **kwargs):
        pass
'''


@pytest.mark.slow
def test_run_pretrain_wrapper_exposes_recipes_without_install(tmp_path):
    """``python -m s3prl_plugins.run_pretrain -u <recipe>`` from any folder, s3prl untouched."""
    (tmp_path / "toy_recipe_mod.py").write_text(TOY_RECIPE)
    runner_cfg = tmp_path / "config_runner.yaml"
    runner_cfg.write_text(textwrap.dedent("""
        runner: {n_epochs: -1, total_steps: 4, gradient_clipping: 5.0, gradient_accumulate_steps: 1,
                 log_step: 2, save_step: 2, max_keep: 2, fp16: false}
        optimizer: {name: TorchOptim, torch_optim_name: Adam, lr: 1.0e-3}
        pretrain_expert: {datarc: {train_batch_size: 8, num_workers: 0}}
    """))
    model_cfg = tmp_path / "config_model.yaml"
    model_cfg.write_text("toy: {}\n")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from s3prl_plugins import pretrain
        from s3prl_plugins.run_pretrain import main
        pretrain.S3PRL_RECIPES["plugintoy"] = {{
            "expert_shim": "from toy_recipe_mod import UpstreamPretrainExpert\\n",
            "files": {{"config_runner.yaml": {str(runner_cfg)!r}, "config_model.yaml": {str(model_cfg)!r}}},
        }}
        main(sys.argv[1:])
    """)
    from s3prl_plugins._cli import s3prl_package_dir

    before = sorted(p.name for p in (s3prl_package_dir() / "pretrain").iterdir())
    out = subprocess.run([sys.executable, "-c", script, "-u", "plugintoy", "-n", "toy", "-p", "exp", "--device", "cpu"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert sorted((tmp_path / "exp").glob("states-*.ckpt")), list((tmp_path / "exp").iterdir())
    assert sorted(p.name for p in (s3prl_package_dir() / "pretrain").iterdir()) == before


def test_wrapper_ends_with_our_error_message_alone(tmp_path):
    """A user's mistake through run_downstream: one clear line, not s3prl's traceback; the
    traceback on request. s3prl's import-time notices are not printed."""
    argv = [sys.executable, "-m", "s3prl_plugins.run_downstream", "-m", "train", "-u", "m2d_local", "-k",
            str(tmp_path / "missing.pth"), "-d", "speech_commands", "-p", str(tmp_path / "exp"), "--device", "cpu"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "error: " in out.stderr and "missing.pth" in out.stderr
    assert "ESPnet is not installed" not in out.stdout + out.stderr
    verbose = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                             env=dict(os.environ, S3PRL_PLUGINS_TRACEBACK="1"))
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr and "MissingCheckpointError" in verbose.stderr
