"""Pathologists' sign-out of samples: the final call, who made it, when, on which model and numbers.

``sign_outs`` (schema step 6) is APPEND-ONLY, like ``label_events``: no code path updates or deletes a row.
A sample's latest row is in force: a new sign-out amends (supersedes) the one before, and a 'withdraw' row
leaves the sample not signed out. Each sign-out keeps the chosen model's numbers as they were, so
:func:`changes` can tell when new scans, rescoring or curators' exclusions changed them since.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pandas as pd

from genuine_core.errors import InputError, StoreError
from genuine_core.percent_text import pct_text
from genuine_core.rules import SIGN_OUT_CALLS
from store import registry, samples, summary
from store.db import Store
from store.location import has_control_characters

#: what a pathologist may sign out: one of the rule calls, or 'not assessable'
CALLS = SIGN_OUT_CALLS
#: the chosen model's summary numbers a sign-out keeps (``store.summary.SUMMARY_COLUMNS``)
NUMBERS = ("n_scored", "n_mna", "mna_pct", "ci_low_pct", "ci_high_pct", "corrected_pct", "corrected_low_pct",
           "corrected_high_pct")
_INSERT_SQL = ("INSERT INTO sign_outs (created_at, sample_id, action, call, model, model_checksum, rule_call, "
               "n_scored, n_mna, mna_pct, ci_low_pct, ci_high_pct, corrected_pct, corrected_low_pct, "
               "corrected_high_pct, by_user, comment, supersedes) "
               "VALUES (?, ?, 'sign out', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id")
_HISTORY_SQL = """
SELECT o.id, o.created_at, s.name AS sample, o.action, o.call, o.model, o.model_checksum, o.rule_call,
       o.n_scored, o.n_mna, o.mna_pct, o.ci_low_pct, o.ci_high_pct, o.corrected_pct, o.corrected_low_pct,
       o.corrected_high_pct, o.by_user, o.comment, o.supersedes
FROM sign_outs o JOIN samples s ON s.id = o.sample_id
WHERE ? IS NULL OR s.name = ?
ORDER BY o.id
"""

#: scans ingested after ``?`` (the oldest sign-out in force), each with its nuclei not excluded and the models
#: that scored it
_SCANS_SINCE_SQL = """
WITH late AS (SELECT c.id, c.sample_id, c.ingested_at FROM scans c
              WHERE c.ingested_at > ? AND c.sample_id IN (SELECT sample_id FROM sign_outs))
SELECT s.name AS sample, l.id AS scan_id, l.ingested_at,
       (SELECT count(*) FROM nuclei n WHERE n.scan_id = l.id AND n.id NOT IN (
            SELECT nucleus_id FROM curated_labels WHERE excluded)) AS n_left,
       (SELECT list(m.name) FROM scan_models sm JOIN models m ON m.id = sm.model_id
        WHERE sm.scan_id = l.id) AS models
FROM late l JOIN samples s ON s.id = l.sample_id
ORDER BY l.id
"""

#: (scans, nuclei not excluded) of sample ``$sample`` that model ``$model`` did not score
_UNSCORED_SQL = """
SELECT count(*) AS n_scans, coalesce(sum(n_left), 0) AS n_nuclei FROM (
    SELECT (SELECT count(*) FROM nuclei n WHERE n.scan_id = c.id AND n.id NOT IN (
                SELECT nucleus_id FROM curated_labels WHERE excluded)) AS n_left
    FROM scans c JOIN samples s ON s.id = c.sample_id
    WHERE s.name = $sample AND c.id NOT IN (
        SELECT sm.scan_id FROM scan_models sm JOIN models m ON m.id = sm.model_id WHERE m.name = $model)
) WHERE n_left > 0
"""


def call_name(text: str) -> str:
    """The sign-out call ``text`` names (any case, e.g. 'non-mna').

    Raises:
        InputError: not one of :data:`CALLS`.
    """
    wanted = " ".join(str(text or "").split()).lower()
    for call in CALLS:
        if call.lower() == wanted:
            return call
    raise InputError(f"unknown call {text!r}; a sign-out call is one of: {', '.join(CALLS)}")


def _person(by: str | None) -> str:
    name = (by or "").strip()
    if not name:
        raise InputError("a sign-out needs the pathologist's name (empty reviewer name)")
    if has_control_characters(name):
        raise InputError("the pathologist's name must not hold control characters (newlines, escapes)")
    return name


def _comment(text: str | None) -> str | None:
    """A comment on one line (line breaks and tabs become spaces; None when empty).

    Raises:
        InputError: other control characters (a terminal escape would forge lines of a printed listing).
    """
    text = " ".join((text or "").split())
    if has_control_characters(text):
        raise InputError("a sign-out comment must not hold control characters (escapes)")
    return text or None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _current_id(store: Store, sample_id: int) -> int | None:
    """Id of the sample's sign-out in force (None: never signed out, or withdrawn)."""
    row = store.cursor().execute("SELECT id, action FROM sign_outs WHERE sample_id = ? ORDER BY id DESC LIMIT 1",
                                 [sample_id]).fetchone()
    return int(row[0]) if row and row[1] == "sign out" else None


