"""Summary percentages print on the same side of the rules' boundaries (0 %, 20 %) as their values, and
the report and the Cases page print the same digits."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genuine_core.percent_text import pct_digits, pct_round, pct_text
from store.export import _report_facts
from store.summary import summarise_counts


@pytest.mark.parametrize("value, text", [
    (20.04, "20.04"),       # above 20 %: "20.0" would contradict the call MNA (more than 20 %)
    (20.0, "20.0"),         # exactly 20 %: heterogeneous, printed as is
    (19.96, "20.0"),        # 20 % or fewer stays so when rounded
    (20.0004, "20.0004"),
    (0.04, "0.04"),         # a corrected bound above 0 % is not printed as 0 %
    (0.0, "0.0"),
    (6.25, "6.2"),          # Python rounds the tie to even; the Cases table gets this value rounded already
    (33.333, "33.3"),
    (float("nan"), "-"),
])
def test_pct_text_keeps_the_side_of_each_boundary(value, text):
    assert pct_text(value) == text
    if not math.isnan(value):
        assert float(text) == pct_round(value)
        assert (float(text) > 20) == (value > 20) and (float(text) > 0) == (value > 0)


def test_pct_digits_is_one_away_from_the_boundaries():
    assert pct_digits(45.67) == 1 and pct_digits(float("inf")) == 1


def _row(n: int, k: int) -> dict:
    return {"n_scored": n, "n_mna": k, "n_uncertain": 0, "n_cropped": 0, "n_auto": 0, "n_auto_disagree": 0,
            "n_truth": 0, "n_true_mna": 0, "median_nmi": None, "median_mycn": None, "expected_mna": None,
            "mean_prob": 0.2}


def test_report_never_prints_20_0_percent_beside_an_mna_call():
    """501 of 2500 nuclei (20.04 %) are more than 20 %: the call is MNA, and the report says 20.04 %."""
    import pandas as pd

    metrics = {"validation": {"sensitivity": 1.0, "specificity": 1.0}}  # corrected = raw share
    out = summarise_counts(_row(2500, 501), metrics)
    assert out["call"] == "MNA"
    r = pd.Series(out)
    info = {"kind": "case", "genotype": None, "expected_mna": None}
    nuclei = pd.DataFrame({"excluded": [False], "curated_label": [None], "scan_id": [1]})
    facts = dict(_report_facts("S", info, nuclei, ("m", r), None))
    assert facts["call (m)"] == "MNA"
    assert facts["MNA % (m)"].startswith("20.04 % (95 % CI ")
    assert "corrected 20.04 %" in facts["MNA % (m)"]


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.integers(50, 200_000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_the_printed_share_agrees_with_the_call(nk):
    """Whatever the counts, the printed MNA % reads above 20 % exactly when the call is MNA."""
    n, k = nk
    out = summarise_counts(_row(n, k), {"validation": {"sensitivity": 0.97, "specificity": 0.97,
                                                       "n_positive": 275, "n_negative": 325}})
    printed = float(pct_text(out["mna_pct"]))
    assert (printed > 20) == (out["call"] == "MNA")
    low = float(pct_text(out["corrected_low_pct"]))  # a printed 0 % bound is what makes a count non-MNA
    assert (low > 0) == (out["corrected_low_pct"] > 0)
