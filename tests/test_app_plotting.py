"""genuine_core.plotting: patch images, overlays and figure builders (values, not just shapes)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from genuine_core import plotting as P


def test_patch_rgb_keeps_channel_order_and_scales():
    patch = np.zeros((3, 4, 4), np.float16)
    patch[1, 1, 2] = 1.0  # MYCN -> green
    patch[0, 0, 0] = 0.5  # NMI -> red, half
    rgb = P.patch_rgb(patch)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert rgb[1, 2].tolist() == [0, 255, 0]
    assert rgb[0, 0].tolist() == [128, 0, 0]
    assert P.patch_rgb(patch, gain=2.0)[0, 0].tolist() == [255, 0, 0]
    with pytest.raises(ValueError):
        P.patch_rgb(np.zeros((4, 4, 3)))


def test_patch_channels_light_only_their_own_colour():
    patch = np.full((3, 2, 2), 0.5, np.float32)
    chans = P.patch_channels(patch)
    assert [n for n, _ in chans] == ["NMI", "MYCN", "DAPI"]
    for c, (_, img) in enumerate(chans):
        lit = img.reshape(-1, 3).max(0)
        assert lit[c] == 128 and lit.sum() == 128


def test_draw_boxes_outlines_in_class_colours_and_scales():
    rgb = np.zeros((10, 10, 3), np.uint8)
    boxes = pd.DataFrame({"cls": [2, 1], "x1": [2, 7], "y1": [2, 0], "x2": [6, 9], "y2": [5, 2], "score": [0.9, 0.1]})
    out = P.draw_boxes(rgb, boxes, scale=2)
    assert out.shape == (20, 20, 3)
    green = P.BOX_CLASSES[2][1]
    assert out[4, 4].tolist() == list(green) and out[9, 11].tolist() == list(green)  # corners of box 1 at x2
    assert out[6, 6].tolist() == [0, 0, 0]  # inside stays untouched
    assert out[0, 14].tolist() == list(P.BOX_CLASSES[1][1])
    low = P.draw_boxes(rgb, boxes, min_score=0.5)
    assert (low == P.BOX_CLASSES[1][1]).all(-1).sum() == 0
    assert rgb.sum() == 0  # input not modified


def test_outline_pixels_is_the_inner_boundary():
    m = np.zeros((8, 8), np.int32)
    m[2:6, 2:6] = 1
    edge = P.outline_pixels(m)
    assert edge.sum() == 12 and not edge[3:5, 3:5].any() and not edge[m == 0].any()
    m[2:6, 4:6] = 2  # two touching nuclei: the shared border belongs to both outlines
    edge = P.outline_pixels(m)
    assert edge[3, 3] and edge[3, 4]


def test_outline_overlay_colours_each_nucleus():
    img = np.zeros((8, 8, 3), np.float32)
    m = np.zeros((8, 8), np.int32)
    m[1:4, 1:4] = 1
    m[5:8, 5:8] = 2
    out = P.outline_overlay(img, m, {1: (255, 0, 0)}, default=(9, 9, 9))
    assert out[1, 1].tolist() == [255, 0, 0] and out[2, 2].tolist() == [0, 0, 0]
    assert out[5, 5].tolist() == [9, 9, 9]
    with pytest.raises(ValueError):
        P.outline_overlay(img, m[:4], {})


def test_probability_colours_follow_the_scale():
    cols = P.colour_for_probability([0.0, 0.5, 1.0, np.nan, 2.0])
    assert cols[0].tolist() == list(P.hex_to_rgb(P.PROB_COLORSCALE[0][1]))
    assert cols[1].tolist() == list(P.hex_to_rgb(P.PROB_COLORSCALE[2][1]))
    assert cols[2].tolist() == list(P.hex_to_rgb(P.PROB_COLORSCALE[-1][1]))
    assert cols[3].tolist() == [150, 150, 150]
    assert cols[4].tolist() == cols[2].tolist()  # clipped


def test_montage_layout_and_frames():
    tiles = [np.full((4, 4, 3), v, np.uint8) for v in (10, 20, 30)]
    out = P.montage(tiles, ncols=2, pad=1, borders=[None, (255, 0, 0), None], border=1)
    assert out.shape == (2 * 5 + 1, 2 * 5 + 1, 3)
    assert out[1, 1].tolist() == [10, 10, 10]
    assert out[1, 6].tolist() == [255, 0, 0] and out[2, 7].tolist() == [20, 20, 20]
    assert out[6, 1].tolist() == [30, 30, 30] and out[6, 6].tolist() == [255, 255, 255]
    assert P.montage([]).shape == (1, 1, 3)


@pytest.mark.parametrize("x, y, expected", [
    ([0, 1, 2, 3], [0, 0.2, 0.8, 1.0], 1.5),
    ([3, 2, 1, 0], [1.0, 0.8, 0.2, 0], 1.5),          # unsorted input
    ([0, 1, 2], [0.1, 0.5, 0.9], 1.0),                # exact hit
    ([0, 10], [1.0, 0.0], 5.0),                        # falling curve
    ([0, 1, 2], [0.1, 0.2, 0.3], None),               # never reaches the level
])
def test_crossing(x, y, expected):
    got = P.crossings(x, y, 0.5)
    assert got == ([] if expected is None else [pytest.approx(expected)])


def test_crossings_lists_every_crossing_in_order():
    x, y = [0, 1, 2, 3, 4], [0.2, 0.8, 0.4, 0.5, 0.9]
    assert P.crossings(x, y) == pytest.approx([0.5, 1.75, 3.0])
    assert P.crossings([0, 1], [0.1, 0.2]) == []
    assert P.crossings([0, 1, 2, 3], [0, 0.5, 0.5, 1]) == [1.5]  # a flat stretch at the level: one crossing
    assert P.crossings([0, 1, 2], [0.2, 0.5, 0.3]) == []            # touches the level and turns back


def test_crossing_text_explains_a_curve_without_crossing():
    from training.metrics import crossing

    assert P.crossing_text([0, 1, 2, 3], [0, 0.2, 0.8, 1.0]) == "1.50"
    assert P.crossing_text([40, 30, 35], [1.0, 0.6, 0.5]) == "at or below 30 (every condition ≥ 0.5)"
    assert crossing([30, 35, 40], [0.6, 0.5, 1.0]) == 30  # the evaluation's number for that curve
    assert P.crossing_text([30, 40], [0.1, 0.4]) == "above 40 (no condition reaches 0.5)"
    assert crossing([30, 40], [0.1, 0.4]) is None
    assert P.crossing_text([0, 1, 2], [0.2, 0.5, 0.3]) == "touches 0.5 at 1 without crossing"
    # a curve that may never cross (a ground truth signal size never changes): only what the range shows
    assert P.crossing_text([2, 12], [0.0, 0.0], beyond=False) == "never reaches 0.5 here (max 0.00)"
    assert P.crossing_text([30, 40], [0.75, 1.0], beyond=False) == "≥ 0.5 at every condition here (min 0.75)"
    assert P.crossing_text([0, 1, 2, 3], [0, 0.2, 0.8, 1.0], beyond=False) == "1.50"


def _crossing_marks(fig) -> list:
    """The probe curve's crossing markers, one trace per curve."""
    return [t for t in fig.data if (t.name or "").endswith(": crosses 0.5")]


