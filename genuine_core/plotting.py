"""Figures and patch images for the dashboard (pure functions, no Streamlit).

Two kinds of helpers live here:

- **images**: NumPy in, ``(H, W, 3) uint8`` out: a patch as RGB or as its separate
  channels, detector boxes drawn on a patch, nucleus outlines drawn on a scan, a
  labelled montage of many patches.
- **figures**: pandas in, ``plotly.graph_objects.Figure`` out: the scan with outlines
  and hover per nucleus, probability histograms, predicted-vs-expected MNA share
  (the paper's Table 3 as a picture), UMAP scatters (WebGL), probe response curves
  with the 0.5 crossing (the paper's Figure 4), probe conditions on a UMAP, training
  curves.

Channel order follows the code convention (NMI, MYCN, DAPI) = (R, G, B), so a patch
displayed as RGB shows NMI red, MYCN green and DAPI blue, as on the microscope.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from genuine_core.palette import (  # the one place for colours and symbols
    CLASS_STYLES, KIND_SYMBOLS, LABEL_COLOURS, OKABE_ITO, PALETTE, category_style, symbol_variant)
from genuine_core.palette import hex_rgb as hex_to_rgb
from genuine_core.percent_text import pct_text

#: detector class -> (name, RGB colour) for boxes; class ids as in docs/ARCHITECTURE.md
BOX_CLASSES: dict[int, tuple[str, tuple[int, int, int]]] = {
    1: ("NMI", (255, 80, 80)),
    2: ("MYCN", (90, 255, 90)),
    3: ("MYCN cluster", (255, 215, 0)),
}
CHANNEL_NAMES = ("NMI", "MYCN", "DAPI")
#: patch display schemes: name -> RGB (0-1) each channel (NMI, MYCN, DAPI) is drawn in; display only, never
#: stored or read by a model. "magenta/green" is for red-green colour-blind readers: NMI magenta and MYCN
#: green differ in blue, which dichromats see, and DAPI is grey so it does not blend with NMI's blue
PATCH_SCHEMES: dict[str, tuple[tuple[float, float, float], ...]] = {
    "red/green": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "magenta/green": ((1.0, 0.0, 1.0), (0.0, 1.0, 0.0), (0.4, 0.4, 0.4)),
}
#: each scheme's channel colours (NMI, MYCN, DAPI) in words, for captions
SCHEME_WORDS = {"red/green": ("red", "green", "blue"), "magenta/green": ("magenta", "green", "grey")}
#: detector box colours of each scheme: class id -> (colour word, RGB); red/green: :data:`BOX_CLASSES`
SCHEME_BOX_COLOURS = {
    "red/green": {k: (word, BOX_CLASSES[k][1]) for k, word in zip(BOX_CLASSES, ("red", "green", "yellow"))},
    "magenta/green": {1: ("magenta", (255, 0, 255)), 2: ("green", (0, 230, 0)), 3: ("white", (255, 255, 255))},
}
#: label value -> display name; labels: 1 = MNA, 0 = non-MNA, -1 = excluded
LABEL_NAMES = {1: "MNA", 0: "non-MNA", -1: "excluded"}
#: probability colour scale: non-MNA blue -> undecided pale -> MNA red (as the paper's Fig. 4)
PROB_COLORSCALE = [[0.0, "#2166ac"], [0.25, "#67a9cf"], [0.5, "#f7f7f7"], [0.75, "#ef8a62"], [1.0, "#b2182b"]]
#: up to this many markers a scatter is drawn as SVG (no WebGL context needed); above it WebGL
SVG_MAX_POINTS = 3000
_LAYOUT = dict(template="plotly_white", margin=dict(l=55, r=20, t=45, b=85),
               title_font=dict(size=15), title_x=0.0, title_xanchor="left")
#: width (px) scan figures are laid out for: the half-page column of a 1280 px screen (less the colour bar)
SCAN_FIGURE_WIDTH = 430
#: pixels between rows of probe crossing labels: the i-th curve's label sits below the level line (even i) or
#: above it (odd i), in row i // 2 counted outwards, so labels of curves crossing close together never overprint
CROSSING_LABEL_ROW = 16
#: size (px) of a probe crossing's "x" marker, and the clear pixels between it and its label: the label was
#: shifted 6 px right and 3 px down of the marker's centre, inside the marker's 6.5 px half-width, so "8.85" touched it
CROSSING_MARKER_SIZE, CROSSING_LABEL_GAP = 13, 4
#: legend name of the probe curves' ground truth (``probe_curve``)
TRUTH_CURVE = "ground truth (generator's visible counts)"
#: legend under the plot area, so it never collides with the title
_LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0)


# ----------------------------------------------------------------------------- images
def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (any float dtype) -> uint8; uint8 passes through unchanged."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    return (np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _check_patch(patch: np.ndarray) -> np.ndarray:
    arr = np.asarray(patch)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"patch must be (3, P, P) channel-first, got shape {arr.shape}")
    return arr


def _scheme(scheme: str) -> np.ndarray:
    if scheme not in PATCH_SCHEMES:
        raise ValueError(f"unknown colour scheme {scheme!r}: use one of {', '.join(PATCH_SCHEMES)}")
    return np.asarray(PATCH_SCHEMES[scheme], np.float32)


def patch_rgb(patch: np.ndarray, gain: float = 1.0, scheme: str = "red/green") -> np.ndarray:
    """A patch as an RGB image.

    Args:
        patch: (3, P, P) float in [0, 1], channels (NMI, MYCN, DAPI).
        gain: brightness multiplier applied before clipping (display only).
        scheme: a :data:`PATCH_SCHEMES` name; "red/green" (default) is the microscope's colours.

    Returns:
        (P, P, 3) uint8; red/green: R = NMI, G = MYCN, B = DAPI.
    """
    arr = _check_patch(patch).astype(np.float32)
    weights = _scheme(scheme)
    if scheme == "red/green":  # the channels as they are: a NaN or inf stays in its own channel
        return to_uint8(np.moveaxis(arr, 0, -1) * gain)
    return to_uint8(np.einsum("chw,cr->hwr", arr, weights) * gain)


def recolour(rgb: np.ndarray, scheme: str = "red/green") -> np.ndarray:
    """A stored patch image (P, P, 3) uint8, R = NMI, G = MYCN, B = DAPI, drawn in ``scheme`` (as :func:`patch_rgb`);
    red/green returns it unchanged. One matrix product over the pixels, so a gallery of 200 patches stays fast."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"patch image must be (P, P, 3) RGB, got shape {arr.shape}")
    weights = _scheme(scheme)
    if scheme == "red/green":
        return arr
    return np.clip(arr.astype(np.float32) @ weights + 0.5, 0, 255).astype(np.uint8)


