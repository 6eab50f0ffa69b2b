"""Whole synthetic fields with ground truth: nuclei, signals, debris, acquisition."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import pandas as pd

from genuine_core.rules import is_amplified
from genuine_core.synth.acquisition import NOMINAL, Acquisition, acquire, smooth_noise
from genuine_core.synth.lines import DEFAULT_LINES, CellLine, lines_by_name
from genuine_core.synth.nuclei import Layout, NucleusStyle, place_nuclei, render_dapi
from genuine_core.synth.signals import (
    CLUSTER, MYCN, NMI, SignalStyle, Spot, cluster_subspots, place_signals, render_spots,
)

logger = logging.getLogger(__name__)

NUCLEI_COLUMNS = [
    "nucleus_id", "cell_line", "n_nmi", "n_mycn", "n_cluster", "true_label", "auto_label", "noise",
    "label_noisy", "cy", "cx", "area",
    # extras: the line genotype, what was placed before merging, and the separate noise flags
    "line_label", "natural", "flipped", "n_nmi_placed", "n_mycn_placed", "n_cluster_placed", "n_merged",
    "dapi_level",
]
BOX_COLUMNS = ["nucleus_id", "cls", "x1", "y1", "x2", "y2"]
_DTYPES = {"cell_line": object, "noise": object, "label_noisy": bool, "natural": bool, "flipped": bool,
           "cy": np.float64, "cx": np.float64, "dapi_level": np.float64}


@dataclass(frozen=True)
class Scene:
    """Everything about a field except the acquisition.

    Attributes:
        scale: length scale; 1.0 = the real FISH_RGB.TIF (nuclei ~55-70 px).
        nucleus: nucleus look.
        signal: signal drawing.
        layout: nucleus arrangement.
        haze: out-of-focus MYCN light inside nuclei, as a fraction of the blurred signal.
        debris: amount of green debris outside nuclei (0 = none, 1 = like the real image).
        specks: mean number of stray red/green specks outside nuclei per 512 x 512 px.
        replace_tries: re-placements of a nucleus' signals when merging changed its Cohn label.
    """

    scale: float = 1.0
    nucleus: NucleusStyle = field(default_factory=NucleusStyle)
    signal: SignalStyle = field(default_factory=SignalStyle)
    layout: Layout = field(default_factory=Layout)
    haze: float = 1.0
    debris: float = 1.0
    specks: float = 6.0
    replace_tries: int = 4

    def __post_init__(self) -> None:
        if not 0.25 <= self.scale <= 8:
            raise ValueError(f"scale must be in [0.25, 8], got {self.scale}")
        if self.replace_tries < 0:
            raise ValueError("replace_tries must be >= 0")
        for name in ("haze", "debris", "specks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass
class SynthField:
    """A synthetic scan with ground truth.

    Attributes:
        image: (H, W, 3) float32 in [0, 1], channels (NMI, MYCN, DAPI).
        masks: (H, W) int32 instance masks, 0 = background, 1..N = ``nuclei.nucleus_id``.
        nuclei: one row per nucleus (columns ``NUCLEI_COLUMNS``).
        boxes: one row per visible signal/cluster: ``nucleus_id, cls, x1, y1, x2, y2`` in
            field pixel coordinates (``x2, y2`` exclusive: the box covers columns x1..x2-1).
    """

    image: np.ndarray
    masks: np.ndarray
    nuclei: pd.DataFrame
    boxes: pd.DataFrame


def resolve_composition(
    composition: Mapping[str, float] | Sequence[str],
    n_nuclei: int,
    lines: Mapping[str, CellLine],
    rng: np.random.Generator,
) -> list[str]:
    """Turn a composition into one line name per nucleus.

    Args:
        composition: either weights per line name (each nucleus drawn independently), or
            an explicit sequence of ``n_nuclei`` line names (used in order).
        n_nuclei: number of nuclei requested.
        lines: known lines by name.
        rng: random generator.

    Raises:
        ValueError: unknown line, bad weights, or a sequence of the wrong length.
    """
    if n_nuclei < 0:
        raise ValueError(f"n_nuclei must be >= 0, got {n_nuclei}")
    if isinstance(composition, Mapping):
        names = list(composition)
        weights = np.asarray([float(composition[k]) for k in names], np.float64)
        if not names or (weights < 0).any() or weights.sum() <= 0 or not np.isfinite(weights).all():
            raise ValueError(f"composition weights must be >= 0 with a positive sum, got {dict(composition)}")
        idx = rng.choice(len(names), size=n_nuclei, p=weights / weights.sum())
        out = [names[i] for i in idx]
    elif isinstance(composition, Sequence) and not isinstance(composition, str):
        out = [str(c) for c in composition]
        if len(out) != n_nuclei:
            raise ValueError(f"composition lists {len(out)} lines for {n_nuclei} nuclei")
    else:
        raise ValueError("composition must be a mapping line -> weight or a sequence of line names")
    unknown = sorted(set(out) - set(lines))
    if unknown:
        raise ValueError(f"unknown cell line(s) {unknown}; known: {sorted(lines)}")
    return out


@dataclass
class _SpotSpecs:
    """Spots to render for a whole field (singles and clusters batched separately)."""

    owner: list[int] = field(default_factory=list)  # nucleus index per spot
    offsets: list[np.ndarray] = field(default_factory=list)
    sigmas: list[np.ndarray] = field(default_factory=list)
    cls: list[int] = field(default_factory=list)
    amp: list[float] = field(default_factory=list)
    blur: list[float] = field(default_factory=list)

    def add(self, owner: int, offsets, sigmas, cls: int, amp: float, blur: float = 0.0) -> None:
        self.owner.append(owner)
        self.offsets.append(np.asarray(offsets, np.float32).reshape(-1, 2))
        self.sigmas.append(np.asarray(sigmas, np.float32).reshape(-1))
        self.cls.append(cls)
        self.amp.append(float(amp))
        self.blur.append(float(blur))

    def render(self, rng: np.random.Generator, style: SignalStyle, scale: float) -> list[Spot]:
        """Render all queued spots; in-focus and out-of-focus ones in separate batches (canvas sizes differ)."""
        out: list[Spot | None] = [None] * len(self.owner)
        blur = np.asarray(self.blur)
        for sel in (np.flatnonzero(blur == 0), np.flatnonzero(blur > 0)):
            if sel.size == 0:
                continue
            spots = render_spots(rng, [self.offsets[i] for i in sel], [self.sigmas[i] for i in sel],
                                 np.asarray(self.cls)[sel], np.asarray(self.amp)[sel], blur[sel], style, scale)
            for i, sp in zip(sel, spots):
                out[i] = sp
        return out  # type: ignore[return-value]


def _draw_phenotype(rng: np.random.Generator, owner: int, line: CellLine, style: SignalStyle,
                    singles: _SpotSpecs, clusters: _SpotSpecs) -> int:
    """Sample one nucleus' counts from its line and queue its spots; returns the intended label."""
    pheno, (n_nmi, n_mycn, n_cl), atyp = line.sample(rng)
    for _ in range(n_cl):
        amp = rng.uniform(*pheno.cluster_amplitude)
        offs, sigs = cluster_subspots(rng, rng.uniform(*pheno.cluster_radius), pheno.mycn_sigma)
        clusters.add(owner, offs, sigs, CLUSTER, amp)
    for cls, n, sig, amp_rng in ((NMI, n_nmi, pheno.nmi_sigma, pheno.nmi_amplitude),
                                 (MYCN, n_mycn, pheno.mycn_sigma, pheno.mycn_amplitude)):
        for _ in range(n):
            sigma, amp, blur = rng.uniform(*sig), rng.uniform(*amp_rng), 0.0
            if rng.random() < style.out_of_focus:  # wider, dimmer, blurrier
                sigma *= rng.uniform(1.3, 1.7)
                amp *= rng.uniform(0.4, 0.65)
                blur = rng.uniform(1.0, 2.0)
            singles.add(owner, np.zeros((1, 2)), [sigma], cls, amp, blur)
    return line.label ^ int(atyp)


