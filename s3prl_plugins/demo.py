"""End-to-end demo: generated speech -> s3prl's run_downstream.py -> test accuracy.

``python -m s3prl_plugins.demo --out demo_run [--entry m2d_local]``

1. generates small keyword-spotting (KS) and intent-classification (IC) data sets with espeak-ng;
2. writes a checkpoint in the entry's official format. There is no network here, so the weights
   are random: the numbers show that everything runs, not what the released model scores (use
   ``-k <downloaded checkpoint>`` with the same commands for that);
3. trains with s3prl's own ``python -m s3prl.run_downstream -m train`` (the entry is found through
   the block that ``install_into_s3prl.py`` added to s3prl's hub) and evaluates ``dev-best.ckpt``
   with ``python -m s3prl_plugins.run_downstream -m evaluate`` (s3prl 0.4.18's evaluate cannot read
   its own checkpoints under torch >= 2.6's weights-only loading; the wrapper fixes that);
4. prints the test accuracy of each task and where the prediction files are.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

STEPS = 200


def _overrides(task: str, data: dict, steps: int) -> str:
    runner = (f"config.runner.total_steps={steps},,config.runner.log_step={max(1, steps // 4)},,"
              f"config.runner.eval_step={max(1, steps // 2)},,config.runner.save_step={max(1, steps // 2)}")
    if task == "speech_commands":
        datarc = (f"config.downstream_expert.datarc.speech_commands_root={data['ks']['root']},,"
                  f"config.downstream_expert.datarc.speech_commands_test_root={data['ks']['test_root']},,"
                  "config.downstream_expert.datarc.batch_size=16,,config.downstream_expert.datarc.num_workers=0")
    else:
        datarc = (f"config.downstream_expert.datarc.file_path={data['ic']['root']},,"
                  "config.downstream_expert.datarc.train_batch_size=16,,"
                  "config.downstream_expert.datarc.eval_batch_size=16,,config.downstream_expert.datarc.num_workers=0")
    return f"{runner},,{datarc}"


def _run(command: list[str], log: Path) -> None:
    print("$ " + " ".join(command), flush=True)
    print(f"  (s3prl's progress bars and log: {log})", flush=True)
    with open(log, "a") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.exit(f"error: the command failed (exit {result.returncode}); see {log}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s3prl_plugins.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_run"), help="work folder (default demo_run)")
    parser.add_argument("--entry", default="m2d_local", help="upstream entry (default m2d_local)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"training steps per task (default {STEPS})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    args = parser.parse_args(argv)

    from . import hub
    from ._cli import s3prl_package_dir
    from .upstreams.common.family import make_test_checkpoint
    from .data import make_ic, make_ks

    if args.entry not in hub.__all__:
        sys.exit(f"error: unknown entry {args.entry!r}; choose one of: {', '.join(hub.__all__)}")
    out = args.out.resolve()
    start = time.time()
    data = {"ks": make_ks(out / "data" / "speech_commands"), "ic": make_ic(out / "data" / "fluent_speech_commands")}
    print(f"generated KS and IC speech in {out / 'data'}")
    spec = make_test_checkpoint(args.entry, out / "checkpoint")
    upstream = ["-u", args.entry]
    if spec.get("ckpt"):
        upstream += ["-k", str(spec["ckpt"])]
    if spec.get("model_config"):
        upstream += ["-g", str(spec["model_config"])]
    print(f"random-weight checkpoint for {args.entry}: {spec.get('ckpt') or '(in the download cache)'}")

    results = {}
    for task in ("speech_commands", "fluent_commands"):
        expdir = out / "runs" / task
        log = out / "runs" / f"{task}.log"
        expdir.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        if expdir.exists():
            import shutil

            shutil.rmtree(expdir)
        # the task config that install_into_s3prl.py placed (s3prl's default path is cwd-relative)
        config = s3prl_package_dir() / "downstream" / task / "config.yaml"
        if not config.is_file():
            sys.exit(f"error: {config} is missing; run `python install_into_s3prl.py` first.")
        _run([sys.executable, "-m", "s3prl.run_downstream", "-m", "train", *upstream, "-d", task, "-c", str(config),
              "-p", str(expdir), "--device", args.device, "-o", _overrides(task, data, args.steps)], log)
        _run([sys.executable, "-m", "s3prl_plugins.run_downstream", "-m", "evaluate",
              "-e", str(expdir / "dev-best.ckpt"), "--device", args.device], log)
        tests = re.findall(r"^test at step \d+: ([0-9.]+)$", (expdir / "log.log").read_text(), re.M)
        results[task] = float(tests[-1])
    print(f"\ndone in {time.time() - start:.0f} s (random-weight {args.entry}, {args.steps} steps):")
    for task, acc in results.items():
        name = {"speech_commands": "KS", "fluent_commands": "IC"}[task]
        print(f"  {name} test accuracy: {acc:.4f}   predictions: {out / 'runs' / task}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
