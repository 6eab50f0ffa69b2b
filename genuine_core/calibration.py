"""Temperature scaling of binary classifiers, and the predictive entropy of their probabilities.

Temperature scaling (Guo et al., ICML 2017): calibrated probability
``sigmoid(logit / T)`` with one scalar ``T > 0`` fitted by minimising the negative
log-likelihood on validation data. ``T`` does not change the ranking, so AUC and the
calls at a logit threshold are unchanged. Training stores the fitted ``T`` in the model's
config (``ModelConfig.temperature``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

from genuine_core.errors import InputError

T_MIN, T_MAX = 0.01, 100.0


def _float64(values) -> np.ndarray:
    """A NumPy array or torch tensor as a float64 array."""
    return np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float64)


def _as_arrays(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    z, y = _float64(logits).ravel(), _float64(labels).ravel()
    if len(z) != len(y):
        raise InputError(f"{len(z)} logits but {len(y)} labels")
    if len(z) == 0:
        raise InputError("no logits given")
    if not np.all(np.isfinite(z)):
        raise InputError("logits must be finite")
    if not np.all((y == 0) | (y == 1)):
        raise InputError("labels must be 0 or 1")
    return z, y


def fit_temperature(logits, labels) -> float:
    """Temperature ``T`` minimising the NLL of ``sigmoid(logits / T)`` (searched in [0.01, 100]).

    The 0/1 labels are replaced by Platt's (1999) targets ``(N+ + 1) / (N+ + 2)`` and
    ``1 / (N- + 2)``: on a validation set the model separates perfectly (small sets,
    easy sets) the plain NLL keeps falling as ``T`` shrinks and would make every
    probability 0 or 1; with these targets the minimum stays finite. This departs from
    Guo et al., who fit ``T`` on the 0/1 labels: on hundreds of nuclei the targets differ
    from 0/1 by under 1 %, but confident logits feel it, and ``T`` comes out larger
    (probabilities less confident, entropies higher): in simulations with a known ``T``,
    by 3-14 % on 600 nuclei, 8-37 % on 200 and up to 2.2x on 50, at a held-out NLL
    within 0.4 % of Guo's fit on 600 nuclei, up to 3.5 % worse on 200, and far better
    on 50 (where the 0/1 fit overfits).
    The NLL is convex in ``1/T``, hence unimodal in ``log T``: a bounded Brent search
    finds the global minimum.

    Args:
        logits: ``(N,)`` uncalibrated logits (NumPy or torch).
        labels: ``(N,)`` 0/1 labels; both classes must occur.

    Returns:
        The fitted temperature.

    Raises:
        InputError: mismatched lengths, empty input, non-finite logits, labels not 0/1,
            or a single class.
    """
    z, y = _as_arrays(logits, labels)
    if y.min() == y.max():
        raise InputError("fit_temperature needs both classes in the labels")
    z = np.clip(z, -1e6, 1e6)  # beyond that a logit is certainty either way; z / T_MIN must stay finite
    n_pos = y.sum()
    target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (len(y) - n_pos + 2))

    def nll(log_t: float) -> float:
        s = z / math.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - target * s))

    res = minimize_scalar(nll, bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded", options={"xatol": 1e-7})
    return float(math.exp(res.x))


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``sigmoid(logits / T)`` as float64."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    return expit(_float64(logits) / temperature)


def binary_entropy(p) -> np.ndarray:
    """Predictive entropy in bits of Bernoulli probabilities (0 = certain, 1 = p of 0.5)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
