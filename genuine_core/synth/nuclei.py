"""Nuclei: irregular ellipses placed in touching clumps, with DAPI texture.

A nucleus border is an ellipse whose radius is modulated by a few random radial
harmonics, ``r(t) = 1 + sum_k a_k cos(k t + phi_k)``. Nuclei are placed one by one,
most of them next to an already placed one (clumps, as in real cytospins); a new
nucleus may overlap earlier ones a little, and contested pixels stay with the earlier
nucleus, so touching nuclei share a flat border like pressed cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from genuine_core.synth.acquisition import smooth_noise


@dataclass(frozen=True)
class NucleusStyle:
    """Nucleus shape and DAPI look (lengths in pixels at scale 1).

    Attributes:
        diameter: equivalent-diameter range (the real FISH_RGB.TIF: ~55-70 px).
        aspect: major/minor axis ratio range.
        irregularity: amplitude of the radial harmonics (relative radius).
        dapi: DAPI brightness range (scene units; the real image's nuclei read ~0.3-0.55 above background).
        texture: relative amplitude of chromatin texture.
        dome: exponent of the rim fall-off ``(1 - rho^2) ** dome`` (0 = flat, 0.5 = a sphere seen from above).
        nucleoli: mean number of dark nucleoli per nucleus.
        autofluorescence: (NMI, MYCN) channel level inside nuclei (scene units).
        edge_blur: extra DAPI blur (px): a nucleus is thick, its rim is out of focus.
    """

    diameter: tuple[float, float] = (54.0, 70.0)
    aspect: tuple[float, float] = (1.0, 1.35)
    irregularity: float = 0.035
    dapi: tuple[float, float] = (0.34, 0.6)
    texture: float = 0.22
    dome: float = 0.35
    nucleoli: float = 1.5
    autofluorescence: tuple[float, float] = (0.05, 0.04)
    edge_blur: float = 1.5

    def __post_init__(self) -> None:
        for name in ("diameter", "aspect", "dapi"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
        if self.aspect[0] < 1.0:
            raise ValueError("aspect must be >= 1")
        if self.diameter[0] < 6:
            raise ValueError("nuclei must be at least 6 px across")
        for name in ("irregularity", "texture", "dome"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.nucleoli < 0 or self.edge_blur < 0:
            raise ValueError("nucleoli and edge_blur must be >= 0")


@dataclass
class NucleusShape:
    """Parameters of one nucleus outline (pixels, field frame)."""

    a: float  # semi-axis along the rotated x
    b: float
    theta: float
    amps: np.ndarray  # harmonic amplitudes for k = 2..5
    phases: np.ndarray

    @property
    def reach(self) -> int:
        """Radius (px) that bounds the outline."""
        return int(math.ceil(max(self.a, self.b) * (1.0 + float(np.abs(self.amps).sum())))) + 1


def random_shape(rng: np.random.Generator, style: NucleusStyle, scale: float = 1.0) -> NucleusShape:
    """Draw one nucleus outline."""
    d = rng.uniform(*style.diameter) * scale
    asp = rng.uniform(*style.aspect)
    a = d / 2 * math.sqrt(asp)
    b = d / 2 / math.sqrt(asp)
    k = np.arange(2, 6)
    amps = style.irregularity * rng.uniform(0.3, 1.0, k.size) / (k - 1)
    return NucleusShape(a, b, rng.uniform(0, math.pi), amps, rng.uniform(0, 2 * math.pi, k.size))


def shape_rho(shape: NucleusShape, cy: float, cx: float, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Normalised radius of pixels: < 1 inside the outline, 0 at the centre.

    Args:
        shape: outline.
        cy, cx: centre (pixels).
        ys, xs: 1-D pixel row and column coordinates of the crop.

    Returns:
        (len(ys), len(xs)) float32.
    """
    dy = (ys.astype(np.float32) - cy)[:, None]
    dx = (xs.astype(np.float32) - cx)[None, :]
    c, s = math.cos(shape.theta), math.sin(shape.theta)
    u = (dx * c + dy * s) / shape.a
    v = (-dx * s + dy * c) / shape.b
    r = np.sqrt(u * u + v * v)
    # cos(k t + phi) from cos t, sin t by the angle-addition recurrence (no trig per pixel)
    safe = np.where(r > 0, r, np.float32(1.0))
    c1, s1 = np.where(r > 0, u / safe, np.float32(1.0)), v / safe
    ck, sk = c1, s1
    edge = np.ones_like(r)
    for k, (amp, ph) in enumerate(zip(shape.amps, shape.phases), start=2):
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1  # now cos(k t), sin(k t)
        edge += np.float32(amp) * (ck * np.float32(math.cos(ph)) - sk * np.float32(math.sin(ph)))
    return (r / edge).astype(np.float32)


@dataclass
class Nucleus:
    """A placed nucleus.

    Attributes:
        label: mask label (1..N).
        shape: outline parameters.
        cy, cx: intended centre (pixels).
        sl: (row slice, col slice) crop holding the nucleus in the field.
        rho: crop-sized normalised radius (float32).
    """

    label: int
    shape: NucleusShape
    cy: float
    cx: float
    sl: tuple[slice, slice]
    rho: np.ndarray


@dataclass(frozen=True)
class Layout:
    """How nuclei are arranged in a field.

    Attributes:
        clump_prob: probability that a nucleus is placed against an existing one.
        touch: (low, high) centre distance as a fraction of the sum of the two radii.
        max_overlap: largest share of a new nucleus' area that may lie on earlier nuclei.
        border: minimum gap (px) between any nucleus and the field edge (nuclei cut by
            the edge would be skipped by patch extraction).
        tries: placement attempts per nucleus.
    """

    clump_prob: float = 0.65
    touch: tuple[float, float] = (0.82, 0.98)
    max_overlap: float = 0.1
    border: int = 2
    tries: int = 60

    def __post_init__(self) -> None:
        if not 0 <= self.clump_prob <= 1:
            raise ValueError("clump_prob must be in [0, 1]")
        if not 0 < self.touch[0] <= self.touch[1]:
            raise ValueError("touch must be (low, high) with 0 < low <= high")
        if not 0 <= self.max_overlap < 0.5:
            raise ValueError("max_overlap must be in [0, 0.5)")
        if self.border < 1:
            raise ValueError("border must be >= 1 (nuclei touching the edge are not extractable)")
        if self.tries < 1:
            raise ValueError("tries must be >= 1")


def place_nuclei(
    rng: np.random.Generator,
    n: int,
    shape: tuple[int, int],
    style: NucleusStyle = NucleusStyle(),
    layout: Layout = Layout(),
    scale: float = 1.0,
) -> tuple[np.ndarray, list[Nucleus]]:
    """Place up to ``n`` nuclei in a field.

    Returns:
        (labels, nuclei): (H, W) int32 instance masks (0 background, 1..len(nuclei)) and
        the placed nuclei in label order. Fewer than ``n`` when the field is too full.
    """
    h, w = shape
    labels = np.zeros((h, w), np.int32)
    nuclei: list[Nucleus] = []
    border = layout.border
    centres = np.zeros((n, 3), np.float64)  # cy, cx, mean radius of placed nuclei
    for _ in range(n):
        for _attempt in range(layout.tries):
            shp = random_shape(rng, style, scale)
            reach = shp.reach
            lo_y, hi_y = border + reach, h - 1 - border - reach
            lo_x, hi_x = border + reach, w - 1 - border - reach
            if hi_y < lo_y or hi_x < lo_x:
                break  # field too small for this nucleus
            if nuclei and rng.random() < layout.clump_prob:
                nb = nuclei[int(rng.integers(len(nuclei)))]
                r_nb = (nb.shape.a + nb.shape.b) / 2
                dist = (r_nb + (shp.a + shp.b) / 2) * rng.uniform(*layout.touch)
                ang = rng.uniform(0, 2 * math.pi)
                cy, cx = nb.cy + dist * math.sin(ang), nb.cx + dist * math.cos(ang)
                if not (lo_y <= cy <= hi_y and lo_x <= cx <= hi_x):
                    continue
            else:
                cy, cx = rng.uniform(lo_y, hi_y), rng.uniform(lo_x, hi_x)
            r_new = (shp.a + shp.b) / 2
            if nuclei:  # cheap reject: centre deep inside an existing nucleus
                d2 = (centres[:len(nuclei), 0] - cy) ** 2 + (centres[:len(nuclei), 1] - cx) ** 2
                if (d2 < (0.7 * (centres[:len(nuclei), 2] + r_new)) ** 2).any():
                    continue
            y0, x0 = int(cy) - reach, int(cx) - reach
            sl = (slice(y0, y0 + 2 * reach + 2), slice(x0, x0 + 2 * reach + 2))
            rho = shape_rho(shp, cy, cx, np.arange(sl[0].start, sl[0].stop), np.arange(sl[1].start, sl[1].stop))
            inside = rho < 1.0
            area = int(inside.sum())
            taken = labels[sl][inside] > 0
            if area == 0 or taken.sum() > layout.max_overlap * area:
                continue
            free = inside & (labels[sl] == 0)
            # keep one connected piece (a sliver cut off by a neighbour would be a separate blob)
            n_cc, cc = cv2.connectedComponents(free.astype(np.uint8), connectivity=4)
            if n_cc > 2:
                sizes = np.bincount(cc.ravel())
                sizes[0] = 0
                free = cc == int(np.argmax(sizes))
            lab = len(nuclei) + 1
            labels[sl][free] = lab
            centres[lab - 1] = (cy, cx, r_new)
            nuclei.append(Nucleus(lab, shp, cy, cx, sl, rho))
            break
    return labels, nuclei


def render_dapi(
    rng: np.random.Generator,
    labels: np.ndarray,
    nuclei: list[Nucleus],
    style: NucleusStyle = NucleusStyle(),
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """DAPI scene channel for placed nuclei.

    Brightness per nucleus from ``style.dapi``; a dome profile (rim darker); chromatin
    texture at two scales shared across the field; a few dark nucleoli. Where nuclei
    overlap their DAPI adds up (the mask gives the pixels to one of them).

    Returns:
        (dapi, brightness): (H, W) float32 scene channel and (N,) per-nucleus brightness.
    """
    h, w = labels.shape
    coarse = smooth_noise(rng, (h, w), 7.0 * scale)
    fine = smooth_noise(rng, (h, w), 2.5 * scale)
    tex = 1.0 + style.texture * (0.7 * coarse + 0.5 * fine)
    dapi = np.zeros((h, w), np.float32)
    bright = rng.uniform(*style.dapi, size=len(nuclei)).astype(np.float32)
    for nuc, b in zip(nuclei, bright):
        rho = np.minimum(nuc.rho, 1.0)
        prof = np.maximum(1.0 - rho * rho, 0.0) ** np.float32(style.dome)
        # nucleoli: dark soft blobs
        k = rng.poisson(style.nucleoli)
        if k:
            hh, ww = rho.shape
            yy = np.arange(hh, dtype=np.float32)[:, None]
            xx = np.arange(ww, dtype=np.float32)[None, :]
            cand = np.flatnonzero((rho < 0.6).ravel())
            if cand.size:
                for p in cand[rng.integers(0, cand.size, k)]:
                    py, px = divmod(int(p), ww)
                    rad = rng.uniform(3.0, 6.0) * scale
                    prof = prof * (1.0 - 0.35 * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * rad * rad)))
        dapi[nuc.sl] += b * prof * tex[nuc.sl]
    np.clip(dapi, 0.0, None, out=dapi)
    if style.edge_blur > 0:
        dapi = cv2.GaussianBlur(dapi, (0, 0), style.edge_blur * scale)
    return dapi, bright
