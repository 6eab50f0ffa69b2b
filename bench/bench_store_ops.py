"""Large-store operations, before and after a change, alternated in one run: retiring a model, a Review queue page
(All focus and one focus model) with its progress count, and the Cases page's sample summaries.

Each measurement runs in a fresh process importing ``store`` from the checkout given (``--before`` and this
repository), on the same store: retiring works on a copy, which it deletes. Wall seconds and the process's CPU
seconds (all threads; steadier than wall time on a loaded machine). Example (a 1M-nucleus copy of the demo store
built in a temporary folder, as ``bench_pages.py --scale`` builds it)::

    git worktree add /tmp/before <commit>
    python bench/bench_store_ops.py --scale-from demo/genuine_demo.duckdb --before /tmp/before --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPS = ("retire", "queue", "summaries")


def _timed(fn, repeats: int) -> dict:
    fn()  # warm: DuckDB's buffers, imports
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"wall_median": round(statistics.median(wall), 3), "wall_min": round(min(wall), 3),
            "cpu_median": round(statistics.median(cpu), 3)}


def _genuine_model(store) -> str:
    """The first registered GENUINE model (it scored every nucleus of the scaled store)."""
    from store.registry import list_models

    models = list_models(store)
    return str(models.loc[models["kind"] == "genuine", "name"].iloc[0])


def child(op: str, db: Path, repeats: int) -> dict:
    """One measurement in this process (``store`` imported from ``sys.path[0]``)."""
    from store.db import Store

    if op == "retire":
        from store.registry import retire_model

        copy = db.with_name(db.stem + "_retire.duckdb")
        shutil.copy(db, copy)
        try:
            store = Store(copy)
            name = _genuine_model(store)
            t, c = time.perf_counter(), time.process_time()
            retire_model(store, name, by="bench")
            retire, retire_cpu = time.perf_counter() - t, time.process_time() - c
            t = time.perf_counter()
            store.close()  # checkpoints what the commit left in the write-ahead log
            return {"retire_s": round(retire, 3), "retire_cpu_s": round(retire_cpu, 3),
                    "close_s": round(time.perf_counter() - t, 3),
                    "with_close_s": round(time.perf_counter() - t + retire, 3)}
        finally:
            copy.unlink(missing_ok=True)
            Path(str(copy) + ".wal").unlink(missing_ok=True)
    with Store(db, read_only=True) as store:
        if op == "queue":
            from store import review

            model = _genuine_model(store)
            return {"page_all": _timed(lambda: review.review_queue(store, limit=50), repeats),
                    "page_one_model": _timed(lambda: review.review_queue(store, model=model, limit=50), repeats),
                    "progress_all": _timed(lambda: review.review_progress(store), repeats),
                    "progress_one_model": _timed(lambda: review.review_progress(store, model=model), repeats)}
        from store import summary

        return {"sample_summaries": _timed(lambda: summary.sample_summaries(store), repeats)}


def measure(repo: Path, op: str, db: Path, repeats: int) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(repo)!r}); sys.path.insert(1, {str(REPO / 'bench')!r}); "
            f"from bench_store_ops import child; from pathlib import Path; "
            f"print(json.dumps(child({op!r}, Path({str(db)!r}), {repeats})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", type=Path, help="a large store to measure (read; retire works on a copy)")
    src.add_argument("--scale-from", type=Path, help="build a copy of this store plus --nuclei synthetic nuclei")
    ap.add_argument("--nuclei", type=int, default=1_000_000)
    ap.add_argument("--before", type=Path, required=True, help="a checkout of the code before the change")
    ap.add_argument("--rounds", type=int, default=3, help="before/after pairs per operation")
    ap.add_argument("--repeats", type=int, default=5, help="warm repeats of each query per process")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "store_ops.json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_store_ops_") as tmp:
        db = args.db
        if db is None:
            sys.path.insert(0, str(REPO / "bench"))
            from bench_pages import build_scaled

            db = Path(tmp) / "scaled.duckdb"
            shutil.copy(args.scale_from, db)
            build_scaled(db, args.nuclei, 200)
        res = {"load_avg_at_start": os.getloadavg(), "before": str(args.before), "after": str(REPO), "rounds": []}
        for r in range(args.rounds):
            row = {}
            for op in OPS:
                for which, repo in (("before", args.before), ("after", REPO)):
                    row[f"{op}_{which}"] = measure(repo, op, db, args.repeats)
                    print(r, op, which, row[f"{op}_{which}"], flush=True)
            res["rounds"].append(row)
        res["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