def patch_channels(patch: np.ndarray, gain: float = 1.0, scheme: str = "red/green") -> list[tuple[str, np.ndarray]]:
    """Each channel of a patch on its own, in its own colour.

    Args:
        patch: (3, P, P) float in [0, 1], channels (NMI, MYCN, DAPI).
        gain: brightness multiplier (display only).
        scheme: a :data:`PATCH_SCHEMES` name giving each channel's colour.

    Returns:
        ``[("NMI", rgb), ("MYCN", rgb), ("DAPI", rgb)]``, each (P, P, 3) uint8 with only
        that channel lit, in its scheme colour (red/green: red, green, blue).
    """
    arr = _check_patch(patch).astype(np.float32)
    weights = _scheme(scheme)
    return [(name, to_uint8(arr[c][..., None] * weights[c] * gain)) for c, name in enumerate(CHANNEL_NAMES)]


def box_colours(scheme: str = "red/green") -> dict[int, tuple[int, int, int]]:
    """Detector class id -> box RGB for a patch shown in ``scheme`` (red/green: :data:`BOX_CLASSES`)."""
    _scheme(scheme)
    return {k: rgb for k, (_, rgb) in SCHEME_BOX_COLOURS[scheme].items()}


def channel_caption(scheme: str = "red/green") -> str:
    """What the channels' colours are in ``scheme``, e.g. "NMI red · MYCN green · DAPI blue"."""
    _scheme(scheme)
    return " · ".join(f"{n} {c}" for n, c in zip(CHANNEL_NAMES, SCHEME_WORDS[scheme]))


def box_caption(scheme: str = "red/green") -> str:
    """The legend of the detector boxes in ``scheme``, e.g. "red NMI · green MYCN · yellow cluster"."""
    _scheme(scheme)
    words = {k: word for k, (word, _) in SCHEME_BOX_COLOURS[scheme].items()}
    return f"{words[1]} NMI · {words[2]} MYCN · {words[3]} cluster"


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor ((H, W[, C]) -> (H*f, W*f[, C]))."""
    if factor < 1:
        raise ValueError("factor must be >= 1")
    if factor == 1:
        return np.asarray(image)
    return np.repeat(np.repeat(np.asarray(image), factor, axis=0), factor, axis=1)


def counted_boxes(boxes: pd.DataFrame, config: dict) -> pd.DataFrame:
    """The stored boxes a detector counted: ``score`` at or above the count threshold of the box's
    ``cls`` (1-3) in the model's ``config["detector"]["count_threshold"]`` (one value or one per class)."""
    thresholds = np.broadcast_to(np.asarray(config.get("detector", {}).get("count_threshold", 0.0), float),
                                 (len(BOX_CLASSES),))
    return boxes[boxes["score"].to_numpy(float) >= thresholds[boxes["cls"].to_numpy(int) - 1]]


def draw_boxes(rgb: np.ndarray, boxes: pd.DataFrame, scale: int = 1, thickness: int = 1,
               min_score: float = 0.0, colours: Mapping[int, Sequence[int]] | None = None) -> np.ndarray:
    """Draw detector boxes on an RGB patch.

    Args:
        rgb: (P, P, 3) uint8 patch image.
        boxes: rows with ``cls`` (1 NMI, 2 MYCN, 3 cluster) and ``x1, y1, x2, y2`` in patch
            pixels (x = column); an optional ``score`` column is filtered by ``min_score``.
        scale: enlarge the image by this integer factor first so thin boxes stay visible;
            box coordinates are scaled with it.
        thickness: line width in output pixels.
        min_score: boxes with a lower ``score`` are skipped.
        colours: class id -> RGB (e.g. :func:`box_colours` of a scheme); default :data:`BOX_CLASSES`.

    Returns:
        (P*scale, P*scale, 3) uint8 copy with box outlines in the class colours.
    """
    colours = box_colours() if colours is None else colours
    out = upscale(np.asarray(rgb, np.uint8), scale).copy()
    h, w = out.shape[:2]
    if boxes is None or len(boxes) == 0:
        return out
    if "score" in boxes.columns and min_score > 0:
        boxes = boxes[boxes["score"] >= min_score]
    for cls, x1, y1, x2, y2 in boxes[["cls", "x1", "y1", "x2", "y2"]].itertuples(index=False):
        colour = colours.get(int(cls), (255, 255, 255))
        c0 = int(np.clip(math.floor(min(x1, x2) * scale), 0, w - 1))
        c1 = int(np.clip(math.ceil(max(x1, x2) * scale) - 1, 0, w - 1))
        r0 = int(np.clip(math.floor(min(y1, y2) * scale), 0, h - 1))
        r1 = int(np.clip(math.ceil(max(y1, y2) * scale) - 1, 0, h - 1))
        t = max(1, int(thickness))
        out[r0:min(r0 + t, r1 + 1), c0:c1 + 1] = colour
        out[max(r1 - t + 1, r0):r1 + 1, c0:c1 + 1] = colour
        out[r0:r1 + 1, c0:min(c0 + t, c1 + 1)] = colour
        out[r0:r1 + 1, max(c1 - t + 1, c0):c1 + 1] = colour
    return out


