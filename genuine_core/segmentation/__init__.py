"""Nucleus segmentation: one interface, two backends (``watershed``, ``cellpose``).

``segment`` takes a scan (H, W, 3) float32 (NMI, MYCN, DAPI) or a DAPI image (H, W)
and returns instance masks (H, W) int32. ``match_instances`` scores masks against
ground truth (instance F1 at an IoU threshold, merges and splits).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from genuine_core.segmentation.metrics import evaluate_segmenter, match_instances, touching_pairs
from genuine_core.segmentation.watershed import DIAMETER_RANGE, WatershedConfig, segment_watershed

BACKENDS = ("watershed", "cellpose")
#: Backend used when none is named, chosen by measurement (bench/bench_segmentation.py; figures in
#: BENCHMARKS.md "Segmentation"): watershed clears the F1 >= 0.90 bar on held-out synthetic fields, is
#: several times faster than cellpose and needs no model file (none is shipped). Cellpose (better on dense
#: clumps) is one flag away once ``genuine train-cellpose`` has run.
DEFAULT_BACKEND: Literal["watershed", "cellpose"] = "watershed"

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "WatershedConfig", "evaluate_segmenter", "match_instances", "segment",
           "touching_pairs"]


def segment(image: np.ndarray, backend: Literal["watershed", "cellpose"] = DEFAULT_BACKEND,
            model_path: str | None = None, diameter: float | None = None) -> np.ndarray:
    """Segment nuclei on the DAPI channel.

    Args:
        image: (H, W, 3) float scan (channel 2 = DAPI) or (H, W) DAPI image.
        backend: ``"watershed"`` (scikit-image) or ``"cellpose"`` (a local cellpose model).
        model_path: cellpose model file or folder (cellpose only; default
            ``models/cellpose_synth``).
        diameter: expected nucleus diameter in pixels. Watershed default 60; cellpose
            default = the diameter the model was trained on.

    Returns:
        (H, W) int32 instance masks, 0 = background, 1..N = nuclei.

    Raises:
        ValueError: unknown backend or bad image shape.
        ModelLoadError: cellpose model missing or unreadable.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 3:
        dapi = img[..., 2]
    elif img.ndim == 2:
        dapi = img
    else:
        raise ValueError(f"image must be (H, W, 3) or (H, W), got {img.shape}")
    if diameter is not None and not DIAMETER_RANGE[0] <= diameter <= DIAMETER_RANGE[1]:
        raise ValueError(f"diameter must be in [{DIAMETER_RANGE[0]:g}, {DIAMETER_RANGE[1]:g}] px, got {diameter}")
    if backend == "watershed":
        cfg = WatershedConfig() if diameter is None else WatershedConfig(diameter=float(diameter))
        return segment_watershed(dapi, cfg)
    if backend == "cellpose":
        from genuine_core.segmentation.cellpose_backend import segment_cellpose

        return segment_cellpose(dapi, model_path=model_path, diameter=diameter)
    raise ValueError(f"unknown segmentation backend {backend!r}; choose one of {BACKENDS}")
