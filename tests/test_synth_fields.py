"""Ground truth of synthetic fields: boxes on signals, Cohn labels, label noise, determinism."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from genuine_core.rules import is_amplified
from genuine_core.synth import (
    CLUSTER, DEFAULT_LINES, MYCN, NMI, NOMINAL, SHIFTED, Acquisition, CellLine, Phenotype, Scene, SignalStyle,
    make_field,
)
from genuine_core.synth.lines import decaying, uniform
from genuine_core.synth.signals import render_spots

ALL_LINES = {line.name: 1.0 for line in DEFAULT_LINES}


@pytest.fixture(scope="module")
def field():
    return make_field(np.random.default_rng(7), ALL_LINES, 12, (320, 320), flip_rate=0.3)


def test_field_shapes_and_columns(field):
    assert field.image.shape == (320, 320, 3) and field.image.dtype == np.float32
    assert 0.0 <= field.image.min() and field.image.max() <= 1.0
    assert field.masks.dtype == np.int32
    ids = sorted(set(np.unique(field.masks)) - {0})
    assert ids == sorted(field.nuclei["nucleus_id"]) and len(ids) >= 10
    for col in ["nucleus_id", "cell_line", "n_nmi", "n_mycn", "n_cluster", "true_label", "auto_label", "noise",
                "label_noisy", "cy", "cx", "area"]:
        assert col in field.nuclei.columns
    assert list(field.boxes.columns) == ["nucleus_id", "cls", "x1", "y1", "x2", "y2"]
    # areas match the masks and no nucleus touches the border (patch extraction would skip it)
    areas = np.bincount(field.masks.ravel())
    assert (field.nuclei["area"].to_numpy() == areas[field.nuclei["nucleus_id"].to_numpy()]).all()
    m = field.masks
    assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())


def test_boxes_lie_on_rendered_signals(field):
    img, masks = field.image, field.masks
    assert len(field.boxes) > 3 * len(field.nuclei)
    for nid, grp in field.boxes.groupby("nucleus_id"):
        own = masks == nid
        cover = {0: np.zeros_like(own), 1: np.zeros_like(own)}  # per channel: pixels under its boxes
        for b in grp.itertuples():
            cover[0 if b.cls == NMI else 1][b.y1:b.y2, b.x1:b.x2] = True
        for b in grp.itertuples():
            assert 0 <= b.x1 < b.x2 <= img.shape[1] and 0 <= b.y1 < b.y2 <= img.shape[0]
            cy, cx = (b.y1 + b.y2 - 1) // 2, (b.x1 + b.x2 - 1) // 2
            assert masks[cy, cx] == nid, "box centre must lie inside its nucleus"
            ch = 0 if b.cls == NMI else 1
            chan = img[..., ch]
            inside_box = chan[b.y1:b.y2, b.x1:b.x2].max()
            nucleus_rest = chan[own & ~cover[ch]]  # same nucleus, away from this channel's signals
            ref = np.median(nucleus_rest)
            assert inside_box > ref + 0.08, f"box {b} is not on a bright {['NMI', 'MYCN'][ch]} signal"


def test_counts_equal_boxes_and_cohn_rule(field):
    per = field.boxes.groupby(["nucleus_id", "cls"]).size().unstack(fill_value=0)
    per = per.reindex(index=field.nuclei["nucleus_id"], columns=[NMI, MYCN, CLUSTER], fill_value=0)
    nuc = field.nuclei.set_index("nucleus_id")
    assert (per[NMI] == nuc["n_nmi"]).all()
    assert (per[MYCN] == nuc["n_mycn"]).all()
    assert (per[CLUSTER] == nuc["n_cluster"]).all()
    expected = is_amplified(nuc["n_nmi"].to_numpy(), nuc["n_mycn"].to_numpy(), nuc["n_cluster"].to_numpy())
    assert (nuc["true_label"].to_numpy() == expected).all()
    # placed counts minus merges = visible counts
    placed = nuc[["n_nmi_placed", "n_mycn_placed", "n_cluster_placed"]].sum(axis=1)
    visible = nuc[["n_nmi", "n_mycn", "n_cluster"]].sum(axis=1)
    assert (placed - nuc["n_merged"] == visible).all()


def test_auto_label_differs_exactly_where_noise_recorded(field):
    n = field.nuclei
    assert (n["label_noisy"] == (n["auto_label"] != n["true_label"])).all()
    assert (n["label_noisy"] == n["noise"].isin(["natural", "flip"])).all()
    assert (n["natural"] == (n["true_label"] != n["line_label"])).all()
    assert (n["flipped"] == (n["auto_label"] != n["line_label"])).all()
    expect = np.where(n["natural"] & n["flipped"], "natural+flip",
                      np.where(n["natural"], "natural", np.where(n["flipped"], "flip", "none")))
    assert (n["noise"].to_numpy() == expect).all()
    genotype = {line.name: int(line.mna) for line in DEFAULT_LINES}
    assert (n["line_label"] == n["cell_line"].map(genotype)).all()


def test_flip_rate_realised_near_beta():
    beta = 0.3
    scene = Scene(debris=0.0, specks=0.0)
    parts = [make_field(np.random.default_rng(i), {"nonmna_diploid": 1.0}, 40, (520, 520), flip_rate=beta,
                        scene=scene).nuclei for i in range(10)]
    n = pd.concat(parts)
    assert len(n) >= 350
    sd = math.sqrt(beta * (1 - beta) / len(n))
    assert abs(n["flipped"].mean() - beta) < 4 * sd
    # natural noise of this line is 0.02: the realised share stays small
    assert n["natural"].mean() < 0.06


def test_natural_noise_share_is_configurable():
    line = CellLine("only_dm", True, typical=DEFAULT_LINES[2].typical, atypical=DEFAULT_LINES[2].atypical,
                    natural_noise=0.5)
    parts = [make_field(np.random.default_rng(i), {"only_dm": 1.0}, 20, (448, 448), lines=(line,)).nuclei
             for i in range(3)]
    n = pd.concat(parts)
    assert 0.3 < n["natural"].mean() < 0.7
    assert (n["auto_label"] == 1).all()  # no flips requested: the genotype


def test_diploid_nuclei_sometimes_show_no_mycn_signal_and_stay_non_amplified():
    """An empty green channel must not be HSR-only in the training pool (the Fig. 4 probe starts there)."""
    diploid = DEFAULT_LINES[0]
    rng = np.random.default_rng(0)
    draws = [diploid.sample(rng) for _ in range(3000)]
    empty = [(atyp, counts) for _, counts, atyp in draws if counts[1] == 0 and counts[2] == 0]
    assert 40 <= len(empty) <= 140  # 3 % of the typical nuclei
    assert all(not atyp and not is_amplified(*counts) for atyp, counts in empty)


def test_field_is_deterministic(field):
    again = make_field(np.random.default_rng(7), ALL_LINES, 12, (320, 320), flip_rate=0.3)
    assert again.image.tobytes() == field.image.tobytes()
    assert np.array_equal(again.masks, field.masks)
    pd.testing.assert_frame_equal(again.nuclei, field.nuclei)
    pd.testing.assert_frame_equal(again.boxes, field.boxes)
    other = make_field(np.random.default_rng(8), ALL_LINES, 12, (320, 320), flip_rate=0.3)
    assert other.image.tobytes() != field.image.tobytes()


def test_explicit_composition_is_followed():
    names = ["mna_hsr", "nonmna_gain", "mna_hsr", "nonmna_diploid"]
    f = make_field(np.random.default_rng(1), names, 4, (256, 256))
    assert list(f.nuclei["cell_line"]) == names
    assert (f.nuclei.loc[f.nuclei["cell_line"] == "mna_hsr", "n_cluster_placed"] >= 0).all()


def test_shifted_acquisition_changes_the_image_but_not_the_truth():
    a = make_field(np.random.default_rng(3), ALL_LINES, 8, (256, 256), NOMINAL)
    b = make_field(np.random.default_rng(3), ALL_LINES, 8, (256, 256), SHIFTED)
    assert np.array_equal(a.masks, b.masks)
    pd.testing.assert_frame_equal(a.nuclei, b.nuclei)
    bg_a = np.median(a.image[a.masks == 0], axis=0)
    bg_b = np.median(b.image[b.masks == 0], axis=0)
    assert (bg_b > bg_a).all()  # SHIFTED has a brighter background
    assert not np.allclose(a.image, b.image, atol=0.02)


def test_jittered_acquisition_stays_within_its_log_range_and_is_seeded():
    from genuine_core.synth.acquisition import JITTER_LOG_HALF_WIDTH, jittered

    assert jittered(NOMINAL, np.random.default_rng(0), 0.0) == NOMINAL
    draws = [jittered(NOMINAL, np.random.default_rng(s)) for s in range(200)]
    assert jittered(NOMINAL, np.random.default_rng(5)) == draws[5]
    for name, half in JITTER_LOG_HALF_WIDTH.items():
        base = np.atleast_1d(getattr(NOMINAL, name))
        factors = np.array([np.atleast_1d(getattr(d, name)) / base for d in draws])
        assert np.all(np.abs(np.log(factors)) <= half + 1e-9), name
        assert np.abs(np.log(factors)).max() > 0.8 * half, name  # the range is used, not just its centre
    # half strength halves the spread
    half_draws = [jittered(NOMINAL, np.random.default_rng(s), 0.5).blur_sigma for s in range(200)]
    assert np.abs(np.log(np.array(half_draws) / NOMINAL.blur_sigma)).max() <= 0.5 * JITTER_LOG_HALF_WIDTH["blur_sigma"]
    with pytest.raises(ValueError, match="strength"):
        jittered(NOMINAL, np.random.default_rng(0), 2.5)


def test_intensity_levels_resemble_the_real_image(field):
    """Dark background and nuclear DAPI near the levels measured on FISH_RGB.TIF (8-bit / 255)."""
    out = field.masks == 0
    bg = np.median(field.image[out], axis=0)
    assert np.allclose(bg, NOMINAL.background, atol=0.03)
    dapi = np.median(field.image[..., 2][field.masks > 0])
    assert 0.3 < dapi < 0.65


def test_spot_is_a_hard_cut_gaussian():
    """Without deformation and blur a spot is the disc where the Gaussian is >= 0.8 of its peak."""
    style = SignalStyle(elastic_alpha=0.0, blur=0.0)
    sigma = 6.0
    s, = render_spots(np.random.default_rng(0), [np.zeros((1, 2))], [np.array([sigma])], np.array([MYCN]),
                      np.array([1.0]), style=style)
    nz = int((s.canvas > 0).sum())
    expected = math.pi * (sigma * math.sqrt(2 * math.log(1 / 0.8))) ** 2
    assert abs(nz - expected) < 0.2 * expected
    assert s.canvas[s.canvas > 0].min() >= 0.8 - 1e-6


@pytest.mark.parametrize("kwargs", [
    dict(flip_rate=1.5),
    dict(flip_rate=-0.1),
    dict(composition={"no_such_line": 1.0}),
    dict(composition={"mna_dm": -1.0}),
    dict(composition=["mna_dm", "mna_dm"]),  # length differs from n_nuclei
    dict(n_nuclei=-1),
    dict(shape=(16, 16)),
])
def test_make_field_rejects_bad_arguments(kwargs):
    args = dict(rng=np.random.default_rng(0), composition={"mna_dm": 1.0}, n_nuclei=3, shape=(128, 128))
    args.update(kwargs)
    with pytest.raises(ValueError):
        make_field(**args)


@pytest.mark.parametrize("make", [
    lambda: Acquisition(exposure=0.0),
    lambda: Acquisition(blur_sigma=-1),
    lambda: Acquisition(crosstalk=0.9),
    lambda: Acquisition(background=(0.1, 0.1)),
    lambda: SignalStyle(cut=1.2),
    lambda: SignalStyle(overlap_prob=2.0),
    lambda: Scene(scale=0.0),
    lambda: Phenotype(nmi=()),
    lambda: Phenotype(mycn_sigma=(3.0, 1.0)),
    lambda: CellLine("", True),
    lambda: CellLine("x", True, natural_noise=1.5),
    lambda: uniform(5, 2),
    lambda: decaying(2, 5, 0.0),
])
def test_configs_validate(make):
    with pytest.raises(ValueError):
        make()


def test_line_that_cannot_produce_its_label_is_an_error():
    never = Phenotype(nmi=((2, 1.0),), mycn=((2, 1.0),))  # never amplified
    line = CellLine("broken", True, typical=never, atypical=never)
    with pytest.raises(ValueError, match="cannot produce"):
        make_field(np.random.default_rng(0), {"broken": 1.0}, 2, (256, 256), lines=(line,))
