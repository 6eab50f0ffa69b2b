#!/usr/bin/env bash
# Install (if needed), build the demo store (if missing) and start the dashboard on localhost.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DB=${GENUINE_DB:-demo/genuine_demo.duckdb}
if [ ! -f "$DB" ]; then
  echo "run: building the demo store at $DB (a few minutes, once)"
  .venv/bin/genuine demo --out "$DB"
fi
export GENUINE_DB="$DB"
exec .venv/bin/streamlit run app.py --server.address "${GENUINE_ADDRESS:-127.0.0.1}" \
  --server.port "${GENUINE_PORT:-8501}" --server.headless true --browser.gatherUsageStats false --client.toolbarMode minimal \
  --server.fileWatcherType none
