"""Wilson interval and Rogan-Gladen correction against published, hand-computed and reference (scipy) values,
and their properties on random counts (Hypothesis)."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genuine_core.stats import rogan_gladen, wilson_interval


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        # Newcombe, Stat Med 1998, Table I (method 3, Wilson score without continuity correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=5e-5)
    assert hi == pytest.approx(high, abs=5e-5)


def test_wilson_edges_and_levels():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10)[1] == 1.0
    lo95, hi95 = wilson_interval(5, 10)
    lo99, hi99 = wilson_interval(5, 10, confidence=0.99)
    assert lo99 < lo95 < 0.5 < hi95 < hi99
    assert lo95 == pytest.approx(1 - hi95)  # symmetric at p = 0.5
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


def test_rogan_gladen_point_estimate_by_hand():
    # p = 0.30, Se = 0.90, Sp = 0.95: (0.30 + 0.95 - 1) / (0.90 + 0.95 - 1) = 0.25 / 0.85
    est = rogan_gladen(30, 100, 0.90, 0.95)
    assert est.estimate == pytest.approx(0.25 / 0.85)
    assert est.raw == pytest.approx(0.25 / 0.85)
    # Wilson bounds of 30/100 mapped through the same correction
    lo, hi = wilson_interval(30, 100)
    assert est.low == pytest.approx((lo - 0.05) / 0.85)
    assert est.high == pytest.approx((hi - 0.05) / 0.85)
    assert est.method == "wilson-transformed"


def test_rogan_gladen_perfect_classifier_is_identity():
    est = rogan_gladen(37, 120, 1.0, 1.0)
    assert est.estimate == pytest.approx(37 / 120)
    assert (est.low, est.high) == pytest.approx(wilson_interval(37, 120))


def test_rogan_gladen_lang_reiczigel_interval_by_hand():
    # Lang & Reiczigel 2014: pseudo-counts, then a Wald interval around the adjusted estimate plus dP
    k, n, se, sp, npos, nneg, z = 30, 100, 0.90, 0.95, 200, 300, 1.959963984540054
    ap = (k + z * z / 2) / (n + z * z)
    se_, sp_ = (npos * se + 1) / (npos + 2), (nneg * sp + 1) / (nneg + 2)
    pi = (ap + sp_ - 1) / (se_ + sp_ - 1)
    vse, vsp = se_ * (1 - se_) / (npos + 2), sp_ * (1 - sp_) / (nneg + 2)
    d = 2 * z * z * (pi * vse - (1 - pi) * vsp)
    half = z * math.sqrt((ap * (1 - ap) / (n + z * z) + pi**2 * vse + (1 - pi) ** 2 * vsp) / (se_ + sp_ - 1) ** 2)
    est = rogan_gladen(k, n, se, sp, n_positive=npos, n_negative=nneg)
    assert est.method == "lang-reiczigel"
    assert est.estimate == pytest.approx(0.25 / 0.85)  # the point estimate stays the plain Rogan-Gladen value
    assert est.low == pytest.approx(pi + d - half)
    assert est.high == pytest.approx(pi + d + half)


@pytest.mark.parametrize("k", [0, 40, 100])
def test_rogan_gladen_interval_keeps_a_width_after_a_perfect_validation(k):
    """Sensitivity and specificity of 1 on 200 + 300 nuclei do not make the correction exact
    (the delta method gave an interval of width 0 at 0 % and 100 % calls)."""
    est = rogan_gladen(k, 100, 1.0, 1.0, n_positive=200, n_negative=300)
    assert est.high - est.low > 0.01
    assert est.low <= est.estimate <= est.high


@pytest.mark.parametrize("k, n, se, sp, npos, nneg", [(1684, 3000, 0.9195, 1.0, 10000, 1), (2, 2662, 1.0, 1.0, 100, 3)])
def test_rogan_gladen_estimate_stays_inside_its_interval_with_tiny_validation_sets(k, n, se, sp, npos, nneg):
    est = rogan_gladen(k, n, se, sp, n_positive=npos, n_negative=nneg)
    assert est.low <= est.estimate <= est.high and est.high > est.low


@pytest.mark.parametrize("prevalence", [0.0, 0.05, 0.5, 0.95])
def test_rogan_gladen_interval_covers_the_true_prevalence(prevalence):
    """Simulated samples and validation sets: the 95 % interval holds the truth about 95 % of the time."""
    rng = np.random.default_rng(7)
    se, sp, n, npos, nneg, runs = 0.93, 0.96, 150, 120, 180, 2000
    p_call = prevalence * se + (1 - prevalence) * (1 - sp)
    hits = 0
    for k, tp, tn in zip(rng.binomial(n, p_call, runs), rng.binomial(npos, se, runs), rng.binomial(nneg, sp, runs)):
        se_hat, sp_hat = tp / npos, tn / nneg
        est = rogan_gladen(int(k), n, se_hat, sp_hat, n_positive=npos, n_negative=nneg)
        hits += est.low <= prevalence <= est.high
    assert 0.92 <= hits / runs <= 0.995


def test_rogan_gladen_clips_and_validates():
    # apparent prevalence below the false-positive rate: raw < 0, clipped to 0
    est = rogan_gladen(1, 100, 0.9, 0.9)
    assert est.raw < 0 and est.estimate == 0.0 and est.low == 0.0
    est = rogan_gladen(100, 100, 0.8, 0.99)
    assert est.raw > 1 and est.estimate == 1.0 and est.high == 1.0
    with pytest.raises(ValueError):
        rogan_gladen(5, 10, 0.5, 0.5)
    with pytest.raises(ValueError):
        rogan_gladen(5, 10, 1.2, 0.9)
    assert math.isnan(rogan_gladen(0, 0, 0.9, 0.9).estimate)


# ----------------------------------------------------------------------------- against references, and properties
_SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@st.composite
def _counts(draw, max_n: int = 5000) -> tuple[int, int]:
    n = draw(st.integers(1, max_n))
    return draw(st.integers(0, n)), n


@pytest.mark.parametrize("n", [1, 2, 5, 49, 50, 51, 1000])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_scipy_on_a_grid_with_edges(n, confidence):
    from scipy.stats import binomtest

    for k in sorted({0, 1, n // 5, n // 2, n - 1, n}):
        ref = binomtest(k, n).proportion_ci(confidence, method="wilson")
        assert wilson_interval(k, n, confidence) == pytest.approx((ref.low, ref.high), abs=1e-12)


def _lang_reiczigel(k, n, se, sp, npos, nneg, z=1.959963984540054):
    """Lang & Reiczigel 2014 as published, written out again: pseudo-counts z^2/2 (sample) and 1 (validation
    sets), Wald interval around the adjusted estimate shifted by dP, clipped to [0, 1]."""
    ap, n_ = (k + z * z / 2) / (n + z * z), n + z * z
    se_, sp_ = (se * npos + 1) / (npos + 2), (sp * nneg + 1) / (nneg + 2)
    j = se_ + sp_ - 1
    if j <= 0:
        return 0.0, 1.0
    tp = (ap + sp_ - 1) / j
    v_se, v_sp = se_ * (1 - se_) / (npos + 2), sp_ * (1 - sp_) / (nneg + 2)
    half = z * math.sqrt(ap * (1 - ap) / n_ + tp * tp * v_se + (1 - tp) ** 2 * v_sp) / abs(j)
    shift = 2 * z * z * (tp * v_se - (1 - tp) * v_sp)
    return min(1, max(0, tp + shift - half)), min(1, max(0, tp + shift + half))


@pytest.mark.parametrize("n", [1, 5, 50, 3000])
@pytest.mark.parametrize("se, sp", [(0.51, 0.6), (0.9, 0.95), (1.0, 0.97), (0.97, 1.0), (1.0, 1.0)])
@pytest.mark.parametrize("npos, nneg", [(1, 1), (2, 3), (275, 325)])
def test_lang_reiczigel_matches_the_published_formula_on_a_grid(n, se, sp, npos, nneg):
    for k in sorted({0, 1, n // 5, n}):
        est = rogan_gladen(k, n, se, sp, n_positive=npos, n_negative=nneg)
        lo, hi = _lang_reiczigel(k, n, se, sp, npos, nneg)
        assert est.estimate == pytest.approx(min(1, max(0, (k / n + sp - 1) / (se + sp - 1))))
        # the published bounds, widened only where they would leave out the point estimate
        assert (est.low, est.high) == pytest.approx((min(lo, est.estimate), max(hi, est.estimate)), abs=1e-12)


@_SETTINGS
@given(_counts(), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_holds_the_share_inside_the_unit_interval_and_narrows_with_more_nuclei(kn, confidence):
    k, n = kn
    lo, hi = wilson_interval(k, n, confidence)
    assert 0 <= lo <= k / n <= hi <= 1
    lo2, hi2 = wilson_interval(3 * k, 3 * n, confidence)
    assert hi2 - lo2 < hi - lo
    if k < n:  # one more MNA nucleus moves both bounds up
        up = wilson_interval(k + 1, n, confidence)
        assert up[0] >= lo and up[1] >= hi


_RATES = st.floats(0.0, 1.0, allow_nan=False)
_VALIDATION = st.one_of(st.none(), st.integers(1, 3000))


@_SETTINGS
@given(_counts(), _RATES, _RATES, _VALIDATION, _VALIDATION)
def test_corrected_interval_holds_its_estimate_inside_the_unit_interval(kn, se, sp, npos, nneg):
    k, n = kn
    if se + sp <= 1:
        with pytest.raises(ValueError, match="must exceed 1"):
            rogan_gladen(k, n, se, sp, n_positive=npos, n_negative=nneg)
        return
    est = rogan_gladen(k, n, se, sp, n_positive=npos, n_negative=nneg)
    assert 0 <= est.low <= est.estimate <= est.high <= 1
    assert est.method == ("lang-reiczigel" if npos and nneg else "wilson-transformed")
    if k < n and est.method == "wilson-transformed":  # monotone in the share called MNA
        up = rogan_gladen(k + 1, n, se, sp)
        assert up.estimate >= est.estimate and up.low >= est.low and up.high >= est.high
