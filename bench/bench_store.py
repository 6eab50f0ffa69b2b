"""Store benchmarks: ingest throughput end to end, and dashboard query latency at demo size and at 1M nuclei.

Usage (from the repository root)::

    python bench/bench_store.py                       # everything, writes bench/results/store.json
    python bench/bench_store.py --skip-ingest         # query latency only
    python bench/bench_store.py --nuclei 200000       # smaller scaled store
    python bench/bench_store.py --build-demo          # also time `genuine demo` from scratch

1. Ingest: scan files (the real image when present, plus synthetic 512 x 512 fields of
   the demo benchmark) -> committed rows, with the default segmenter and the shipped
   ``cpu``-preset models (untrained ``cpu`` models when none are shipped yet), once with
   every model and once with the GENUINE model alone. nuclei/s = stored nuclei / wall time.
   Wall time depends on other load on the machine; CPU seconds of the process are recorded too.
2. Query latency on the demo store (``--demo``, opened read-only) and on a fresh store
   filled with ``--nuclei`` synthetic nuclei x 4 models (``store.scale``): sample summaries
   (every sample x model), the first review-queue page (all samples; one sample), review
   progress. Median of ``--repeats`` warm runs, plus the first (cold) run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _timed(fn, repeats: int) -> dict:
    t = time.perf_counter()
    fn()
    cold = time.perf_counter() - t
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t)
    return {"cold_s": round(cold, 4), "median_s": round(statistics.median(warm), 4), "max_s": round(max(warm), 4)}


def query_latency(store, repeats: int) -> dict:
    """Latency of the dashboard's heavy queries on an open store."""
    from store import review, summary
    from store.check import store_info
    from store.samples import list_samples

    scanned = list_samples(store).query("n_scans > 0").sort_values(["n_scans", "name"], ascending=[False, True])
    one = scanned["name"].iloc[0] if len(scanned) else None  # the sample with the most scans
    out = {
        "sample_summaries_all": _timed(lambda: summary.sample_summaries(store), repeats),
        "review_queue_page": _timed(lambda: review.review_queue(store, limit=50), repeats),
        "review_queue_one_sample": _timed(lambda: review.review_queue(store, sample=one, limit=50), repeats),
        "review_queue_page_20": _timed(lambda: review.review_queue(store, limit=50, offset=950), repeats),
        "review_progress": _timed(lambda: review.review_progress(store), repeats),
    }
    counts = store_info(store)["counts"]
    out["n_nuclei"], out["n_predictions"] = counts["nuclei"], counts["predictions"]
    out["n_summary_rows"] = int(len(summary.sample_summaries(store)))
    return out


def ingest_throughput(files: list[Path], model_dirs, work: Path, genuine_only: bool) -> dict:
    """Ingest ``files`` into a fresh store; nuclei/s and time per stage."""
    from store.db import Store
    from store.demo import demo_models
    from store.ingest import ingest_files

    models = demo_models(model_dirs, work, mc_samples=10)
    if genuine_only:
        models = [m for m in models if m.kind == "genuine"][:1]
    db = work / ("ingest_genuine.duckdb" if genuine_only else "ingest_all.duckdb")
    with Store(db) as store:
        t, cpu = time.perf_counter(), time.process_time()
        report = ingest_files(store, files, "bench", kind="case", models=models, progress=False, place_umap=False)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    stages: dict[str, float] = {}
    for o in report.outcomes:
        for k, v in o.stages.items():
            stages[k] = stages.get(k, 0.0) + v
    return {
        "models": [f"{m.name} ({m.kind}, {m.preset})" for m in models],
        "scans": report.count("stored"), "failed": report.count("failed"), "nuclei": report.n_nuclei,
        "seconds": round(wall, 2), "nuclei_per_s": round(report.n_nuclei / wall, 2) if wall else None,
        # CPU seconds of this process (all threads): less sensitive to other load on a shared machine;
        # with 2 threads on 2 idle cores, wall time would be about cpu_seconds / 2
        "cpu_seconds": round(cpu, 2), "nuclei_per_cpu_s": round(report.n_nuclei / cpu, 2) if cpu else None,
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=REPO / "demo" / "genuine_demo.duckdb", help="demo store")
    ap.add_argument("--models", nargs="+", type=Path, default=None, help="model folders (default shipped)")
    ap.add_argument("--fields", type=int, default=24, help="synthetic fields in the ingest benchmark")
    ap.add_argument("--nuclei", type=int, default=1_000_000, help="nuclei in the scaled store")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--build-demo", action="store_true",
                    help="time `genuine demo` from scratch (fresh benchmark, shipped models) and measure on it")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "store.json")
    args = ap.parse_args(argv)

    import os

    import torch

    torch.set_num_threads(2)
    from store.db import Store
    from store.demo import REAL_IMAGE, DemoConfig, make_demo_benchmark
    from store.scale import populate_synthetic

    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                 "torch_threads": torch.get_num_threads(),
                                 "load_avg_at_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp:
        work = Path(tmp)
        if not args.skip_ingest:
            bench = REPO / "demo" / "demo_benchmark"
            bench = make_demo_benchmark(bench, DemoConfig(), progress=False)
            fields = sorted(p for p in (bench / "fields").glob("*.tif") if not p.stem.endswith("_masks"))
            step = max(1, len(fields) // args.fields)
            files = fields[::step][: args.fields] + ([REAL_IMAGE] if REAL_IMAGE.is_file() else [])
            results["ingest_all_models"] = ingest_throughput(files, args.models, work, genuine_only=False)
            print("ingest, all models:", results["ingest_all_models"], flush=True)
            results["ingest_genuine_only"] = ingest_throughput(files, args.models, work, genuine_only=True)
            print("ingest, GENUINE only:", results["ingest_genuine_only"], flush=True)
            results["ingest_files"] = [str(f.relative_to(REPO.parent)) if f.is_relative_to(REPO.parent) else str(f)
                                       for f in files]
        if args.build_demo:
            from store.demo import build_demo

            t, cpu = time.perf_counter(), time.process_time()
            rep = build_demo(work / "demo" / "genuine_demo.duckdb", progress=False)
            results["demo_build"] = {"wall_s": round(time.perf_counter() - t, 1),
                                     "cpu_s": round(time.process_time() - cpu, 1), "stages_s": rep["seconds"],
                                     "n_nuclei": rep["n_nuclei"], "models": rep["models"],
                                     "samples": len(rep["samples"]), "failed": rep["failed"]}
            print("demo build:", results["demo_build"], flush=True)
            args.demo = Path(rep["path"])
        if args.demo.is_file():
            with Store(args.demo, read_only=True) as store:
                results["demo_store"] = query_latency(store, args.repeats)
            print("demo store:", results["demo_store"], flush=True)
        else:
            print(f"no demo store at {args.demo}; build it with `genuine demo`", flush=True)
        if not args.skip_scale:
            db = work / "scaled.duckdb"
            with Store(db) as store:
                t = time.perf_counter()
                added = populate_synthetic(store, n_nuclei=args.nuclei, n_models=4)
                fill = time.perf_counter() - t
            with Store(db, read_only=True) as store:
                lat = query_latency(store, args.repeats)
            lat.update(fill_seconds=round(fill, 1), file_mb=round(db.stat().st_size / 1e6, 1), added=added)
            results["scaled_store"] = lat
            print("scaled store:", lat, flush=True)
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
