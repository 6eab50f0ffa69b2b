"""Concurrent reviewers and concurrent processes (the policy in ``store/db.py``).

- threads (= Streamlit sessions) recording label events on the same nuclei at once lose
  nothing and keep the ``previous`` chain exact;
- ``Store.write`` retries real DuckDB conflicts, then gives up with "store busy" having
  saved nothing;
- two dashboard sessions (AppTest; and, slow, two real browser sessions) relabelling the
  same nucleus at once lose no event;
- a CLI ingest while another process (a stand-in, and, slow, the served dashboard) holds
  the store waits, reports "store busy" with exit 2 and leaves the store intact, and
  completes when the holder lets go within ``--wait``.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from _store_fakes import fake_model, synthetic_result, write_toy_scans
from conftest import make_toy_scan
from genuine_core.errors import StoreError
from store import db as store_db
from store import labels, registry, samples
from store.check import check_store, store_info
from store.db import Store, open_store
from store.scans import write_scan_result

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import bench_load  # noqa: E402  (browser session driver, shared with the load bench)
from served_app import serve_app, stop  # noqa: E402


def _fill(store: Store, n: int = 6) -> list[int]:
    """One sample, one scan of ``n`` nuclei scored by one fake model; returns nucleus ids."""
    sid = samples.ensure_sample(store, "c", "case")
    mids = {"m1": registry.register_model(store, fake_model("m1"))}
    write_scan_result(store, sid, synthetic_result("c" * 64, {"m1": np.linspace(0.1, 0.9, n)}), mids)
    return store.query("SELECT id FROM nuclei ORDER BY id")["id"].astype(int).tolist()


def assert_chain_and_current(store: Store) -> None:
    """Every event's ``previous`` is the value before it; the current label is the latest event."""
    ev = store.query("SELECT id, nucleus_id, value, previous FROM label_events ORDER BY id")
    for nid, g in ev.groupby("nucleus_id"):
        values = g["value"].tolist()
        assert g["previous"].tolist() == ["unset"] + values[:-1], f"broken chain for nucleus {nid}"
    cur = labels.current_labels(store).set_index("nucleus_id")
    last = ev.groupby("nucleus_id").last()
    for nid, row in last.iterrows():
        if row["value"] == "unset":
            assert nid not in cur.index
        else:
            assert cur.loc[nid, "value"] == row["value"] and cur.loc[nid, "event_id"] == row["id"]
    assert check_store(store) == []


# ----------------------------------------------------------------------------- threads, one process
def test_eight_threads_relabelling_the_same_nuclei_lose_no_event(store):
    ids = _fill(store)[:3]  # every thread works on the same three nuclei
    n_threads, per_thread = 8, 40
    done: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def reviewer(name: str, seed: int) -> None:
        rng = random.Random(seed)
        mine = done.setdefault(name, [])
        start.wait()
        try:
            for _ in range(per_thread):
                if rng.random() < 0.15:
                    event = labels.undo_last(store, name)  # None when nothing of mine is current
                    if event is not None:
                        mine.append(event)
                else:
                    mine.append(labels.record_label_event(store, rng.choice(ids), rng.choice([1, 0, "exclude"]), name))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(f"r{i}", i)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    written = [e for mine in done.values() for e in mine]
    assert len(written) > n_threads * per_thread * 0.8  # most actions are decisions
    ev = store.query("SELECT id, reviewer, undoes FROM label_events ORDER BY id")
    assert len(ev) == len(written) == len(set(written))  # no event lost, none duplicated
    assert set(ev["id"]) == set(written)
    by_id = dict(zip(ev["id"], ev["reviewer"]))
    assert all(by_id[e] == name for name, mine in done.items() for e in mine)  # stamped with who wrote it
    assert all(mine == sorted(mine) for mine in done.values())  # each session's events in its own order
    assert_chain_and_current(store)


