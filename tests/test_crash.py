"""Crash consistency of the store (issue 6, point 4): SIGKILL during ingest, UMAP and checkpoint.

A batch of small synthetic scans (256 x 256 fields, 5 nuclei each) is ingested with two
tiny random-init models into a store that already holds two scans and a fitted UMAP per
model. ``genuine ingest`` of the batch is killed again and again on one store: just
after the process starts, at named stages (``GENUINE_TEST_KILL_AT``, see
``store.ingest._kill_point``: after reading a scan, after model inference, inside a
scan's transaction before COMMIT, right after COMMIT) and after seeded random delays
spread over the ingest; each run re-runs the batch the one before was killed in. After
every kill the store must open, pass ``genuine store check`` and hold only complete
scans (every nucleus scored and embedded by every model, review statistics written) whose
rows equal those of a clean reference ingest. A final run must leave the store equal to
the reference (counts, per-nucleus predictions, embeddings, detections, UMAP coordinates).

A kill right after the batch's last COMMIT (before UMAP placement and before any
checkpoint) leaves the batch in DuckDB's write-ahead log only: its re-run must still place
the nuclei, and processes that open that store (replaying the WAL) and checkpoint it are
killed at random points; nothing may be lost or duplicated. ``genuine umap`` is killed
with a new map file written but not committed, and with a fit committed but its
superseded file not yet removed: the check must pass, no map file may be half-written,
and a complete run must leave only the current maps. ``genuine store check`` must name
what is wrong in a store broken on purpose and exit 1.

The helpers are shared with ``bench/bench_crash.py`` (many rounds, each on a fresh copy).
Everything runs in subprocesses, as a user would run it; most of the time is each
process' start (torch import, about 5 s).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
#: tiny random-init model folders written for the test (no weights are downloaded)
MODEL_KINDS = ("genuine", "resnet")
INGEST_STAGES = ("read", "scored", "commit", "committed")
SAMPLE = "crash-batch"
BASE_SAMPLE = "crash-base"
UMAP_ARGS = ("--neighbors", "5", "--epochs", "20")
#: the ingest's progress bar, printed once the store is open and the models are loaded
INGEST_MARKER = f"ingest {SAMPLE}"
#: in the ingest's last output line, printed once the store is closed ("... stored, ... failed; ...")
INGEST_END = " failed; "
# A process that opens the store for writing (replaying its WAL) and checkpoints it, saying when.
READY, OPENED, CHECKPOINTED = "ready", "opened", "checkpointed"
CHECKPOINT_SCRIPT = f"""import sys
from store.db import Store
print("{READY}", flush=True)
s = Store(sys.argv[1])
print("{OPENED}", flush=True)
s.execute("CHECKPOINT")
print("{CHECKPOINTED}", flush=True)
s.close()
"""


# ----------------------------------------------------------------------------- workload


@dataclass
class Workload:
    """Scan files, model folders and the store a batch is ingested into.

    ``base_db`` holds ``base_scans`` (a cell-line sample) and a fitted UMAP per model, so
    every ingest also places its nuclei on the maps.
    """

    root: Path
    batch: list[Path]
    base_scans: list[Path]
    models: Path
    base_db: Path

    def ingest_args(self, db: Path) -> list[str]:
        """``genuine ingest`` arguments for the batch into ``db``."""
        return ["ingest", *map(str, self.batch), "--sample", SAMPLE, "--db", str(db), "--models", str(self.models),
                "--mc-samples", "0"]


def make_workload(root: Path, n_batch: int = 6, n_base: int = 2, nuclei: int = 5, seed: int = 0) -> Workload:
    """Synthetic 256 x 256 fields (``nuclei`` each) as RGB uint16 TIFFs and tiny model folders.

    The base store is not built yet (see :func:`build_base`).
    """
    from genuine_core.io import write_scan_tiff
    from genuine_core.models import build_model, preset_config, save_model
    from genuine_core.synth.fields import make_field

    rng = np.random.default_rng(seed)
    folder = root / "scans"
    folder.mkdir(parents=True, exist_ok=True)
    scans = []
    for i in range(n_base + n_batch):
        f = make_field(rng, {"mna_dm": 0.5, "nonmna_diploid": 0.5}, nuclei, shape=(256, 256))
        scans.append(folder / f"field_{i:02d}.tif")
        write_scan_tiff(scans[-1], f.image)
    for kind in MODEL_KINDS:
        save_model(build_model(preset_config("tiny", kind=kind, seed=seed)), root / "models" / kind)
    return Workload(root, scans[n_base:], scans[:n_base], root / "models", root / "base.duckdb")


# ----------------------------------------------------------------------------- processes


@dataclass
class Run:
    """One finished (or killed) process."""

    returncode: int
    seconds: float                 # spawn to exit
    output: str
    seen: dict[str, float]         # watched text -> seconds from spawn to its first appearance

    @property
    def killed(self) -> bool:
        """Ended by SIGKILL."""
        return self.returncode == -signal.SIGKILL

    def span(self, start: str, end: str | None = None) -> float | None:
        """Seconds from ``start`` appearing to ``end`` appearing (None: exit); None when either never appeared."""
        if start not in self.seen or (end is not None and end not in self.seen):
            return None
        return (self.seconds if end is None else self.seen[end]) - self.seen[start]


def child_env(kill_at: str | None = None) -> dict[str, str]:
    """Environment of a child process: this repository first on the path, the kill hook only when asked."""
    env = {k: v for k, v in os.environ.items() if k != "GENUINE_TEST_KILL_AT"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    if kill_at:
        env["GENUINE_TEST_KILL_AT"] = kill_at
    return env


def run_process(cmd: list[str], kill_at: str | None = None, delay: float | None = None,
                marker: str | None = None, watch: tuple[str, ...] = (), timeout: float = 600.0) -> Run:
    """Run ``cmd``; SIGKILL it ``delay`` seconds after ``marker`` appears on its output (after spawn
    when ``marker`` is None), unless it has ended by then.

    Args:
        kill_at: ``GENUINE_TEST_KILL_AT`` for the child (it kills itself at that stage).
        watch: more output to time (``Run.seen``, ``Run.span``).
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(kill_at), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    chunks: list[bytes] = []
    seen: dict[str, float] = {}
    marker_seen = threading.Event()
    wanted = [w for w in (marker, *watch) if w]

    def pump() -> None:
        tail = b""
        for chunk in iter(lambda: proc.stdout.read1(1 << 16), b""):
            chunks.append(chunk)
            tail = (tail + chunk)[-(1 << 17):]
            for text in wanted:
                if text not in seen and text.encode() in tail:
                    seen[text] = time.monotonic() - t0
                    if text == marker:
                        marker_seen.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    if delay is not None:
        if marker:
            while not marker_seen.wait(0.02) and proc.poll() is None and time.monotonic() - t0 < timeout:
                pass
        time.sleep(max(0.0, delay))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    seconds = time.monotonic() - t0
    reader.join(10)
    return Run(proc.returncode, seconds, b"".join(chunks).decode(errors="replace"), dict(seen))


