"""Crash-consistency benchmark: SIGKILL ``genuine ingest`` / ``genuine umap`` / a checkpoint at many points.

Usage (from the repository root)::

    python bench/bench_crash.py                  # 30 random + every named stage; bench/results/crash.json
    python bench/bench_crash.py --rounds 10 --checkpoint-rounds 10 --umap-rounds 2

Workload: a batch of ``--scans`` synthetic 256 x 256 fields (5 nuclei each) ingested
with two tiny random-init models (GENUINE and ResNet) into a store that already holds
two scans and a fitted UMAP per model (so every ingest also places nuclei on the maps).

Ingest rounds, each on a fresh copy of that store: start ``genuine ingest`` of the batch
and SIGKILL it at a named stage (``GENUINE_TEST_KILL_AT``: after reading scan k, after
model inference, inside scan k's transaction before COMMIT, right after scan k's
COMMIT), just after the process starts, or after a seeded random delay, uniform over the
ingest's duration measured on a clean run. A round *survives* when, after the kill, the
store opens, ``genuine store check`` passes, every scan present is complete and equal to
the clean reference ingest, no UMAP map file is half-written; and a re-run then exits 0
with the store equal to the reference (counts, per-nucleus predictions, embeddings,
UMAP coordinates).

Checkpoint rounds: the store as a kill after the batch's last COMMIT left it (batch in the
write-ahead log only) is opened for writing (WAL replay) and checkpointed by a process
killed after a random delay (a quarter over the replay, the rest over checkpoint and
close, timed on a clean run); the store must then equal what was committed. Each round
records where the kill landed. UMAP rounds: ``genuine
umap`` killed at its named stages and at random delays; the check must pass and no map
file be half-written, and a complete re-run must leave only the current maps.

The harness is ``tests/test_crash.py`` (the slow test runs a shorter chain of the same rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import test_crash as tc  # the shared harness (tests/ is on the path above)


def ingest_points(n_scans: int, rounds: int, seconds: float, rng: np.random.Generator) -> list[dict]:
    """Every named stage (first, middle and last scan where it matters), a kill just after start, random delays."""
    mid = max(1, n_scans // 2)
    points = [{"point": "start 0.30 s", "delay": 0.3, "after_start": True},
              {"point": "ingest began (0 s)", "delay": 0.0}]
    for stage in tc.INGEST_STAGES:
        ks = [1] if stage == "scored" else sorted({1, mid, n_scans})
        points += [{"point": f"stage {stage}:{k}", "kill_at": f"{stage}:{k}"} for k in ks]
    for d in rng.uniform(0.0, seconds, rounds):
        points.append({"point": f"delay {d:.2f} s", "delay": float(d)})
    return points


def ingest_round_with_rerun(w: tc.Workload, db: Path, reference: dict, spec: dict) -> dict:
    """Fresh copy of the base store; kill; verify; re-run to completion; verify equal to the reference."""
    tc.copy_store(w.base_db, db)
    r = tc.ingest_round(w, db, reference, spec["point"], kill_at=spec.get("kill_at"), delay=spec.get("delay"),
                        after_start=spec.get("after_start", False))
    rerun = tc.run_genuine(w.ingest_args(db))
    problems = list(r.problems)
    if rerun.returncode != 0:
        problems.append(f"re-run exited {rerun.returncode}: {rerun.output[-500:]}")
    final = tc.verify_complete(db, reference) + tc.map_files_problems(db, final=True)
    problems += [f"after re-run: {p}" for p in final]
    return {**asdict(r), "survived": not problems, "problems": problems,
            "after_kill_ok": not r.problems, "rerun_ok": rerun.returncode == 0 and not final,
            "rerun_seconds": round(rerun.seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30, help="random-delay ingest kill rounds (plus every named stage)")
    ap.add_argument("--checkpoint-rounds", type=int, default=20, help="kills during WAL replay + checkpoint")
    ap.add_argument("--umap-rounds", type=int, default=3, help="random-delay umap kill rounds (plus named stages)")
    ap.add_argument("--scans", type=int, default=6, help="scans in the batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "crash.json")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the stores here (default: a temporary folder)")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_crash_") as tmp:
        root = args.workdir or Path(tmp)
        w = tc.make_workload(root, n_batch=args.scans, seed=args.seed)
        umap_named = tc.build_base(w)
        reference, ingest_seconds = tc.reference_ingest(w, root / "reference.duckdb")
        print(f"workload ready: base + UMAP, reference ingest {ingest_seconds:.1f} s after start", flush=True)

        ingest = []
        for spec in ingest_points(len(w.batch), args.rounds, ingest_seconds, rng):
            res = ingest_round_with_rerun(w, root / "round.duckdb", reference, spec)
            ingest.append(res)
            print(f"ingest {res['point']:24s} killed={res['killed']!s:5s} scans_after={res['scans_after']} "
                  f"survived={res['survived']} {res['problems'] or ''}", flush=True)

        # checkpoint: the store as a kill after the batch's last commit leaves it (WAL not yet checkpointed)
        wal_state = root / "wal_state.duckdb"
        tc.copy_store(w.base_db, wal_state)
        run = tc.run_genuine(w.ingest_args(wal_state), kill_at=f"committed:{len(w.batch)}")
        assert run.killed, run.output[-2000:]
        expected = tc.snapshot(wal_state)
        clean = tc.checkpoint_round(wal_state, root / "ck.duckdb", expected, delay=None)
        checkpoint = [asdict(clean) | {"survived": clean.survived}]
        for d in tc.checkpoint_delays(clean, args.checkpoint_rounds, rng):
            r = tc.checkpoint_round(wal_state, root / "ck.duckdb", expected, float(d))
            checkpoint.append(asdict(r) | {"survived": r.survived})
            print(f"checkpoint {r.point:14s} killed={r.killed!s:5s} {r.detail} survived={r.survived}", flush=True)

        # umap: named stages on a copy of the base, then random delays (each on a fresh copy), each re-run
        umap = [asdict(r) | {"survived": r.survived} for r in umap_named]
        umap_seconds = max(r.seconds for r in umap_named)
        for d in rng.uniform(0.0, umap_seconds, args.umap_rounds):
            db = tc.copy_store(w.base_db, root / "umap.duckdb")
            r = tc.umap_round(db, f"delay {d:.2f} s", delay=float(d))
            done = tc.umap_round(db, "re-run", final=True)
            res = asdict(r) | {"problems": r.problems + [f"after re-run: {p}" for p in done.problems]}
            res["survived"] = not res["problems"]
            umap.append(res)
            print(f"umap {r.point} killed={r.killed} survived={res['survived']}", flush=True)

    def summary(rows: list[dict]) -> dict:
        killed = [r for r in rows if r["killed"]]
        return {"rounds": len(rows), "killed": len(killed), "survived": sum(r["survived"] for r in rows),
                "failures": [r for r in rows if not r["survived"]]}

    result = {
        "command": "python bench/bench_crash.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "workload": {"batch_scans": len(w.batch), "nuclei_per_scan": 5, "models": list(tc.MODEL_KINDS),
                     "reference_ingest_seconds_after_start": round(ingest_seconds, 2)},
        "ingest": summary(ingest) | {"points": [r["point"] for r in ingest],
                                     "scans_after_kill": {r["point"]: r["scans_after"] for r in ingest}},
        "checkpoint": summary(checkpoint) | {"phases": {p: sum(r["detail"] == p for r in checkpoint if r["killed"])
                                                        for p in sorted({r["detail"] for r in checkpoint})}},
        "umap": summary(umap) | {"points": [r["point"] for r in umap]},
        "seconds": round(time.perf_counter() - t_start, 1),
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version()},
        "rounds": {"ingest": ingest, "checkpoint": checkpoint, "umap": umap},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    for part in ("ingest", "checkpoint", "umap"):
        s = result[part]
        print(f"{part}: {s['rounds']} rounds, {s['killed']} killed, {s['survived']} survived, "
              f"{len(s['failures'])} failures")
    print(f"wrote {args.out} ({result['seconds']} s)")
    return 0 if all(not result[p]["failures"] for p in ("ingest", "checkpoint", "umap")) else 1


if __name__ == "__main__":
    sys.exit(main())
