"""Schema versions and the steps between them.

``schema_version`` holds one row per applied step. Version 1 is ``schema.sql``; a
later change appends ``(version, note, sql)`` to :data:`STEPS` (e.g. an
``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``), and opening an older store for writing
applies the missing steps in order, each in its own transaction.
"""

from __future__ import annotations

import contextlib
import logging
from importlib import resources

import duckdb

logger = logging.getLogger(__name__)


def _schema_sql() -> str:
    return resources.files("store").joinpath("schema.sql").read_text(encoding="utf-8")


def _patch_normalisation_sql() -> str:
    # stores written before it was recorded hold percentile-normalised patches
    return "ALTER TABLE scans ADD COLUMN IF NOT EXISTS patch_normalisation VARCHAR DEFAULT 'percentile';"


def _store_events_sql() -> str:
    # APPEND-ONLY, like label_events: who registered or removed a model, or removed a scan. A removal
    # deletes the rows that said so; this table keeps the record (which weights produced earlier calls).
    return """
    CREATE SEQUENCE IF NOT EXISTS store_event_ids START 1;
    CREATE TABLE IF NOT EXISTS store_events (
        id         BIGINT PRIMARY KEY DEFAULT nextval('store_event_ids'),
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        action     VARCHAR NOT NULL CHECK (action IN ('register model', 'remove model', 'remove scan')),
        subject    VARCHAR NOT NULL,  -- model name, or scan file name
        identity   VARCHAR NOT NULL,  -- model weights checksum, or scan sha256
        by_user    VARCHAR,           -- who, when known (the dashboard's reviewer, a CLI's --by or login)
        detail     VARCHAR            -- JSON: e.g. the model's folder, or the rows a removal deleted
    );
    """


#: (version, note, SQL script); scripts must be idempotent.
STEPS: list[tuple[int, str, callable]] = [
    (1, "initial schema", _schema_sql),
    (2, "scans.patch_normalisation: how the stored patches were normalised", _patch_normalisation_sql),
    (3, "store_events: model registrations and removals, scan removals", _store_events_sql),
]
LATEST = STEPS[-1][0]


def current_version(conn: duckdb.DuckDBPyConnection) -> int:
    """Highest applied version (0 for an empty database)."""
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()[0]
    if not exists:
        return 0
    v = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    return int(v or 0)


def other_tables(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Tables, views and sequences of a database whose :func:`current_version` is 0 (sorted): a DuckDB file
    another program wrote. Empty for an empty database (new, or its creation interrupted)."""
    rows = conn.execute("SELECT table_name FROM information_schema.tables UNION ALL "
                        "SELECT sequence_name FROM duckdb_sequences() ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def migrate(conn: duckdb.DuckDBPyConnection) -> int:
    """Apply every missing step; return the version reached."""
    version = current_version(conn)
    for step, note, script in STEPS:
        if step <= version:
            continue
        logger.info("store: applying schema step %d (%s)", step, note)
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(script())
            conn.execute("INSERT INTO schema_version (version, note) VALUES (?, ?)", [step, note])
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # a failed COMMIT ended the transaction already
                conn.execute("ROLLBACK")
            raise
        version = step
    return version