def outline_pixels(masks: np.ndarray) -> np.ndarray:
    """Inner boundary of each instance.

    Args:
        masks: (H, W) int instance labels, 0 = background.

    Returns:
        (H, W) bool, True on pixels of a nucleus whose 4-neighbour differs from it
        (another nucleus, background or the image edge).
    """
    m = np.asarray(masks)
    if m.ndim != 2:
        raise ValueError(f"masks must be (H, W), got {m.shape}")
    padded = np.pad(m, 1, mode="constant", constant_values=0)
    centre = padded[1:-1, 1:-1]
    edge = np.zeros(m.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[dy:dy + m.shape[0], dx:dx + m.shape[1]] != centre
    return edge & (m > 0)


def colour_for_probability(prob: np.ndarray) -> np.ndarray:
    """Map probabilities in [0, 1] to RGB on :data:`PROB_COLORSCALE`.

    Args:
        prob: (N,) float; NaN maps to grey.

    Returns:
        (N, 3) uint8.
    """
    p = np.asarray(prob, np.float64).ravel()
    stops = np.array([s for s, _ in PROB_COLORSCALE])
    cols = np.array([hex_to_rgb(h) for _, h in PROB_COLORSCALE], np.float64)
    out = np.empty((p.size, 3), np.float64)
    finite = np.isfinite(p)
    pc = np.clip(np.where(finite, p, 0.0), 0.0, 1.0)
    for k in range(3):
        out[:, k] = np.interp(pc, stops, cols[:, k])
    out[~finite] = (150, 150, 150)
    return (out + 0.5).astype(np.uint8)


def outline_overlay(image: np.ndarray, masks: np.ndarray, colours: Mapping[int, Sequence[int]],
                    default: Sequence[int] = (200, 200, 200), thickness: int = 1, gain: float = 1.0) -> np.ndarray:
    """Draw each nucleus outline in its own colour on a scan.

    Args:
        image: (H, W, 3) float in [0, 1] (NMI, MYCN, DAPI) or uint8.
        masks: (H, W) int instance labels.
        colours: mask label -> RGB (0-255) for that nucleus' outline.
        default: colour for labelled nuclei missing from ``colours``.
        thickness: outline width in pixels (grown inwards).
        gain: brightness multiplier for the scan (display only).

    Returns:
        (H, W, 3) uint8.
    """
    base = np.asarray(image)
    if base.ndim != 3 or base.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {base.shape}")
    m = np.asarray(masks)
    if m.shape != base.shape[:2]:
        raise ValueError(f"masks {m.shape} do not match image {base.shape[:2]}")
    out = to_uint8(base.astype(np.float32) * gain if base.dtype != np.uint8 else base).copy()
    edge = outline_pixels(m)
    work = m.copy()
    for _ in range(max(1, thickness) - 1):  # grow the outline inwards
        work = np.where(edge, 0, work)
        edge = edge | outline_pixels(work)
    lut = np.tile(np.asarray(default, np.uint8), (int(m.max()) + 1, 1))
    for label, colour in colours.items():
        if 0 < int(label) < lut.shape[0]:
            lut[int(label)] = np.asarray(colour, np.uint8)
    out[edge] = lut[m[edge]]
    return out


def montage(images: Sequence[np.ndarray], ncols: int = 8, pad: int = 2,
            borders: Sequence[Sequence[int] | None] | None = None, border: int = 2,
            background: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """Tile equally sized RGB images into one grid image.

    Args:
        images: each (P, P, 3) uint8 (e.g. from :func:`patch_rgb`).
        ncols: tiles per row.
        pad: gap between tiles in pixels.
        borders: optional colour per tile drawn as a frame of ``border`` pixels (``None`` = no frame).
        border: frame width.
        background: gap colour.

    Returns:
        (rows*(P+pad)+pad, cols*(P+pad)+pad, 3) uint8; a (1, 1, 3) blank image for no tiles.
    """
    if len(images) == 0:
        return np.full((1, 1, 3), background, np.uint8)
    if ncols < 1:
        raise ValueError("ncols must be >= 1")
    h, w = np.asarray(images[0]).shape[:2]
    ncols = min(ncols, len(images))
    nrows = math.ceil(len(images) / ncols)
    out = np.empty((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), np.uint8)
    out[:] = np.asarray(background, np.uint8)
    for i, img in enumerate(images):
        tile = np.asarray(img)
        if tile.shape[:2] != (h, w):
            raise ValueError(f"tile {i} is {tile.shape[:2]}, expected {(h, w)}")
        tile = tile.copy()
        if borders is not None and i < len(borders) and borders[i] is not None:
            b = border
            col = np.asarray(borders[i], np.uint8)
            tile[:b], tile[-b:], tile[:, :b], tile[:, -b:] = col, col, col, col
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + h, x:x + w] = tile
    return out


def image_data_uri(rgb: np.ndarray, fmt: str = "png", quality: int = 92) -> str:
    """Encode an (H, W, 3) uint8 image as a ``data:image/...;base64,`` URI (for plotly image traces).

    Args:
        fmt: ``"png"`` (lossless) or ``"jpeg"`` (about 7x smaller for a 1000 x 1000 scan, so
            the browser gets and draws it much faster).
        quality: JPEG quality.
    """
    from PIL import Image

    if fmt not in ("png", "jpeg"):
        raise ValueError(f"fmt must be 'png' or 'jpeg', got {fmt!r}")
    buf = io.BytesIO()
    img = Image.fromarray(np.asarray(rgb, np.uint8))
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=int(quality))
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------- figures
def scan_figure(overlay: np.ndarray, nuclei: pd.DataFrame, title: str = "", height: int | None = None,
                image_format: str = "jpeg") -> go.Figure:
    """A zoomable scan with per-nucleus hover.

    Args:
        overlay: (H, W, 3) uint8 scan with outlines already drawn (:func:`outline_overlay`).
        nuclei: rows with ``cx, cy`` (pixels), ``prob`` (may be NaN), and optionally
            ``nucleus_id`` and ``label`` for the hover text.
        title: figure title.
        height: figure height in pixels (None: the scan's aspect at :data:`SCAN_FIGURE_WIDTH` px wide,
            within 300-640 px; a fixed height left empty bands).
        image_format: encoding of the image in the figure (``"jpeg"`` or ``"png"``).

    Returns:
        Figure with the image (y axis pointing down, square pixels) and one marker per
        nucleus coloured by probability with a colour bar (WebGL above ``SVG_MAX_POINTS``).
    """
    h, w = overlay.shape[:2]
    fig = go.Figure()
    fig.add_trace(go.Image(source=image_data_uri(overlay, image_format), x0=0, y0=0, dx=1, dy=1, hoverinfo="skip"))
    if len(nuclei):
        hover = [f"nucleus {n}<br>P(MNA) {p:.2f}" if np.isfinite(p) else f"nucleus {n}<br>no prediction"
                 for n, p in zip(nuclei.get("nucleus_id", pd.Series(range(len(nuclei)))), nuclei["prob"].astype(float))]
        if "label" in nuclei.columns:
            hover = [f"{t}<br>{lab}" for t, lab in zip(hover, nuclei["label"].astype(str))]
        trace = go.Scatter if len(nuclei) <= SVG_MAX_POINTS else go.Scattergl
        fig.add_trace(trace(
            x=nuclei["cx"], y=nuclei["cy"], mode="markers", text=hover, hoverinfo="text",
            marker=dict(size=7, color=nuclei["prob"], cmin=0, cmax=1, colorscale=PROB_COLORSCALE,
                        line=dict(width=1, color="white"),
                        colorbar=dict(title="P(MNA)", thickness=12, len=0.6)),
            showlegend=False, name="nuclei",
        ))
    fig.update_xaxes(visible=False, range=[0, w], constrain="domain")
    fig.update_yaxes(visible=False, range=[h, 0], scaleanchor="x", constrain="domain")
    top = 40 if title else 5
    if height is None:
        height = int(np.clip(top + SCAN_FIGURE_WIDTH * h / max(w, 1), 300, 640))
    fig.update_layout(**{**_LAYOUT, "margin": dict(l=0, r=0, t=top, b=0)},
                      title=title, height=height, dragmode="zoom")
    return fig