def _debris(rng: np.random.Generator, shape: tuple[int, int], amount: float, scale: float) -> np.ndarray:
    """Granular green debris clouds: clumps of small blobs, gated by slow blotches (like the real image)."""
    if amount <= 0:
        return np.zeros(shape, np.float32)
    gate = np.clip(smooth_noise(rng, shape, 110.0 * scale) - 0.75, 0.0, 0.6) / 0.6
    fine = np.clip(smooth_noise(rng, shape, 4.0 * scale) - 0.4, 0.0, None)
    coarse = np.clip(smooth_noise(rng, shape, 14.0 * scale) - 0.1, 0.0, None)
    out = gate * (0.35 * fine + 0.25 * coarse + 0.03 * gate)
    return (amount * out).astype(np.float32)


def _specks(rng: np.random.Generator, red: np.ndarray, green: np.ndarray, outside: np.ndarray,
            density: float, style: SignalStyle, scale: float) -> None:
    """Stray red and green specks outside nuclei (drawn in place)."""
    h, w = outside.shape
    n = int(rng.poisson(density * h * w / 512.0**2))
    cand = np.flatnonzero(outside.ravel())
    if n == 0 or cand.size == 0:
        return
    spots = render_spots(rng, [np.zeros((1, 2))] * n, list(rng.uniform(1.8, 3.0, (n, 1))), np.full(n, NMI),
                         rng.uniform(0.2, 0.6, n), None, style, scale)
    for p, s in zip(cand[rng.integers(0, cand.size, n)], spots):
        y, x = divmod(int(p), w)
        chan = red if rng.random() < 0.5 else green
        y0, x0 = y - s.half, x - s.half
        if y0 < 0 or x0 < 0 or y0 + s.canvas.shape[0] > h or x0 + s.canvas.shape[1] > w:
            continue
        chan[y0:y0 + s.canvas.shape[0], x0:x0 + s.canvas.shape[1]] += s.canvas * np.float32(s.amplitude)


