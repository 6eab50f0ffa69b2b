"""``review_stats``: per-nucleus aggregates over the TRUSTED models' predictions, for the Review queue.

A model is *trusted* while it is active (``models.retired_at`` NULL) and its validation is not weak
(:func:`store.summary.has_weak_validation`, the Cases page's ``weak validation`` flag). Every nucleus with a
prediction has a row (schema step 7); ``n_models`` counts its trusted predictions, and the other aggregates
are NULL when there is none (``spread`` 0), so an untrusted model chosen as the Review focus still finds its
nuclei. Rows are written with the predictions and recomputed in place, for the scans a model scored, whenever that
model becomes trusted or stops being so (:func:`rebuild_for_changed`: retire, reinstate, new metrics).
"""

from __future__ import annotations

import json

# Per-nucleus aggregates over the predictions of the nuclei of the given scans ($scans); only the trusted
# models' predictions count ($untrusted: ids of the others).
_STATS_SELECT = """
SELECT p.nucleus_id, n.scan_id, c.sample_id, n.auto_label, count(*) FILTER (WHERE p.trusted) AS n_models,
       avg(p.prob_calibrated) FILTER (WHERE p.trusted) AS mean_prob,
       coalesce(max(p.prob) FILTER (WHERE p.trusted) - min(p.prob) FILTER (WHERE p.trusted), 0) AS spread,
       min(p.call) FILTER (WHERE p.trusted) AS min_call, max(p.call) FILTER (WHERE p.trusted) AS max_call,
       min(abs(p.prob_calibrated - 0.5)) FILTER (WHERE p.trusted) AS min_margin,
       max(p.uncertainty) FILTER (WHERE p.trusted) AS max_uncertainty,
       max(p.uncertainty) FILTER (WHERE p.trusted AND m.uncertainty_method <> 'entropy') AS max_mc_std,
       max(p.uncertainty) FILTER (WHERE p.trusted AND m.uncertainty_method = 'entropy') AS max_entropy
FROM (SELECT *, NOT list_contains($untrusted::BIGINT[], model_id) AS trusted FROM predictions) p
JOIN nuclei n ON n.id = p.nucleus_id
JOIN scans c ON c.id = n.scan_id
JOIN models m ON m.id = p.model_id
WHERE n.scan_id IN (SELECT unnest($scans::BIGINT[]))
GROUP BY ALL
"""
_COLUMNS = ("scan_id", "sample_id", "auto_label", "n_models", "mean_prob", "spread", "min_call", "max_call",
            "min_margin", "max_uncertainty", "max_mc_std", "max_entropy")
_STATS_INSERT = "INSERT INTO review_stats (nucleus_id, " + ", ".join(_COLUMNS) + ") " + _STATS_SELECT
# The same rows written over the existing ones in place: no row or primary-key entry is deleted and added again,
# which made a retire at a million nuclei spend most of its time in the insert and the commit's checkpoint.
_STATS_UPDATE = ("UPDATE review_stats r SET " + ", ".join(c + " = s." + c for c in _COLUMNS)
                 + " FROM (" + _STATS_SELECT + ") s WHERE r.nucleus_id = s.nucleus_id")
_ROWS_OF_SCANS = "SELECT count(*) FROM review_stats WHERE scan_id IN (SELECT unnest($scans::BIGINT[]))"
_SCORED_NUCLEI_OF_SCANS = ("SELECT count(*) FROM nuclei n WHERE n.scan_id IN (SELECT unnest($scans::BIGINT[])) "
                           "AND EXISTS (SELECT 1 FROM predictions p WHERE p.nucleus_id = n.id)")


_MODELS_TRUST = "SELECT id, metrics, retired_at IS NOT NULL FROM models ORDER BY id"
_MODELS_TRUST_BEFORE_STEP_4 = "SELECT id, metrics, false FROM models ORDER BY id"


def _has_retired_column(cur) -> bool:
    """False on a store older than schema step 4 (the early-layout conversion builds its stats before it)."""
    return bool(cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'models' "
                            "AND column_name = 'retired_at'").fetchone()[0])


