"""Acquisition model: how the microscope turns fluorophore images into a scan.

The ideal scene (fluorophore density per channel, arbitrary units where 1.0 is about
full scale) passes through channel crosstalk, exposure, optical blur, a background
with smooth illumination fall-off, shot noise, read noise and saturation. Shifting
these parameters makes a sample out-of-distribution the way a different scanner day
would (the paper's mixture scans).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (isinstance(value, (int, float, np.floating, np.integer)) and lo <= float(value) <= hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")


#: valid range of every acquisition parameter (per channel for the 3-tuples)
_LIMITS = {"exposure": (0.05, 10.0), "channel_gain": (0.05, 10.0), "blur_sigma": (0.0, 10.0),
           "crosstalk": (0.0, 0.5), "background": (0.0, 0.8), "vignetting": (0.0, 0.9),
           "background_variation": (0.0, 1.0), "full_well": (1.0, 1e7), "read_noise": (0.0, 0.5)}


@dataclass(frozen=True)
class Acquisition:
    """Imaging conditions of one scan.

    Attributes:
        exposure: multiplies all fluorescence (not the background offset); 1.0 = nominal.
        channel_gain: extra per-channel gain (NMI, MYCN, DAPI).
        blur_sigma: optical point-spread blur, Gaussian sigma in pixels (at scale 1).
        crosstalk: bleed-through fraction, MYCN (green) into the NMI (red) channel and
            DAPI (blue) into the MYCN channel.
        background: per-channel offset (NMI, MYCN, DAPI) in [0, 1] intensity units; the
            defaults match the dark areas of the real FISH_RGB.TIF.
        vignetting: relative illumination drop at the field corners (0 = flat).
        background_variation: relative amplitude of slow blotchy background variation.
        full_well: photons at intensity 1.0; shot noise sd is ``sqrt(I / full_well)``
            (Gaussian approximation of Poisson noise, accurate at these counts).
        read_noise: additive Gaussian read noise sd in intensity units.
    """

    exposure: float = 1.0
    channel_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur_sigma: float = 1.4
    crosstalk: float = 0.04
    background: tuple[float, float, float] = (0.135, 0.083, 0.092)
    vignetting: float = 0.12
    background_variation: float = 0.15
    full_well: float = 2000.0
    read_noise: float = 0.003

    def __post_init__(self) -> None:
        for name in ("channel_gain", "background"):
            val = getattr(self, name)
            if not isinstance(val, (tuple, list)) or len(val) != 3:
                raise ValueError(f"{name} must be a 3-tuple (NMI, MYCN, DAPI), got {val!r}")
            object.__setattr__(self, name, tuple(float(v) for v in val))
        for name, (lo, hi) in _LIMITS.items():
            for v in np.atleast_1d(getattr(self, name)):
                _check_range(name, v, lo, hi)

    def to_dict(self) -> dict:
        """Plain-JSON view (for config.json)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Acquisition":
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


#: nominal conditions (training fields)
NOMINAL = Acquisition()
#: a moderately shifted scanner day: dimmer, blurrier, noisier, more bleed-through,
#: brighter and less even background (used for the mixture samples)
SHIFTED = Acquisition(
    exposure=0.8,
    channel_gain=(0.9, 1.1, 0.85),
    blur_sigma=2.0,
    crosstalk=0.08,
    background=(0.16, 0.10, 0.12),
    vignetting=0.2,
    background_variation=0.25,
    full_well=900.0,
    read_noise=0.008,
)


#: scanner-day variation (``jittered``): half-width of the log-uniform factor on each
#: parameter at strength 1 (per-channel factors are drawn per channel)
JITTER_LOG_HALF_WIDTH = {
    "exposure": 0.3, "channel_gain": 0.15, "blur_sigma": 0.4, "crosstalk": 0.7, "background": 0.3,
    "vignetting": 0.5, "background_variation": 0.5, "full_well": 0.8, "read_noise": 1.0,
}


