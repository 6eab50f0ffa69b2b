"""Reading nuclei: per-sample tables with predictions and labels, patches, detections."""

from __future__ import annotations

import numpy as np
import pandas as pd

from genuine_core.pipeline import decode_patch
from store.db import Store


def _ids_frame(nucleus_ids) -> pd.DataFrame:
    return pd.DataFrame({"nucleus_id": pd.Series(np.asarray(list(nucleus_ids), dtype=np.int64))})


def sample_nuclei(store: Store, sample: str, model: str | None = None) -> pd.DataFrame:
    """Nuclei of one sample with one model's prediction and every label.

    Args:
        sample: sample name.
        model: model name (None: no prediction columns are filled).

    Returns:
        DataFrame, one row per nucleus: ``nucleus_id, scan_id, scan_file, mask_label, cy, cx,
        bbox_y0, bbox_x0, bbox_y1, bbox_x1, area, mean_nmi, mean_mycn, mean_dapi, split,
        prob, prob_calibrated, uncertainty, call, det_nmi, det_mycn, det_cluster,
        auto_label, true_label, curated_label, excluded``. Labels are nullable ints.
    """
    return store.query(
        """
        SELECT n.id AS nucleus_id, n.scan_id, c.file_name AS scan_file, n.mask_label, n.cy, n.cx,
               n.bbox_y0, n.bbox_x0, n.bbox_y1, n.bbox_x1, n.area, n.mean_nmi, n.mean_mycn, n.mean_dapi,
               c.split, p.prob, p.prob_calibrated, p.uncertainty, p.call, p.det_nmi, p.det_mycn, p.det_cluster,
               n.auto_label, n.true_label, cl.label AS curated_label,
               coalesce(cl.excluded, false) AS excluded
        FROM nuclei n
        JOIN scans c ON c.id = n.scan_id
        JOIN samples s ON s.id = c.sample_id
        LEFT JOIN models m ON m.name = ?
        LEFT JOIN predictions p ON p.nucleus_id = n.id AND p.model_id = m.id
        LEFT JOIN curated_labels cl ON cl.nucleus_id = n.id
        WHERE s.name = ?
        ORDER BY n.id
        """,
        [model, sample],
    )


def nucleus_info(store: Store, nucleus_ids) -> pd.DataFrame:
    """Where nuclei come from and their labels: ``nucleus_id, sample, sample_kind, scan_id, scan_file,
    mask_label, cy, cx, area, split, auto_label, true_label, curated_label, excluded, curated_by``."""
    with store.frames(ids_in=_ids_frame(nucleus_ids)):
        return store.query(
            """
            SELECT n.id AS nucleus_id, s.name AS sample, s.kind AS sample_kind, n.scan_id,
                   c.file_name AS scan_file, n.mask_label, n.cy, n.cx, n.area, c.split,
                   n.auto_label, n.true_label, cl.label AS curated_label,
                   coalesce(cl.excluded, false) AS excluded, cl.reviewer AS curated_by
            FROM ids_in i
            JOIN nuclei n ON n.id = i.nucleus_id
            JOIN scans c ON c.id = n.scan_id
            JOIN samples s ON s.id = c.sample_id
            LEFT JOIN curated_labels cl ON cl.nucleus_id = n.id
            ORDER BY n.id
            """
        )


def nucleus_predictions(store: Store, nucleus_ids) -> pd.DataFrame:
    """Every model's prediction for the given nuclei (long form).

    Returns:
        DataFrame ``nucleus_id, model, kind, prob, prob_calibrated, uncertainty, call, det_nmi,
        det_mycn, det_cluster, uncertainty_method, mc_samples`` (the MC-dropout passes of the scan's scoring,
        0 for an entropy; NaN: not recorded), ordered by nucleus then model id.
    """
    with store.frames(ids_in=_ids_frame(nucleus_ids)):
        return store.query(
            """
            SELECT p.nucleus_id, m.name AS model, m.kind, p.prob, p.prob_calibrated, p.uncertainty, p.call,
                   p.det_nmi, p.det_mycn, p.det_cluster, m.uncertainty_method, sm.mc_samples
            FROM ids_in i JOIN predictions p ON p.nucleus_id = i.nucleus_id JOIN models m ON m.id = p.model_id
            JOIN nuclei n ON n.id = p.nucleus_id
            LEFT JOIN scan_models sm ON sm.scan_id = n.scan_id AND sm.model_id = p.model_id
            ORDER BY p.nucleus_id, m.id
            """
        )


