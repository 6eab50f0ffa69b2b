#!/usr/bin/env bash
# Run every benchmark in sequence (nothing else should run on the machine meanwhile).
# Results land in bench/results/*.json; BENCHMARKS.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DB=${GENUINE_DB:-demo/genuine_demo.duckdb}
$PY bench/bench_synth.py
$PY bench/bench_patches.py
$PY bench/bench_segmentation.py --backends watershed
$PY -W ignore bench/bench_inference.py
$PY bench/bench_store.py
$PY bench/bench_pages.py --db "$DB" --browser
