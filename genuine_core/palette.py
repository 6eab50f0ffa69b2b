"""The dashboard's colours, in one place, chosen for red-green colour-blind readers.

Categorical colours are the Okabe-Ito palette (Okabe & Ito 2002), whose colours stay apart under
protanopia and deuteranopia; :func:`simulate_cvd` and :func:`delta_e` let tests check that they do.
The FISH images keep their microscope colours (NMI red, MYCN green, DAPI blue); see
``plotting.patch_rgb`` for the colour-blind display of a patch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: the eight Okabe-Ito colours by name
OKABE_ITO = {"blue": "#0072B2", "vermillion": "#D55E00", "bluish green": "#009E73", "reddish purple": "#CC79A7",
             "orange": "#E69F00", "sky blue": "#56B4E9", "yellow": "#F0E442", "black": "#000000"}
#: label -> colour: MNA vermillion, non-MNA blue, excluded reddish purple, no label light grey
LABEL_COLOURS = {"MNA": OKABE_ITO["vermillion"], "non-MNA": OKABE_ITO["blue"],
                 "excluded": OKABE_ITO["reddish purple"], "unlabelled": "#c7c7c7", "not curated": "#c7c7c7"}
#: how many leading :data:`PALETTE` colours stay apart for red-green colour-blind readers
SAFE_COLOURS = 8
#: samples/models: the Okabe-Ito colours first (MNA-like vermillion second), then twelve lighter ones
#: (20 before a repeat; beyond the eighth the legend and hover name the series)
PALETTE = [OKABE_ITO[k] for k in ("blue", "vermillion", "bluish green", "reddish purple", "orange", "sky blue",
                                  "black", "yellow")] + [
    "#aec7e8", "#ff9896", "#98df8a", "#c5b0d5", "#ffbb78", "#c49c94", "#f7b6d2", "#9edae5", "#dbdb8d",
    "#393b79", "#8c564b", "#7f7f7f"]

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
