"""The Cohn rule and the sample call: values from the INRG definitions."""

import numpy as np
import pytest

from genuine_core.rules import ProbeRule, SampleCallRule, amplification_threshold, is_amplified, sample_call


@pytest.mark.parametrize(
    "nmi, mycn, cluster, expected",
    [(2, 2, 0, 0), (2, 7, 0, 0), (2, 8, 0, 1), (2, 35, 0, 1), (2, 2, 1, 1), (3, 11, 0, 0), (3, 12, 0, 1), (0, 3, 0, 0), (0, 4, 0, 1)],
)
def test_cohn_rule_scalar(nmi, mycn, cluster, expected):
    assert is_amplified(nmi, mycn, cluster) == expected


def test_cohn_rule_vectorised_and_configurable():
    out = is_amplified(np.array([2, 2, 2]), np.array([7, 8, 2]), np.array([0, 0, 1]))
    assert out.tolist() == [0, 1, 1]
    her2 = ProbeRule(target="HER2", reference="CEP17", amplification_ratio=2.0, cluster_is_amplified=False)
    assert is_amplified(2, 4, 1, rule=her2) == 1
    assert is_amplified(2, 3, 1, rule=her2) == 0


def test_rule_validation():
    with pytest.raises(ValueError):
        ProbeRule(amplification_ratio=0)
    with pytest.raises(ValueError):
        SampleCallRule(min_nuclei=0)
    with pytest.raises(ValueError):
        SampleCallRule(mna_fraction=1)  # no share is above 100 %


@pytest.mark.parametrize(
    "n, k, call",
    [(10, 10, "not enough nuclei"), (100, 60, "MNA"), (100, 21, "MNA"), (100, 20, "heterogeneous MNA"),
     (100, 5, "heterogeneous MNA"), (100, 4, "non-MNA"), (100, 0, "non-MNA")],
)
def test_sample_call(n, k, call):
    assert sample_call(n, k) == call


def test_a_large_non_mna_sample_is_not_called_heterogeneous_for_its_false_positives():
    """At specificity 0.97, 500 non-amplified nuclei bring about 15 false MNA calls: 5+ MNA nuclei alone
    would call nearly every such sample heterogeneous; the corrected interval says they are noise."""
    from genuine_core.stats import rogan_gladen

    est = rogan_gladen(15, 500, 0.97, 0.97, n_positive=300, n_negative=300)
    assert est.low == 0
    assert sample_call(500, 15) == "heterogeneous MNA"  # the count rule alone
    assert sample_call(500, 15, beyond_false_positives=est.low > 0) == "non-MNA"
    more = rogan_gladen(60, 500, 0.97, 0.97, n_positive=300, n_negative=300)
    assert sample_call(500, 60, beyond_false_positives=more.low > 0) == "heterogeneous MNA"  # beyond the noise
    assert sample_call(500, 300, beyond_false_positives=False) == "MNA"  # the 20 % rule is not affected


def test_core_stays_free_of_ui_and_db_imports():
    import subprocess
    import sys

    code = "import sys, genuine_core, genuine_core.rules, genuine_core.cli; " \
           "bad = [m for m in ('streamlit', 'duckdb', 'torch') if m in sys.modules]; print(bad); sys.exit(len(bad))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("nmi", [0, 1, 2, 5])
def test_amplification_threshold_is_where_the_rule_switches(nmi):
    t = int(amplification_threshold(nmi))
    assert (is_amplified(nmi, t - 1), is_amplified(nmi, t)) == (0, 1)
    assert amplification_threshold(0) == 4.0  # no reference signal counts as one
