"""Wilson interval and Rogan-Gladen correction against published and hand-computed values."""

import math

import pytest

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


def test_rogan_gladen_delta_interval_by_hand():
    p, se, sp, n, npos, nneg = 0.30, 0.90, 0.95, 100, 200, 300
    pi = 0.25 / 0.85
    var = (p * (1 - p) / n + pi**2 * se * (1 - se) / npos + (1 - pi) ** 2 * sp * (1 - sp) / nneg) / 0.85**2
    half = 1.959963984540054 * math.sqrt(var)
    est = rogan_gladen(30, 100, se, sp, n_positive=npos, n_negative=nneg)
    assert est.method == "delta"
    assert est.low == pytest.approx(pi - half)
    assert est.high == pytest.approx(pi + half)


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
