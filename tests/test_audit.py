"""Label events are append-only, and the audit trail export holds every one of them.

- source audit: no statement in the code base updates, deletes, truncates, drops, alters
  or replaces ``label_events``; only ``store/labels.py`` (and the synthetic scale
  builder) insert into it;
- behaviour: every writing operation of the store leaves the existing events exactly as
  they were (the table only grows), and random interleavings of decisions and undos keep
  the ``previous`` chain and the current label equal to a plain replay;
- export: ``genuine export audit`` (CSV, Parquet, JSON lines) holds every event with its
  reviewer, time, values and provenance.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _store_fakes import fake_model, synthetic_result
from genuine_core.cli import main
from genuine_core.errors import StoreError
from store import export, labels, migrations, registry, samples
from store.check import check_store
from store.db import Store
from store.scans import refresh_review_stats, write_scan_result

REPO = Path(__file__).resolve().parents[1]
#: statements that would change or remove existing label events (case-insensitive, may span lines)
_NAME = r"""(?:\w+\.)?["`]?label_events["`]?\b"""
MUTATIONS = re.compile(
    r"\bUPDATE\s+" + _NAME
    + r"|\bDELETE\s+FROM\s+" + _NAME
    + r"|\bTRUNCATE\s+(?:TABLE\s+)?" + _NAME
    + r"|\bDROP\s+(?:TABLE|VIEW)\s+(?:IF\s+EXISTS\s+)?" + _NAME
    + r"|\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + _NAME
    + r"|\bINSERT\s+OR\s+(?:REPLACE|IGNORE)\s+INTO\s+" + _NAME
    + r"|\bCREATE\s+OR\s+REPLACE\s+(?:TEMP\s+|TEMPORARY\s+)?TABLE\s+" + _NAME
    + r"|\bINSERT\s+INTO\s+" + _NAME + r"""[^;"']*?\bON\s+CONFLICT\b""",
    re.IGNORECASE,
)
INSERTS = re.compile(r"\bINSERT\s+INTO\s+" + _NAME, re.IGNORECASE)
#: the only files that may append label events: the label API, and the synthetic scale-test builder
INSERTERS = {"store/labels.py", "store/scale.py"}
#: the schema steps allowed to alter ``label_events``, exactly: a nullable column without a default changes no
#: existing event (step 9, ``blind``: NULL on every older event)
ADDED_COLUMNS = {("store/migrations.py", "ALTER TABLE label_events ADD COLUMN IF NOT EXISTS blind BOOLEAN;")}
SKIP_DIRS = {".git", "tests", "test-output", "demo", "node_modules", "__pycache__", ".venv", "venv"}


def code_files() -> list[Path]:
    """Every Python / SQL / shell file of the product (tests excluded: they may tamper on purpose)."""
    out = []
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if path.suffix in (".py", ".sql", ".sh") and path.is_file() and not SKIP_DIRS & set(rel.parts):
            out.append(path)
    return sorted(out)


# ----------------------------------------------------------------------------- source audit
@pytest.mark.parametrize("sql", [
    "UPDATE label_events SET value = '1'",
    'update main."label_events"\n   set reviewer = ?',
    "DELETE FROM label_events WHERE id = 3",
    "delete\nfrom label_events",
    "TRUNCATE label_events",
    "DROP TABLE IF EXISTS label_events",
    "ALTER TABLE label_events ADD COLUMN x INT",
    "INSERT OR REPLACE INTO label_events VALUES (1)",
    "CREATE OR REPLACE TABLE label_events AS SELECT 1",
    "INSERT INTO label_events (id) VALUES (1) ON CONFLICT DO UPDATE SET value = '0'",
])
def test_the_audit_pattern_catches_mutations(sql):
    assert MUTATIONS.search(sql)


@pytest.mark.parametrize("sql", [
    "INSERT INTO label_events (nucleus_id, value) VALUES (?, ?) RETURNING id",
    "SELECT * FROM label_events WHERE id = ?",
    "UPDATE label_events_archive SET x = 1",  # another table
    "UPDATE models SET metrics = ? WHERE id = ?",
])
def test_the_audit_pattern_leaves_reads_and_appends_alone(sql):
    assert not MUTATIONS.search(sql)


def test_no_code_path_updates_or_deletes_label_events():
    files = code_files()
    assert REPO / "store" / "labels.py" in files and REPO / "store" / "schema.sql" in files  # the scan covers them
    hits = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in MUTATIONS.finditer(text):
            statement = text[m.start():text.find(";", m.start()) + 1]
            if (str(path.relative_to(REPO)), statement) in ADDED_COLUMNS:
                continue
            line = text.count("\n", 0, m.start()) + 1
            hits.append(f"{path.relative_to(REPO)}:{line}: {m.group(0)!r}")
    assert hits == []


def test_only_the_label_api_appends_label_events():
    writers = {str(p.relative_to(REPO)) for p in code_files() if INSERTS.search(p.read_text(encoding="utf-8"))}
    assert "store/labels.py" in writers
    assert writers <= INSERTERS
    # and inside the label API one helper holds the only INSERT
    assert len(INSERTS.findall((REPO / "store" / "labels.py").read_text(encoding="utf-8"))) == 1


# ----------------------------------------------------------------------------- behaviour
def _events(store: Store) -> pd.DataFrame:
    """All events, as plain Python values (None for NULL) so snapshots compare by value."""
    ev = store.query("SELECT * FROM label_events ORDER BY id").astype(object)
    return ev.where(ev.notna(), None)


def _assert_grew(before: pd.DataFrame, after: pd.DataFrame, what: str) -> None:
    """``before`` is exactly the first rows of ``after`` (nothing changed, nothing removed)."""
    assert len(after) >= len(before), f"{what} removed label events"
    pd.testing.assert_frame_equal(after.iloc[:len(before)].reset_index(drop=True), before.reset_index(drop=True),
                                  obj=f"label events after {what}")


def _scan(store: Store, name: str, sha: str, n: int = 6) -> list[int]:
    sid = samples.ensure_sample(store, name, "case")
    mids = {m: registry.register_model(store, fake_model(m)) for m in ("m1", "m2")}
    probs = np.linspace(0.05, 0.95, n)
    scan_id = write_scan_result(store, sid, synthetic_result(sha, {"m1": probs, "m2": probs[::-1]}), mids)
    return store.query("SELECT id FROM nuclei WHERE scan_id = ? ORDER BY id", [scan_id])["id"].astype(int).tolist()


def test_every_store_write_leaves_existing_events_untouched(tmp_path):
    path = tmp_path / "a.duckdb"
    store = Store(path)
    ids = _scan(store, "first", "1" * 64)
    labels.record_label_event(store, ids[0], 1, "ann", note="clear")
    labels.record_label_event(store, ids[1], "exclude", "bob")
    labels.record_label_event(store, ids[0], 0, "bob")
    seen = _events(store)
    steps = {
        "a decision": lambda: labels.record_label_event(store, ids[2], "mna", "cy"),
        "an undo": lambda: labels.undo_last(store, "cy"),
        "a decision undone by id": lambda: labels.undo_event(store, labels.record_label_event(store, ids[3], 0, "ann"),
                                                             "ann"),
        "a refused undo": lambda: pytest.raises(StoreError, labels.undo_event, store, int(seen["id"].iloc[0]), "x"),
        "a new scan": lambda: _scan(store, "second", "2" * 64),
        "the same scan again": lambda: _scan(store, "second", "2" * 64),
        "a review-stats refresh": lambda: refresh_review_stats(store),
        "a migration re-run": lambda: migrations.migrate(store.cursor()),
        "an export": lambda: export.export_audit(store, tmp_path / "audit.csv"),
        "a labels export": lambda: export.export_labels(store, tmp_path / "labels.npz"),
        "an integrity check": lambda: check_store(store),
        "a re-open": lambda: (store.close(), None)[1],
    }
    for what, step in steps.items():
        before = _events(store) if store._conn is not None else seen
        step()
        if store._conn is None:
            store = Store(path)
        after = _events(store)
        _assert_grew(before, after, what)
        seen = after
    assert len(seen) == 7  # 3 + decision + undo + decision and its undo; the rest appended nothing
    assert check_store(store) == []
    store.close()


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("audit") / "h.duckdb")
    ids = _scan(s, "h", "3" * 64, n=3)
    yield s, ids
    s.close()


OPS = st.lists(st.tuples(st.sampled_from(["decide", "undo_last", "undo_event"]), st.integers(0, 2),
                         st.sampled_from([1, 0, "exclude"]), st.sampled_from(["ann", "bob", "cy"])),
               min_size=1, max_size=10)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_random_decisions_and_undos_only_ever_append(shared_store, ops):
    store, ids = shared_store
    history = _events(store)
    current = {int(n): v for n, v in history.groupby("nucleus_id")["value"].last().items()}
    last_of = {int(n): int(i) for n, i in history.groupby("nucleus_id")["id"].last().items()}
    for kind, k, value, who in ops:
        nid = ids[k]
        before = _events(store)
        if kind == "decide":
            eid = labels.record_label_event(store, nid, value, who)
            current[nid], last_of[nid] = labels.normalise_decision(value), eid
        elif kind == "undo_last":
            eid = labels.undo_last(store, who)
            if eid is not None:
                target = int(store.scalar("SELECT undoes FROM label_events WHERE id = ?", [eid]))
                tn, prev = store.query("SELECT nucleus_id, previous FROM label_events WHERE id = ?", [target]).iloc[0]
                assert last_of[int(tn)] == target  # it reverted that nucleus' current decision
                current[int(tn)], last_of[int(tn)] = prev, eid
        elif nid in last_of:  # undo_event of the nucleus' latest event: allowed, restores its previous value
            target = last_of[nid]
            prev = store.scalar("SELECT previous FROM label_events WHERE id = ?", [target])
            eid = labels.undo_event(store, target, who)
            current[nid], last_of[nid] = prev, eid
        after = _events(store)
        _assert_grew(before, after, kind)
        assert len(after) - len(before) in (0, 1)
    stored = {int(n): v for n, v in _events(store).groupby("nucleus_id")["value"].last().items()}
    assert stored == current
    cur = labels.current_labels(store)
    assert dict(zip(cur["nucleus_id"].astype(int), cur["value"])) == {n: v for n, v in current.items() if v != "unset"}
    assert check_store(store) == []


# ----------------------------------------------------------------------------- audit trail export
@pytest.fixture()
def audited(tmp_path):
    """A store with decisions by three reviewers, notes and an undo; returns (path, events)."""
    path = tmp_path / "audit.duckdb"
    with Store(path) as s:
        ids = _scan(s, "case-7", "a7" * 32)
        labels.record_label_event(s, ids[0], 1, "Dr. Ann", note="clear amplification")
        labels.record_label_event(s, ids[1], 0, "Dr. Bob")
        labels.record_label_event(s, ids[0], "exclude", "Dr. Cy", note='two nuclei, "overlapping"')
        labels.undo_last(s, "Dr. Cy")
        labels.record_label_event(s, ids[2], "mna", "Dr. Ann, PhD")  # a comma in the name
        ev = _events(s)
    return path, ev


def test_export_help_lists_the_audit_trail(capsys):
    from genuine_core.cli import COMMANDS

    with pytest.raises(SystemExit) as exc:
        main(["export", "--help"])
    assert exc.value.code == 0
    assert "audit" in capsys.readouterr().out
    summary = COMMANDS["export"][1]  # `genuine --help` and the head of `genuine export --help`
    assert [w for w in ("sample", "labels", "audit") if w not in summary.replace(",", " ").split()] == []


def test_every_command_and_action_says_what_it_does_and_every_option_has_a_help_text():
    import argparse

    from genuine_core.cli import get_args_parser

    missing = []

    def walk(parser, name):
        if not parser.description:
            missing.append(f"{name}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child, sub in action.choices.items():
                    walk(sub, f"{name} {child}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}: no help")

    walk(get_args_parser(), "genuine")
    assert missing == []


def test_audit_export_help_names_the_file_types_it_writes(capsys):
    with pytest.raises(SystemExit):
        main(["export", "audit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(suffix in out for suffix in export.AUDIT_SUFFIXES)


def test_an_audit_export_without_label_events_is_refused_as_a_labels_export_is(tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        _scan(s, "first", "1" * 64)
    for what, out, error in (("labels", tmp_path / "l.npz", "no curated labels to export"),
                             ("audit", tmp_path / "a.jsonl", "no label events to export")):
        assert main(["export", what, "--out", str(out), "--db", str(db)]) == 2
        captured = capsys.readouterr()
        assert error in captured.err and captured.out == "" and len(captured.err.strip().splitlines()) == 1
        assert not out.exists()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_audit_export_holds_every_event_with_reviewer_and_time(audited, tmp_path, suffix, capsys):
    path, ev = audited
    out = tmp_path / f"trail{suffix}"
    assert main(["export", "audit", "--out", str(out), "--db", str(path)]) == 0
    assert str(out) in capsys.readouterr().out
    if suffix == ".csv":
        got = pd.read_csv(out, keep_default_na=False, na_values=[""])
    elif suffix == ".parquet":
        got = pd.read_parquet(out)
    else:
        got = pd.DataFrame([json.loads(line) for line in out.read_text().splitlines()])
    assert got["event_id"].astype(int).tolist() == ev["id"].astype(int).tolist()  # every event, in order
    assert got["reviewer"].tolist() == ev["reviewer"].tolist()
    assert pd.to_datetime(got["created_at"]).tolist() == pd.to_datetime(ev["created_at"]).tolist()  # exact times
    assert got["value"].astype(str).tolist() == ev["value"].tolist()
    assert got["previous"].astype(str).tolist() == ev["previous"].tolist()
    assert got["nucleus_id"].astype(int).tolist() == ev["nucleus_id"].astype(int).tolist()
    notes = [None if pd.isna(x) else x for x in got["note"]]
    assert notes == [None if pd.isna(x) else x for x in ev["note"]]
    undoes = [None if pd.isna(x) else int(x) for x in got["undoes"]]
    assert undoes == [None if pd.isna(x) else int(x) for x in ev["undoes"]]
    assert undoes[3] == int(ev["id"].iloc[2])  # the undo names the event it reverts
    assert set(got["sample"]) == {"case-7"} and set(got["scan_sha256"]) == {"a7" * 32}  # provenance
    assert got["mask_label"].notna().all()


def test_audit_export_refuses_unknown_formats(audited, tmp_path, capsys):
    path, _ = audited
    assert main(["export", "audit", "--out", str(tmp_path / "trail.xlsx"), "--db", str(path)]) == 2
    assert "must end in" in capsys.readouterr().err