def run_genuine(args: list[str], **kwargs) -> Run:
    """``genuine ARGS`` in a subprocess (see :func:`run_process` for the kill options)."""
    return run_process([sys.executable, "-m", "genuine_core.cli", *args], **kwargs)


# ----------------------------------------------------------------------------- store files


def store_files(db: Path) -> list[Path]:
    """The store file, its WAL and its side folder (those that exist)."""
    paths = [db, Path(f"{db}.wal"), db.with_name(db.stem + "_files")]
    return [p for p in paths if p.exists()]


def copy_store(src: Path, dst: Path) -> Path:
    """Copy a store with its WAL and side folder to ``dst`` (replacing what is there)."""
    remove_store(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for p in store_files(src):
        target = dst.with_name(p.name.replace(src.stem, dst.stem, 1))
        if p.is_dir():
            shutil.copytree(p, target)
        else:
            shutil.copy2(p, target)
    return dst


def remove_store(db: Path) -> None:
    """Delete a store, its WAL and side folder."""
    for p in store_files(db):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def store_check(db: Path) -> tuple[int, str]:
    """``genuine store check --db DB`` run in this process: (exit code, printed text).

    A store that cannot be opened at all gives exit code 2 (the CLI's message) or 3 (an
    exception escaped the CLI).
    """
    from genuine_core.cli import main

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = main(["store", "check", "--db", str(db)])
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        return 3, f"{out.getvalue()}{type(exc).__name__}: {exc}"
    return rc, out.getvalue()


# ----------------------------------------------------------------------------- contents

_SNAPSHOT_SQL = {
    "samples": "SELECT name, kind, genotype FROM samples ORDER BY name",
    "models": "SELECT name, kind, checksum FROM models ORDER BY name",
    "scans": "SELECT s.name AS sample, c.sha256, c.file_name, c.n_nuclei, c.n_border_skipped, c.patch_size "
             "FROM scans c JOIN samples s ON s.id = c.sample_id ORDER BY c.sha256",
    "nuclei": "SELECT c.sha256, n.mask_label, n.cy, n.cx, n.area, n.mean_mycn, n.auto_label, n.true_label, "
              "md5(n.patch_png) AS patch FROM nuclei n JOIN scans c ON c.id = n.scan_id ORDER BY 1, 2",
    "predictions": "SELECT c.sha256, n.mask_label, m.name AS model, p.prob, p.prob_calibrated, p.uncertainty, p.call, "
                   "p.det_nmi, p.det_mycn, p.det_cluster FROM predictions p JOIN nuclei n ON n.id = p.nucleus_id "
                   "JOIN scans c ON c.id = n.scan_id JOIN models m ON m.id = p.model_id ORDER BY 1, 2, 3",
    "embeddings": "SELECT c.sha256, n.mask_label, m.name AS model, e.vector FROM embeddings e "
                  "JOIN nuclei n ON n.id = e.nucleus_id JOIN scans c ON c.id = n.scan_id "
                  "JOIN models m ON m.id = e.model_id ORDER BY 1, 2, 3",
    "detections": "SELECT c.sha256, n.mask_label, m.name AS model, count(*) AS boxes FROM detections d "
                  "JOIN nuclei n ON n.id = d.nucleus_id JOIN scans c ON c.id = n.scan_id "
                  "JOIN models m ON m.id = d.model_id GROUP BY ALL ORDER BY 1, 2, 3",
    "scan_models": "SELECT c.sha256, m.name AS model, sm.n_predictions FROM scan_models sm "
                   "JOIN scans c ON c.id = sm.scan_id JOIN models m ON m.id = sm.model_id ORDER BY 1, 2",
    "review_stats": "SELECT c.sha256, n.mask_label, r.n_models, r.mean_prob, r.spread, r.min_call, r.max_call "
                    "FROM review_stats r JOIN nuclei n ON n.id = r.nucleus_id JOIN scans c ON c.id = n.scan_id "
                    "ORDER BY 1, 2",
    "umap": "SELECT c.sha256, n.mask_label, m.name AS model, u.x, u.y, u.fitted_on FROM umap_coords u "
            "JOIN nuclei n ON n.id = u.nucleus_id JOIN scans c ON c.id = n.scan_id "
            "JOIN models m ON m.id = u.model_id ORDER BY 1, 2, 3",
}
#: tables whose rows exist only once a scan is written (compared per scan after a kill)
_PER_SCAN = ("scans", "nuclei", "predictions", "embeddings", "detections", "scan_models", "review_stats")


def snapshot(db: Path) -> dict[str, pd.DataFrame]:
    """Store contents keyed by scan sha256 and mask label (ids differ between runs), read-only."""
    from store.db import Store

    with Store(db, read_only=True) as s:
        return {name: s.query(sql) for name, sql in _SNAPSHOT_SQL.items()}


def _same_column(a: pd.Series, b: pd.Series) -> bool:
    if a.name == "vector":
        x, y = np.stack(a.to_numpy()).astype(np.float64), np.stack(b.to_numpy()).astype(np.float64)
        return x.shape == y.shape and np.allclose(x, y, rtol=1e-4, atol=1e-5)
    if pd.api.types.is_float_dtype(a) or pd.api.types.is_float_dtype(b):
        return np.allclose(a.to_numpy(np.float64, na_value=np.nan), b.to_numpy(np.float64, na_value=np.nan),
                           rtol=1e-4, atol=1e-5, equal_nan=True)
    return a.astype(str).tolist() == b.astype(str).tolist()


def differences(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame],
                scans: set[str] | None = None) -> list[str]:
    """How snapshot ``got`` differs from ``want`` (floats within rtol 1e-4, atol 1e-5).

    Args:
        scans: compare only the per-scan tables, restricted to these sha256 (the scans a
            killed run left); None compares everything.
    """
    out = []
    for name, w in want.items():
        g = got[name]
        if scans is not None:
            if name not in _PER_SCAN:
                continue
            w, g = w[w["sha256"].isin(scans)], g[g["sha256"].isin(scans)]
        w, g = w.reset_index(drop=True), g.reset_index(drop=True)
        if len(g) != len(w):
            out.append(f"{name}: {len(g)} rows, reference {len(w)}")
            continue
        bad = [c for c in w.columns if not _same_column(g[c], w[c])]
        if bad:
            out.append(f"{name}: columns {bad} differ from the reference")
    return out


