"""The store's connection and its concurrency policy.

Concurrency policy (DuckDB allows one writing process per file):

1. **The dashboard process owns the store.** While ``streamlit run app.py`` serves, its
   server process opens the store once (``pages.common.store_at``) and holds DuckDB's
   write lock until it stops. No other process can open the file meanwhile, not even
   read-only.
2. **Sessions are threads.** Every browser session runs in its own thread of that process
   and gets its own cursor on the shared connection (``conn.cursor()``), so transactions
   of different sessions never mix. :meth:`Store.transaction` commits all or nothing.
3. **Label decisions are short, serialised, retried writes** (:meth:`Store.write`): one
   lock per store file and process serialises them, so each event reads its ``previous``
   value after the last decision committed (DuckDB's snapshot isolation would let two
   sessions read the same ``previous`` and both commit: a broken audit chain). A DuckDB
   transaction conflict (``TransactionException`` "Conflict ...", e.g. with an ingest
   running on the Ingest page) is retried with a bounded exponential backoff
   (:data:`WRITE_ATTEMPTS`, :data:`WRITE_TIMEOUT`); then ``StoreError("store busy ...")`` is
   raised and the page says "Not saved". A decision is never dropped silently.
4. **Other processes wait, then give up cleanly.** A CLI ingest, export or check that
   finds the file locked retries for its busy timeout (``genuine ingest --wait SECONDS``,
   default 30) and then fails with one line naming the holder (:class:`StoreBusy`, exit
   code 2): ingest through the dashboard's Ingest page, or stop the dashboard and re-run.
   It never opened the file, so it cannot corrupt it.

Files beside the store: ``<name>.duckdb`` and a folder ``<name>_files/`` for data the
store references but does not hold (fitted UMAP reducers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import duckdb
import pandas as pd

from genuine_core.errors import StoreError
from genuine_core.interrupts import interrupted
from store import migrations
from store.location import genuine_command, no_store_message, store_exists
from store.memory import memory_limit

logger = logging.getLogger(__name__)


#: attempts of one :meth:`Store.write` before it gives up with "store busy"
WRITE_ATTEMPTS = 8
#: seconds one :meth:`Store.write` may wait in total (for the write lock and between attempts)
WRITE_TIMEOUT = 10.0
#: seconds of waiting to open a locked store before the wait is announced (a longer silence looks like a hang)
ANNOUNCE_WAIT_AFTER = 1.0
_BACKOFF_START, _BACKOFF_MAX = 0.02, 1.0  # seconds: first pause after a conflict, longest pause

T = TypeVar("T")


class StoreBusy(StoreError):
    """Another process holds the store's write lock (raised after the busy timeout).

    Attributes:
        path: the store file. holder: who holds it, e.g. "the GENUINE dashboard (PID 123)".
        waited: seconds waited. dashboard: the holder is a Streamlit server.
        advice: what the user should do (default: by holder).
    """

    def __init__(self, path: Path, holder: str, waited: float, dashboard: bool, advice: str | None = None):
        self.path, self.holder, self.waited, self.dashboard = path, holder, waited, dashboard
        if advice is None:
            advice = ("while the dashboard runs it owns the store: use its pages (Cases for sign-outs and sample "
                      "reports; Ingest; Models to score stored scans with a model; Review for the audit export) or "
                      "stop the dashboard, then retry" if dashboard
                      else "wait until that process finishes, then retry")
        super().__init__(f"store busy: {path} is open for writing by {holder} (waited {waited:.0f} s); {advice}")


class NotAStore(StoreError):
    """The file is not a GENUINE store: not a DuckDB database, or another program's DuckDB database.

    Attributes:
        path: the file. what: what it is instead, e.g. "not a DuckDB database".
    """

    def __init__(self, path: Path, what: str, advice: str = ""):
        self.path, self.what = path, what
        super().__init__(f"{path}: {what}, not a GENUINE store" + (f"; {advice}" if advice else ""))


#: what Ctrl-C during a store command can surface as: catch these, then ask :func:`is_interrupt`
INTERRUPTS = (KeyboardInterrupt, RuntimeError, duckdb.InterruptException)


def is_interrupt(exc: BaseException) -> bool:
    """True for Ctrl-C: a ``KeyboardInterrupt``, DuckDB's answer to it during a query (``InterruptException``,
    or a ``RuntimeError`` "Query interrupted"), or any error raised after the command saw Ctrl-C
    (``genuine_core.interrupts``: e.g. a ``duckdb.Error`` wrapping the interrupt of a Python callback, or the
    "transaction is aborted" that follows it)."""
    return isinstance(exc, (KeyboardInterrupt, duckdb.InterruptException)) or (
        isinstance(exc, RuntimeError) and "query interrupted" in str(exc).lower()) or interrupted()


class WriteConflict(StoreError):
    """A transaction's commit failed on a DuckDB conflict; nothing was saved (:meth:`Store.write` retries)."""


