"""The review queue: nuclei worth a curator's decision, most informative first.

Flags per nucleus (``focus`` = the chosen model, or every model when none is chosen):

- ``auto_mismatch``: a focus model's call differs from the nucleus' auto label;
- ``models_disagree``: the registered models do not all make the same call;
- ``high_uncertainty``: a focus model's uncertainty is at least its threshold
  (``mc_std_threshold`` for MC-dropout standard deviations, ``entropy_threshold`` for
  predictive entropies in bits; see ``models.uncertainty_method``);
- ``low_confidence``: a focus model's calibrated probability lies within
  ``confidence_margin`` of 0.5.

Informativeness (the queue order): ``closeness + spread + 0.5 * auto_mismatch +
0.5 * high_uncertainty`` where ``closeness = 1 - 2 |p - 0.5|`` for the mean focus
calibrated probability ``p`` and ``spread`` is the range of probabilities across all
models: nuclei the models are unsure or divided about, and labels they contradict,
come first.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from store.db import Store

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

# Parameters, in order: focus model (twice), entropy and MC-std thresholds, margin, sample (twice), 4 flags.
_FLAGGED = """
WITH focus AS (
    SELECT id AS model_id, (? IS NULL OR name = ?) AS is_focus,
           CASE WHEN uncertainty_method = 'entropy' THEN ? ELSE ? END AS unc_threshold
    FROM models
),
agg AS (
    SELECT p.nucleus_id,
           avg(p.prob_calibrated) FILTER (WHERE f.is_focus) AS prob,
           max(p.uncertainty) FILTER (WHERE f.is_focus) AS uncertainty,
           bool_or(p.uncertainty >= f.unc_threshold) FILTER (WHERE f.is_focus) AS high_uncertainty,
           bool_or(abs(p.prob_calibrated - 0.5) < ?) FILTER (WHERE f.is_focus) AS low_confidence,
           min(p.call) FILTER (WHERE f.is_focus) AS min_focus_call,
           max(p.call) FILTER (WHERE f.is_focus) AS max_focus_call,
           min(p.call) <> max(p.call) AS models_disagree,
           max(p.prob) - min(p.prob) AS spread,
           count(*) AS n_models
    FROM predictions p JOIN focus f USING (model_id)
    GROUP BY p.nucleus_id
),
flagged AS (
    SELECT a.nucleus_id, s.name AS sample, n.scan_id, la.label AS auto_label,
           a.prob, a.uncertainty, a.spread, a.n_models,
           coalesce(la.label IS NOT NULL AND (a.min_focus_call <> la.label OR a.max_focus_call <> la.label), false)
               AS auto_mismatch,
           coalesce(a.models_disagree, false) AS models_disagree,
           coalesce(a.high_uncertainty, false) AS high_uncertainty,
           coalesce(a.low_confidence, false) AS low_confidence,
           cl.value AS curated_value, cl.reviewer AS curated_by
    FROM agg a
    JOIN nuclei n ON n.id = a.nucleus_id
    JOIN scans c ON c.id = n.scan_id
    JOIN samples s ON s.id = c.sample_id
    LEFT JOIN labels la ON la.nucleus_id = a.nucleus_id AND la.kind = 'auto'
    LEFT JOIN curated_labels cl ON cl.nucleus_id = a.nucleus_id
    WHERE a.prob IS NOT NULL AND (? IS NULL OR s.name = ?)
),
scored AS (
    SELECT *,
           (1 - 2 * abs(prob - 0.5)) + spread + 0.5 * auto_mismatch::INTEGER + 0.5 * high_uncertainty::INTEGER
               AS informativeness
    FROM flagged
    WHERE (? AND auto_mismatch) OR (? AND models_disagree) OR (? AND high_uncertainty) OR (? AND low_confidence)
)
"""


def _params(model, sample, flags, config: ReviewConfig) -> list:
    flags = tuple(FLAGS if flags is None else flags)
    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise ValueError(f"unknown review flags {sorted(unknown)}; choose from {FLAGS}")
    return [model, model, float(config.entropy_threshold), float(config.mc_std_threshold),
            float(config.confidence_margin), sample, sample,
            *[f in flags for f in FLAGS]]


def review_queue(store: Store, sample: str | None = None, model: str | None = None, flags=None,
                 include_reviewed: bool = False, limit: int = 50, offset: int = 0,
                 config: ReviewConfig = REVIEW_CONFIG) -> pd.DataFrame:
    """One page of flagged nuclei, most informative first.

    Args:
        sample: only this sample (None: all).
        model: focus model (None: all models).
        flags: flags to include (any of :data:`FLAGS`; None: all).
        include_reviewed: keep nuclei that already have a curated decision.
        limit, offset: the page.

    Returns:
        DataFrame ``nucleus_id, sample, scan_id, auto_label, prob (mean focus calibrated),
        uncertainty, spread, n_models, auto_mismatch, models_disagree, high_uncertainty,
        low_confidence, curated_value, curated_by, informativeness``.
    """
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must be >= 0")
    sql = _FLAGGED + """
        SELECT * FROM scored
        WHERE ? OR curated_value IS NULL
        ORDER BY informativeness DESC, nucleus_id
        LIMIT ? OFFSET ?
    """
    return store.query(sql, _params(model, sample, flags, config) + [include_reviewed, int(limit), int(offset)])


def review_progress(store: Store, sample: str | None = None, model: str | None = None, flags=None,
                    config: ReviewConfig = REVIEW_CONFIG) -> dict:
    """How much of the queue is done: ``{"total", "reviewed", "remaining", "excluded"}``.

    ``total`` counts flagged nuclei whether decided or not; ``reviewed`` those with a
    current curated decision (``excluded`` among them: marked 'exclude').
    """
    sql = _FLAGGED + """
        SELECT count(*) AS total,
               count(curated_value) AS reviewed,
               count(*) FILTER (WHERE curated_value = 'exclude') AS excluded
        FROM scored
    """
    row = store.cursor().execute(sql, _params(model, sample, flags, config)).fetchone()
    total, reviewed, excluded = (int(v or 0) for v in row)
    return {"total": total, "reviewed": reviewed, "remaining": total - reviewed, "excluded": excluded}