def probability_histogram(preds: pd.DataFrame, threshold: float = 0.5, bins: int = 20, title: str = "") -> go.Figure:
    """Histograms of per-nucleus MNA probability, one per model, bars side by side per bin (overlaid
    bars hid one model's behind another's where they agree, at 0 and 1).

    Args:
        preds: rows with ``model`` and ``prob``.
        threshold: decision threshold drawn as a dashed line.
        bins: number of equal bins on [0, 1].

    Each model's bars have their own colour and hatching (``palette.category_style``: models of one colour,
    the first and the ninth, differ in hatching), so models stay apart without telling colours apart.
    """
    fig = go.Figure()
    for i, (model, grp) in enumerate(preds.groupby("model", sort=True)):
        style = category_style(i)
        fig.add_trace(go.Histogram(x=grp["prob"], name=str(model), opacity=0.85,
                                   xbins=dict(start=0, end=1.0 + 1e-9, size=1.0 / bins),
                                   marker=dict(color=style.colour, pattern_shape=style.pattern)))
    fig.add_vline(x=threshold, line_dash="dash", line_color="#444",
                  annotation_text=f"threshold {threshold:g}", annotation_position="top")
    fig.update_layout(**_LAYOUT, barmode="group", bargap=0.1, title=title, height=340,
                      xaxis_title="P(MNA)", yaxis_title="nuclei", legend={**_LEGEND_BELOW, "y": -0.3})
    fig.update_xaxes(range=[0, 1])
    return fig




def spread(values: Sequence[float], step: float = 1.0, max_half_width: float = 3.0) -> np.ndarray:
    """Deterministic horizontal jitter: points sharing a value are spread symmetrically around it.

    Args:
        values: (N,) x values (e.g. expected MNA % in percent); equal values form one group.
        step: gap between neighbours of a group (same unit as ``values``).
        max_half_width: a group never spreads further than this either side (the step shrinks).

    Returns:
        (N,) float offsets in input order: 0 for a value held once; ``(-0.5, +0.5) * step`` for two, ...
    """
    v = np.asarray(values, np.float64)
    out = np.zeros(v.shape, np.float64)
    for value in np.unique(v[np.isfinite(v)]):
        idx = np.flatnonzero(v == value)
        k = len(idx)
        if k > 1:
            gap = min(step, 2 * max_half_width / (k - 1))
            out[idx] = (np.arange(k) - (k - 1) / 2) * gap
    return out


def predicted_vs_expected(summary: pd.DataFrame, band: float = 10.0, title: str = "") -> go.Figure:
    """Predicted MNA % against the expected mixture % per model (the paper's Table 3 as a picture).

    Args:
        summary: rows with ``sample``, ``model``, ``expected_pct``, ``pred_pct`` and
            optionally ``ci_low_pct``/``ci_high_pct`` (95 % interval), all in percent, and
            ``sample_kind`` (each kind its own marker symbol, named in the legend; from the ninth model on,
            the colours repeat with open, dotted, ... symbols: ``palette.symbol_variant``).
            Rows without an expected value are ignored.
        band: half-width in percentage points of the shaded agreement band around y = x
            (the paper highlights deviations within +-10 %), clipped to the possible 0-100 %.

    Samples of one model sharing an expected value (cell lines at 0 % and 100 %) are spread
    sideways by :func:`spread` (1 pp apart, at most 3 pp either side) so each stays visible; the
    hover names the sample with its exact expected share.
    """
    df = summary.dropna(subset=["expected_pct", "pred_pct"])
    fig = go.Figure()
    xs = np.unique(np.clip([0.0, band, 100.0 - band, 100.0], 0.0, 100.0))  # the band's corners inside 0-100
    upper, lower = np.clip(xs + band, 0.0, 100.0), np.clip(xs - band, 0.0, 100.0)
    fig.add_trace(go.Scatter(x=np.r_[xs, xs[::-1]], y=np.r_[upper, lower[::-1]], fill="toself", mode="lines",
                             fillcolor="rgba(120,120,120,0.12)", line=dict(width=0), hoverinfo="skip",
                             name=f"within ±{band:g} pp"))
    fig.add_trace(go.Scatter(x=[0.0, 100.0], y=[0.0, 100.0], mode="lines", line=dict(color="#888", dash="dash"),
                             name="predicted = expected", hoverinfo="skip"))
    models = sorted(df["model"].unique()) if len(df) else []
    offsets = np.linspace(-1.2, 1.2, len(models)) if len(models) > 1 else [0.0]
    kinds = df["sample_kind"].fillna("?").astype(str) if "sample_kind" in df.columns else None
    symbol_of = {k: KIND_SYMBOLS[i % len(KIND_SYMBOLS)] for i, k in
                 enumerate(sorted(kinds.unique()))} if kinds is not None else {}
    for i, model in enumerate(models):
        g = df[df["model"] == model].sort_values("sample")
        kind = kinds.loc[g.index] if kinds is not None else pd.Series("", index=g.index)
        err = None
        if {"ci_low_pct", "ci_high_pct"} <= set(g.columns):
            err = dict(type="data", symmetric=False, array=(g["ci_high_pct"] - g["pred_pct"]).clip(lower=0),
                       arrayminus=(g["pred_pct"] - g["ci_low_pct"]).clip(lower=0), thickness=1)
        fig.add_trace(go.Scatter(
            x=g["expected_pct"] + offsets[i] + spread(g["expected_pct"]), y=g["pred_pct"], mode="markers",
            name=str(model), error_y=err,
            marker=dict(size=9, color=category_style(i).colour, line=dict(width=1, color="white"),
                        symbol=[symbol_variant(symbol_of.get(k, "circle"), i) for k in kind] if symbol_of
                        else symbol_variant("circle", i)),
            text=g["sample"] + np.where(kind != "", " (" + kind + ")", ""),
            # printed here as the sample report prints them (plotly's formatting rounds ties such as 6.25 up,
            # and ".0f" printed an expected 12.5 % as 13 %)
            customdata=np.c_[[pct_text(v) for v in g["expected_pct"]], [pct_text(v) for v in g["pred_pct"]],
                             [f"{v:+.1f}" for v in g["pred_pct"] - g["expected_pct"]]],
            hovertemplate="%{text}<br>expected %{customdata[0]} %<br>predicted %{customdata[1]} %"
                          "<br>deviation %{customdata[2]} pp<extra>" + str(model) + "</extra>",
        ))
    for kind, symbol in symbol_of.items() if len(symbol_of) > 1 else ():  # legend key for the symbols
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=kind, hoverinfo="skip",
                                 marker=dict(size=9, color="#777", symbol=symbol)))
    fig.update_layout(**_LAYOUT, title=title, height=420, xaxis_title="expected MNA nuclei (%)",
                      yaxis_title="predicted MNA nuclei (%)", legend=_LEGEND_BELOW)
    fig.update_xaxes(range=[-5, 105])
    fig.update_yaxes(range=[-4, 104])
    return fig


