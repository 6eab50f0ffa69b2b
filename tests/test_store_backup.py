"""``genuine store backup``: a copy that holds every commit, or nothing at all."""

from __future__ import annotations

import errno
import shutil
from dataclasses import replace

import numpy as np
import pytest

from _store_fakes import fake_model, synthetic_result
from genuine_core.cli import main
from genuine_core.errors import InputError, StoreError
from store import labels, registry, samples
from store.backup import backup_store
from store.db import Store
from store.scans import write_scan_result


@pytest.fixture()
def store(tmp_path):
    """An open store with one scored scan, two label events and a file in its folder."""
    s = Store(tmp_path / "lab" / "lab.duckdb")
    model = replace(fake_model("m1"), folder="/lab/models/m1")  # model folders live outside the store
    mid = registry.register_model(s, model)
    write_scan_result(s, samples.ensure_sample(s, "case", "case"),
                      synthetic_result("a" * 64, {"m1": np.linspace(0.1, 0.9, 6)}), {"m1": mid})
    ids = s.query("SELECT id FROM nuclei ORDER BY id")["id"].tolist()
    labels.record_label_event(s, ids[0], 1, "ann")
    labels.record_label_event(s, ids[1], "exclude", "ann")
    (s.folder / "umap").mkdir(parents=True)
    (s.folder / "umap" / "m1.npz").write_bytes(b"map")
    yield s
    s.close()


def test_a_backup_holds_the_commits_still_in_the_write_ahead_log_and_the_files_folder(store, tmp_path):
    wal = store.path.with_name(store.path.name + ".wal")
    assert wal.stat().st_size > 0  # the latest decisions are not in lab.duckdb yet: a plain copy misses them
    done = backup_store(store.path, tmp_path / "bk")
    assert done["store"] == tmp_path / "bk" / "lab.duckdb" and done["files"] == 1 and done["models"] == {"m1": "/lab/models/m1"}
    assert sorted(p.name for p in (tmp_path / "bk").iterdir()) == ["lab.duckdb", "lab_files"]
    assert (tmp_path / "bk" / "lab_files" / "umap" / "m1.npz").read_bytes() == b"map"
    with Store(done["store"], read_only=True) as copy:
        assert copy.scalar("SELECT count(*) FROM label_events") == 2
        assert copy.scalar("SELECT count(*) FROM predictions") == 6


