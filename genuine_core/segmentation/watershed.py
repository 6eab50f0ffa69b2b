"""Classical nucleus segmentation: smooth, threshold, distance transform, seeded watershed."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatershedConfig:
    """Watershed settings, most of them relative to the expected nucleus diameter.

    Attributes:
        diameter: expected nucleus diameter in pixels.
        smooth: Gaussian sigma for the foreground threshold, fraction of the diameter.
        intensity_smooth: Gaussian sigma of the DAPI relief used for seeds and basins.
        shape_weight: exponent on the (clipped, normalised) distance transform that
            multiplies the DAPI relief; 0 = intensity only, larger = more shape-driven.
        threshold_scale: multiplier on the Otsu threshold of the smoothed DAPI.
        min_distance: smallest distance between two seeds, fraction of the diameter.
        min_area: smallest object kept, fraction of the expected nucleus area.
    """

    diameter: float = 60.0
    smooth: float = 1 / 30
    intensity_smooth: float = 0.1
    shape_weight: float = 1.0
    threshold_scale: float = 1.0
    min_distance: float = 0.25
    min_area: float = 0.12

    def __post_init__(self) -> None:
        if not 4 <= self.diameter <= 2000:
            raise ValueError(f"diameter must be in [4, 2000] px, got {self.diameter}")
        for name in ("smooth", "intensity_smooth", "min_distance", "min_area"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.shape_weight <= 4:
            raise ValueError(f"shape_weight must be in [0, 4], got {self.shape_weight}")
        if not 0 < self.threshold_scale < 10:
            raise ValueError(f"threshold_scale must be in (0, 10), got {self.threshold_scale}")


def segment_watershed(dapi: np.ndarray, config: WatershedConfig = WatershedConfig()) -> np.ndarray:
    """Segment nuclei in a DAPI image.

    Foreground = Otsu threshold of the lightly smoothed DAPI (holes filled, specks
    removed). The relief ``(distance / radius) ** shape_weight * smoothed DAPI`` has one
    peak per nucleus: its local maxima seed a watershed that follows the dark valleys
    and narrow necks between touching nuclei.

    Args:
        dapi: (H, W) float DAPI intensities (any scale).
        config: settings; ``config.diameter`` should match the nuclei (pixels).

    Returns:
        (H, W) int32 instance labels 1..N, 0 = background.
    """
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    d = config.diameter
    raw = np.asarray(dapi, np.float32)
    if raw.ndim != 2:
        raise ValueError(f"dapi must be (H, W), got {raw.shape}")
    img = ndimage.gaussian_filter(raw, max(config.smooth * d, 0.5))
    if float(img.max()) <= float(img.min()):
        return np.zeros(img.shape, np.int32)
    fg = img > threshold_otsu(img) * config.threshold_scale
    fg = ndimage.binary_opening(fg, structure=np.ones((3, 3), bool))
    fg = ndimage.binary_fill_holes(fg)
    min_area = config.min_area * np.pi * (d / 2) ** 2
    comps, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(img.shape, np.int32)
    big = np.bincount(comps.ravel()) >= min_area
    big[0] = False
    fg = big[comps]
    comps, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(img.shape, np.int32)

    dist = ndimage.distance_transform_edt(fg).astype(np.float32)
    shape = np.clip(dist / (d / 2), 0, 1) ** config.shape_weight
    relief = ndimage.gaussian_filter(raw, max(config.intensity_smooth * d, 0.5))
    relief /= max(float(np.percentile(relief[fg], 99)), 1e-6)
    relief = ndimage.gaussian_filter(shape * relief, 1.0)
    peaks = peak_local_max(relief, min_distance=max(int(config.min_distance * d), 1), labels=comps,
                           exclude_border=False)
    markers = np.zeros(img.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # every component gets at least one seed (at its highest point)
    have = np.zeros(n + 1, bool)
    have[comps[tuple(peaks.T)]] = True
    missing = np.nonzero(~have[1:])[0] + 1
    if missing.size:
        for k, (y, x) in enumerate(ndimage.maximum_position(relief, comps, missing), start=len(peaks) + 1):
            markers[y, x] = k
    labels = watershed(-relief, markers, mask=fg).astype(np.int32)
    # drop fragments left too small by the split, then renumber 1..N
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    labels[small[labels]] = 0
    keep = np.unique(labels)
    keep = keep[keep > 0]
    lut = np.zeros(labels.max() + 1, np.int32)
    lut[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    return lut[labels]