def untrusted_reason(retired: bool, metrics: dict | str | None) -> str | None:
    """Why ``review_stats`` leaves a model's predictions out: 'retired', 'weak validation'
    (:func:`store.summary.has_weak_validation`; ``metrics`` as stored, JSON text, or parsed), or None: trusted."""
    from store.summary import has_weak_validation

    if retired:
        return "retired"
    parsed = json.loads(metrics) if isinstance(metrics, str) and metrics else metrics
    return "weak validation" if has_weak_validation(parsed if isinstance(parsed, dict) else {}) else None


def untrusted_model_ids(cur) -> list[int]:
    """Ids of the registered models whose predictions ``review_stats`` leaves out (:func:`untrusted_reason`),
    in id order."""
    rows = cur.execute(_MODELS_TRUST if _has_retired_column(cur) else _MODELS_TRUST_BEFORE_STEP_4).fetchall()
    return [int(i) for i, metrics, gone in rows if untrusted_reason(bool(gone), metrics)]


def insert_review_stats(cur, scan_ids: list[int]) -> None:
    """Write the ``review_stats`` rows of scans that have none (inside the caller's transaction ``cur``)."""
    cur.execute(_STATS_INSERT, {"scans": [int(s) for s in scan_ids], "untrusted": untrusted_model_ids(cur)})


def rebuild_review_stats(cur, scan_ids: list[int]) -> None:
    """Replace the ``review_stats`` rows of these scans by ones computed from their current predictions
    (inside the caller's transaction ``cur``)."""
    ids = [int(s) for s in scan_ids]
    cur.execute("DELETE FROM review_stats WHERE scan_id IN (SELECT unnest($scans::BIGINT[]))", {"scans": ids})
    insert_review_stats(cur, ids)


def rebuild_all(cur) -> None:
    """Rebuild every scan's ``review_stats`` rows (schema step 7; inside the caller's transaction ``cur``)."""
    cur.execute("DELETE FROM review_stats")
    insert_review_stats(cur, [int(r[0]) for r in cur.execute("SELECT id FROM scans").fetchall()])


def rebuild_for_changed(cur, untrusted_before: list[int]) -> list[int]:
    """After a change to the models (retired, reinstated, new metrics): rebuild the rows of the scans scored by
    each model that became trusted or untrusted since ``untrusted_before`` (:func:`untrusted_model_ids` read
    earlier in the same transaction). Returns those scans' ids (none when the trusted set is unchanged)."""
    changed = sorted(set(untrusted_before) ^ set(untrusted_model_ids(cur)))
    if not changed:
        return []
    scans = [int(r[0]) for r in cur.execute(
        "SELECT DISTINCT scan_id FROM scan_models WHERE model_id IN (SELECT unnest($m::BIGINT[])) ORDER BY 1",
        {"m": changed}).fetchall()]
    refresh_review_stats(cur, scans)
    return scans


def refresh_review_stats(cur, scan_ids: list[int]) -> None:
    """Bring the ``review_stats`` rows of these scans up to date with their predictions and the trusted models:
    in place (:func:`update_review_stats`) when every scored nucleus keeps its row, else rebuilt."""
    if not update_review_stats(cur, scan_ids):
        rebuild_review_stats(cur, scan_ids)


def update_review_stats(cur, scan_ids: list[int]) -> bool:
    """Recompute the ``review_stats`` rows of these scans in place (inside the caller's transaction ``cur``), as
    :func:`rebuild_review_stats` would write them, when the scans' nuclei with a prediction are exactly the ones
    with a row (true whenever only the trusted set changed). False when they are not: rebuild them instead."""
    ids = {"scans": [int(s) for s in scan_ids]}
    updated = cur.execute(_STATS_UPDATE, {**ids, "untrusted": untrusted_model_ids(cur)}).fetchone()[0]
    if updated != cur.execute(_ROWS_OF_SCANS, ids).fetchone()[0]:
        return False  # a row of a nucleus without predictions
    return updated == cur.execute(_SCORED_NUCLEI_OF_SCANS, ids).fetchone()[0]  # else a scored nucleus has no row
