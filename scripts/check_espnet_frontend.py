#!/usr/bin/env python
"""ESPnet's real ``S3prlFrontend`` over one entry of each family: build, forward, backward.

Run in an environment with ESPnet and ESPnet's s3prl fork, after ``install_into_s3prl.py``::

    pip install "pip<26"      # pip 26 refuses ci_sdr's metadata (a dependency of espnet 202511)
    pip install espnet==202511 espnet-s3prl==2026.5.14 torch==2.12.1 torchaudio==2.11.0
    pip install --no-deps -e . && python install_into_s3prl.py
    python scripts/check_espnet_frontend.py

For each entry: a small random-weight checkpoint in its official format, then
``espnet2.asr.frontend.s3prl.S3prlFrontend(frontend_conf={"upstream": ENTRY, "path_or_url": CKPT,
"extra_conf": {...}}, multilayer_feature=True)`` exactly as an ESPnet config builds it, switched to
train mode as ESPnet's trainer does, forward on a padded batch with lengths, backward; checked: the
output lengths, finite features, and gradients in the upstream. Exit status 0 = every entry passed.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ENTRIES = ("m2d_local", "melhubert_local", "armhubert_local", "starhubert_local", "dasheng_local")
LENGTHS = (16000, 11200, 5321)


def check(entry: str, folder: Path) -> str:
    import torch
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    from s3prl_plugins.upstreams.common.family import make_test_checkpoint

    spec = make_test_checkpoint(entry, folder)
    conf = {"upstream": entry, "path_or_url": str(spec["ckpt"])}
    if spec.get("model_config") is not None:
        conf["extra_conf"] = {"model_config": str(spec["model_config"])}
    frontend = S3prlFrontend(fs=16000, frontend_conf=conf, multilayer_feature=True)
    frontend.train()
    generator = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(n, generator=generator) for n in LENGTHS]
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    feats, feat_lengths = frontend(padded, torch.tensor(LENGTHS))
    rate = frontend.hop_length
    expected = [(n - 1) // rate + 1 for n in LENGTHS]
    if feat_lengths.tolist() != expected:
        raise AssertionError(f"lengths {feat_lengths.tolist()} != {expected}")
    if not torch.isfinite(feats).all():
        raise AssertionError("non-finite features")
    valid = torch.arange(feats.shape[1])[None, :] < feat_lengths[:, None]
    (feats * valid[..., None]).square().mean().backward()
    with_grad = sum(1 for p in frontend.upstream.parameters() if p.grad is not None and p.grad.abs().sum() > 0)
    if with_grad == 0:
        raise AssertionError("no gradient reached the upstream")
    return f"features {tuple(feats.shape)}, hop {rate}, {with_grad} upstream tensors with gradients"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("entries", nargs="*", default=list(ENTRIES), help=f"entries to check (default: {ENTRIES})")
    args = parser.parse_args(argv)
    import espnet
    import s3prl
    import torch

    print(f"espnet {espnet.__version__}, s3prl {s3prl.__version__} ({s3prl.__file__}), torch {torch.__version__}")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for entry in args.entries:
            start = time.perf_counter()
            try:
                result = check(entry, Path(tmp) / entry)
                print(f"PASS {entry}: {result} ({time.perf_counter() - start:.1f} s)")
            except Exception as error:  # noqa: BLE001 - report every entry
                failures += 1
                print(f"FAIL {entry}: {type(error).__name__}: {error}")
    print(f"{len(args.entries) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
