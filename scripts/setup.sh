#!/usr/bin/env bash
# One command from a fresh Linux machine to a working install and a real SUPERB run:
#   system packages -> .venv with the pinned dependencies -> this package -> install_into_s3prl.py
#   -> generated speech data -> run_downstream.py train + evaluate of KS and IC (prints accuracies).
# Re-running is cheap: each step is skipped when already done. `--no-demo` stops after the install.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=1
for arg in "$@"; do
  case "$arg" in
    --no-demo) DEMO=0 ;;
    -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $arg (use --no-demo or --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\n== %s\n' "$*"; }

# 1. System packages: espeak-ng (speech for the generated data), sox + libsox-dev (torchaudio's
#    sox effects that s3prl's keyword-spotting task uses), zip (s3prl's submission packer).
missing=()
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v sox >/dev/null || missing+=(sox)
ldconfig -p 2>/dev/null | grep -q 'libsox\.so ' || [ -e /usr/lib/x86_64-linux-gnu/libsox.so ] || missing+=(libsox-dev)
command -v zip >/dev/null || missing+=(zip)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
      echo "error: need root (or sudo) to install ${missing[*]}; install them and re-run." >&2; exit 1; fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q "${missing[@]}"
fi

# 2. Python environment with the tested pins (torch/torchaudio 2.8, s3prl 0.4.18, ...).
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" - <<'PY' || { echo "error: Python 3.10-3.12 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)
PY
  say "creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.s3prl_plugins_deps
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing the pinned dependencies (first time: torch is a large download)"
  # pip >= 24.1 refuses catalyst 22.4 (malformed extra in its metadata), which s3prl's KS task imports.
  .venv/bin/python -m pip install -q "pip>=23,<24.1"
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi

# 3. Register the entries, task configs and recipes in the installed s3prl (idempotent).
say "install_into_s3prl.py"
.venv/bin/python install_into_s3prl.py

if [ "$DEMO" = 1 ]; then
  # 4. Generated KS + IC data and a real run_downstream.py train/evaluate with one of our upstreams.
  say "demo: SUPERB KS and IC on generated speech"
  .venv/bin/python -m s3prl_plugins.demo --out demo_run
fi