def jittered(base: Acquisition, rng: np.random.Generator, strength: float = 1.0) -> Acquisition:
    """One scanner day's conditions drawn around ``base``.

    Every parameter is multiplied by ``exp(u)``, ``u ~ U(-h, h) * strength`` with ``h`` from
    :data:`JITTER_LOG_HALF_WIDTH` (at strength 1: exposure x0.74-1.35, blur x0.67-1.49, full
    well x0.45-2.2), then clipped to the valid ranges.

    Args:
        base: centre of the variation.
        rng: random generator.
        strength: scales every half-width; 0 returns ``base``.

    Raises:
        ValueError: ``strength`` outside [0, 2].
    """
    if not 0.0 <= strength <= 2.0:
        raise ValueError(f"acquisition jitter strength must be in [0, 2], got {strength}")
    values = {}
    for name, half in JITTER_LOG_HALF_WIDTH.items():
        v = np.asarray(getattr(base, name), np.float64)
        u = rng.uniform(-half, half, size=v.shape) * strength
        v = np.clip(v * np.exp(u), *_LIMITS[name])
        values[name] = tuple(float(x) for x in v) if v.ndim else float(v)
    return Acquisition(**values)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth random field, zero mean and unit-ish sd, correlation length ~``cell`` pixels.

    Drawn on a coarse grid and upsampled with cubic interpolation (cheap).

    Returns:
        (H, W) float32.
    """
    h, w = shape
    gh, gw = max(2, math.ceil(h / cell) + 1), max(2, math.ceil(w / cell) + 1)
    coarse = rng.standard_normal((gh, gw), dtype=np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def acquire(scene: np.ndarray, acq: Acquisition, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Image an ideal scene.

    Args:
        scene: (H, W, 3) float32 fluorophore density (NMI, MYCN, DAPI), >= 0.
        acq: imaging conditions.
        rng: random generator (background variation and noise).
        scale: length scale of the field (blur and background blotches scale with it).

    Returns:
        (H, W, 3) float32 in [0, 1]: what the camera records (saturated at 1).
    """
    if scene.ndim != 3 or scene.shape[-1] != 3:
        raise ValueError(f"scene must be (H, W, 3), got {scene.shape}")
    h, w, _ = scene.shape
    gain = np.asarray(acq.channel_gain, np.float32) * np.float32(acq.exposure)
    if acq.crosstalk:
        mix = np.eye(3, dtype=np.float32)
        mix[0, 1] = mix[1, 2] = acq.crosstalk  # out[NMI] += c * MYCN, out[MYCN] += c * DAPI
        img = cv2.transform(np.ascontiguousarray(scene, np.float32), mix * gain[:, None])
    else:
        img = scene.astype(np.float32) * gain
    if acq.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), acq.blur_sigma * scale, borderType=cv2.BORDER_REFLECT)

    # illumination: radial fall-off times slow blotches; multiplies fluorescence and background
    yy = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / max(h, w)
    xx = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / max(h, w)
    illum = 1.0 - np.float32(2.0 * acq.vignetting) * (yy[:, None] ** 2 + xx[None, :] ** 2)  # corners: 1 - vignetting
    if acq.background_variation:
        illum *= 1.0 + np.float32(acq.background_variation * 0.5) * smooth_noise(rng, (h, w), 160.0 * scale)
    np.clip(illum, 0.05, None, out=illum)
    img += np.asarray(acq.background, np.float32)
    img *= illum[..., None]

    # shot noise (Gaussian approximation of Poisson) + read noise, then saturation
    sd = np.maximum(img, 0.0)
    sd *= np.float32(1.0 / acq.full_well)
    sd += np.float32(acq.read_noise) ** 2
    np.sqrt(sd, out=sd)
    sd *= rng.standard_normal(img.shape, dtype=np.float32)
    img += sd
    np.clip(img, 0.0, 1.0, out=img)
    return img