def test_undo_only_reverts_the_current_decision_under_contention(store):
    nid = _fill(store)[0]
    first = labels.record_label_event(store, nid, 1, "ann")
    labels.record_label_event(store, nid, 0, "bob")  # bob decided after ann
    with pytest.raises(StoreError, match="decided again since"):
        labels.undo_event(store, first, "ann")
    assert labels.overridden_latest(store, "ann") == (nid, "bob")  # what the Review page tells ann on undo
    assert labels.undo_last(store, "ann") is None  # ann's decision is no longer current: nothing to undo
    assert labels.overridden_latest(store, "bob") is None
    assert_chain_and_current(store)


def test_a_decision_on_a_stale_card_is_not_saved(store):
    """Bob's card still shows 'no decision' while Ann decided the nucleus: his press must not overwrite hers unseen."""
    nid, other = _fill(store)[:2]
    ann = labels.record_label_event(store, nid, 1, "ann", seen="unset")
    with pytest.raises(labels.DecidedMeanwhile, match=f"nucleus {nid} was decided meanwhile: MNA by ann "
                                                       f"\\(event {ann}\\); nothing was saved"):
        labels.record_label_event(store, nid, 0, "bob", seen="unset")
    assert labels.current_labels(store, [nid]).at[0, "reviewer"] == "ann"
    labels.record_label_event(store, nid, 0, "bob", seen="mna")  # having seen ann's decision, bob may overrule it
    # a card showing a decision the store no longer has (e.g. rebuilt meanwhile)
    with pytest.raises(labels.DecidedMeanwhile, match=f"nucleus {other} was decided meanwhile: no decision; "):
        labels.record_label_event(store, other, 1, "bob", seen=1)
    assert labels.current_labels(store, [nid]).at[0, "value"] == "0"
    assert_chain_and_current(store)


def test_store_objects_on_one_file_share_the_write_lock(tmp_path):
    with Store(tmp_path / "x.duckdb") as a, Store(tmp_path / "x.duckdb") as b:
        assert a._write_lock is b._write_lock  # two handles in one process still serialise their writes
    with Store(tmp_path / "y.duckdb") as c:
        assert c._write_lock is not a._write_lock


# ----------------------------------------------------------------------------- conflicts and retries
def _hold_update(store: Store, ready: threading.Event, release: threading.Event) -> threading.Thread:
    """A thread whose open transaction has updated sample 'c' and commits when ``release`` is set."""

    def run() -> None:
        with store.transaction() as cur:
            cur.execute("UPDATE samples SET notes = 'held' WHERE name = 'c'")
            ready.set()
            release.wait(30)

    t = threading.Thread(target=run)
    t.start()
    assert ready.wait(30)
    return t


def test_write_retries_a_real_conflict_and_commits(store):
    _fill(store)
    ready, release = threading.Event(), threading.Event()
    holder = _hold_update(store, ready, release)
    threading.Timer(0.3, release.set).start()
    t0 = time.monotonic()
    out = store.write(lambda cur: cur.execute("UPDATE samples SET notes = 'mine' WHERE name = 'c'") and "done")
    holder.join(10)
    assert out == "done"
    assert store.retries >= 1  # DuckDB reported "Conflict on update" at least once
    assert time.monotonic() - t0 >= 0.25
    assert store.scalar("SELECT notes FROM samples WHERE name = 'c'") == "mine"


def test_write_gives_up_with_store_busy_and_saves_nothing(store):
    _fill(store)
    ready, release = threading.Event(), threading.Event()
    holder = _hold_update(store, ready, release)

    def fn(cur):
        cur.execute("INSERT INTO samples (name, kind) VALUES ('partial', 'case')")
        cur.execute("UPDATE samples SET notes = 'mine' WHERE name = 'c'")

    try:
        with pytest.raises(StoreError, match=r"store busy: write conflict .* nothing was saved"):
            store.write(fn, timeout=0.5)
    finally:
        release.set()
        holder.join(10)
    assert store.scalar("SELECT count(*) FROM samples WHERE name = 'partial'") == 0
    assert store.scalar("SELECT notes FROM samples WHERE name = 'c'") == "held"