def incomplete_scans(db: Path) -> list[str]:
    """Scans lacking a nucleus, a prediction, an embedding, a scan_models row or review stats for a test model."""
    from store.db import Store

    with Store(db, read_only=True) as s:
        df = s.query(
            """
            SELECT c.file_name, c.n_nuclei, m.name AS model,
              (SELECT count(*) FROM nuclei n WHERE n.scan_id = c.id) AS nuclei,
              (SELECT count(*) FROM predictions p JOIN nuclei n ON n.id = p.nucleus_id
               WHERE n.scan_id = c.id AND p.model_id = m.id) AS predictions,
              (SELECT count(*) FROM embeddings e JOIN nuclei n ON n.id = e.nucleus_id
               WHERE n.scan_id = c.id AND e.model_id = m.id) AS embeddings,
              (SELECT count(*) FROM review_stats r WHERE r.scan_id = c.id AND r.n_models = $k) AS stats,
              (SELECT count(*) FROM scan_models sm WHERE sm.scan_id = c.id AND sm.model_id = m.id) AS recorded
            FROM scans c, models m WHERE m.name IN (SELECT unnest($models))
            ORDER BY c.file_name, m.name
            """,
            {"models": list(MODEL_KINDS), "k": len(MODEL_KINDS)},
        )
    out = []
    for r in df.to_dict("records"):
        short = {k: r[k] for k in ("nuclei", "predictions", "embeddings", "stats") if r[k] != r["n_nuclei"]}
        if short or r["recorded"] != 1:
            out.append(f"incomplete scan {r['file_name']} ({r['n_nuclei']} nuclei), model {r['model']}: "
                       f"{short or ''}{'' if r['recorded'] == 1 else ' no scan_models row'}")
    return out


