"""Temperature scaling and calibration diagnostics for binary classifiers.

Temperature scaling (Guo et al., ICML 2017): calibrated probability
``sigmoid(logit / T)`` with one scalar ``T > 0`` fitted by minimising the negative
log-likelihood on validation data. ``T`` does not change the ranking, so AUC and the
calls at a logit threshold are unchanged. The fitted ``T`` is stored in the model's
config (``ModelConfig.temperature``, see :func:`calibrate_model`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit

from genuine_core.errors import InputError

T_MIN, T_MAX = 0.01, 100.0


def _as_arrays(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits.detach().cpu() if hasattr(logits, "detach") else logits, dtype=np.float64).ravel()
    y = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels, dtype=np.float64).ravel()
    if len(z) != len(y):
        raise InputError(f"{len(z)} logits but {len(y)} labels")
    if len(z) == 0:
        raise InputError("no logits given")
    if not np.all(np.isfinite(z)):
        raise InputError("logits must be finite")
    if not np.all((y == 0) | (y == 1)):
        raise InputError("labels must be 0 or 1")
    return z, y


def binary_nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats) of 0/1 ``labels`` under ``sigmoid(logits / T)``."""
    z, y = _as_arrays(logits, labels)
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    s = z / temperature
    # -[y log sig(s) + (1-y) log(1-sig(s))] = softplus(s) - y s
    return float(np.mean(np.logaddexp(0.0, s) - y * s))


def fit_temperature(logits, labels) -> float:
    """Temperature ``T`` minimising the NLL of ``sigmoid(logits / T)`` (searched in [0.01, 100]).

    The 0/1 labels are replaced by Platt's (1999) targets ``(N+ + 1) / (N+ + 2)`` and
    ``1 / (N- + 2)``: on a validation set the model separates perfectly (small sets,
    easy sets) the plain NLL keeps falling as ``T`` shrinks and would make every
    probability 0 or 1; with these targets the minimum stays finite. On hundreds of
    nuclei the targets differ from 0/1 by under 1 %. The NLL is convex in ``1/T``,
    hence unimodal in ``log T``: a bounded Brent search finds the global minimum.

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
    z = np.asarray(logits.detach().cpu() if hasattr(logits, "detach") else logits, dtype=np.float64)
    return expit(z / temperature)


def binary_entropy(p) -> np.ndarray:
    """Predictive entropy in bits of Bernoulli probabilities (0 = certain, 1 = p of 0.5)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def reliability_table(probs, labels, n_bins: int = 10) -> pd.DataFrame:
    """Equal-width reliability bins.

    Returns:
        One row per non-empty bin: ``bin_lo, bin_hi, count, mean_prob, frac_pos``.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    p, y = _as_arrays(probs, labels)
    if np.any((p < 0) | (p > 1)):
        raise InputError("probabilities must be in [0, 1]")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            rows.append({"bin_lo": b / n_bins, "bin_hi": (b + 1) / n_bins, "count": int(sel.sum()),
                         "mean_prob": float(p[sel].mean()), "frac_pos": float(y[sel].mean())})
    return pd.DataFrame(rows, columns=["bin_lo", "bin_hi", "count", "mean_prob", "frac_pos"])


def expected_calibration_error(probs, labels, n_bins: int = 10) -> float:
    """ECE: count-weighted mean of |mean probability - fraction positive| over the bins."""
    t = reliability_table(probs, labels, n_bins)
    return float(np.sum(t["count"] * np.abs(t["mean_prob"] - t["frac_pos"])) / t["count"].sum())


def calibrate_model(model, logits, labels) -> float:
    """Fit a temperature on validation ``logits``/``labels`` and store it in ``model.config``.

    Args:
        model: a :class:`~genuine_core.models.GenuineClassifier`.
        logits, labels: the model's validation logits and the 0/1 labels.

    Returns:
        The fitted temperature.
    """
    t = fit_temperature(logits, labels)
    model.set_calibration(temperature=t)
    return t
