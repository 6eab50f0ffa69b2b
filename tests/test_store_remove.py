"""Removing a scan (``store.scans.remove_scan``, ``genuine store remove-scan | scans``) and the duplicate note.

A scan ingested with the wrong channel map is removed with everything derived from it, in one
transaction, so the file can be ingested again; a scan whose nuclei carry label events is refused
(the audit trail is never deleted). ``genuine store check`` passes afterwards.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
import pytest

from _store_fakes import fake_model, synthetic_result, threshold_segmenter, write_toy_scans
from conftest import make_toy_scan
from genuine_core.cli import main
from genuine_core.errors import InputError, StoreError
from genuine_core.io import ChannelMap
from store import ingest, labels, registry, samples, scans, summary
from store.check import check_store
from store.db import Store
from store.scans import ScanHasLabelEvents, remove_scan, write_scan_result

#: every table that holds rows of a scan or of its nuclei: (table, column holding the nucleus or scan id)
BY_NUCLEUS = {"predictions": "nucleus_id", "detections": "nucleus_id", "embeddings": "nucleus_id",
              "umap_coords": "nucleus_id", "synthetic_truth": "nucleus_id", "review_stats": "nucleus_id",
              "label_events": "nucleus_id", "nuclei": "id"}
BY_SCAN = {"scans": "id", "scan_models": "scan_id"}
OTHER = ("samples", "models", "umap_fits", "probe_runs", "probe_results")


def _add(store, sample, sha, n, models=("m1", "m2"), kind="case", truth=False, path=None, seed=0):
    """A hand-made scan of ``n`` nuclei scored by ``models``; returns (scan id, nucleus ids)."""
    sid = samples.ensure_sample(store, sample, kind)
    mids = {m: registry.register_model(store, fake_model(m)) for m in models}
    rng = np.random.default_rng(seed)
    result = synthetic_result(sha, {m: rng.uniform(0, 1, n) for m in models}, seed=seed)
    if path is not None:
        result.info["path"] = str(path)
    gt = None
    if truth:
        gt = pd.DataFrame({"mask_label": np.arange(1, n + 1), "gt_id": np.arange(1, n + 1), "match_iou": 0.9,
                           "cell_line": "A", "n_nmi": 2, "n_mycn": 9, "n_cluster": 0, "noise": "none"})
    scan_id = write_scan_result(store, sid, result, mids, truth=gt)
    ids = store.query("SELECT id FROM nuclei WHERE scan_id = ? ORDER BY id", [scan_id])["id"].to_numpy()
    return scan_id, ids


def _add_umap(store, model="m1"):
    """A UMAP fit of ``model`` (with its map file) placing every nucleus the model embedded."""
    mid = registry.model_id(store, model)
    store.folder.mkdir(parents=True, exist_ok=True)
    (store.folder / "map.bin").write_bytes(b"not a real map")
    sha = hashlib.sha256(b"not a real map").hexdigest()
    with store.transaction() as cur:
        cur.execute("INSERT INTO umap_fits (id, model_id, fitted_at, reference, n_reference, params, reducer_path, "
                    "reducer_sha256) VALUES (1, ?, now(), 'all', 0, '{}', 'map.bin', ?)", [mid, sha])
        cur.execute("INSERT INTO umap_coords (model_id, nucleus_id, fit_id, x, y, fitted_on) "
                    "SELECT model_id, nucleus_id, 1, 0.5, 0.5, true FROM embeddings WHERE model_id = ?", [mid])


def _rows(store, table) -> pd.DataFrame:
    df = store.query("SELECT * FROM " + table)
    return df.sort_values(list(df.columns[:2])).reset_index(drop=True) if len(df) else df


def _snapshot(store) -> dict[str, pd.DataFrame]:
    return {t: _rows(store, t) for t in (*BY_NUCLEUS, *BY_SCAN, *OTHER)}


def _without(snap, scan_id, nucleus_ids) -> dict[str, pd.DataFrame]:
    """``snap`` minus the rows of one scan: what a removal must leave."""
    out = {}
    for t, df in snap.items():
        if t in BY_NUCLEUS:
            df = df[~df[BY_NUCLEUS[t]].isin(nucleus_ids)]
        elif t in BY_SCAN:
            df = df[df[BY_SCAN[t]] != scan_id]
        out[t] = df.reset_index(drop=True)
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for t in a:
        pd.testing.assert_frame_equal(a[t].reset_index(drop=True), b[t].reset_index(drop=True), obj=t)


# ------------------------------------------------------------------------------- store function


def test_remove_scan_deletes_exactly_that_scans_rows_and_check_passes(store):
    s1, ids1 = _add(store, "caseA", "a" * 64, 6, truth=True, seed=1)
    s2, ids2 = _add(store, "caseA", "b" * 64, 5, truth=True, seed=2)
    s3, ids3 = _add(store, "caseB", "c" * 64, 4, models=("m1",), seed=3)
    _add_umap(store)
    labels.record_label_event(store, int(ids2[0]), 1, "ann")  # on another scan: must stay untouched
    assert check_store(store) == []
    before = _snapshot(store)
    for t in ("predictions", "detections", "embeddings", "umap_coords", "synthetic_truth", "review_stats"):
        assert before[t][BY_NUCLEUS[t]].isin(ids1).any(), t  # the scan to remove has rows everywhere
    summ_before = summary.sample_summaries(store, model="m1").set_index("sample")
    assert summ_before.loc["caseA", "n_scored"] == 11

    plan = scans.plan_scan_removal(store, s1)
    _assert_same(_snapshot(store), before)  # planning deletes nothing
    removal = remove_scan(store, s1)

    assert removal.rows == plan.rows
    assert removal.rows["scans"] == 1 and removal.rows["nuclei"] == 6 and removal.rows["scan_models"] == 2
    assert removal.rows["predictions"] == removal.rows["embeddings"] == 12 and removal.rows["umap_coords"] == 6
    assert removal.rows["synthetic_truth"] == 6 and removal.rows["review_stats"] == 6
    assert removal.sample_scans_left == 1 and removal.files == []
    _assert_same(_snapshot(store), _without(before, s1, ids1))
    assert check_store(store) == []
    # sample summaries follow: caseA lost 6 nuclei, caseB unchanged
    summ = summary.sample_summaries(store, model="m1").set_index("sample")
    assert summ.loc["caseA", "n_scored"] == 5
    pd.testing.assert_series_equal(summ.loc["caseB"], summ_before.loc["caseB"])
    # removing the only scan of a sample keeps the sample, without scans and without a summary row
    remove_scan(store, s3)
    listed = samples.list_samples(store).set_index("name")
    assert listed.loc["caseB", "n_scans"] == 0 and listed.loc["caseA", "n_scans"] == 1
    assert "caseB" not in set(summary.sample_summaries(store)["sample"])
    assert check_store(store) == []
    with pytest.raises(StoreError, match="no scan with id"):
        remove_scan(store, s1)


def test_scan_with_label_events_is_refused_and_nothing_changes(store):
    s1, ids1 = _add(store, "caseA", "a" * 64, 6)
    e = labels.record_label_event(store, int(ids1[0]), 1, "ann")
    labels.undo_event(store, e, "ann")  # undone decisions are events too: the trail keeps them
    labels.record_label_event(store, int(ids1[3]), "exclude", "bob")
    before = _snapshot(store)
    with pytest.raises(ScanHasLabelEvents, match=r"3 label event\(s\) on 2 of its nuclei") as info:
        remove_scan(store, s1)
    assert (info.value.n_events, info.value.n_nuclei) == (3, 2)
    assert "nothing was changed" in str(info.value) and "\n" not in str(info.value)
    _assert_same(_snapshot(store), before)
    assert check_store(store) == []


def test_failure_inside_the_removal_leaves_every_row(store, monkeypatch):
    s1, ids1 = _add(store, "caseA", "a" * 64, 6, truth=True)
    before = _snapshot(store)
    # make the last DELETE (the scan row) fail after the derived rows are already deleted
    monkeypatch.setitem(scans._DELETE_SQL, "scans", "DELETE FROM no_such_table")
    with pytest.raises(Exception, match="no_such_table"):
        remove_scan(store, s1)
    _assert_same(_snapshot(store), before)


def test_only_an_uploaded_copy_inside_the_store_folder_is_deleted(store, tmp_path):
    uploads = store.folder / "uploads"
    uploads.mkdir(parents=True)
    kept_copy = uploads / "abc_scan.tif"
    kept_copy.write_bytes(b"scan bytes")
    users_file = tmp_path / "mine.tif"
    users_file.write_bytes(b"the user's own scan")
    s1, _ = _add(store, "caseA", "a" * 64, 3, path=kept_copy)
    s2, _ = _add(store, "caseA", "b" * 64, 3, path=users_file)
    assert scans.plan_scan_removal(store, s1).files == [kept_copy.resolve()]
    assert remove_scan(store, s1).files == [kept_copy.resolve()]
    assert not kept_copy.exists()
    assert remove_scan(store, s2).files == []
    assert users_file.read_bytes() == b"the user's own scan"


def test_read_only_store_refuses(tmp_path):
    path = tmp_path / "t.duckdb"
    with Store(path) as s:
        sid, _ = _add(s, "caseA", "a" * 64, 3)
    with Store(path, read_only=True) as s, pytest.raises(StoreError, match="read-only"):
        remove_scan(s, sid)
    with Store(path, read_only=True) as s:
        assert s.scalar("SELECT count(*) FROM scans") == 1


# ------------------------------------------------------------------------------- ingest: wrong map


def _ingest(store, paths, channels=None, sample="case1"):
    return ingest.ingest_files(store, paths, sample, models=[fake_model("gen", patch_size=64)], progress=False,
                               segmenter=threshold_segmenter,
                               channel_map=ChannelMap.parse(channels) if channels else None)


def test_wrong_channel_map_is_named_then_removed_and_reingested(store, tmp_path):
    paths = write_toy_scans(tmp_path / "scans", 2, make_toy_scan)
    first = _ingest(store, paths, "BGR")
    assert [o.status for o in first.outcomes] == ["stored", "stored"]
    wrong_id = first.outcomes[0].scan_id
    wrong_nuclei = store.scalar("SELECT n_nuclei FROM scans WHERE id = ?", [wrong_id])

    same = _ingest(store, paths[:1], "BGR")  # same map: plain duplicate, no advice
    msg = same.outcomes[0].message
    assert same.outcomes[0].status == "duplicate" and same.exit_code == 0
    assert f"already stored as scan {wrong_id}" in msg and "nmi=2,mycn=1,dapi=0 (BGR)" in msg
    assert "remove-scan" not in msg

    other = _ingest(store, paths[:1])  # the right map (RGB default): still a duplicate, with the way out
    msg = other.outcomes[0].message
    assert other.outcomes[0].status == "duplicate" and other.exit_code == 0
    assert "nmi=2,mycn=1,dapi=0 (BGR)" in msg and "asked for nmi=0,mycn=1,dapi=2 (RGB)" in msg
    assert msg.endswith(f"genuine store remove-scan {wrong_id} --db {store.path}")  # this store, not the default
    assert store.scalar("SELECT count(*) FROM scans") == 2

    remove_scan(store, wrong_id)
    again = _ingest(store, paths[:1])
    assert [o.status for o in again.outcomes] == ["stored"]
    new_id = again.outcomes[0].scan_id
    assert new_id != wrong_id
    row = store.query("SELECT channel_map, n_nuclei FROM scans WHERE id = ?", [new_id]).iloc[0]
    assert row["channel_map"] == '{"nmi": 0, "mycn": 1, "dapi": 2}'
    assert row["n_nuclei"] != wrong_nuclei  # the DAPI channel was the red one before: other nuclei
    assert check_store(store) == []
    view = scans.scan_overview(store)
    assert view["id"].tolist() == [first.outcomes[1].scan_id, new_id]
    assert view["channel_map"].tolist() == ["nmi=2,mycn=1,dapi=0 (BGR)", "nmi=0,mycn=1,dapi=2 (RGB)"]


# ------------------------------------------------------------------------------- CLI


@pytest.fixture()
def db(tmp_path):
    """A store file with two scans of sample caseA, one of caseB, and a label event on caseB's scan."""
    path = tmp_path / "cli.duckdb"
    with Store(path) as s:
        _add(s, "caseA", "a" * 64, 6, seed=1)
        _add(s, "caseA", "b" * 64, 5, seed=2)
        _, ids = _add(s, "caseB", "c" * 64, 4, seed=3)
        labels.record_label_event(s, int(ids[1]), 0, "ann")
    return path


