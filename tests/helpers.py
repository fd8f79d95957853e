"""Running s3prl's real downstream runner on generated data, and reading what it wrote."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
E2E_RUNNER = Path(__file__).resolve().parent / "e2e_runner.py"

TASKS = ("speech_commands", "fluent_commands")


def free_port() -> int:
    """A free local TCP port (torch.distributed rendezvous of the DDP tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(**extra) -> dict:
    """This environment with one CPU thread per process (DDP tests run several) and ``extra``."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def torchrun_pretrain(recipe: str, config: Path, output: Path) -> str:
    """``torchrun --nproc_per_node=2 -m s3prl_plugins.pretrain RECIPE`` (2 gloo processes on CPU);
    returns what it printed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "-m", "s3prl_plugins.pretrain", recipe, "--config", str(config), "--output", str(output), "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 process(es) x batch 2 x accumulation 1 = effective batch 4" in result.stdout
    return result.stdout


def assert_same_training_state(single: Path, ddp: Path, step: int, atol: float = 1e-5) -> dict:
    """The step-``step`` checkpoints of a 1-process run and a 2-process run hold the same weights;
    returns the single run's model state."""
    import torch

    name = f"step-{step:09d}.pt"
    a = torch.load(Path(single) / "checkpoints" / name, weights_only=True)
    b = torch.load(Path(ddp) / "checkpoints" / name, weights_only=True)
    assert b["world_size"] == 2 and len(b["rng"]) == 2
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=atol, rtol=0), (key, (value - b["model"][key]).abs().max())
    return a["model"]


def run_s3prl_pretrain(s3prl_copy: Path, workdir: Path, args: list[str]) -> None:
    """``python -m s3prl_plugins.run_pretrain ARGS`` (s3prl's own run_pretrain.py) in ``workdir``
    against the s3prl copy ``s3prl_copy`` (which the test has installed into)."""
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(Path(s3prl_copy).parent), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "s3prl_plugins.run_pretrain", *args, "--device", "cpu"],
                            capture_output=True, text=True, env=env, cwd=workdir, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def run_installed_s3prl_pretrain(s3prl_copy: Path, args: list[str]) -> None:
    """``cd <s3prl> && python run_pretrain.py ARGS`` as a user runs it after the install: only what
    ``install_into_s3prl.py`` put into ``s3prl_copy`` (recipe shims, the compat block at the top of
    ``run_pretrain.py``) makes it work. Paths in ``args`` must be absolute."""
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(Path(s3prl_copy).parent), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "run_pretrain.py", *args, "--device", "cpu"], capture_output=True,
                            text=True, env=env, cwd=s3prl_copy, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def export_cli(checkpoint: Path, output: Path) -> Path:
    """``python -m s3prl_plugins.pretrain export CHECKPOINT --output OUTPUT``; the file it wrote."""
    result = subprocess.run([sys.executable, "-m", "s3prl_plugins.pretrain", "export", str(checkpoint),
                             "--output", str(output)], capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


def task_overrides(task: str, data: dict, steps: int = 20) -> str:
    """``-o`` settings for a short CPU run of ``task`` on the generated data."""
    runner = (f"config.runner.total_steps={steps},,config.runner.log_step={steps // 2},,"
              f"config.runner.eval_step={steps},,config.runner.save_step={steps},,config.optimizer.lr=1.0e-3")
    if task == "speech_commands":
        ks = data["ks"]
        datarc = (f"config.downstream_expert.datarc.speech_commands_root={ks['root']},,"
                  f"config.downstream_expert.datarc.speech_commands_test_root={ks['test_root']},,"
                  "config.downstream_expert.datarc.batch_size=8,,config.downstream_expert.datarc.num_workers=0")
    elif task == "fluent_commands":
        datarc = (f"config.downstream_expert.datarc.file_path={data['ic']['root']},,"
                  "config.downstream_expert.datarc.train_batch_size=8,,"
                  "config.downstream_expert.datarc.eval_batch_size=8,,config.downstream_expert.datarc.num_workers=0")
    else:
        raise ValueError(task)
    return f"{runner},,{datarc}"


def downstream_commands(entry: str, ckpt, model_config, data: dict, workdir: Path, tasks=TASKS) -> list[list[str]]:
    """The run_downstream.py argument lists of a train + evaluate run per task."""
    commands = []
    for task in tasks:
        expdir = workdir / task
        train = ["-m", "train", "-u", entry, "-d", task, "-p", str(expdir), "--device", "cpu",
                 "-o", task_overrides(task, data)]
        if ckpt is not None:
            train += ["-k", str(ckpt)]
        if model_config is not None:
            train += ["-g", str(model_config)]
        commands.append(train)
        commands.append(["-m", "evaluate", "-e", str(expdir / "dev-best.ckpt"), "--device", "cpu"])
    return commands


def run_downstream_e2e(entry: str, ckpt, model_config, data: dict, workdir: Path, tasks=TASKS, timeout=1200):
    """Train and evaluate ``entry`` on each task in ONE interpreter (s3prl's import cost once)."""
    workdir.mkdir(parents=True, exist_ok=True)
    plan = workdir / "plan.json"
    plan.write_text(json.dumps(downstream_commands(entry, ckpt, model_config, data, workdir, tasks)))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    result = subprocess.run([sys.executable, str(E2E_RUNNER), str(plan)], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"run_downstream failed for {entry}:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return {task: workdir / task for task in tasks}


def checkpoint_to_evaluate(path: str) -> str:
    """s3prl writes dev-best.ckpt only when a dev score beats 0; after 20 steps on a random-weight
    upstream it may not, and then the run's last states-N.ckpt is evaluated instead."""
    wanted = Path(path)
    if wanted.exists() or wanted.name != "dev-best.ckpt":
        return path
    states = sorted(wanted.parent.glob("states-*.ckpt"), key=lambda p: int(p.stem.split("-")[-1]))
    return str(states[-1]) if states else path


def accuracies(expdir: Path) -> dict[str, list[float]]:
    """``{split: [acc at each evaluation]}`` parsed from the runner's ``log.log``."""
    found: dict[str, list[float]] = {}
    for line in (expdir / "log.log").read_text().splitlines():
        match = re.match(r"^(dev|test) at step \d+: ([0-9.eE+-]+)$", line.strip())
        if match:
            found.setdefault(match.group(1), []).append(float(match.group(2)))
    return found