def _crossing_labels(fig) -> list:
    """The probe curve's crossing labels, one annotation per curve."""
    return [a for a in fig.layout.annotations if (a.name or "").endswith(": crosses 0.5")]


def test_probe_curve_marks_every_crossing():
    curve = pd.DataFrame({"n_mycn": [0, 4, 8, 12], "mean_pred": [0.0, 1.0, 0.0, 1.0], "sem": [0.0] * 4})
    fig = P.probe_curve(curve, "n_mycn", "MYCN")
    marks = _crossing_marks(fig)
    assert list(marks[0].x) == pytest.approx([2.0, 6.0, 10.0])
    assert [a.text for a in _crossing_labels(fig)] == ["2.00, 6.00, 10.00"]  # one label lists them


def test_probe_curve_crossing_labels_keep_clear_of_their_markers():
    # seen at 1024 px: "8.85" and "9.00" touched their crossing markers (shifted 6 px right and 3 px off the
    # line, inside the 13 px marker's 6.5 px half-width)
    x = [8, 12]
    curve = pd.concat([pd.DataFrame({"n_mycn": x, "mean_pred": [0.0, 0.75], "model": "a call"}),
                       pd.DataFrame({"n_mycn": x, "mean_pred": [0.2, 0.7], "model": "b prob"})])
    fig = P.probe_curve(curve, "n_mycn", "MYCN")
    for mark, label in zip(_crossing_marks(fig), _crossing_labels(fig)):
        half = mark.marker.size / 2
        assert label.xshift >= half + 3 and abs(label.yshift) >= half + 3