#: the embedding map's colour bar: horizontal, under the x axis where the legend of a categorical map goes; upright
#: beside a half-page map on a 1024 px screen it took 75 of 280 px and left the map 127 px wide
EMBEDDING_COLORBAR = dict(orientation="h", thickness=10, len=0.6, x=0.0, xanchor="left", y=-0.2, yanchor="top")


def embedding_figure(points: pd.DataFrame, colour: str, title: str = "", height: int = 520,
                     categorical: bool | None = None, background: pd.DataFrame | None = None) -> go.Figure:
    """WebGL scatter of UMAP coordinates.

    Args:
        points: rows with ``x``, ``y``, ``nucleus_id`` and the ``colour`` column; optional
            ``sample`` for hover.
        colour: column to colour by. Float columns (probabilities in [0, 1]) use the
            probability scale unless ``categorical`` is True; others are categorical with
            one trace per value.
        title: subplot title.
        height: pixels.
        categorical: force categorical (True) or continuous (False) colouring. Categories are drawn
            largest first, so a small group (the real scan's 63 nuclei among 1,100 synthetic ones) lies
            on top; the legend lists them by label (labels with a fixed colour first), and is shown for
            a single category too (all grey must say "not curated"). Beyond eight categories (13 samples on
            the demo store) the colours repeat with other marker symbols (``palette.category_style``).
        background: optional points (``x``, ``y``) drawn first in light grey, not selectable.

    Returns:
        Figure whose point ``customdata`` is the ``nucleus_id`` (for selections).
    """
    fig = go.Figure()
    if background is not None and len(background):
        fig.add_trace(go.Scattergl(x=background["x"], y=background["y"], mode="markers", name="reference",
                                   marker=dict(size=3, color="#d9d9d9"), hoverinfo="skip", legendrank=0))
    values = points[colour] if colour in points.columns else pd.Series(["?"] * len(points), index=points.index)
    if categorical is None:
        categorical = not pd.api.types.is_float_dtype(values)
    hover_sample = points["sample"].astype(str) if "sample" in points.columns else pd.Series([""] * len(points),
                                                                                              index=points.index)
    if categorical:
        cats = values.astype("string").fillna("unlabelled")
        order = sorted(cats.unique(), key=lambda c: (c not in LABEL_COLOURS, c))  # legend order, colours
        size = cats.value_counts()
        for i, cat in sorted(enumerate(order), key=lambda ic: -size[ic[1]]):  # drawn largest first
            sel = cats == cat
            style = category_style(i)
            col, symbol = (LABEL_COLOURS[cat], "circle") if cat in LABEL_COLOURS else (style.colour, style.symbol)
            fig.add_trace(go.Scattergl(
                x=points.loc[sel, "x"], y=points.loc[sel, "y"], mode="markers", name=str(cat), legendrank=i + 1,
                customdata=points.loc[sel, "nucleus_id"], text=hover_sample[sel],
                hovertemplate="nucleus %{customdata}<br>%{text}<extra>" + str(cat) + "</extra>",
                marker=dict(size=5 if symbol == "circle" else 6, color=col, opacity=0.8, symbol=symbol),
            ))
    else:
        fig.add_trace(go.Scattergl(
            x=points["x"], y=points["y"], mode="markers", name=colour, customdata=points["nucleus_id"],
            text=hover_sample, hovertemplate="nucleus %{customdata}<br>%{text}<br>" + colour
                                             + " %{marker.color:.2f}<extra></extra>",
            marker=dict(size=5, color=values, cmin=0, cmax=1, colorscale=PROB_COLORSCALE, opacity=0.85,
                        line=dict(width=0.5, color="rgba(60,60,60,0.35)"),  # keeps ~0.5 (near white) visible
                        colorbar=EMBEDDING_COLORBAR | dict(title=dict(text=colour, side="top"))),
            showlegend=False,
        ))
    fig.update_layout(**_LAYOUT, title=title, height=height, dragmode="lasso", xaxis_title="UMAP 1",
                      yaxis_title="UMAP 2", legend={**_LEGEND_BELOW, "itemsizing": "constant"})
    if categorical:
        fig.update_layout(showlegend=True)  # plotly hides the legend of a single trace
    return fig


def crossings(x: Sequence[float], y: Sequence[float], level: float = 0.5) -> list[float]:
    """Every x where the piecewise-linear curve y(x) crosses ``level`` (sorted by x), in order.

    A sign change of ``y - level`` between neighbours is interpolated. Points exactly at the level
    count once per run: at the run's middle when the curve passes from one side to the other, not
    at all when it only touches the level and turns back; a run at either end counts once.

    Returns:
        The crossings' x values; empty when the curve never crosses the level (every point below
        it, every point above it, or it only touches the level). (The evaluation's single number
        is ``training.metrics.crossing``: the first x the curve reaches the level from below, or
        the first x when the curve starts at or above it; :func:`crossing_text` words both.)
    """
    xs = np.asarray(x, np.float64)
    ys = np.asarray(y, np.float64)
    if xs.shape != ys.shape:
        raise ValueError("x and y must have the same length")
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    sign = np.sign(ys - level)
    out, i, n = [], 0, len(xs)
    while i < n:
        if sign[i] == 0:  # a run of points at the level: xs[i..j-1]
            j = i
            while j < n and sign[j] == 0:
                j += 1
            before, after = (sign[i - 1] if i else 0), (sign[j] if j < n else 0)
            if before * after < 0 or before == 0 or after == 0:
                out.append(float((xs[i] + xs[j - 1]) / 2))
            i = j
            continue
        if i + 1 < n and sign[i] * sign[i + 1] < 0:
            d0, d1 = ys[i] - level, ys[i + 1] - level
            out.append(float(xs[i] + d0 / (d0 - d1) * (xs[i + 1] - xs[i])))
        i += 1
    return out


