"""The review queue: nuclei worth a curator's decision, most informative first.

Flags per nucleus (``focus`` = the chosen model, or every trusted model when none is chosen; *trusted*:
active, i.e. not retired, and not flagged ``weak validation``, :func:`store.summary.has_weak_validation`):

- ``auto_mismatch``: a focus model's call differs from the nucleus' auto label;
- ``models_disagree``: the trusted models do not all make the same call (a retired model, or one registered
  despite a useless validation, is shown on the card but never raises it);
- ``high_uncertainty``: a focus model's uncertainty is at least its threshold
  (``mc_std_threshold`` for MC-dropout standard deviations, ``entropy_threshold`` for
  predictive entropies in bits; see ``models.uncertainty_method``);
- ``low_confidence``: a focus model's calibrated probability lies within
  ``confidence_margin`` of 0.5.

Per-nucleus aggregates over the trusted models are precomputed in ``review_stats`` (``store.review_stats``:
written in the same transaction as the predictions, rebuilt when a model is retired, reinstated or its
metrics change), so a page of the queue is one scan of that table even at a million nuclei.

Informativeness (the queue order): ``closeness + spread + 0.5 * auto_mismatch +
0.5 * high_uncertainty`` where ``closeness = 1 - 2 |p - 0.5|`` for the mean focus
calibrated probability ``p`` and ``spread`` is the range of probabilities across the
trusted models: nuclei the models are unsure or divided about, and labels they contradict,
come first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from store.db import Store
from store.labels import reviewer_spelled_sql

FLAGS = ("auto_mismatch", "models_disagree", "high_uncertainty", "low_confidence")


@dataclass(frozen=True)
class ReviewConfig:
    """Flag thresholds.

    Attributes:
        mc_std_threshold: flag when the MC-dropout std of the calibrated probability is at
            least this (models with ``uncertainty_method`` other than ``entropy``).
        entropy_threshold: flag when the predictive entropy (bits, max 1) is at least this
            (0.9 bits: calibrated probability within about 0.32-0.68).
        confidence_margin: calibrated probabilities in ``(0.5 - m, 0.5 + m)`` are low-confidence.
    """

    mc_std_threshold: float = 0.1
    entropy_threshold: float = 0.9
    confidence_margin: float = 0.15

    def __post_init__(self) -> None:
        if not 0 < self.mc_std_threshold <= 0.5:
            raise ValueError("mc_std_threshold must be in (0, 0.5]")
        if not 0 < self.entropy_threshold <= 1:
            raise ValueError("entropy_threshold must be in (0, 1]")
        if not 0 < self.confidence_margin <= 0.5:
            raise ValueError("confidence_margin must be in (0, 0.5]")


REVIEW_CONFIG = ReviewConfig()

# SQL is assembled from the constant fragments below only; every value is a named parameter
# ($model, $ent, $mc, $margin, $sample, $f_auto, $f_disagree, $f_unc, $f_conf, ...). Per-nucleus aggregates over
# the trusted models come precomputed from ``review_stats`` (NULL where no trusted model scored the nucleus).
_SCOPE_ALL = ""
_SCOPE_SAMPLE = """
    WHERE r.sample_id = (SELECT id FROM samples WHERE name = $sample)