class StoreNotWritable(StoreError):
    """A change cannot be saved for another reason than a conflict: the store's folder takes no new files
    (DuckDB writes each change to ``<store>.wal`` beside the store first) or the disk refused; nothing was saved."""


def _folder_refusal(path: Path) -> str | None:
    """Why the store's folder takes no new file (the operating system's reason), or None when it does."""
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def _not_writable(path: Path, reason: str) -> StoreNotWritable:
    needs = (f"DuckDB must create {path.name}.wal there to save a change" if path.is_file()
             else f"the store file {path.name} cannot be created there")
    return StoreNotWritable(f"cannot write to the store {path}: its folder {path.parent} refuses new files "
                            f"({reason}), and {needs}; nothing was saved")


def _commit_failed(path: Path, exc: duckdb.Error) -> StoreError:
    """What a commit DuckDB refused means: a conflict with another transaction (:class:`WriteConflict`, worth a
    retry), else a store that cannot be written (:class:`StoreNotWritable`, naming the folder or DuckDB's reason)."""
    if _is_conflict(exc):
        return WriteConflict(f"write conflict, nothing was saved: {exc}")
    reason = _folder_refusal(path)
    if reason is not None:
        return _not_writable(path, reason)
    detail = str(exc).split("Failed to commit: ", 1)[-1]  # e.g. a .wal file of its own that cannot be written
    return StoreNotWritable(f"cannot write to the store {path}: {detail}; nothing was saved")


def _write_refusal(path: Path) -> str | None:
    """Why this user cannot change the existing store file ``path`` (None when it can)."""
    if not os.access(path, os.W_OK):
        return "the file is read-only for you"
    reason = _folder_refusal(path)
    return None if reason is None else f"its folder {path.parent} refuses new files ({reason})"


def _outdated_message(path: Path, version: int) -> str:
    """Why a reader refuses a store written by an older version, and the command that brings it up to date
    (on a copy, when the store cannot be changed where it is)."""
    what = (f"schema version {version} is older than {migrations.LATEST}" if version < migrations.LATEST else
            "an early version-1 store (its auto and true labels are still in the 'labels' table)")
    refusal = _write_refusal(path)
    if refusal is not None:
        return (f"{path}: {what}, and it cannot be brought up to date where it is: {refusal}; copy {path.name} "
                f"(with {files_folder(path).name}/ when present) to a folder you can write to and run "
                "`genuine store migrate --db COPY` on the copy")
    return (f"{path}: {what}; bring it up to date once with `{genuine_command('store migrate', path)}` "
            "(or any command that writes to it)")


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text or "already open" in text)


def _is_conflict(exc: BaseException) -> bool:
    """A DuckDB transaction conflict (another transaction touched the same rows): worth a retry."""
    if isinstance(exc, WriteConflict):
        exc = exc.__cause__
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()