def nucleus_detections(store: Store, nucleus_ids, model: str | None = None) -> pd.DataFrame:
    """Detector boxes (patch coordinates) of the given nuclei: ``nucleus_id, model, cls, x1, y1, x2, y2, score``.

    Args:
        model: restrict to one model (None: every model that stored boxes).
    """
    with store.frames(ids_in=_ids_frame(nucleus_ids)):
        return store.query(
            """
            SELECT d.nucleus_id, m.name AS model, d.cls, d.x1, d.y1, d.x2, d.y2, d.score
            FROM ids_in i JOIN detections d ON d.nucleus_id = i.nucleus_id JOIN models m ON m.id = d.model_id
            WHERE ? IS NULL OR m.name = ?
            ORDER BY d.nucleus_id, m.id, d.score DESC
            """,
            [model, model],
        )


def patch_bytes(store: Store, nucleus_ids) -> dict[int, bytes]:
    """PNG bytes of the stored patches (RGB uint8, P x P) by nucleus id (missing ids left out)."""
    with store.frames(ids_in=_ids_frame(nucleus_ids)):
        rows = store.cursor().execute(
            "SELECT n.id, n.patch_png FROM ids_in i JOIN nuclei n ON n.id = i.nucleus_id WHERE n.patch_png IS NOT NULL"
        ).fetchall()
    return {int(i): bytes(b) for i, b in rows}


def patch_images(store: Store, nucleus_ids) -> dict[int, np.ndarray]:
    """Stored patches by nucleus id as (3, P, P) float32 in [0, 1] (quantised to 1/255)."""
    return {i: decode_patch(b) for i, b in patch_bytes(store, nucleus_ids).items()}


def scan_nuclei(store: Store, scan_id: int, model: str | None = None) -> pd.DataFrame:
    """Nuclei of one scan (for outlines on the scan image): ``nucleus_id, mask_label, cy, cx, bbox_*,
    prob, prob_calibrated, call, auto_label, curated_label, excluded``."""
    return store.query(
        """
        SELECT n.id AS nucleus_id, n.mask_label, n.cy, n.cx, n.bbox_y0, n.bbox_x0, n.bbox_y1, n.bbox_x1,
               p.prob, p.prob_calibrated, p.call, n.auto_label, cl.label AS curated_label,
               coalesce(cl.excluded, false) AS excluded
        FROM nuclei n
        LEFT JOIN models m ON m.name = ?
        LEFT JOIN predictions p ON p.nucleus_id = n.id AND p.model_id = m.id
        LEFT JOIN curated_labels cl ON cl.nucleus_id = n.id
        WHERE n.scan_id = ?
        ORDER BY n.mask_label
        """,
        [model, int(scan_id)],
    )


#: real nuclei one probe run draws its probes into (the Probe page and ``genuine probe --background-sample``)
PROBE_BACKGROUNDS = 200


def probe_backgrounds(store: Store, sample: str, patch_size: int, n: int = PROBE_BACKGROUNDS,
                      seed: int = 0) -> tuple[list[int], np.ndarray]:
    """The ids of m real nuclei of ``sample`` (m <= n, a seeded choice) and their patches (m, 3, P, P), cropped
    to ``patch_size`` (backgrounds of a probe run: ``genuine_core.synth.probe.run_probe``).

    Raises:
        InputError: the sample has no nuclei, or its stored patches are smaller than ``patch_size``.
    """
    from genuine_core.errors import InputError
    from genuine_core.pipeline import center_crop

    ids = sample_nuclei(store, sample)["nucleus_id"].to_numpy()
    if len(ids) == 0:
        raise InputError(f"sample {sample!r} has no nuclei")
    pick = np.random.default_rng(seed).choice(ids, size=min(n, len(ids)), replace=False)
    imgs = patch_images(store, pick.tolist())
    kept = [int(i) for i in pick if int(i) in imgs]
    stack = np.stack([imgs[i] for i in kept]).astype(np.float32)
    if stack.shape[-1] < patch_size:
        raise InputError(f"stored patches are {stack.shape[-1]} px, the model needs {patch_size} px")
    return kept, center_crop(stack, patch_size)
