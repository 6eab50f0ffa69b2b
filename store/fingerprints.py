"""Pixel fingerprints of scans stored before they were recorded (schema step 8), filled when needed.

A scan stored before step 8 has ``pixel_sha256`` NULL. Ingest compares a new file's fingerprint with the
stored ones; before that, :func:`stored_fingerprints` reads the files of the scans without one that could
hold the same pixels (same height, width and stored pixel type), and :func:`record_fingerprints` stores what
it found. A scan whose file is gone keeps NULL; one whose file cannot be decoded or holds other bytes now gets
:data:`UNKNOWABLE`, so it is read once only. Neither can be compared, which is no problem (``genuine store check``
does not report it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from genuine_core.errors import InputError
from genuine_core.io import fingerprint_file
from store.db import Store
from store.scans import found_scan_file

logger = logging.getLogger(__name__)


#: ``pixel_sha256`` of a stored scan whose file was read for it but cannot be decoded or holds other bytes now:
#: recorded, so that file is not read again at every ingest of its size (it matches no fingerprint)
UNKNOWABLE = ""


def unknown_candidates(store: Store, height: int, width: int, dtype: str) -> list[tuple[int, Path, str]]:
    """``(scan id, file, sha256)`` of the stored scans without a pixel fingerprint of this size and stored pixel
    type whose file is still found (``scans.found_scan_file``: its recorded path, an upload in this store's folder or
    a backup's copy), by id."""
    df = store.query("SELECT id, path, sha256 FROM scans WHERE pixel_sha256 IS NULL AND path IS NOT NULL "
                     "AND height = ? AND width = ? AND source_dtype = ? ORDER BY id", [int(height), int(width), dtype])
    out = []
    for sid, path, sha in df.itertuples(index=False):
        found = found_scan_file(store, path, sha)
        if found is not None:
            out.append((int(sid), found, str(sha)))
    return out


def stored_fingerprints(store: Store, height: int, width: int, dtype: str) -> dict[int, str]:
    """Scan id -> pixel fingerprint of each :func:`unknown_candidates` scan whose file still holds the bytes
    stored, else :data:`UNKNOWABLE` (reads files and the store, writes nothing)."""
    candidates = unknown_candidates(store, height, width, dtype)
    if candidates:
        logger.info("reading %d stored scan file(s) of %dx%d %s for their pixel fingerprint (once)",
                    len(candidates), width, height, dtype)
    out = {}
    for sid, path, sha in candidates:
        try:
            file_sha, pixels = fingerprint_file(path)
        except InputError as exc:
            logger.debug("scan %d: no pixel fingerprint: %s", sid, exc)
            file_sha = pixels = None
        out[sid] = pixels if file_sha == sha else UNKNOWABLE
    return out


def record_fingerprints(store: Store, found: dict[int, str]) -> None:
    """Store the fingerprints :func:`stored_fingerprints` found (only where none is recorded yet)."""
    if not found:
        return
    with store.transaction() as cur:
        for sid, pixels in found.items():
            cur.execute("UPDATE scans SET pixel_sha256 = ? WHERE id = ? AND pixel_sha256 IS NULL", [pixels, sid])
