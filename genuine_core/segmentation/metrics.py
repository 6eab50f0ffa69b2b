"""Instance segmentation metrics: matching at an IoU threshold, merges and splits."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

#: share of a ground-truth nucleus a prediction must cover to count it in a merge
MERGE_COVER = 0.5
#: share of a prediction that must lie in one ground-truth nucleus to count as its fragment
SPLIT_INSIDE = 0.5
#: a fragment must also cover at least this share of the ground-truth nucleus
SPLIT_MIN_COVER = 0.1


def _relabel(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Map labels to 0..N (0 stays background); returns (labels, N)."""
    m = np.asarray(masks)
    if m.ndim != 2 or not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"masks must be 2-D integer arrays, got {m.shape} {m.dtype}")
    uniq, inv = np.unique(m, return_inverse=True)
    if uniq[0] != 0:
        inv = inv + 1
        n = uniq.size
    else:
        n = uniq.size - 1
    return inv.reshape(m.shape).astype(np.int64), n


def overlap_matrix(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Pixel counts of every (gt, pred) label pair, background included.

    Returns:
        (counts (G+1, P+1) int64, G, P) with labels renumbered 1..G and 1..P in label order.
    """
    g, ng = _relabel(gt)
    p, np_ = _relabel(pred)
    if g.shape != p.shape:
        raise ValueError(f"gt {g.shape} and pred {p.shape} differ in shape")
    counts = np.bincount((g * (np_ + 1) + p).ravel(), minlength=(ng + 1) * (np_ + 1))
    return counts.reshape(ng + 1, np_ + 1), ng, np_


def touching_pairs(masks: np.ndarray) -> np.ndarray:
    """Pairs of distinct labels that share a 4-connected border; (K, 2) int array, a < b."""
    m = np.asarray(masks)
    pairs = []
    for a, b in ((m[:, :-1], m[:, 1:]), (m[:-1, :], m[1:, :])):
        sel = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([np.minimum(a[sel], b[sel]), np.maximum(a[sel], b[sel])], 1))
    allp = np.concatenate(pairs) if pairs else np.zeros((0, 2), m.dtype)
    return np.unique(allp, axis=0) if allp.size else np.zeros((0, 2), np.int64)


def match_instances(gt: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> dict:
    """Compare predicted to ground-truth instance masks.

    Pairs are matched one-to-one (Hungarian on IoU) when their IoU >= ``iou``.

    Args:
        gt: (H, W) int ground-truth labels, 0 = background.
        pred: (H, W) int predicted labels.
        iou: IoU threshold for a true positive.

    Returns:
        dict with ``f1, precision, recall`` (1.0 when both are empty), ``tp, fp, fn``,
        ``n_gt, n_pred``, ``mean_iou`` (of matched pairs), ``merged`` (predictions
        covering >= 50 % of each of >= 2 ground-truth nuclei), ``split`` (ground-truth
        nuclei with >= 2 predictions that each lie >= 50 % inside it and cover >= 10 %
        of it), ``touching_pairs`` (ground-truth pairs sharing a border) and
        ``touching_merged`` (of those, pairs covered by one merged prediction).
    """
    if not 0 < iou <= 1:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    counts, ng, np_ = overlap_matrix(gt, pred)
    inter = counts[1:, 1:].astype(np.float64)
    area_g = counts[1:, :].sum(1).astype(np.float64)
    area_p = counts[:, 1:].sum(0).astype(np.float64)
    union = area_g[:, None] + area_p[None, :] - inter
    ious = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)

    tp, mean_iou = 0, 0.0
    if ng and np_:
        cand = ious >= iou
        rows, cols = np.nonzero(cand.any(1))[0], np.nonzero(cand.any(0))[0]
        if rows.size:
            sub = np.where(cand[np.ix_(rows, cols)], ious[np.ix_(rows, cols)], 0.0)
            r, c = linear_sum_assignment(-sub)
            ok = sub[r, c] >= iou
            tp = int(ok.sum())
            mean_iou = float(sub[r, c][ok].mean()) if tp else 0.0
    fp, fn = np_ - tp, ng - tp
    precision = tp / np_ if np_ else (1.0 if ng == 0 else 0.0)
    recall = tp / ng if ng else (1.0 if np_ == 0 else 0.0)
    f1 = 2 * tp / (ng + np_) if (ng + np_) else 1.0

    covers = inter >= MERGE_COVER * area_g[:, None]  # (G, P): pred covers most of gt
    merged_preds = covers.sum(0) >= 2
    fragments = (inter >= SPLIT_INSIDE * area_p[None, :]) & (inter >= SPLIT_MIN_COVER * area_g[:, None])
    split = int((fragments.sum(1) >= 2).sum())

    g_lab, _ = _relabel(gt)
    pairs = touching_pairs(g_lab)
    touching_merged = 0
    if pairs.size and merged_preds.any():
        cov_m = covers[:, merged_preds]
        touching_merged = int((cov_m[pairs[:, 0] - 1] & cov_m[pairs[:, 1] - 1]).any(1).sum())
    return {
        "f1": float(f1), "precision": float(precision), "recall": float(recall),
        "tp": tp, "fp": int(fp), "fn": int(fn), "n_gt": int(ng), "n_pred": int(np_),
        "mean_iou": mean_iou, "merged": int(merged_preds.sum()), "split": split,
        "touching_pairs": int(len(pairs)), "touching_merged": touching_merged,
    }


#: per-field counts that add up across fields
COUNT_KEYS = ("tp", "fp", "fn", "n_gt", "n_pred", "merged", "split", "touching_pairs", "touching_merged")


def evaluate_segmenter(fn: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray],
                       masks: Sequence[np.ndarray], iou: float = 0.5) -> dict:
    """Pooled instance metrics of ``fn(image) -> labels`` over several fields.

    Counts are summed over fields, then precision/recall/F1 computed from the sums;
    ``mean_iou`` is averaged over all matched pairs.

    Returns:
        dict with the :data:`COUNT_KEYS` sums, ``precision, recall, f1, mean_iou``,
        ``fields``, ``seconds`` (wall time of ``fn`` plus matching) and ``fields_per_second``.
    """
    total = dict.fromkeys(COUNT_KEYS, 0)
    iou_sum = 0.0
    t = time.perf_counter()
    for img, gt in zip(images, masks):
        r = match_instances(gt, fn(img), iou)
        for k in COUNT_KEYS:
            total[k] += r[k]
        iou_sum += r["mean_iou"] * r["tp"]
    dt = time.perf_counter() - t
    tp, fp, fn_ = total["tp"], total["fp"], total["fn"]
    return total | {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn_) if tp + fn_ else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn_) if tp + fp + fn_ else 1.0,
        "mean_iou": iou_sum / tp if tp else 0.0,
        "fields": len(images), "seconds": dt, "fields_per_second": len(images) / dt if dt > 0 else 0.0,
    }
