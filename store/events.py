"""The store's own audit trail: model registrations, retirements, reinstatements, relocations and removals, scan
relocations and removals (append-only).

Label decisions have theirs in ``label_events``; this table keeps what a removal deletes from the
other tables, so that a sample report's model checksum can always be traced to when those weights
came and went, and who removed them. Event ids increase with time but may skip numbers: a change
that is rolled back (an ingest's dry-run registration, a refused removal) has drawn one. No code path
updates or deletes a row.
"""

from __future__ import annotations

import json

import duckdb
import pandas as pd

from store.db import Store
from store.migrations import STORE_ACTIONS

#: what ``store_events.action`` may hold
ACTIONS = STORE_ACTIONS


def record_event(cur: duckdb.DuckDBPyConnection, action: str, subject: str, identity: str,
                 by: str | None = None, detail: dict | None = None) -> None:
    """Append one event inside the caller's transaction (it commits or rolls back with the change)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown store event {action!r} (known: {', '.join(ACTIONS)})")
    cur.execute("INSERT INTO store_events (action, subject, identity, by_user, detail) VALUES (?, ?, ?, ?, ?)",
                [action, subject, identity, by or None, json.dumps(detail or {}, sort_keys=True)])


def detail_text(detail: dict) -> str:
    """An event's details in words: the folder, the sample, then the rows a removal deleted; a relocation's
    ``X`` and ``previous X`` as ``X OLD -> NEW``."""
    parts = []
    for k, v in detail.items():
        if k == "deleted" or v is None or (k.startswith("previous ") and k[len("previous "):] in detail):
            continue
        previous = detail.get(f"previous {k}")
        parts.append(f"{k} {v}" if previous is None else f"{k} {previous} -> {v}")
    deleted = detail.get("deleted") or {}
    if deleted:
        parts.append("deleted " + ", ".join(f"{n} {t}" for t, n in deleted.items()))
    return "; ".join(parts)


def store_events(store: Store, subject: str | None = None) -> pd.DataFrame:
    """Every store event, oldest first (only ``subject``'s when given).

    Returns:
        DataFrame ``event_id, created_at, action, subject, identity, by_user, detail (dict)``.
    """
    df = store.query("SELECT id AS event_id, created_at, action, subject, identity, by_user, detail "
                     "FROM store_events WHERE ? IS NULL OR subject = ? ORDER BY id", [subject, subject])
    df["detail"] = [json.loads(v) if v else {} for v in df["detail"]]
    return df
