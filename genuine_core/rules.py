"""Clinical counting rules, kept in one parameterised place.

Sources:
- Cohn et al., J Clin Oncol 2009 (INRG): a nucleus is MYCN amplified (MNA) when the
  MYCN signal count is at least 4x the reference (NMI / chromosome 2) count; clustered
  signals count as amplification.
- Ambros et al., Br J Cancer 2009 (INRG consensus on MYCN testing): amplification is a
  more than 4-fold MYCN signal excess over the reference; a 2-4-fold excess is MYCN gain.
  :func:`is_amplified` follows Cohn's "at least 4x" (exactly 4x counts as amplified), as the
  GENUINE paper's labels do; ``ProbeRule.amplification_ratio`` moves the boundary.
- Theissen et al., Clin Cancer Res 2009: heterogeneous MYCN amplification (hetMNA) when
  at least 5 amplified cells stand beside non-amplified tumour cells.
- Campbell et al., Eur J Cancer 2020 (Children's Oncology Group): homogeneous MNA when more
  than 20 % of the tumour cells are amplified, heterogeneous MNA at 20 % or fewer.

The same functions serve other probe pairs (e.g. HER2/CEP17) through ``ProbeRule``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbeRule:
    """A target/reference counting rule.

    Attributes:
        target: name of the target probe (e.g. ``"MYCN"``).
        reference: name of the reference probe (e.g. ``"NMI"``).
        amplification_ratio: target/reference ratio at or above which a nucleus is amplified.
        gain_ratio: ratio at or above which (and below amplification) a nucleus shows gain.
        cluster_is_amplified: whether any target cluster alone makes a nucleus amplified.
    """

    target: str = "MYCN"
    reference: str = "NMI"
    amplification_ratio: float = 4.0
    gain_ratio: float = 2.0
    cluster_is_amplified: bool = True

    def __post_init__(self) -> None:
        if not self.amplification_ratio > 0:
            raise ValueError("amplification_ratio must be > 0")
        if not 0 < self.gain_ratio <= self.amplification_ratio:
            raise ValueError("gain_ratio must be in (0, amplification_ratio]")


MYCN_RULE = ProbeRule()


def amplification_threshold(n_reference: int, rule: ProbeRule = MYCN_RULE) -> float:
    """Target count at or above which :func:`is_amplified` calls a nucleus with ``n_reference``
    reference signals amplified (no reference signal counts as one)."""
    return rule.amplification_ratio * max(int(n_reference), 1)


def is_amplified(n_reference, n_target, n_cluster=0, rule: ProbeRule = MYCN_RULE):
    """Cohn rule per nucleus: 1 when target >= ratio x reference, or any cluster.

    Works on scalars or NumPy arrays (element-wise). A nucleus with no reference signal
    counts as having one (the ratio is undefined otherwise): it is amplified with at least
    ``ratio`` target signals, or a cluster.

    Returns:
        int or int array: 1 = MNA, 0 = non-MNA.
    """
    ref = np.maximum(np.asarray(n_reference), 1)
    tgt = np.asarray(n_target)
    amp = tgt >= rule.amplification_ratio * ref
    if rule.cluster_is_amplified:
        amp = amp | (np.asarray(n_cluster) > 0)
    out = amp.astype(np.int64)
    return int(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class SampleCallRule:
    """Thresholds for the sample-level call.

    Attributes:
        min_nuclei: fewer scored nuclei than this gives "not enough nuclei"
            (INRG consensus asks for at least 50 evaluable tumour cells; Ambros 2009).
        mna_fraction: predicted MNA share above which the sample is called (homogeneous) MNA
            (COG: more than 20 % amplified tumour cells; Campbell 2020).
        het_min_cells: at least this many amplified nuclei beside non-amplified ones give
            "heterogeneous MNA" (Theissen 2009).
    """

    min_nuclei: int = 50
    mna_fraction: float = 0.2
    het_min_cells: int = 5

    def __post_init__(self) -> None:
        if self.min_nuclei < 1:
            raise ValueError("min_nuclei must be >= 1")
        if not 0 <= self.mna_fraction < 1:
            raise ValueError("mna_fraction must be in [0, 1)")
        if self.het_min_cells < 1:
            raise ValueError("het_min_cells must be >= 1")


SAMPLE_CALL_RULE = SampleCallRule()
#: every call :func:`sample_call` returns
SAMPLE_CALLS = ("MNA", "heterogeneous MNA", "non-MNA", "not enough nuclei")
#: what a pathologist may sign out a sample as (``store.signout``): a rule call, or none of them
SIGN_OUT_CALLS = SAMPLE_CALLS + ("not assessable",)


def sample_call(n_scored: int, n_mna: int, rule: SampleCallRule = SAMPLE_CALL_RULE,
                beyond_false_positives: bool = True) -> str:
    """Clinical call for one sample from per-nucleus calls.

    Args:
        n_scored, n_mna: nuclei scored and nuclei called MNA by a classifier.
        beyond_false_positives: whether the MNA calls exceed what the classifier's
            false-positive rate explains (e.g. the lower bound of the corrected prevalence
            is above 0). A classifier with specificity below 1 calls some non-amplified
            nuclei MNA, so in a large enough non-MNA sample ``het_min_cells`` is always
            reached: without this evidence the sample is called non-MNA, not heterogeneous.

    Returns one of ``"not enough nuclei"``, ``"MNA"``, ``"heterogeneous MNA"``, ``"non-MNA"``.
    """
    if n_scored < rule.min_nuclei:
        return "not enough nuclei"
    if n_mna / n_scored > rule.mna_fraction:
        return "MNA"
    if n_mna >= rule.het_min_cells and beyond_false_positives:
        return "heterogeneous MNA"
    return "non-MNA"