def test_probe_curve_labels_of_two_curves_crossing_close_together_do_not_overprint():
    # seen in a browser: mean call crossing at 9.67 and mean P at 10.03 printed as "9.6710.03"
    x = [8, 12]
    curve = pd.concat([pd.DataFrame({"n_mycn": x, "mean_pred": [0.0, 0.75], "model": "a call"}),
                       pd.DataFrame({"n_mycn": x, "mean_pred": [0.2, 0.7], "model": "b prob"})])
    labels = _crossing_labels(P.probe_curve(curve, "n_mycn", "MYCN"))
    assert [a.text for a in labels] == ["10.67", "10.40"]
    assert [a.yanchor for a in labels] == ["top", "bottom"]  # one label under the 0.5 line, the other above it
    assert labels[0].yshift < 0 < labels[1].yshift


def test_probe_curve_labels_of_three_curves_crossing_close_together_do_not_overprint():
    # seen on the Probe page's default run: mean P at 8.3 (right of it, below the line) and the truth at 11.67
    # (left of it, below the line) printed as "11.8.30"; the mean call's label above was clear of both
    x = [8, 9, 11, 12]
    curve = pd.concat([pd.DataFrame({"n_mycn": x, "mean_pred": [0.4, 0.6, 0.9, 1.0], "model": "a prob"}),
                       pd.DataFrame({"n_mycn": x, "mean_pred": [0.38, 0.68, 0.9, 1.0], "model": "b call"})])
    truth = pd.DataFrame({"n_mycn": x, "truth": [0.16, 0.2, 0.3, 0.6]})
    labels = _crossing_labels(P.probe_curve(curve, "n_mycn", "MYCN", truth=truth))
    assert [a.text for a in labels] == ["8.50", "8.40", "11.67"]
    rows = [(a.yanchor, a.yshift) for a in labels]
    assert [r[0] for r in rows] == ["top", "bottom", "top"]  # below, above, below the 0.5 line
    assert abs(rows[0][1] - rows[2][1]) >= 14  # the two below a line of 12 px text apart


def test_probe_curve_legend_keeps_the_order_of_the_rows():
    # the Probe page's legend listed 'mean calibrated P(MNA)' before its headline 'mean call (prediction)'
    x = [0, 4]
    curve = pd.concat([pd.DataFrame({"n_mycn": x, "mean_pred": [0.1, 0.9], "model": "mean call (prediction)"}),
                       pd.DataFrame({"n_mycn": x, "mean_pred": [0.2, 0.8], "model": "mean calibrated P(MNA)"})])
    lines = [t.name for t in P.probe_curve(curve, "n_mycn", "MYCN").data if t.mode == "lines+markers"]
    assert lines == ["mean call (prediction)", "mean calibrated P(MNA)"]


