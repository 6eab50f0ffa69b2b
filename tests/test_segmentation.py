"""genuine_core.segmentation: watershed on the toy scan, match_instances on hand-made masks, cellpose guards."""

from __future__ import annotations

import numpy as np
import pytest

from genuine_core.errors import ModelLoadError
from genuine_core.segmentation import (DEFAULT_BACKEND, WatershedConfig, evaluate_segmenter, match_instances, segment,
                                      touching_pairs)
from genuine_core.segmentation.cellpose_backend import infer_nbase, resolve_model_path


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# --- watershed -----------------------------------------------------------------------


def test_watershed_finds_every_toy_nucleus_and_splits_touching_pair(toy_scan):
    masks = segment(toy_scan.image, backend="watershed")
    assert masks.dtype == np.int32 and masks.shape == toy_scan.masks.shape
    r = match_instances(toy_scan.masks, masks)
    assert (r["tp"], r["fp"], r["fn"]) == (5, 0, 0)
    assert r["merged"] == 0 and r["split"] == 0
    assert r["touching_pairs"] == 1 and r["touching_merged"] == 0
    assert r["mean_iou"] > 0.85
    # the two touching nuclei (3, 4) land in two different predicted labels
    lab3 = np.bincount(masks[toy_scan.masks == 3]).argmax()
    lab4 = np.bincount(masks[toy_scan.masks == 4]).argmax()
    assert lab3 != lab4 and lab3 > 0 and lab4 > 0


def test_watershed_separates_two_touching_discs_without_intensity_valley():
    shape = (160, 220)
    a, b = _disc(shape, 80, 78, 30), _disc(shape, 80, 134, 30)  # 56 px apart: overlapping discs
    dapi = (a | b).astype(np.float32) * 0.6 + 0.05
    masks = segment(dapi, backend="watershed")
    assert masks.max() == 2
    assert masks[80, 60] != masks[80, 150] and masks[80, 60] > 0 and masks[80, 150] > 0


def test_watershed_ignores_specks_and_handles_blank_image():
    dapi = np.full((128, 128), 0.05, np.float32)
    dapi[60:63, 60:63] = 1.0  # 9 px speck, far below the minimum nucleus area
    assert segment(dapi, backend="watershed").max() == 0
    assert segment(np.zeros((64, 64), np.float32), backend="watershed").max() == 0


def test_watershed_diameter_controls_minimum_size():
    shape = (128, 128)
    dapi = _disc(shape, 64, 64, 8).astype(np.float32) * 0.8  # a 16 px object
    assert segment(dapi, backend="watershed", diameter=60).max() == 0  # too small for 60 px nuclei
    assert segment(dapi, backend="watershed", diameter=16).max() == 1


def test_segment_rejects_bad_arguments(toy_scan):
    with pytest.raises(ValueError, match="backend"):
        segment(toy_scan.image, backend="stardist")
    with pytest.raises(ValueError):
        segment(toy_scan.image[..., :2])
    with pytest.raises(ValueError):
        segment(toy_scan.image, diameter=1)
    with pytest.raises(ValueError):
        WatershedConfig(min_distance=1.5)
    assert DEFAULT_BACKEND in ("watershed", "cellpose")


# --- match_instances -------------------------------------------------------------------


def test_match_instances_counts_on_hand_made_masks():
    shape = (100, 200)
    gt = np.zeros(shape, np.int32)
    gt[10:40, 10:40] = 1            # matched exactly
    gt[10:40, 60:90] = 2            # missed
    gt[60:90, 10:40] = 3            # \ touching pair, merged into one prediction
    gt[60:90, 40:70] = 4            # /
    gt[55:95, 120:180] = 5          # split into two predictions
    pred = np.zeros(shape, np.int32)
    pred[10:40, 10:40] = 7
    pred[58:92, 8:72] = 8           # merge of 3 and 4 (IoU with each < 0.5)
    pred[55:95, 120:140] = 9        # three thirds of 5
    pred[55:95, 140:160] = 10
    pred[55:95, 160:180] = 12
    pred[0:8, 190:198] = 11         # false positive
    r = match_instances(gt, pred)
    assert (r["n_gt"], r["n_pred"]) == (5, 6)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 5, 4)
    assert r["precision"] == pytest.approx(1 / 6) and r["recall"] == pytest.approx(0.2)
    assert r["f1"] == pytest.approx(2 / 11)
    assert r["merged"] == 1 and r["split"] == 1
    assert r["touching_pairs"] == 1 and r["touching_merged"] == 1
    assert r["mean_iou"] == pytest.approx(1.0)


def test_match_instances_iou_threshold_and_empty_cases():
    gt = np.zeros((50, 50), np.int32)
    gt[10:30, 10:30] = 1
    pred = np.zeros_like(gt)
    pred[10:30, 14:34] = 1  # IoU = 320 / 480 = 0.667
    assert match_instances(gt, pred, iou=0.5)["tp"] == 1
    assert match_instances(gt, pred, iou=0.7)["tp"] == 0
    empty = np.zeros_like(gt)
    assert match_instances(empty, empty)["f1"] == 1.0
    r = match_instances(gt, empty)
    assert (r["f1"], r["fn"], r["fp"]) == (0.0, 1, 0)
    with pytest.raises(ValueError):
        match_instances(gt, pred[:10])
    with pytest.raises(ValueError):
        match_instances(gt, pred, iou=0)


