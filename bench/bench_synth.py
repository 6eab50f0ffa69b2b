"""Throughput of the synthetic FISH generator.

Measures (1) ``make_field`` alone (nuclei rendered per second, in memory) and
(2) ``make_benchmark`` end to end (render + TIFF write/read + patch extraction +
parquet), with 1 and 2 worker processes. Wall-clock rates depend on what else runs
on the machine, so CPU-time rates (nuclei per CPU-second) are recorded as well, with
the load average. Writes bench/results/bench_synth.json.

    python bench/bench_synth.py                # ~1 min on a 2-core machine
    python bench/bench_synth.py --full         # also times the full `--size cpu` benchmark
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genuine_core.synth import DEFAULT_LINES, BenchmarkSize, make_benchmark, make_field  # noqa: E402


def bench_fields(n_fields: int, seed: int = 0) -> dict:
    comp = {line.name: 1.0 for line in DEFAULT_LINES}
    rng = np.random.default_rng(seed)
    make_field(rng, comp, 25)  # warm-up
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n_fields):
        n += len(make_field(rng, comp, 25).nuclei)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"fields": n_fields, "nuclei": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "nuclei_per_s": round(n / wall, 1), "nuclei_per_cpu_s": round(n / cpu, 1),
            "field_shape": [512, 512], "nuclei_per_field": 25}


def bench_benchmark(size: BenchmarkSize | str, workers: int, seed: int = 0) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        t0, c0 = time.perf_counter(), os.times()
        summary = make_benchmark(tmp / "b", seed=seed, size=size, workers=workers, progress=False)
        wall, c1 = time.perf_counter() - t0, os.times()
        # CPU of this process and of the (joined) worker processes
        cpu = (c1.user + c1.system + c1.children_user + c1.children_system
               - c0.user - c0.system - c0.children_user - c0.children_system)
        n = summary["n_nuclei"]
        du = sum(p.stat().st_size for p in (tmp / "b").rglob("*") if p.is_file())
        return {"size": size if isinstance(size, str) else size.name, "workers": workers, "nuclei": n,
                "wall_s": round(wall, 2), "nuclei_per_s": round(n / wall, 1), "cpu_s": round(cpu, 2),
                "nuclei_per_cpu_s": round(n / cpu, 1), "disk_mb": round(du / 2**20, 1),
                "label_noise_rate": round(summary["label_noise_rate"], 4)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fields", type=int, default=16)
    ap.add_argument("--full", action="store_true", help="also time the full --size cpu benchmark (2 workers)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_synth.json"))
    args = ap.parse_args(argv)
    small = BenchmarkSize("bench", nuclei_per_line=250, mixture_nuclei=64, patch_size=96)
    res = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_start": list(os.getloadavg())},
        "make_field": bench_fields(args.fields),
        "make_benchmark": [bench_benchmark(small, 1), bench_benchmark(small, 2)],
    }
    if args.full:
        res["make_benchmark"].append(bench_benchmark("cpu", 2))
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