def test_probe_summary_matches_hand_computation():
    res = pd.DataFrame({"n_mycn": [0, 0, 0, 0, 8, 8], "call": [0, 0, 1, 1, 1, 1], "prob": [.1, .2, .6, .7, .9, .8]})
    s = P.probe_summary(res, "n_mycn")
    assert s["n_mycn"].tolist() == [0, 8] and s["n"].tolist() == [4, 2]
    assert s["mean_pred"].tolist() == [0.5, 1.0]
    assert s["sem"].iloc[0] == pytest.approx(np.std([0, 0, 1, 1], ddof=1) / 2)
    assert s["sem"].iloc[1] == 0.0
    assert s["mean_prob"].iloc[0] == pytest.approx(0.4)
    calibrated = res.assign(prob_calibrated=[.0, .0, .0, .4, np.nan, .5])  # averaged, raw prob where missing
    assert P.probe_summary(calibrated, "n_mycn")["mean_prob"].tolist() == pytest.approx([0.1, 0.7])


def test_probe_summary_and_curve_carry_the_generators_ground_truth():
    res = pd.DataFrame({"n_mycn": [8, 8, 12, 12], "call": [1, 1, 1, 1], "prob": [0.9] * 4,
                        "true_label": [0, 0, 1, 1]})
    s = P.probe_summary(res, "n_mycn")
    assert s["truth"].tolist() == [0.0, 1.0]
    assert "truth" not in P.probe_summary(res.drop(columns="true_label"), "n_mycn").columns  # saved runs
    fig = P.probe_curve(s, "n_mycn", "MYCN", rule_x=8, rule_label="Cohn rule (drawn signals)", truth=s)
    line = next(t for t in fig.data if t.name == P.TRUTH_CURVE)
    assert list(line.y) == [0.0, 1.0] and line.line.dash == "dash"
    assert line.marker.color == line.line.color == "#333"  # as its legend entry, not blue to red by value
    model = next(t for t in fig.data if t.name == "mean prediction")
    assert list(model.marker.color) == [1.0, 1.0]  # the model's markers keep their colour by value
    assert [a.text for a in _crossing_labels(fig)] == ["10.00"]  # the model never crosses; the ground truth at 10
    wavy = pd.DataFrame({"n_mycn": [0, 4, 8, 12, 16], "truth": [0.0, 0.6, 0.4, 0.6, 0.4]})
    fig2 = P.probe_curve(s, "n_mycn", "MYCN", truth=wavy)
    assert len(_crossing_marks(fig2)[0].x) == 4
    assert [a.text for a in _crossing_labels(fig2)] == ["3.33"]  # labelled at the first only
    rule = next(t for t in fig.data if t.name == "Cohn rule (drawn signals)")  # named in the legend
    assert rule.line.dash == "dot" and rule.showlegend is not False
    assert "Cohn rule (drawn signals)" not in [a.text for a in fig.layout.annotations]  # not beside the y ticks


def test_probe_curve_keeps_its_x_axis_on_the_conditions():
    # in a 290 px chart (a 1024 px screen) Plotly's autorange spread MYCN 0-35 over -48..42
    curve = pd.DataFrame({"n_mycn": np.arange(36), "mean_pred": np.clip((np.arange(36) - 8) / 4, 0, 1),
                          "sem": 0.05})
    fig = P.probe_curve(curve, "n_mycn", "MYCN", rule_x=8)
    assert list(fig.layout.xaxis.range) == pytest.approx([-1.4, 36.4])
    assert list(P.probe_curve(curve[curve["n_mycn"] > 20], "n_mycn", "MYCN", rule_x=8).layout.xaxis.range) == \
        pytest.approx([8 - 0.04 * 27, 35 + 0.04 * 27])  # the rule's line stays in view
    assert list(P.probe_curve(curve.head(1), "n_mycn", "MYCN").layout.xaxis.range) == [-0.5, 0.5]


