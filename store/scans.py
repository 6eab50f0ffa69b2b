"""Scans and everything derived from one: written in one transaction, read back for display."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa

from genuine_core.errors import StoreError
from genuine_core.pipeline import ScanResult, decode_image, decode_masks, encode_image, encode_masks, encode_patch
from store.db import Store

NUCLEUS_COLUMNS = ["mask_label", "cy", "cx", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "area",
                   "mean_nmi", "mean_mycn", "mean_dapi", "cropped"]
LABEL_KINDS = {"auto": "auto_label", "truth": "true_label"}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def scan_by_sha(store: Store, sha256: str) -> dict | None:
    """``{"id", "file_name", "sample"}`` of the scan with these file bytes, or None."""
    df = store.query(
        "SELECT c.id, c.file_name, s.name AS sample FROM scans c JOIN samples s ON s.id = c.sample_id "
        "WHERE c.sha256 = ?",
        [sha256],
    )
    return None if df.empty else df.iloc[0].to_dict()


# -- writing ---------------------------------------------------------------------------------
# Each _insert_* runs inside the caller's transaction; split into functions so tests can
# inject a failure between them.


def _insert_scan(cur, scan_id: int, sample_id: int, result: ScanResult, split: str | None,
                 label_source: str | None) -> None:
    info = result.info
    cur.execute(
        "INSERT INTO scans (id, sample_id, file_name, path, sha256, height, width, source_shape, source_dtype, "
        "channel_map, acquisition, segmentation, patch_size, patch_normalisation, split, label_source, n_nuclei, "
        "n_border_skipped, preview_png, masks_npz, ingested_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [scan_id, sample_id, info["file_name"], info.get("path"), info["sha256"], info["height"], info["width"],
         json.dumps(info.get("source_shape")), info.get("source_dtype"), json.dumps(info["channel_map"]),
         json.dumps(info.get("acquisition") or {}), json.dumps(info.get("segmentation") or {}),
         int(result.patch_size), result.normalisation, split, label_source, result.n_nuclei,
         int(result.n_border_skipped), encode_image(result.preview), encode_masks(result.masks), _now()],
    )


def _label_columns(result: ScanResult, labels: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """``auto_label`` / ``true_label`` per nucleus row (nullable Int8) from a long labels frame."""
    keys = result.nuclei["mask_label"].to_numpy(np.int64)
    out = {}
    for kind, col in LABEL_KINDS.items():
        values = pd.Series(pd.NA, index=keys, dtype="Int8")
        if labels is not None and len(labels):
            sel = labels[labels["kind"] == kind]
            if sel["mask_label"].duplicated().any():
                raise StoreError(f"two {kind} labels for one nucleus")
            sel = sel[sel["mask_label"].isin(keys)]
            values.loc[sel["mask_label"].to_numpy(np.int64)] = sel["label"].to_numpy(np.int64)
        out[col] = values.to_numpy()
    return out


def _insert_nuclei(store: Store, cur, scan_id: int, ids: np.ndarray, result: ScanResult,
                   labels: pd.DataFrame | None) -> None:
    frame = result.nuclei[NUCLEUS_COLUMNS].copy()
    frame.insert(0, "id", ids)
    frame.insert(1, "scan_id", scan_id)
    for col, values in _label_columns(result, labels).items():
        frame[col] = pd.array(values, dtype="Int8")
    frame["patch_png"] = [encode_patch(p) for p in result.patches]
    with store.frames(nuclei_in=frame):
        cur.execute(
            "INSERT INTO nuclei (id, scan_id, mask_label, cy, cx, bbox_y0, bbox_x0, bbox_y1, bbox_x1, area, "
            "mean_nmi, mean_mycn, mean_dapi, cropped, auto_label, true_label, patch_png) "
            "SELECT id, scan_id, mask_label, cy, cx, bbox_y0, bbox_x0, bbox_y1, bbox_x1, area, "
            "mean_nmi, mean_mycn, mean_dapi, cropped, auto_label, true_label, patch_png FROM nuclei_in"
        )


def _insert_predictions(store: Store, cur, ids: np.ndarray, result: ScanResult, model_ids: dict[str, int]) -> None:
    frames = []
    for name, out in result.outputs.items():
        t = out.table.copy()
        t.insert(0, "model_id", model_ids[name])
        t.insert(1, "nucleus_id", ids)
        frames.append(t)
    if not frames or not len(ids):
        return
    frame = pd.concat(frames, ignore_index=True)
    with store.frames(pred_in=frame):
        cur.execute(
            "INSERT INTO predictions (model_id, nucleus_id, prob, prob_calibrated, uncertainty, call, "
            "det_nmi, det_mycn, det_cluster) SELECT model_id, nucleus_id, prob, prob_calibrated, uncertainty, "
            "call, det_nmi, det_mycn, det_cluster FROM pred_in"
        )


# Per-nucleus aggregates over every prediction of the nuclei of the given scans ($scans).
_STATS_SELECT = """
SELECT p.nucleus_id, n.scan_id, c.sample_id, n.auto_label, count(*), avg(p.prob_calibrated),
       max(p.prob) - min(p.prob), min(p.call), max(p.call), min(abs(p.prob_calibrated - 0.5)), max(p.uncertainty),
       max(p.uncertainty) FILTER (WHERE m.uncertainty_method <> 'entropy'),
       max(p.uncertainty) FILTER (WHERE m.uncertainty_method = 'entropy')
