"""Baselines with the GENUINE interface: ``resnet``, ``detector`` and ``ratio``.

- :class:`ResNetBaseline` (the paper's "ResNet"): encoder + dropout + linear head.
- :class:`DetectorBaseline` (the paper's "RetinaNet"): frozen detector; the call is the
  Cohn rule on detected counts (``detector_head="rule"``) or a small MLP on the box
  features and counts (``"learned"``).
- :class:`RatioBaseline`: green/red integrated intensity ratio inside the nucleus with a
  learned threshold (:meth:`RatioBaseline.fit_threshold`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from genuine_core.errors import InputError
from genuine_core.models.base import GenuineClassifier
from genuine_core.models.config import ModelConfig
from genuine_core.models.detector import (
    Detections,
    SignalDetector,
    count_detections,
    freeze,
)
from genuine_core.models.encoder import PatchEncoder
from genuine_core.models.genuine import FrozenDetectorMixin
from genuine_core.rules import MYCN_RULE, ProbeRule, is_amplified


class ResNetBaseline(GenuineClassifier, kind="resnet"):
    """Encoder features ``(N, C)`` -> Dropout -> Linear(1). Embedding = encoder features."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.encoder = PatchEncoder(config.encoder)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(self.encoder.out_dim, 1)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.encoder(x), None

    def head(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.out(self.dropout(z)).squeeze(1), None


def rule_logits(counts: torch.Tensor, scale: float = 1.0, rule: ProbeRule = MYCN_RULE) -> torch.Tensor:
    """Logits from signal counts whose sign is the Cohn rule's call.

    The call comes from :func:`genuine_core.rules.is_amplified`; the magnitude is the
    margin in signals: ``max(mycn - ratio * max(nmi, 1), 0) + clusters + 0.5`` when
    amplified, ``min(mycn - ratio * max(nmi, 1), 0) - 0.5`` otherwise, times ``scale``.

    Args:
        counts: ``(N, 3)`` counts (NMI, MYCN, cluster).
        scale: logits per signal of margin.
        rule: the counting rule.

    Returns:
        ``(N,)`` float32 logits; ``logit > 0`` exactly when the rule calls MNA.
    """
    c = counts.detach().cpu().numpy()
    amp = torch.as_tensor(np.atleast_1d(is_amplified(c[:, 0], c[:, 1], c[:, 2], rule)).astype(bool),
                          device=counts.device)
    counts = counts.float()
    margin = counts[:, 1] - rule.amplification_ratio * counts[:, 0].clamp(min=1)
    clusters = counts[:, 2] if rule.cluster_is_amplified else torch.zeros_like(margin)
    pos = margin.clamp(min=0) + clusters + 0.5
    neg = margin.clamp(max=0) - 0.5
    return scale * torch.where(amp, pos, neg)


class DetectorBaseline(FrozenDetectorMixin, GenuineClassifier, kind="detector"):
    """Classification from detections only.

    Features: ``concat(log1p(counts) (3), box features (3 * top_k * 6))`` where counts are
    detections with ``score >= detector.count_threshold``. Head ``rule``: Cohn rule on the
    counts (:func:`rule_logits`, no parameters). Head ``learned``: ``Linear(hidden) ->
    ReLU -> Dropout -> Linear(1)`` on the features. Embedding: the hidden layer
    (learned) or the features (rule).
    """

    has_detector = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.detector = freeze(SignalDetector(config.detector, config.patch_size))
        dim = 3 + config.box_feature_dim
        if config.detector_head == "learned":
            self.hidden = nn.Sequential(nn.Linear(dim, config.hidden), nn.ReLU(inplace=True))
            self.dropout = nn.Dropout(config.dropout)
            self.out = nn.Linear(config.hidden, 1)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, Detections]:
        box, detections = self.detect_features(x)
        counts = count_detections(detections, self.config.detector.count_threshold)
        return torch.cat([torch.log1p(counts.float()), box], dim=1), detections

    @staticmethod
    def counts_from_features(z: torch.Tensor) -> torch.Tensor:
        """Recover the integer counts ``(N, 3)`` stored (as log1p) in the features."""
        return torch.round(torch.expm1(z[:, :3])).long()

    def head(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.config.detector_head == "rule":
            return rule_logits(self.counts_from_features(z), self.config.rule_logit_scale), None
        h = self.hidden(z)
        return self.out(self.dropout(h)).squeeze(1), h


class RatioBaseline(GenuineClassifier, kind="ratio"):
    """Green/red integrated intensity ratio with a learned threshold.

    Inside the nucleus (pixels where any channel is > 0; patches are zero outside),
    ``r = (sum G + eps) / (sum R + eps)`` with ``eps = 1`` (one fully bright pixel).
    ``logit = slope * (log r - log_threshold)``. Features / embedding:
    ``(log1p(sum R), log1p(sum G), log r)``. Both parameters are fitted by
    :meth:`fit_threshold` (or by gradient descent like any other model).
    """

    eps = 1.0

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.log_threshold = nn.Parameter(torch.tensor(math.log(2.0)))
        self.log_slope = nn.Parameter(torch.tensor(math.log(4.0)))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        inside = (x.amax(dim=1) > 0).to(x.dtype)
        red = (x[:, 0] * inside).sum(dim=(1, 2))
        green = (x[:, 1] * inside).sum(dim=(1, 2))
        log_ratio = torch.log((green + self.eps) / (red + self.eps))
        return torch.stack([torch.log1p(red), torch.log1p(green), log_ratio], dim=1).float(), None

    def head(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.log_slope.exp() * (z[:, 2] - self.log_threshold), None

    @property
    def ratio_threshold(self) -> float:
        """The fitted green/red ratio at which the call flips (probability 0.5)."""
        return float(self.log_threshold.detach().exp())

    @torch.no_grad()
    def log_ratios(self, patches, batch_size: int = 256) -> torch.Tensor:
        """``log r`` for ``(N, 3, P, P)`` patches (NumPy or torch), as a float64 CPU tensor."""
        out = []
        for i in range(0, len(patches), batch_size):
            x = torch.as_tensor(np.asarray(patches[i:i + batch_size], dtype=np.float32)) \
                if not isinstance(patches, torch.Tensor) else patches[i:i + batch_size].float()
            self.check_input(x)
            out.append(self.features(x.to(self.log_threshold.device))[0][:, 2].double().cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def fit_threshold(self, patches, labels) -> float:
        """Fit the ratio threshold (max balanced accuracy) and the logistic slope.

        The threshold is the midpoint between consecutive sorted ``log r`` values that
        maximises balanced accuracy (sensitivity + specificity) / 2; the slope is then the
        maximum-likelihood logistic slope with that threshold fixed.

        Args:
            patches: ``(N, 3, P, P)`` float patches.
            labels: ``(N,)`` 0/1 labels (both classes needed).

        Returns:
            The fitted green/red ratio threshold.

        Raises:
            InputError: lengths differ or a class is missing.
        """
        y = np.asarray(labels).astype(np.float64).ravel()
        if len(y) != len(patches):
            raise InputError(f"{len(patches)} patches but {len(y)} labels")
        if not set(np.unique(y)) <= {0.0, 1.0} or y.min() == y.max():
            raise InputError("fit_threshold needs 0/1 labels with both classes present")
        lr = self.log_ratios(patches).numpy()
        order = np.argsort(lr, kind="stable")
        s, ys = lr[order], y[order]
        n_pos, n_neg = ys.sum(), len(ys) - ys.sum()
        # threshold between s[i-1] and s[i]: predict positive for indices >= i
        tp = n_pos - np.concatenate([[0.0], np.cumsum(ys)])
        tn = np.concatenate([[0.0], np.cumsum(1 - ys)])
        bal = (tp / n_pos + tn / n_neg) / 2
        distinct = np.concatenate([[True], s[1:] > s[:-1], [True]])  # only cut between distinct values
        bal = np.where(distinct, bal, -1.0)
        i = int(np.argmax(bal))
        if i == 0:
            t = s[0] - 1.0
        elif i == len(s):
            t = s[-1] + 1.0
        else:
            t = (s[i - 1] + s[i]) / 2
        slope = _fit_slope(torch.as_tensor(lr - t), torch.as_tensor(y))
        with torch.no_grad():
            self.log_threshold.fill_(float(t))
            self.log_slope.fill_(math.log(slope))
        return self.ratio_threshold


def _fit_slope(x: torch.Tensor, y: torch.Tensor) -> float:
    """Maximum-likelihood slope ``a > 0`` of ``P(y=1) = sigmoid(a * x)`` (LBFGS on log a)."""
    log_a = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_a], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")
    bce = nn.BCEWithLogitsLoss()

    def closure():
        opt.zero_grad()
        loss = bce(log_a.exp() * x, y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_a.detach().clamp(-5, 5).exp())