def test_probe_embedding_leaves_out_labels_that_would_print_over_a_labelled_condition():
    # the page's count run put MYCN 13-35 on one spot of the map, their labels printed over each other
    probe = pd.DataFrame({"n_mycn": np.arange(6), "x": [0.0, 5.0, 10.0, 10.05, 10.1, 10.0],
                          "y": [0.0, 5.0, 10.0, 10.0, 10.1, 2.0], "pred": 0.5})
    fig = P.probe_embedding(pd.DataFrame({"x": [], "y": []}), probe, "n_mycn")
    pts = next(t for t in fig.data if t.name == "probe conditions")
    assert list(pts.text) == ["0", "1", "2", "", "", "5"]  # 3 and 4 sit on 2; 5 is apart in y
    assert len(pts.hovertext) == 6  # every condition still names itself in the hover


def test_probe_embedding_labels_sizes_with_one_decimal_and_names_every_condition_in_the_hover():
    # seen in a browser: "2.45", "3.41" beside "12.0", and neighbours printed as "11.0912.0"
    probe = pd.DataFrame({"x": np.arange(8.0), "y": 0.0, "pred": [0, 1] * 4,
                          "signal_size": np.repeat([2.42, 3.38, 11.09, 12.0], 2)})
    fig = P.probe_embedding(pd.DataFrame({"x": [], "y": []}), probe, "signal_size", label_every=2)
    pts = next(t for t in fig.data if t.name == "probe conditions")
    assert list(pts.text) == ["2.4", "", "11.1", ""]
    assert [h.split("<br>")[0] for h in pts.hovertext] == ["signal_size 2.42", "signal_size 3.38",
                                                           "signal_size 11.09", "signal_size 12"]
    assert P.condition_labels(pd.Series([0.5, 0.52, 0.54])) == ["0.50", "0.52", "0.54"]  # one decimal: all "0.5"
    assert P.condition_labels(pd.Series([4, 5, 16])) == ["4", "5", "16"]


def test_scan_figure_has_image_and_one_marker_per_nucleus():
    overlay = np.zeros((20, 30, 3), np.uint8)
    nuc = pd.DataFrame({"nucleus_id": [5, 6], "cx": [3.0, 20.0], "cy": [4.0, 10.0], "prob": [0.2, np.nan]})
    fig = P.scan_figure(overlay, nuc)
    assert fig.data[0].type == "image" and fig.data[0].source.startswith("data:image/jpeg;base64,")
    assert P.scan_figure(overlay, nuc, image_format="png").data[0].source.startswith("data:image/png;base64,")
    assert list(fig.data[1].x) == [3.0, 20.0] and "no prediction" in fig.data[1].text[1]
    assert tuple(fig.layout.yaxis.range) == (20, 0)  # y points down like the image


def test_predicted_vs_expected_uses_rows_with_a_target():
    summ = pd.DataFrame({"sample": ["a", "b", "a", "c"], "model": ["m1", "m1", "m2", "m1"],
                         "expected_pct": [25.0, 50.0, 25.0, np.nan], "pred_pct": [30.0, 45.0, 60.0, 10.0],
                         "ci_low_pct": [20.0, 35.0, 50.0, 5.0], "ci_high_pct": [40.0, 55.0, 70.0, 20.0]})
    fig = P.predicted_vs_expected(summ)
    traces = {t.name: t for t in fig.data}
    assert set(traces) >= {"m1", "m2"}
    assert list(traces["m1"].y) == [30.0, 45.0]
    assert list(traces["m1"].error_y.array) == [10.0, 10.0] and list(traces["m1"].error_y.arrayminus) == [10.0, 10.0]