def batch_scans(db: Path) -> int:
    """Scans of the batch's sample in the store."""
    from store.db import Store

    with Store(db, read_only=True) as s:
        return int(s.scalar("SELECT count(*) FROM scans c JOIN samples s ON s.id = c.sample_id WHERE s.name = ?",
                            [SAMPLE]))


def verify_after_kill(db: Path, reference: dict[str, pd.DataFrame]) -> list[str]:
    """Problems of a store a process was killed on: it must open and pass ``genuine store check``,
    hold only complete scans of the reference, each equal to its reference rows."""
    rc, text = store_check(db)
    if rc != 0:
        problems = [f"genuine store check exited {rc}: {' | '.join(text.strip().splitlines())}"]
        if rc != 1:  # the store did not open: nothing more to look at
            return problems
    else:
        problems = []
    problems += incomplete_scans(db)
    snap = snapshot(db)
    present = set(snap["scans"]["sha256"])
    unknown = present - set(reference["scans"]["sha256"])
    if unknown:
        problems.append(f"{len(unknown)} scans not in the reference ingest")
    return problems + differences(snap, reference, scans=present)


def verify_complete(db: Path, reference: dict[str, pd.DataFrame]) -> list[str]:
    """Problems of a store that should equal the reference: check, completeness, every row."""
    rc, text = store_check(db)
    problems = [] if rc == 0 else [f"genuine store check exited {rc}: {' | '.join(text.strip().splitlines())}"]
    if rc in (0, 1):
        problems += incomplete_scans(db) + differences(snapshot(db), reference)
    return problems


