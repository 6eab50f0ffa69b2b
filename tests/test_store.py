"""The DuckDB store: schema/migrations, label events, review queue, summaries, SQL hygiene."""

from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from _store_fakes import fake_model, synthetic_result
from genuine_core.errors import InputError, StoreError
from genuine_core.stats import rogan_gladen, wilson_interval
from store import labels, migrations, nuclei, registry, review, samples, summary
from store.db import Store
from store.review_stats import untrusted_model_ids
from store.scans import write_scan_result

REPO = Path(__file__).resolve().parents[1]


def _add_scan(store, sample_name, sha, probs_by_model, kind="case", expected=None, genotype=None,
              uncertainty=None, metrics=None, truth=None):
    """Write a hand-made scan; returns (scan_id, nucleus ids in mask-label order)."""
    sid = samples.ensure_sample(store, sample_name, kind, expected, genotype)
    mids = {m: registry.register_model(store, fake_model(m, metrics=(metrics or {}).get(m))) for m in probs_by_model}
    result = synthetic_result(sha, probs_by_model, uncertainty)
    n = len(next(iter(probs_by_model.values())))
    frames = []
    if truth is not None:
        frames.append(pd.DataFrame({"mask_label": np.arange(1, n + 1), "kind": "truth", "label": truth,
                                    "source": "test"}))
    if samples.genotype_label(genotype) is not None:
        frames.append(pd.DataFrame({"mask_label": np.arange(1, n + 1), "kind": "auto",
                                    "label": samples.genotype_label(genotype), "source": "genotype"}))
    lab = pd.concat(frames, ignore_index=True) if frames else None
    scan_id = write_scan_result(store, sid, result, mids, labels=lab)
    ids = store.query("SELECT id FROM nuclei WHERE scan_id = ? ORDER BY mask_label", [scan_id])["id"].to_numpy()
    return scan_id, ids


# -- schema ---------------------------------------------------------------------------------


def test_schema_is_versioned_and_reopening_is_idempotent(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as s:
        assert migrations.current_version(s.cursor()) == migrations.LATEST == 10
        tables = set(s.query("SELECT table_name FROM information_schema.tables")["table_name"])
    expected = {"samples", "scans", "nuclei", "labels", "label_events", "models", "predictions", "detections",
                "embeddings", "umap_coords", "umap_fits", "probe_runs", "probe_results", "schema_version",
                "curated_labels", "scan_models", "synthetic_truth", "store_events", "sign_outs"}
    assert expected <= tables
    with Store(path) as s:  # second open: no second version row, schema script still idempotent
        assert s.query("SELECT count(*) AS n FROM schema_version")["n"][0] == 10
        for _, _, script in migrations.STEPS:
            s.cursor().execute(script())
    with Store(path, read_only=True) as s:
        assert s.scalar("SELECT max(version) FROM schema_version") == 10
        with pytest.raises(StoreError):
            with s.transaction():
                pass


def test_newer_store_is_refused(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as s:
        s.execute("INSERT INTO schema_version (version, note) VALUES (99, 'future')")
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_missing_store_read_only_and_not_a_database(tmp_path):
    with pytest.raises(StoreError):
        Store(tmp_path / "absent.duckdb", read_only=True)
    bad = tmp_path / "bad.duckdb"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        Store(bad)
    # files DuckDB would read as a throwaway in-memory database: every write would vanish
    table = tmp_path / "nuclei.csv"
    table.write_text("nucleus_id,prob\n1,0.5\n")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "t.parquet")
    for path in (table, tmp_path / "t.parquet"):
        before = path.read_bytes()
        for read_only in (False, True):
            with pytest.raises(StoreError, match="not a DuckDB database, not a GENUINE store"):
                Store(path, read_only=read_only)
        assert path.read_bytes() == before
    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path)


def test_another_programs_duckdb_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "lims.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE patients (id INTEGER, name VARCHAR)")
        conn.execute("INSERT INTO patients VALUES (1, 'A')")
    for read_only in (False, True):
        with pytest.raises(StoreError, match="another program.s DuckDB database, with tables patients, not a GENUINE store"):
            Store(path, read_only=read_only)
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT table_name FROM information_schema.tables").fetchall() == [("patients",)]


def test_an_empty_database_reads_as_not_yet_a_store_and_a_writer_sets_it_up(tmp_path):
    path = tmp_path / "interrupted.duckdb"
    duckdb.connect(str(path)).close()  # what a creation interrupted before its first step leaves
    with pytest.raises(StoreError, match="an empty database, not yet a GENUINE store"):
        Store(path, read_only=True)
    with Store(path) as store:
        assert store.scalar("SELECT max(version) FROM schema_version") == migrations.LATEST


