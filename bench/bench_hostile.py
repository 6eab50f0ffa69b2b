"""Every hostile input kind of issue 6 through ``genuine ingest`` (a real process each), store checked after.

For each case of ``tests/hostile_cases.py`` (non-images with image extensions, truncated
and corrupt files, decompression bombs, the pixel limit, bit depths and float TIFFs with
NaN/inf, 1-17 channels, channel-first/last, empty and full fields), the file is ingested
into a fresh copy of a store holding one scan, and the store is compared before/after
(row counts of every table, sha256 of the file, the files beside it).

Writes ``bench/results/hostile.json``: ``{"cases": [{input, outcome (refused|accepted),
message, store_unchanged, expected, exit_code, seconds}], "summary": {...}, "command": ...}``.

    python bench/bench_hostile.py [--models DIR] [--out bench/results/hostile.json]

``--models`` defaults to a tiny untrained ratio model built on the fly (what is tested
here is the input handling, not the classifier).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genuine_core.cli", *args], check=False, capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=REPO, timeout=600)


def _message(proc: subprocess.CompletedProcess, path: Path) -> str:
    """The one line that names what happened to the file (its folder left out)."""
    lines = [line.split(None, 1)[1] for line in proc.stdout.splitlines()
             if line.startswith(("failed", "stored", "duplicate"))]
    lines += [line[len("error:"):].strip() for line in proc.stderr.splitlines() if line.startswith("error:")]
    text = lines[0] if lines else (proc.stderr.strip().splitlines() or ["?"])[-1]
    text = text.replace(f"{path}: ", "", 1)  # the outcome line's own "path: " prefix
    return text.replace(str(path), path.name)


def main() -> int:
    from conftest import make_toy_scan
    from hostile_cases import hostile_cases, store_snapshot

    from genuine_core.io import write_scan_tiff

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=None, help="model folder(s) to run (default: a tiny ratio model)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "hostile.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="hostile_") as tmp:
        tmp = Path(tmp)
        models = args.models
        if models is None:
            from genuine_core.models import build_model, preset_config

            models = tmp / "models"
            build_model(preset_config("tiny", "ratio")).save(models / "tiny-ratio")
        base = tmp / "base" / "store.duckdb"
        good = tmp / "good.tif"
        write_scan_tiff(good, make_toy_scan(seed=3).image)
        proc = _run(["ingest", str(good), "--sample", "BASE", "--db", str(base), "--models", str(models), "--quiet",
                     "--no-umap"], {})
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return 1
        rows = []
        for k, case in enumerate(hostile_cases()):
            work = tmp / f"case{k:02d}"
            (work / "in").mkdir(parents=True)
            db = work / "store.duckdb"
            shutil.copy(base, db)
            path = work / "in" / case.filename
            path.write_bytes(case.data)
            before = store_snapshot(db)
            t0 = time.perf_counter()
            proc = _run(["ingest", str(path), "--sample", "HOSTILE", "--db", str(db), "--models", str(models),
                         "--quiet", "--no-umap"] + (["--channels", case.channels] if case.channels else []), case.env)
            seconds = time.perf_counter() - t0
            after = store_snapshot(db)
            outcome = "accepted" if proc.returncode == 0 else "refused"
            row = {"input": case.name, "outcome": outcome, "message": _message(proc, path),
                   "store_unchanged": after == before, "expected": case.expect, "exit_code": proc.returncode,
                   "seconds": round(seconds, 2)}
            if outcome == "accepted":
                row["scans_added"] = after["counts"]["scans"] - before["counts"]["scans"]
                row["nuclei_added"] = after["counts"]["nuclei"] - before["counts"]["nuclei"]
            rows.append(row)
            print(f"{row['outcome']:8s} unchanged={row['store_unchanged']!s:5s} {case.name}: {row['message']}",
                  flush=True)
    refused = [r for r in rows if r["outcome"] == "refused"]
    summary = {
        "cases": len(rows), "refused": len(refused), "accepted": len(rows) - len(refused),
        "refused_with_store_unchanged": sum(r["store_unchanged"] for r in refused),
        "as_expected": sum(r["outcome"] == r["expected"] for r in rows),
        "accepted_each_added_one_scan": all(r.get("scans_added") == 1 for r in rows if r["outcome"] == "accepted"),
    }
    out = {"command": "python bench/bench_hostile.py" + (f" --models {args.models}" if args.models else ""),
           "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_avg": [round(x, 2) for x in os.getloadavg()]},
           "summary": summary, "cases": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary))
    return 0 if summary["as_expected"] == len(rows) and summary["refused_with_store_unchanged"] == len(refused) else 1


if __name__ == "__main__":
    sys.exit(main())