def test_label_event_retried_after_conflicts_is_written_once(store, monkeypatch):
    nid = _fill(store)[0]
    real = labels._current_value
    calls = {"n": 0}

    def flaky(cur, nucleus_id):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise duckdb.TransactionException("TransactionContext Error: Conflict on update!")
        return real(cur, nucleus_id)

    monkeypatch.setattr(labels, "_current_value", flaky)
    event = labels.record_label_event(store, nid, 1, "ann")
    assert calls["n"] == 3 and store.retries == 2
    assert store.query("SELECT id FROM label_events")["id"].tolist() == [event]


def test_label_event_that_keeps_conflicting_raises_store_busy_and_writes_nothing(store, monkeypatch):
    nid = _fill(store)[0]

    def always(cur, nucleus_id):
        cur.execute("INSERT INTO label_events (nucleus_id, value, previous, reviewer, created_at) "
                    "VALUES (?, '1', 'unset', 'ghost', now())", [nucleus_id])  # rolled back with the attempt
        raise duckdb.TransactionException("TransactionContext Error: Conflict on update!")

    monkeypatch.setattr(labels, "_current_value", always)
    monkeypatch.setattr(store_db, "_BACKOFF_START", 0.001)  # same attempts, shorter pauses
    with pytest.raises(StoreError, match="store busy") as info:
        labels.record_label_event(store, nid, 1, "ann")
    assert "nothing was saved" in str(info.value) and f"after {store_db.WRITE_ATTEMPTS} attempt" in str(info.value)
    assert store.scalar("SELECT count(*) FROM label_events") == 0


def test_write_waiting_for_the_lock_reports_busy(store):
    _fill(store)
    taken, release = threading.Event(), threading.Event()

    def hog():
        with store._write_lock:
            taken.set()
            release.wait(30)

    t = threading.Thread(target=hog)
    t.start()
    assert taken.wait(10)
    called = []
    try:
        with pytest.raises(StoreError, match="store busy: other writes held"):
            store.write(lambda cur: called.append(1), timeout=0.2)
    finally:
        release.set()
        t.join(10)
    assert called == []


def test_non_conflict_errors_are_not_retried(store):
    _fill(store)
    calls = []

    def bad(cur):
        calls.append(1)
        cur.execute("INSERT INTO samples (name, kind) VALUES ('c', 'case')")  # duplicate name

    with pytest.raises(duckdb.ConstraintException):
        store.write(bad)
    assert calls == [1] and store.retries == 0


