#!/usr/bin/env bash
# The environment of benchmarks/bench_official.py: a virtual environment with this package on the
# current dependency set (requirements.txt) plus what the official implementations need
# (fairseq-fixed 0.12.3.1 = fairseq 0.12.2 importable on Python 3.11, timm, einops), registered in
# its s3prl, and the official repositories at their pinned commits (benchmarks/official.py).
# Usage: bash benchmarks/setup_official.sh [--mirrors DIR]   (DIR: local git copies <owner>+<name>)
# Then:  ~/.cache/s3prl-plugins/venvs/official/bin/python benchmarks/bench_official.py --help
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${S3PRL_PLUGINS_VENVS:-$HOME/.cache/s3prl-plugins/venvs}/official"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "== installing requirements.txt, this package and the official code's dependencies (fairseq builds from source: minutes)"
"$VENV/bin/python" -m pip install -q -r requirements.txt
"$VENV/bin/python" -m pip install -q --no-deps -e .
"$VENV/bin/python" -m pip install -q "fairseq-fixed==0.12.3.1" timm einops
"$VENV/bin/python" install_into_s3prl.py
"$VENV/bin/python" benchmarks/official.py fetch "$@"
"$VENV/bin/python" benchmarks/official.py check
echo "ready: $VENV/bin/python benchmarks/bench_official.py"