def map_files_problems(db: Path, final: bool) -> list[str]:
    """UMAP side files: never a temporary (half-written) file; every current fit's map present
    (``store check`` verifies its checksum); when ``final``, nothing but the current maps."""
    from store.db import Store

    folder = db.with_name(db.stem + "_files")
    files = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    with Store(db, read_only=True) as s:
        current = s.query("SELECT reducer_path FROM umap_fits WHERE id IN (SELECT max(id) FROM umap_fits "
                          "GROUP BY model_id)")["reducer_path"].tolist()
        unplaced = s.scalar("SELECT count(*) FROM embeddings e LEFT JOIN umap_coords u ON u.model_id = e.model_id "
                            "AND u.nucleus_id = e.nucleus_id WHERE u.nucleus_id IS NULL "
                            "AND e.model_id IN (SELECT model_id FROM umap_fits)")
    out = [f"temporary map file left: {f}" for f in files if f.endswith(".tmp")]
    out += [f"map file of a current fit missing: {f}" for f in current if f not in files]
    if final:
        out += [f"map file not referenced by a current fit: {f}" for f in files
                if f not in current and not f.endswith(".tmp")]
        if unplaced:
            out.append(f"{unplaced} nuclei without UMAP coordinates on a fitted map")
    return out


# ----------------------------------------------------------------------------- kill rounds


@dataclass
class KillRound:
    """One killed (or, when the kill came too late, finished) process and what was found after it."""

    command: str                   # ingest | umap | checkpoint
    point: str                     # e.g. "stage commit:2", "delay 1.23 s", "start 0.30 s"
    killed: bool
    returncode: int
    seconds: float
    scans_after: int = -1          # batch scans in the store after it (ingest)
    detail: str = ""               # e.g. the checkpoint phase the kill landed in
    problems: list[str] = field(default_factory=list)
    spans: dict[str, float | None] = field(default_factory=dict)

    @property
    def survived(self) -> bool:
        """The store opened, passed the check and held only complete, correct data."""
        return not self.problems


def ingest_round(w: Workload, db: Path, reference: dict, point: str, kill_at: str | None = None,
                 delay: float | None = None, after_start: bool = False) -> KillRound:
    """Run the batch's ingest into ``db``, killing it at a stage (``kill_at``) or after ``delay`` seconds
    (from process start when ``after_start``, else from the moment the ingest began), then verify."""
    marker = None if after_start else INGEST_MARKER
    run = run_genuine(w.ingest_args(db), kill_at=kill_at, delay=delay, marker=marker)
    problems = [] if run.killed or run.returncode == 0 else [f"ingest exited {run.returncode}: {run.output[-500:]}"]
    if store_files(db):
        problems += verify_after_kill(db, reference)
        if not problems:
            problems += map_files_problems(db, final=False)
    try:
        n = batch_scans(db) if store_files(db) else 0
    except Exception:  # noqa: BLE001 - the store does not open; already a problem above
        n = -1
    return KillRound("ingest", point, run.killed, run.returncode, run.seconds, n, problems=problems)


