"""install_into_s3prl.py on a private copy of the installed s3prl package."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from s3prl_plugins import installer

ROOT = Path(__file__).resolve().parents[1]


def _digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _run(*args, cwd=None, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, str(ROOT / "install_into_s3prl.py"), *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def test_install_is_idempotent_and_uninstall_restores_every_byte(s3prl_copy):
    before = _digest_tree(s3prl_copy)
    logs = []
    assert installer.install(s3prl_copy, log=logs.append)
    hub = (s3prl_copy / "hub.py").read_text()
    assert hub.count(installer.BEGIN) == 1 and "from s3prl_plugins.hub import *" in hub
    assert (s3prl_copy / "downstream" / "speech_commands" / "config.yaml").is_file()
    assert (s3prl_copy / "downstream" / "fluent_commands" / "config.yaml").is_file()
    after_first = _digest_tree(s3prl_copy)

    logs.clear()
    assert not installer.install(s3prl_copy, log=logs.append)
    assert any("nothing changed" in line for line in logs)
    assert _digest_tree(s3prl_copy) == after_first

    installer.uninstall(s3prl_copy, log=logs.append)
    assert _digest_tree(s3prl_copy) == before
    assert not installer.uninstall(s3prl_copy, log=logs.append)  # second uninstall: nothing to do


def test_existing_task_configs_are_never_overwritten(s3prl_copy):
    mine = s3prl_copy / "downstream" / "fluent_commands" / "config.yaml"
    mine.write_text("# my own config\n")
    installer.install(s3prl_copy, log=lambda *_: None)
    assert mine.read_text() == "# my own config\n"
    installer.uninstall(s3prl_copy, log=lambda *_: None)
    assert mine.read_text() == "# my own config\n"


def test_hub_without_trailing_newline_round_trips(s3prl_copy):
    hub = s3prl_copy / "hub.py"
    hub.write_bytes(hub.read_bytes().rstrip(b"\n"))
    original = hub.read_bytes()
    installer.install(s3prl_copy, log=lambda *_: None)
    installer.uninstall(s3prl_copy, log=lambda *_: None)
    assert hub.read_bytes() == original


def test_dry_run_changes_nothing(s3prl_copy):
    before = _digest_tree(s3prl_copy)
    lines = []
    assert installer.install(s3prl_copy, dry_run=True, log=lines.append)
    assert any("edit hub.py" in line for line in lines)
    assert _digest_tree(s3prl_copy) == before


def test_crash_mid_install_leaves_hub_intact_and_undoable(s3prl_copy, monkeypatch):
    original = (s3prl_copy / "hub.py").read_bytes()
    real_replace = os.replace

    def crash_on_hub(src, dst):
        if str(dst).endswith("hub.py"):
            raise KeyboardInterrupt("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_hub)
    with pytest.raises(KeyboardInterrupt):
        installer.install(s3prl_copy, log=lambda *_: None)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (s3prl_copy / "hub.py").read_bytes() == original
    assert not list(s3prl_copy.glob(".hub.py.*.tmp"))
    installer.uninstall(s3prl_copy, log=lambda *_: None)
    assert (s3prl_copy / "hub.py").read_bytes() == original


def test_untested_version_and_git_checkout(s3prl_copy):
    (s3prl_copy / "version.txt").write_text("0.4.17\n")
    with pytest.raises(installer.InstallError, match="untested.*--force"):
        installer.install(s3prl_copy, log=lambda *_: None)
    (s3prl_copy.parent / ".git").mkdir()
    lines = []
    installer.install(s3prl_copy, force=True, log=lines.append)
    assert any("git checkout" in line and "git status" in line for line in lines)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_install_is_refused(s3prl_copy):
    os.chmod(s3prl_copy / "hub.py", 0o444)
    os.chmod(s3prl_copy, 0o555)
    try:
        with pytest.raises(installer.InstallError, match="not writable"):
            installer.install(s3prl_copy, log=lambda *_: None)
    finally:
        os.chmod(s3prl_copy, 0o755)


def test_pretrain_recipe_shims(s3prl_copy, monkeypatch, tmp_path):
    config = tmp_path / "config_model.yaml"
    config.write_text("model: {}\n")
    recipe = {"expert_shim": "from s3prl_plugins.pretrain import S3PRL_RECIPES as UpstreamPretrainExpert\n",
              "files": {"config_model.yaml": str(config)}}
    monkeypatch.setattr("s3prl_plugins.pretrain.S3PRL_RECIPES", {"plugintest": recipe})
    before = _digest_tree(s3prl_copy)
    installer.install(s3prl_copy, log=lambda *_: None)
    assert (s3prl_copy / "pretrain" / "plugintest" / "pretrain_expert.py").read_text() == recipe["expert_shim"]
    assert (s3prl_copy / "pretrain" / "plugintest" / "config_model.yaml").read_text() == "model: {}\n"
    installer.uninstall(s3prl_copy, log=lambda *_: None)
    assert not (s3prl_copy / "pretrain" / "plugintest").exists()
    assert _digest_tree(s3prl_copy) == before
    monkeypatch.setattr("s3prl_plugins.pretrain.S3PRL_RECIPES", {"tera_plugin": recipe})
    with pytest.raises(installer.InstallError, match="clash"):
        installer.install(s3prl_copy, log=lambda *_: None)


@pytest.mark.slow
def test_cli_check_and_broken_plugin_does_not_break_s3prl(s3prl_copy, tmp_path):
    site = str(s3prl_copy.parent)
    no_block = _run("--check", "--s3prl-dir", str(s3prl_copy))
    assert no_block.returncode == 1 and "not in" in no_block.stdout
    installed = _run("--s3prl-dir", str(s3prl_copy), env_extra={"PYTHONPATH": site})
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "check passed" in installed.stdout

    # A plugin whose import fails: s3prl.hub must still import with all of its own entries.
    code = textwrap.dedent("""
        import sys
        sys.modules["s3prl_plugins.hub"] = None  # makes `from s3prl_plugins.hub import *` raise
        import s3prl.hub as hub
        assert callable(hub.hubert) and callable(hub.wav2vec2)
        print(len(hub.options()))
    """)
    env = dict(os.environ, PYTHONPATH=site)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) >= 190
    assert "s3prl-plugins entries not loaded" in result.stderr and "s3prl_plugins.hub" in result.stderr
    # --check must fail while the plugin cannot be imported (here: its hub module is missing)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text("import sys\nsys.modules['s3prl_plugins.hub'] = None\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(broken), site]))
    check = subprocess.run([sys.executable, str(ROOT / "install_into_s3prl.py"), "--check", "--s3prl-dir",
                            str(s3prl_copy)], capture_output=True, text=True, env=env, timeout=600)
    assert check.returncode == 1 and "check failed" in check.stdout

    removed = _run("--uninstall", "--s3prl-dir", str(s3prl_copy))
    assert removed.returncode == 0 and "back to its state" in removed.stdout


def test_cli_errors_clearly_without_s3prl(tmp_path):
    result = _run("--s3prl-dir", str(tmp_path))
    assert result.returncode == 2 and "not an s3prl package folder" in result.stderr
    help_text = _run("--help")
    assert help_text.returncode == 0 and "--uninstall" in help_text.stdout


def test_compat_blocks_open_the_files_s3prl_loads_first(s3prl_copy):
    originals = {name: (s3prl_copy / name).read_bytes() for name in ("__init__.py", "run_pretrain.py",
                                                                       "run_downstream.py")}
    installer.install(s3prl_copy, log=lambda *_: None)
    for name, original in originals.items():
        text = (s3prl_copy / name).read_bytes()
        assert text.count(installer.COMPAT_BEGIN.encode()) == 1 and b"_s3prl_plugins_compat.apply()" in text
        first_line = original.splitlines(keepends=True)[0]
        if b"coding" in first_line:  # an encoding declaration must stay on the first line
            assert text.startswith(first_line + installer.COMPAT_BEGIN.encode())
        else:
            assert text.startswith(installer.COMPAT_BEGIN.encode())
        compile(text, name, "exec")
    installer.uninstall(s3prl_copy, log=lambda *_: None)
    for name, original in originals.items():
        assert (s3prl_copy / name).read_bytes() == original


def test_user_edits_are_never_overwritten_or_removed(s3prl_copy):
    installer.install(s3prl_copy, log=lambda *_: None)
    config = s3prl_copy / "downstream" / "speech_commands" / "config.yaml"
    config.write_text(config.read_text().replace("speech_commands_root:", "speech_commands_root: /my/data #"))
    edited = config.read_bytes()
    logs = []
    installer.install(s3prl_copy, log=logs.append)
    assert config.read_bytes() == edited
    assert any("keep downstream/speech_commands/config.yaml" in line for line in logs), logs
    logs.clear()
    installer.uninstall(s3prl_copy, log=logs.append)
    assert config.read_bytes() == edited
    assert any("keep downstream/speech_commands/config.yaml" in line for line in logs), logs
    assert not any(line.endswith("back to its state before the install.") for line in logs)


def test_uninstall_without_manifest_says_what_it_could_not_verify(s3prl_copy):
    before = _digest_tree(s3prl_copy)
    installer.install(s3prl_copy, log=lambda *_: None)
    (s3prl_copy / installer.MANIFEST).unlink()
    logs = []
    installer.uninstall(s3prl_copy, log=logs.append)
    after = _digest_tree(s3prl_copy)
    # our files are found by their content, our blocks by their markers
    assert after == before
    assert any("manifest is missing" in line for line in logs), logs


def test_a_killed_run_leaves_nothing_the_next_run_does_not_remove(s3prl_copy):
    before = _digest_tree(s3prl_copy)
    stray = installer.temporary_path(s3prl_copy / "downstream" / "emotion" / "config.yaml")
    stray.write_bytes(b"half")
    logs = []
    installer.install(s3prl_copy, log=logs.append)
    assert not stray.exists() and any("interrupted run" in line for line in logs)
    stray.write_bytes(b"half")
    installer.uninstall(s3prl_copy, log=lambda *_: None)
    assert not stray.exists() and _digest_tree(s3prl_copy) == before


def test_the_installed_provider_is_recognised_by_its_metadata():
    from s3prl_plugins import compat
    from s3prl_plugins._cli import s3prl_package_dir

    provider = compat.s3prl_provider(s3prl_package_dir())
    assert provider.distribution in compat.TESTED_PROVIDERS and provider.tested, provider
    import s3prl

    assert provider.is_fork == (provider.distribution == "espnet-s3prl")
    assert compat.version_tuple(provider.version) == compat.version_tuple(s3prl.__version__)


KILL_DRIVER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    kill_at, calls, real_replace = int(sys.argv[2]), [0], os.replace

    def replace(src, dst):  # kill -9 after the temporary file is written, before its rename
        calls[0] += 1
        if calls[0] == kill_at:
            os._exit(9)
        return real_replace(src, dst)

    os.replace = replace
    from s3prl_plugins import installer
    installer.install(Path(sys.argv[1]), log=lambda *_: None)
    print("RENAMES", calls[0])
""")


