"""genuine_core.palette: the dashboard's colours stay apart for red-green colour-blind readers."""

from __future__ import annotations

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
    assert len(set(C.PALETTE)) == len(C.PALETTE) == 20


def test_plotting_uses_the_one_palette():
    assert P.PALETTE is C.PALETTE and P.LABEL_COLOURS is C.LABEL_COLOURS


def test_decision_buttons_use_the_label_colours_with_readable_text():
    import pathlib

    css = pathlib.Path(__file__).resolve().parents[1].joinpath("pages", "review.py").read_text()
    assert "#d62728" not in css and "#1f77b4" not in css  # no colour of its own
    for label in ("MNA", "non-MNA"):
        bg = C.LABEL_COLOURS[label]
        assert C.contrast_ratio(bg, C.text_colour_on(bg)) >= 4.5  # WCAG AA for the button's text