def model_numbers(store: Store, sample: str, model: str) -> pd.Series:
    """The summary row (``store.summary``) of ``model`` for ``sample``.

    Raises:
        StoreError: no such model, or it has no call for the sample.
    """
    known = registry.list_models(store)["name"].tolist()
    if model not in known:
        raise StoreError(f"no model named {model!r}; registered: {', '.join(known) or 'none'}")
    rows = summary.sample_summaries(store, sample=sample)
    rows = rows[rows["model"] == model]
    if rows.empty:
        raise StoreError(f"model {model!r} has no call for sample {sample!r} (it scored none of its nuclei, "
                         "or a curator excluded them all); sign out on a model that has")
    return rows.iloc[0]


def unscored(store: Store, sample: str, model: str) -> tuple[int, int]:
    """(scans, their nuclei not excluded) of ``sample`` that ``model`` has not scored (e.g. ingested after it was
    retired): its numbers leave them out, so the sample cannot be signed out on them."""
    row = store.cursor().execute(_UNSCORED_SQL, {"sample": sample, "model": model}).fetchone()
    return int(row[0]), int(row[1])


def sign_out(store: Store, sample: str, call: str, model: str, by: str, comment: str | None = None,
             seen: tuple[int, int] | None = None) -> int:
    """Record ``by``'s final ``call`` on ``sample``, with ``model``'s numbers now; amends an earlier sign-out.

    Args:
        seen: (nuclei scored, MNA nuclei) the pathologist was shown: refused when the store's differ.

    Returns:
        The new sign-out's id.

    Raises:
        InputError: unknown call, or no name. StoreError: unknown sample or model, the model has no call for the
            sample or has not scored all its scans (:func:`unscored`), or its numbers are not the ``seen`` ones.
    """
    call, by, comment = call_name(call), _person(by), _comment(comment)

    def write(cur) -> int:
        sid = samples.sample_id(store, sample)
        row = model_numbers(store, sample, model)
        if seen is not None and (int(row["n_scored"]), int(row["n_mna"])) != tuple(int(v) for v in seen):
            raise StoreError(f"not signed out: {model}'s numbers for {sample!r} changed while you looked "
                             f"({seen[1]} of {seen[0]} nuclei MNA, now {int(row['n_mna'])} of "
                             f"{int(row['n_scored'])}); check them again")
        missed = unscored(store, sample, model)
        if missed[0]:
            raise StoreError(f"not signed out: {model} has not scored {missed[0]} of the sample's scans "
                             f"({missed[1]} nuclei); sign out on a model that scored them all")
        checksum = store.scalar("SELECT checksum FROM models WHERE name = ?", [model])
        values = [None if isinstance(row[c], float) and math.isnan(row[c]) else float(row[c]) for c in NUMBERS]
        values[:2] = [int(row["n_scored"]), int(row["n_mna"])]
        cur.execute(_INSERT_SQL, [_now(), sid, call, model, checksum, str(row["call"]), *values, by, comment,
                                  _current_id(store, sid)])
        return int(cur.fetchone()[0])

    return store.write(write)