def lock_holder(exc: Exception) -> tuple[str, bool]:
    """(description, is_dashboard) of the process named in DuckDB's lock error, from ``/proc``."""
    m = re.search(r"PID (\d+)", str(exc))
    if not m:
        return "another process", False
    pid = int(m.group(1))
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    if "streamlit" in cmd:
        return f"the GENUINE dashboard (streamlit, PID {pid})", True
    short = " ".join(Path(w).name if i == 0 else w for i, w in enumerate(cmd.split()[:4]))
    return (f"process {pid} ({short})" if short else f"process {pid}"), False


def _write_lock(path: Path) -> threading.RLock:
    """The process-wide lock serialising :meth:`Store.write` on one store file."""
    key = str(path.resolve())
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.RLock())


_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


class Store:
    """A GENUINE store file.

    Args:
        path: the ``.duckdb`` file (created when missing or an empty file, unless ``read_only``).
        read_only: open without write access (several processes may read at once).
        busy_timeout: seconds to keep retrying while another process holds the write lock.
        migrate: bring an older schema up to date on open (writers only).

    Raises:
        StoreError: the file is locked by another process past ``busy_timeout``, is not a
            DuckDB database, is another program's DuckDB database (tables but no GENUINE schema), was
            written by a newer version, or ``read_only`` on a missing or empty file.
    """

    def __init__(self, path: str | Path, read_only: bool = False, busy_timeout: float = 10.0, migrate: bool = True):
        self.path = Path(path)
        self.read_only = read_only
        #: DuckDB's memory limit ($GENUINE_DUCKDB_MEMORY), read before any file is touched: a bad value changes nothing
        self.memory_limit = memory_limit()
        if read_only and not store_exists(self.path):  # missing, or an empty file (e.g. `touch`)
            raise StoreError(no_store_message(self.path))
        if not read_only:
            refuse_taken_files_folder(self.path)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot create its folder: {exc.strerror}") from None
        _check_duckdb_file(self.path)
        self._conn = self._connect(busy_timeout)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._write_lock = _write_lock(self.path)
        #: conflicts :meth:`write` retried so far (diagnostics)
        self.retries = 0
        try:
            version = migrations.current_version(self._conn)
            foreign = migrations.other_tables(self._conn) if version == 0 else []
            if foreign:
                shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
                raise NotAStore(self.path, f"another program's DuckDB database, with tables {shown}",
                                "GENUINE keeps its data in a file of its own: give a new path")
            if version == 0 and read_only:
                raise StoreError(f"{self.path}: an empty database, not yet a GENUINE store (its creation may have "
                                 "been interrupted); any command that writes to it sets it up, e.g. "
                                 f"`{genuine_command('store migrate', self.path)}`")
            if version > migrations.LATEST:
                raise StoreError(f"{self.path}: schema version {version} is newer than this program "
                                 f"({migrations.LATEST}); update GENUINE")
            if migrations.outdated(self._conn, version):
                if read_only:
                    raise StoreError(_outdated_message(self.path, version))
                if migrate:
                    self.migrate()
        except BaseException:
            self._conn.close()
            raise

    def _connect(self, busy_timeout: float) -> duckdb.DuckDBPyConnection:
        start = time.monotonic()
        deadline = start + max(0.0, busy_timeout)
        delay, announced, replaced = 0.05, False, False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only,
                                      config={"memory_limit": self.memory_limit})
            except duckdb.IOException as exc:
                if not _is_lock_error(exc):
                    if not (self.read_only or replaced) and self.path.is_file() and self.path.stat().st_size == 0:
                        # an empty file (e.g. `touch`), which DuckDB refuses: it holds nothing, so the store takes
                        # its place (only now: a store another process is creating meets DuckDB's lock error)
                        try:
                            self.path.unlink()
                        except OSError as err:
                            raise StoreError(f"{self.path}: an empty file, which cannot be replaced by a new "
                                             f"store: {err.strerror}") from None
                        replaced = True
                        continue
                    reason = None if self.read_only else _folder_refusal(self.path)
                    if reason is not None:  # e.g. a new store in a folder that takes no new files
                        raise _not_writable(self.path, reason) from None
                    if not self.read_only and self.path.is_file() and not os.access(self.path, os.W_OK):
                        raise StoreNotWritable(f"cannot write to the store {self.path}: the file is read-only for "
                                               "you, and this command changes it; nothing was saved") from None
                    raise StoreError(f"{self.path}: cannot open store: {exc}") from exc
                if time.monotonic() >= deadline:
                    holder, dashboard = lock_holder(exc)
                    raise StoreBusy(self.path, holder, busy_timeout, dashboard) from exc
                if not announced and time.monotonic() - start >= ANNOUNCE_WAIT_AFTER:
                    announced = True
                    logger.warning("%s is open for writing by %s; waiting up to %.0f s for it", self.path,
                                   lock_holder(exc)[0], busy_timeout)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: cannot open store: {exc}") from exc

    def migrate(self) -> int:
        """Apply the missing schema steps (``store.migrations``); the version reached.

        Raises:
            StoreNotWritable: a step could not be saved (the steps before it were).
        """
        try:
            return migrations.migrate(self._conn)
        except duckdb.TransactionException as exc:
            raise _commit_failed(self.path, exc) from exc

    def require_writable(self) -> None:
        """Refuse a store whose changes could not be saved before a long job does its work (``genuine ingest``,
        ``umap``): its folder takes no new files, so DuckDB cannot write its ``.wal`` there.

        Raises:
            StoreNotWritable: the folder refuses a new file.
        """
        reason = _folder_refusal(self.path)
        if reason is not None:
            raise _not_writable(self.path, reason)

    # -- connection handling -------------------------------------------------------------

    @property
    def folder(self) -> Path:
        """Folder beside the store file for files the store references (created on demand)."""
        return files_folder(self.path)

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

    def release_cursor(self) -> None:
        """Close this thread's cursor (for worker threads that end before the store does)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            return
        with self._lock:
            self._cursors = [c for c in self._cursors if c is not cur]
        with contextlib.suppress(Exception):
            cur.close()
        self._local.cursor = None

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
            raise _commit_failed(self.path, exc) from exc

    def write(self, fn: Callable[[duckdb.DuckDBPyConnection], T], attempts: int = WRITE_ATTEMPTS,
              timeout: float = WRITE_TIMEOUT) -> T:
        """Run ``fn(cursor)`` as one short write transaction, serialised and retried on conflicts.

        Writes through this method on the same store file in this process run one at a
        time, so what ``fn`` reads is what it writes on top of. A DuckDB transaction
        conflict rolls the attempt back and retries after 0.02, 0.04, ... s (at most 1 s
        each), up to ``attempts`` tries within ``timeout`` seconds. Inside an enclosing
        transaction ``fn`` simply joins it, unserialised (the outer one owns its snapshot
        and retries), so call label writes outside other transactions.

        Args:
            fn: does the reads and writes on the given cursor; may run more than once.
            attempts: tries before giving up (>= 1).
            timeout: seconds to wait in total for the lock and between attempts.

        Returns:
            What ``fn`` returned on the attempt that committed.

        Raises:
            StoreError: "store busy ..." when the lock or the conflicts outlast the budget
                (nothing was saved); any error ``fn`` raises (rolled back, not retried).
        """
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.read_only:
            raise StoreError(f"{self.path}: store is open read-only")
        if getattr(self._local, "depth", 0):
            return fn(self.cursor())
        start = time.monotonic()
        if not self._write_lock.acquire(timeout=max(0.0, timeout)):
            raise StoreError(f"store busy: other writes held {self.path} for {timeout:.0f} s; nothing was saved, "
                             "try again")
        try:
            pause, attempt = _BACKOFF_START, 0
            while True:
                attempt += 1
                try:
                    with self.transaction() as cur:
                        return fn(cur)
                except (duckdb.TransactionException, WriteConflict) as exc:
                    if not _is_conflict(exc):
                        raise
                    if attempt >= attempts or timeout - (time.monotonic() - start) <= pause:
                        raise StoreError(f"store busy: write conflict on {self.path} persisted after {attempt} "
                                         f"attempt(s) in {time.monotonic() - start:.1f} s; nothing was saved, "
                                         "try again") from exc
                    self.retries += 1  # under the write lock: no race
                    logger.info("write conflict on %s (attempt %d), retrying in %.2f s", self.path, attempt, pause)
                    time.sleep(pause)
                    pause = min(pause * 2, _BACKOFF_MAX)
        finally:
            self._write_lock.release()

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
        with self.transaction() as cur:  # outside a transaction: committed here, where a refusal is explained
            return [int(r[0]) for r in cur.execute(_NEXTVAL_SQL[sequence], [n]).fetchall()]


def _settle(cur: duckdb.DuckDBPyConnection) -> None:
    """Run any half-read result of this cursor to its end (DuckDB refuses to register a frame before)."""
    complete = getattr(cur, "complete", None)
    if complete is not None:
        complete()


_SEQUENCES = ("sample_ids", "scan_ids", "nucleus_ids", "model_ids", "label_event_ids", "umap_fit_ids", "probe_run_ids")
# One literal statement per sequence (sequence names cannot be bound parameters).
_NEXTVAL_SQL = {s: "SELECT nextval('" + s + "') FROM range(?)" for s in _SEQUENCES}


#: where a DuckDB database file says what it is (bytes 8-11 of its header)
_DUCKDB_MAGIC = (8, b"DUCK")


def _check_duckdb_file(path: Path) -> None:
    """Refuse an existing file that is not a DuckDB database before DuckDB opens it: DuckDB would
    read a CSV, Parquet or JSON file as a throwaway in-memory database and every write would vanish.

    Raises:
        StoreError: a directory, or a non-empty file without DuckDB's header.
    """
    if path.is_dir():
        raise StoreError(f"{path}: is a directory, not a store file")
    if not path.is_file() or path.stat().st_size == 0:
        return  # new file: DuckDB creates the database; empty file: Store._connect puts the database in its place
    offset, magic = _DUCKDB_MAGIC
    with open(path, "rb") as fh:
        head = fh.read(offset + len(magic))
    if head[offset:] != magic:
        raise NotAStore(path, "not a DuckDB database")


def files_folder(store_path: str | Path) -> Path:
    """``<store>_files`` beside a store file: uploads, retraining runs and other files it references."""
    p = Path(store_path)
    return p.with_name(p.stem + "_files")


def refuse_taken_files_folder(store_path: str | Path) -> None:
    """Refuse to create a store whose files folder already holds files: they belong to another store of the
    same name stem (``case.db`` beside ``case.duckdb``) or to a deleted one, and the new store would take
    them over (its maps, uploads and runs would mix with theirs, and a rebuild would delete them).

    Raises:
        StoreError: ``store_path`` does not exist and ``<stem>_files`` beside it is not empty.
    """
    path, folder = Path(store_path), files_folder(store_path)
    if not path.exists() and folder.is_dir() and any(folder.iterdir()):
        raise StoreError(f"{folder} already holds files of another store named {path.stem}.* (or of a deleted "
                         f"one); give the new store another name, or remove that folder first")


def remove_store_files(path: str | Path) -> None:
    """Delete a store file, its write-ahead log and its files folder (``Store.folder``), where present."""
    import shutil

    path = Path(path)
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
    shutil.rmtree(files_folder(path), ignore_errors=True)


def open_store(path: str | Path, read_only: bool = False, busy_timeout: float = 10.0) -> Store:
    """Open (and create/migrate when writable) the store at ``path``; see :class:`Store`."""
    return Store(path, read_only=read_only, busy_timeout=busy_timeout)
