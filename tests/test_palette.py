"""genuine_core.palette: the dashboard's colours stay apart for red-green colour-blind readers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genuine_core import palette as C
from genuine_core import plotting as P


def test_simulation_confuses_red_and_green_as_a_deuteranope_does():
    assert C.delta_e("#d62728", "#2ca02c") > 100  # plotly's red and green, far apart with normal vision
    assert C.delta_e("#d62728", "#2ca02c", "deutan") < 10  # ... and nearly the same colour to a deuteranope
    with pytest.raises(ValueError, match="unknown colour vision"):
        C.delta_e("#000000", "#ffffff", "tritan")


def test_label_colours_stay_apart_for_colour_blind_readers():
    labels = [C.LABEL_COLOURS[k] for k in ("MNA", "non-MNA", "excluded", "unlabelled")]
    assert C.min_delta_e(labels) > 15  # the old non-MNA blue and excluded purple: 8 for a protanope


def test_first_palette_colours_stay_apart_for_colour_blind_readers():
    # models and samples: the old palette's 2nd and 3rd colours were red and green (deutan delta E 8)
    assert C.min_delta_e(C.PALETTE[:C.SAFE_COLOURS]) > 15
    assert len(set(C.PALETTE)) == len(C.PALETTE) == C.SAFE_COLOURS  # more categories: symbols, not more hues


def _apart(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Two (colour, symbol / dash / hatching) styles a red-green colour-blind reader tells apart."""
    return a[1] != b[1] or C.min_delta_e([a[0], b[0]]) > 15


def _all_apart(styles: list[tuple[str, str]]) -> bool:
    return all(_apart(a, b) for i, a in enumerate(styles) for b in styles[i + 1:])


def test_umap_categories_beyond_the_eighth_differ_in_symbol_not_hue_alone():
    # colour by sample on the demo store: 13 samples; the 9th-20th had lighter colours only, several of
    # them as close as delta E 3-10 to another category for a deuteranope, all drawn as the same dot
    names = [f"S{i:02d}" for i in range(25)]
    pts = pd.DataFrame({"x": np.arange(50.0), "y": 0.0, "nucleus_id": range(50), "colour": names * 2})
    traces = P.embedding_figure(pts, "colour").data
    styles = [(t.marker.color, t.marker.symbol or "circle") for t in traces]
    assert len(styles) == 25 and _all_apart(styles)
    assert {s for _, s in styles[:8]} == {"circle"}  # the first eight as before: filled dots in eight colours
    assert all(C.category_style(i).colour == C.PALETTE[i % 8] for i in range(64))


def test_category_styles_never_repeat_colour_with_symbol_dash_or_hatching():
    styles = [C.category_style(i) for i in range(64)]
    for field, n in (("symbol", 64), ("dash", 48), ("pattern", 64)):
        assert _all_apart([(s.colour, getattr(s, field)) for s in styles[:n]]), field
    assert [s.pattern for s in styles[:8]] == list(C.PATTERNS)  # the first eight models' hatching as before
    with pytest.raises(ValueError, match="category index"):
        C.category_style(-1)


def test_charts_of_many_models_keep_them_apart_without_hue():
    models = [f"m{i:02d}" for i in range(12)]
    preds = pd.DataFrame({"model": models * 3, "prob": np.linspace(0, 1, 36)})
    bars = P.probability_histogram(preds).data
    assert _all_apart([(t.marker.color, t.marker.pattern.shape or "") for t in bars])  # m08 was m00's hatching
    curve = pd.DataFrame({"model": np.repeat(models, 2), "n_mycn": [0, 10] * 12, "mean_pred": [0.1, 0.9] * 12})
    lines = [t for t in P.probe_curve(curve, "n_mycn", "MYCN").data if t.mode == "lines+markers"]
    assert len(lines) == 12 and _all_apart([(t.line.color, t.line.dash) for t in lines])
    summ = pd.DataFrame({"sample": "MIX", "model": models, "sample_kind": "mixture", "expected_pct": 50.0,
                         "pred_pct": 40.0})
    fig = P.predicted_vs_expected(summ)
    pts = [t for t in fig.data if t.name in models]
    assert _all_apart([(t.marker.color, t.marker.symbol[0]) for t in pts])  # the symbol still says the kind
    assert pts[8].marker.symbol[0] == "circle-open" and pts[0].marker.symbol[0] == "circle"


def test_plotting_uses_the_one_palette():
    assert P.PALETTE is C.PALETTE and P.LABEL_COLOURS is C.LABEL_COLOURS


