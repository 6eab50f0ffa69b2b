"""Sample summaries: per sample and model, the MNA fraction with its uncertainty, the call and QC flags.

Per (sample, model), over nuclei that have a prediction and are not excluded by a curator:

- ``n_scored``, ``n_mna`` (model calls = 1), ``mna_pct`` with a Wilson 95 % interval;
- ``corrected_pct``: Rogan-Gladen prevalence using the model's validation sensitivity and
  specificity from its ``metrics.json`` (see :func:`validation_rates`), with its interval (none when
  the validation is weak: its rates would amplify noise, e.g. a 16 % share to 100 %);
- ``expected_pct`` (sample's expected MNA fraction), ``deviation_pp`` (= mna - expected,
  percentage points) and ``corrected_deviation_pp``;
- ``true_mna_pct``: ground-truth MNA share of the scored nuclei (synthetic samples);
- ``call``: ``genuine_core.rules.sample_call`` (thresholds and their sources live there);
- ``qc_flags``: ``few nuclei``, ``high uncertainty``, ``auto-label disagreement``, ``oversized nuclei``
  (many nuclei larger than the patch: merged clumps or another magnification), ``MYCN below reference``
  (the median nucleus has fewer detected MYCN than NMI signals: NMI and MYCN channels swapped?),
  ``no validation metrics``, ``possible false positives`` (enough MNA nuclei for a heterogeneous
  call, but the corrected interval reaches 0 %: the model's false-positive rate alone could explain
  them, so the call is non-MNA),
  ``weak validation`` (see :func:`weak_validation`), ``rates do not fit`` (the corrected interval
  was clipped to a point), ``possible false negatives`` (a non-MNA or heterogeneous call whose
  corrected interval goes above the MNA share), ``possibly heterogeneous`` (an MNA call whose corrected
  interval reaches down to the MNA share or below), ``partly scored`` (the model scored some of the
  sample's scans only; a retired model is not held to scans ingested after its retirement),
  ``call contradicts genotype`` (a genotype-labelled sample called otherwise).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from genuine_core.rules import SAMPLE_CALL_RULE, SampleCallRule, sample_call
from genuine_core.stats import rogan_gladen, wilson_interval
from genuine_core.validation import MIN_VALIDATION_PER_CLASS, MIN_VALIDATION_RATE
from store.db import Store
from store.samples import genotype_label


@dataclass(frozen=True)
class SummaryConfig:
    """QC thresholds for sample summaries.

    Attributes:
        mc_std_threshold: a nucleus counts as uncertain when its MC-dropout std is at least this.
        entropy_threshold: ... or, for models reporting entropy, when it is at least this (bits).
        max_uncertain_share: flag ``high uncertainty`` above this share of uncertain nuclei.
        max_disagreement_share: flag ``auto-label disagreement`` above this share of nuclei
            whose call differs from their auto label.
        max_cropped_share: flag ``oversized nuclei`` above this share of scored nuclei larger than
            the patch (cropped to it).
        confidence: level of the intervals.
        min_validation_per_class: flag ``weak validation`` when the model's validation had
            fewer truly MNA or non-MNA nuclei than this ...
        min_validation_rate: ... or a sensitivity or specificity below this (a model that
            misses most nuclei of a class; 0.5 = no better than a constant answer).
    """

    mc_std_threshold: float = 0.1
    entropy_threshold: float = 0.9
    max_uncertain_share: float = 0.2
    max_disagreement_share: float = 0.2
    max_cropped_share: float = 0.25
    confidence: float = 0.95
    min_validation_per_class: int = MIN_VALIDATION_PER_CLASS
    min_validation_rate: float = MIN_VALIDATION_RATE

    def __post_init__(self) -> None:
        if not 0 < self.mc_std_threshold <= 0.5 or not 0 < self.entropy_threshold <= 1:
            raise ValueError("mc_std_threshold must be in (0, 0.5] and entropy_threshold in (0, 1]")
        for name in ("max_uncertain_share", "max_disagreement_share", "max_cropped_share", "confidence"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1)")


SUMMARY_CONFIG = SummaryConfig()


def uncertainty_threshold(method: str, config: SummaryConfig = SUMMARY_CONFIG) -> float:
    """The stored ``uncertainty`` at or above which a nucleus counts as uncertain, for a model's
    ``uncertainty_method`` (entropy in bits, else an MC-dropout std)."""
    return config.entropy_threshold if method == "entropy" else config.mc_std_threshold


#: what each QC flag means, for the dashboard and reports
QC_FLAGS = {
    "few nuclei": "fewer scored nuclei than the INRG minimum for a call",
    "high uncertainty": "many nuclei have an uncertain prediction",
    "auto-label disagreement": "many calls differ from the nuclei's automatic (genotype) labels",
    "MYCN below reference": "the signal detector finds fewer MYCN than NMI signals in the sample's typical nucleus "
                            "(the median), which is unusual; check that the scan's channel map did not swap "
                            "the NMI and MYCN channels (the sample report's Scans table names it): a swap turns "
                            "amplified nuclei into non-amplified ones",
    "oversized nuclei": f"more than {100 * SUMMARY_CONFIG.max_cropped_share:g} % of the scored nuclei were larger "
                        "than the model's patch and were cropped to it: merged clumps, or a scan at another "
                        "magnification (then ingest it with --diameter); check the outlines on the scan before "
                        "reading the call",
    "no validation metrics": "the model has no validation sensitivity/specificity recorded, so no corrected "
                             "estimate, and a heterogeneous MNA call rests on the count of MNA nuclei alone (its "
                             "false-positive rate, which could explain them, is unknown); review the nuclei called "
                             "MNA",
    "possible false positives": "enough nuclei are called MNA for heterogeneous MNA, but the model's false-"
                                "positive rate alone could explain them (the corrected interval reaches 0 %), so "
                                "the sample is called non-MNA; review the nuclei called MNA",
    "possible false negatives": f"the corrected interval goes above {100 * SAMPLE_CALL_RULE.mna_fraction:g} %: "
                                "with the model's miss rate the sample may be MNA; review before signing",
    "possibly heterogeneous": f"the corrected interval reaches down to {100 * SAMPLE_CALL_RULE.mna_fraction:g} % "
                              "or below: with the model's false-positive rate the sample may be heterogeneous "
                              "MNA rather than MNA; review the nuclei called MNA before signing",
    "partly scored": "the model has scored fewer of the sample's scans than another model (an interrupted or "
                     "skipped `genuine store score`, or scans whose patches it cannot read); score the rest "
                     "before reading its call",
    "call contradicts genotype": "the sample's recorded genotype says otherwise (e.g. gain nuclei with 3-7 MYCN "
                                 "signals called MNA in a non-MNA line, a pattern validation rates do not "
                                 "capture); review the nuclei before reading the call",
    "rates do not fit": "the share called MNA lies so far outside what the model's validation error rates allow "
                        "(below its false-positive rate or above its sensitivity, beyond sampling error) that the "
                        "corrected interval collapses to 0 % or 100 % with no width; read the MNA % and review "
                        "the nuclei (a share just beyond the rates only pins the corrected estimate, and its "
                        "interval still shows the uncertainty)",
    "weak validation": f"the model's validation had fewer than {SUMMARY_CONFIG.min_validation_per_class} nuclei "
                       f"of a class, or a sensitivity or specificity below {SUMMARY_CONFIG.min_validation_rate:g}, "
                       "or no better than chance (sensitivity + specificity <= 1), so no corrected estimate is "
                       "given (e.g. a retrained model registered for testing): do not base a diagnosis on its calls",
}


def weak_validation(rates: dict, config: SummaryConfig = SUMMARY_CONFIG) -> bool:
    """True when :func:`validation_rates` output rests on too few nuclei, shows a rate below
    ``config.min_validation_rate`` or is no better than chance (counts that are not recorded are not
    held against it)."""
    se, sp = rates["sensitivity"], rates["specificity"]
    if se + sp <= 1 or min(se, sp) < config.min_validation_rate:
        return True
    counts = (rates["n_positive"], rates["n_negative"])
    return any(n is not None and n < config.min_validation_per_class for n in counts)


def has_weak_validation(metrics: dict | None, config: SummaryConfig = SUMMARY_CONFIG) -> bool:
    """True when a model's metrics record validation rates (chance-level ones included) that
    :func:`weak_validation` finds weak: the ``weak validation`` QC flag; False without recorded rates."""
    recorded = validation_rates(metrics or {}) or validation_rates(metrics or {}, useful_only=False)
    return bool(recorded) and weak_validation(recorded, config)


_RATE_KEYS = (("sensitivity", "specificity"), ("tpr", "tnr"))


def _find_rates(node, path: str, found: list) -> None:
    if isinstance(node, dict):
        if any(a in node and b in node for a, b in _RATE_KEYS):
            found.append((path, node))
        for k, v in node.items():
            _find_rates(v, f"{path}/{k}".lower(), found)


def _count(node: dict, direct: str, a: str, b: str) -> int | None:
    """A validation count: ``node[direct]``, else ``node[a] + node[b]``; None unless a whole number >= 1."""
    def number(v) -> float | None:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        return float(v) if ok else None

    value = number(node.get(direct))
    if value is None and number(node.get(a)) is not None and number(node.get(b)) is not None:
        value = number(node[a]) + number(node[b])
    return int(value) if value is not None and value >= 1 and value == int(value) else None


def validation_rates(metrics: dict, useful_only: bool = True) -> dict | None:
    """Sensitivity/specificity for prevalence correction from a model's ``metrics.json``.

    Accepts the training record layout (``{"validation": {"sensitivity", "specificity",
    "n_positive", "n_negative"}}``) and ``training.metrics.BinaryMetrics`` dicts (``tp, fp,
    tn, fn, tpr, tnr``) anywhere in the metrics, preferring one under a key naming the
    validation split (``val``/``validation``), then the shallowest other one.

    Returns:
        ``{"sensitivity", "specificity", "n_positive", "n_negative", "source"}`` (counts may
        be None), or None when the metrics hold no usable rates (missing, NaN, outside [0, 1],
        or, with ``useful_only``, a classifier no better than chance: sensitivity + specificity <= 1).
    """
    found: list = []
    _find_rates(metrics or {}, "", found)
    found.sort(key=lambda item: (not any(t in item[0] for t in ("/val", "validation")), item[0].count("/")))
    for path, node in found:
        se_key, sp_key = next((a, b) for a, b in _RATE_KEYS if a in node and b in node)
        try:
            se, sp = float(node[se_key]), float(node[sp_key])
        except (TypeError, ValueError):
            continue
        if not (0 <= se <= 1 and 0 <= sp <= 1) or (useful_only and se + sp <= 1):  # NaN, percentages, chance
            continue
        return {"sensitivity": se, "specificity": sp, "n_positive": _count(node, "n_positive", "tp", "fn"),
                "n_negative": _count(node, "n_negative", "tn", "fp"), "source": path.strip("/") or "metrics"}
    return None


# Aggregate on ids only (strings and metrics are joined to the ~100 result rows afterwards).
# Parameters: entropy threshold, MC-std threshold, model (twice), sample (twice).
_AGG_SQL = """
WITH thr AS (
    SELECT id AS model_id, CASE WHEN uncertainty_method = 'entropy' THEN ? ELSE ? END AS unc_threshold
    FROM models WHERE ? IS NULL OR name = ?
),
scope AS (
    SELECT c.id AS scan_id, c.sample_id FROM scans c JOIN samples s ON s.id = c.sample_id
    WHERE ? IS NULL OR s.name = ?
),
-- ONE pass over the predictions, per scan and model (a few thousand rows even at a million nuclei), from which
-- the per-sample counts and the scans each model scored both come (two passes and a count(DISTINCT) before)
per_scan AS MATERIALIZED (
    SELECT n.scan_id, p.model_id,
           count(*) AS n_scored,
           sum(p.call)::BIGINT AS n_mna,
           count(*) FILTER (WHERE p.uncertainty >= t.unc_threshold) AS n_uncertain,
           count(*) FILTER (WHERE n.cropped) AS n_cropped,
           count(n.auto_label) AS n_auto,
           count(*) FILTER (WHERE n.auto_label <> p.call) AS n_auto_disagree,
           count(n.true_label) AS n_truth,
           sum(n.true_label)::BIGINT AS n_true_mna,
           sum(p.prob_calibrated) AS sum_prob,
           count(p.prob_calibrated) AS n_prob
    FROM predictions p
    JOIN thr t ON t.model_id = p.model_id
    JOIN nuclei n ON n.id = p.nucleus_id
    WHERE n.scan_id IN (SELECT scan_id FROM scope)
      AND NOT EXISTS (SELECT 1 FROM curated_labels x WHERE x.excluded AND x.nucleus_id = p.nucleus_id)
    GROUP BY n.scan_id, p.model_id
),
agg AS (
    SELECT sc.sample_id, b.model_id,
           sum(b.n_scored)::BIGINT AS n_scored,
           sum(b.n_mna)::BIGINT AS n_mna,
           sum(b.n_uncertain)::BIGINT AS n_uncertain,
           sum(b.n_cropped)::BIGINT AS n_cropped,
           sum(b.n_auto)::BIGINT AS n_auto,
           sum(b.n_auto_disagree)::BIGINT AS n_auto_disagree,
           sum(b.n_truth)::BIGINT AS n_truth,
           sum(b.n_true_mna)::BIGINT AS n_true_mna,
           sum(b.sum_prob) / sum(b.n_prob) AS mean_prob,
           count(*) AS n_scans_scored
    FROM per_scan b JOIN scope sc ON sc.scan_id = b.scan_id
    GROUP BY sc.sample_id, b.model_id
),
-- signals per nucleus as detectors counted them, over every detector-based model (not only the queried
-- ones): a property of the sample's scans (e.g. swapped channels) that every model's row must show
signals AS (
    SELECT sc.sample_id, median(p.det_nmi) AS median_nmi,
           median(p.det_mycn + coalesce(p.det_cluster, 0)) AS median_mycn
    FROM predictions p
    JOIN nuclei n ON n.id = p.nucleus_id
    JOIN scope sc ON sc.scan_id = n.scan_id
    WHERE p.det_nmi IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM curated_labels x WHERE x.excluded AND x.nucleus_id = p.nucleus_id)
    GROUP BY sc.sample_id
),
-- the scans (with a nucleus a curator has not excluded) each model scored, with when they were ingested
scored AS (
    SELECT sc.sample_id, b.model_id, b.scan_id, c.ingested_at
    FROM per_scan b JOIN scope sc ON sc.scan_id = b.scan_id JOIN scans c ON c.id = b.scan_id
),
-- per (sample, model): the most scans any model of the query scored that this model could have scored (a
-- retired model is not expected to score scans ingested after its retirement)
expected AS (
    SELECT a.sample_id, a.model_id, max(k) AS n_scans FROM (
        SELECT a.sample_id, a.model_id, o.model_id AS other, count(*) AS k
        FROM agg a JOIN models m ON m.id = a.model_id
        JOIN scored o ON o.sample_id = a.sample_id AND (m.retired_at IS NULL OR o.ingested_at <= m.retired_at)
        GROUP BY ALL) a
    GROUP BY ALL
)
SELECT s.id AS sample_id, s.name AS sample, s.kind AS sample_kind, s.expected_mna, s.genotype,
       m.id AS model_id, m.name AS model, m.kind AS model_kind, m.metrics, m.retired_at,
       a.n_scored, a.n_mna, a.n_uncertain, a.n_cropped, g.median_nmi, g.median_mycn, a.n_auto, a.n_auto_disagree, a.n_truth, a.n_true_mna, a.mean_prob,
       -- scans with a nucleus a curator has not excluded: this model's, and the most any model of the query has
       -- (for a retired model: of those ingested before it was retired)
       a.n_scans_scored, coalesce(e.n_scans, 0) AS n_scans