# ----------------------------------------------------------------------------- two dashboard sessions (AppTest)
def test_two_app_sessions_relabelling_the_same_nucleus_lose_no_event(tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from test_app_store import build_small_store

    db = tmp_path / "apps.duckdb"
    build_small_store(db)
    monkeypatch.setenv("GENUINE_DB", str(db))
    monkeypatch.setenv("GENUINE_DECISION_GAP_S", "0")  # scripted clicks come faster than any curator's
    clicks = 6
    acks: dict[str, list[tuple[int, int]]] = {}
    conflicts: dict[str, int] = {}  # presses on a card another session had decided since
    failures: list[str] = []
    both_open = threading.Barrier(2)
    # AppTest is not thread-safe: each run sets process-wide state (its mock Runtime, config options)
    # and clears it when done, so a run overlapping another fails now and then ("Runtime hasn't been
    # created!"). The two sessions' script runs therefore take turns; each still decides from the card
    # it drew before the other's decision, which is the race under test (concurrent writes to one
    # store are covered by test_eight_threads_relabelling_the_same_nuclei_lose_no_event and bench_load)
    one_run_at_a_time = threading.Lock()

    def session(name: str) -> None:
        try:
            with one_run_at_a_time:
                at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
                at.session_state["reviewer"] = name
                at.run()
                at.switch_page("pages/review.py").run()
                at.toggle(key="review_include").set_value(True).run()  # keep the same top nucleus in the queue
            both_open.wait(60)
            for i in range(clicks):
                which = "mna" if i % 2 else "non"
                with one_run_at_a_time:
                    next(b for b in at.button if str(b.key).startswith(f"decide_{which}_")).click().run()
                failures.extend(str(e.value) for e in at.exception)
                stale = [e.value for e in at.error if "was decided meanwhile" in e.value]  # refused, nothing saved
                conflicts[name] = conflicts.get(name, 0) + len(stale)
                failures.extend(e.value for e in at.error if e.value not in stale)
                for m in at.success:
                    hit = bench_load._RECORDED.search(m.value.replace("**", ""))
                    if hit:
                        acks.setdefault(name, []).append((int(hit.group(1)), int(hit.group(3))))
        except BaseException as exc:  # noqa: BLE001
            failures.append(repr(exc))

    threads = [threading.Thread(target=session, args=(f"reviewer {k}",)) for k in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert failures == []
    assert sorted(acks) == ["reviewer A", "reviewer B"]
    assert all(len(v) + conflicts.get(name, 0) == clicks for name, v in acks.items())  # every press answered
    nuclei = {name: {n for n, _ in v} for name, v in acks.items()}
    assert nuclei["reviewer A"] & nuclei["reviewer B"]  # they did relabel the same nucleus
    with open_store(db) as s:
        ev = s.query("SELECT id, reviewer, nucleus_id FROM label_events ORDER BY id")
        assert_chain_and_current(s)
    stored = {(int(n), int(i)): r for i, r, n in zip(ev["id"], ev["reviewer"], ev["nucleus_id"])}
    acked = {pair: name for name, v in acks.items() for pair in v}
    assert stored == acked  # every acknowledged decision stored once, under its reviewer; nothing else


# ----------------------------------------------------------------------------- another process holds the store
HOLDER = """
import sys, time
from store.db import Store
store = Store(sys.argv[1])
print("holding", flush=True)
sys.stdin.readline()          # hold the write lock until told to let go
store.close()
print("released", flush=True)
"""


class Holder:
    """A subprocess that holds a store open for writing (a stand-in for the dashboard)."""

    def __init__(self, db: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "holding"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            assert self.proc.stdout.readline().strip() == "released"
            self.proc.wait(timeout=30)


def ingest_cmd(db: Path, scan: Path, model: Path, wait: float) -> list[str]:
    """``genuine ingest`` of one scan with one model folder, as a subprocess command line."""
    return [sys.executable, "-m", "genuine_core.cli", "ingest", str(scan), "--sample", "late", "--db", str(db),
            "--models", str(model), "--no-umap", "--mc-samples", "0", "--quiet", "--wait", str(wait)]


@pytest.fixture()
def ingest_setup(tmp_path):
    """(store with nuclei and label events, a toy scan file, a tiny model folder)."""
    db = tmp_path / "held.duckdb"
    with Store(db) as s:
        ids = _fill(s)
        labels.record_label_event(s, ids[0], 1, "ann")
        labels.record_label_event(s, ids[1], "exclude", "bob")
    scan = write_toy_scans(tmp_path / "scans", 1, make_toy_scan)[0]
    return db, scan, tmp_path / "tiny-model"


def _tiny_model(folder: Path) -> Path:
    from genuine_core.models import GenuineClassifier, preset_config

    GenuineClassifier.from_config(preset_config("tiny", kind="genuine")).save(folder, metrics={})
    return folder


def _counts(db: Path) -> dict:
    with open_store(db, read_only=True) as s:
        assert check_store(s) == []
        return store_info(s)["counts"]


def test_cli_ingest_while_another_process_holds_the_store_waits_and_reports(ingest_setup):
    from genuine_core.cli import main

    db, scan, model = ingest_setup
    _tiny_model(model)  # model folders are loaded before the store is opened
    before = _counts(db)
    holder = Holder(db)
    try:
        t0 = time.monotonic()
        r = subprocess.run(ingest_cmd(db, scan, model, wait=1.5), cwd=REPO, capture_output=True, text=True,
                           timeout=120)
        took = time.monotonic() - t0
    finally:
        holder.release()
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    assert "store busy" in lines[0] and f"process {holder.proc.pid}" in lines[0]
    assert "nothing was ingested" in lines[0] and "--wait" in lines[0]
    assert took >= 1.5
    assert main(["store", "check", "--db", str(db)]) == 0  # `genuine store check` passes
    assert _counts(db) == before  # nothing written, nothing lost


@pytest.mark.slow
def test_cli_ingest_completes_when_the_holder_lets_go_within_the_wait(ingest_setup):
    db, scan, model = ingest_setup
    _tiny_model(model)
    before = _counts(db)
    holder = Holder(db)
    ingest = subprocess.Popen(ingest_cmd(db, scan, model, wait=120), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3.0)
        assert ingest.poll() is None  # still waiting for the store
    finally:
        holder.release()
    out, err = ingest.communicate(timeout=300)
    assert ingest.returncode == 0, err
    assert "1 stored" in out
    after = _counts(db)
    assert after["scans"] == before["scans"] + 1 and after["nuclei"] > before["nuclei"]
    assert after["label_events"] == before["label_events"]


# ----------------------------------------------------------------------------- the served dashboard (slow)
@pytest.fixture()
def served_small(tmp_path):
    """(base url, server process, store path) of ``app.py`` served against a fresh small store."""
    if not Path(bench_load.CHROMIUM).is_file():
        pytest.skip(f"{bench_load.CHROMIUM} is absent (apt-get install -y chromium)")
    pytest.importorskip("playwright.async_api")
    from test_app_store import build_small_store

    db = tmp_path / "served.duckdb"
    build_small_store(db)
    with serve_app(db, tmp_path / "streamlit.log") as (base, proc):
        yield base, proc, db


@pytest.mark.slow
@pytest.mark.browser
def test_two_browser_sessions_relabelling_the_same_nuclei_lose_no_event(served_small):
    import asyncio

    base, proc, db = served_small
    logs = asyncio.run(bench_load.run_sessions(base, 2, actions=10, p_skip=0.1, seed=3))
    stop(proc)  # release the store, then compare with what the pages acknowledged
    assert [e for log in logs for e in log.errors] == []
    assert all(log.not_saved == [] for log in logs)  # a refusal of a stale card is the only "not saved"
    assert all(len(log.events) + len(log.stale) == log.attempts >= 5 for log in logs)
    # the sessions met on a nucleus: both relabelled it, or one was refused a card the other had just decided
    assert set(logs[0].nuclei) & set(logs[1].nuclei) or any(log.stale for log in logs)
    audit = bench_load.audit_store(db, logs)
    assert audit["events_lost"] == 0 and audit["events_extra"] == 0 and audit["duplicate_acks"] == 0
    assert audit["reviewer_mismatch"] == 0 and audit["store_problems"] == []
    assert audit["db_events"] == sum(len(log.events) for log in logs)
    with open_store(db, read_only=True) as s:
        assert_chain_and_current(s)


@pytest.mark.slow
@pytest.mark.browser
def test_cli_ingest_while_the_dashboard_serves_waits_reports_then_completes(served_small, tmp_path):
    import asyncio

    base, proc, db = served_small
    scan = write_toy_scans(tmp_path / "scans", 1, make_toy_scan)[0]
    model = _tiny_model(tmp_path / "tiny-model")
    logs = asyncio.run(bench_load.run_sessions(base, 1, actions=2, p_skip=0.0))  # the server opens the store
    assert logs[0].errors == [] and len(logs[0].events) == 2
    r = subprocess.run(ingest_cmd(db, scan, model, wait=2), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: store busy") and f"GENUINE dashboard (streamlit, PID {proc.pid})" in line
    assert "Ingest page" in line and "stop the dashboard" in line
    ingest = subprocess.Popen(ingest_cmd(db, scan, model, wait=180), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    assert ingest.poll() is None  # waiting while the dashboard runs
    stop(proc)  # the curator stops the dashboard: the waiting ingest proceeds
    out, err = ingest.communicate(timeout=300)
    assert ingest.returncode == 0, err
    with open_store(db, read_only=True) as s:
        assert check_store(s) == []
        assert s.scalar("SELECT count(*) FROM scans WHERE file_name = ?", [scan.name]) == 1
        assert s.query("SELECT id FROM label_events ORDER BY id")["id"].tolist() == sorted(logs[0].events)
