"""Percentages as reports and the dashboard print them: never on the wrong side of a rule's boundary.

At one decimal a sample with 20.04 % of its nuclei called MNA printed as "20.0 %" beside the call "MNA"
(more than 20 %), and a corrected interval starting at 0.04 % as "0.0 %" beside a heterogeneous call (an
interval reaching 0 % would have made it non-MNA). :func:`pct_digits` adds decimals until the printed
value lies on the same side of every boundary as the value itself.

Every place that prints a summary percentage (the sample report, the Cases page) rounds through
:func:`pct_round` / :func:`pct_text`, so they print the same digits (the dashboard's table formats with
JavaScript, which rounds a tie such as 6.25 up where Python rounds it to even: the table gets values
rounded here already).
"""

from __future__ import annotations

import math

from genuine_core.rules import SAMPLE_CALL_RULE

#: the percentages the rules compare with: 0 % (a corrected interval reaching 0 % makes a heterogeneous
#: count non-MNA) and the MNA threshold (``SampleCallRule.mna_fraction``, also the 'possible false
#: negatives' bound)
BOUNDARIES = (0.0, 100 * SAMPLE_CALL_RULE.mna_fraction)
MAX_DIGITS = 12


def pct_digits(value: float, digits: int = 1, boundaries: tuple[float, ...] = BOUNDARIES) -> int:
    """Decimals to print ``value`` with: ``digits``, or more while fewer would print a value above a
    boundary as the boundary itself (NaN and infinities: ``digits``)."""
    if value is None or not math.isfinite(value):
        return digits
    d = digits
    while d < MAX_DIGITS and any(value > b >= float(f"{value:.{d}f}") for b in boundaries):
        d += 1
    return d


def pct_round(value: float, digits: int = 1) -> float:
    """``value`` rounded as :func:`pct_text` prints it (NaN stays NaN)."""
    if value is None or not math.isfinite(value):
        return math.nan if value is None else float(value)
    return float(f"{value:.{pct_digits(value, digits)}f}")


def pct_text(value: float, digits: int = 1, missing: str = "-") -> str:
    """``value`` (a percentage) as text with :func:`pct_digits` decimals; ``missing`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{value:.{pct_digits(value, digits)}f}"