def test_predicted_vs_expected_clips_the_band_and_separates_samples_at_one_expected_share():
    summ = pd.DataFrame({"sample": ["LINE-A", "LINE-B", "MIX-0", "LINE-C", "MIX-50"], "model": "m",
                         "sample_kind": ["cell line", "cell line", "mixture", "cell line", "mixture"],
                         "expected_pct": [0.0, 0.0, 0.0, 100.0, 50.0], "pred_pct": [1.0, 2.0, 0.5, 97.0, 52.0]})
    fig = P.predicted_vs_expected(summ, band=10)
    band = fig.data[0]
    assert min(band.y) == 0.0 and max(band.y) == 100.0  # was drawn from -10 % to 110 %
    assert list(zip(band.x, band.y)) == [(0, 10), (10, 20), (90, 100), (100, 100),
                                        (100, 90), (90, 80), (10, 0), (0, 0)]
    pts = next(t for t in fig.data if t.name == "m")
    x = dict(zip([s.split(" (")[0] for s in pts.text], pts.x))
    assert [x["LINE-A"], x["LINE-B"], x["MIX-0"]] == pytest.approx([-1.0, 0.0, 1.0])  # three at 0 %: 1 pp apart
    assert x["LINE-C"] == 100.0 and x["MIX-50"] == 50.0  # alone at their share: not moved
    symbols = dict(zip([s.split(" (")[0] for s in pts.text], pts.marker.symbol))
    assert symbols["LINE-A"] == symbols["LINE-C"] != symbols["MIX-0"]  # one symbol per sample kind
    assert {t.name for t in fig.data} >= {"cell line", "mixture"}  # the symbols' legend
    assert "LINE-A (cell line)" in pts.text and list(pts.customdata[:, 0]) == ["0.0", "0.0", "100.0", "0.0", "50.0"]
    assert P.spread([5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 7.0]).max() == pytest.approx(3.0)  # at most 3 pp aside


def test_predicted_vs_expected_hover_prints_the_reports_digits():
    """The hover said 'expected 13 %' for 12.5 % and rounded a predicted 6.25 % up to 6.3 (the report: 6.2)."""
    summ = pd.DataFrame({"sample": ["a", "b"], "model": "m", "expected_pct": [12.5, 20.0],
                         "pred_pct": [6.25, 20.04]})
    pts = next(t for t in P.predicted_vs_expected(summ).data if t.name == "m")
    assert [list(r) for r in pts.customdata] == [["12.5", "6.2", "-6.2"], ["20.0", "20.04", "+0.0"]]
    assert "expected %{customdata[0]} %<br>predicted %{customdata[1]} %" in pts.hovertemplate


def test_embedding_figure_categories_carry_nucleus_ids():
    pts = pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 2.0], "nucleus_id": [7, 8, 9],
                        "colour": ["MNA", "non-MNA", "MNA"]})
    fig = P.embedding_figure(pts, "colour")
    mna = next(t for t in fig.data if t.name == "MNA")
    assert mna.type == "scattergl" and list(mna.customdata) == [7, 9]
    assert mna.marker.color == P.LABEL_COLOURS["MNA"]
    cont = P.embedding_figure(pts.assign(p=[0.1, 0.5, 0.9]), "p")
    assert len(cont.data) == 1 and list(cont.data[0].marker.color) == [0.1, 0.5, 0.9]


def test_embedding_figure_draws_small_groups_last_and_lists_them_by_label():
    # colour by source: the real scan's 63 nuclei ("case") were drawn under ~1,100 synthetic ones
    groups = ["training"] * 5 + ["case"] * 2 + ["mixture"] * 3 + ["MNA"] * 4
    pts = pd.DataFrame({"x": np.arange(14.0), "y": 0.0, "nucleus_id": range(14), "colour": groups})
    fig = P.embedding_figure(pts, "colour", background=pts[["x", "y"]])
    assert [t.name for t in fig.data] == ["reference", "training", "MNA", "mixture", "case"]  # smallest on top
    legend = sorted(fig.data, key=lambda t: t.legendrank)
    assert [t.name for t in legend] == ["reference", "MNA", "case", "mixture", "training"]
    colour = {t.name: t.marker.color for t in fig.data}
    assert colour["MNA"] == P.LABEL_COLOURS["MNA"] and colour["case"] == P.PALETTE[1]  # by label, as before


def test_embedding_figure_shows_the_legend_of_a_single_category():
    # colour by curated label with nothing curated: every point grey and no legend to say what grey means
    pts = pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0], "nucleus_id": [7, 8], "colour": ["not curated"] * 2})
    fig = P.embedding_figure(pts, "colour")
    assert [t.name for t in fig.data] == ["not curated"] and fig.layout.showlegend is True
    assert fig.data[0].marker.color == P.LABEL_COLOURS["unlabelled"]  # the grey of nuclei without a label
    assert P.embedding_figure(pts.assign(p=[0.1, 0.9]), "p").layout.showlegend is None  # colour bar instead