FROM predictions p
JOIN nuclei n ON n.id = p.nucleus_id
JOIN scans c ON c.id = n.scan_id
JOIN models m ON m.id = p.model_id
WHERE n.scan_id IN (SELECT unnest($scans))
GROUP BY ALL
"""
_STATS_INSERT = ("INSERT INTO review_stats (nucleus_id, scan_id, sample_id, auto_label, n_models, mean_prob, spread, "
                 "min_call, max_call, min_margin, max_uncertainty, max_mc_std, max_entropy) " + _STATS_SELECT)


def _insert_review_stats(cur, scan_ids: list[int]) -> None:
    cur.execute(_STATS_INSERT, {"scans": [int(s) for s in scan_ids]})


def refresh_review_stats(store: Store, scan_ids: list[int] | None = None) -> int:
    """Rebuild the derived ``review_stats`` rows of some scans (None: every scan); returns rows written."""
    with store.transaction() as cur:
        if scan_ids is None:
            scan_ids = [int(r[0]) for r in cur.execute("SELECT id FROM scans").fetchall()]
        ids = {"scans": [int(s) for s in scan_ids]}
        cur.execute("DELETE FROM review_stats WHERE scan_id IN (SELECT unnest($scans))", ids)
        _insert_review_stats(cur, ids["scans"])
        return int(cur.execute("SELECT count(*) FROM review_stats WHERE scan_id IN (SELECT unnest($scans))",
                               ids).fetchall()[0][0])


def _insert_detections(store: Store, cur, ids: np.ndarray, result: ScanResult, model_ids: dict[str, int]) -> None:
    frames = []
    for name, out in result.outputs.items():
        d = out.detections
        if len(d):
            frames.append(pd.DataFrame({
                "model_id": model_ids[name],
                "nucleus_id": ids[d["row"].to_numpy(np.int64)],
                "cls": d["cls"].to_numpy(np.int64),
                "x1": d["x1"], "y1": d["y1"], "x2": d["x2"], "y2": d["y2"], "score": d["score"],
            }))
    if not frames:
        return
    with store.frames(det_in=pd.concat(frames, ignore_index=True)):
        cur.execute("INSERT INTO detections (model_id, nucleus_id, cls, x1, y1, x2, y2, score) "
                    "SELECT model_id, nucleus_id, cls, x1, y1, x2, y2, score FROM det_in")


def embeddings_table(model_id: int, nucleus_ids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    """Arrow table ``model_id, nucleus_id, vector (list<float32>)`` for a bulk insert."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int64) * d, type=pa.int64())
    lists = pa.LargeListArray.from_arrays(offsets, pa.array(vectors.ravel(), type=pa.float32()))
    return pa.table({"model_id": pa.array(np.full(n, model_id, np.int64)),
                     "nucleus_id": pa.array(np.asarray(nucleus_ids, np.int64)), "vector": lists})


def _insert_embeddings(store: Store, cur, ids: np.ndarray, result: ScanResult, model_ids: dict[str, int]) -> None:
    for name, out in result.outputs.items():
        if not len(ids):
            continue
        with store.frames(emb_in=embeddings_table(model_ids[name], ids, out.embeddings)):
            cur.execute("INSERT INTO embeddings (model_id, nucleus_id, vector) "
                        "SELECT model_id, nucleus_id, vector::FLOAT[] FROM emb_in")


def _insert_scan_models(cur, scan_id: int, result: ScanResult, model_ids: dict[str, int]) -> None:
    for name, out in result.outputs.items():
        cur.execute("INSERT INTO scan_models (scan_id, model_id, n_predictions, seconds) VALUES (?, ?, ?, ?)",
                    [scan_id, model_ids[name], len(out.table), float(out.seconds)])