FROM agg a JOIN samples s ON s.id = a.sample_id JOIN models m ON m.id = a.model_id
LEFT JOIN signals g ON g.sample_id = a.sample_id
LEFT JOIN expected e ON e.sample_id = a.sample_id AND e.model_id = a.model_id
ORDER BY s.kind, s.name, m.id
"""

SUMMARY_COLUMNS = [
    "sample", "sample_kind", "model", "model_kind", "n_scored", "n_mna", "mna_pct", "ci_low_pct", "ci_high_pct",
    "corrected_pct", "corrected_low_pct", "corrected_high_pct", "expected_pct", "deviation_pp",
    "corrected_deviation_pp", "true_mna_pct", "call", "qc_flags", "uncertain_share", "auto_disagreement_share",
    "mean_prob", "correction", "retired",
]


def summarise_counts(row: dict, metrics: dict | None, rule: SampleCallRule = SAMPLE_CALL_RULE,
                     config: SummaryConfig = SUMMARY_CONFIG) -> dict:
    """Turn one (sample, model) row of counts into summary numbers.

    Args:
        row: ``n_scored, n_mna, n_uncertain, n_cropped, n_auto, n_auto_disagree, n_truth, n_true_mna,
            median_nmi, median_mycn`` (signals per nucleus as the sample's detector-based models counted
            them, None without one),
            expected_mna`` (fraction or None), ``mean_prob``; optional ``n_scans_scored`` (scans the
            model scored) and ``n_scans`` (the most any model scored), both counting scans with a
            nucleus no curator excluded.
        metrics: the model's metrics (for :func:`validation_rates`).

    Returns:
        dict with the numeric :data:`SUMMARY_COLUMNS` (percentages in 0-100), ``call``,
        ``qc_flags`` (list of str) and ``correction`` (where the rates came from).
    """
    n, k = int(row["n_scored"]), int(row["n_mna"] or 0)
    lo, hi = wilson_interval(k, n, config.confidence)
    out = {"n_scored": n, "n_mna": k, "mna_pct": 100.0 * k / n if n else math.nan,
           "ci_low_pct": 100.0 * lo, "ci_high_pct": 100.0 * hi}
    rates = validation_rates(metrics or {})
    recorded = rates or validation_rates(metrics or {}, useful_only=False)  # with rates no better than chance
    weak = has_weak_validation(metrics, config)
    flags = ["weak validation"] if weak else [] if recorded else ["no validation metrics"]
    # weak rates correct nothing: dividing by a small sensitivity + specificity - 1 sent a 16 % share to 100 %
    if rates and n and not weak:
        est = rogan_gladen(k, n, rates["sensitivity"], rates["specificity"], config.confidence,
                           rates["n_positive"], rates["n_negative"])
        out.update(corrected_pct=100 * est.estimate, corrected_low_pct=100 * est.low,
                   corrected_high_pct=100 * est.high, correction=f"{rates['source']} ({est.method})")
        if est.low >= est.high:  # the whole interval lay beyond 0 % or 100 % and was clipped
            flags.append("rates do not fit")
    else:
        out.update(corrected_pct=math.nan, corrected_low_pct=math.nan, corrected_high_pct=math.nan, correction="")
    expected = row.get("expected_mna")
    expected_pct = math.nan if expected is None or pd.isna(expected) else 100.0 * float(expected)
    out["expected_pct"] = expected_pct
    out["deviation_pp"] = out["mna_pct"] - expected_pct
    out["corrected_deviation_pp"] = out["corrected_pct"] - expected_pct
    n_truth = int(row.get("n_truth") or 0)
    out["true_mna_pct"] = 100.0 * int(row.get("n_true_mna") or 0) / n_truth if n_truth else math.nan
    # the count rule alone without a correction (NaN) or with one too weak to judge false positives by
    beyond = not (out["corrected_low_pct"] <= 0) or weak
    out["call"] = sample_call(n, k, rule, beyond_false_positives=beyond)
    unc = int(row.get("n_uncertain") or 0) / n if n else math.nan
    n_auto = int(row.get("n_auto") or 0)
    dis = int(row.get("n_auto_disagree") or 0) / n_auto if n_auto else math.nan
    out["uncertain_share"], out["auto_disagreement_share"] = unc, dis
    out["mean_prob"] = float(row["mean_prob"]) if row.get("mean_prob") is not None else math.nan
    if n < rule.min_nuclei:
        flags.insert(0, "few nuclei")
    if n and unc > config.max_uncertain_share:
        flags.append("high uncertainty")
    if n_auto and dis > config.max_disagreement_share:
        flags.append("auto-label disagreement")
    if n and int(row.get("n_cropped") or 0) / n > config.max_cropped_share:
        flags.append("oversized nuclei")
    nmi, mycn = row.get("median_nmi"), row.get("median_mycn")
    if nmi is not None and mycn is not None and not pd.isna(nmi) and not pd.isna(mycn) and mycn < nmi:
        flags.append("MYCN below reference")
    if out["call"] != sample_call(n, k, rule):  # heterogeneous by count, not beyond false positives
        flags.append("possible false positives")
    if out["call"] in ("non-MNA", "heterogeneous MNA") and out["corrected_high_pct"] > 100 * rule.mna_fraction:
        flags.append("possible false negatives")
    if out["call"] == "MNA" and out["corrected_low_pct"] <= 100 * rule.mna_fraction:
        flags.append("possibly heterogeneous")
    if int(row.get("n_scans_scored") or 0) < int(row.get("n_scans") or 0):
        flags.append("partly scored")
    genotype = genotype_label(row.get("genotype"))
    if genotype is not None and out["call"] not in ({1: "MNA", 0: "non-MNA"}[genotype], "not enough nuclei"):
        flags.append("call contradicts genotype")
    out["qc_flags"] = flags
    return out


def sample_summaries(store: Store, model: str | None = None, sample: str | None = None,
                     rule: SampleCallRule = SAMPLE_CALL_RULE, config: SummaryConfig = SUMMARY_CONFIG) -> pd.DataFrame:
    """One row per (sample, model) with the numbers described in the module docstring.

    Args:
        model: only this model (None: every model; with one model, 'partly scored' has nothing to compare).
        sample: only this sample (None: every sample).

    Returns:
        DataFrame with :data:`SUMMARY_COLUMNS` (``qc_flags`` as a list of str; ``retired`` True for a retired
        model's rows, which stay), ordered by
        sample kind, sample, model id. Samples without predictions are left out.
    """
    agg = store.query(_AGG_SQL, [float(config.entropy_threshold), float(config.mc_std_threshold), model, model,
                                 sample, sample])
    rows = []
    metrics_cache: dict[int, dict] = {}
    for rec in agg.to_dict("records"):
        mid = int(rec["model_id"])
        if mid not in metrics_cache:
            metrics_cache[mid] = json.loads(rec["metrics"]) if rec["metrics"] else {}
        out = summarise_counts(rec, metrics_cache[mid], rule, config)
        out.update(sample=rec["sample"], sample_kind=rec["sample_kind"], model=rec["model"],
                   model_kind=rec["model_kind"], retired=not pd.isna(rec["retired_at"]))
        rows.append(out)
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for col in ("n_scored", "n_mna"):
        df[col] = df[col].astype(np.int64)
    return df
