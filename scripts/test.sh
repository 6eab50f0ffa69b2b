#!/usr/bin/env bash
# Install (if needed) and run the whole test suite: fast tests, then the slow ones
# (training smoke runs, kill/load tests, the real-browser test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONHASHSEED=0
run_pytest() {
  # pytest exits 5 when a selection collects no tests; that is not a failure here.
  set +e
  .venv/bin/python -m pytest "$@"
  rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then echo "pytest: no tests selected by: $*"; rc=0; fi
  return "$rc"
}
run_pytest -q "$@"
run_pytest -q -m slow "$@"
