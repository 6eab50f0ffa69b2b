"""Nucleus patches (paper section 2.2).

Each nucleus becomes a ``(3, P, P)`` float32 patch centred on the centroid of its
mask (first image moments), with every pixel outside that nucleus' mask set to 0.
Channels are normalised per scan: subtract the scan background (median outside all
nuclei), divide by the scan's 99.9th percentile inside nuclei (minus background),
clip to [0, 1]. With ``normalisation="spot_flux"`` (the default: the shipped models are
trained on it) the MYCN channel is divided instead by a scale from the median integrated
flux of its single spots (:func:`spot_flux_scale`), which follows the exposure even where
the percentile sits at saturation. Nuclei touching
the image border are incomplete and skipped (and counted); nuclei larger than the patch
are kept, cropped, and flagged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

logger = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "nucleus_id", "cy", "cx", "y0", "x0", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "area",
    "mean_nmi", "mean_mycn", "mean_dapi", "scan_id", "cropped",
]
#: percentile inside nuclei that maps to 1.0
UPPER_PERCENTILE = 99.9
#: smallest scale (in [0, 1] intensity units) a channel is divided by
MIN_SCALE = 1.0 / 65535.0
#: patch normalisations: the per-scan percentile, or the MYCN channel scaled by spot flux
NORMALISATIONS = ("percentile", "spot_flux")
#: how new patches are cut unless asked otherwise (the shipped models were trained on it)
DEFAULT_NORMALISATION = "spot_flux"
#: how patches were cut by anything that does not record it (models, benchmarks, stores, training
#: sets written before the normalisation was recorded)
LEGACY_NORMALISATION = "percentile"
#: spot_flux: a spot is a connected region of the smoothed channel above this fraction of the
#: percentile scale, of at most SPOT_MAX_AREA px (larger ones are clusters or merged spots)
SPOT_THRESHOLD = 0.3
SPOT_MAX_AREA = 60
#: spot_flux: flux = sum over a (2 * FLUX_HALF_WINDOW + 1)^2 window at the spot's peak, minus the
#: local background: the median of the square ring 2 px outside that window
FLUX_HALF_WINDOW = 4
#: spot_flux: scale = median flux * FLUX_TO_SCALE; maps the synthetic nominal training fields'
#: median single-spot flux (about 12.6 intensity x px) to the percentile scale there (0.918)
FLUX_TO_SCALE = 0.918 / 12.6
#: spot_flux: fewer spots than this keep the percentile scale
MIN_SPOTS = 5


@dataclass
class PatchSet:
    """Patches of one scan.

    Attributes:
        patches: (N, 3, P, P) float32 in [0, 1], channels (NMI, MYCN, DAPI), 0 outside the nucleus.
        table: one row per patch. ``cy, cx`` centroid (pixels, float); ``y0, x0`` patch
            origin in scan coords (may be negative: padded with zeros); ``bbox_*`` the
            nucleus bounding box (``*1`` exclusive); ``area`` in pixels; ``mean_*`` mean raw
            scan intensity in [0, 1] inside the mask; ``cropped`` True when the nucleus
            does not fit in the patch.
        n_border_skipped: nuclei skipped because their mask touches the image border.
        background: (3,) per-channel background subtracted (scan intensity units).
        scale: (3,) per-channel divisor after background subtraction.
    """

    patches: np.ndarray
    table: pd.DataFrame
    n_border_skipped: int
    background: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    scale: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))


def check_normalisation(name: str) -> None:
    """Raise ValueError unless ``name`` is one of ``NORMALISATIONS``."""
    if name not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {name!r}")


def spot_flux_scale(channel: np.ndarray, inside: np.ndarray, start_scale: float) -> float | None:
    """MYCN scale from the median integrated flux of single spots (blur keeps a spot's flux,
    and the median is not hit by saturation).

    Args:
        channel: (H, W) float background-subtracted channel.
        inside: (H, W) bool, inside nuclei.
        start_scale: the percentile scale; spots are regions above ``SPOT_THRESHOLD`` x it.

    Returns:
        ``median flux * FLUX_TO_SCALE``, or None with fewer than ``MIN_SPOTS`` spots.
    """
    smooth = ndimage.gaussian_filter(channel, 1.0)
    lab, n = ndimage.label((smooth > SPOT_THRESHOLD * start_scale) & inside)
    if n < MIN_SPOTS:
        return None
    h, w = channel.shape
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    # each spot's peak: the last pixel of its label when sorted by (label, smoothed value)
    pix = np.flatnonzero(lab)
    pix = pix[np.lexsort((smooth.ravel()[pix], lab.ravel()[pix]))]
    last = np.r_[np.flatnonzero(np.diff(lab.ravel()[pix])), pix.size - 1]
    peaks = np.stack(np.divmod(pix[last], w), 1)
    r, m = FLUX_HALF_WINDOW, FLUX_HALF_WINDOW + 2  # half-widths of the window and of the ring
    ok = (area <= SPOT_MAX_AREA) & (peaks[:, 0] >= m) & (peaks[:, 1] >= m) & (peaks[:, 0] < h - m) & (peaks[:, 1] < w - m)
    if ok.sum() < MIN_SPOTS:
        return None
    dy, dx = np.mgrid[-m:m + 1, -m:m + 1].reshape(2, -1)
    ring = (np.abs(dy) == m) | (np.abs(dx) == m)
    inner = (np.abs(dy) <= r) & (np.abs(dx) <= r)
    win = channel[peaks[ok, :1] + dy, peaks[ok, 1:] + dx]  # (spots, (2m + 1)^2)
    flux = win[:, inner].sum(1) - np.median(win[:, ring], axis=1) * inner.sum()
    return float(np.median(flux)) * FLUX_TO_SCALE


def normalisation_stats(image: np.ndarray, masks: np.ndarray,
                        normalisation: str = DEFAULT_NORMALISATION) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel background (median outside nuclei) and scale (99.9th pct inside nuclei - background).

    Args:
        image: (H, W, 3) float scan.
        masks: (H, W) int instance masks.
        normalisation: ``"spot_flux"`` replaces the MYCN scale by :func:`spot_flux_scale`
            (kept at the percentile when the scan has too few spots).

    Returns:
        (background, scale), each (3,) float32. Background is 0 when nuclei cover the
        whole scan; scale is at least ``MIN_SCALE``.
    """
    check_normalisation(normalisation)
    fg = (masks > 0).ravel()
    pix = image.reshape(-1, 3)
    bg = np.zeros(3, np.float32)
    hi = np.ones(3, np.float32)
    out = pix[~fg]
    if len(out):
        # a strided subsample of large backgrounds keeps the median exact to ~1e-3 and fast
        bg = np.median(out[:: max(1, len(out) // 250_000)], axis=0).astype(np.float32)
    inside = pix[fg]
    if len(inside):
        hi = np.percentile(inside, UPPER_PERCENTILE, axis=0).astype(np.float32)
    scale = np.maximum(hi - bg, MIN_SCALE).astype(np.float32)
    if normalisation == "spot_flux":
        flux = spot_flux_scale(image[..., 1].astype(np.float32) - bg[1], masks > 0, float(scale[1]))
        if flux is not None:
            scale[1] = max(flux, MIN_SCALE)
    return bg, scale


def extract_patches(image: np.ndarray, masks: np.ndarray, size: int = 96, scan_id: str = "",
                    normalisation: str = DEFAULT_NORMALISATION) -> PatchSet:
    """Cut one normalised, masked patch per complete nucleus.

    Args:
        image: (H, W, 3) float32 in [0, 1], channels (NMI, MYCN, DAPI).
        masks: (H, W) int instance masks, 0 = background.
        size: patch side P in pixels (paper: 192).
        scan_id: written to the table's ``scan_id`` column.
        normalisation: one of ``NORMALISATIONS`` (see the module docstring).

    Returns:
        PatchSet with patches (N, 3, P, P) float32, rows ordered by nucleus id.
    """
    if size < 2:
        raise ValueError(f"patch size must be >= 2, got {size}")
    image = np.asarray(image)
    masks = np.asarray(masks)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    if masks.shape != image.shape[:2]:
        raise ValueError(f"masks shape {masks.shape} does not match image {image.shape[:2]}")
    if not np.issubdtype(masks.dtype, np.integer):
        raise ValueError(f"masks must be integer, got {masks.dtype}")
    h, w = masks.shape
    masks = masks.astype(np.int32, copy=False)
    image = image.astype(np.float32, copy=False)

    bg, scale = normalisation_stats(image, masks, normalisation)
    n_lab = int(masks.max()) if masks.size else 0
    slices = ndimage.find_objects(masks, max_label=n_lab) if n_lab > 0 else []
    ids = np.array([i + 1 for i, s in enumerate(slices) if s is not None], dtype=np.int32)
    empty = PatchSet(np.zeros((0, 3, size, size), np.float32), pd.DataFrame(columns=TABLE_COLUMNS), 0, bg, scale)
    if ids.size == 0:
        return empty

    box = np.array([[slices[i - 1][0].start, slices[i - 1][1].start, slices[i - 1][0].stop, slices[i - 1][1].stop]
                    for i in ids], dtype=np.int64)
    border = (box[:, 0] == 0) | (box[:, 1] == 0) | (box[:, 2] == h) | (box[:, 3] == w)

    # centroids and mean intensities from label histograms over foreground pixels only
    fg = np.flatnonzero(masks)
    labs = masks.ravel()[fg]
    rows = fg // w
    area = np.bincount(labs, minlength=n_lab + 1).astype(np.float64)
    safe = np.maximum(area, 1)
    cy = np.bincount(labs, weights=rows, minlength=n_lab + 1) / safe
    cx = np.bincount(labs, weights=fg - rows * w, minlength=n_lab + 1) / safe
    vals = image.reshape(-1, 3)[fg]
    means = [np.bincount(labs, weights=vals[:, c], minlength=n_lab + 1) / safe for c in range(3)]

    keep = ~border
    ids, box = ids[keep], box[keep]
    n_border = int(border.sum())
    if ids.size == 0:
        empty.n_border_skipped = n_border
        return empty

    half = size // 2
    y0 = np.floor(cy[ids] + 0.5).astype(np.int64) - half
    x0 = np.floor(cx[ids] + 0.5).astype(np.int64) - half

    norm = np.empty((3, h, w), np.float32)  # channel-first so crops copy contiguous rows
    np.subtract(np.moveaxis(image, -1, 0), bg[:, None, None], out=norm)
    norm /= scale[:, None, None]
    np.clip(norm, 0.0, 1.0, out=norm)
    patches = _gather(norm, masks, ids, y0, x0, size)

    cropped = (box[:, 0] < y0) | (box[:, 1] < x0) | (box[:, 2] > y0 + size) | (box[:, 3] > x0 + size)
    table = pd.DataFrame({
        "nucleus_id": ids.astype(np.int64),
        "cy": cy[ids], "cx": cx[ids],
        "y0": y0, "x0": x0,
        "bbox_y0": box[:, 0], "bbox_x0": box[:, 1], "bbox_y1": box[:, 2], "bbox_x1": box[:, 3],
        "area": area[ids].astype(np.int64),
        "mean_nmi": means[0][ids], "mean_mycn": means[1][ids], "mean_dapi": means[2][ids],
        "scan_id": scan_id,
        "cropped": cropped,
    }, columns=TABLE_COLUMNS)
    if cropped.any():
        logger.info("%s: %d nuclei larger than the %d px patch were cropped", scan_id or "scan", int(cropped.sum()), size)
    return PatchSet(patches, table, n_border, bg, scale)


def _gather(norm: np.ndarray, masks: np.ndarray, ids: np.ndarray, y0: np.ndarray, x0: np.ndarray,
            size: int) -> np.ndarray:
    """Crop (N, 3, P, P) windows with origins (y0, x0) from (3, H, W) ``norm``; zero outside each own label.

    Windows reaching past the image edge are zero there.
    """
    h, w = masks.shape
    out = np.zeros((ids.size, 3, size, size), np.float32)
    for i in range(ids.size):
        ya, xa = max(int(y0[i]), 0), max(int(x0[i]), 0)
        yb, xb = min(int(y0[i]) + size, h), min(int(x0[i]) + size, w)
        dy, dx = ya - int(y0[i]), xa - int(x0[i])
        inside = masks[ya:yb, xa:xb] == ids[i]
        np.multiply(norm[:, ya:yb, xa:xb], inside, out=out[i, :, dy:dy + yb - ya, dx:dx + xb - xa])
    return out


def boxes_to_patch(boxes: pd.DataFrame, table: pd.DataFrame, size: int | None = None) -> pd.DataFrame:
    """Move boxes from scan/field coordinates into patch coordinates.

    Args:
        boxes: one row per box with ``nucleus_id, x1, y1, x2, y2`` (scan coords) and any
            other columns (e.g. ``cls``). When both frames have ``scan_id`` it is
            joined on too; otherwise call this once per scan.
        table: a :class:`PatchSet` table.
        size: patch side; when given, boxes are clipped to the patch and boxes left
            with no area are dropped.

    Returns:
        Boxes of extracted nuclei only, with ``patch_row`` (row in ``table``) first and
        ``x1, y1, x2, y2`` in patch coordinates (float).
    """
    need = {"nucleus_id", "x1", "y1", "x2", "y2"}
    if missing := need - set(boxes.columns):
        raise ValueError(f"boxes lack columns {sorted(missing)}")
    keys = ["nucleus_id"] + (["scan_id"] if "scan_id" in boxes.columns and "scan_id" in table.columns else [])
    ref = table[keys + ["y0", "x0"]].reset_index(drop=True)
    ref["patch_row"] = np.arange(len(ref), dtype=np.int64)
    out = boxes.merge(ref, on=keys, how="inner", sort=False)
    for a, o in (("x1", "x0"), ("x2", "x0"), ("y1", "y0"), ("y2", "y0")):
        out[a] = out[a].astype(np.float64) - out[o]
    if size is not None:
        for a in ("x1", "y1", "x2", "y2"):
            out[a] = out[a].clip(0, size)
        out = out[(out["x2"] > out["x1"]) & (out["y2"] > out["y1"])]
    out = out.drop(columns=["y0", "x0"])
    cols = ["patch_row"] + [c for c in out.columns if c != "patch_row"]
    return out[cols].sort_values("patch_row", kind="stable").reset_index(drop=True)
