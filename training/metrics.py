"""Evaluation metrics: binary classification rates, detection AP and count accuracy.

Pure NumPy; every function documents the edge cases it returns for (empty classes
give NaN rates rather than a misleading 0 or 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BinaryMetrics:
    """Confusion counts and rates of binary calls against reference labels.

    Rates are fractions in [0, 1] (NaN when undefined, e.g. TPR without positives).
    """

    tp: int
    fp: int
    tn: int
    fn: int
    tpr: float
    tnr: float
    precision: float
    f1: float
    accuracy: float
    n: int

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN becomes None)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def binary_metrics(calls, labels) -> BinaryMetrics:
    """TPR (sensitivity), TNR (specificity), precision, F1 and accuracy.

    Args:
        calls: ``(N,)`` predicted labels in {0, 1}.
        labels: ``(N,)`` reference labels in {0, 1}.

    Raises:
        ValueError: shapes differ or values are not 0/1.
    """
    c = np.asarray(calls).astype(np.int64).ravel()
    y = np.asarray(labels).astype(np.int64).ravel()
    if c.shape != y.shape:
        raise ValueError(f"calls {c.shape} and labels {y.shape} differ in shape")
    if not (np.isin(c, (0, 1)).all() and np.isin(y, (0, 1)).all()):
        raise ValueError("calls and labels must be 0 or 1")
    tp = int(((c == 1) & (y == 1)).sum())
    fp = int(((c == 1) & (y == 0)).sum())
    tn = int(((c == 0) & (y == 0)).sum())
    fn = int(((c == 0) & (y == 1)).sum())
    tpr, tnr, prec = _div(tp, tp + fn), _div(tn, tn + fp), _div(tp, tp + fp)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    return BinaryMetrics(tp, fp, tn, fn, tpr, tnr, prec, f1, _div(tp + tn, len(c)), int(len(c)))


def bce_with_logits(logits, labels) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against 0/1 labels (stable form)."""
    z = np.asarray(logits, np.float64).ravel()
    y = np.asarray(labels, np.float64).ravel()
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of boxes ``x1, y1, x2, y2``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(
    pred_boxes: list[np.ndarray], pred_scores: list[np.ndarray], gt_boxes: list[np.ndarray], iou: float = 0.5
) -> float:
    """Average precision of one class over a set of images (all-point interpolation).

    Detections of all images are ranked by score; a detection is a true positive when
    its best-overlapping, not yet matched ground-truth box of the same image has
    IoU >= ``iou`` (greedy, highest score first, as in PASCAL VOC / COCO). AP is the
    area under the monotone (interpolated) precision-recall curve.

    Args:
        pred_boxes: per image ``(M_i, 4)`` predicted boxes of this class.
        pred_scores: per image ``(M_i,)`` scores.
        gt_boxes: per image ``(G_i, 4)`` ground-truth boxes of this class.
        iou: match threshold.

    Returns:
        AP in [0, 1]; NaN when there is no ground-truth box at all.
    """
    if not (len(pred_boxes) == len(pred_scores) == len(gt_boxes)):
        raise ValueError("pred_boxes, pred_scores and gt_boxes need one entry per image")
    n_gt = int(sum(len(np.asarray(g).reshape(-1, 4)) for g in gt_boxes))
    if n_gt == 0:
        return float("nan")
    recs = []  # (score, image, det index)
    for i, s in enumerate(pred_scores):
        recs.extend((float(v), i, j) for j, v in enumerate(np.asarray(s).ravel()))
    recs.sort(key=lambda r: -r[0])
    matched = [np.zeros(len(np.asarray(g).reshape(-1, 4)), bool) for g in gt_boxes]
    ious = [box_iou(p, g) for p, g in zip(pred_boxes, gt_boxes)]
    tp = np.zeros(len(recs))
    for k, (_, i, j) in enumerate(recs):
        if ious[i].shape[1] == 0:
            continue
        cand = np.where(matched[i], -1.0, ious[i][j])
        best = int(np.argmax(cand))
        if cand[best] >= iou:
            matched[i][best] = True
            tp[k] = 1
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(recs) + 1) if len(recs) else np.zeros(0)
    mrec = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    return float(np.sum((mrec[1:] - mrec[:-1]) * mpre[1:]))


def true_counts(rows, classes, n: int) -> np.ndarray:
    """Per-patch signal counts from ground-truth boxes.

    Args:
        rows: (B,) patch row of each box.
        classes: (B,) class of each box (1 NMI, 2 MYCN, 3 cluster; others are ignored).
        n: number of patches.

    Returns:
        (n, 3) int64 counts (NMI, MYCN, cluster); boxes with a row outside [0, n) are ignored.
    """
    r = np.asarray(rows, np.int64).ravel()
    c = np.asarray(classes, np.int64).ravel()
    if r.shape != c.shape:
        raise ValueError(f"rows and classes must have the same length, got {r.shape} and {c.shape}")
    keep = (r >= 0) & (r < n) & (c >= 1) & (c <= 3)
    out = np.zeros((n, 3), np.int64)
    np.add.at(out, (r[keep], c[keep] - 1), 1)
    return out


def count_accuracy(pred_counts: np.ndarray, true_counts: np.ndarray) -> dict:
    """Agreement of per-patch signal counts.

    Args:
        pred_counts, true_counts: ``(N, C)`` integer counts (columns e.g. NMI, MYCN, cluster).

    Returns:
        ``exact`` (all columns equal), per-column ``accuracy`` and mean absolute error ``mae``.
    """
    p = np.asarray(pred_counts, np.int64)
    t = np.asarray(true_counts, np.int64)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"counts must be equal (N, C) arrays, got {p.shape} and {t.shape}")
    if len(p) == 0:
        return {"exact": float("nan"), "accuracy": [float("nan")] * p.shape[1], "mae": [float("nan")] * p.shape[1]}
    return {
        "exact": float((p == t).all(axis=1).mean()),
        "accuracy": [float(v) for v in (p == t).mean(axis=0)],
        "mae": [float(v) for v in np.abs(p - t).mean(axis=0)],
    }


def crossing(x, y, level: float = 0.5) -> float | None:
    """First ``x`` where the curve ``y(x)`` reaches ``level`` from below (linear interpolation).

    Returns None when ``y`` never reaches the level (or starts at/above it: then ``x[0]``).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) == 0:
        return None
    if y[0] >= level:
        return float(x[0])
    for k in range(1, len(x)):
        if y[k] >= level:
            y0, y1 = y[k - 1], y[k]
            return float(x[k - 1] + (level - y0) / (y1 - y0) * (x[k] - x[k - 1]))
    return None
