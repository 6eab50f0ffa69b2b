"""The store's event log (``store_events``): model registrations and removals, scan removals.

A removal deletes the rows that named a model's weights or a scan's file; the event keeps who did it,
when, and the checksum, so a report's model checksum can always be traced. The log is append-only and
each event commits or rolls back with its change.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from _store_fakes import fake_model, store_at_version, synthetic_result, threshold_segmenter
from genuine_core.cli import main
from store import ingest, labels, migrations, registry, samples, scans
from store.db import Store
from store.events import record_event, store_events
from store.scans import ScanHasLabelEvents, remove_scan, write_scan_result


def _scan(store, sha: str, model, by=None) -> int:
    sid = samples.ensure_sample(store, "case", "case")
    mid = registry.register_model(store, model, by)
    return write_scan_result(store, sid, synthetic_result(sha, {model.name: np.linspace(0.1, 0.9, 4)}),
                             {model.name: mid})


def _events(store) -> list[tuple]:
    df = store_events(store)
    return list(zip(df["action"], df["subject"], df["identity"], df["by_user"], strict=True))


def test_registration_is_logged_once_with_its_checksum_and_who(store):
    m = fake_model("m1")
    _scan(store, "a" * 64, m, by="ann")
    _scan(store, "b" * 64, m, by="bob")  # same weights again: refreshed, not a new registration
    assert _events(store) == [("register model", "m1", m.checksum, "ann")]
    assert store_events(store)["detail"][0] == {"kind": "genuine", "preset": "test", "folder": None}


def test_model_removal_keeps_the_checksum_who_and_what_was_deleted(store):
    m = fake_model("m1")
    _scan(store, "a" * 64, m)
    registry.remove_model(store, "m1", by="cy")
    assert store.scalar("SELECT count(*) FROM models") == 0
    ev = store_events(store).iloc[-1]
    assert (ev["action"], ev["subject"], ev["identity"], ev["by_user"]) == ("remove model", "m1", m.checksum, "cy")
    deleted = ev["detail"]["deleted"]
    assert (deleted["models"], deleted["predictions"], deleted["scan_models"]) == (1, 4, 1)
    registry.register_model(store, m, "ann")  # the same weights back under their name: a second registration
    assert [e[0] for e in _events(store)] == ["register model", "remove model", "register model"]


def test_scan_removal_is_logged_and_a_refused_or_failed_one_is_not(store, monkeypatch):
    m = fake_model("m1")
    s1 = _scan(store, "a" * 64, m)
    s2 = _scan(store, "b" * 64, m)
    nucleus = int(store.scalar("SELECT min(id) FROM nuclei WHERE scan_id = ?", [s2]))
    labels.record_label_event(store, nucleus, 1, "ann")
    with pytest.raises(ScanHasLabelEvents):
        remove_scan(store, s2, by="bob")
    monkeypatch.setitem(scans._DELETE_SQL, "scans", "DELETE FROM no_such_table")
    with pytest.raises(Exception, match="no_such_table"):
        remove_scan(store, s1, by="bob")
    assert [e[0] for e in _events(store)] == ["register model"]
    monkeypatch.undo()
    removal = remove_scan(store, s1, by="bob")
    ev = store_events(store).iloc[-1]
    assert (ev["action"], ev["identity"], ev["by_user"]) == ("remove scan", "a" * 64, "bob")
    assert ev["subject"] == removal.file_name and ev["detail"]["scan_id"] == s1
    assert ev["detail"]["deleted"]["nuclei"] == 4 and ev["detail"]["sample"] == "case"


def test_a_batch_whose_files_all_fail_logs_no_registration(store, tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not an image")
    report = ingest.ingest_files(store, [bad], "case", models=[fake_model("m1")], progress=False,
                                 segmenter=threshold_segmenter, by="ann")
    assert [o.status for o in report.outcomes] == ["failed"]
    assert store.scalar("SELECT count(*) FROM models") == 0 and _events(store) == []


def test_unknown_action_is_refused(store):
    with pytest.raises(ValueError, match="unknown store event"), store.transaction() as cur:
        record_event(cur, "rename model", "m1", "x")
    assert _events(store) == []


def _version_2_store(path) -> None:
    """A store as the version before the event log wrote it (schema steps 1 and 2)."""
    store_at_version(path, 2).close()


def test_a_version_2_store_gains_an_empty_log(tmp_path):
    path = tmp_path / "v2.duckdb"
    _version_2_store(path)
    with Store(path) as s:
        assert migrations.current_version(s.cursor()) == migrations.LATEST and _events(s) == []
        registry.register_model(s, fake_model("m1"), "ann")
        assert len(_events(s)) == 1


def test_a_version_2_store_is_refused_read_only_with_the_command_that_migrates_it(tmp_path, capsys):
    path = tmp_path / "v2.duckdb"
    _version_2_store(path)
    assert main(["store", "events", "--db", str(path)]) == 2
    assert f"bring it up to date once with `genuine store migrate --db {path}`" in capsys.readouterr().err
    assert main(["store", "migrate", "--db", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: schema version {migrations.LATEST} (was 2)"
    assert main(["store", "migrate", "--db", str(path)]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert main(["store", "events", "--db", str(path)]) == 0 and "no store events" in capsys.readouterr().out
    assert main(["store", "migrate", "--db", str(tmp_path / "none.duckdb")]) == 2
    assert not (tmp_path / "none.duckdb").exists()


def test_cli_records_by_and_lists_events(tmp_path, capsys):
    db = tmp_path / "cli.duckdb"
    with Store(db) as s:
        _scan(s, "a" * 64, fake_model("m1"))
        _scan(s, "b" * 64, fake_model("m2"))
    assert main(["store", "remove-model", "m2", "--yes", "--by", "dana", "--db", str(db)]) == 0
    assert main(["store", "remove-scan", "1", "--yes", "--db", str(db)]) == 0  # --by defaults to the login
    capsys.readouterr()
    assert main(["store", "events", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and "remove model" in lines[3] and "dana" in lines[3] and "remove scan" in lines[4]
    assert "(not named)" in lines[1]  # registered by code that named nobody
    assert main(["store", "events", "--subject", "m2", "--db", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all("m2" in line for line in out[1:])
    assert main(["store", "events", "--subject", "nope", "--db", str(db)]) == 0
    assert "no store events" in capsys.readouterr().out
    for blank in ("", "  "):  # as not given (a script's unset variable): every event, not "no store events"
        assert main(["store", "events", "--subject", blank, "--db", str(db)]) == 0
        assert capsys.readouterr().out.splitlines() == lines
    for forged in ("Zoë\nline2", "x\x1b[31mRED"):  # would forge lines or colours of the printed log
        with pytest.raises(SystemExit) as exc:
            main(["store", "remove-model", "m1", "--yes", "--by", forged, "--db", str(db)])
        assert exc.value.code == 2 and "without control characters" in capsys.readouterr().err
    assert main(["store", "remove-model", "m1", "--yes", "--by", "  Zoë  ", "--db", str(db)]) == 0
    assert store_events_of(db)[-1] == ("remove model", "m1", "Zoë")


def store_events_of(db) -> list[tuple]:
    with Store(db, read_only=True) as s:
        df = store_events(s)
    return list(zip(df["action"], df["subject"], df["by_user"], strict=True))


def _saved(folder, seed: int):
    """A fake model whose folder holds real saved (tiny ratio) weights."""
    from genuine_core.models import build_model, preset_config, save_model
    from genuine_core.models.folder import folder_digest

    save_model(build_model(preset_config("tiny", kind="ratio", seed=seed)), folder)
    return replace(fake_model("m1"), folder=str(folder), checksum=folder_digest(folder))


def test_store_check_names_a_moved_or_changed_model_folder_and_a_new_folder_is_an_event(store, tmp_path):
    from store.check import check_store

    m = _saved(tmp_path / "models" / "m1", seed=0)
    _scan(store, "a" * 64, m, by="ann")
    assert check_store(store) == []
    (tmp_path / "models").rename(tmp_path / "moved")
    assert check_store(store) == [f"registered model 'm1': model folder not found: {m.folder} (restore the folder "
                                  "or, if it moved, record its new place: genuine store relocate-model m1 NEW_FOLDER "
                                  f"--db {store.path})"]
    moved = str(tmp_path / "moved" / "m1")
    registry.register_model(store, replace(m, folder=moved), by="bob")  # an ingest given the folder does the same
    assert check_store(store) == []
    assert _events(store)[-1] == ("relocate model", "m1", m.checksum, "bob")
    assert store_events(store)["detail"].iloc[-1] == {"folder": moved, "previous folder": m.folder}
    _saved(tmp_path / "moved" / "m1", seed=1)  # other weights saved over the registered ones
    (problem,) = check_store(store)
    assert problem.startswith(f"registered model 'm1': {moved} holds other weights than registered")


def test_relocate_model_records_a_renamed_folder_and_refuses_other_weights(store, tmp_path, capsys):
    """A folder renamed (the name an ingest would give it changes too) is recorded under the registered name."""
    m = _saved(tmp_path / "models" / "m1", seed=0)
    _scan(store, "a" * 64, m, by="ann")
    db = store.path
    store.close()
    (tmp_path / "models" / "m1").rename(tmp_path / "models" / "m1_2026")
    new = tmp_path / "models" / "m1_2026"
    assert main(["store", "relocate-model", "m1", str(new), "--by", "cy", "--db", str(db)]) == 0
    assert capsys.readouterr().out.strip() == f"model 'm1': folder {new} (was {m.folder})"
    with Store(db) as s:
        assert s.scalar("SELECT folder FROM models WHERE name = 'm1'") == str(new)
        ev = store_events(s).iloc[-1]
        assert (ev["action"], ev["by_user"], ev["detail"]) == ("relocate model", "cy",
                                                               {"folder": str(new), "previous folder": m.folder})
    other = _saved(tmp_path / "other", seed=1).folder
    assert main(["store", "relocate-model", "m1", other, "--by", "cy", "--db", str(db)]) == 2
    assert "holds other weights than the registered model 'm1'" in capsys.readouterr().err
    assert main(["store", "relocate-model", "m9", str(new), "--by", "cy", "--db", str(db)]) == 2
    assert "no model named 'm9' in the store (registered: m1)" in capsys.readouterr().err
    assert main(["store", "relocate-model", "m1", str(tmp_path / "nope"), "--by", "cy", "--db", str(db)]) == 2
    assert "model folder not found" in capsys.readouterr().err
    with Store(db) as s:
        assert s.scalar("SELECT folder FROM models WHERE name = 'm1'") == str(new)  # the refusals changed nothing