def test_decision_buttons_use_the_label_colours_with_readable_text():
    import pathlib

    css = pathlib.Path(__file__).resolve().parents[1].joinpath("pages", "review.py").read_text()
    assert "#d62728" not in css and "#1f77b4" not in css  # no colour of its own
    for label in ("MNA", "non-MNA"):
        bg = C.LABEL_COLOURS[label]
        assert C.contrast_ratio(bg, C.text_colour_on(bg)) >= 4.5  # WCAG AA for the button's text


def _signals() -> np.ndarray:
    patch = np.zeros((3, 3, 3), np.float32)
    patch[2] = 0.5  # DAPI everywhere: the nucleus
    patch[0, 0, 0] = 1.0  # an NMI signal
    patch[1, 1, 1] = 1.0  # a MYCN signal
    return patch


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


def test_magenta_green_view_tells_nmi_from_mycn_for_a_deuteranope():
    patch = _signals()
    std, cb = P.patch_rgb(patch), P.patch_rgb(patch, scheme="magenta/green")
    assert (std == P.patch_rgb(patch, scheme="red/green")).all()  # the default view is unchanged
    assert C.delta_e(_hex(std[0, 0]), _hex(std[1, 1]), "deutan") < 45
    assert C.delta_e(_hex(cb[0, 0]), _hex(cb[1, 1]), "deutan") > 100  # NMI magenta vs MYCN green
    assert (patch == _signals()).all()  # display only: the patch itself is untouched
    with pytest.raises(ValueError, match="unknown colour scheme"):
        P.patch_rgb(patch, scheme="sepia")


def test_channel_tiles_boxes_and_captions_follow_the_scheme():
    chans = dict(P.patch_channels(_signals(), scheme="magenta/green"))
    assert chans["NMI"][0, 0].tolist() == [255, 0, 255] and chans["DAPI"][0, 0].tolist() == [51, 51, 51]
    boxes = P.box_colours("magenta/green")
    assert C.min_delta_e([_hex(c) for c in boxes.values()]) > 30  # red/green/yellow boxes: under 15
    assert P.box_colours() == {k: rgb for k, (_, rgb) in P.BOX_CLASSES.items()}
    assert P.channel_caption("magenta/green") == "NMI magenta · MYCN green · DAPI grey"
    assert P.box_caption() == "red NMI · green MYCN · yellow cluster"
    out = P.draw_boxes(np.zeros((4, 4, 3), np.uint8), pd.DataFrame({"cls": [1], "x1": [0], "y1": [0], "x2": [4],
                                                                     "y2": [4]}), colours=boxes)
    assert out[0, 0].tolist() == [255, 0, 255]


def test_histogram_models_differ_in_hatching_not_only_in_colour():
    preds = pd.DataFrame({"model": ["a", "b", "c"] * 4, "prob": np.linspace(0, 1, 12)})
    fig = P.probability_histogram(preds)
    patterns = [t.marker.pattern.shape or "" for t in fig.data]
    assert len(set(patterns)) == 3
    assert C.min_delta_e([t.marker.color for t in fig.data]) > 15


def test_threshold_scan_classes_differ_in_symbol_dash_and_safe_colour():
    scans = {k: {"0.3": 0.5, "0.5": 0.7} for k in ("nmi", "mycn", "cluster")}
    lines = [t for t in P.threshold_scan(scans).data if t.name]
    assert len({t.marker.symbol for t in lines}) == len({t.line.dash for t in lines}) == 3
    assert C.min_delta_e([t.line.color for t in lines]) > 15  # was dark red / dark green / dark yellow


def test_a_stored_patch_image_is_recoloured_as_the_review_card_draws_it():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 12, 3)).astype(np.uint8)  # a stored patch: R = NMI, G = MYCN, B = DAPI
    patch = np.moveaxis(rgb.astype(np.float32) / 255.0, -1, 0)
    assert P.recolour(rgb) is rgb  # red/green: as stored
    for scheme in P.PATCH_SCHEMES:
        assert np.abs(P.recolour(rgb, scheme).astype(int) - P.patch_rgb(patch, scheme=scheme)).max() <= 1
    assert P.recolour(np.array([[[200, 0, 100]]], np.uint8), "magenta/green").tolist() == [[[240, 40, 240]]]
    with pytest.raises(ValueError, match="unknown colour scheme"):
        P.recolour(rgb, "sepia")
    with pytest.raises(ValueError, match=r"\(P, P, 3\) RGB"):
        P.recolour(rgb[..., 0])