def crossing_text(x: Sequence[float], y: Sequence[float], level: float = 0.5, beyond: bool = True) -> str:
    """Where the curve y(x) crosses ``level``, in words a reader can trust.

    The first of :func:`crossings` (``"8.50"``) when there is one; otherwise why there is none,
    in the evaluation's terms (``training.metrics.crossing`` gives the first x when every
    condition is at or above the level, and None when none reaches it):
    ``"at or below 30 (every condition ≥ 0.5)"``, ``"above 40 (no condition reaches 0.5)"``,
    or ``"touches 0.5 at 3 without crossing"``.

    Args:
        x: condition values (e.g. MYCN counts or signal sizes), any order.
        y: the curve (e.g. mean prediction in [0, 1]) at ``x``.
        beyond: word a curve on one side of the level as crossing outside the range (the evaluation's
            terms); False says only what the range shows (``"never reaches 0.5 here (max 0.00)"``,
            ``"≥ 0.5 at every condition here (min 0.75)"``), e.g. for a ground truth that size never changes.
    """
    xcs = crossings(x, y, level)
    if xcs:
        return f"{xcs[0]:.2f}"
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if len(xs) == 0:
        return "no conditions"
    if ys.min() >= level:
        if not beyond:
            return f"≥ {level:g} at every condition here (min {ys.min():.2f})"
        return f"at or below {xs.min():g} (every condition ≥ {level:g})"
    if ys.max() < level:
        if not beyond:
            return f"never reaches {level:g} here (max {ys.max():.2f})"
        return f"above {xs.max():g} (no condition reaches {level:g})"
    return f"touches {level:g} at {xs[ys >= level].min():g} without crossing"


def probe_summary(results: pd.DataFrame, x: str, group: str | None = None) -> pd.DataFrame:
    """Mean prediction per probe condition (the numbers behind the paper's Figure 4).

    Args:
        results: one row per probe nucleus with the condition column ``x``, ``call``
            (0/1) and ``prob_calibrated`` (falls back to ``prob`` where missing or null);
            optional ``group`` (e.g. model).
        x: condition column (e.g. ``"n_mycn"`` or ``"signal_size"``).
        group: optional column to summarise separately (kept in the output).

    Returns:
        One row per condition (and group), sorted by ``x``: ``x``, ``n``, ``mean_pred``
        (mean call = the paper's mean prediction), ``sem`` (its standard error),
        ``mean_prob`` (mean calibrated probability, as ``training.evaluate.probe_curve``);
        with the generator's ``true_label`` in ``results`` also ``truth`` (share of the probes
        whose visible counts the Cohn rule calls MNA: the synthetic ground truth).
    """
    keys = [group, x] if group else [x]
    prob = results["prob_calibrated"].fillna(results["prob"]) if "prob_calibrated" in results else results["prob"]
    g = results.assign(prob=prob.astype(float)).groupby(keys, sort=True)
    truth = {"truth": ("true_label", "mean")} if "true_label" in results.columns else {}
    out = g.agg(n=("call", "size"), mean_pred=("call", "mean"), sd=("call", "std"), mean_prob=("prob", "mean"),
                **truth)
    out["sem"] = (out.pop("sd").fillna(0.0) / np.sqrt(out["n"])).astype(float)
    return out.reset_index()[keys + ["n", "mean_pred", "sem", "mean_prob"] + list(truth)]


def probe_curve(curve: pd.DataFrame, x: str, xlabel: str, level: float = 0.5, title: str = "",
                rule_x: float | None = None, rule_label: str = "Cohn rule",
                truth: pd.DataFrame | None = None) -> go.Figure:
    """Mean prediction against a probe variable with the ``level`` crossing marked (paper Fig. 4).

    Args:
        curve: one row per condition with column ``x``, ``mean_pred`` in [0, 1], optional
            ``sem`` (standard error, drawn as error bars) and optional ``model`` (one line each, in the
            legend in the order the rows first name them).
        x: the probe variable column (e.g. ``"n_mycn"`` or ``"signal_size"``).
        xlabel: axis title.
        level: horizontal reference drawn dashed; each crossing gets a marker, and each curve one label
            at its first crossing listing all of them ("2.00, 6.00"): an annotation named like the crossing
            markers, the first curve's below the line, the second's above, the third's a row further below
            (:data:`CROSSING_LABEL_ROW`).
        rule_x: optional x where a rule expects the switch (e.g. Cohn rule at 4 x NMI), dotted.
        rule_label: the dotted line's label.
        truth: optional rows with ``x`` and ``truth`` (the generator's ground truth: share of the
            probes that are MNA, ``probe_summary``), drawn last as a dark dashed line named
            :data:`TRUTH_CURVE`, its crossings marked like the curves' but only the first labelled
            (where merging levels the truth off near 0.5 it crosses many times).
    """
    fig = go.Figure()
    # curves in the order ``curve`` lists them (the Probe page's headline mean call first), not alphabetical
    groups = list(curve.groupby("model", sort=False)) if "model" in curve.columns else [("mean prediction", curve)]
    lines = [(model, g, category_style(i).colour, category_style(i).dash) for i, (model, g) in enumerate(groups)]
    if truth is not None:
        lines.append((TRUTH_CURVE, truth.assign(mean_pred=truth["truth"])[[x, "mean_pred"]], "#333", "dash"))
    for i, (model, g, col, dash) in enumerate(lines):
        g = g.sort_values(x)
        err = dict(type="data", array=g["sem"], thickness=1) if "sem" in g.columns else None
        # the truth's markers in its line's dark colour, as its legend entry shows them; the models' by value
        marker = (dict(size=9, color=col) if model == TRUTH_CURVE else
                  dict(size=9, color=g["mean_pred"], cmin=0, cmax=1, colorscale=PROB_COLORSCALE,
                       line=dict(width=1, color=col)))
        fig.add_trace(go.Scatter(x=g[x], y=g["mean_pred"], mode="lines+markers", name=str(model), error_y=err,
                                 line=dict(color=col, width=2, dash=dash), marker=marker))
        xcs = crossings(g[x], g["mean_pred"], level)
        if xcs:
            # one label per curve, at its first crossing, listing every crossing (labels at each of several
            # close crossings printed over each other); each curve's label has its own row, alternately below and
            # above the level line, so curves crossing near the same x ("9.67" and "10.03"; the mean P, the mean
            # call and the truth at 8.3, 8.4 and 11.7 on the page's default run) never share a line of text
            named = xcs[:1] if model == TRUTH_CURVE else xcs
            name = f"{model}: crosses {level:g}"
            fig.add_trace(go.Scatter(x=xcs, y=[level] * len(xcs), mode="markers", name=name,
                                     marker=dict(symbol="x", size=CROSSING_MARKER_SIZE, color=col, line=dict(width=2)),
                                     showlegend=False,
                                     hovertemplate=f"{model} crosses {level:g} at {xlabel} %{{x:.2f}}<extra></extra>"))
            above = i % 2 == 1
            clear = CROSSING_MARKER_SIZE / 2 + CROSSING_LABEL_GAP  # from the marker's centre to its label
            fig.add_annotation(x=xcs[0], y=level, name=name, text=", ".join(f"{v:.2f}" for v in named),
                               showarrow=False, xanchor="left", xshift=clear, yanchor="bottom" if above else "top",
                               yshift=(1 if above else -1) * (clear + CROSSING_LABEL_ROW * (i // 2)),
                               font=dict(color=col))
    fig.add_hline(y=level, line_dash="dash", line_color="#666")
    if rule_x is not None:
        # named in the legend, not by a label at the line's top: in a narrow chart that label ran into the y
        # axis's "1" ("1Cohn rule") and over the curves' plateau
        fig.add_vline(x=rule_x, line_dash="dot", line_color=OKABE_ITO["bluish green"])
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=rule_label, hoverinfo="skip",
                                 line=dict(color=OKABE_ITO["bluish green"], dash="dot", width=2)))
    fig.update_layout(**_LAYOUT, title=title, height=360, xaxis_title=xlabel, yaxis_title="mean prediction",
                      legend=_LEGEND_BELOW)
    fig.update_yaxes(range=[-0.05, 1.05])
    fig.update_xaxes(range=probe_x_range(curve[x], rule_x))
    return fig