def test_an_empty_file_is_no_store_yet_and_a_writer_creates_the_store_in_it(tmp_path, capsys):
    from genuine_core.cli import main

    path = tmp_path / "touched.duckdb"
    path.touch()  # DuckDB refuses a zero-byte file as "not a valid DuckDB database file"
    with pytest.raises(StoreError, match="an empty file, not yet a GENUINE store; an ingest into it, or "
                                         "`genuine store migrate --db "):
        Store(path, read_only=True)
    assert main(["store", "info", "--db", str(path)]) == 2
    assert "an empty file, not yet a GENUINE store" in capsys.readouterr().err
    assert main(["store", "migrate", "--db", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: schema version {migrations.LATEST} (was 0)"
    with Store(path, read_only=True) as store:
        assert store.scalar("SELECT max(version) FROM schema_version") == migrations.LATEST
    path.unlink()
    path.touch()
    with Store(path) as store:  # any writer: the file held nothing, the store takes its place
        samples.ensure_sample(store, "A", "case")
    with Store(path, read_only=True) as store:
        assert samples.list_samples(store)["name"].tolist() == ["A"]


@pytest.mark.parametrize("args", [["store", "exclude-scan", "1", "--by", "A"], ["store", "score", "genuine_cpu"],
                                  ["store", "remove-scan", "1", "--yes"], ["umap"]])
def test_commands_on_an_empty_file_refuse_it_like_a_missing_store_and_leave_it_empty(tmp_path, capsys, args):
    from genuine_core.cli import main

    path = tmp_path / "touched.duckdb"
    path.touch()
    assert main([*args, "--db", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {path}: an empty file, not yet a GENUINE store; an ingest "
                                               f"into it, or `genuine store migrate --db {path}`, sets it up")
    assert path.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["touched.duckdb"]


def test_a_sample_clash_names_the_stored_values_in_words(store):
    samples.ensure_sample(store, "CROP", "mixture", None, None)
    with pytest.raises(InputError, match=r"already exists with expected MNA unknown \(asked 25 %\), "
                                         r"genotype unknown \(asked 'MNA'\)$"):
        samples.ensure_sample(store, "CROP", "mixture", 0.25, "MNA")


def test_store_busy_in_another_process(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path):
        code = ("import sys; from store.db import Store; from genuine_core.errors import StoreError\n"
                "try:\n    Store(sys.argv[1], busy_timeout=0.3)\nexcept StoreError as e:\n    print(e); sys.exit(3)\n")
        r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO,
                           timeout=60)
    assert r.returncode == 3, r.stderr
    assert "store busy" in r.stdout
    assert "waiting" not in r.stderr  # a short wait is not announced


def test_a_long_wait_for_a_busy_store_is_announced(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path):
        code = ("import logging, sys; from store.db import Store; from genuine_core.errors import StoreError\n"
                "logging.basicConfig()\n"
                "try:\n    Store(sys.argv[1], busy_timeout=4.0)\nexcept StoreError as e:\n    sys.exit(3)\n")
        r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO,
                           timeout=60)
    assert r.returncode == 3, r.stderr
    assert r.stderr.count(f"{path} is open for writing by") == 1 and "waiting up to 4 s" in r.stderr


@contextlib.contextmanager
def refusing_new_files(folder: Path):
    """``folder`` takes no new files inside the block: ``chattr +i`` as root (root ignores permissions), else
    no write permission; the test is skipped where neither works. Undone on the way out, whatever happens."""
    if os.geteuid() == 0:
        lock, undo = ["chattr", "+i", str(folder)], ["chattr", "-i", str(folder)]
    else:
        lock, undo = ["chmod", "a-w", str(folder)], ["chmod", "u+w", str(folder)]
    try:
        if subprocess.run(lock, capture_output=True).returncode:
            pytest.skip(f"{' '.join(lock[:2])} does not work here")
        with contextlib.suppress(OSError):
            (folder / "probe").touch()
            pytest.skip(f"{' '.join(lock[:2])} does not keep new files out of a folder here")
        yield
    finally:
        subprocess.run(undo, capture_output=True)


def test_a_store_whose_folder_refuses_new_files_says_so_and_saves_nothing(tmp_path, capsys, monkeypatch):
    """DuckDB saves a change through ``<store>.wal`` beside the store: a folder that refuses it is no 'write
    conflict' (nothing to retry), and every write path says so in one line, naming the folder and the reason."""
    import store.ingest as store_ingest
    from genuine_core.cli import main

    folder = tmp_path / "locked"
    path = folder / "s.duckdb"
    with Store(path) as s:
        _, ids = _add_scan(s, "A", "a" * 64, {"m1": np.linspace(0.1, 0.9, 20)})
        s.execute("DELETE FROM schema_version WHERE version >= 3")  # an older store: opening it migrates
    reason = "Operation not permitted" if os.geteuid() == 0 else "Permission denied"
    refusal = f"cannot write to the store {path}: its folder {folder} refuses new files ({reason})"
    with refusing_new_files(folder):
        with pytest.raises(StoreError, match=re.escape(refusal)):
            Store(path)  # the migration's commit
        assert main(["store", "migrate", "--db", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {refusal}") and err.rstrip().endswith(
            "DuckDB must create s.duckdb.wal there to save a change; nothing was saved")
        assert "conflict" not in err and len(err.strip().splitlines()) == 1
    with Store(path) as s:  # migrated now; the folder refuses new files again below
        pass
    before = path.read_bytes()
    with refusing_new_files(folder):
        with Store(path) as s:
            with pytest.raises(StoreError, match=re.escape(refusal)):
                labels.record_label_event(s, int(ids[0]), 1, "ann")  # the Review page: "Not saved: ..."
            with pytest.raises(StoreError, match=re.escape(refusal)):
                s.next_ids("umap_fit_ids", 1)  # autocommitted outside a transaction (genuine umap, probes)
        for argv in (["store", "exclude-scan", "1", "--by", "ann"], ["store", "remove-model", "m1", "--yes"],
                     ["umap", "--model", "m1", "--neighbors", "5"]):
            assert main([*argv, "--db", str(path)]) == 2, argv
            err = capsys.readouterr().err
            assert err.startswith(f"error: {refusal}") and len(err.strip().splitlines()) == 1, (argv, err)
        scan = tmp_path / "scan.tif"
        scan.write_bytes(b"never read")
        monkeypatch.setattr(store_ingest, "ingest_files", lambda *a, **k: pytest.fail("ingested into a store "
                                                                                      "that cannot save it"))
        assert main(["ingest", str(scan), "--sample", "B", "--quiet", "--db", str(path)]) == 2
        assert capsys.readouterr().err.startswith(f"error: {refusal}")  # before any scan was read or scored
        assert path.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["s.duckdb"]
    with Store(path, read_only=True) as s:
        assert s.scalar("SELECT count(*) FROM label_events") == 0 and s.scalar("SELECT count(*) FROM models") == 1


def test_a_new_store_in_a_folder_that_refuses_new_files_says_so_in_one_line(tmp_path, capsys):
    from genuine_core.cli import main

    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "new.duckdb"
    scan = tmp_path / "scan.tif"
    scan.write_bytes(b"never read")
    reason = "Operation not permitted" if os.geteuid() == 0 else "Permission denied"
    refusal = f"cannot write to the store {path}: its folder {folder} refuses new files ({reason})"
    with refusing_new_files(folder):
        with pytest.raises(StoreError, match=re.escape(refusal)):
            Store(path)
        assert main(["ingest", str(scan), "--sample", "S", "--quiet", "--db", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {refusal}") and "IO Error" not in err and len(err.strip().splitlines()) == 1
        assert list(folder.iterdir()) == []


def test_transaction_rolls_back_everything(store):
    samples.ensure_sample(store, "a", "case")
    with pytest.raises(RuntimeError):
        with store.transaction() as cur:
            cur.execute("INSERT INTO samples (name, kind) VALUES ('b', 'case')")
            raise RuntimeError("boom")
    assert samples.list_samples(store)["name"].tolist() == ["a"]


def test_sample_validation_and_conflicts(store):
    sid = samples.ensure_sample(store, "mix", "mixture", 0.25)
    assert samples.ensure_sample(store, "mix") == sid
    assert samples.ensure_sample(store, "mix", "mixture", 0.25) == sid
    with pytest.raises(InputError, match="already exists"):
        samples.ensure_sample(store, "mix", "case")
    with pytest.raises(InputError):
        samples.ensure_sample(store, "x", "tissue")
    with pytest.raises(InputError):
        samples.ensure_sample(store, "x", "case", 1.5)
    with pytest.raises(InputError):
        samples.ensure_sample(store, "  ")
    assert samples.genotype_label("mna") == 1 and samples.genotype_label("Non-MNA") == 0
    assert samples.genotype_label("HSR") is None


def test_registering_a_model_with_weak_validation_warns_once(store, caplog, monkeypatch):
    monkeypatch.setattr(registry, "_WARNED", set())  # the process may have warned about these before
    weak = fake_model("weak", metrics={"validation": {"sensitivity": 0.25, "specificity": 0.875, "n_positive": 4,
                                                      "n_negative": 8}})
    with caplog.at_level("WARNING", logger="store.registry"):
        registry.register_model(store, weak)
        registry.register_model(store, fake_model("weak2", bias=1.0, metrics=weak.metrics))
        registry.register_model(store, fake_model("good", metrics={"validation": {
            "sensitivity": 0.95, "specificity": 0.95, "n_positive": 300, "n_negative": 300}}))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "model 'weak': weak validation (sensitivity 0.25, specificity 0.88, on 4 MNA" in warned[0]
    assert "flagged on the Cases page" in warned[0]


def test_model_registration_refuses_other_weights_under_same_name(store):
    mid = registry.register_model(store, fake_model("g"))
    assert registry.register_model(store, fake_model("g")) == mid
    with pytest.raises(StoreError, match="other weights"):
        registry.register_model(store, fake_model("g", bias=2.0))
    import dataclasses

    copy = dataclasses.replace(fake_model("g"), name="g_copy")  # a copied folder: the same weights, another name
    with pytest.raises(StoreError, match="model 'g_copy' has the same weights as the model 'g'"):
        registry.register_model(store, copy)
    with pytest.raises(StoreError, match="no model named"):
        registry.model_id(store, "nope")
    df = registry.list_models(store)
    assert df["name"].tolist() == ["g"] and isinstance(df.at[0, "config"], dict)


def test_a_model_with_stored_predictions_keeps_its_uncertainty_method(store):
    """An ingest with another --mc-samples would make one threshold read MC-dropout stds and entropies alike."""
    import dataclasses

    mc = dataclasses.replace(fake_model("m1"), uncertainty_method="mc_dropout_std")
    assert registry.register_model(store, mc) == registry.register_model(  # no predictions yet: it may change
        store, dataclasses.replace(mc, uncertainty_method="entropy"))
    registry.register_model(store, mc)
    write_scan_result(store, samples.ensure_sample(store, "s", "case"), synthetic_result("5" * 64, {"m1": [0.9, 0.1]}),
                      {"m1": registry.model_id(store, "m1")})
    with pytest.raises(StoreError, match="measured as mc_dropout_std .--mc-samples 1 or more., this run would "
                                         "store entropy"):
        registry.register_model(store, dataclasses.replace(mc, uncertainty_method="entropy"))
    assert registry.list_models(store).at[0, "uncertainty_method"] == "mc_dropout_std"


def test_scan_roundtrip_patches_and_embeddings(store):
    scan_id, ids = _add_scan(store, "c", "a" * 64, {"m1": [0.1, 0.9, 0.6]})
    assert len(ids) == 3
    imgs = nuclei.patch_images(store, ids)
    assert set(imgs) == set(ids.tolist()) and imgs[ids[0]].shape == (3, 8, 8)
    vec = store.query("SELECT vector FROM embeddings ORDER BY nucleus_id")["vector"]
    assert len(vec) == 3 and len(vec[0]) == 4
    preds = nuclei.nucleus_predictions(store, ids)
    assert preds["prob"].tolist() == pytest.approx([0.1, 0.9, 0.6])
    assert preds["call"].tolist() == [0, 1, 1]
    det = nuclei.nucleus_detections(store, ids)
    assert len(det) == 1 and det.at[0, "nucleus_id"] == ids[0]
    # same sha256 again: nothing written
    sid = samples.sample_id(store, "c")
    assert write_scan_result(store, sid, synthetic_result("a" * 64, {"m1": [0.5]}),
                             {"m1": registry.model_id(store, "m1")}) is None
    assert store.scalar("SELECT count(*) FROM nuclei") == 3


# -- label events ----------------------------------------------------------------------------


def test_label_events_two_reviewers_with_undo(store):
    _, ids = _add_scan(store, "c", "b" * 64, {"m1": [0.2, 0.8, 0.5]})
    n1, n2, n3 = (int(i) for i in ids)
    e1 = labels.record_label_event(store, n1, 1, "ann", note="clear amplification")
    labels.record_label_event(store, n2, "non-mna", "bob")
    e3 = labels.record_label_event(store, n1, 0, "bob")          # bob overrides ann
    labels.record_label_event(store, n3, "exclude", "ann")
    labels.record_label_event(store, n2, "MNA", "ann")
    cur = labels.current_labels(store).set_index("nucleus_id")
    assert cur.loc[n1, "value"] == "0" and cur.loc[n1, "reviewer"] == "bob"
    assert cur.loc[n2, "label"] == 1 and cur.loc[n3, "excluded"]
    # ann cannot undo her decision on n1: bob decided after her
    with pytest.raises(StoreError, match="decided again"):
        labels.undo_event(store, e1, "ann")
    # bob undoes his last current decision (n1 back to ann's 1)
    undo = labels.undo_last(store, "bob")
    assert labels.current_labels(store, [n1]).at[0, "label"] == 1
    # ann undoes twice: n2 back to bob's 0, then n3 exclusion removed (back to no decision)
    labels.undo_last(store, "ann")
    labels.undo_last(store, "ann")
    cur = labels.current_labels(store).set_index("nucleus_id")
    assert cur.loc[n2, "label"] == 0 and n3 not in cur.index
    # append-only: every decision and every undo is a row; nothing was changed
    hist = store.query("SELECT id, nucleus_id, value, previous, reviewer, undoes FROM label_events ORDER BY id")
    assert len(hist) == 8
    assert hist.loc[hist["id"] == undo, "undoes"].item() == e3
    assert hist.loc[hist["id"] == e3, ["value", "previous"]].values.tolist() == [["0", "1"]]
    assert hist["previous"].tolist()[:5] == ["unset", "unset", "1", "unset", "0"]
    audit = labels.audit_trail(store)
    assert len(audit) == 8 and set(audit["sample"]) == {"c"} and audit["event_id"].is_monotonic_increasing


def test_label_event_validation(store):
    _, ids = _add_scan(store, "c", "c" * 64, {"m1": [0.2]})
    with pytest.raises(InputError):
        labels.record_label_event(store, int(ids[0]), 2, "ann")
    with pytest.raises(InputError):
        labels.record_label_event(store, int(ids[0]), 1, " ")
    with pytest.raises(StoreError):
        labels.record_label_event(store, 999_999, 1, "ann")
    assert labels.undo_last(store, "ann") is None


def test_concurrent_reviewers_lose_no_event(store):
    _, ids = _add_scan(store, "c", "d" * 64, {"m1": np.linspace(0, 1, 20)})

    def work(name):
        for k, nid in enumerate(ids):
            labels.record_label_event(store, int(nid), k % 2, name)

    threads = [threading.Thread(target=work, args=(f"r{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.scalar("SELECT count(*) FROM label_events") == 60
    assert len(labels.current_labels(store)) == 20


# -- review queue ----------------------------------------------------------------------------


def test_review_queue_flags_order_and_pages(store):
    # m1 and m2 disagree on nucleus 2 and 3; nucleus 1 is clear and agreed; auto label 0 (non-MNA line)
    _add_scan(store, "line", "e" * 64, {"m1": [0.05, 0.55, 0.9, 0.97], "m2": [0.04, 0.45, 0.2, 0.96]},
              kind="cell-line", genotype="non-MNA")
    ids = store.query("SELECT id FROM nuclei ORDER BY mask_label")["id"].tolist()
    q = review.review_queue(store, limit=10)
    assert ids[0] not in q["nucleus_id"].tolist()  # nothing to learn there
    row = q.set_index("nucleus_id")
    assert row.loc[ids[1], "models_disagree"] and row.loc[ids[1], "low_confidence"]
    assert row.loc[ids[2], "models_disagree"] and row.loc[ids[2], "auto_mismatch"]
    assert row.loc[ids[3], "auto_mismatch"] and not row.loc[ids[3], "models_disagree"]
    assert q["informativeness"].is_monotonic_decreasing
    # informativeness = closeness + spread + 0.5 auto_mismatch (+ 0.5 high uncertainty):
    # nucleus 3: 0.9 + 0.7 + 0.5 = 2.1; nucleus 2: 1.0 + 0.1 + 0.5 = 1.6; nucleus 4: 0.07 + 0.01 + 0.5 = 0.58
    assert q["nucleus_id"].tolist() == [ids[2], ids[1], ids[3]]
    assert q["informativeness"].tolist() == pytest.approx([2.1, 1.6, 0.58], abs=1e-5)
    # one model in focus: m2 alone calls nucleus 3 non-MNA = auto label, so no auto mismatch from m2
    q2 = review.review_queue(store, model="m2", flags=["auto_mismatch"]).set_index("nucleus_id")
    assert ids[2] not in q2.index and ids[3] in q2.index
    # pagination
    p1 = review.review_queue(store, limit=2, offset=0)["nucleus_id"].tolist()
    p2 = review.review_queue(store, limit=2, offset=2)["nucleus_id"].tolist()
    assert p1 + p2 == q["nucleus_id"].tolist()
    # progress and reviewed nuclei leaving the queue
    assert review.review_progress(store) == {"total": 3, "reviewed": 0, "remaining": 3, "excluded": 0}
    labels.record_label_event(store, ids[1], "exclude", "ann")
    assert ids[1] not in review.review_queue(store)["nucleus_id"].tolist()
    assert ids[1] in review.review_queue(store, include_reviewed=True)["nucleus_id"].tolist()
    assert review.review_progress(store) == {"total": 3, "reviewed": 1, "remaining": 2, "excluded": 1}
    with pytest.raises(ValueError):
        review.review_queue(store, flags=["bogus"])


def test_review_queue_with_reviewed_leaves_out_the_reviewers_own_decisions(store):
    """A second curator (Include reviewed) sees the nuclei others decided; once they decide one, it leaves
    their queue (it stayed the first card, and every key press decided it again); an undo brings it back."""
    _add_scan(store, "line", "f" * 64, {"m1": [0.05, 0.55, 0.9, 0.97], "m2": [0.04, 0.45, 0.2, 0.96]},
              kind="cell-line", genotype="non-MNA")
    ids = store.query("SELECT id FROM nuclei ORDER BY mask_label")["id"].tolist()
    labels.record_label_event(store, ids[2], 1, "ann")
    labels.record_label_event(store, ids[1], 0, "ann")
    every = review.review_queue(store, include_reviewed=True)["nucleus_id"].tolist()
    assert every == [ids[2], ids[1], ids[3]]
    assert review.review_queue(store, include_reviewed=True, reviewer="bob")["nucleus_id"].tolist() == every
    labels.record_label_event(store, ids[2], 0, "bob")
    mine = lambda who: review.review_queue(store, include_reviewed=True, reviewer=who)["nucleus_id"].tolist()  # noqa: E731
    assert mine("bob") == [ids[1], ids[3]]
    assert mine(" Bob ") == [ids[1], ids[3]]  # a reviewer's name as agreement compares it
    assert mine("ann") == [ids[3]]  # bob's later decision does not hand ann's nuclei back to her
    assert review.review_progress(store, reviewer="bob")["mine"] == 1
    assert review.review_progress(store, reviewer="ann")["mine"] == 2
    labels.undo_last(store, "bob")
    assert mine("bob") == every


WEAK_VAL = {"validation": {"sensitivity": 1.0, "specificity": 0.25, "n_positive": 4, "n_negative": 4}}
GOOD_VAL = {"validation": {"sensitivity": 0.95, "specificity": 0.95, "n_positive": 200, "n_negative": 200}}


def test_a_weak_model_neither_raises_models_disagree_nor_speaks_for_all_models(store):
    """A model registered despite a useless validation (always MNA here) is left out of the disagreement
    and of the 'All' focus; its own flags show only with it as the focus model."""
    probs = {"m1": [0.05, 0.1, 0.8, 0.2], "m2": [0.1, 0.05, 0.9, 0.7], "weak": [0.9, 0.95, 0.99, 0.9]}
    _, ids = _add_scan(store, "line", "w" * 64, probs, kind="cell-line", genotype="non-MNA",
                       metrics={"m1": GOOD_VAL, "m2": GOOD_VAL, "weak": WEAK_VAL})
    assert untrusted_model_ids(store.cursor()) == [int(registry.list_models(store).set_index("name").at["weak", "id"])]
    q = review.review_queue(store, flags=["models_disagree"])
    assert q["nucleus_id"].tolist() == [ids[3]]  # m1 and m2 disagree there; the weak model's MNA calls count nowhere
    assert int(q["n_models"].iloc[0]) == 2 and float(q["spread"].iloc[0]) == pytest.approx(0.5)
    assert review.review_progress(store, flags=["models_disagree"])["total"] == 1
    # 'All' focus: the trusted models' mean and calls (nucleus 3: both call MNA against the auto label)
    every = review.review_queue(store).set_index("nucleus_id")
    assert sorted(every.index) == [ids[2], ids[3]]
    assert every.at[ids[2], "prob"] == pytest.approx(0.85) and every.at[ids[2], "auto_mismatch"]
    # the weak model in focus: its own calls contradict the auto label everywhere, but not 'models disagree'
    focus = review.review_queue(store, model="weak", flags=["auto_mismatch", "models_disagree"]).set_index("nucleus_id")
    assert sorted(focus.index) == sorted(ids) and focus["models_disagree"].tolist().count(True) == 1
    # once its validation is good, it counts again
    registry.register_model(store, fake_model("weak", metrics=GOOD_VAL))
    assert untrusted_model_ids(store.cursor()) == []
    assert sorted(review.review_queue(store, flags=["models_disagree"])["nucleus_id"]) == [ids[0], ids[1], ids[3]]


def test_a_weak_model_leaves_the_queue_as_it_was_without_it(store):
    """Adding a weak model's predictions changes no flag, order or informativeness of the queue."""
    probs = {"m1": [0.05, 0.55, 0.9, 0.97, 0.3], "m2": [0.04, 0.45, 0.2, 0.96, 0.6]}
    _add_scan(store, "a", "x" * 64, probs, kind="cell-line", genotype="non-MNA",
              metrics={"m1": GOOD_VAL, "m2": GOOD_VAL})
    before = review.review_queue(store, limit=10)
    _add_scan(store, "b", "y" * 64, {"weak": [0.99] * 3}, metrics={"weak": WEAK_VAL})  # a sample only it scored
    sid = store.query("SELECT id FROM scans WHERE sha256 = ?", ["x" * 64])["id"].iloc[0]
    ids = store.query("SELECT id FROM nuclei WHERE scan_id = ? ORDER BY mask_label", [int(sid)])["id"].to_numpy()
    res = synthetic_result("z" * 64, {"weak": [0.99, 0.01, 0.99, 0.01, 0.99]})
    from store.scans import add_model_outputs

    weak_id = int(registry.list_models(store).set_index("name").at["weak", "id"])
    assert add_model_outputs(store, int(sid), ids, res, {"weak": weak_id})
    after = review.review_queue(store, limit=10)
    pd.testing.assert_frame_equal(after.drop(columns=["n_models"]), before.drop(columns=["n_models"]),
                                  check_dtype=False)
    assert review.review_progress(store, sample="b") == {"total": 0, "reviewed": 0, "remaining": 0, "excluded": 0}
    assert len(review.review_queue(store, sample="b", model="weak", flags=["low_confidence", "auto_mismatch",
                                                                             "high_uncertainty"])) == 0


# -- sample summary ---------------------------------------------------------------------------


def test_sample_summary_matches_hand_computation(store):
    # 62 nuclei; model calls 19 MNA; 16 nuclei uncertain; 2 get excluded (one MNA call, one not)
    probs = np.array([0.9] * 19 + [0.1] * 43, np.float32)
    unc = np.array([0.3] * 16 + [0.01] * 46, np.float32)
    truth = np.array([1] * 15 + [0] * 47)
    metrics = {"m1": {"val": {"tp": 90, "fn": 10, "tn": 95, "fp": 5, "tpr": 0.9, "tnr": 0.95}}}
    _, ids = _add_scan(store, "mixA", "f" * 64, {"m1": probs}, kind="mixture", expected=0.25, uncertainty=unc,
                       metrics=metrics, truth=truth)
    labels.record_label_event(store, int(ids[0]), "exclude", "ann")   # an MNA call, uncertain, truth 1
    labels.record_label_event(store, int(ids[-1]), "exclude", "ann")  # a non-MNA call, certain, truth 0
    df = summary.sample_summaries(store)
    assert len(df) == 1
    r = df.iloc[0]
    assert (r["n_scored"], r["n_mna"]) == (60, 18)
    assert r["mna_pct"] == pytest.approx(30.0)
    lo, hi = wilson_interval(18, 60)
    assert (r["ci_low_pct"], r["ci_high_pct"]) == pytest.approx((100 * lo, 100 * hi))
    # by hand: centre (0.3 + z^2/120) / (1 + z^2/60) = 0.31204, half-width 0.11305
    assert r["ci_low_pct"] == pytest.approx(19.90, abs=0.01) and r["ci_high_pct"] == pytest.approx(42.51, abs=0.01)
    assert r["corrected_pct"] == pytest.approx(100 * 0.25 / 0.85)
    est = rogan_gladen(18, 60, 0.9, 0.95, n_positive=100, n_negative=100)
    assert (r["corrected_low_pct"], r["corrected_high_pct"]) == pytest.approx((100 * est.low, 100 * est.high))
    assert r["expected_pct"] == pytest.approx(25.0)
    assert r["deviation_pp"] == pytest.approx(5.0)
    assert r["true_mna_pct"] == pytest.approx(100 * 14 / 60)
    assert r["call"] == "MNA"          # >= 50 nuclei, more than 20 % MNA (COG's homogeneous MNA)
    assert r["uncertain_share"] == pytest.approx(15 / 60)
    # the corrected interval (est.low ~ 16 %) reaches below 20 %: 60 nuclei cannot tell MNA from heterogeneous
    assert r["qc_flags"] == ["high uncertainty", "possibly heterogeneous"]
    assert "val" in r["correction"]


def test_summary_flags_few_nuclei_and_missing_metrics(store):
    _add_scan(store, "tiny", "1" * 64, {"m1": [0.9, 0.8, 0.1]}, genotype="non-MNA")
    r = summary.sample_summaries(store).iloc[0]
    assert r["call"] == "not enough nuclei"
    assert r["qc_flags"] == ["few nuclei", "no validation metrics", "auto-label disagreement"]
    assert set(r["qc_flags"]) <= set(summary.QC_FLAGS)  # every flag is explained to the user
    assert math.isnan(r["corrected_pct"]) and math.isnan(r["expected_pct"])
    assert summary.sample_summaries(store, model="other").empty


def test_summary_does_not_call_heterogeneous_what_false_positives_explain(store):
    # 60 nuclei, 5 called MNA: "heterogeneous MNA" by count, but at specificity 0.9 about 6 false MNA calls
    # are expected among 60 non-MNA nuclei, so the corrected interval reaches 0 %: non-MNA, flagged
    metrics = {"m1": {"val": {"tp": 90, "fn": 10, "tn": 90, "fp": 10, "tpr": 0.9, "tnr": 0.9}}}
    _add_scan(store, "fp", "2" * 64, {"m1": [0.9] * 5 + [0.1] * 55}, metrics=metrics)
    r = summary.sample_summaries(store).iloc[0]
    assert r["call"] == "non-MNA" and r["corrected_low_pct"] == 0
    assert "possible false positives" in r["qc_flags"] and "possible false positives" in summary.QC_FLAGS
    # the same call from a model that almost never calls MNA falsely is not flagged
    metrics = {"m2": {"val": {"tp": 90, "fn": 10, "tn": 999, "fp": 1, "tpr": 0.9, "tnr": 0.999}}}
    _add_scan(store, "tp", "3" * 64, {"m2": [0.9] * 5 + [0.1] * 55}, metrics=metrics)
    r = summary.sample_summaries(store, model="m2").iloc[0]
    assert r["call"] == "heterogeneous MNA" and "possible false positives" not in r["qc_flags"]


@pytest.mark.parametrize("val, weak", [
    ({"sensitivity": 1.0, "specificity": 1.0, "n_positive": 1, "n_negative": 1}, True),   # 5+5 curated: 1+1
    ({"sensitivity": 0.4, "specificity": 0.99, "n_positive": 200, "n_negative": 200}, True),  # misses most MNA
    ({"sensitivity": 0.9, "specificity": 0.95, "n_positive": 100, "n_negative": 100}, False),
    ({"sensitivity": 0.9, "specificity": 0.95}, False),  # counts not recorded: rates alone judge it
])
def test_summary_flags_calls_of_a_model_with_weak_validation(store, val, weak):
    """A model registered despite a useless validation (the Retrain page's "Register it anyway")
    has its calls flagged wherever a pathologist reads them."""
    _add_scan(store, "s", "4" * 64, {"m1": [0.9] * 30 + [0.1] * 30}, metrics={"m1": {"validation": val}})
    r = summary.sample_summaries(store).iloc[0]
    assert ("weak validation" in r["qc_flags"]) is weak
    assert "weak validation" in summary.QC_FLAGS


def test_summary_flags_a_corrected_interval_pinned_at_100_and_skips_rates_given_in_percent(store):
    # all 63 nuclei called MNA by a model that finds only 82 % of MNA nuclei: more than its rates allow
    metrics = {"m1": {"validation": {"sensitivity": 0.8218, "specificity": 0.9231, "n_positive": 275,
                                     "n_negative": 325}},
               "m2": {"validation": {"sensitivity": 97.4, "specificity": 96.9}},  # percentages: not rates
               "m3": {"validation": {"sensitivity": 0.9, "specificity": 0.95, "n_positive": float("nan"),
                                     "n_negative": -2}}}  # unusable counts: rates taken as known
    _add_scan(store, "all", "6" * 64, {"m1": [0.9] * 63, "m2": [0.9] * 63, "m3": [0.9] * 63}, metrics=metrics)
    rows = summary.sample_summaries(store).set_index("model")
    assert rows.at["m1", "corrected_low_pct"] == rows.at["m1", "corrected_high_pct"] == 100
    assert "rates do not fit" in rows.at["m1", "qc_flags"] and "rates do not fit" in summary.QC_FLAGS
    assert "no validation metrics" in rows.at["m2", "qc_flags"] and math.isnan(rows.at["m2", "corrected_pct"])
    assert rows.at["m3", "correction"].endswith("(wilson-transformed)")


def test_many_nuclei_cropped_to_the_patch_raise_oversized_nuclei(store):
    # a scan at another magnification, or merged clumps: nuclei larger than the patch are cropped
    _add_scan(store, "big", "8" * 64, {"m1": [0.9] * 40})
    _add_scan(store, "fine", "9" * 64, {"m1": [0.9] * 40})
    store.execute("UPDATE nuclei SET cropped = mask_label <= 11 WHERE scan_id = "
                  "(SELECT c.id FROM scans c JOIN samples s ON s.id = c.sample_id WHERE s.name = 'big')")
    store.execute("UPDATE nuclei SET cropped = mask_label <= 10 WHERE scan_id = "
                  "(SELECT c.id FROM scans c JOIN samples s ON s.id = c.sample_id WHERE s.name = 'fine')")
    rows = summary.sample_summaries(store).set_index("sample")
    assert "oversized nuclei" in rows.at["big", "qc_flags"]  # 11 of 40 = 27.5 %
    assert "oversized nuclei" not in rows.at["fine", "qc_flags"]  # 10 of 40 = 25 %: not above the share
    assert "--diameter" in summary.QC_FLAGS["oversized nuclei"]


def test_fewer_mycn_than_nmi_signals_in_the_typical_nucleus_suggest_swapped_channels(store):
    _add_scan(store, "swapped", "a1" * 32, {"m1": [0.2] * 30, "m2": [0.2] * 30})
    _add_scan(store, "plain", "b1" * 32, {"m1": [0.2] * 30, "m2": [0.2] * 30})
    store.execute("UPDATE predictions SET det_nmi = 4, det_mycn = 2, det_cluster = 0 WHERE nucleus_id IN (SELECT n.id "
                  "FROM nuclei n JOIN scans c ON c.id = n.scan_id JOIN samples s ON s.id = c.sample_id "
                  "WHERE s.name = 'swapped')")
    store.execute("UPDATE predictions SET det_nmi = 2, det_mycn = 1, det_cluster = 1 WHERE nucleus_id IN (SELECT n.id "
                  "FROM nuclei n JOIN scans c ON c.id = n.scan_id JOIN samples s ON s.id = c.sample_id "
                  "WHERE s.name = 'plain')")  # a cluster counts as a MYCN signal: 2 vs 2
    store.execute("UPDATE predictions SET det_nmi = NULL, det_mycn = NULL, det_cluster = NULL WHERE model_id = "
                  "(SELECT id FROM models WHERE name = 'm2')")  # a model without a detector (ResNet, ratio)
    rows = summary.sample_summaries(store)
    swapped, plain = rows[rows["sample"] == "swapped"], rows[rows["sample"] == "plain"]
    assert all("MYCN below reference" in f for f in swapped["qc_flags"])  # every model's row: the scan's property
    assert not any("MYCN below reference" in f for f in plain["qc_flags"])
    only_m2 = summary.sample_summaries(store, model="m2")  # the detector's counts still judge the sample
    assert "MYCN below reference" in only_m2.set_index("sample").at["swapped", "qc_flags"]
    store.execute("UPDATE predictions SET det_nmi = NULL, det_mycn = NULL, det_cluster = NULL")  # no detector
    assert not any("MYCN below reference" in f for f in summary.sample_summaries(store)["qc_flags"])


def test_rates_no_better_than_chance_are_weak_validation_not_missing_metrics(store):
    # what the Models page warns about before registering a useless retrained model: 'weak validation'
    metrics = {"useless": {"validation": {"sensitivity": 0.0, "specificity": 1.0, "n_positive": 12,
                                          "n_negative": 30}},
               "none": {}}
    _add_scan(store, "s", "7" * 64, {"useless": [0.2] * 30, "none": [0.2] * 30}, metrics=metrics)
    rows = summary.sample_summaries(store).set_index("model")
    assert "weak validation" in rows.at["useless", "qc_flags"]
    assert "no validation metrics" not in rows.at["useless", "qc_flags"]
    assert math.isnan(rows.at["useless", "corrected_pct"])  # no correction from rates no better than chance
    assert "no validation metrics" in rows.at["none", "qc_flags"] and "weak validation" not in rows.at["none",
                                                                                                         "qc_flags"]


def test_summary_flags_a_model_that_scored_part_of_a_sample_and_a_call_its_misses_could_overturn(store):
    good = {"validation": {"sensitivity": 0.95, "specificity": 0.95, "n_positive": 300, "n_negative": 300}}
    blind = {"validation": {"sensitivity": 0.55, "specificity": 0.99, "n_positive": 300, "n_negative": 300}}
    _add_scan(store, "two", "7" * 64, {"m1": [0.1] * 60, "m2": [0.1] * 60}, metrics={"m1": good, "m2": good})
    _add_scan(store, "two", "8" * 64, {"m1": [0.1] * 60}, metrics={"m1": good})  # m2 interrupted before this one
    rows = summary.sample_summaries(store).set_index("model")
    assert "partly scored" in rows.at["m2", "qc_flags"] and "partly scored" not in rows.at["m1", "qc_flags"]
    for nid in store.query("SELECT id FROM nuclei WHERE scan_id = (SELECT id FROM scans WHERE sha256 = ?)",
                           ["8" * 64])["id"]:  # a curator excludes every nucleus of the scan m2 did not score
        labels.record_label_event(store, int(nid), "exclude", "ann")
    rows = summary.sample_summaries(store, sample="two").set_index("model")
    assert not any("partly scored" in f for f in rows["qc_flags"])  # what m2 missed is left out anyway
    # 15 of 100 called MNA by a model that misses 45 % of MNA nuclei: more than 20 % may well be
    _add_scan(store, "blind", "9" * 64, {"m3": [0.9] * 15 + [0.1] * 85}, metrics={"m3": blind})
    r = summary.sample_summaries(store, model="m3").iloc[0]
    assert r["call"] == "heterogeneous MNA" and r["corrected_high_pct"] > 20
    assert "possible false negatives" in r["qc_flags"]
    assert {"partly scored", "possible false negatives"} <= set(summary.QC_FLAGS)
    # 30 of 100 called MNA by a model with 20 % false positives: the true share may be 20 % or less
    loose = {"validation": {"sensitivity": 0.95, "specificity": 0.80, "n_positive": 300, "n_negative": 300}}
    _add_scan(store, "loose", "a" * 64, {"m4": [0.9] * 30 + [0.1] * 70}, metrics={"m4": loose})
    r = summary.sample_summaries(store, model="m4").iloc[0]
    assert r["call"] == "MNA" and r["corrected_low_pct"] <= 20
    assert "possibly heterogeneous" in r["qc_flags"] and "possibly heterogeneous" in summary.QC_FLAGS
    r = summary.sample_summaries(store, sample="two", model="m1").iloc[0]  # 0 of 60: not MNA, no such flag
    assert "possibly heterogeneous" not in r["qc_flags"]


def test_summary_flags_a_call_its_genotype_contradicts_and_keeps_weak_models_from_downgrading(store):
    good = {"validation": {"sensitivity": 0.95, "specificity": 0.97, "n_positive": 300, "n_negative": 300}}
    weak = {"validation": {"sensitivity": 0.9, "specificity": 0.9, "n_positive": 2, "n_negative": 2}}
    # a non-MNA line whose gain nuclei the model calls MNA: 15 of 100, well beyond its validation false positives
    _add_scan(store, "gain", "a" * 64, {"m1": [0.9] * 15 + [0.1] * 85, "w": [0.9] * 15 + [0.1] * 85},
              genotype="non-MNA", metrics={"m1": good, "w": weak})
    rows = summary.sample_summaries(store).set_index("model")
    assert rows.at["m1", "call"] == "heterogeneous MNA" and "call contradicts genotype" in rows.at["m1", "qc_flags"]
    # a weak model's rates correct nothing (no corrected estimate), nor turn the call into non-MNA
    assert np.isnan(rows.at["w", "corrected_low_pct"]) and rows.at["w", "call"] == "heterogeneous MNA"
    assert "weak validation" in rows.at["w", "qc_flags"] and "possible false positives" not in rows.at["w", "qc_flags"]
    assert "call contradicts genotype" in summary.QC_FLAGS


def test_a_weak_model_gets_no_corrected_estimate_that_its_rates_would_blow_up():
    """A retrained model that misses most MNA nuclei (sensitivity 0.083): 16 % called MNA is no 100 %."""
    weak = {"validation": {"sensitivity": 0.083, "specificity": 0.99, "n_positive": 120, "n_negative": 120}}
    row = {"n_scored": 63, "n_mna": 10, "mean_prob": 0.2}
    out = summary.summarise_counts(row, weak)
    assert round(out["mna_pct"], 1) == 15.9 and out["correction"] == ""
    assert all(np.isnan(out[k]) for k in ("corrected_pct", "corrected_low_pct", "corrected_high_pct"))
    assert out["qc_flags"] == ["weak validation"]
    good = {"validation": {**weak["validation"], "sensitivity": 0.9}}
    assert 0 < summary.summarise_counts(row, good)["corrected_pct"] < 20


def test_a_heterogeneous_call_without_validation_metrics_says_its_false_positives_went_unchecked():
    """5 of 1000 nuclei (0.5 %) called MNA by a model without validation rates: heterogeneous MNA by the count
    alone, and the flag's explanation says so (it said only 'no corrected estimate')."""
    out = summary.summarise_counts({"n_scored": 1000, "n_mna": 5, "mean_prob": 0.1}, {})
    assert out["call"] == "heterogeneous MNA" and out["qc_flags"] == ["no validation metrics"]
    assert "false-positive rate" in summary.QC_FLAGS["no validation metrics"]


def test_validation_rates_prefers_validation_split():
    m = {"test": {"tpr": 0.8, "tnr": 0.8, "tp": 8, "fn": 2, "tn": 8, "fp": 2},
         "splits": {"val": {"tpr": 0.9, "tnr": 0.95, "tp": 9, "fn": 1, "tn": 19, "fp": 1}}}
    r = summary.validation_rates(m)
    assert (r["sensitivity"], r["specificity"], r["n_positive"], r["n_negative"]) == (0.9, 0.95, 10, 20)
    assert summary.validation_rates({"val": {"tpr": 0.5, "tnr": 0.5}}) is None
    assert summary.validation_rates({}) is None
    # the training record layout (models/*/metrics.json)
    rec = {"sensitivity": 0.8, "specificity": 0.8, "test_rule_vs_truth": {"tpr": 0.9, "tnr": 0.7, "tp": 1, "fn": 1},
           "validation": {"sensitivity": 0.97, "specificity": 0.82, "n_positive": 93, "n_negative": 99}}
    r = summary.validation_rates(rec)
    assert (r["sensitivity"], r["specificity"], r["n_positive"], r["n_negative"]) == (0.97, 0.82, 93, 99)
    assert r["source"] == "validation"
    assert summary.validation_rates({"sensitivity": 0.9, "specificity": 0.9})["source"] == "metrics"


# -- hygiene ---------------------------------------------------------------------------------

_SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|WHERE|FROM|VALUES)\b")


def _python_files(*folders):
    for folder in folders:
        yield from (REPO / folder).rglob("*.py")


def test_no_sql_built_with_values():
    """No f-string, %-format or .format() builds SQL text anywhere in the code base."""
    offenders = []
    fstring = re.compile(r"""\bf(["']{1,3})(.*?)\1""")
    for path in _python_files("store", "genuine_core", "training", "pages"):
        text = path.read_text(encoding="utf-8")
        for lineno, line in enumerate(text.splitlines(), 1):
            for m in fstring.finditer(line):
                body = m.group(2)
                if _SQL_WORDS.search(body) and "{" in body and re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\b.*\b(FROM|INTO|SET|WHERE)\b", body):
                    offenders.append(f"{path.relative_to(REPO)}:{lineno}")
            if re.search(r"""["'][^"']*\b(SELECT|INSERT INTO|UPDATE|DELETE FROM)\b[^"']*%[sd][^"']*["']\s*%""", line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}")
            if re.search(r"""\b(SELECT|INSERT INTO|UPDATE|DELETE FROM)\b[^"']*\{\}[^"']*["']\.format\(""", line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}")
    assert offenders == []


def test_sql_lives_in_store_and_label_events_are_never_changed():
    """No SQL statements outside store/ (core, training, pages, benchmarks); no UPDATE/DELETE on label_events,
    store_events or sign_outs anywhere."""
    stmt = re.compile(r"""["']\s*(SELECT\s.+\sFROM\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s)""", re.I)
    outside = []
    for path in _python_files("genuine_core", "training", "pages", "bench"):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if stmt.search(line):
                outside.append(f"{path.relative_to(REPO)}:{lineno}")
    assert outside == []
    mutate = re.compile(r"(UPDATE\s+((label|store)_events|sign_outs)|DELETE\s+FROM\s+((label|store)_events|sign_outs))",
                        re.I)
    hits = [str(p.relative_to(REPO)) for p in list(_python_files("store", "genuine_core", "training", "pages"))
            + list((REPO / "store").glob("*.sql")) if mutate.search(p.read_text(encoding="utf-8"))]
    assert hits == []


def test_genuine_core_never_imports_duckdb():
    code = ("import sys, genuine_core.pipeline, genuine_core.stats, genuine_core.embedding\n"
            "assert 'duckdb' not in sys.modules and 'streamlit' not in sys.modules, sorted(sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr


def test_cli_parser_imports_no_heavy_library():
    """``genuine --help`` and every command's parser stay light: the store's options come from store.location."""
    code = ("import sys, genuine_core.cli as c; c.get_args_parser()\n"
            "heavy = [m for m in ('duckdb', 'pandas', 'torch', 'streamlit') if m in sys.modules]\n"
            "assert heavy == [], heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr


def test_uncertainty_thresholds_follow_each_models_method(store):
    """Entropy (bits) and MC-dropout std are judged against their own thresholds."""
    sid = samples.ensure_sample(store, "u", "case")
    ent, mc = fake_model("ent"), fake_model("mc")
    ent.uncertainty_method, mc.uncertainty_method = "entropy", "mc_dropout_std"
    mids = {m.name: registry.register_model(store, m) for m in (ent, mc)}
    res = synthetic_result("u" * 64, {"ent": [0.9, 0.9, 0.9], "mc": [0.9, 0.9, 0.9]})
    res.outputs["ent"].table["uncertainty"] = np.array([0.5, 0.95, 0.5], np.float32)   # threshold 0.9 bits
    res.outputs["mc"].table["uncertainty"] = np.array([0.05, 0.05, 0.2], np.float32)   # threshold 0.1
    write_scan_result(store, sid, res, mids)
    ids = store.query("SELECT id FROM nuclei ORDER BY mask_label")["id"].tolist()
    for model, expected in (("ent", [ids[1]]), ("mc", [ids[2]]), (None, [ids[1], ids[2]])):
        q = review.review_queue(store, model=model, flags=["high_uncertainty"])
        assert sorted(q["nucleus_id"].tolist()) == expected, model
    shares = summary.sample_summaries(store).set_index("model")["uncertain_share"]
    assert shares["ent"] == pytest.approx(1 / 3) and shares["mc"] == pytest.approx(1 / 3)
    assert registry.list_models(store).set_index("name").loc["ent", "uncertainty_method"] == "entropy"


def test_suggested_commands_name_the_store_unless_it_is_the_default(tmp_path, monkeypatch):
    from store.location import genuine_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GENUINE_DB", raising=False)
    assert genuine_command("store scans", "demo/genuine_demo.duckdb") == "genuine store scans"
    assert genuine_command("store scans", tmp_path / "demo" / "genuine_demo.duckdb") == "genuine store scans"
    assert genuine_command("store scans", "my store.duckdb") == "genuine store scans --db 'my store.duckdb'"
    monkeypatch.setenv("GENUINE_DB", "my store.duckdb")
    assert genuine_command("store scans", "my store.duckdb") == "genuine store scans"
