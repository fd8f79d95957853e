"""Generate small real-speech data sets (espeak-ng voices, 16 kHz) in SUPERB/LibriSpeech layouts.

Examples::

    python -m s3prl_plugins.data all --out data/          # everything below, about 20 s
    python -m s3prl_plugins.data ks  --out data/speech_commands
    python -m s3prl_plugins.data ic  --out data/fluent_speech_commands
    python -m s3prl_plugins.data librispeech --out data/LibriSpeech
    python -m s3prl_plugins.data noise --out data/noise

The same ``--seed`` always gives the same files. Then point s3prl at them, e.g. for KS:
``-o "config.downstream_expert.datarc.speech_commands_root=data/speech_commands/train,,
config.downstream_expert.datarc.speech_commands_test_root=data/speech_commands/test"``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import datasets
from .synth import SynthesisError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m s3prl_plugins.data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", choices=["all", "ks", "ic", "librispeech", "noise"], help="which data set to make")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same files")
    parser.add_argument("--workers", type=int, default=2, help="parallel espeak-ng processes (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    progress = datasets._plain if args.quiet else datasets._tqdm
    make = {
        "all": datasets.make_all, "ks": datasets.make_ks, "ic": datasets.make_ic,
        "librispeech": datasets.make_librispeech, "noise": datasets.make_noise,
    }[args.what]
    start = time.time()
    try:
        info = make(args.out, seed=args.seed, progress=progress, workers=args.workers)
    except SynthesisError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.what} data to {args.out} in {time.time() - start:.1f} s")
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"  {key}: {value.get('root')}")
        elif key in ("root", "test_root", "bucket_dir"):
            print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
