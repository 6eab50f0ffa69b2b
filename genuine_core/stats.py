"""Proportions with confidence intervals, and prevalence corrected for classifier error.

- :func:`wilson_interval`: Wilson score interval for a binomial proportion
  (Wilson, J Am Stat Assoc 1927; recommended over the Wald interval by
  Brown, Cai & DasGupta, Stat Sci 2001).
- :func:`rogan_gladen`: the Rogan-Gladen estimator of true prevalence from an
  apparent (predicted) prevalence and the classifier's sensitivity and specificity
  (Rogan & Gladen, Am J Epidemiol 1978), with a confidence interval that
  includes the sampling error of sensitivity and specificity (Lang & Reiczigel,
  Prev Vet Med 2014) when their validation counts are known.

Used for sample-level MNA fractions: ``k`` of ``n`` nuclei called MNA by a model
whose validation sensitivity/specificity are known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


def z_value(confidence: float) -> float:
    """The two-sided standard normal quantile of ``confidence`` (1.96 for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _check_counts(k: int, n: int) -> None:
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for the proportion ``k / n``.

    Args:
        k: successes (e.g. nuclei called MNA), ``0 <= k <= n``.
        n: trials (nuclei scored).
        confidence: two-sided confidence level.

    Returns:
        ``(low, high)`` as fractions in [0, 1]; ``(0.0, 1.0)`` when ``n == 0``.

    Raises:
        ValueError: counts out of range or confidence not in (0, 1).
    """
    _check_counts(k, n)
    z = z_value(confidence)
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Exact bounds at the edges (the formula gives them up to rounding).
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class PrevalenceEstimate:
    """A prevalence corrected for misclassification.

    Attributes:
        estimate: corrected prevalence, clipped to [0, 1].
        low: lower confidence bound, in [0, 1].
        high: upper confidence bound, in [0, 1].
        raw: the uncorrected Rogan-Gladen value (may lie outside [0, 1]).
        method: ``"wilson-transformed"`` (sensitivity/specificity taken as known)
            or ``"lang-reiczigel"`` (their sampling error included).
    """

    estimate: float
    low: float
    high: float
    raw: float
    method: str


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def rogan_gladen(
    k: int,
    n: int,
    sensitivity: float,
    specificity: float,
    confidence: float = 0.95,
    n_positive: int | None = None,
    n_negative: int | None = None,
) -> PrevalenceEstimate:
    """Rogan-Gladen corrected prevalence with a confidence interval.

    ``pi = (p + specificity - 1) / (sensitivity + specificity - 1)`` where ``p = k / n``
    is the apparent prevalence.

    Interval: when the validation set sizes ``n_positive`` (truly positive nuclei the
    sensitivity was measured on) and ``n_negative`` (for specificity) are given, the
    adjusted interval of Lang & Reiczigel (2014), which adds the sampling error of
    sensitivity and specificity to that of ``p`` and, unlike the plain delta method,
    keeps a width at 0 % or 100 % calls and at a validation sensitivity or
    specificity of 1. Otherwise sensitivity and specificity are treated as known and
    the Wilson bounds of ``p`` are mapped through the (monotone) correction.
    Bounds and estimate are clipped to [0, 1].

    Args:
        k: nuclei called positive; n: nuclei scored.
        sensitivity, specificity: classifier's validation values in [0, 1], with
            ``sensitivity + specificity > 1`` (better than chance).
        confidence: two-sided level.
        n_positive, n_negative: validation counts behind sensitivity / specificity.

    Raises:
        ValueError: bad counts, rates outside [0, 1], or a classifier no better than chance.
    """
    _check_counts(k, n)
    for name, v in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not 0 <= v <= 1 or math.isnan(v):
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    for name, count in (("n_positive", n_positive), ("n_negative", n_negative)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError(f"{name} must be a whole number >= 1 or None, got {count!r}")
    youden = sensitivity + specificity - 1
    if youden <= 0:
        raise ValueError(f"sensitivity + specificity must exceed 1 for a correction, got {sensitivity + specificity}")
    if n == 0:
        return PrevalenceEstimate(float("nan"), 0.0, 1.0, float("nan"), "wilson-transformed")
    p = k / n
    raw = (p + specificity - 1) / youden
    z = z_value(confidence)
    if n_positive and n_negative:
        low, high = _lang_reiczigel_bounds(k, n, sensitivity, specificity, z, n_positive, n_negative)
        # with a handful of validation nuclei the pseudo-counts move the interval off the estimate: keep it inside
        est = _clip01(raw)
        return PrevalenceEstimate(est, min(low, est), max(high, est), raw, "lang-reiczigel")
    lo, hi = wilson_interval(k, n, confidence)
    return PrevalenceEstimate(
        _clip01(raw),
        _clip01((lo + specificity - 1) / youden),
        _clip01((hi + specificity - 1) / youden),
        raw,
        "wilson-transformed",
    )


def _lang_reiczigel_bounds(k: int, n: int, sensitivity: float, specificity: float, z: float,
                           n_positive: int, n_negative: int) -> tuple[float, float]:
    """Adjusted Wald interval for the Rogan-Gladen prevalence (Lang & Reiczigel 2014, eqs 6-17).

    Adds pseudo-counts (``z**2 / 2`` calls of each kind to the sample, one success
    and one failure to each validation set), then centres a Wald interval on the
    adjusted estimate shifted by the bias term ``dP``. Returns bounds in [0, 1].
    """
    z2 = z * z
    n_adj = n + z2
    p_adj = (k + z2 / 2) / n_adj
    ns, nc = n_positive + 2, n_negative + 2
    se = (n_positive * sensitivity + 1) / ns
    sp = (n_negative * specificity + 1) / nc
    youden = se + sp - 1
    if youden <= 0:  # tiny validation sets pulled both rates to chance
        return 0.0, 1.0
    pi = (p_adj + sp - 1) / youden
    var_se, var_sp = se * (1 - se) / ns, sp * (1 - sp) / nc
    shift = 2 * z2 * (pi * var_se - (1 - pi) * var_sp)
    var = (p_adj * (1 - p_adj) / n_adj + pi**2 * var_se + (1 - pi) ** 2 * var_sp) / youden**2
    half = z * math.sqrt(var)
    return _clip01(pi + shift - half), _clip01(pi + shift + half)
