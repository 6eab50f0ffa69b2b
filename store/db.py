"""The store's connection: one DuckDB connection per process, one cursor per thread.

DuckDB lets one process open a database file for writing. Inside that process every
thread (Streamlit runs each browser session in a thread) gets its own cursor
(``conn.cursor()``, a separate connection context on the same database) so
transactions of different threads never mix. Writes go through
:meth:`Store.transaction`, which commits everything or nothing.

Files beside the store: ``<name>.duckdb`` and a folder ``<name>_files/`` for data the
store references but does not hold (fitted UMAP reducers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd

from genuine_core.errors import StoreError
from store import migrations

logger = logging.getLogger(__name__)


#: store used when neither ``--db`` nor ``$GENUINE_DB`` names one (the dashboard's default too)
DEFAULT_DB = "demo/genuine_demo.duckdb"


def default_db_path() -> Path:
    """``$GENUINE_DB`` when set, else :data:`DEFAULT_DB` (relative to the working directory)."""
    return Path(os.environ.get("GENUINE_DB", "").strip() or DEFAULT_DB)


def add_db_argument(parser) -> None:
    """The ``--db PATH`` option every store command shares."""
    parser.add_argument("--db", type=Path, default=None,
                        help=f"store file (default: $GENUINE_DB or {DEFAULT_DB})")


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text or "already open" in text)


class Store:
    """A GENUINE store file.

    Args:
        path: the ``.duckdb`` file (created when missing unless ``read_only``).
        read_only: open without write access (several processes may read at once).
        busy_timeout: seconds to keep retrying while another process holds the write lock.
        migrate: bring an older schema up to date on open (writers only).

    Raises:
        StoreError: the file is locked by another process past ``busy_timeout``, is not a
            DuckDB database, was written by a newer version, or ``read_only`` on a missing file.
    """

    def __init__(self, path: str | Path, read_only: bool = False, busy_timeout: float = 10.0, migrate: bool = True):
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.is_file():
            raise StoreError(f"{self.path}: no such store")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._connect(busy_timeout)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        try:
            version = migrations.current_version(self._conn)
            if version < migrations.LATEST:
                if read_only:
                    raise StoreError(f"{self.path}: schema version {version} is older than {migrations.LATEST}; "
                                     "open it once for writing to migrate")
                if migrate:
                    migrations.migrate(self._conn)
            elif version > migrations.LATEST:
                raise StoreError(f"{self.path}: schema version {version} is newer than this program "
                                 f"({migrations.LATEST}); update GENUINE")
        except BaseException:
            self._conn.close()
            raise

    def _connect(self, busy_timeout: float) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + max(0.0, busy_timeout)
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as exc:
                if not _is_lock_error(exc):
                    raise StoreError(f"{self.path}: cannot open store: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise StoreError(f"store busy: {self.path} is open for writing in another process "
                                     f"(waited {busy_timeout:.0f} s)") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: cannot open store: {exc}") from exc

    # -- connection handling -------------------------------------------------------------

    @property
    def folder(self) -> Path:
        """Folder beside the store file for files the store references (created on demand)."""
        return self.path.with_name(self.path.stem + "_files")

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (created on first use)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            if self._conn is None:
                raise StoreError(f"{self.path}: store is closed")
            with self._lock:
                cur = self._conn.cursor()
                self._cursors.append(cur)
            self._local.cursor = cur
            self._local.depth = 0
        return cur

    def close(self) -> None:
        """Close every cursor and the connection (checkpoints the file)."""
        with self._lock:
            for cur in self._cursors:
                with contextlib.suppress(Exception):
                    cur.close()
            self._cursors.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self._local = threading.local()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- queries -------------------------------------------------------------------------

    def query(self, sql: str, params: list | tuple | dict | None = None) -> pd.DataFrame:
        """Run one statement with bound parameters and return its rows as a DataFrame."""
        return self.cursor().execute(sql, params or []).df()

    def scalar(self, sql: str, params: list | tuple | dict | None = None):
        """Run one statement and return the first column of the first row (None when no rows)."""
        rows = self.cursor().execute(sql, params or []).fetchall()
        return rows[0][0] if rows else None

    def execute(self, sql: str, params: list | tuple | dict | None = None) -> None:
        """Run one statement (autocommits unless inside :meth:`transaction`)."""
        self.cursor().execute(sql, params or [])

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Everything inside commits together or not at all; yields this thread's cursor.

        Nested use joins the outer transaction.
        """
        if self.read_only:
            raise StoreError(f"{self.path}: store is open read-only")
        cur = self.cursor()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield cur
            finally:
                self._local.depth -= 1
            return
        cur.execute("BEGIN TRANSACTION")
        self._local.depth = 1
        try:
            yield cur
        except BaseException:
            self._local.depth = 0
            with contextlib.suppress(Exception):
                cur.execute("ROLLBACK")
            raise
        self._local.depth = 0
        try:
            cur.execute("COMMIT")
        except duckdb.TransactionException as exc:
            with contextlib.suppress(Exception):
                cur.execute("ROLLBACK")
            raise StoreError(f"write conflict, nothing was saved: {exc}") from exc

    @contextlib.contextmanager
    def frames(self, **frames) -> Iterator[None]:
        """Register DataFrames / Arrow tables under the given names on this thread's cursor.

        Statements can then read them by name (``INSERT INTO t SELECT ... FROM name``);
        they are unregistered on exit.
        """
        cur = self.cursor()
        _settle(cur)
        for name, frame in frames.items():
            cur.register(name, frame)
        try:
            yield
        finally:
            _settle(cur)
            for name in frames:
                with contextlib.suppress(Exception):
                    cur.unregister(name)

    def next_ids(self, sequence: str, n: int) -> list[int]:
        """Draw ``n`` values from one of the schema's sequences (ids for bulk inserts)."""
        if sequence not in _SEQUENCES:
            raise ValueError(f"unknown sequence {sequence!r}")
        if n <= 0:
            return []
        sql = _NEXTVAL_SQL[sequence]
        return [int(r[0]) for r in self.cursor().execute(sql, [n]).fetchall()]


def _settle(cur: duckdb.DuckDBPyConnection) -> None:
    """Run any half-read result of this cursor to its end (DuckDB refuses to register a frame before)."""
    complete = getattr(cur, "complete", None)
    if complete is not None:
        complete()


_SEQUENCES = ("sample_ids", "scan_ids", "nucleus_ids", "model_ids", "label_event_ids", "umap_fit_ids", "probe_run_ids")
# One literal statement per sequence (sequence names cannot be bound parameters).
_NEXTVAL_SQL = {s: "SELECT nextval('" + s + "') FROM range(?)" for s in _SEQUENCES}


def open_store(path: str | Path, read_only: bool = False, busy_timeout: float = 10.0) -> Store:
    """Open (and create/migrate when writable) the store at ``path``."""
    return Store(path, read_only=read_only, busy_timeout=busy_timeout)
