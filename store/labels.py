"""Curated labels: an append-only log of reviewers' decisions, and the current label view.

Every decision is a new row in ``label_events`` (value, previous value, reviewer, time,
note). Nothing here updates or deletes an event: an undo is a new event that restores
the previous value. The current curated label of a nucleus is the latest event
(``curated_labels`` view); ``'unset'`` means "no decision".

Every write is one short transaction through :meth:`store.db.Store.write`: serialised
per store within the process (so ``previous`` is always the value just before the event,
whatever other sessions do at the same moment) and retried on DuckDB conflicts; when
the store stays busy it raises ``StoreError("store busy ...")`` and nothing is saved.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from genuine_core.errors import InputError, StoreError
from store.db import Store
from store.location import genuine_command, has_control_characters

#: accepted decisions -> stored value
DECISIONS = {1: "1", 0: "0", "1": "1", "0": "0", "mna": "1", "non-mna": "0", "exclude": "exclude"}


def normalise_decision(value) -> str:
    """Map 1/0/'mna'/'non-mna'/'exclude' (case-insensitive) to the stored value '1'/'0'/'exclude'.

    Raises:
        InputError: anything else.
    """
    key = value.strip().lower() if isinstance(value, str) else value
    if isinstance(key, bool) or key not in DECISIONS:
        raise InputError(f"a decision is 1 (MNA), 0 (non-MNA) or 'exclude', got {value!r}")
    return DECISIONS[key]


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _check_reviewer(reviewer: str) -> str:
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise InputError("a reviewer name is required for every decision")
    return reviewer


def _current_value(cur, nucleus_id: int) -> str:
    row = cur.execute(
        "SELECT value FROM label_events WHERE nucleus_id = ? ORDER BY id DESC LIMIT 1", [nucleus_id]
    ).fetchone()
    return row[0] if row else "unset"


def _insert(cur, nucleus_id: int, value: str, previous: str, reviewer: str, note: str | None,
            undoes: int | None, blind: bool = False) -> int:
    """Append one event row (the one statement in the code base that writes events); return its id. ``blind``
    is stored as TRUE, or NULL (not blind)."""
    row = cur.execute(
        "INSERT INTO label_events (nucleus_id, value, previous, reviewer, created_at, note, undoes, blind) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        [nucleus_id, value, previous, reviewer, _now(), note, undoes, True if blind else None],
    ).fetchone()
    return int(row[0])


def _undo(cur, event_id: int, reviewer: str, note: str | None) -> int:
    """Inside a write: append the event reverting ``event_id`` (must be its nucleus' latest)."""
    ev = cur.execute("SELECT nucleus_id, value, previous FROM label_events WHERE id = ?", [event_id]).fetchone()
    if ev is None:
        raise StoreError(f"no label event with id {event_id}")
    nucleus_id, value, previous = ev
    latest, who = cur.execute("SELECT id, reviewer FROM label_events WHERE nucleus_id = ? ORDER BY id DESC LIMIT 1",
                              [nucleus_id]).fetchone()
    if latest != event_id:
        raise StoreError(f"nucleus {nucleus_id} was decided again since (event {latest} by {who}); "
                         "undo that decision instead")
    return _insert(cur, nucleus_id, previous, value, reviewer, note or f"undo of event {event_id}", event_id)


class DecidedMeanwhile(StoreError):
    """The nucleus' current decision is not the one the reviewer saw: someone decided it since."""


def reviewer_spelled_sql(column: str = "reviewer") -> str:
    """SQL of a stored reviewer name as typed, each run of whitespace one space, trimmed ('' for none); its
    ``lower()`` is the name reviewers are told apart by ('ann' and 'Ann ' are one reviewer)."""
    return f"trim(regexp_replace(coalesce({column}, ''), '\\s+', ' ', 'g'))"


#: how the note of each event :func:`exclude_scan` appends begins: ``store.agreement`` reads such an event as a
#: data-quality decision about the scan, not a curator's review of the nucleus (reserved: no other note may begin so)
SCAN_EXCLUSION_MARK = "[whole scan excluded]"
#: the note the Ingest page gave those events before the mark existed (2026-12-04 to 12-05), read the same way
LEGACY_INGEST_NOTE = "the whole scan excluded on the Ingest page"


def _refuse_escapes(note: str | None) -> None:
    """Refuse a note holding control characters other than line breaks and tabs (a terminal escape would
    recolour or forge the lines of a printed listing, e.g. `genuine store agreement --conflicts`)."""
    if note is not None and has_control_characters(" ".join(note.split())):
        raise InputError(f"a note must not hold control characters (escapes), got {note!r}")


def _check_note(note: str | None) -> str | None:
    if note is not None and note.strip().startswith(SCAN_EXCLUSION_MARK):
        raise InputError(f"a note must not begin with {SCAN_EXCLUSION_MARK!r}: it marks the events of "
                         "`genuine store exclude-scan`")
    _refuse_escapes(note)
    return note


#: stored values as reviewers read them
VALUE_NAMES = {"1": "MNA", "0": "non-MNA", "exclude": "excluded", "unset": "no decision"}


def record_label_event(store: Store, nucleus_id: int, value, reviewer: str, note: str | None = None,
                       seen: str | None = None, blind: bool = False) -> int:
    """Append a reviewer's decision for one nucleus; return the event id.

    Args:
        nucleus_id: global nucleus id.
        value: 1 / 0 / 'mna' / 'non-mna' / 'exclude'.
        reviewer: who decided (required).
        note: optional free text.
        seen: the nucleus' value ('0', '1', 'exclude' or 'unset') the reviewer saw when deciding;
            when given and another decision came since, nothing is written.
        blind: decided in blind review, other reviewers' decisions on the nucleus hidden: an independent read,
            which ``store.agreement`` counts as a review even on a nucleus in conflict (not as an adjudication).

    Raises:
        InputError: bad value or empty reviewer. StoreError: no such nucleus.
        DecidedMeanwhile: ``seen`` is not the current value any more.
    """
    stored = normalise_decision(value)
    reviewer, note = _check_reviewer(reviewer), _check_note(note)
    nucleus_id = int(nucleus_id)
    if seen is not None and seen != "unset":
        seen = normalise_decision(seen)

    def append(cur) -> int:
        if not cur.execute("SELECT 1 FROM nuclei WHERE id = ?", [nucleus_id]).fetchone():
            raise StoreError(f"no nucleus with id {nucleus_id}")
        current = _current_value(cur, nucleus_id)
        if seen is not None and current != seen:
            last = cur.execute("SELECT id, reviewer FROM label_events WHERE nucleus_id = ? ORDER BY id DESC LIMIT 1",
                               [nucleus_id]).fetchone()
            by = f" by {last[1]} (event {last[0]})" if last else ""
            raise DecidedMeanwhile(f"nucleus {nucleus_id} was decided meanwhile: {VALUE_NAMES[current]}{by}; "
                                   "nothing was saved. Look at it again, then decide.")
        return _insert(cur, nucleus_id, stored, current, reviewer, note, None, blind)

    return store.write(append)


def exclude_scan(store: Store, scan_id: int, reviewer: str, note: str | None = None) -> int:
    """Exclude every nucleus of one scan not excluded yet: one event each, in one transaction.

    The way to take a scan out of every call (e.g. read with the wrong channel map) once curators
    decided on its nuclei, when ``store.scans.remove_scan`` refuses it: the audit trail stays, and
    each exclusion can be undone like any decision. Each event's note begins with :data:`SCAN_EXCLUSION_MARK`
    and names the scan (then ``note``): ``store.agreement`` counts it as no review and lets it settle a
    conflict instead of opening one.

    Returns:
        the number of nuclei excluded now (0 when all already were).

    Raises:
        InputError: empty reviewer. StoreError: no such scan.
    """
    reviewer = _check_reviewer(reviewer)
    scan_id = int(scan_id)
    why = " ".join((note or "").split())
    _refuse_escapes(why)

    def append(cur) -> int:
        found = cur.execute("SELECT file_name FROM scans WHERE id = ?", [scan_id]).fetchone()
        if not found:
            raise StoreError(f"no scan with id {scan_id}; list them with: "
                             f"{genuine_command('store scans', store.path)}")
        marked = f"{SCAN_EXCLUSION_MARK} scan {scan_id} ({found[0]})" + (f": {why}" if why else "")
        current = cur.execute(  # curated_labels: each nucleus' latest decision ('unset' ones are not in it)
            "SELECT n.id, coalesce(c.value, 'unset') FROM nuclei n LEFT JOIN curated_labels c ON c.nucleus_id = n.id "
            "WHERE n.scan_id = ? ORDER BY n.id", [scan_id]
        ).fetchall()
        todo = [(nid, value) for nid, value in current if value != "exclude"]
        for nid, value in todo:
            _insert(cur, nid, "exclude", value, reviewer, marked, None)
        return len(todo)

    return store.write(append)


def _standing_scan_exclusion(cur, scan_id: int) -> list[int] | None:
    """Ids of the latest :func:`exclude_scan` run's events on ``scan_id`` that are still their nucleus' latest
    event (not undone, not decided again since); None when the scan was never excluded so."""
    prefix = f"{SCAN_EXCLUSION_MARK} scan {scan_id} ("
    latest = cur.execute(
        "SELECT e.id, e.note FROM label_events e JOIN nuclei n ON n.id = e.nucleus_id "
        "WHERE n.scan_id = ? AND e.value = 'exclude' AND e.undoes IS NULL AND starts_with(coalesce(e.note, ''), ?) "
        "ORDER BY e.id DESC LIMIT 1", [scan_id, prefix]).fetchone()
    if latest is None:
        return None
    last_id, note = latest  # the run: one transaction's events with this note, nothing else between them
    start = cur.execute("SELECT coalesce(max(id), -1) FROM label_events WHERE id < ? AND NOT "
                        "(value = 'exclude' AND undoes IS NULL AND coalesce(note, '') = ?)", [last_id, note]
                        ).fetchone()[0]
    rows = cur.execute(
        "SELECT e.id FROM label_events e WHERE e.id > ? AND e.id <= ? AND e.note = ? AND e.value = 'exclude' "
        "AND e.undoes IS NULL AND e.id = (SELECT max(x.id) FROM label_events x WHERE x.nucleus_id = e.nucleus_id) "
        "ORDER BY e.id", [start, last_id, note]).fetchall()
    return [int(r[0]) for r in rows]


def scan_exclusion_standing(store: Store, scan_id: int) -> int:
    """How many nuclei :func:`unexclude_scan` would return to their earlier decision now (0: none)."""
    return len(_standing_scan_exclusion(store.cursor(), int(scan_id)) or [])


def unexclude_scan(store: Store, scan_id: int, reviewer: str) -> int:
    """Undo the latest :func:`exclude_scan` of one scan in one transaction: an undo event (by ``reviewer``) for
    each of its events still standing; nuclei decided again or undone since are left as they are.

    Returns:
        the number of nuclei returned to their decision of before the exclusion.

    Raises:
        InputError: empty reviewer. StoreError: no such scan, or the scan is not excluded (by exclude-scan).
    """
    reviewer = _check_reviewer(reviewer)
    scan_id = int(scan_id)

    def revert(cur) -> int:
        if not cur.execute("SELECT 1 FROM scans WHERE id = ?", [scan_id]).fetchone():
            raise StoreError(f"no scan with id {scan_id}; list them with: "
                             f"{genuine_command('store scans', store.path)}")
        events = _standing_scan_exclusion(cur, scan_id)
        if events is None:
            raise StoreError(f"scan {scan_id} is not excluded: its nuclei were never excluded with the whole scan "
                             "(nothing was changed)")
        if not events:
            raise StoreError(f"scan {scan_id} is not excluded: its latest whole-scan exclusion was undone or "
                             "decided over on every nucleus since (nothing was changed)")
        for eid in events:
            _undo(cur, eid, reviewer, f"undo of event {eid}: the exclusion of scan {scan_id} undone")
        return len(events)

    return store.write(revert)


def undo_event(store: Store, event_id: int, reviewer: str, note: str | None = None) -> int:
    """Revert one event by appending a new event that restores its previous value.

    Only the nucleus' latest decision can be undone (a later decision by anyone would
    otherwise be silently overwritten).

    Returns:
        The id of the new (undo) event.

    Raises:
        StoreError: no such event, or the nucleus has been decided again since.
    """
    reviewer = _check_reviewer(reviewer)
    return store.write(lambda cur: _undo(cur, int(event_id), reviewer, note))


def undo_last(store: Store, reviewer: str) -> int | None:
    """Undo this reviewer's most recent decision that is still the nucleus' current one.

    Finding the decision and reverting it happen in one write, so a decision another
    session makes meanwhile is never overwritten.

    Returns:
        The undo event's id, or None when the reviewer has nothing left to undo.
    """
    reviewer = _check_reviewer(reviewer)

    def revert(cur) -> int | None:
        last = cur.execute(
            """
            SELECT e.id FROM label_events e
            WHERE e.reviewer = ? AND e.undoes IS NULL
              AND e.id = (SELECT max(id) FROM label_events x WHERE x.nucleus_id = e.nucleus_id)
            ORDER BY e.id DESC LIMIT 1
            """,
            [reviewer],
        ).fetchone()
        return None if last is None else _undo(cur, int(last[0]), reviewer, None)

    return store.write(revert)


def overridden_latest(store: Store, reviewer: str) -> tuple[int, str] | None:
    """``(nucleus_id, reviewer)`` when this reviewer's latest decision (not undone) has been
    replaced since by someone else's, else None; :func:`undo_last` then reverts an earlier one."""
    row = store.query(
        """
        SELECT e.nucleus_id, (SELECT x.reviewer FROM label_events x WHERE x.nucleus_id = e.nucleus_id
                              ORDER BY x.id DESC LIMIT 1) AS latest_by,
               (SELECT max(x.id) FROM label_events x WHERE x.nucleus_id = e.nucleus_id) AS latest_id, e.id
        FROM label_events e
        WHERE e.reviewer = ? AND e.undoes IS NULL AND NOT EXISTS (SELECT 1 FROM label_events u WHERE u.undoes = e.id)
        ORDER BY e.id DESC LIMIT 1
        """, [_check_reviewer(reviewer)])
    if row.empty or int(row.at[0, "latest_id"]) == int(row.at[0, "id"]):
        return None
    return int(row.at[0, "nucleus_id"]), str(row.at[0, "latest_by"])


def current_labels(store: Store, nucleus_ids=None) -> pd.DataFrame:
    """Current curated labels: ``nucleus_id, value, label (1/0/NA), excluded, reviewer, created_at, event_id``.

    Args:
        nucleus_ids: restrict to these ids (None: all curated nuclei).
    """
    if nucleus_ids is None:
        return store.query("SELECT * FROM curated_labels ORDER BY nucleus_id")
    ids = pd.DataFrame({"nucleus_id": pd.Series(list(nucleus_ids), dtype="int64")})
    with store.frames(ids_in=ids):
        return store.query("SELECT c.* FROM curated_labels c JOIN ids_in USING (nucleus_id) ORDER BY nucleus_id")


def label_event(store: Store, event_id: int) -> dict:
    """One label event: ``{"id", "nucleus_id", "value", "previous", "reviewer", "undoes"}``.

    Raises:
        StoreError: no event with that id.
    """
    df = store.query("SELECT id, nucleus_id, value, previous, reviewer, undoes FROM label_events WHERE id = ?",
                     [int(event_id)])
    if df.empty:
        raise StoreError(f"no label event with id {event_id}")
    return df.iloc[0].to_dict()


def audit_trail(store: Store, since: datetime | None = None, reviewer: str | None = None,
                latest: int | None = None) -> pd.DataFrame:
    """Every label event with where the nucleus comes from, oldest first.

    Args:
        since: only events created at or after this time. reviewer: only this reviewer's events.
        latest: only the latest this many events (of those), read by the query, not cut afterwards.

    Returns:
        DataFrame ``event_id, created_at, reviewer, nucleus_id, sample, scan_file, scan_sha256,
        mask_label, previous, value, note, undoes, blind`` (``blind``: decided in blind review).
    """
    if latest is not None and latest < 0:
        raise ValueError(f"latest must be >= 0, got {latest}")
    events = ("SELECT * FROM label_events WHERE ($since IS NULL OR created_at >= $since) "
              "AND ($reviewer IS NULL OR reviewer = $reviewer)")
    if latest is not None:
        events += " ORDER BY id DESC LIMIT $latest"
    return store.query(
        f"""
        SELECT e.id AS event_id, e.created_at, e.reviewer, e.nucleus_id, s.name AS sample,
               c.file_name AS scan_file, c.sha256 AS scan_sha256, n.mask_label,
               e.previous, e.value, e.note, e.undoes, coalesce(e.blind, false) AS blind
        FROM ({events}) e
        LEFT JOIN nuclei n ON n.id = e.nucleus_id
        LEFT JOIN scans c ON c.id = n.scan_id
        LEFT JOIN samples s ON s.id = c.sample_id
        ORDER BY e.id
        """,
        {"since": since, "reviewer": reviewer, **({} if latest is None else {"latest": int(latest)})},
    )


def count_current_labels(store: Store) -> int:
    """How many nuclei have a current curated decision (exclusions included)."""
    return int(store.scalar("SELECT count(*) FROM curated_labels"))