def _add_stray_light(rng: np.random.Generator, red: np.ndarray, green: np.ndarray, inside: np.ndarray,
                     scene: Scene) -> None:
    """Add to the (H, W) ``red`` and ``green`` channels, in place, what is not a signal: out-of-focus
    MYCN haze and faint autofluorescence inside nuclei (``inside``: (H, W) bool), debris and specks
    only where no nucleus is (dilated so blur does not drag them onto nuclei)."""
    sc = scene.scale
    if scene.haze > 0 and green.any():
        green += scene.haze * cv2.GaussianBlur(green, (0, 0), 4.0 * sc) * inside
    red += scene.nucleus.autofluorescence[0] * inside
    green += scene.nucleus.autofluorescence[1] * inside
    grow = max(3, int(round(4 * sc)))
    outside = cv2.dilate(inside.astype(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) == 0
    stray_r = np.zeros(red.shape, np.float32)
    stray_g = _debris(rng, red.shape, scene.debris, sc)
    _specks(rng, stray_r, stray_g, outside, scene.specks, scene.signal, sc)
    red += stray_r * outside
    green += stray_g * outside


def make_field(
    rng: np.random.Generator,
    composition: Mapping[str, float] | Sequence[str],
    n_nuclei: int,
    shape: tuple[int, int] = (512, 512),
    acquisition: Acquisition = NOMINAL,
    flip_rate: float = 0.0,
    *,
    lines: Sequence[CellLine] = DEFAULT_LINES,
    scene: Scene = Scene(),
) -> SynthField:
    """Generate one synthetic field with ground truth.

    Args:
        rng: random generator (the only source of randomness).
        composition: line weights ``{"mna_dm": 0.5, ...}`` or one line name per nucleus.
        n_nuclei: nuclei requested; fewer are placed when the field is too full (logged).
        shape: (H, W) in pixels.
        acquisition: imaging conditions.
        flip_rate: paper's beta, probability that a nucleus' auto-label is flipped.
        lines: cell line definitions.
        scene: nucleus, signal, layout and debris settings.

    Returns:
        SynthField. ``nuclei.noise`` is ``none``, ``natural`` (phenotype contradicts the
        line genotype), ``flip`` (auto-label flipped) or ``natural+flip``;
        ``label_noisy`` is ``auto_label != true_label`` (natural XOR flip).

    Raises:
        ValueError: bad composition, size or flip rate.
    """
    if not 0.0 <= flip_rate <= 1.0:
        raise ValueError(f"flip_rate must be in [0, 1], got {flip_rate}")
    if len(shape) != 2 or min(shape) < 32:
        raise ValueError(f"shape must be (H, W) with both >= 32, got {shape}")
    by_name = lines_by_name(tuple(lines))
    names = resolve_composition(composition, n_nuclei, by_name, rng)
    h, w = int(shape[0]), int(shape[1])
    sc = scene.scale

    masks, nuclei = place_nuclei(rng, len(names), (h, w), scene.nucleus, scene.layout, sc)
    if len(nuclei) < len(names):
        logger.info("field %dx%d: placed %d of %d nuclei", h, w, len(nuclei), len(names))
    dapi, bright = render_dapi(rng, masks, nuclei, scene.nucleus, sc)
    red = np.zeros((h, w), np.float32)
    green = np.zeros((h, w), np.float32)

    singles, clusters = _SpotSpecs(), _SpotSpecs()
    intended = [_draw_phenotype(rng, k, by_name[name], scene.signal, singles, clusters)
                for k, name in enumerate(names[:len(nuclei)])]
    per_nucleus: list[list[Spot]] = [[] for _ in nuclei]
    for specs in (clusters, singles):
        for owner, spot in zip(specs.owner, specs.render(rng, scene.signal, sc)):
            per_nucleus[owner].append(spot)

    rows, box_rows = [], []
    for nuc, name, b, spots, want in zip(nuclei, names, bright, per_nucleus, intended):
        line = by_name[name]
        own = masks[nuc.sl] == nuc.label
        # merging can change what a reader counts; re-place a few times so that the share of
        # natural label noise stays what the line asks for (a crowded nucleus may still flip)
        for _ in range(scene.replace_tries + 1):
            ps = place_signals(rng, own, spots, scene.signal, sc)
            if is_amplified(ps.n_nmi, ps.n_mycn, ps.n_cluster) == want:
                break
        red[nuc.sl] += ps.red
        green[nuc.sl] += ps.green
        y0, x0 = nuc.sl[0].start, nuc.sl[1].start
        for cls, x1, y1, x2, y2 in ps.boxes:
            box_rows.append((nuc.label, int(cls), int(x1 + x0), int(y1 + y0), int(x2 + x0), int(y2 + y0)))
        true = int(is_amplified(ps.n_nmi, ps.n_mycn, ps.n_cluster))
        flipped = bool(rng.random() < flip_rate)
        natural = true != line.label
        auto = line.label ^ int(flipped)
        noise = "natural+flip" if natural and flipped else "natural" if natural else "flip" if flipped else "none"
        ys, xs = np.nonzero(own)
        rows.append((nuc.label, name, ps.n_nmi, ps.n_mycn, ps.n_cluster, true, auto, noise, auto != true,
                     float(ys.mean() + y0), float(xs.mean() + x0), int(ys.size),
                     line.label, natural, flipped, *ps.n_placed, ps.n_merged, float(b)))

    _add_stray_light(rng, red, green, masks > 0, scene)
    image = acquire(np.stack([red, green, dapi], axis=-1), acquisition, rng, sc)
    cols = list(zip(*rows)) if rows else [[] for _ in NUCLEI_COLUMNS]
    nuclei_df = pd.DataFrame({name: np.asarray(col, dtype=_DTYPES.get(name, np.int64))
                              for name, col in zip(NUCLEI_COLUMNS, cols)})
    boxes_df = pd.DataFrame(np.asarray(box_rows, np.int64).reshape(-1, len(BOX_COLUMNS)), columns=BOX_COLUMNS)
    return SynthField(image=image, masks=masks, nuclei=nuclei_df, boxes=boxes_df)