def withdraw(store: Store, sample: str, by: str, reason: str) -> int:
    """Withdraw the sample's sign-out in force (it stays in the history); returns the new row's id.

    Raises:
        InputError: no name, or no reason. StoreError: unknown sample, or it is not signed out.
    """
    by, reason = _person(by), _comment(reason)
    if not reason:
        raise InputError("withdrawing a sign-out needs a reason (comment)")

    def write(cur) -> int:
        sid = samples.sample_id(store, sample)
        current = _current_id(store, sid)
        if current is None:
            raise StoreError(f"sample {sample!r} is not signed out: nothing to withdraw")
        cur.execute("INSERT INTO sign_outs (created_at, sample_id, action, by_user, comment, supersedes) "
                    "VALUES (?, ?, 'withdraw', ?, ?, ?) RETURNING id", [_now(), sid, by, reason, current])
        return int(cur.fetchone()[0])

    return store.write(write)


def history(store: Store, sample: str | None = None) -> pd.DataFrame:
    """Every sign-out and withdrawal, oldest first (only ``sample``'s when given).

    Returns:
        DataFrame ``id, created_at, sample, action, call, model, model_checksum, rule_call``, :data:`NUMBERS`,
        ``by_user, comment, supersedes``.

    Raises:
        StoreError: ``sample`` is given and unknown.
    """
    if sample is not None:
        samples.sample_id(store, sample)
    return store.query(_HISTORY_SQL, [sample, sample])


def in_force(store: Store, summaries: pd.DataFrame | None = None, trail: pd.DataFrame | None = None) -> pd.DataFrame:
    """The sign-out in force per signed-out sample (a withdrawn one is left out), with ``changes``: what
    :func:`changes` finds against the numbers now (``summaries``: ``store.summary.sample_summaries``, read
    when not given; ``trail``: the :func:`history` to read it from, every sample's read when not given).

    Returns:
        DataFrame of :func:`history`'s columns plus ``changes`` (list of str), one row per sample, by sample.
    """
    rows = history(store) if trail is None else trail
    if rows.empty:
        return rows.assign(changes=pd.Series(dtype=object))
    rows = rows.groupby("sample", sort=True).tail(1)
    rows = rows[rows["action"] == "sign out"].sort_values("sample").reset_index(drop=True)
    now = summary.sample_summaries(store) if summaries is None else summaries
    now = {(r["sample"], r["model"]): r for r in now.to_dict("records")}
    checksums = dict(zip(*[registry.list_models(store)[c] for c in ("name", "checksum")]))
    late = store.query(_SCANS_SINCE_SQL, [rows["created_at"].min()]) if len(rows) else pd.DataFrame()
    rows["changes"] = [changes(r, now.get((r["sample"], r["model"])), checksums.get(r["model"]),
                               _unscored_since(r, late)) for r in rows.to_dict("records")]
    return rows


def _unscored_since(signed: dict, late: pd.DataFrame) -> tuple[int, int]:
    """(scans, nuclei not excluded) of the sign-out's sample ingested after it that its model did not score
    (``late``: ``_SCANS_SINCE_SQL``): they leave the model's numbers as they were."""
    if late.empty:
        return 0, 0
    mine = late[(late["sample"] == signed["sample"]) & (late["ingested_at"] > signed["created_at"])
                & (late["n_left"] > 0)]
    unscored = [m is None or signed["model"] not in list(m) for m in mine["models"]]
    mine = mine[pd.Series(unscored, index=mine.index, dtype=bool)]
    return len(mine), int(mine["n_left"].sum())


def _differs(a, b) -> bool:
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in (a, b)]
    return missing[0] != missing[1] or (not any(missing) and abs(float(a) - float(b)) > 1e-9)