def _by_mask_label(frame: pd.DataFrame, ids: np.ndarray, result: ScanResult) -> pd.DataFrame:
    """Replace ``mask_label`` by ``nucleus_id``; rows of nuclei not kept are dropped."""
    lookup = pd.Series(ids, index=result.nuclei["mask_label"].to_numpy(np.int64))
    frame = frame[frame["mask_label"].isin(lookup.index)].copy()
    frame.insert(0, "nucleus_id", lookup.loc[frame["mask_label"].to_numpy(np.int64)].to_numpy())
    return frame.drop(columns=["mask_label"])


def _insert_truth(store: Store, cur, ids: np.ndarray, result: ScanResult, truth: pd.DataFrame | None) -> None:
    if truth is not None and len(truth):
        cols = ["mask_label", "gt_id", "match_iou", "cell_line", "n_nmi", "n_mycn", "n_cluster", "noise"]
        frame = _by_mask_label(truth.reindex(columns=cols), ids, result)
        with store.frames(truth_in=frame):
            cur.execute("INSERT INTO synthetic_truth (nucleus_id, gt_id, match_iou, cell_line, n_nmi, n_mycn, "
                        "n_cluster, noise) SELECT nucleus_id, gt_id, match_iou, cell_line, n_nmi, n_mycn, "
                        "n_cluster, noise FROM truth_in")


def write_scan_result(store: Store, sample_id: int, result: ScanResult, model_ids: dict[str, int],
                      labels: pd.DataFrame | None = None, truth: pd.DataFrame | None = None,
                      split: str | None = None) -> int | None:
    """Store one scan and everything derived from it in ONE transaction.

    Args:
        store: open writable store.
        sample_id: sample the scan belongs to.
        result: output of ``genuine_core.pipeline.process_scan``.
        model_ids: model name -> registered id, for every model in ``result.outputs``.
        labels: optional ``mask_label, kind ('auto'|'truth'), label (0/1)`` (+ ``source``:
            recorded once per scan as ``label_source``).
        truth: optional synthetic ground truth per segmented nucleus: ``mask_label, gt_id,
            match_iou, cell_line, n_nmi, n_mycn, n_cluster, noise``.
        split: benchmark split of a synthetic scan.

    Returns:
        The new scan id, or None when a scan with the same sha256 is already stored
        (nothing is written).

    Raises:
        StoreError: a model is not registered, or the write failed (nothing is written).
    """
    missing = set(result.outputs) - set(model_ids)
    if missing:
        raise StoreError(f"models not registered: {sorted(missing)}")
    with store.transaction() as cur:
        if cur.execute("SELECT 1 FROM scans WHERE sha256 = ?", [result.info["sha256"]]).fetchone():
            return None
        scan_id = store.next_ids("scan_ids", 1)[0]
        ids = np.asarray(store.next_ids("nucleus_ids", result.n_nuclei), dtype=np.int64)
        source = None
        if labels is not None and len(labels) and "source" in labels.columns:
            source = ",".join(sorted(set(labels["source"].dropna().astype(str)))) or None
        _insert_scan(cur, scan_id, sample_id, result, split, source)
        _insert_nuclei(store, cur, scan_id, ids, result, labels)
        _insert_predictions(store, cur, ids, result, model_ids)
        _insert_review_stats(cur, [scan_id])
        _insert_detections(store, cur, ids, result, model_ids)
        _insert_embeddings(store, cur, ids, result, model_ids)
        _insert_scan_models(cur, scan_id, result, model_ids)
        _insert_truth(store, cur, ids, result, truth)
    return scan_id


# -- reading ---------------------------------------------------------------------------------


def list_scans(store: Store, sample: str | None = None) -> pd.DataFrame:
    """Scans (optionally of one sample): ``id, sample, file_name, path, sha256, height, width,
    channel_map, split, n_nuclei, n_border_skipped, patch_size, patch_normalisation, ingested_at``."""
    return store.query(
        """
        SELECT c.id, s.name AS sample, c.file_name, c.path, c.sha256, c.height, c.width, c.channel_map,
               c.split, c.n_nuclei, c.n_border_skipped, c.patch_size, c.patch_normalisation, c.ingested_at
        FROM scans c JOIN samples s ON s.id = c.sample_id
        WHERE ? IS NULL OR s.name = ?
        ORDER BY c.id
        """,
        [sample, sample],
    )


def scan_images(store: Store, scan_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Display image (H, W, 3) uint8 and instance masks (H, W) int32 of a stored scan.

    Raises:
        StoreError: no such scan.
    """
    row = store.cursor().execute("SELECT preview_png, masks_npz FROM scans WHERE id = ?", [scan_id]).fetchone()
    if row is None:
        raise StoreError(f"no scan with id {scan_id}")
    return decode_image(row[0]), decode_masks(row[1])
