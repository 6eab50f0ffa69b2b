#!/usr/bin/env bash
# Install (if needed), build the demo store (if it is the store served and missing or empty) and start the dashboard on
# localhost. GENUINE_DB names another store; a relative path is taken from the caller's directory, as by `genuine`.
set -euo pipefail
db=$(printf '%s' "${GENUINE_DB:-}" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')  # blank: the demo store
case "$db" in
  "" | /*) ;;
  "~"/*) db=$HOME/${db#"~/"} ;;
  *) db=$PWD/$db ;;
esac
cd "$(dirname "$0")/.."
bash scripts/setup.sh
demo=$PWD/demo/genuine_demo.duckdb
db=${db:-$demo}
if [ ! -s "$db" ] && [ "$(realpath -m "$db")" = "$(realpath -m "$demo")" ]; then  # missing or empty (`touch`)
  echo "run: building the demo store at $db (a few minutes, once)"
  .venv/bin/genuine demo --out "$db"
elif [ ! -e "$db" ]; then  # a lab's new store (or a typo): never filled with demo data
  echo "run: $db does not exist yet; the dashboard starts empty, and the first ingest (Ingest page) creates it"
fi
export GENUINE_DB="$db"
exec .venv/bin/streamlit run app.py --server.address "${GENUINE_ADDRESS:-127.0.0.1}" \
  --server.port "${GENUINE_PORT:-8501}" --server.headless true --browser.gatherUsageStats false --client.toolbarMode minimal \
  --server.fileWatcherType none
