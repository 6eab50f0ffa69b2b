"""The dashboard's colours, in one place, chosen for red-green colour-blind readers.

Categorical colours are the Okabe-Ito palette (Okabe & Ito 2002), whose colours stay apart under
protanopia and deuteranopia; :func:`simulate_cvd` and :func:`delta_e` let tests check that they do.
There are eight of them: a chart of more categories (13 samples on the demo store's UMAP) draws each later
round of eight in the same colours with another marker symbol, line dash or bar hatching
(:func:`category_style`), never by hue alone.
The FISH images keep their microscope colours (NMI red, MYCN green, DAPI blue); see
``plotting.patch_rgb`` for the colour-blind display of a patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: the eight Okabe-Ito colours by name
OKABE_ITO = {"blue": "#0072B2", "vermillion": "#D55E00", "bluish green": "#009E73", "reddish purple": "#CC79A7",
             "orange": "#E69F00", "sky blue": "#56B4E9", "yellow": "#F0E442", "black": "#000000"}
#: label -> colour: MNA vermillion, non-MNA blue, excluded reddish purple, no label (under any name) light grey
LABEL_COLOURS = {"MNA": OKABE_ITO["vermillion"], "non-MNA": OKABE_ITO["blue"],
                 "excluded": OKABE_ITO["reddish purple"], "unlabelled": "#c7c7c7", "not curated": "#c7c7c7",
                 "no ground truth": "#c7c7c7", "no auto label": "#c7c7c7", "no call": "#c7c7c7"}
#: how many leading :data:`PALETTE` colours stay apart for red-green colour-blind readers
SAFE_COLOURS = 8
#: samples/models: the eight Okabe-Ito colours (MNA-like vermillion second); a ninth category takes the first
#: colour again with the next of :data:`SYMBOLS` (and :data:`DASHES`, :data:`PATTERNS`): see :func:`category_style`
PALETTE = [OKABE_ITO[k] for k in ("blue", "vermillion", "bluish green", "reddish purple", "orange", "sky blue",
                                  "black", "yellow")]
#: marker symbol of each round of eight categories: filled circles, then open diamonds, crosses, squares, ...
#: (shapes that stay apart at a UMAP's 5-px markers; plotly's scattergl draws them all)
SYMBOLS = ("circle", "diamond-open", "x", "square", "triangle-up-open", "cross", "star", "hexagon-open")
#: line dash of each round of eight categories (lines of one round differ in colour)
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
#: bar hatching, one per category within a round (the first category's bars plain), shifted by one each round
PATTERNS = ("", "/", ".", "x", "\\", "+", "-", "|")
#: symbol variants of each round of eight categories where the symbol already says something else (the sample
#: kind in the Cases mixtures chart): filled, open, with a dot, open with a dot
SYMBOL_VARIANTS = ("", "-open", "-dot", "-open-dot")
#: marker symbols for sample kinds in the Cases mixtures chart (cycled, in sorted kind order)
KIND_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "cross", "star", "x", "pentagon")
#: detector class id -> (marker symbol, line dash, colour) in the counting-threshold chart (NMI, MYCN, cluster)
CLASS_STYLES = {1: ("circle", "solid", OKABE_ITO["vermillion"]), 2: ("square", "dash", OKABE_ITO["bluish green"]),
                3: ("diamond", "dot", OKABE_ITO["blue"])}


@dataclass(frozen=True)
class Style:
    """How one category is drawn: colour with a marker symbol, a line dash and a bar hatching."""

    colour: str
    symbol: str
    dash: str
    pattern: str
    round: int


def category_style(i: int) -> Style:
    """The style of the ``i``-th category (0-based) of a chart.

    The first eight differ in their colour-blind-safe colour alone (filled circles, solid lines); each later
    round of eight repeats those colours with another symbol, dash and hatching, so two categories of the same
    colour never share a symbol (64 categories before a repeat), a dash (48) or a hatching (64).
    """
    if i < 0:
        raise ValueError(f"category index must be 0 or more, not {i}")
    n = len(PALETTE)
    r = i // n
    return Style(PALETTE[i % n], SYMBOLS[r % len(SYMBOLS)], DASHES[r % len(DASHES)],
                 PATTERNS[(i + r) % len(PATTERNS)], r)


def symbol_variant(symbol: str, i: int) -> str:
    """``symbol`` in the variant of the ``i``-th category's round (``"diamond"`` -> ``"diamond-open"`` for the
    ninth to sixteenth), for charts whose symbol also encodes something else."""
    return symbol + SYMBOL_VARIANTS[(i // len(PALETTE)) % len(SYMBOL_VARIANTS)]


# Vienot, Brettel & Mollon (1999) dichromat projections, applied to linear sRGB
_CVD = {"protan": np.array([[0.11238, 0.88762, 0.0], [0.11238, 0.88762, 0.0], [0.00401, -0.00401, 1.0]]),
        "deutan": np.array([[0.29275, 0.70725, 0.0], [0.29275, 0.70725, 0.0], [-0.02234, 0.02234, 1.0]])}
_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """``"#d62728"`` -> ``(214, 39, 40)``."""
    h = colour.lstrip("#")
    if len(h) != 6:
        raise ValueError(f"not a #rrggbb colour: {colour!r}")
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def _linear(colour: str) -> np.ndarray:
    c = np.asarray(hex_rgb(colour), np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def simulate_cvd(colour: str, kind: str) -> np.ndarray:
    """Linear sRGB of ``colour`` as a dichromat sees it (``kind``: 'normal', 'protan' or 'deutan')."""
    lin = _linear(colour)
    if kind == "normal":
        return lin
    if kind not in _CVD:
        raise ValueError(f"unknown colour vision {kind!r}: use normal, protan or deutan")
    return np.clip(_CVD[kind] @ lin, 0.0, 1.0)


def _lab(lin: np.ndarray) -> np.ndarray:
    xyz = (_XYZ @ lin) / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.array([116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])])


def delta_e(a: str, b: str, kind: str = "normal") -> float:
    """CIE76 colour difference of two ``#rrggbb`` colours as seen with ``kind`` colour vision
    (under about 10: hard to tell apart)."""
    return float(np.linalg.norm(_lab(simulate_cvd(a, kind)) - _lab(simulate_cvd(b, kind))))


def min_delta_e(colours: Sequence[str]) -> float:
    """The smallest pairwise :func:`delta_e` of ``colours`` under normal, protan and deutan vision."""
    cs = list(colours)
    return min((delta_e(a, b, k) for i, a in enumerate(cs) for b in cs[i + 1:]
                for k in ("normal", "protan", "deutan")), default=float("inf"))


def contrast_ratio(a: str, b: str) -> float:
    """WCAG contrast ratio (1-21) of two ``#rrggbb`` colours."""
    la, lb = (float(np.array([0.2126, 0.7152, 0.0722]) @ _linear(c)) for c in (a, b))
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def text_colour_on(background: str) -> str:
    """Black or white, whichever reads better on ``background``."""
    return "#000000" if contrast_ratio(background, "#000000") >= contrast_ratio(background, "#ffffff") else "#ffffff"
