"""When a model's validation says it should not be trusted.

One rule for the trainer's closing warning, the Retrain page's register gate and the store's
``weak validation`` QC flag: too few validation nuclei of a class to read a rate from, or a
sensitivity or specificity below one half (the model misses most nuclei of that class).
"""

from __future__ import annotations

import math

#: fewest validation nuclei of each class whose sensitivity / specificity are worth reading
MIN_VALIDATION_PER_CLASS = 10
#: below this sensitivity or specificity a model misses most nuclei of a class (0.5: a constant answer)
MIN_VALIDATION_RATE = 0.5


def _number(val: dict, key: str) -> float:
    """``val[key]`` as a float (NaN when missing or not a number)."""
    try:
        return float(val.get(key))
    except (TypeError, ValueError):
        return math.nan


def weak_validation_reasons(val: dict | None, min_per_class: int = MIN_VALIDATION_PER_CLASS,
                            min_rate: float = MIN_VALIDATION_RATE) -> list[str]:
    """Why a validation record (``metrics.json["validation"]``: ``n_positive, n_negative, sensitivity,
    specificity``) says the model should not be trusted; an empty list when nothing is found.

    Flags missing figures, fewer than ``min_per_class`` validation nuclei of either class, and a
    sensitivity or specificity below ``min_rate`` (e.g. a model that always answers MNA).
    """
    if not val:
        return ["the run wrote no validation figures"]
    reasons = []
    for key, what in (("n_positive", "MNA"), ("n_negative", "non-MNA")):
        n = _number(val, key)
        if not n >= min_per_class:
            n = 0 if math.isnan(n) else int(n)
            reasons.append(f"only {n} {what} {'nucleus' if n == 1 else 'nuclei'} in the validation split "
                           f"(want at least {min_per_class})")
    for key, misses in (("sensitivity", "MNA"), ("specificity", "non-MNA")):
        x = _number(val, key)
        if math.isnan(x):
            reasons.append(f"validation {key} is undefined")
        elif x < min_rate:
            reasons.append(f"validation {key} {x:.3f}: it misses most {misses} nuclei")
    return reasons