def test_probe_curve_marks_the_crossing():
    curve = pd.DataFrame({"n_mycn": [0, 4, 8, 12], "mean_pred": [0.0, 0.2, 0.8, 1.0], "sem": [0.0] * 4})
    fig = P.probe_curve(curve, "n_mycn", "MYCN", rule_x=8)
    marks = _crossing_marks(fig)
    assert len(marks) == 1 and marks[0].x[0] == pytest.approx(6.0)


def test_training_curves_split_losses_and_metrics_and_mark_the_kept_epoch():
    hist = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.4], "val_loss": [0.6, 0.5, 0.55],
                         "val_acc": [0.6, 0.7, 0.65], "train_acc": [None, None, None], "note": ["a", "b", "c"]})
    fig = P.training_curves(hist)
    axes = {t.name: t.yaxis for t in fig.data}  # losses on the top panel, accuracy below; empty columns left out
    assert axes == {"train loss": "y", "validation loss (vs training labels)": "y",
                    "validation accuracy (vs training labels)": "y2", "kept: epoch 2": "y"}
    assert {s.x0 for s in fig.layout.shapes} == {2.0}  # no "best" column: the lowest validation loss (both panels)
    fig = P.training_curves(hist.assign(best=[True, False, False]), against="auto training labels")
    assert {s.x0 for s in fig.layout.shapes} == {1.0}
    assert "validation accuracy (vs auto training labels)" in [t.name for t in fig.data]
    # the kept epoch is named in the legend (dashed like its line), not by a label that met the y tick labels
    kept = next(t for t in fig.data if t.name == "kept: epoch 1")
    assert kept.line.dash == "dash" and not fig.layout.annotations


def test_threshold_scan_draws_each_class_and_marks_the_chosen_threshold():
    scans = {"cluster": {"0.50": 0.8, "0.30": 0.9}, "nmi": {"0.30": 0.5, "0.50": 0.7}}
    fig = P.threshold_scan(scans, chosen=[0.5, 0.25, 0.3])
    lines = {t.name: (list(t.x), list(t.y)) for t in fig.data if t.name}
    assert lines == {"NMI": ([0.3, 0.5], [0.5, 0.7]), "MYCN cluster": ([0.3, 0.5], [0.9, 0.8])}
    marks = [(t.x[0], t.y[0]) for t in fig.data if not t.name]
    assert marks == [(0.5, 0.7), (0.3, 0.9)]  # no MYCN scan, so no MYCN mark


def test_plotting_does_not_import_streamlit():
    code = "import sys, genuine_core.plotting; sys.exit('streamlit' in sys.modules or 'duckdb' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_counted_boxes_keep_only_boxes_at_their_class_threshold():
    boxes = pd.DataFrame({"cls": [1, 2, 3, 3], "score": [0.3, 0.2, 0.36, 0.34],
                          "x1": 0.0, "y1": 0.0, "x2": 1.0, "y2": 1.0})
    kept = P.counted_boxes(boxes, {"detector": {"count_threshold": [0.25, 0.25, 0.35]}})
    assert kept["score"].tolist() == [0.3, 0.36]
    assert len(P.counted_boxes(boxes, {"detector": {"count_threshold": 0.1}})) == 4
    assert len(P.counted_boxes(boxes, {})) == 4  # a model without a detector: nothing to filter


def test_embedding_colour_bar_lies_under_the_map_not_beside_it():
    # upright beside a half-page map on a 1024 px screen it took 75 of 280 px, leaving the map 127 px wide
    pts = pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0], "nucleus_id": [1, 2], "prediction": [0.1, 0.9]})
    bar = P.embedding_figure(pts, "prediction").data[0].marker.colorbar
    assert bar.orientation == "h" and bar.yanchor == "top" and bar.y < 0 and bar.title.text == "prediction"