def umap_round(db: Path, point: str, kill_at: str | None = None, delay: float | None = None,
               final: bool = False) -> KillRound:
    """Run ``genuine umap`` on ``db`` (killed at a stage or after ``delay`` s unless ``final``), then verify
    the check passes and the map files are whole."""
    run = run_genuine(["umap", "--db", str(db), *UMAP_ARGS], kill_at=kill_at, delay=delay)
    problems = [] if run.killed or (run.returncode == 0) else [f"umap exited {run.returncode}: {run.output[-500:]}"]
    if final and run.killed:
        problems.append("the completing umap run was killed")
    rc, text = store_check(db)
    if rc != 0:
        problems.append(f"genuine store check exited {rc}: {' | '.join(text.strip().splitlines())}")
    else:
        problems += map_files_problems(db, final=final)
    return KillRound("umap", point, run.killed, run.returncode, run.seconds, problems=problems)


def build_base(w: Workload, umap_kills: tuple[str, ...] = ("map_saved:2", "fit_committed:1")) -> list[KillRound]:
    """Ingest the base scans and fit the UMAPs, killing ``genuine umap`` at each of ``umap_kills`` first.

    With two models on a store without maps, ``map_saved:2`` leaves the first model fitted
    and the second model's new map on disk uncommitted; ``fit_committed:1`` then refits the
    first model and dies before removing its superseded map. The last, complete run must
    leave only the current maps. Returns the UMAP rounds (the last is the complete run).
    """
    remove_store(w.base_db)
    run = run_genuine(["ingest", *map(str, w.base_scans), "--sample", BASE_SAMPLE, "--kind", "cell-line",
                       "--db", str(w.base_db), "--models", str(w.models), "--mc-samples", "0", "--quiet"])
    assert run.returncode == 0, run.output[-2000:]
    rounds = [umap_round(w.base_db, f"stage {k}", kill_at=k) for k in umap_kills]
    rounds.append(umap_round(w.base_db, "complete run", final=True))
    return rounds


def reference_ingest(w: Workload, db: Path) -> tuple[dict[str, pd.DataFrame], float]:
    """A clean ingest of the batch on a copy of the base: (its snapshot, seconds from the ingest's start
    until the store is closed: the span random kills are spread over)."""
    copy_store(w.base_db, db)
    run = run_genuine(w.ingest_args(db), marker=INGEST_MARKER, watch=(INGEST_END,))
    assert run.returncode == 0, run.output[-2000:]
    assert verify_complete(db, snapshot(db)) == []
    return snapshot(db), run.span(INGEST_MARKER, INGEST_END) or run.span(INGEST_MARKER) or run.seconds


def checkpoint_round(wal_state: Path, db: Path, expected: dict, delay: float | None) -> KillRound:
    """Copy a store with an unflushed WAL to ``db``; open it for writing (replaying the WAL) and
    checkpoint it in a process killed ``delay`` s after it starts opening (None: not killed);
    then the store must equal ``expected``.

    ``detail`` says where the kill landed (from the helper's output and the files);
    ``spans`` holds the seconds the helper took to open, checkpoint and close.
    """
    copy_store(wal_state, db)
    before = (db.stat().st_size, db.stat().st_mtime_ns)
    run = run_process([sys.executable, "-c", CHECKPOINT_SCRIPT, str(db)], delay=delay, marker=READY,
                      watch=(OPENED, CHECKPOINTED))
    written = (db.stat().st_size, db.stat().st_mtime_ns) != before
    if not Path(f"{db}.wal").exists():
        phase = "after checkpoint (WAL removed)"
    elif OPENED not in run.seen:
        phase = "while opening (WAL replay)"
    elif written:
        phase = "during checkpoint (store file written, WAL still present)"
    else:
        phase = "checkpoint started, store file not yet written"
    problems = [] if run.killed or run.returncode == 0 else [f"checkpoint exited {run.returncode}: {run.output}"]
    problems += verify_complete(db, expected)
    spans = {"open": run.span(READY, OPENED), "checkpoint": run.span(OPENED, CHECKPOINTED),
             "close": run.span(CHECKPOINTED)}
    return KillRound("checkpoint", f"delay {delay:.3f} s" if delay is not None else "complete run", run.killed,
                     run.returncode, run.seconds, detail=phase, problems=problems, spans=spans)