def test_match_instances_is_label_order_invariant(toy_scan):
    perm = np.array([0, 5, 3, 4, 1, 2], np.int32)  # relabel 1..5 arbitrarily
    r = match_instances(toy_scan.masks, perm[toy_scan.masks])
    assert (r["tp"], r["fp"], r["fn"], r["merged"], r["split"]) == (5, 0, 0, 0, 0)


def test_evaluate_segmenter_pools_counts_over_fields(toy_scan):
    fields = [toy_scan.masks, toy_scan.masks]
    perfect = evaluate_segmenter(lambda m: m, fields, fields)
    assert (perfect["tp"], perfect["fields"], perfect["f1"], perfect["mean_iou"]) == (10, 2, 1.0, 1.0)
    calls = iter([toy_scan.masks, np.zeros_like(toy_scan.masks)])  # second field: nothing found
    half = evaluate_segmenter(lambda m: next(calls), fields, fields)
    assert (half["tp"], half["fn"], half["fp"]) == (5, 5, 0)
    assert half["recall"] == pytest.approx(0.5) and half["precision"] == 1.0
    assert half["f1"] == pytest.approx(2 * 5 / (2 * 5 + 5))


def test_drop_dim_objects_and_keep_labels():
    from genuine_core.segmentation.watershed import drop_dim_objects, keep_labels

    labels = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0]], np.int32)
    fg = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], bool)
    out = drop_dim_objects(labels, fg, 0.5)  # 1: 4/4, 2: 1/4, 3: 0/2 in the foreground
    assert out.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    assert drop_dim_objects(labels, fg, 0.25).max() == 2
    assert drop_dim_objects(labels, fg, 0.0) is labels
    assert keep_labels(labels, np.array([False, False, True, True])).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1],
                                                                                   [2, 2, 0, 0]]


def test_touching_pairs():
    m = np.array([[1, 1, 2, 0], [3, 3, 2, 0], [0, 0, 0, 4]], np.int32)
    assert touching_pairs(m).tolist() == [[1, 2], [1, 3], [2, 3]]


# --- cellpose guards (no model, no download) ----------------------------------------------


def test_cellpose_missing_model_is_a_clear_error_not_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "cache"))
    monkeypatch.delenv("GENUINE_CELLPOSE_MODEL", raising=False)
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_model_path(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="not cached"):
        resolve_model_path("cyto3")
    with pytest.raises(ModelLoadError):
        segment(np.zeros((32, 32), np.float32), backend="cellpose", model_path=str(tmp_path / "nope"))
    assert not (tmp_path / "cache").exists()  # nothing fetched or created


def test_cellpose_model_folder_and_cached_builtin_resolve(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "cellpose_nuclei").write_bytes(b"x")
    assert resolve_model_path(folder) == folder / "cellpose_nuclei"
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "nucleitorch_0").write_bytes(b"x")
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(cache))
    assert resolve_model_path("nuclei") == cache / "nucleitorch_0"


def test_cellpose_rejects_non_model_file(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match="cannot load"):
        segment(np.zeros((32, 32), np.float32), backend="cellpose", model_path=str(bad))


def test_infer_nbase_from_state_dict_shapes():
    widths = [2, 8, 16, 256]
    fake = {f"downsample.down.res_down_{i}.proj.1.weight": np.zeros((widths[i + 1], widths[i], 1, 1))
            for i in range(3)}
    assert infer_nbase(fake) == widths
    with pytest.raises(ModelLoadError):
        infer_nbase({"foo": np.zeros(3)})


@pytest.mark.slow
def test_cellpose_tiny_model_runs_end_to_end(tmp_path, toy_scan):
    """A random-weight narrow CPnet saved to disk loads through our path and returns int32 masks."""
    import torch
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    net = CPnet([2, 8, 16, 256], 3, sz=3, diam_mean=17.0)
    assert infer_nbase(net.state_dict()) == [2, 8, 16, 256]
    net.save_model(str(tmp_path / "cellpose_nuclei"))
    masks = segment(toy_scan.image, backend="cellpose", model_path=str(tmp_path))
    assert masks.shape == toy_scan.masks.shape and masks.dtype == np.int32


def test_watershed_on_real_image(real_image_path):
    from genuine_core.io import read_scan

    img = read_scan(real_image_path).image
    masks = segment(img, backend="watershed")
    n = masks.max()
    assert 50 <= n <= 130, f"{n} nuclei on the real image (about 80 visible)"
    areas = np.bincount(masks.ravel())[1:]
    assert 1500 < np.median(areas) < 5000  # ~55-70 px nuclei