def probe_x_range(xs: Sequence[float], rule_x: float | None = None) -> list[float]:
    """The probe chart's x range: the conditions (and the rule's line) with 4 % of the span either side.

    Set, not left to Plotly's autorange, which in a narrow chart (a 1024 px screen) spread the count axis
    to -40..40 and squeezed the curve into its middle."""
    v = [float(a) for a in xs] + ([float(rule_x)] if rule_x is not None else [])
    lo, hi = min(v), max(v)
    pad = 0.04 * (hi - lo) if hi > lo else 0.5
    return [lo - pad, hi + pad]


def condition_labels(values: Sequence[float]) -> list[str]:
    """Probe condition values as short labels: whole numbers as they are ("4"), others with one decimal
    ("2.4", "12.0"), or two where one decimal would give two conditions the same label."""
    v = np.asarray(values)
    if pd.api.types.is_integer_dtype(v):
        return [str(x) for x in v]
    labels = [f"{x:.1f}" for x in v]
    return labels if len(set(labels)) == len(labels) else [f"{x:.2f}" for x in v]


def probe_embedding(reference: pd.DataFrame, probe: pd.DataFrame, group: str, title: str = "",
                    height: int = 480, reference_name: str = "training nuclei", label_every: int = 1) -> go.Figure:
    """Probe conditions placed on a UMAP (paper Fig. 4): mean position, 1-SD ellipse, mean prediction.

    Args:
        reference: backdrop nuclei ``x, y`` (UMAP units) drawn in light green, named ``reference_name``
            in the legend (say what they are: training nuclei, or every stored nucleus).
        probe: probe nuclei with ``x, y``, ``pred`` (0/1 call or probability) and the ``group`` column.
        group: condition column (e.g. ``"n_mycn"``); one ellipse per value, labelled by
            :func:`condition_labels`.
        label_every: label every k-th condition (first, k+1-th, ...) so wide labels of neighbouring
            conditions do not print over each other; every condition names its value in the hover.
    """
    fig = go.Figure()
    if len(reference):
        fig.add_trace(go.Scattergl(x=reference["x"], y=reference["y"], mode="markers", name=reference_name,
                                   marker=dict(size=3, color="rgba(44,160,44,0.25)"), hoverinfo="skip"))
    t = np.linspace(0, 2 * np.pi, 48)
    stats = probe.groupby(group).agg(mx=("x", "mean"), my=("y", "mean"), sx=("x", "std"), sy=("y", "std"),
                                     mean_pred=("pred", "mean")).reset_index().fillna({"sx": 0.0, "sy": 0.0})
    for row in stats.itertuples(index=False):
        col = "rgb({},{},{})".format(*colour_for_probability([row.mean_pred])[0])
        fig.add_trace(go.Scatter(x=row.mx + row.sx * np.cos(t), y=row.my + row.sy * np.sin(t), mode="lines",
                                 line=dict(color=col, width=1.5), fill="toself", fillcolor=col, opacity=0.25,
                                 hoverinfo="skip", showlegend=False))
    labels = [t if k % max(1, label_every) == 0 else "" for k, t in enumerate(condition_labels(stats[group]))]
    xs = np.concatenate([np.asarray(reference["x"], float), stats["mx"].to_numpy(float)]) if len(reference) \
        else stats["mx"].to_numpy(float)
    ys = np.concatenate([np.asarray(reference["y"], float), stats["my"].to_numpy(float)]) if len(reference) \
        else stats["my"].to_numpy(float)
    spans = (float(np.ptp(xs)) if len(xs) else 0.0, float(np.ptp(ys)) if len(ys) else 0.0)
    fig.add_trace(go.Scatter(
        x=stats["mx"], y=stats["my"], mode="markers+text", textposition="middle center",
        text=spaced_labels(stats["mx"].to_numpy(float), stats["my"].to_numpy(float), labels, spans),
        textfont=dict(size=11, color="black"), name="probe conditions",
        marker=dict(size=16, color=stats["mean_pred"], cmin=0, cmax=1, colorscale=PROB_COLORSCALE,
                    line=dict(width=1, color="#333"), colorbar=dict(title="mean pred.", thickness=12, len=0.6)),
        hovertext=[f"{group} {v:g}<br>mean prediction {m:.2f}" for v, m in zip(stats[group], stats["mean_pred"])],
        hovertemplate="%{hovertext}<extra></extra>",
    ))
    fig.update_layout(**_LAYOUT, title=title, height=height, xaxis_title="UMAP 1", yaxis_title="UMAP 2",
                      legend=_LEGEND_BELOW)
    return fig


