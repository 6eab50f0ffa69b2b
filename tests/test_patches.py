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
    bg, scale = normalisation_stats(img, masks)
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