def changes(signed: dict, now: dict | None, checksum: str | None, unscored: tuple[int, int] = (0, 0)) -> list[str]:
    """What differs between a sign-out's numbers (``signed``, a :func:`history` row) and the model's numbers
    now (``now``, a summary row, None: the model has no call for the sample now; ``checksum``: its weights'
    now, None: not registered; ``unscored``: scans and their nuclei added since that the model did not score).
    Empty when nothing changed."""
    model = signed["model"]
    if checksum is None:
        return [f"model {model} is no longer registered"]
    out = [] if checksum == signed["model_checksum"] else [f"model {model} now has other weights"]
    if unscored[0]:
        out.append(f"{unscored[0]} scan{'s' if unscored[0] > 1 else ''} ({unscored[1]} nuclei) added since, "
                   f"not scored by {model}")
    if now is None:
        return out + [f"{model} has no call for the sample now (no scored nucleus left)"]
    if int(now["n_scored"]) != int(signed["n_scored"]):
        out.append(f"nuclei scored {int(signed['n_scored'])} → {int(now['n_scored'])}")
    if int(now["n_mna"]) != int(signed["n_mna"]) or _differs(now["mna_pct"], signed["mna_pct"]):
        out.append(f"MNA {pct_text(signed['mna_pct'])} % → {pct_text(now['mna_pct'])} %")
    if _differs(now["corrected_pct"], signed["corrected_pct"]):
        out.append(f"corrected {pct_text(signed['corrected_pct'])} % → {pct_text(now['corrected_pct'])} %")
    if str(now["call"]) != str(signed["rule_call"]):
        out.append(f"{model}'s call {signed['rule_call']} → {now['call']}")
    return out


def numbers_text(row: dict) -> str:
    """A sign-out's numbers in words: 'genuine_cpu: 23.3 % MNA, 14 of 60 nuclei, 95 % CI 14.4-35.4 %, corrected
    20.1 %'."""
    corrected = "" if row["corrected_pct"] is None or pd.isna(row["corrected_pct"]) else \
        f", corrected {pct_text(row['corrected_pct'])} %"
    return (f"{row['model']}: {pct_text(row['mna_pct'])} % MNA, {int(row['n_mna'])} of {int(row['n_scored'])} "
            f"nuclei, 95 % CI {pct_text(row['ci_low_pct'])}-{pct_text(row['ci_high_pct'])} %{corrected}")


def call_text(row: dict) -> str:
    """A sign-out's call, naming the model's rule call it overrides when they differ: 'non-MNA (overrides
    genuine_cpu's call: heterogeneous MNA)', else the call alone ('' for a withdrawal, which has none)."""
    call, rule = row.get("call"), row.get("rule_call")
    if not isinstance(call, str) or not call:
        return ""
    if not isinstance(rule, str) or not rule or rule == call:
        return call
    return f"{call} (overrides {row['model']}'s call: {rule})"


def sign_out_text(row: dict) -> str:
    """A sign-out in one line: 'MNA, signed out by Dr. A on 2026-12-05 06:41 UTC (m1: 23.3 % MNA, ...); comment:
    ...' (the call as :func:`call_text` says it)."""
    text = f"{call_text(row)}, signed out by {row['by_user']} on {str(row['created_at'])[:16]} UTC ({numbers_text(row)})"
    comment = row.get("comment")
    return text + (f"; comment: {comment}" if isinstance(comment, str) and comment else "")


def status_text(last: dict | None) -> str:
    """Whether a sample is signed out, in words, from its latest :func:`history` row (None: never signed out):
    :func:`sign_out_text`, 'not signed out', or 'not signed out: withdrawn by Dr. B on 2026-12-05 07:02 UTC
    (wrong slide)'. The Cases page and the sample report both say it so."""
    if last is None:
        return "not signed out"
    if last["action"] == "sign out":
        return sign_out_text(last)
    return f"not signed out: withdrawn by {last['by_user']} on {str(last['created_at'])[:16]} UTC ({last['comment']})"


def changed_note(store: Store, sample: str) -> str | None:
    """The line telling that ``sample``'s sign-out in force no longer matches its model's numbers (e.g. after a
    curator excluded a scan), with what changed; None when it is not signed out or nothing changed."""
    trail = history(store, sample)
    force = in_force(store, summary.sample_summaries(store, sample=sample), trail)
    if force.empty or not force["changes"].iloc[0]:
        return None
    row = force.iloc[0].to_dict()
    return (f"sample {sample!r} is signed out as {call_text(row)} by {row['by_user']}, and its sign-out's "
            f"numbers changed: {'; '.join(row['changes'])}; check it on the Cases page, then sign it out again or "
            "withdraw the sign-out")


def scan_sample(store: Store, scan_id: int) -> str | None:
    """Name of the sample scan ``scan_id`` belongs to (None: no such scan)."""
    return store.scalar("SELECT s.name FROM scans c JOIN samples s ON s.id = c.sample_id WHERE c.id = ?",
                        [int(scan_id)])
