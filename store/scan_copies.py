"""Scan files ingested by path kept inside a store's ``<name>_files`` folder (``genuine store backup``, restore).

A scan ingested by path (``genuine ingest FILE``) leaves its image where it was; the store records that path and
the file's sha256. A backup copies each such file that lives outside ``<name>_files`` into ``<name>_files/scans/``
as ``<first 12 hex digits of its sha256>_<file name>`` (as uploads are named), checked by its sha256, so that the
backup holds every scan image the store refers to. On another machine, where the original is missing,
:func:`kept_copy` finds the copy, and ``genuine store check --fix-paths`` records it as the scan's path.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from genuine_core.checksums import sha256_file
from genuine_core.errors import StoreError

#: where a backup puts the scan files ingested by path, inside ``<name>_files``
SCANS_DIR = "scans"


def copy_name(path: str | Path, sha256: str) -> str:
    """The copy's file name: the first 12 hex digits of the scan's sha256, then its file name made safe (a name
    that starts so already, a copy's restored again elsewhere, is kept)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).name).lstrip(".") or "scan"
    prefix = f"{sha256[:12]}_"
    return safe if safe.startswith(prefix) else prefix + safe[:100]


def copy_scan_files(scans: list[tuple[int, str, str]], into: Path) -> tuple[dict, dict]:
    """Copy each scan's file into ``into/scans/`` and check the copy's sha256.

    Args:
        scans: ``(scan id, recorded path, sha256)`` of the scans ingested by path, their files outside the store's
            own ``<name>_files`` folder (its uploads come with that folder).
        into: the copy's ``<name>_files`` folder.

    Returns:
        ``(copied, skipped)``: scan id -> the copy relative to ``into``; scan id -> why it was not copied
        (its file is missing, or holds other bytes than the scan stored).

    Raises:
        StoreError: a copy does not hold the bytes its source holds.
        OSError: a copy failed (the caller removes the partial backup).
    """
    copied, skipped = {}, {}
    for sid, path, sha in scans:
        src = Path(path)
        if not src.is_file():
            skipped[sid] = f"its file {path} is missing"
            continue
        dest = into / SCANS_DIR / copy_name(src, sha)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        if sha256_file(dest) != sha:  # the source changed since ingest, or the copy is bad: tell which
            dest.unlink()
            if sha256_file(src) != sha:
                skipped[sid] = f"its file {path} holds other bytes than the scan stored (changed since ingest)"
                continue
            raise StoreError(f"the copy of scan {sid}'s file {path} differs from it; nothing kept")
        copied[sid] = dest.relative_to(into).as_posix()
    return copied, skipped


def kept_copy(store_files: Path, path: str | None, sha256: str) -> Path | None:
    """A backup's copy of the scan file ``path`` in ``store_files/scans/`` (named by :func:`copy_name`), or None."""
    if not path or len(sha256) < 12:
        return None
    mine = store_files / SCANS_DIR / copy_name(path, sha256)
    return mine.resolve() if mine.is_file() else None


def copies_to_record(store) -> list[tuple[int, str, str, Path]]:
    """``(scan id, recorded path, sha256, copy)`` of the scans whose file is missing at its recorded path while a
    backup's copy of it is under the store's ``<name>_files/scans/`` (:func:`kept_copy`; not read here)."""
    rows = store.query("SELECT id, path, sha256 FROM scans WHERE path IS NOT NULL ORDER BY id")
    out = []
    for sid, path, sha in rows.itertuples(index=False):
        copy = None if Path(path).is_file() else kept_copy(store.folder, path, sha)
        if copy is not None:
            out.append((int(sid), str(path), str(sha), copy))
    return out


def fix_scan_paths(store, by: str | None = None) -> list[tuple[int, str, str]]:
    """Record, for each scan whose file is missing, the backup's copy under the store's ``<name>_files/scans/``
    as its path, when the copy holds the bytes the scan stored (checked by sha256); one transaction, with a
    'relocate scan' event each in the store's log (the previous and new path, ``by``).

    Returns:
        ``(scan id, previous path, new path)`` of each scan pointed at its copy.
    """
    from store.events import record_event

    found = [(sid, path, sha, str(copy)) for sid, path, sha, copy in copies_to_record(store)
             if sha256_file(copy) == sha]
    if found:
        with store.transaction() as cur:
            for sid, previous, sha, new in found:
                name = cur.execute("SELECT file_name FROM scans WHERE id = ?", [sid]).fetchone()[0]
                cur.execute("UPDATE scans SET path = ? WHERE id = ?", [new, sid])
                record_event(cur, "relocate scan", name, sha, by,
                             {"scan_id": sid, "path": new, "previous path": previous})
    return [(sid, previous, new) for sid, previous, sha, new in found]
