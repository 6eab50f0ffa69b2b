"""A consistent copy of a store (``genuine store backup``): its file, its ``<name>_files`` folder, the
registered models' folders (``store.model_copies``) and the scan files ingested by path (``store.scan_copies``),
so that the copy restores on another machine.

Copying ``<name>.duckdb`` by hand while a process holds the store misses the commits still in
``<name>.duckdb.wal`` (the dashboard's latest label decisions, say). Here the store is opened for
writing, so nobody else can hold or change it meanwhile, its write-ahead log is checkpointed into
the file, and the copy is checked byte by byte before it takes its final name.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from genuine_core.checksums import sha256_file
from genuine_core.errors import InputError, StoreError
from store.db import Store, StoreBusy, files_folder
from store.location import store_exists
from store.model_copies import copy_model_folders
from store.scan_copies import copy_scan_files


def backup_store(path: str | Path, dest: str | Path, with_models: bool = True, with_scans: bool = True,
                 strict: bool = False) -> dict:
    """Copy the store at ``path`` into the new folder ``dest`` (``dest/<name>.duckdb``, ``dest/<name>_files/``).

    With ``with_models``, each registered model's folder that lives outside the store and holds the registered
    weights is copied into ``dest/<name>_files/models/`` and checked by its checksum; the store file itself is
    copied unchanged (it still names the original folders: ``genuine store check --fix-paths`` records the copies
    once the backup is restored where those are missing).
    With ``with_scans``, each scan file ingested by path (outside ``<name>_files``) is copied into
    ``dest/<name>_files/scans/`` and checked by the sha256 the scan stored; one that is missing or changed is
    left out (``scans_not_copied``), or, with ``strict``, fails the backup, as a model folder left out does.

    The copy is written to a new hidden ``.<dest>.partial-*`` folder beside ``dest`` and renamed to ``dest``
    only once its file has the same SHA-256 as the store's and opens as a store; a failure or Ctrl-C leaves
    no partial folder behind.
    The store's schema is copied as it is (an older store is not migrated first).

    Returns:
        ``{"store": copied store file, "files": files in the copied folder (model copies included), "bytes":
        total size, "models": {name: folder} of the registered models, "copied": {name: the copy's folder
        relative to dest/<name>_files}, "not_copied": {name: why}, "scan_files": how many scans were ingested by
        path (outside <name>_files), "scans_copied": {scan id: the copy relative
        to dest/<name>_files}, "scans_not_copied": {scan id: why}}`` (the model entries are empty without
        ``with_models``, the scan entries without ``with_scans``).

    Raises:
        InputError: ``dest`` exists already, or lies inside the store's ``<name>_files`` folder.
        StoreError: no store at ``path``, it is busy (e.g. held by the dashboard), the copy differs
            from the store, or (``strict``) a model folder or scan file could not be copied.
    """
    path, dest = Path(path), Path(dest)
    if not store_exists(path):  # an empty file is no store yet: nothing to back up, and nothing to create
        raise StoreError(f"{path}: " + ("is a directory, not a store file" if path.is_dir() else "no such store"))
    if dest.exists():
        raise InputError(f"{dest} exists already; a backup goes into a new folder")
    if dest.resolve().is_relative_to(files_folder(path).resolve()):  # copying the folder into itself never ends
        raise InputError(f"{dest} lies inside the store's own folder {files_folder(path)}; choose a folder outside it")
    with _open_alone(path) as store:
        store.execute("CHECKPOINT")  # the write-ahead log into the file; our write lock keeps it so
        registered = store.cursor().execute(
            "SELECT name, folder, checksum FROM models WHERE folder IS NOT NULL ORDER BY id").fetchall()
        models = {name: folder for name, folder, _ in registered}
        inside = files_folder(path).resolve()
        scans = [row for row in store.cursor().execute(
            "SELECT id, path, sha256 FROM scans WHERE path IS NOT NULL ORDER BY id").fetchall()
            if not Path(row[1]).resolve().is_relative_to(inside)]  # uploads come with the folder
        copied, not_copied, scans_copied, scans_not_copied = {}, {}, {}, {}
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))  # never a user's folder
        except OSError as exc:
            raise StoreError(f"cannot back up {path} to {dest}: {exc.strerror or exc}") from None
        try:
            shutil.copy2(path, partial / path.name)
            if files_folder(path).is_dir():
                shutil.copytree(files_folder(path), files_folder(partial / path.name))
            if sha256_file(partial / path.name) != sha256_file(path):
                raise StoreError(f"the copy of {path} differs from it; nothing kept")
            Store(partial / path.name, read_only=True).close()  # it opens as a store
            if with_models:
                copied, not_copied = copy_model_folders(registered, files_folder(path),
                                                        files_folder(partial / path.name))
            if with_scans:
                scans_copied, scans_not_copied = copy_scan_files(scans, files_folder(partial / path.name))
            if strict and (not_copied or scans_not_copied):
                raise StoreError(_strict_message(path, not_copied, scans_not_copied))
            partial.rename(dest)
        except OSError as exc:  # shutil.Error (copytree) lists every file: its first reason is enough
            shutil.rmtree(partial, ignore_errors=True)
            first = exc.args[0][0][2] if isinstance(exc, shutil.Error) and exc.args and exc.args[0] else None
            raise StoreError(f"cannot back up {path} to {dest}: {first or exc.strerror or exc}") from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    copied_files = [p for p in files_folder(dest / path.name).rglob("*") if p.is_file()]
    return {"store": dest / path.name, "files": len(copied_files),
            "bytes": (dest / path.name).stat().st_size + sum(p.stat().st_size for p in copied_files),
            "models": models, "copied": copied, "not_copied": not_copied, "scan_files": len(scans),
            "scans_copied": scans_copied,
            "scans_not_copied": scans_not_copied}


def _open_alone(path: Path) -> Store:
    """The store opened for writing, so that nobody else holds or changes it while it is copied.

    Raises:
        StoreBusy: another process holds it; the advice says how to back up (the dashboard has no backup page).
    """
    try:
        return Store(path, migrate=False)
    except StoreBusy as exc:
        advice = ("nothing was backed up: a backup needs the store to itself and the dashboard cannot make one; "
                  "stop the dashboard (Ctrl-C in its terminal, or stop its service), run the backup again, then "
                  "start the dashboard again" if exc.dashboard
                  else "nothing was backed up; run the backup again once that process has finished")
        raise StoreBusy(exc.path, exc.holder, exc.waited, exc.dashboard, advice) from None


def _strict_message(path: Path, not_copied: dict, scans_not_copied: dict) -> str:
    """Why a ``strict`` backup was refused: every model folder and scan file it could not copy."""
    whys = [f"model {name!r}: {why}" for name, why in not_copied.items()]
    whys += [f"scan {sid}: {why}" for sid, why in scans_not_copied.items()]
    more = f"; and {len(whys) - 5} more" if len(whys) > 5 else ""
    return (f"backup of {path} refused (strict), nothing kept: {len(whys)} item(s) could not be copied: "
            + "; ".join(whys[:5]) + more + "; restore them, or back up without --strict to leave them out with a warning")