def _count(path, sql="SELECT count(*) FROM scans"):
    with Store(path, read_only=True) as s:
        return s.scalar(sql)


def test_cli_scans_lists_ids_samples_maps_and_nuclei(db, capsys):
    assert main(["store", "scans", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["id", "sample", "file", "channel"]
    assert [ln.split()[:2] for ln in lines[1:-1]] == [["1", "caseA"], ["2", "caseA"], ["3", "caseB"]]
    assert lines[0].split()[4:7] == ["map", "segmentation", "nuclei"] and lines[0].split()[-1] == "sha256"
    assert "nmi=0,mycn=1,dapi=2 (RGB)" in lines[1] and lines[1].split()[6] == "6"  # nuclei
    assert main(["store", "--db", str(db), "scans", "--sample", "caseB"]) == 0  # --db before the action too
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[1].split()[:2] == ["3", "caseB"] and out[1].split()[8] == "1"  # 1 curated
    assert main(["store", "scans", "--sample", "nope", "--db", str(db)]) == 2
    assert "no sample named 'nope'" in capsys.readouterr().err


def test_the_scans_help_names_every_column_it_lists(db, capsys):
    assert main(["store", "scans", "--db", str(db)]) == 0
    columns = capsys.readouterr().out.splitlines()[0].split()
    with pytest.raises(SystemExit):
        main(["store", "scans", "--help"])
    described = capsys.readouterr().out.replace(",", " ").split()
    assert [c for c in columns if c not in described] == []


def test_cli_scans_reviewed_counts_current_decisions_and_ever_labelled_any_event(db, capsys):
    """An undone decision: not reviewed (as on the Review page and in 'store info'), but its label events
    keep the scan from being removed, which the 'ever labelled' column shows."""
    from store.check import store_info

    with Store(db) as s:
        nid = int(s.scalar("SELECT id FROM nuclei WHERE scan_id = 3 ORDER BY id LIMIT 1"))
        labels.record_label_event(s, nid, 1, "bob")
        assert labels.undo_last(s, "bob") is not None
        assert store_info(s)["curated_nuclei"] == 1
        view = scans.scan_overview(s).set_index("id")
    assert view.loc[3, ["curated_nuclei", "excluded_nuclei", "labelled_nuclei"]].tolist() == [1, 0, 2]
    assert view.loc[1, ["curated_nuclei", "excluded_nuclei", "labelled_nuclei"]].tolist() == [0, 0, 0]
    assert main(["store", "scans", "--sample", "caseB", "--db", str(db)]) == 0
    head, row, legend = capsys.readouterr().out.splitlines()
    assert head.split()[7:12] == ["models", "reviewed", "excluded", "ever", "labelled"]
    assert row.split()[7:11] == ["2", "1", "0", "2"]
    assert "remove-scan refuses" in legend
    assert main(["store", "remove-scan", "3", "--yes", "--db", str(db)]) == 2
    assert "3 label event(s) on 2 of its nuclei" in capsys.readouterr().err


def test_cli_remove_scan_needs_yes_without_a_terminal_and_refuses_curated(db, capsys):
    assert main(["store", "remove-scan", "1", "--db", str(db)]) == 2  # pytest's stdin is not a TTY
    err = capsys.readouterr().err
    assert "--yes" in err and len(err.strip().splitlines()) == 1
    assert main(["store", "remove-scan", "1", "--by", "Dr. Eve", "--db", str(db)]) == 2
    assert f"(genuine store remove-scan 1 --by 'Dr. Eve' --db {db} --yes)" in capsys.readouterr().err
    assert _count(db) == 3
    assert main(["store", "remove-scan", "3", "--yes", "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 label event(s) on 1 of its nuclei" in err
    assert "nothing was changed" in err and err.endswith(f"genuine store exclude-scan 3 --by NAME --db {db}")
    assert _count(db) == 3
    assert main(["store", "remove-scan", "42", "--yes", "--db", str(db)]) == 2
    assert "no scan with id 42" in capsys.readouterr().err
    missing = db.with_name("missing.duckdb")
    assert main(["store", "remove-scan", "1", "--yes", "--db", str(missing)]) == 2
    assert not missing.exists()  # not created on the way
    with pytest.raises(SystemExit) as exc:
        main(["store", "remove-scan", "0", "--db", str(db)])
    assert exc.value.code == 2


def test_cli_remove_scan_with_yes_then_check_passes(db, capsys):
    assert main(["store", "remove-scan", "1", "--yes", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "removed scan 1" in out and "6 nuclei" in out and "12 predictions" in out
    assert _count(db) == 2 and _count(db, "SELECT count(*) FROM nuclei WHERE scan_id = 1") == 0
    assert _count(db, "SELECT count(*) FROM label_events") == 1
    assert main(["store", "check", "--db", str(db)]) == 0
    assert "is consistent" in capsys.readouterr().out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_remove_scan_asks_on_a_terminal(db, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", _Terminal())
    answers = iter(["n", "y"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert main(["store", "remove-scan", "2", "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert "would delete:" in out and "5 nuclei" in out and "nothing removed" in out
    assert _count(db) == 3
    assert main(["store", "remove-scan", "2", "--db", str(db)]) == 0
    assert "removed scan 2" in capsys.readouterr().out
    assert _count(db) == 2
    assert main(["store", "check", "--db", str(db)]) == 0


def test_a_duplicate_asked_for_another_segmentation_names_it_and_the_way_to_re_ingest(store):
    from genuine_core.io import RGB

    scan_id, _ = _add(store, "caseA", "a" * 64, 3)
    known = scans.scan_by_sha(store, "a" * 64)
    assert known["id"] == scan_id and known["channel_map"] == RGB
    known["backend"] = "watershed"
    note = scans.duplicate_note(known, RGB, store.path, backend="cellpose")
    assert "this ingest asked for the cellpose segmentation (the scan was segmented with watershed)" in note
    assert f"genuine store remove-scan {scan_id}" in note
    assert "asked for" not in scans.duplicate_note(known, RGB, store.path, backend="watershed")
    assert "asked for" not in scans.duplicate_note(known, RGB, store.path)  # a custom segmenter: not compared


def test_cli_exclude_scan_takes_a_reviewed_scan_out_of_every_call_and_keeps_the_trail(db, capsys):
    from store import summary

    with Store(db, read_only=True) as s:
        before = summary.sample_summaries(s, sample="caseB")
    assert (before["n_scored"] == 4).all()
    assert main(["store", "exclude-scan", "3", "--by", "cat", "--note", "NMI and MYCN swapped", "--db", str(db)]) == 0
    assert capsys.readouterr().out.strip() == "scan 3: 4 nuclei excluded by cat"
    with Store(db, read_only=True) as s:
        assert summary.sample_summaries(s, sample="caseB").empty  # no scored nucleus left in the sample
        events = s.query("SELECT value, previous, reviewer, note FROM label_events ORDER BY id")
    assert len(events) == 5 and events.iloc[0, :3].tolist() == ["0", "unset", "ann"]  # ann's decision kept
    assert events.iloc[1:]["value"].eq("exclude").all() and events.iloc[1:]["reviewer"].eq("cat").all()
    assert sorted(events.iloc[1:]["previous"]) == ["0", "unset", "unset", "unset"]
    assert events.iloc[1:]["note"].eq("[whole scan excluded] scan 3 (cccccccc.tif): NMI and MYCN swapped").all()
    assert main(["store", "exclude-scan", "3", "--by", "cat", "--db", str(db)]) == 0
    assert "every nucleus was already excluded" in capsys.readouterr().out
    with Store(db, read_only=True) as s:
        assert scans.scan_overview(s).set_index("id").at[3, "excluded_nuclei"] == 4  # 'store scans' shows it
    assert main(["store", "exclude-scan", "42", "--by", "cat", "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()  # as remove-scan says it
    assert err == f"error: no scan with id 42; list them with: genuine store scans --db {db}"
    assert main(["store", "remove-scan", "42", "--yes", "--db", str(db)]) == 2
    assert capsys.readouterr().err.strip() == err
    assert main(["store", "exclude-scan", "1", "--by", " ", "--db", str(db)]) == 2
    assert "name the curator with --by NAME" in capsys.readouterr().err


def test_a_note_with_a_terminal_escape_is_refused_and_nothing_is_excluded(db, capsys):
    # it was stored in every event's note, and recoloured or cleared the terminal wherever notes are printed
    assert main(["store", "exclude-scan", "3", "--by", "cat", "--note", "swapped\x1b[2J", "--db", str(db)]) == 2
    assert capsys.readouterr().err.strip() == ("error: a note must not hold control characters (escapes), "
                                               "got 'swapped\\x1b[2J'")
    with Store(db) as s:
        assert s.scalar("SELECT count(*) FROM label_events") == 1  # ann's decision only
        with pytest.raises(InputError, match="control characters"):  # the Review page's note too
            labels.record_label_event(s, int(s.scalar("SELECT min(id) FROM nuclei")), 1, "ann", note="a\x07b")
    assert main(["store", "exclude-scan", "3", "--by", "cat", "--note", "two\nlines", "--db", str(db)]) == 0


def test_cli_unexclude_scan_undoes_the_exclusion_in_one_step(db, capsys):
    from store import summary

    with Store(db, read_only=True) as s:
        before = summary.sample_summaries(s, sample="caseB")
        labels_before = labels.current_labels(s)[["nucleus_id", "value"]]
    assert main(["store", "unexclude-scan", "3", "--by", "cat", "--db", str(db)]) == 2
    assert capsys.readouterr().err.strip() == ("error: scan 3 is not excluded: its nuclei were never excluded with "
                                               "the whole scan (nothing was changed)")
    assert main(["store", "exclude-scan", "3", "--by", "cat", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["store", "unexclude-scan", "3", "--by", "dan", "--db", str(db)]) == 0
    assert capsys.readouterr().out.strip() == ("scan 3: exclusion undone by dan on 4 nuclei; they are back to their "
                                               "earlier decisions")
    with Store(db, read_only=True) as s:
        pd.testing.assert_frame_equal(summary.sample_summaries(s, sample="caseB"), before)
        pd.testing.assert_frame_equal(labels.current_labels(s)[["nucleus_id", "value"]], labels_before)
        undos = s.query("SELECT reviewer FROM label_events WHERE undoes IS NOT NULL")
        assert scans.scan_overview(s).set_index("id").at[3, "excluded_nuclei"] == 0
    assert undos["reviewer"].tolist() == ["dan"] * 4
    assert main(["store", "unexclude-scan", "3", "--by", "dan", "--db", str(db)]) == 2
    assert "scan 3 is not excluded: its latest whole-scan exclusion was undone" in capsys.readouterr().err
    assert main(["store", "unexclude-scan", "42", "--by", "dan", "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: no scan with id 42; list them with: genuine store scans --db {db}"
    assert main(["store", "unexclude-scan", "3", "--by", " ", "--db", str(db)]) == 2
    assert "name the curator with --by NAME" in capsys.readouterr().err


def test_a_duplicate_of_a_reviewed_scan_points_to_exclude_scan_not_remove_scan(store):
    from genuine_core.io import ChannelMap

    scan_id, ids = _add(store, "caseA", "d" * 64, 3)
    labels.record_label_event(store, int(ids[0]), 1, "ann")
    known = scans.scan_by_sha(store, "d" * 64)
    assert known["labelled"] == 1
    note = scans.duplicate_note(known, ChannelMap(1, 0, 2), store.path)
    assert "1 of the stored scan's nuclei carry curators' label events, so it is kept" in note
    assert f"genuine store exclude-scan {scan_id} --by NAME" in note and "remove-scan" not in note


def test_the_exclude_suggestions_name_the_store_and_say_when_the_scan_is_excluded_already(db, tmp_path, capsys,
                                                                                         monkeypatch):
    from genuine_core.io import ChannelMap

    monkeypatch.setenv("GENUINE_DB", str(tmp_path / "another.duckdb"))  # copied without --db it would act there
    assert main(["store", "remove-scan", "3", "--yes", "--by", "Dr. Cat", "--db", str(db)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"genuine store exclude-scan 3 --by 'Dr. Cat' --db {db}")
    with pytest.raises(SystemExit):  # label events carry a curator's name: --by has no login default here
        main(["store", "exclude-scan", "3", "--db", str(db)])
    assert "--by" in capsys.readouterr().err
    assert main(["store", "exclude-scan", "3", "--by", "cat", "--db", str(db)]) == 0
    with Store(db) as s:
        known = scans.scan_by_sha(s, "c" * 64)
    assert known["not_excluded"] == 0
    note = scans.duplicate_note(known, ChannelMap(1, 0, 2), db)
    assert "every nucleus of it is excluded already, so it counts in no call" in note and "exclude-scan" not in note
    assert main(["store", "remove-scan", "3", "--yes", "--by", "Dr. Cat", "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()  # no suggestion that would exclude nothing
    assert err.endswith("(nothing was changed); every nucleus of it is excluded already, so it counts in no call")
    assert "exclude-scan" not in err and len(err.splitlines()) == 1
    with Store(db) as s, pytest.raises(ScanHasLabelEvents, match="excluded already") as exc:
        remove_scan(s, 3)
    assert "exclude-scan" not in str(exc.value)


def test_the_store_summary_in_genuine_help_names_every_store_action():
    from genuine_core.cli import COMMANDS
    from store.cli_store import ACTIONS

    summary = COMMANDS["store"][1]
    assert [a for a in ACTIONS if a not in summary.replace(",", " ").replace("(", " ").replace(")", " ").split()] == []
