"""genuine_core.patches: shapes, masking, normalisation, centring, border handling, box moves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genuine_core.patches import boxes_to_patch, extract_patches, normalisation_stats


def test_shapes_table_and_border_skip(toy_scan):
    ps = extract_patches(toy_scan.image, toy_scan.masks, size=64, scan_id="toy")
    assert ps.patches.shape == (4, 3, 64, 64) and ps.patches.dtype == np.float32
    assert ps.n_border_skipped == 1  # nucleus 5 is cut by the right border
    assert list(ps.table.nucleus_id) == [1, 2, 3, 4]
    assert (ps.table.scan_id == "toy").all()
    areas = np.bincount(toy_scan.masks.ravel())
    np.testing.assert_array_equal(ps.table.area, areas[1:5])


def test_values_zero_outside_mask_and_in_unit_range(toy_scan):
    size = 64
    ps = extract_patches(toy_scan.image, toy_scan.masks, size=size)
    assert ps.patches.min() >= 0.0 and ps.patches.max() <= 1.0
    for row, p in zip(ps.table.itertuples(), ps.patches):
        own = np.zeros((size, size), bool)
        ys, xs = np.nonzero(toy_scan.masks == row.nucleus_id)
        own[ys - row.y0, xs - row.x0] = True  # nucleus fits in 64 px here
        assert not p[:, ~own].any(), "pixels outside the nucleus mask must be 0"
        assert (p[2, own] > 0).mean() > 0.95, "DAPI inside the nucleus survives normalisation"


def test_centre_is_mask_centroid(toy_scan):
    size = 64
    ps = extract_patches(toy_scan.image, toy_scan.masks, size=size)
    for row, p in zip(ps.table.itertuples(), ps.patches):
        ys, xs = np.nonzero(toy_scan.masks == row.nucleus_id)
        assert row.cy == pytest.approx(ys.mean()) and row.cx == pytest.approx(xs.mean())
        # the nucleus centroid in patch coordinates is within half a pixel of the centre pixel
        assert abs(ys.mean() - row.y0 - size // 2) <= 0.5 and abs(xs.mean() - row.x0 - size // 2) <= 0.5
        py, px = np.nonzero(p.sum(0) > 0)  # and so is the centroid of the non-zero patch pixels
        assert abs(py.mean() - size // 2) <= 1.0 and abs(px.mean() - size // 2) <= 1.0


def test_normalisation_matches_definition(toy_scan):
    img, masks = toy_scan.image, toy_scan.masks
    bg, scale = normalisation_stats(img, masks, "percentile")
    for c in range(3):
        assert bg[c] == pytest.approx(np.median(img[..., c][masks == 0]), abs=2e-3)
        hi = np.percentile(img[..., c][masks > 0], 99.9)
        assert scale[c] == pytest.approx(hi - bg[c], rel=1e-5, abs=1e-6)
    ps = extract_patches(img, masks, size=64)
    r = ps.table.iloc[0]
    y, x = int(round(r.cy)), int(round(r.cx))
    expect = np.clip((img[y, x] - ps.background) / ps.scale, 0, 1)
    np.testing.assert_allclose(ps.patches[0][:, 32, 32], expect, rtol=1e-5, atol=1e-6)
    # the brightest 0.1 % of nuclear pixels saturate at 1
    assert ps.patches[:, 2].max() == pytest.approx(1.0)


def test_large_nucleus_kept_cropped_and_flagged(toy_scan):
    ps = extract_patches(toy_scan.image, toy_scan.masks, size=40)  # nuclei are ~52-58 px across
    assert len(ps.patches) == 4 and ps.table.cropped.all()
    small = extract_patches(toy_scan.image, toy_scan.masks, size=96)
    assert not small.table.cropped.any()


def test_window_past_the_edge_is_zero_padded(toy_scan):
    # nucleus 1 sits at (60, 60): a 160 px window reaches 20 px past the top-left corner
    ps = extract_patches(toy_scan.image, toy_scan.masks, size=160)
    r = ps.table.iloc[0]
    assert r.y0 < 0 and r.x0 < 0
    p = ps.patches[0]
    assert not p[:, : -r.y0].any() and not p[:, :, : -r.x0].any()
    assert p[2].sum() == pytest.approx(extract_patches(toy_scan.image, toy_scan.masks, size=96).patches[0][2].sum(),
                                       rel=1e-6)


def test_empty_masks_and_bad_args(toy_scan):
    ps = extract_patches(toy_scan.image, np.zeros(toy_scan.masks.shape, np.int32), size=32)
    assert ps.patches.shape == (0, 3, 32, 32) and len(ps.table) == 0 and ps.n_border_skipped == 0
    with pytest.raises(ValueError):
        extract_patches(toy_scan.image[..., :2], toy_scan.masks)
    with pytest.raises(ValueError):
        extract_patches(toy_scan.image, toy_scan.masks[:10])
    with pytest.raises(ValueError):
        extract_patches(toy_scan.image, toy_scan.masks.astype(float))


def test_boxes_to_patch(toy_scan):
    ps = extract_patches(toy_scan.image, toy_scan.masks, size=64)
    t = ps.table.set_index("nucleus_id")
    boxes = pd.DataFrame({
        "nucleus_id": [2, 1, 5, 1],
        "cls": [2, 1, 1, 3],
        "x1": [t.x0[2] + 10, t.x0[1] + 5, 240, t.x0[1] - 4],
        "y1": [t.y0[2] + 12, t.y0[1] + 6, 100, t.y0[1] + 60],
        "x2": [t.x0[2] + 14, t.x0[1] + 9, 244, t.x0[1] + 3],
        "y2": [t.y0[2] + 16, t.y0[1] + 10, 104, t.y0[1] + 70],
    })
    out = boxes_to_patch(boxes, ps.table, size=64)
    assert list(out.patch_row) == [0, 0, 1]  # nucleus 5 (border-skipped) dropped
    assert list(out.cls) == [1, 3, 2]
    np.testing.assert_allclose(out[["x1", "y1", "x2", "y2"]].to_numpy(),
                               [[5, 6, 9, 10], [0, 60, 3, 64], [10, 12, 14, 16]])
    unclipped = boxes_to_patch(boxes, ps.table)
    assert unclipped.x1.min() == -4


def test_patches_per_second_is_reasonable(toy_scan):
    import time

    t = time.perf_counter()
    for _ in range(5):
        extract_patches(toy_scan.image, toy_scan.masks, size=96)
    dt = (time.perf_counter() - t) / 5
    assert dt < 0.5, f"extracting 4 patches from a 256 px scan took {dt:.3f} s"


def test_real_image_patches(real_image_path):
    from scipy import ndimage

    from genuine_core.io import read_scan

    img = read_scan(real_image_path).image
    # crude masks (threshold + label) are enough to exercise the real intensity distribution
    masks, n = ndimage.label(ndimage.gaussian_filter(img[..., 2], 2) > 0.25)
    ps = extract_patches(img, masks.astype(np.int32), size=96, scan_id="real")
    assert n > 10 and len(ps.patches) + ps.n_border_skipped == n
    assert ps.patches.min() >= 0 and ps.patches.max() <= 1
    assert 0 < ps.background[2] < 0.25


def _spot_field(gain: float, blur: float, n_spots: int = 40, bright_every: int = 5):
    """(H, W, 3) scan with one big nucleus holding n_spots MYCN spots, camera clipped at 1.

    Every ``bright_every``-th spot is 4x brighter (0: none): it saturates at any gain used
    here, as clusters do.
    """
    import cv2

    h = w = 256
    masks = np.zeros((h, w), np.int32)
    masks[16:240, 16:240] = 1
    scene = np.zeros((h, w, 3), np.float32)
    scene[16:240, 16:240, 2] = 0.5
    ys, xs = np.meshgrid(np.arange(40, 224, 23), np.arange(40, 224, 23), indexing="ij")
    for k, (y, x) in enumerate(list(zip(ys.ravel(), xs.ravel()))[:n_spots]):
        scene[y - 1:y + 2, x - 1:x + 2, 1] = 4.0 if bright_every and k % bright_every == 0 else 1.0
    img = cv2.GaussianBlur(scene, (0, 0), blur) * gain + 0.05
    return np.clip(img, 0, 1).astype(np.float32), masks


def test_spot_flux_scale_follows_exposure_where_the_percentile_saturates():
    bright, masks = _spot_field(gain=1.0, blur=1.0)
    dim, _ = _spot_field(gain=0.6, blur=1.0)
    assert dim[..., 1].max() == 1.0  # the brightest spots saturate in both scans
    _, p_bright = normalisation_stats(bright, masks, "percentile")
    _, p_dim = normalisation_stats(dim, masks, "percentile")
    _, f_bright = normalisation_stats(bright, masks, "spot_flux")
    _, f_dim = normalisation_stats(dim, masks, "spot_flux")
    assert f_dim[1] / f_bright[1] == pytest.approx(0.6, rel=0.05)  # flux follows the exposure ...
    assert p_dim[1] / p_bright[1] > 0.95  # ... where the saturated percentile does not
    np.testing.assert_allclose(f_bright[[0, 2]], p_bright[[0, 2]])  # only MYCN changes


def test_spot_flux_scale_keeps_its_value_under_more_blur():
    sharp, masks = _spot_field(gain=0.8, blur=1.0, bright_every=0)
    blurred, _ = _spot_field(gain=0.8, blur=1.8, bright_every=0)
    _, p_sharp = normalisation_stats(sharp, masks, "percentile")
    _, p_blurred = normalisation_stats(blurred, masks, "percentile")
    _, f_sharp = normalisation_stats(sharp, masks, "spot_flux")
    _, f_blurred = normalisation_stats(blurred, masks, "spot_flux")
    assert f_blurred[1] == pytest.approx(f_sharp[1], rel=0.1)  # blur keeps a spot's flux ...
    assert p_blurred[1] < 0.6 * p_sharp[1]  # ... and lowers its peak


def test_spot_flux_scale_equals_a_spot_by_spot_reference_on_a_synthetic_field():
    from scipy import ndimage

    from genuine_core.patches import FLUX_TO_SCALE, SPOT_MAX_AREA, SPOT_THRESHOLD, spot_flux_scale
    from genuine_core.synth import DEFAULT_LINES, make_field

    f = make_field(np.random.default_rng(5), dict.fromkeys([l.name for l in DEFAULT_LINES], 1.0), 30)
    bg, scale = normalisation_stats(f.image, f.masks, "percentile")
    chan, inside = f.image[..., 1] - bg[1], f.masks > 0
    # reference: the spot-by-spot definition (peak of each small region, 9 x 9 sum minus ring median)
    smooth = ndimage.gaussian_filter(chan, 1.0)
    lab, n = ndimage.label((smooth > SPOT_THRESHOLD * scale[1]) & inside)
    flux = []
    for k in range(1, n + 1):
        if (lab == k).sum() > SPOT_MAX_AREA:
            continue
        y, x = ndimage.maximum_position(smooth, lab, k)
        win = chan[y - 6:y + 7, x - 6:x + 7]
        if win.shape != (13, 13):
            continue
        ring = np.concatenate([win[0], win[-1], win[1:-1, 0], win[1:-1, -1]])
        flux.append(win[2:11, 2:11].sum() - np.median(ring) * 81)
    assert len(flux) > 20
    assert spot_flux_scale(chan, inside, float(scale[1])) == pytest.approx(np.median(flux) * FLUX_TO_SCALE, rel=1e-5)


def test_spot_flux_falls_back_to_the_percentile_and_rejects_unknown_names():
    few, masks = _spot_field(gain=0.5, blur=1.0, n_spots=3)
    np.testing.assert_allclose(normalisation_stats(few, masks, "spot_flux")[1],
                               normalisation_stats(few, masks, "percentile")[1])
    with pytest.raises(ValueError, match="normalisation"):
        extract_patches(few, masks, size=64, normalisation="flux")
