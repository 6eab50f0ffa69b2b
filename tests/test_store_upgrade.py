"""Stores written by older versions, opened by this one: nothing lost, every reader works after the migration.

The early version-1 layout (GENUINE before the auto/true labels became nucleus columns) is built here by
writing a store with this code and turning it back with SQL into what that version wrote: a ``labels``
table with one row per (nucleus, kind) and its own source, no ``nuclei.auto_label``/``true_label``, no
``scans.label_source``, no ``review_stats``, and (before the uncertainty method per model) no
``models.uncertainty_method``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from _store_fakes import fake_model, store_at_version, synthetic_result
from genuine_core.cli import main
from genuine_core.errors import StoreError
from store import events, labels, migrations, registry, review, samples
from store.check import check_store
from store.db import Store
from store.scans import write_scan_result
from test_store import refusing_new_files

#: the early version-1 labels table (its source per row: 'genotype' or 'benchmark')
EARLY_LABELS = """
CREATE TABLE labels (
    nucleus_id BIGINT NOT NULL,
    kind       VARCHAR NOT NULL CHECK (kind IN ('auto', 'truth')),
    label      TINYINT NOT NULL CHECK (label IN (0, 1)),
    source     VARCHAR,
    PRIMARY KEY (nucleus_id, kind)
);
"""
#: what the early layout did not have
EARLY_DROPS = [
    "ALTER TABLE nuclei DROP COLUMN auto_label", "ALTER TABLE nuclei DROP COLUMN true_label",
    "ALTER TABLE scans DROP COLUMN label_source", "ALTER TABLE models DROP COLUMN uncertainty_method",
    "DROP TABLE review_stats",
]


def _early_store(path, version: int = 1, orphan: bool = False) -> dict:
    """An early version-1 store at ``path`` (with ``version`` recorded: 3 is such a store an earlier release
    migrated without converting it); returns what it holds, to compare after the migration."""
    # a benchmark scan's labels: truth and auto for matched nuclei, a genotype auto label for one not matched
    lab = pd.DataFrame({"mask_label": [1, 1, 2, 2, 3], "kind": ["auto", "truth", "auto", "truth", "auto"],
                        "label": [1, 1, 0, 1, 1], "source": ["benchmark"] * 4 + ["genotype"]})
    with Store(path) as s:
        mids = {m: registry.register_model(s, fake_model(m)) for m in ("m1", "m2")}
        probs = {"m1": np.array([0.9, 0.2, 0.6, 0.4]), "m2": np.array([0.8, 0.1, 0.3, 0.7])}
        write_scan_result(s, samples.ensure_sample(s, "LINE", "cell-line"), synthetic_result("a" * 64, probs), mids,
                          labels=lab)
        write_scan_result(s, samples.ensure_sample(s, "CASE", "case"), synthetic_result("b" * 64, probs, seed=1), mids)
        ids = s.query("SELECT id FROM nuclei ORDER BY id")["id"].tolist()
        for nid, value, who in ((ids[0], 1, "Dr. Ana Müller"), (ids[1], "exclude", "curator-B"), (ids[4], 0, "ann")):
            labels.record_label_event(s, nid, value, who)
        events = s.query("SELECT * FROM label_events ORDER BY id")
        queue = review.review_queue(s, limit=100)
    rows = [(ids[m - 1], k, v, src) for m, k, v, src in lab.itertuples(index=False, name=None)]
    if orphan:
        rows.append((10_000, "auto", 1, "genotype"))
    conn = duckdb.connect(str(path))
    conn.execute("DROP VIEW labels")
    conn.execute(EARLY_LABELS)
    conn.executemany("INSERT INTO labels VALUES (?, ?, ?, ?)", rows)
    for sql in EARLY_DROPS:
        conn.execute(sql)
    conn.execute("DELETE FROM schema_version WHERE version > ?", [version])
    if version < 3:
        conn.execute("DROP TABLE store_events")
    if version < 2:
        conn.execute("ALTER TABLE scans DROP COLUMN patch_normalisation")
    conn.close()
    return {"ids": ids, "rows": rows, "events": events, "queue": queue}


@pytest.mark.parametrize("version", [1, 3])
def test_an_early_version_1_store_is_converted_without_losing_a_label(tmp_path, version):
    path = tmp_path / "early.duckdb"
    before = _early_store(path, version)
    with pytest.raises(StoreError, match="store migrate"):
        Store(path, read_only=True)
    with Store(path) as s:
        assert migrations.current_version(s.cursor()) == migrations.LATEST
        assert not migrations.early_layout(s.cursor())
        got = s.query("SELECT nucleus_id, kind, label, source FROM labels ORDER BY nucleus_id, kind")
        assert [r[:3] for r in got.itertuples(index=False, name=None)] == [r[:3] for r in before["rows"]]
        assert set(got["source"]) == {"benchmark,genotype"}  # one per scan now, as ingest records it
        lab = s.cursor().execute("SELECT auto_label, true_label FROM nuclei ORDER BY id LIMIT 4").fetchall()
        assert lab == [(1, 1), (0, 1), (1, None), (None, None)]
        assert s.cursor().execute("SELECT label_source FROM scans ORDER BY id").fetchall() == [
            ("benchmark,genotype",), (None,)]
        assert s.query("SELECT DISTINCT uncertainty_method FROM models")["uncertainty_method"].tolist() == ["unknown"]
        pd.testing.assert_frame_equal(s.query("SELECT * FROM label_events ORDER BY id"), before["events"])
        queue = review.review_queue(s, limit=100)
        pd.testing.assert_frame_equal(queue, before["queue"])
        assert check_store(s) == []
        assert s.scalar("SELECT count(*) FROM schema_version WHERE note LIKE 'early version-1%'") == 1
    with Store(path, read_only=True) as s:  # readers take it now
        assert s.scalar("SELECT count(*) FROM review_stats") == 8


def test_migrate_names_the_conversion_and_a_second_run_has_nothing_to_do(tmp_path, capsys):
    path = tmp_path / "early.duckdb"
    _early_store(path)
    assert main(["store", "check", "--db", str(path)]) == 2
    assert "an early version-1 store" not in capsys.readouterr().err  # version 1: the version says it
    assert main(["store", "migrate", "--db", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: schema version {migrations.LATEST} (was 1; early version-1 labels table converted)"
    assert main(["store", "migrate", "--db", str(path)]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert main(["store", "check", "--db", str(path)]) == 0


def test_an_early_store_at_the_latest_version_is_named_for_what_it_lacks(tmp_path, capsys):
    path = tmp_path / "early.duckdb"
    _early_store(path, version=migrations.LATEST)
    assert main(["store", "scans", "--db", str(path)]) == 2
    err = capsys.readouterr().err
    assert "an early version-1 store" in err and f"`genuine store migrate --db {path}`" in err


def test_label_rows_of_nuclei_not_stored_are_kept_aside(tmp_path):
    path = tmp_path / "early.duckdb"
    _early_store(path, orphan=True)
    with Store(path) as s:
        assert s.query("SELECT * FROM labels_unmatched").values.tolist() == [[10_000, "auto", 1, "genotype"]]
        assert "1 label rows of nuclei not stored" in s.scalar(
            "SELECT note FROM schema_version WHERE note LIKE 'early%'")
        assert check_store(s) == []


def test_a_conversion_that_fails_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "early.duckdb"
    _early_store(path)
    monkeypatch.setattr(migrations, "_schema_sql", lambda: "SELECT * FROM no_such_table")
    with pytest.raises(duckdb.CatalogException):
        Store(path)
    monkeypatch.undo()
    conn = duckdb.connect(str(path), read_only=True)
    assert conn.execute("SELECT count(*) FROM labels").fetchone()[0] == 5  # the table, untouched
    assert migrations.early_layout(conn) and migrations.current_version(conn) == 1
    conn.close()
    with Store(path) as s:
        assert check_store(s) == []


@contextlib.contextmanager
def read_only_file(path: Path):
    """``path`` cannot be changed inside the block: ``chattr +i`` as root (root ignores permissions), else no
    write permission; the test is skipped where neither works."""
    lock, undo = ((["chattr", "+i"], ["chattr", "-i"]) if os.geteuid() == 0 else (["chmod", "a-w"], ["chmod", "u+w"]))
    try:
        if subprocess.run([*lock, str(path)], capture_output=True).returncode or os.access(path, os.W_OK):
            pytest.skip(f"{' '.join(lock)} does not make a file read-only here")
        yield
    finally:
        subprocess.run([*undo, str(path)], capture_output=True)


def _version_2_store(path: Path) -> None:
    with Store(path) as s:
        registry.register_model(s, fake_model("m1"))
    conn = duckdb.connect(str(path))
    conn.execute("DROP TABLE store_events")
    conn.execute("DELETE FROM schema_version WHERE version >= 3")
    conn.close()


def test_an_older_store_in_a_read_only_file_is_left_as_it_was_and_the_way_out_is_named(tmp_path, capsys):
    path = tmp_path / "old.duckdb"
    _version_2_store(path)
    before = path.read_bytes()
    with read_only_file(path):
        assert main(["store", "check", "--db", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"error: {path}: schema version 2 is older than {migrations.LATEST}, and it cannot be brought up to date where "
                       "it is: the file is read-only for you; copy old.duckdb (with old_files/ when present) to a "
                       "folder you can write to and run `genuine store migrate --db COPY` on the copy")
        assert main(["store", "migrate", "--db", str(path)]) == 2
        assert capsys.readouterr().err.strip() == (f"error: cannot write to the store {path}: the file is read-only "
                                                   "for you, and this command changes it; nothing was saved")
        assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["old.duckdb"]
    copy = tmp_path / "copy.duckdb"
    shutil.copy(path, copy)
    assert main(["store", "migrate", "--db", str(copy)]) == 0 and main(["store", "check", "--db", str(copy)]) == 0


def test_an_older_store_whose_folder_refuses_new_files_names_the_folder(tmp_path, capsys):
    folder = tmp_path / "locked"
    path = folder / "old.duckdb"
    _version_2_store(path)
    with refusing_new_files(folder):
        assert main(["store", "scans", "--db", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"cannot be brought up to date where it is: its folder {folder} refuses new files (" in err
        assert "`genuine store migrate --db COPY` on the copy" in err and len(err.strip().splitlines()) == 1
    assert main(["store", "scans", "--db", str(path)]) == 2
    assert f"bring it up to date once with `genuine store migrate --db {path}`" in capsys.readouterr().err


def test_models_registered_before_the_event_log_get_their_registration_recorded(tmp_path, capsys):
    path = tmp_path / "old.duckdb"
    with Store(path) as s:
        for name in ("m1", "m2"):
            registry.register_model(s, fake_model(name))
        registered = s.query("SELECT name, checksum, registered_at FROM models ORDER BY id")
    conn = duckdb.connect(str(path))  # a version-2 store: no event log yet
    conn.execute("DROP TABLE store_events")
    conn.execute("DELETE FROM schema_version WHERE version >= 3")
    conn.close()
    with Store(path) as s:
        ev = events.store_events(s)
        assert ev["action"].tolist() == ["register model"] * 2 and ev["by_user"].isna().all()
        assert ev["subject"].tolist() == registered["name"].tolist()
        assert ev["identity"].tolist() == registered["checksum"].tolist()
        assert ev["created_at"].tolist() == registered["registered_at"].tolist()
        assert ev["detail"][0] == {"folder": None, "kind": "genuine", "preset": "test",
                                   "recorded": "by schema step 3: registered before the event log"}
        s.execute(migrations.STEPS[2][2]())  # the step again: nothing twice
        assert len(events.store_events(s)) == 2
        registry.remove_model(s, "m1", by="ann")
    assert main(["store", "events", "--subject", "m1", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "register model" in out and "remove model" in out and "registered before the event log" in out


def test_a_version_9_store_migrates_keeping_its_event_log_and_logs_relocations(tmp_path, capsys):
    # before step 10 the log's CHECK refused 'relocate scan' and 'relocate model': a path change left no trace
    path = tmp_path / "v9.duckdb"
    conn = store_at_version(path, 9)
    conn.execute("INSERT INTO store_events (action, subject, identity, by_user, detail) VALUES ('register model', "
                 "'m', 'c', 'ann', '{}'), ('remove scan', 'x.tif', 'sha', 'bob', '{}')")
    with pytest.raises(duckdb.ConstraintException):
        conn.execute("INSERT INTO store_events (action, subject, identity) VALUES ('relocate scan', 'y.tif', 's')")
    conn.close()
    assert main(["store", "migrate", "--db", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: schema version 10 (was 9)"
    with Store(path) as s:
        assert migrations.current_version(s.cursor()) == migrations.LATEST == 10
        ev = events.store_events(s)
        assert ev["event_id"].tolist() == [1, 2] and ev["by_user"].tolist() == ["ann", "bob"]
        with s.transaction() as cur:
            events.record_event(cur, "relocate scan", "y.tif", "s", "cy", {"path": "/b/y.tif", "previous path": "/a/y.tif"})
            events.record_event(cur, "relocate model", "m", "c", "cy", {"folder": "/n", "previous folder": "/o"})
        ev = events.store_events(s)
        assert ev["event_id"].tolist() == [1, 2, 4, 5]  # the id sequence goes on (3: drawn by the refused insert)
        assert [events.detail_text(d) for d in ev["detail"][2:]] == ["path /a/y.tif -> /b/y.tif", "folder /o -> /n"]
