#!/usr/bin/env bash
# One command from a fresh Linux machine to a working install and a real SUPERB run:
#   system packages -> a virtual environment with one tested dependency set -> this package
#   -> install_into_s3prl.py -> generated speech data -> run_downstream.py train + evaluate of KS and IC.
# Options: --env current|floor|espnet (default current: today's releases, requirements.txt;
# floor: torch 2.8 + s3prl 0.4.18, requirements/floor.txt; espnet: today's releases with ESPnet's
# s3prl fork, requirements/espnet.txt), --no-demo (stop after the install). Re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
DEMO=1
ENV_NAME=current
while [ $# -gt 0 ]; do
  case "$1" in
    --no-demo) DEMO=0 ;;
    --env) ENV_NAME="${2:?--env needs a name: current, floor or espnet}"; shift ;;
    --env=*) ENV_NAME="${1#--env=}" ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1 (use --env NAME, --no-demo or --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$ENV_NAME" in
  current) REQUIREMENTS=requirements.txt ;;
  floor|espnet) REQUIREMENTS="requirements/$ENV_NAME.txt" ;;
  *) echo "unknown environment: $ENV_NAME (current, floor or espnet)" >&2; exit 2 ;;
esac

say() { printf '\n== [%s] %s\n' "$ENV_NAME" "$*"; }

# 1. System packages: espeak-ng (speech for the generated data), sox + libsox-dev (torchaudio <= 2.8's
#    sox effects, used by s3prl's keyword-spotting task), zip (s3prl's submission packer).
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

# 2. The virtual environment. Each dependency set has its own, kept in a cache folder so that a fresh
#    clone (CI) reuses it; .venv in the repository points at the current one.
VENVS="${S3PRL_PLUGINS_VENVS:-$HOME/.cache/s3prl-plugins/venvs}"
VENV="$VENVS/$ENV_NAME"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" - <<'PY' || { echo "error: Python 3.10-3.12 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)
PY
  say "creating $VENV with $("$PYTHON" --version)"
  mkdir -p "$VENVS"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$ENV_NAME" = current ]; then
  if [ -e .venv ] && [ ! -L .venv ]; then
    echo "note: .venv is a folder of its own; the current environment is $VENV" >&2
  else
    ln -sfn "$VENV" .venv
  fi
fi
stamp="$VENV/.s3prl_plugins_deps"
want="$(cat "$REQUIREMENTS" requirements/common.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log="$VENV/pip-install.log"
  say "installing $REQUIREMENTS with the current pip (first time: torch is a large download; log: $log)"
  set +e
  "$VENV/bin/python" -m pip install -q --upgrade pip > "$log" 2>&1
  # one line per package as pip goes (the whole output is in the log)
  "$VENV/bin/python" -m pip install -r "$REQUIREMENTS" 2>&1 | tee -a "$log" \
    | grep --line-buffered -E '^(Collecting|Successfully installed|ERROR)'
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then echo "error: pip could not install $REQUIREMENTS; see $log" >&2; exit 1; fi
  echo "$want" > "$stamp"
fi
# This checkout, editable (a fresh clone re-points the cached environment at itself).
if [ "$(cat "$VENV/.s3prl_plugins_repo" 2>/dev/null)" != "$REPO" ] || ! "$VENV/bin/python" -c 'import s3prl_plugins' 2>/dev/null; then
  say "installing this package (editable) from $REPO"
  "$VENV/bin/python" -m pip install -q --no-deps -e . > "$VENV/pip-editable.log" 2>&1 \
    || { echo "error: pip install -e . failed; see $VENV/pip-editable.log" >&2; exit 1; }
  echo "$REPO" > "$VENV/.s3prl_plugins_repo"
fi

# 3. Register the entries, shims, task configs and recipes in the installed s3prl (idempotent).
say "install_into_s3prl.py"
"$VENV/bin/python" install_into_s3prl.py

if [ "$DEMO" = 1 ]; then
  # 4. Generated KS + IC data and a real run_downstream.py train/evaluate with one of our upstreams.
  say "demo: SUPERB KS and IC on generated speech"
  "$VENV/bin/python" -m s3prl_plugins.demo --out demo_run
fi