def checkpoint_delays(clean: KillRound, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` kill delays: a quarter over the WAL replay, the rest over the checkpoint and close."""
    opened = clean.spans["open"]
    end = opened + clean.spans["checkpoint"] + clean.spans["close"]
    k = n // 4
    return np.sort(np.concatenate([rng.uniform(0.0, opened, k), rng.uniform(opened, end, n - k)]))


def describe(rounds: list[KillRound]) -> str:
    """One line per round (for assertion messages and logs)."""
    return "\n".join(f"{r.command} {r.point}: killed={r.killed} rc={r.returncode} scans={r.scans_after} "
                     f"{r.detail} problems={r.problems}" for r in rounds)


# ----------------------------------------------------------------------------- tests

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """(workload, UMAP kill rounds that built its base, reference snapshot, reference ingest seconds)."""
    root = tmp_path_factory.mktemp("crash")
    w = make_workload(root)
    umap_rounds = build_base(w)
    reference, seconds = reference_ingest(w, root / "reference.duckdb")
    return w, umap_rounds, reference, seconds


@pytest.fixture(scope="module")
def chain(workload):
    """Kill rounds on one store (each run re-runs the batch the one before was killed in), then a complete run.

    Returns (rounds, the complete run, its problems against the reference).
    """
    w, _, reference, seconds = workload
    rng = np.random.default_rng(6)
    db = copy_store(w.base_db, w.root / "killed.duckdb")
    rounds = [ingest_round(w, db, reference, "start 0.30 s", delay=0.3, after_start=True)]
    for stage in ("read:2", "scored", "commit:1", "committed:2"):
        rounds.append(ingest_round(w, db, reference, f"stage {stage}", kill_at=stage))
    for d in rng.uniform(0.0, seconds, 3):
        rounds.append(ingest_round(w, db, reference, f"delay {d:.2f} s", delay=float(d)))
    final = run_genuine(w.ingest_args(db))
    return rounds, final, verify_complete(db, reference)


@pytest.fixture(scope="module")
def last_commit_kill(workload):
    """Kill right after the batch's last COMMIT (before UMAP placement and before any checkpoint), on a
    fresh copy of the base; then re-run.

    Returns (the kill round, a copy of the store as the kill left it, the re-run, its problems).
    """
    w, _, reference, _ = workload
    db = copy_store(w.base_db, w.root / "last.duckdb")
    stage = f"committed:{len(w.batch)}"
    killed = ingest_round(w, db, reference, f"stage {stage}", kill_at=stage)
    wal_state = copy_store(db, w.root / "wal_state.duckdb")
    rerun = run_genuine(w.ingest_args(db))
    return killed, wal_state, rerun, verify_complete(db, reference) + map_files_problems(db, final=True)


def test_umap_kills_leave_whole_map_files(workload):
    _, rounds, _, _ = workload
    assert [r.killed for r in rounds] == [True, True, False], describe(rounds)
    assert all(r.survived for r in rounds), describe(rounds)


def test_ingest_kills_leave_only_complete_scans(chain, last_commit_kill, workload):
    w = workload[0]
    rounds = chain[0] + [last_commit_kill[0]]
    by_point = {r.point: r for r in rounds}
    # each named stage killed the process where planned: no scan stored yet, then 2 scans, then all of them
    expected = {"stage read:2": 0, "stage scored": 0, "stage commit:1": 0, "stage committed:2": 2,
                f"stage committed:{len(w.batch)}": len(w.batch)}
    assert {p: (by_point[p].killed, by_point[p].scans_after) for p in expected} == \
        {p: (True, n) for p, n in expected.items()}, describe(rounds)
    assert by_point["start 0.30 s"].killed, describe(rounds)
    assert all(r.survived for r in rounds), describe(rounds)


def test_rerun_after_kills_completes_the_batch_exactly(chain, last_commit_kill):
    _, final, problems = chain
    assert final.returncode == 0, final.output[-2000:]
    assert problems == []
    _, _, rerun, problems = last_commit_kill
    assert rerun.returncode == 0, rerun.output[-2000:]
    assert problems == []  # including the UMAP placement the killed run never reached


def test_kill_during_wal_replay_and_checkpoint(last_commit_kill, workload, tmp_path):
    reference = workload[2]
    wal_state = last_commit_kill[1]
    assert Path(f"{wal_state}.wal").stat().st_size > 0  # the batch is committed to the WAL only
    expected = snapshot(wal_state)  # read-only: replays the WAL in memory, writes nothing
    assert len(expected["scans"]) == len(reference["scans"])
    assert differences(expected, reference, scans=set(expected["scans"]["sha256"])) == []
    clean = checkpoint_round(wal_state, tmp_path / "clean.duckdb", expected, delay=None)
    assert clean.survived and clean.returncode == 0 and None not in clean.spans.values(), clean
    assert not Path(f"{tmp_path / 'clean.duckdb'}.wal").exists()
    rng = np.random.default_rng(11)
    rounds = [checkpoint_round(wal_state, tmp_path / "ck.duckdb", expected, float(d))
              for d in checkpoint_delays(clean, 8, rng)]
    # timing decides where a kill lands; try a few more until one hits the checkpoint while it writes
    during = "during checkpoint (store file written, WAL still present)"
    for d in rng.uniform(clean.spans["open"], clean.spans["open"] + clean.spans["checkpoint"], 12):
        if any(r.detail == during for r in rounds):
            break
        rounds.append(checkpoint_round(wal_state, tmp_path / "ck.duckdb", expected, float(d)))
    assert all(r.survived for r in rounds), describe(rounds)
    assert sum(r.killed for r in rounds) >= 4, describe(rounds)
    assert any(r.detail == during for r in rounds), describe(rounds)


def test_store_check_names_what_is_broken(workload, tmp_path):
    from store.db import Store

    w = workload[0]
    db = copy_store(w.root / "reference.duckdb", tmp_path / "broken.duckdb")
    assert store_check(db)[0] == 0
    with Store(db) as s:
        ghost = int(s.scalar("SELECT max(id) FROM nuclei")) + 1000
        s.execute("INSERT INTO predictions (model_id, nucleus_id, prob, prob_calibrated, call) VALUES (1, ?, 0.5, 0.5, 1)",
                  [ghost])
        victim = s.query("SELECT p.model_id, p.nucleus_id, m.name, c.id AS scan_id, c.file_name, c.n_nuclei "
                         "FROM predictions p "
                         "JOIN nuclei n ON n.id = p.nucleus_id JOIN scans c ON c.id = n.scan_id "
                         "JOIN models m ON m.id = p.model_id ORDER BY c.id DESC, p.nucleus_id LIMIT 1").iloc[0]
        s.execute("DELETE FROM predictions WHERE model_id = ? AND nucleus_id = ?",
                  [int(victim["model_id"]), int(victim["nucleus_id"])])
    rc, text = store_check(db)
    assert rc == 1, text
    assert f"1 predictions of unknown nuclei: nucleus {ghost} (model id 1)" in text
    n = int(victim["n_nuclei"])
    assert (f"scan {victim['scan_id']} ({victim['file_name']}), model {victim['name']}: {n - 1} predictions for "
            f"{n} nuclei") in text, text
    assert f"nucleus {victim['nucleus_id']}" in text  # its review statistics no longer match
    assert "ok:" not in text
    # the same through the command line: non-zero exit, the problems on stdout
    run = run_genuine(["store", "check", "--db", str(db)])
    assert run.returncode == 1 and "problem: 1 predictions of unknown nuclei" in run.output