def _killed_install(package: Path, kill_at: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILL_DRIVER, str(package), str(kill_at)], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_kill_at_every_step_then_install_or_uninstall_is_clean(s3prl_copy):
    """kill -9 at each write of the installer; a following install leaves the tree as a clean
    install does, a following uninstall leaves it as it was before (byte for byte)."""
    pristine = _digest_tree(s3prl_copy)
    full = _killed_install(s3prl_copy, 0)
    assert full.returncode == 0, full.stderr
    steps = int(full.stdout.split("RENAMES")[-1])
    installed = _digest_tree(s3prl_copy)
    installer.uninstall(s3prl_copy, log=lambda *_: None)
    assert steps > 5 and _digest_tree(s3prl_copy) == pristine
    for kill_at in range(1, steps + 1):
        for then in ("uninstall", "install"):
            killed = _killed_install(s3prl_copy, kill_at)
            assert killed.returncode == 9, killed.stderr
            if then == "uninstall":
                installer.uninstall(s3prl_copy, log=lambda *_: None)
                assert _digest_tree(s3prl_copy) == pristine, f"uninstall after a kill at write {kill_at}"
            else:
                installer.install(s3prl_copy, log=lambda *_: None)
                assert _digest_tree(s3prl_copy) == installed, f"install after a kill at write {kill_at}"
                installer.uninstall(s3prl_copy, log=lambda *_: None)
                assert _digest_tree(s3prl_copy) == pristine


def test_every_command_refuses_a_read_only_install_the_same_way(s3prl_copy, monkeypatch):
    installer.install(s3prl_copy, log=lambda *_: None)
    installed = _digest_tree(s3prl_copy)
    monkeypatch.setattr(installer.os, "access", lambda path, mode: False)  # as for a non-root user
    for command in (installer.install, installer.uninstall):
        if command is installer.install:
            (s3prl_copy / "downstream" / "emotion" / "config.yaml").unlink()  # something to write
        with pytest.raises(installer.InstallError, match="not writable"):
            command(s3prl_copy, log=lambda *_: None)
    monkeypatch.undo()
    installer.install(s3prl_copy, log=lambda *_: None)
    assert _digest_tree(s3prl_copy) == installed