"""
# every trusted model is in focus
_AGG_ALL = """
WITH agg AS (
    SELECT r.nucleus_id, r.sample_id, r.scan_id, r.auto_label, r.mean_prob AS prob, r.max_uncertainty AS uncertainty,
           r.spread, r.n_models, r.min_call <> r.max_call AS models_disagree,
           coalesce(r.max_mc_std >= $mc, false) OR coalesce(r.max_entropy >= $ent, false) AS high_unc,
           r.min_margin < $margin AS low_conf,
           r.min_call AS min_focus_call, r.max_call AS max_focus_call
    FROM review_stats r
    {scope}
)"""
# one model in focus: its own prediction, plus agreement across the trusted models. The model's id and uncertainty
# threshold are scalar subqueries, not a join with models: joined, the flag filter below became a condition of the
# million-row join on nucleus_id and doubled the query's time at 1M nuclei.
_AGG_ONE = """
WITH agg AS (
    SELECT r.nucleus_id, r.sample_id, r.scan_id, r.auto_label, p.prob_calibrated AS prob, p.uncertainty,
           r.spread, r.n_models, r.min_call <> r.max_call AS models_disagree,
           p.uncertainty >= (SELECT CASE WHEN uncertainty_method = 'entropy' THEN $ent ELSE $mc END
                             FROM models WHERE name = $model) AS high_unc,
           abs(p.prob_calibrated - 0.5) < $margin AS low_conf,
           p.call AS min_focus_call, p.call AS max_focus_call
    FROM review_stats r
    JOIN predictions p ON p.nucleus_id = r.nucleus_id AND p.model_id = (SELECT id FROM models WHERE name = $model)
    {scope}
)"""
_REST = """,
flagged AS (
    SELECT a.nucleus_id, s.name AS sample, a.scan_id, a.auto_label,
           a.prob, a.uncertainty, a.spread, a.n_models,
           coalesce(a.auto_label IS NOT NULL AND (a.min_focus_call <> a.auto_label OR a.max_focus_call <> a.auto_label),
                    false) AS auto_mismatch,
           coalesce(a.models_disagree, false) AS models_disagree,
           coalesce(a.high_unc, false) AS high_uncertainty,
           coalesce(a.low_conf, false) AS low_confidence,
           cl.value AS curated_value, cl.reviewer AS curated_by
    FROM agg a
    JOIN samples s ON s.id = a.sample_id
    LEFT JOIN curated_labels cl ON cl.nucleus_id = a.nucleus_id
    WHERE a.prob IS NOT NULL
),
scored AS (
    SELECT *,
           (1 - 2 * abs(prob - 0.5)) + spread + 0.5 * auto_mismatch::INTEGER + 0.5 * high_uncertainty::INTEGER
               AS informativeness
    FROM flagged
    WHERE ($f_auto AND auto_mismatch) OR ($f_disagree AND models_disagree) OR ($f_unc AND high_uncertainty)
          OR ($f_conf AND low_confidence)
)
"""
#: nuclei this reviewer has a decision on that stands (not undone), the name compared as ``store.agreement`` does
#: (case, surplus spaces): with reviewed nuclei listed, a second curator's queue leaves them out once decided
_DECIDED_BY_ME = f"""
    SELECT e.nucleus_id FROM label_events e
    WHERE e.undoes IS NULL AND e.value <> 'unset'
      AND lower({reviewer_spelled_sql('e.reviewer')}) = $me
      AND NOT EXISTS (SELECT 1 FROM label_events u WHERE u.undoes = e.id)
"""
_NOT_MINE = f"\n        AND ($me IS NULL OR nucleus_id NOT IN ({_DECIDED_BY_ME}))"
_MINE = f"nucleus_id IN ({_DECIDED_BY_ME})"
#: of the nuclei registered as ``ids_in``, those this reviewer decided (``decided_by``)
_DECIDED_IN = "SELECT DISTINCT d.nucleus_id FROM (" + _DECIDED_BY_ME + ") d JOIN ids_in USING (nucleus_id)"


def _me(reviewer: str | None) -> str | None:
    """A reviewer's name as the queue compares it: lower case, each run of whitespace one space (None: blank)."""
    return " ".join((reviewer or "").split()).lower() or None


_VARIANTS = {
    (focus, one): (_AGG_ONE if focus else _AGG_ALL).replace("{scope}", _SCOPE_SAMPLE if one else _SCOPE_ALL) + _REST
    for focus in (False, True) for one in (False, True)
}


def _flagged(model: str | None, sample: str | None) -> str:
    return _VARIANTS[(model is not None, sample is not None)]


def _params(sql: str, model, sample, flags, config: ReviewConfig, **extra) -> dict:
    flags = tuple(FLAGS if flags is None else flags)
    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise ValueError(f"unknown review flags {sorted(unknown)}; choose from {FLAGS}")
    values = {"model": model, "sample": sample, "ent": float(config.entropy_threshold),
              "mc": float(config.mc_std_threshold), "margin": float(config.confidence_margin),
              "f_auto": "auto_mismatch" in flags, "f_disagree": "models_disagree" in flags,
              "f_unc": "high_uncertainty" in flags, "f_conf": "low_confidence" in flags, **extra}
    used = set(re.findall(r"\$(\w+)", sql))
    return {k: v for k, v in values.items() if k in used}