#: a condition label is left out when its marker lies within this share of the x and y spans of a labelled one:
#: about a two-digit label's width and height in the Probe page's UMAP at 1024 px (where 13 conditions of one
#: cluster printed "1314151617…" over each other)
LABEL_GAP = (0.04, 0.05)


def spaced_labels(x: np.ndarray, y: np.ndarray, labels: Sequence[str], spans: tuple[float, float],
                  gap: tuple[float, float] = LABEL_GAP) -> list[str]:
    """``labels`` with "" for each one (in order) whose point lies closer than ``gap`` (shares of the axes'
    ``spans``) in both x and y to a point already labelled, so labels of a tight cluster do not overprint."""
    out: list[str] = []
    kept: list[tuple[float, float]] = []
    gx, gy = (max(g * s, 1e-12) for g, s in zip(gap, spans))
    for xi, yi, text in zip(x, y, labels):
        if text and not any(abs(xi - kx) < gx and abs(yi - ky) < gy for kx, ky in kept):
            kept.append((xi, yi))
            out.append(text)
        else:
            out.append("")
    return out


def _curve_name(column: str, against: str = "") -> str:
    """``val_acc`` -> "validation accuracy", ``train_loss`` -> "train loss"; validation curves name
    ``against`` when given (``"val_acc", "training labels"`` -> "validation accuracy (vs training labels)")."""
    words = column.split("_")
    words = ["validation" if w == "val" else "accuracy" if w == "acc" else w for w in words]
    return " ".join(words) + (f" (vs {against})" if against and column.startswith("val") else "")


def training_curves(history: pd.DataFrame, title: str = "", against: str = "training labels") -> go.Figure:
    """Training curves from a model folder's history: losses on top, the other metrics below.

    Args:
        history: one row per epoch with an ``epoch`` column, numeric metric columns (e.g.
            ``train_loss``, ``val_loss``, ``val_acc``; all-empty ones are left out) and optionally
            ``best`` (bool: the epoch early stopping kept, marked by a dashed line and named in the
            legend, where no tick label can collide with it; without it the epoch of the lowest ``val_loss``).
        against: the labels the curves are measured against, named in the validation curves' legend
            entries (not the axis titles, which must fit a 200 px panel). Training scores the validation
            split against the labels it trained on (e.g. noisy auto labels), not the ground truth a
            model's metrics may use, so the curves' validation accuracy can sit below the metrics'.
    """
    cols = [c for c in history.columns if c not in ("epoch", "best") and history[c].notna().any()
            and pd.api.types.is_numeric_dtype(history[c]) and not pd.api.types.is_bool_dtype(history[c])]
    losses = [c for c in cols if "loss" in c]
    metrics = [c for c in cols if c not in losses]
    panels = [p for p in (losses, metrics) if p]
    fig = make_subplots(rows=max(len(panels), 1), cols=1, shared_xaxes=True, vertical_spacing=0.1)
    for row, panel in enumerate(panels, start=1):
        for c in panel:
            split = "val" if c.startswith("val") else "train" if c.startswith("train") else c
            colour = {"train": PALETTE[0], "val": PALETTE[4]}.get(split, PALETTE[2 + cols.index(c) % 6])
            fig.add_trace(go.Scatter(x=history["epoch"], y=history[c], mode="lines+markers",
                                     name=_curve_name(c, against),
                                     line=dict(color=colour, dash="solid" if row == 1 else "dot")), row=row, col=1)
        fig.update_yaxes(title_text="loss" if panel is losses else
                         "accuracy" if all("acc" in c for c in panel) else "metric", row=row, col=1)
    kept = history["best"].fillna(False).astype(bool) if "best" in history.columns else pd.Series(False, history.index)
    best = None
    if kept.any():
        best = history.loc[kept, "epoch"].iloc[-1]
    elif "val_loss" in losses:
        best = history.loc[history["val_loss"].idxmin(), "epoch"]
    kept_line = dict(color="#888", dash="dash", width=1)
    for row in range(1, len(panels) + 1) if best is not None else ():
        fig.add_vline(x=float(best), line=kept_line, row=row, col=1)
    if best is not None:  # named in the legend: a label on the line collided with the y axis' tick labels
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=kept_line, name=f"kept: epoch {best:g}",
                                 hoverinfo="skip"), row=1, col=1)
    n = len(history)  # epochs are whole numbers: ticks 1 apart, or 2, 5, 10, ... apart for long runs
    fig.update_xaxes(tick0=0, dtick=next((d for d in (1, 2, 5, 10, 20, 50, 100) if n / d <= 12), 200))
    fig.update_xaxes(title_text="epoch", row=max(len(panels), 1), col=1)
    fig.update_layout(**_LAYOUT, title=title, height=260 + 160 * len(panels), legend={**_LEGEND_BELOW, "y": -0.14})
    return fig


def threshold_scan(scans: Mapping[str, Mapping[str, float]], chosen: Sequence[float] | None = None,
                   title: str = "") -> go.Figure:
    """A detector's exact-count accuracy against its counting score threshold, one line per class.

    Args:
        scans: ``{"nmi" | "mycn" | "cluster": {"0.25": accuracy}}`` (a detector's
            ``count_threshold_scan`` metrics; accuracies in [0, 1]).
        chosen: the thresholds in use, in class order NMI, MYCN, cluster; each is marked.
    """
    fig = go.Figure()
    for i, (key, (cls, (label, _))) in enumerate(zip(("nmi", "mycn", "cluster"), BOX_CLASSES.items())):
        if key not in scans:
            continue
        pts = sorted((float(t), float(a)) for t, a in scans[key].items())
        symbol, dash, colour = CLASS_STYLES[cls]  # colour, symbol and dash: the classes apart without red/green
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=label,
                                 line=dict(color=colour, dash=dash), marker=dict(symbol=symbol, size=8)))
        if chosen is not None:
            t = float(chosen[i])
            acc = dict(pts).get(t)
            fig.add_trace(go.Scatter(x=[t], y=[acc], mode="markers", showlegend=False, hoverinfo="skip",
                                     marker=dict(symbol="circle-open", size=16, color=colour, line=dict(width=2))))
    fig.update_layout(**_LAYOUT, title=title, height=340, xaxis_title="count threshold (detection score)",
                      yaxis=dict(title="exact-count accuracy (validation)", range=[0, 1.02]), legend=_LEGEND_BELOW)
    return fig