def test_a_backup_never_writes_into_an_existing_folder_nor_leaves_half_a_copy(store, tmp_path, monkeypatch):
    (tmp_path / "bk").mkdir()
    with pytest.raises(InputError, match="exists already; a backup goes into a new folder"):
        backup_store(store.path, tmp_path / "bk")
    assert list((tmp_path / "bk").iterdir()) == []

    def disk_full(src, dst, **kw):  # part of the folder is written, then the disk is full
        (dst / "umap").mkdir(parents=True)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copytree", disk_full)
    with pytest.raises(StoreError, match="cannot back up .* No space left on device"):
        backup_store(store.path, tmp_path / "bk2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bk", "lab"]
    (tmp_path / "bk2.partial").mkdir()  # a folder of the user's with the name a half copy once had: untouched
    (tmp_path / "bk2.partial" / "mine.txt").write_text("keep")
    with pytest.raises(StoreError):
        backup_store(store.path, tmp_path / "bk2")
    assert (tmp_path / "bk2.partial" / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bk", "bk2.partial", "lab"]
    with pytest.raises(StoreError, match="no such store"):
        backup_store(tmp_path / "nope.duckdb", tmp_path / "bk3")
    (tmp_path / "touched.duckdb").touch()
    with pytest.raises(StoreError, match="no such store"):
        backup_store(tmp_path / "touched.duckdb", tmp_path / "bk3")
    assert (tmp_path / "touched.duckdb").stat().st_size == 0 and not (tmp_path / "bk3").exists()


def test_cli_backup_names_the_copy_and_the_model_folders_it_leaves_out(store, tmp_path, capsys):
    db = store.path
    store.close()
    assert main(["store", "backup", str(tmp_path / "bk"), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"backed up {db} to {tmp_path / 'bk' / 'lab.duckdb'} and lab_files/ (1 file), ")
    assert ("warning: model 'm1' not copied: its folder /lab/models/m1 is missing or not a complete model folder "
            f"(see: genuine store check --db {db})") in out
    assert main(["store", "backup", str(tmp_path / "bk0"), "--no-models", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "not copied (--no-models): the registered models' folders (1), in /lab/models;" in out
    assert f"warning: the folder of registered model(s) 'm1' is missing (see: genuine store check --db {db})" in out
    assert main(["store", "backup", str(tmp_path / "bk"), "--db", str(db)]) == 2
    assert "exists already" in capsys.readouterr().err


def test_a_backup_into_the_stores_own_folder_is_refused_before_any_copy(store):
    with pytest.raises(InputError, match="lies inside the store's own folder .*lab_files; choose a folder outside"):
        backup_store(store.path, store.folder / "bk")
    assert sorted(p.name for p in store.folder.iterdir()) == ["umap"]


def test_a_copy_error_names_its_first_reason_in_one_line(store, tmp_path, monkeypatch):
    def refused(src, dst, **kw):
        raise shutil.Error([(str(src / "a"), str(dst / "a"), "[Errno 36] File name too long: 'a'"),
                            (str(src / "b"), str(dst / "b"), "[Errno 36] File name too long: 'b'")])

    monkeypatch.setattr(shutil, "copytree", refused)
    with pytest.raises(StoreError) as exc:
        backup_store(store.path, tmp_path / "bk")
    assert str(exc.value).endswith(": [Errno 36] File name too long: 'a'")


_SLOW_BACKUP = """
import shutil, sys, time
from genuine_core.cli import main
copy = shutil.copy2
def slow_copy(*args, **kwargs):  # the store file is copied; then the copy takes a while
    out = copy(*args, **kwargs)
    print("copied", flush=True)
    time.sleep(60)
    return out
shutil.copy2 = slow_copy
sys.argv = ["genuine", "store", "backup", sys.argv[1], "--db", sys.argv[2]]
sys.exit(main())
"""


def test_a_backup_stopped_by_sigterm_cleans_up_as_ctrl_c_does(store, tmp_path):
    # `kill` (or a service manager stopping) ended the process mid-copy and left the hidden partial folder
    import os
    import signal
    import subprocess
    import sys

    db = store.path
    store.close()
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_BACKUP, str(tmp_path / "bk"), str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout.readline().strip() == "copied"
        assert [p.name for p in tmp_path.glob(".bk.partial-*")]  # the partial folder exists meanwhile
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "interrupted" in err
    assert not list(tmp_path.glob(".bk.partial-*")) and not (tmp_path / "bk").exists()
    Store(db).close()  # the store is released and opens


def _path_ingested(store, folder, name: str, data: bytes) -> int:
    """A scan ingested by path: its file ``folder/name`` holds ``data``; returns its id."""
    import hashlib

    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    write_scan_result(store, samples.ensure_sample(store, "case", "case"),
                      synthetic_result(sha, {"m1": np.linspace(0.1, 0.9, 6)}), {"m1": 1})
    store.execute("UPDATE scans SET path = ? WHERE sha256 = ?", [str(folder / name), sha])
    return int(store.scalar("SELECT id FROM scans WHERE sha256 = ?", [sha]))


def test_a_backup_copies_the_scan_files_ingested_by_path_and_lists_those_it_cannot(store, tmp_path, capsys):
    kept = _path_ingested(store, tmp_path / "microscope", "field 1.tif", b"field one")
    changed = _path_ingested(store, tmp_path / "microscope", "field2.tif", b"field two")
    (tmp_path / "microscope" / "field2.tif").write_bytes(b"saved over since")
    db = store.path
    store.close()
    assert main(["store", "backup", str(tmp_path / "bk"), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    sha = __import__("hashlib").sha256(b"field one").hexdigest()
    assert [p.name for p in (tmp_path / "bk" / "lab_files" / "scans").iterdir()] == [f"{sha[:12]}_field_1.tif"]
    assert (tmp_path / "bk" / "lab_files" / "scans" / f"{sha[:12]}_field_1.tif").read_bytes() == b"field one"
    assert "with 1 scan file(s) ingested by path, in lab_files/scans/ (checked by sha256)" in out
    assert "warning: scan 1 not copied: its file /nowhere/aaaaaaaa.tif is missing" in out
    assert (f"warning: scan {changed} not copied: its file {tmp_path / 'microscope' / 'field2.tif'} holds other "
            "bytes than the scan stored (changed since ingest)") in out
    assert ("2 scan file(s) not copied: the store keeps their previews, masks and patches, so the backup is usable; "
            f"add --strict to refuse such a backup (genuine store check --db {db} lists the scans whose file is "
            "gone)") in out
    assert f"scan {kept} not copied" not in out
    assert main(["store", "backup", str(tmp_path / "bk2"), "--no-scans", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "not copied (--no-scans): the files of the 3 scan(s) ingested by path;" in out and "warning: scan" not in out
    assert not (tmp_path / "bk2" / "lab_files" / "scans").exists()


def test_a_strict_backup_refuses_a_missing_scan_file_and_keeps_nothing(store, tmp_path, capsys):
    db = store.path
    store.close()
    assert main(["store", "backup", str(tmp_path / "bk"), "--strict", "--no-models", "--db", str(db)]) != 0
    err = capsys.readouterr().err
    assert "refused (strict), nothing kept: 1 item(s) could not be copied: scan 1: its file /nowhere/aaaaaaaa.tif " \
           "is missing; restore them, or back up without --strict" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab"]


def test_a_scan_copy_that_differs_or_is_interrupted_leaves_no_backup(store, tmp_path, monkeypatch):
    import store.scan_copies as scan_copies

    _path_ingested(store, tmp_path / "microscope", "f.tif", b"field")
    monkeypatch.setattr(scan_copies, "sha256_file", lambda p: "0" * 64 if "bk" in str(p) else
                        __import__("genuine_core.checksums").checksums.sha256_file(p))
    with pytest.raises(StoreError, match="the copy of scan 2's file .*f.tif differs from it; nothing kept"):
        backup_store(store.path, tmp_path / "bk")

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scan_copies.shutil, "copy2", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        backup_store(store.path, tmp_path / "bk")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab", "microscope"]


def test_a_backup_while_the_dashboard_holds_the_store_says_to_stop_the_dashboard(store, tmp_path, monkeypatch):
    import store.backup as backup
    from store.db import StoreBusy

    def busy(path, **kw):
        raise StoreBusy(path, "the GENUINE dashboard (streamlit, PID 7)", 10, dashboard=True)

    monkeypatch.setattr(backup, "Store", busy)
    with pytest.raises(StoreBusy) as exc:
        backup_store(store.path, tmp_path / "bk")
    text = str(exc.value)
    assert text.startswith(f"store busy: {store.path} is open for writing by the GENUINE dashboard (streamlit, PID 7)")
    assert ("nothing was backed up: a backup needs the store to itself and the dashboard cannot make one; stop the "
            "dashboard (Ctrl-C in its terminal, or stop its service), run the backup again") in text
    assert "use its pages" not in text and not (tmp_path / "bk").exists()


def test_fix_paths_and_relocate_model_while_the_dashboard_holds_the_store_say_to_stop_it(store, tmp_path,
                                                                                        monkeypatch, capsys):
    # before: "use its pages (Cases for sign-outs ...; Review for the audit export)", though no page does these
    import store.db as db_module

    db = store.path
    store.close()

    def busy(path, read_only=False, **kw):
        raise db_module.StoreBusy(path, "the GENUINE dashboard (streamlit, PID 7)", 10, dashboard=True)

    monkeypatch.setattr(db_module, "Store", busy)
    for argv, nothing in ((["store", "check", "--fix-paths"], "no copy was recorded"),
                          (["store", "relocate-model", "m1", str(tmp_path)], "nothing was recorded")):
        assert main(argv + ["--db", str(db)]) == 2
        err = capsys.readouterr().err
        assert (f"(waited 10 s); {nothing}: no dashboard page does this; stop the dashboard, run the command again, "
                "then start the dashboard again") in err and "use its pages" not in err


def test_removing_a_scan_of_a_restored_store_deletes_the_backups_copy_of_its_file(store, tmp_path, capsys):
    sid = _path_ingested(store, tmp_path / "microscope", "f.tif", b"field")
    db = store.path
    store.close()
    backup_store(db, tmp_path / "bk")
    copy = next((tmp_path / "bk" / "lab_files" / "scans").iterdir())
    for fixed in (False, True):  # the copy found by its name, then recorded as the scan's path
        site = tmp_path / f"site-{fixed}"
        shutil.copytree(tmp_path / "bk", site)
        if fixed:
            (tmp_path / "microscope" / "f.tif").unlink()  # the original is gone
            main(["store", "check", "--fix-paths", "--db", str(site / "lab.duckdb")])  # (model m1 is still missing)
            assert f"fixed: scan {sid}: file {(site / 'lab_files' / 'scans' / copy.name).resolve()}" in \
                capsys.readouterr().out
        assert main(["store", "remove-scan", str(sid), "--yes", "--db", str(site / "lab.duckdb")]) == 0
        assert f"deleted {(site / 'lab_files' / 'scans' / copy.name).resolve()}" in capsys.readouterr().out
        assert list((site / "lab_files" / "scans").iterdir()) == []
    assert not (tmp_path / "microscope" / "f.tif").exists() and copy.is_file()  # the backup itself is untouched


def test_a_folder_given_as_the_store_is_called_a_folder(tmp_path, capsys):
    # store info, umap, export and backup said "no such store" of a folder that plainly exists; ingest said this
    from genuine_core.cli import main

    folder = tmp_path / "lab.duckdb"
    folder.mkdir()
    for argv in (["store", "info"], ["store", "backup", str(tmp_path / "bk")], ["umap"],
                 ["export", "audit", "--out", str(tmp_path / "a.csv")]):
        assert main([*argv, "--db", str(folder)]) == 2
        assert capsys.readouterr().err.strip() == f"error: {folder}: is a directory, not a store file", argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.duckdb"]
