"""FISH signals: rendering (paper section 2.3), placement inside a nucleus, merging.

A spot is a Gaussian with ``sigma`` = its width; values below ``cut`` (0.8) of the
maximum are set to zero, which gives a hard-edged disc of radius ``0.668 * sigma``.
It is then elastically deformed (random displacement field smoothed with
``elastic_sigma``, scaled by ``elastic_alpha``) and Gaussian-blurred. A cluster (HSR
amplicon) is the union of several hard-cut sub-spots, deformed and blurred the same
way. Spots of the same channel whose footprints touch merge into one visible signal;
the ground truth counts what is visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: detector classes
NMI, MYCN, CLUSTER = 1, 2, 3
CLASS_NAMES = {NMI: "NMI", MYCN: "MYCN", CLUSTER: "cluster"}


@dataclass(frozen=True)
class SignalStyle:
    """How spots are drawn (lengths in pixels at scale 1).

    Attributes:
        cut: values below this fraction of the Gaussian maximum are set to 0 (paper: 0.8).
        elastic_alpha: elastic deformation strength (Simard et al.; paper's alpha).
        elastic_sigma: smoothing of the displacement field (paper's sigma).
        blur: Gaussian blur sigma after the deformation.
        box_threshold: a signal's footprint (and box) is where it reaches this fraction of its peak.
        min_gap: spacing kept between footprints of neighbouring signals when spaced.
        overlap_prob: probability that a signal is placed without the spacing rule
            (then it may touch another one and merge with it).
        out_of_focus: probability that a signal is out of focus (wider, dimmer, blurrier).
    """

    cut: float = 0.8
    elastic_alpha: float = 40.0
    elastic_sigma: float = 3.0
    blur: float = 0.7
    box_threshold: float = 0.3
    min_gap: float = 2.0
    overlap_prob: float = 0.04
    out_of_focus: float = 0.08

    def __post_init__(self) -> None:
        if not 0.0 < self.cut < 1.0:
            raise ValueError(f"cut must be in (0, 1), got {self.cut}")
        if self.elastic_alpha < 0 or self.elastic_sigma <= 0:
            raise ValueError("elastic_alpha must be >= 0 and elastic_sigma > 0")
        if self.blur < 0:
            raise ValueError(f"blur must be >= 0, got {self.blur}")
        if not 0.0 < self.box_threshold < 1.0:
            raise ValueError(f"box_threshold must be in (0, 1), got {self.box_threshold}")
        if self.min_gap < 0:
            raise ValueError(f"min_gap must be >= 0, got {self.min_gap}")
        for name in ("overlap_prob", "out_of_focus"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class Spot:
    """One rendered signal on its own small canvas.

    Attributes:
        canvas: (S, S) float32, peak 1.0 (multiply by the brightness when drawing).
        half: canvas index of the placement centre (canvas is ``2 * half + 1`` wide).
        footprint: (S, S) bool, where ``canvas >= box_threshold``.
        halo: (S, S) bool, the footprint grown by one pixel (touching footprints merge).
        fbox: footprint bounding box in canvas pixels ``(y1, x1, y2, x2)``, ``*2`` exclusive.
        extent: radius (pixels) of the footprint around the centre.
        cls: NMI, MYCN or CLUSTER.
        amplitude: brightness it is drawn with.
    """

    canvas: np.ndarray
    half: int
    footprint: np.ndarray
    halo: np.ndarray
    fbox: tuple[int, int, int, int]
    extent: float
    cls: int
    amplitude: float


def _displacement_margin(style: SignalStyle, scale: float) -> float:
    """~2.5 sd of the elastic displacement (white noise smoothed in 2-D has sd ~ 0.577 / (2 sqrt(pi) sigma))."""
    sd = style.elastic_alpha * scale**2 * 0.577 / (2.0 * math.sqrt(math.pi) * style.elastic_sigma * scale)
    return 2.5 * sd


def _tile(stack: np.ndarray, cols: int) -> np.ndarray:
    """(n, S, S) -> mosaic (rows * S, cols * S); n must be a multiple of cols."""
    n, s, _ = stack.shape
    return stack.reshape(n // cols, cols, s, s).transpose(0, 2, 1, 3).reshape(n // cols * s, cols * s)


def _untile(mosaic: np.ndarray, s: int) -> np.ndarray:
    """Inverse of :func:`_tile`."""
    h, w = mosaic.shape
    return mosaic.reshape(h // s, s, w // s, s).transpose(0, 2, 1, 3).reshape(-1, s, s)


def render_spots(
    rng: np.random.Generator,
    sub_offsets: list[np.ndarray],
    sub_sigmas: list[np.ndarray],
    cls: np.ndarray,
    amplitudes: np.ndarray,
    extra_blur: np.ndarray | None = None,
    style: SignalStyle = SignalStyle(),
    scale: float = 1.0,
) -> list[Spot]:
    """Render a batch of spots (paper 2.3), each on its own canvas.

    Each spot is the union (max) of hard-cut Gaussians (one for a single signal, many
    for a cluster), then elastically deformed and blurred. The batch is drawn as one
    mosaic so the deformation and blur are single image operations (fast).

    Args:
        rng: random generator (sub-pixel jitter, elastic field).
        sub_offsets: per spot, (K, 2) sub-spot centre offsets (dy, dx), pixels at scale 1.
        sub_sigmas: per spot, (K,) Gaussian widths (sigma = width), pixels at scale 1.
        cls: (n,) NMI, MYCN or CLUSTER per spot (recorded only).
        amplitudes: (n,) brightness per spot (recorded only).
        extra_blur: (n,) extra blur sigma per spot (out of focus), pixels at scale 1.
        style: drawing parameters.
        scale: length scale (all pixel lengths are multiplied by it).

    Returns:
        One Spot per input, canvases of peak 1.0.
    """
    n = len(sub_sigmas)
    if n == 0:
        return []
    if len(sub_offsets) != n or len(cls) != n or len(amplitudes) != n:
        raise ValueError("render_spots: per-spot arguments differ in length")
    offs = [np.asarray(o, np.float32).reshape(-1, 2) * scale for o in sub_offsets]
    sigs = [np.asarray(g, np.float32).reshape(-1) * scale for g in sub_sigmas]
    if any(g.size == 0 or g.size != o.shape[0] or (g <= 0).any() for o, g in zip(offs, sigs)):
        raise ValueError("every spot needs >= 1 sub-spot with sigma > 0 and matching offsets")
    extra = np.zeros(n, np.float32) if extra_blur is None else np.asarray(extra_blur, np.float32) * scale
    base_blur = style.blur * scale
    blur = np.hypot(base_blur, extra)
    rcut = math.sqrt(2.0 * math.log(1.0 / style.cut))
    reach = np.array([float(np.max(np.hypot(o[:, 0], o[:, 1]) + rcut * g)) for o, g in zip(offs, sigs)])
    half = int(math.ceil(float(np.max(reach + 3.0 * blur)) + _displacement_margin(style, scale) + 1.5))
    size = 2 * half + 1
    cols = int(math.ceil(math.sqrt(n)))
    n_pad = cols * int(math.ceil(n / cols))

    # hard-cut Gaussians, one row per sub-spot, max-combined per spot
    tile_of = np.concatenate([np.full(g.size, i) for i, g in enumerate(sigs)])
    jitter = rng.uniform(-0.5, 0.5, size=(n, 2)).astype(np.float32)
    centre = np.concatenate(offs) + jitter[tile_of]
    sig = np.concatenate(sigs)[:, None]
    grid = np.arange(size, dtype=np.float32) - half
    ey = np.exp(-((grid[None, :] - centre[:, :1]) ** 2) / (2 * sig * sig))
    ex = np.exp(-((grid[None, :] - centre[:, 1:]) ** 2) / (2 * sig * sig))
    blobs = ey[:, :, None] * ex[:, None, :]
    blobs[blobs < style.cut] = 0.0
    tiles = np.zeros((n_pad, size, size), np.float32)
    first = np.r_[True, tile_of[1:] != tile_of[:-1]]
    tiles[tile_of[first]] = blobs[first]
    for j in np.flatnonzero(~first):
        np.maximum(tiles[tile_of[j]], blobs[j], out=tiles[tile_of[j]])

    mosaic = _tile(tiles, cols)
    if style.elastic_alpha > 0:
        mosaic = _elastic(mosaic, rng, style.elastic_sigma * scale, style.elastic_alpha * scale**2)
    if base_blur > 0:
        mosaic = cv2.GaussianBlur(mosaic, (0, 0), base_blur)
    tiles = _untile(mosaic, size)[:n].copy()
    for i in np.flatnonzero(extra > 0):  # out-of-focus spots: blur on top of the base blur
        tiles[i] = cv2.GaussianBlur(tiles[i], (0, 0), float(extra[i]))

    peak = tiles.max(axis=(1, 2))
    dead = peak <= 0
    if dead.any():  # spot deformed off its canvas (never seen in practice): a single bright pixel
        tiles[dead] = 0.0
        tiles[dead, half, half] = 1.0
        peak[dead] = 1.0
    tiles /= peak[:, None, None]
    foot = tiles >= style.box_threshold
    rad = np.hypot(grid[:, None], grid[None, :])
    extent = np.where(foot, rad[None], 0.0).max(axis=(1, 2)) + 0.5
    halo, fbox = _halo(foot), _bounding_boxes(foot)
    return [Spot(tiles[i], half, foot[i], halo[i], fbox[i], float(extent[i]), int(cls[i]), float(amplitudes[i]))
            for i in range(n)]


def _elastic(image: np.ndarray, rng: np.random.Generator, sigma: float, alpha: float) -> np.ndarray:
    """``image`` (H, W) float32 warped by a random displacement field: white noise smoothed with
    ``sigma`` px and scaled by ``alpha`` (outside the image reads 0)."""
    d = rng.uniform(-1.0, 1.0, size=(2,) + image.shape).astype(np.float32)
    dx = cv2.GaussianBlur(d[0], (0, 0), sigma) * np.float32(alpha)
    dy = cv2.GaussianBlur(d[1], (0, 0), sigma) * np.float32(alpha)
    gy, gx = np.indices(image.shape, dtype=np.float32)
    return cv2.remap(image, gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _halo(foot: np.ndarray) -> np.ndarray:
    """(n, S, S) bool footprints grown by one pixel, diagonals included."""
    halo = foot.copy()
    halo[:, 1:] |= foot[:, :-1]
    halo[:, :-1] |= foot[:, 1:]
    grown = halo.copy()
    halo[:, :, 1:] |= grown[:, :, :-1]
    halo[:, :, :-1] |= grown[:, :, 1:]
    return halo


def _bounding_boxes(foot: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(y1, x1, y2, x2)`` (``*2`` exclusive) of each (S, S) footprint in an (n, S, S) bool stack."""
    size = foot.shape[-1]
    rows, cols = foot.any(axis=2), foot.any(axis=1)
    y1, y2 = rows.argmax(axis=1), size - rows[:, ::-1].argmax(axis=1)
    x1, x2 = cols.argmax(axis=1), size - cols[:, ::-1].argmax(axis=1)
    return [(int(y1[i]), int(x1[i]), int(y2[i]), int(x2[i])) for i in range(len(foot))]


def cluster_subspots(
    rng: np.random.Generator, radius: float, sigma_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-spot layout of an HSR-type cluster: offsets (K, 2) and sigmas (K,) packed in a disc of ``radius``."""
    if radius <= 0:
        raise ValueError(f"cluster radius must be > 0, got {radius}")
    k = int(np.clip(round((radius / 2.2) ** 2 * 1.6), 4, 40))
    r = radius * np.sqrt(rng.uniform(0, 1, k))
    t = rng.uniform(0, 2 * np.pi, k)
    return np.stack([r * np.sin(t), r * np.cos(t)], 1), rng.uniform(sigma_range[0], sigma_range[1], k)


@dataclass
class PlacedSignals:
    """Signals drawn into one nucleus (coordinates local to the nucleus crop).

    Attributes:
        red: (h, w) float32 NMI channel contribution.
        green: (h, w) float32 MYCN channel contribution.
        boxes: (K, 5) int64 rows ``cls, x1, y1, x2, y2`` (local coords, ``x2, y2`` exclusive)
            of the *visible* signals after merging.
        n_nmi, n_mycn, n_cluster: visible counts (what a reader would count).
        n_placed: (n_nmi, n_mycn, n_cluster) before merging.
        n_merged: signals absorbed into a neighbour.
    """

    red: np.ndarray
    green: np.ndarray
    boxes: np.ndarray
    n_nmi: int
    n_mycn: int
    n_cluster: int
    n_placed: tuple[int, int, int]
    n_merged: int


def _footprints_touch(a: Spot, ay: int, ax: int, b: Spot, by: int, bx: int) -> bool:
    """Whether spot ``a`` placed at (ay, ax) touches spot ``b`` at (by, bx) (a's halo meets b's footprint)."""
    dy, dx = (by - b.half) - (ay - a.half), (bx - b.half) - (ax - a.half)  # b's canvas origin in a's canvas
    sa, sb = a.halo.shape[0], b.footprint.shape[0]
    y0, y1 = max(0, dy), min(sa, dy + sb)
    x0, x1 = max(0, dx), min(sa, dx + sb)
    if y0 >= y1 or x0 >= x1:
        return False
    return bool((a.halo[y0:y1, x0:x1] & b.footprint[y0 - dy:y1 - dy, x0 - dx:x1 - dx]).any())


def place_signals(
    rng: np.random.Generator,
    mask: np.ndarray,
    spots: list[Spot],
    style: SignalStyle = SignalStyle(),
    scale: float = 1.0,
    tries: int = 32,
) -> PlacedSignals:
    """Place rendered spots at random valid positions inside one nucleus and merge touching ones.

    A spot's centre is drawn among pixels whose distance to the nucleus border is at
    least the spot's footprint radius, so the visible signal lies inside the mask. Spots
    keep ``style.min_gap`` from each other, except with probability ``style.overlap_prob``
    (and when no spaced position is found among ``tries`` candidates: then the
    roomiest one is taken). Spots of the same channel whose footprints touch are merged
    into one visible signal (a MYCN spot touching a cluster joins the cluster).

    Args:
        rng: random generator.
        mask: (h, w) bool nucleus mask (local crop).
        spots: rendered spots; placed largest first.
        style: spacing parameters.
        scale: length scale.
        tries: candidate positions per spot.

    Returns:
        PlacedSignals with local-coordinate channels and boxes.
    """
    h, w = mask.shape
    red = np.zeros((h, w), np.float32)
    green = np.zeros((h, w), np.float32)
    n = len(spots)
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1].ravel()
    inside = np.flatnonzero(mask.ravel())
    if n == 0 or inside.size == 0:
        return PlacedSignals(red, green, np.zeros((0, 5), np.int64), 0, 0, 0, (0, 0, 0), 0)
    order = sorted(range(n), key=lambda i: -spots[i].extent)
    # all candidate positions at once: (n, tries) flat indices, their depth, rows and columns
    cand = inside[rng.integers(0, inside.size, size=(n, tries))]
    depth = dist[cand]
    cy_all, cx_all = np.divmod(cand, w)
    free = rng.random(n) < style.overlap_prob
    gap = style.min_gap * scale
    deepest = float(dist.max())
    pos = np.zeros((n, 3), np.float64)  # y, x, extent of placed spots (in placing order)
    chan_of = np.zeros(n, np.int64)
    parent = list(range(n))
    recs: list[tuple[int, int, int, int, int]] = []  # cls, y1, x1, y2, x2 (exclusive)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k, i in enumerate(order):
        s = spots[i]
        ok = depth[k] >= min(s.extent, deepest)
        if not ok.any():  # nucleus too small for this footprint: use its deepest point
            y, x = divmod(int(np.argmax(dist)), w)
            ys, xs = np.array([y]), np.array([x])
        else:
            ys, xs = cy_all[k][ok], cx_all[k][ok]
        chan = 0 if s.cls == NMI else 1
        if k:
            d = np.hypot(ys[:, None] - pos[None, :k, 0], xs[:, None] - pos[None, :k, 1])
            if free[k]:
                j = 0
            else:
                slack = (d - (pos[None, :k, 2] + s.extent + gap)).min(axis=1)
                good = np.flatnonzero(slack >= 0)
                j = int(good[0]) if good.size else int(np.argmax(slack))
            # neighbours of the same channel whose footprints could touch this one
            near = np.flatnonzero((d[j] < pos[:k, 2] + s.extent + 1.5) & (chan_of[:k] == chan))
        else:
            j, near = 0, ()
        cy, cx = int(ys[j]), int(xs[j])
        pos[k] = (cy, cx, s.extent)
        chan_of[k] = chan
        for m in near:
            other = spots[order[m]]
            if _footprints_touch(s, cy, cx, other, int(pos[m, 0]), int(pos[m, 1])):
                ri, rj = find(k), find(int(m))
                if ri != rj:
                    parent[rj] = ri
        recs.append(_paste(red if chan == 0 else green, s, cy, cx))

    roots = [find(k) for k in range(n)]
    boxes_arr = _merged_boxes(recs, roots)
    counts = [int((boxes_arr[:, 0] == c).sum()) for c in (NMI, MYCN, CLUSTER)]
    placed_counts = tuple(sum(1 for r in recs if r[0] == c) for c in (NMI, MYCN, CLUSTER))
    return PlacedSignals(red, green, boxes_arr, counts[0], counts[1], counts[2], placed_counts, n - len(set(roots)))


def _paste(target: np.ndarray, s: Spot, cy: int, cx: int) -> tuple[int, int, int, int, int]:
    """Add spot ``s`` centred at (cy, cx) to the (h, w) ``target`` (its canvas clipped to it).

    Returns:
        ``cls, y1, x1, y2, x2`` (exclusive) of the spot's footprint box, clipped to ``target``.
    """
    h, w = target.shape
    y0, x0 = cy - s.half, cx - s.half
    sy0, sx0 = max(0, -y0), max(0, -x0)
    sy1, sx1 = min(s.canvas.shape[0], h - y0), min(s.canvas.shape[1], w - x0)
    target[y0 + sy0:y0 + sy1, x0 + sx0:x0 + sx1] += s.canvas[sy0:sy1, sx0:sx1] * np.float32(s.amplitude)
    fy1, fx1, fy2, fx2 = s.fbox
    return s.cls, max(0, y0 + fy1), max(0, x0 + fx1), min(h, y0 + fy2), min(w, x0 + fx2)


def _merged_boxes(recs: list[tuple[int, int, int, int, int]], roots: list[int]) -> np.ndarray:
    """One box around each group of touching spots (``recs[k]`` = ``cls, y1, x1, y2, x2`` of spot k,
    ``roots[k]`` its group); a group holding a cluster is a cluster.

    Returns:
        (K, 5) int64 rows ``cls, x1, y1, x2, y2``, sorted.
    """
    groups: dict[int, list[int]] = {}
    for k, root in enumerate(roots):
        groups.setdefault(root, []).append(k)
    boxes = []
    for members in groups.values():
        classes = {recs[m][0] for m in members}
        cls = CLUSTER if CLUSTER in classes else recs[members[0]][0]
        boxes.append((cls, min(recs[m][2] for m in members), min(recs[m][1] for m in members),
                      max(recs[m][4] for m in members), max(recs[m][3] for m in members)))
    return np.asarray(sorted(boxes), np.int64).reshape(-1, 5)
