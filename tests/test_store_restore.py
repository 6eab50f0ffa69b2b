"""A backup restored on another machine: the original store, model folders and scan files are gone.

What the copy needs is measured by moving every original away (``site1`` -> ``gone``) and restoring the backup
folder into ``site2``: scans and patches show from what the store keeps; models rescore, fine-tune and pass
``store check`` once ``store check --fix-paths`` records the models' copies the backup made.
"""

from __future__ import annotations

import json
import shutil

import pytest

from _store_fakes import threshold_segmenter, write_toy_scans
from conftest import make_toy_scan
from genuine_core.cli import main
from genuine_core.pipeline import load_model
from store import events, ingest, labels, registry
from store.db import Store
from genuine_core.checksums import sha256_file
from store.fingerprints import unknown_candidates
from store.scans import missing_scan_files, plan_scan_removal, remove_scan, scan_images


def _tiny(folder, seed: int = 0):
    from genuine_core.models import GenuineClassifier, preset_config

    cfg = preset_config("tiny", kind="resnet", patch_size=64, patch_normalisation="spot_flux", seed=seed)
    return GenuineClassifier.from_config(cfg).save(folder, metrics={})


@pytest.fixture()
def restored(tmp_path):
    """``(store file in site2, tmp_path)``: a store with a path-ingested and an uploaded scan, a label, a model
    that scored them and one registered after them, backed up, then every original moved away."""
    site1 = tmp_path / "site1"
    scored, late = _tiny(site1 / "models" / "scored"), _tiny(site1 / "models" / "late", seed=1)
    paths = write_toy_scans(site1 / "scans", 2, make_toy_scan)
    db = site1 / "lab" / "lab.duckdb"
    with Store(db) as s:
        kw = {"models": [load_model(scored)], "progress": False, "segmenter": threshold_segmenter}
        assert ingest.ingest_files(s, paths[:1], "case", **kw).exit_code == 0
        report = ingest.ingest_upload(s, ingest.uploads_dir(db), "upload.tif", paths[1].read_bytes(), "case", **kw)
        assert report.outcomes[0].status == "stored"
        labels.record_label_event(s, int(s.scalar("SELECT min(id) FROM nuclei")), 1, "ann")
        registry.register_model(s, load_model(late))
    assert main(["store", "backup", str(site1 / "backup"), "--db", str(db)]) == 0
    shutil.move(site1, tmp_path / "gone")  # the original server's disk is no more
    (tmp_path / "site2").mkdir()
    for item in (tmp_path / "gone" / "backup").iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp_path / "site2" / item.name)
    return tmp_path / "site2" / "lab.duckdb", tmp_path


def test_a_restored_backup_shows_every_scan_and_patch_without_the_original_files(restored, capsys):
    db, _ = restored
    with Store(db, read_only=True) as s:
        for scan_id in s.query("SELECT id FROM scans")["id"]:
            image, masks = scan_images(s, int(scan_id))  # the Cases page's scan view
            assert image.shape[:2] == masks.shape and masks.max() > 0
        assert s.scalar("SELECT count(*) FROM nuclei WHERE patch_png IS NULL") == 0  # Review's patches
        assert s.scalar("SELECT count(*) FROM nuclei") > 0
    assert main(["store", "check", "--db", str(db)]) == 1  # the models' folders (next test); the scans only noted
    out = capsys.readouterr().out
    assert "no longer find their file" not in out  # the backup copied the file ingested by path
    assert (f"note: 1 scan file(s) missing at their recorded place are read from the backup's copies in "
            f"{db.with_name('lab_files') / 'scans'}: scan 1 (") in out
    assert f"scan_0.tif); record those as their place with genuine store check --fix-paths --db {db}" in out
    assert "uploaded scan file(s) missing" not in out  # the upload came back with <name>_files/uploads