def review_queue(store: Store, sample: str | None = None, model: str | None = None, flags=None,
                 include_reviewed: bool = False, limit: int = 50, offset: int = 0,
                 config: ReviewConfig = REVIEW_CONFIG, reviewer: str | None = None) -> pd.DataFrame:
    """One page of flagged nuclei, most informative first.

    Args:
        sample: only this sample (None: all).
        model: focus model (None: every trusted model: active, without weak validation).
        flags: flags to include (any of :data:`FLAGS`; None: all).
        include_reviewed: keep nuclei that already have a curated decision (with ``reviewer``: except those
            this reviewer decided, their decision not undone: what a second curator has still to review).
        limit, offset: the page.

    Returns:
        DataFrame ``nucleus_id, sample, scan_id, auto_label, prob (mean focus calibrated),
        uncertainty, spread, n_models, auto_mismatch, models_disagree, high_uncertainty,
        low_confidence, curated_value, curated_by, informativeness``.
    """
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must be >= 0")
    sql = _flagged(model, sample) + """
        SELECT * FROM scored
        WHERE ($include_reviewed OR curated_value IS NULL)""" + (_NOT_MINE if include_reviewed else "") + """
        ORDER BY informativeness DESC, nucleus_id
        LIMIT $limit OFFSET $offset
    """
    return store.query(sql, _params(sql, model, sample, flags, config, include_reviewed=bool(include_reviewed),
                                    limit=int(limit), offset=int(offset), me=_me(reviewer)))


def review_progress(store: Store, sample: str | None = None, model: str | None = None, flags=None,
                    config: ReviewConfig = REVIEW_CONFIG, reviewer: str | None = None) -> dict:
    """How much of the queue is done: ``{"total", "reviewed", "remaining", "excluded"}``, with ``reviewer``
    also ``"mine"``.

    ``total`` counts flagged nuclei whether decided or not; ``reviewed`` those with a
    current curated decision (``excluded`` among them: marked 'exclude'); ``mine`` those this reviewer
    decided (their decision not undone, whoever decided since).
    """
    mine = ", count(*) FILTER (WHERE " + _MINE.strip() + ") AS mine" if _me(reviewer) else ""
    sql = _flagged(model, sample) + """
        SELECT count(*) AS total,
               count(curated_value) AS reviewed,
               count(*) FILTER (WHERE curated_value = 'exclude') AS excluded""" + mine + """
        FROM scored
    """
    row = store.cursor().execute(sql, _params(sql, model, sample, flags, config, me=_me(reviewer))).fetchall()[0]
    total, reviewed, excluded, *more = (int(v or 0) for v in row)
    return {"total": total, "reviewed": reviewed, "remaining": total - reviewed, "excluded": excluded,
            **({"mine": more[0]} if more else {})}


def decided_by(store: Store, reviewer: str | None, nucleus_ids) -> set[int]:
    """Which of ``nucleus_ids`` this reviewer has a decision on that stands (not undone), the name compared as the
    queue compares it: the nuclei a blind reviewer may see other reviewers' decisions on (none without a name)."""
    me = _me(reviewer)
    ids = pd.DataFrame({"nucleus_id": pd.Series([int(i) for i in nucleus_ids], dtype="int64")})
    if me is None or ids.empty:
        return set()
    with store.frames(ids_in=ids):
        found = store.query(_DECIDED_IN, {"me": me})
    return set(found["nucleus_id"].astype(int).tolist())


def skipped_last(q: pd.DataFrame, skipped: list[int]) -> pd.DataFrame:
    """The queue ``q`` with this session's ``skipped`` nuclei at the back, in the order they were last skipped
    (a card skipped when every card left was skipped goes behind the others, so the next one shows)."""
    if not skipped:
        return q
    last = {nid: i for i, nid in enumerate(skipped)}
    rank = q["nucleus_id"].map(last).fillna(-1)  # not skipped: -1, in queue order
    return q.iloc[np.argsort(rank.to_numpy(), kind="stable")]
