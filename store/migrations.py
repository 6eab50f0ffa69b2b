"""Schema versions and the steps between them.

``schema_version`` holds one row per applied step. Version 1 is ``schema.sql``; a
later change appends ``(version, note, sql)`` to :data:`STEPS` (e.g. an
``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``), and opening an older store for writing
applies the missing steps in order, each in its own transaction.

Version 1 had two layouts: stores written before the auto/true labels became nucleus columns
(GENUINE of 2026-11-23, before commit 6aeb0cd) keep them in a ``labels`` table and lack
``review_stats``. :func:`early_layout` finds such a store (at any version: earlier releases applied the
later steps to it) and :func:`migrate` converts it first (:func:`_convert_early_layout`).
"""

from __future__ import annotations

import contextlib
import logging
from importlib import resources

import duckdb

from genuine_core.errors import StoreError
from genuine_core.rules import SIGN_OUT_CALLS

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
    -- the models registered before the log began: their registration, at the time the models table recorded
    INSERT INTO store_events (created_at, action, subject, identity, by_user, detail)
    SELECT m.registered_at, 'register model', m.name, m.checksum, NULL,
           json_object('folder', m.folder, 'kind', m.kind, 'preset', m.preset,
                       'recorded', 'by schema step 3: registered before the event log')::VARCHAR
    FROM models m
    WHERE NOT EXISTS (SELECT 1 FROM store_events e
                      WHERE e.action = 'register model' AND e.subject = m.name AND e.identity = m.checksum)
    ORDER BY m.id;
    """


def _store_events_with_actions_sql(actions: tuple[str, ...]) -> str:
    # DuckDB cannot change a CHECK in place: the log is copied, rows and ids as they were, into a new table
    # whose CHECK allows ``actions`` (the id sequence goes on)
    allowed = ", ".join(f"'{a}'" for a in actions)
    return f"""
    CREATE TEMP TABLE store_events_copy AS SELECT * FROM store_events;
    DROP TABLE store_events;
    CREATE TABLE store_events (
        id         BIGINT PRIMARY KEY DEFAULT nextval('store_event_ids'),
        created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        action     VARCHAR NOT NULL CHECK (action IN ({allowed})),
        subject    VARCHAR NOT NULL,
        identity   VARCHAR NOT NULL,
        by_user    VARCHAR,
        detail     VARCHAR
    );
    INSERT INTO store_events SELECT * FROM store_events_copy ORDER BY id;
    DROP TABLE store_events_copy;
    """


def _retired_models_sql() -> str:
    # a retired model keeps what it stored but scores nothing new; store_events gains its two actions
    return """
    ALTER TABLE models ADD COLUMN IF NOT EXISTS retired_at TIMESTAMP;  -- NULL: active
    ALTER TABLE models ADD COLUMN IF NOT EXISTS retired_by VARCHAR;
    """ + _store_events_with_actions_sql(_STEP_4_ACTIONS)


def _mc_samples_sql() -> str:
    # how many MC-dropout passes each scoring averaged over (0: the uncertainty is an entropy); NULL: scored
    # before it was recorded (the default then was 10, but `genuine ingest --mc-samples N` could change it)
    return "ALTER TABLE scan_models ADD COLUMN IF NOT EXISTS mc_samples INTEGER;"


def _sign_outs_sql() -> str:
    # APPEND-ONLY, like label_events: a pathologist's final call on a sample, with the numbers it was made on.
    # The latest row of a sample is in force; 'withdraw' leaves the sample not signed out (history kept).
    return f"""
    CREATE SEQUENCE IF NOT EXISTS sign_out_ids START 1;
    CREATE TABLE IF NOT EXISTS sign_outs (
        id                BIGINT PRIMARY KEY DEFAULT nextval('sign_out_ids'),
        created_at        TIMESTAMP NOT NULL DEFAULT current_timestamp,
        sample_id         BIGINT NOT NULL,
        action            VARCHAR NOT NULL CHECK (action IN ('sign out', 'withdraw')),
        call              VARCHAR CHECK (call IS NULL OR call IN ({SIGN_OUT_CALLS_SQL})),  -- NULL: withdraw
        model             VARCHAR,   -- the model whose numbers were shown (name, and its weights checksum)
        model_checksum    VARCHAR,
        rule_call         VARCHAR,   -- that model's rule call then (genuine_core.rules.sample_call)
        n_scored          INTEGER,
        n_mna             INTEGER,
        mna_pct           DOUBLE,
        ci_low_pct        DOUBLE,
        ci_high_pct       DOUBLE,
        corrected_pct     DOUBLE,    -- NULL: no correction
        corrected_low_pct DOUBLE,
        corrected_high_pct DOUBLE,
        by_user           VARCHAR NOT NULL CHECK (length(trim(by_user)) > 0),
        comment           VARCHAR,
        supersedes        BIGINT     -- the sign-out this row replaces or withdraws (NULL: the sample's first)
    );
    """


def _trusted_review_stats_sql() -> str:
    # review_stats over the trusted models only (active, validation not weak: store.review_stats), with a row for
    # every nucleus with a prediction: its aggregates are NULL where no trusted model scored it (n_models 0,
    # spread 0). The rows are derived: _AFTER_STEP rebuilds them all, so a model retired or weak now leaves them
    return "".join(f"ALTER TABLE review_stats ALTER COLUMN {c} DROP NOT NULL;\n"
                   for c in ("mean_prob", "min_call", "max_call", "min_margin"))


def _pixel_sha256_sql() -> str:
    # the decoded pixels' fingerprint (genuine_core.io.pixel_fingerprint): the same image in another file format is
    # a duplicate. NULL: stored before it was recorded; store.fingerprints reads the file when a scan of the same
    # size is ingested (a file no longer found stays NULL; one unreadable or changed gets '', read once)
    return "ALTER TABLE scans ADD COLUMN IF NOT EXISTS pixel_sha256 VARCHAR;"


def _blind_label_events_sql() -> str:
    # label_events stay append-only: a new nullable column, written with each new event. TRUE: the reviewer decided
    # in blind review, other reviewers' decisions on the nucleus hidden (an independent read, store.agreement);
    # NULL: not blind, or recorded before it was (every older event was made seeing the others' decisions)
    return "ALTER TABLE label_events ADD COLUMN IF NOT EXISTS blind BOOLEAN;"


def _relocation_events_sql() -> str:
    # a changed scans.path or models.folder is a change to the record: who moved it where, from where
    return _store_events_with_actions_sql(STORE_ACTIONS)


#: the calls ``sign_outs.call`` may hold (a later release adding one needs a schema step, as step 4 did)
SIGN_OUT_CALLS_SQL = ", ".join(f"'{c}'" for c in SIGN_OUT_CALLS)

#: what ``store_events.action`` could hold from schema step 4 to step 9
_STEP_4_ACTIONS = ("register model", "remove model", "remove scan", "retire model", "reinstate model")
#: what ``store_events.action`` may hold from schema step 10 on (``store.events.ACTIONS``): a later release adding
#: one needs a schema step, as step 10 did
STORE_ACTIONS = _STEP_4_ACTIONS + ("relocate model", "relocate scan")

#: (version, note, SQL script); scripts must be idempotent.
STEPS: list[tuple[int, str, callable]] = [
    (1, "initial schema", _schema_sql),
    (2, "scans.patch_normalisation: how the stored patches were normalised", _patch_normalisation_sql),
    (3, "store_events: model registrations and removals, scan removals", _store_events_sql),
    (4, "models.retired_at/retired_by; store_events: retire and reinstate model", _retired_models_sql),
    (5, "scan_models.mc_samples: the MC-dropout passes of each scoring", _mc_samples_sql),
    (6, "sign_outs: pathologists' sign-out of samples (append-only)", _sign_outs_sql),
    (7, "review_stats over the trusted models (active, validation not weak), rebuilt", _trusted_review_stats_sql),
    (8, "scans.pixel_sha256: the decoded pixels' fingerprint (same image, other file = duplicate)", _pixel_sha256_sql),
    (9, "label_events.blind: the decision was made in blind review (an independent read)", _blind_label_events_sql),
    (10, "store_events: relocate model and relocate scan (a folder or scan file path changed)",
     _relocation_events_sql),
]


def _rebuild_review_stats(conn: duckdb.DuckDBPyConnection) -> None:
    from store.review_stats import rebuild_all

    rebuild_all(conn)


#: Python run after a step's SQL, in its transaction: version -> function of the connection
_AFTER_STEP = {7: _rebuild_review_stats}
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


def early_layout(conn: duckdb.DuckDBPyConnection) -> bool:
    """True for a store whose auto/true labels are still rows of the early version-1 ``labels`` table."""
    return bool(conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'labels' "
                             "AND table_type = 'BASE TABLE'").fetchone()[0])


def outdated(conn: duckdb.DuckDBPyConnection, version: int) -> bool:
    """True when :func:`migrate` has work to do on a store at ``version`` (an older version, or the early layout)."""
    return version < LATEST or (version >= 1 and early_layout(conn))


#: the early version-1 layout's conversion, one idempotent statement each (the labels table is read, not changed)
_EARLY_COLUMNS = [
    # stores written before 2026-11-23's "uncertainty method per model" lack it
    "ALTER TABLE models ADD COLUMN IF NOT EXISTS uncertainty_method VARCHAR DEFAULT 'unknown'",
    "ALTER TABLE scans ADD COLUMN IF NOT EXISTS label_source VARCHAR",
    "ALTER TABLE nuclei ADD COLUMN IF NOT EXISTS auto_label TINYINT",
    "ALTER TABLE nuclei ADD COLUMN IF NOT EXISTS true_label TINYINT",
    "UPDATE nuclei SET auto_label = l.label FROM labels l WHERE l.nucleus_id = nuclei.id AND l.kind = 'auto'",
    "UPDATE nuclei SET true_label = l.label FROM labels l WHERE l.nucleus_id = nuclei.id AND l.kind = 'truth'",
    # one source per scan, as ingest records it now (a benchmark scan's unmatched nuclei: 'benchmark,genotype')
    "UPDATE scans SET label_source = s.source FROM (SELECT n.scan_id, "
    "string_agg(DISTINCT l.source, ',' ORDER BY l.source) AS source FROM labels l JOIN nuclei n ON n.id = l.nucleus_id "
    "GROUP BY n.scan_id) s WHERE s.scan_id = scans.id",
]
#: label rows of nuclei that are not stored: kept in a table of their own rather than dropped with ``labels``
_UNMATCHED = ("FROM labels l LEFT JOIN nuclei n ON n.id = l.nucleus_id WHERE n.id IS NULL")


def _convert_early_layout(conn: duckdb.DuckDBPyConnection) -> None:
    """In one transaction: the ``labels`` table's rows become ``nuclei.auto_label``/``true_label`` and
    ``scans.label_source``, checked row by row before the table gives way to the ``labels`` view; then the
    version-1 schema (``review_stats``, views) and the review statistics of every scan.

    Raises:
        StoreError: a label row did not arrive in its nucleus (nothing was changed).
    """
    from store.review_stats import rebuild_review_stats

    logger.info("store: converting the early version-1 layout (labels table -> nucleus columns, review_stats)")
    conn.execute("BEGIN TRANSACTION")
    try:
        for sql in _EARLY_COLUMNS:
            conn.execute(sql)
        lost = conn.execute("SELECT count(*) FROM labels l JOIN nuclei n ON n.id = l.nucleus_id WHERE "
                            "(CASE l.kind WHEN 'auto' THEN n.auto_label ELSE n.true_label END) IS DISTINCT FROM l.label"
                            ).fetchone()[0]
        if lost:
            raise StoreError(f"converting the early version-1 labels table: {lost} rows did not arrive in their "
                             "nuclei; nothing was changed")
        unmatched = conn.execute(f"SELECT count(*) {_UNMATCHED}").fetchone()[0]
        if unmatched:
            conn.execute(f"CREATE TABLE labels_unmatched AS SELECT l.* {_UNMATCHED}")
        conn.execute("DROP TABLE labels")
        conn.execute(_schema_sql())
        conn.execute(_trusted_review_stats_sql())  # as from step 7, whatever version the store records
        rebuild_review_stats(conn, [int(r[0]) for r in conn.execute("SELECT id FROM scans").fetchall()])
        note = "early version-1 layout converted: labels table -> nucleus columns, review_stats built"
        if unmatched:
            note += f"; {unmatched} label rows of nuclei not stored kept in labels_unmatched"
        conn.execute("INSERT INTO schema_version (version, note) VALUES (1, ?)", [note])
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            conn.execute("ROLLBACK")
        raise


def migrate(conn: duckdb.DuckDBPyConnection) -> int:
    """Convert an early version-1 layout, then apply every missing step; return the version reached."""
    version = current_version(conn)
    if version >= 1 and early_layout(conn):
        _convert_early_layout(conn)
    for step, note, script in STEPS:
        if step <= version:
            continue
        logger.info("store: applying schema step %d (%s)", step, note)
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(script())
            if step in _AFTER_STEP:
                _AFTER_STEP[step](conn)
            conn.execute("INSERT INTO schema_version (version, note) VALUES (?, ?)", [step, note])
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # a failed COMMIT ended the transaction already
                conn.execute("ROLLBACK")
            raise
        version = step
    return version