def test_a_restored_backup_rescores_and_fine_tunes_once_check_fix_paths_records_the_model_copies(restored, capsys):
    db, tmp_path = restored
    capsys.readouterr()
    assert main(["store", "score", "late", "--db", str(db), "--quiet"]) == 2
    assert "its folder " + str(tmp_path / "site1" / "models" / "late") + " is not on this machine" in \
        capsys.readouterr().err
    assert main(["store", "check", "--db", str(db)]) == 1
    out = capsys.readouterr().out
    for name in ("scored", "late"):
        assert (f"problem: registered model {name!r}: " in out and f"a copy holding its weights is in "
                f"{tmp_path / 'site2' / 'lab_files' / 'models' / name}, e.g. from a backup: record it with "
                f"genuine store check --fix-paths --db {db})") in out
    assert main(["store", "check", "--fix-paths", "--by", "ann", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"fixed: model 'late': folder {tmp_path / 'site2' / 'lab_files' / 'models' / 'late'} (was " in out
    assert out.rstrip().endswith(f"ok: {db} is consistent")
    assert main(["store", "score", "late", "--db", str(db), "--quiet"]) == 0
    assert "late: scored 2 scan(s)" in capsys.readouterr().out
    with Store(db, read_only=True) as s:
        folders = dict(s.query("SELECT name, folder FROM models").itertuples(index=False))
        moved = s.query("SELECT subject, by_user FROM store_events WHERE detail LIKE '%previous folder%'")
    load_model(folders["scored"])  # what a fine-tune from the registered model (--init) loads
    assert sorted(moved["subject"]) == ["late", "scored"] and set(moved["by_user"]) == {"ann"}


def test_a_restored_backup_holds_the_scan_file_ingested_by_path_and_check_fix_paths_records_it(restored, capsys):
    db, tmp_path = restored
    with Store(db, read_only=True) as s:
        sha, old = s.query("SELECT sha256, path FROM scans WHERE id = 1").iloc[0]
        copy = db.with_name("lab_files") / "scans" / f"{sha[:12]}_scan_0.tif"
        assert sha256_file(copy) == sha and old == str(tmp_path / "site1" / "scans" / "scan_0.tif")
        assert missing_scan_files(s).empty  # read from the copy meanwhile, e.g. for a pixel fingerprint
        h, w, dtype = s.query("SELECT height, width, source_dtype FROM scans WHERE id = 1").iloc[0]
    with Store(db) as s:
        s.execute("UPDATE scans SET pixel_sha256 = NULL WHERE id = 1")  # a scan stored before fingerprints
        assert [(sid, f) for sid, f, _ in unknown_candidates(s, h, w, dtype)] == [(1, copy.resolve())]
    capsys.readouterr()
    assert main(["store", "check", "--fix-paths", "--by", "ann", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"fixed: scan 1: file {copy.resolve()} (was {old})" in out
    assert "note:" not in out and out.rstrip().endswith(f"ok: {db} is consistent")
    with Store(db, read_only=True) as s:
        assert s.scalar("SELECT path FROM scans WHERE id = 1") == str(copy.resolve())
    assert main(["store", "backup", str(tmp_path / "again"), "--db", str(db)]) == 0  # the copy is in lab_files now
    assert "scan file(s) ingested by path" not in capsys.readouterr().out
    assert (tmp_path / "again" / "lab_files" / "scans" / copy.name).is_file()
    shutil.move(tmp_path / "site2", tmp_path / "site3")  # restored once more, elsewhere: still found by name
    with Store(tmp_path / "site3" / "lab.duckdb", read_only=True) as s:
        assert missing_scan_files(s).empty


def test_check_fix_paths_logs_each_path_it_changes_with_the_old_and_new_path_and_who(restored, capsys):
    # before, a scan's path rewritten by --fix-paths left no trace in the event log, and a model's new folder was
    # logged as a 'register model' event; now each is a 'relocate scan' / 'relocate model' event, shown old -> new
    db, tmp_path = restored
    with Store(db, read_only=True) as s:
        sha, old, name = s.query("SELECT sha256, path, file_name FROM scans WHERE id = 1").iloc[0]
        old_folders = dict(s.query("SELECT name, folder FROM models").itertuples(index=False))
        n_before = len(events.store_events(s))
    assert main(["store", "check", "--fix-paths", "--by", "Dr. Lee", "--db", str(db)]) == 0
    new = (db.with_name("lab_files") / "scans" / f"{sha[:12]}_scan_0.tif").resolve()
    with Store(db, read_only=True) as s:
        ev = events.store_events(s).iloc[n_before:]
    moved = ev[ev["action"] == "relocate scan"]
    assert len(moved) == 1 and (moved.iloc[0]["subject"], moved.iloc[0]["identity"]) == (name, sha)
    assert moved.iloc[0]["by_user"] == "Dr. Lee"
    assert moved.iloc[0]["detail"] == {"scan_id": 1, "path": str(new), "previous path": old}
    relocated = ev[ev["action"] == "relocate model"]
    assert sorted(relocated["subject"]) == ["late", "scored"] and set(relocated["by_user"]) == {"Dr. Lee"}
    assert all(d["previous folder"] == old_folders[n] for n, d in zip(relocated["subject"], relocated["detail"]))
    assert len(ev) == 3  # one event per scan and per model, nothing else
    capsys.readouterr()
    assert main(["store", "events", "--subject", name, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "relocate scan" in out and "Dr. Lee" in out and f"path {old} -> {new}; scan_id 1" in out
    assert main(["store", "check", "--fix-paths", "--by", "Dr. Lee", "--db", str(db)]) == 0  # nothing left to fix
    with Store(db, read_only=True) as s:
        assert len(events.store_events(s)) == n_before + 3


def test_ingest_and_the_models_page_on_a_restored_store_point_at_the_backups_model_copies(restored):
    # before, both said "restore its folder or relocate-model NAME NEW_FOLDER", though the copy was right there
    from genuine_core.errors import ModelLoadError
    from store.model_copies import dashboard_way_out

    db, _ = restored
    copy = db.with_name("lab_files") / "models" / "scored"
    with Store(db, read_only=True) as s:
        with pytest.raises(ModelLoadError) as exc:
            ingest.resolve_models(s)
        text = dashboard_way_out(s, "scored")
    assert str(exc.value).endswith(f"no such model folder. A copy holding its weights is in {copy}, e.g. from a "
                                   f"backup: record it with genuine store check --fix-paths --db {db}")
    assert text == (f"a copy holding its weights is in `{copy}` (e.g. a "
                         f"restored backup): stop the dashboard and record it with `genuine store check --fix-paths "
                         f"--db {db}`.")
    with Store(db, read_only=True) as s:
        assert "relocate-model NAME NEW_FOLDER" in dashboard_way_out(s, "gone")  # no copy: the old way out


def test_check_names_the_backup_folder_of_a_store_restored_under_another_name(restored, capsys):
    db, _ = restored
    renamed = db.rename(db.with_name("genuine.duckdb"))  # lab_files/ was not renamed with it
    capsys.readouterr()
    assert main(["store", "check", "--db", str(renamed)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"note: the store's folder {renamed.with_name('genuine_files')} is missing, while "
                          f"{db.with_name('lab_files')} lies beside it without a store of its own (a backup restored "
                          "under another name?): rename it to genuine_files, where the store looks for")
    db.with_name("lab_files").rename(renamed.with_name("genuine_files"))
    assert main(["store", "check", "--fix-paths", "--db", str(renamed)]) == 0
    assert "the store's folder" not in capsys.readouterr().out


def test_removing_a_scan_of_a_restored_store_deletes_its_restored_upload(restored):
    db, _ = restored
    with Store(db) as s:
        upload = s.scalar("SELECT id FROM scans WHERE file_name = 'upload.tif'")
        kept = list((s.folder / "uploads").iterdir())
        assert len(kept) == 1 and plan_scan_removal(s, int(upload)).files == [kept[0].resolve()]
        remove_scan(s, int(upload))
        assert list((s.folder / "uploads").iterdir()) == []


def test_check_notes_an_uploaded_copy_that_is_gone(restored, capsys):
    db, _ = restored
    shutil.rmtree(db.with_name("lab_files") / "uploads")
    main(["store", "check", "--db", str(db)])
    assert "note: 1 uploaded scan file(s) missing from " in capsys.readouterr().out


def test_backup_copies_the_models_once_and_says_so(restored, capsys):
    db, tmp_path = restored
    assert main(["store", "check", "--fix-paths", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["store", "backup", str(tmp_path / "again"), "--db", str(db)]) == 0  # models inside lab_files now
    out = capsys.readouterr().out
    assert "with the folders of the registered model(s) 'scored', 'late'" in out
    assert sorted(p.name for p in (tmp_path / "again" / "lab_files" / "models").iterdir()) == ["late", "scored"]
    assert main(["store", "backup", str(tmp_path / "bare"), "--no-models", "--db", str(db)]) == 0
    assert "not copied (--no-models): the registered models' folders (2)" in capsys.readouterr().out


def test_a_model_folder_holding_other_weights_is_not_copied(tmp_path, capsys):
    db = tmp_path / "lab.duckdb"
    with Store(db) as s:
        registry.register_model(s, load_model(_tiny(tmp_path / "m")))
    shutil.rmtree(tmp_path / "m")
    _tiny(tmp_path / "m", seed=5)  # an upgrade replaced the weights in place
    assert main(["store", "backup", str(tmp_path / "bk"), "--db", str(db)]) == 0
    assert (f"warning: model 'm' not copied: its folder {tmp_path / 'm'} holds other weights than registered"
            in capsys.readouterr().out)
    assert not (tmp_path / "bk" / "lab_files" / "models").exists()


def test_a_retraining_run_of_a_restored_store_is_listed_from_its_new_folder(tmp_path):
    from pages import retrain

    old, new = tmp_path / "site1" / "lab_files" / "runs" / "r1", tmp_path / "site2" / "lab_files" / "runs" / "r1"
    new.mkdir(parents=True)
    rec = {"log": str(old / "train.log"), "out": str(old / "m"), "name": "m", "started": 1.0, "epochs": 3,
           "cmd": ["/gone/python", "-m", "genuine_core.cli", "train", "--data", str(old / "curated.npz"),
                   "--out", str(old / "m")]}
    (new / "run.json").write_text(json.dumps(rec))

    class Restored:
        folder = tmp_path / "site2" / "lab_files"

    retrain.runs().clear()
    try:
        retrain.recover_runs(Restored())
        got = retrain.runs()["r1"]
    finally:
        retrain.runs().clear()
    assert got["log"] == new / "train.log" and got["out"] == new / "m"
    assert got["cmd"][5] == str(new / "curated.npz") and got["cmd"][7] == str(new / "m")
    import sys
    assert got["cmd"][0] == sys.executable
