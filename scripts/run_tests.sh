#!/usr/bin/env bash
# The test suite on each tested environment, from a fresh clone: for current (today's releases),
# floor (torch 2.8 + s3prl 0.4.18) and espnet (today's releases with ESPnet's s3prl fork) it sets
# up what is missing (scripts/setup.sh --no-demo --env NAME), then runs pytest there.
# `--env NAME` (repeatable) picks environments; other arguments go to pytest, e.g.
# `scripts/run_tests.sh --env current -k m2d -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
envs=()
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --env) envs+=("${2:?--env needs a name}"); shift ;;
    --env=*) envs+=("${1#--env=}") ;;
    *) args+=("$1") ;;
  esac
  shift
done
[ ${#envs[@]} -gt 0 ] || envs=(current floor espnet)
export PYTHONUNBUFFERED=1
VENVS="${S3PRL_PLUGINS_VENVS:-$HOME/.cache/s3prl-plugins/venvs}"
failed=()
summary=()
declare -A totals=()
for name in "${envs[@]}"; do
  bash scripts/setup.sh --no-demo --env "$name"
  printf '\n== [%s] pytest\n' "$name"
  start=$(date +%s)
  log="$(mktemp)"
  set +e
  # Two workers: the suite is dominated by single-threaded s3prl runs, so both cores stay busy.
  "$VENVS/$name/bin/python" -m pytest -q -n "${PYTEST_WORKERS:-2}" --durations=15 ${args[@]+"${args[@]}"} 2>&1 \
    | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  # pytest exits 5 when nothing was collected: a selection that matches no test is not a failure.
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then failed+=("$name"); fi
  result="$(grep -E '^=*.*[0-9]+ (passed|failed|error|skipped|deselected)' "$log" | tail -n 1 | tr -d '=')"
  summary+=("$name: ${result:-no result line} (exit $status, $(( $(date +%s) - start )) s)")
  for kind in passed failed skipped error; do
    count=$(grep -oE "[0-9]+ $kind" <<<"$result" | grep -oE '^[0-9]+' || echo 0)
    totals[$kind]=$(( ${totals[$kind]:-0} + count ))
  done
  rm -f "$log"
done
printf '\n== summary\n'
printf '  %s\n' "${summary[@]}"
echo "total: ${totals[passed]} passed, $(( totals[failed] + totals[error] )) failed, ${totals[skipped]} skipped"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed on: ${failed[*]}"
  exit 1
fi
