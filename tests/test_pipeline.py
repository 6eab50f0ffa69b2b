"""process_scan (pure: file in, tables out), truth matching, codecs, UMAP maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _store_fakes import FakePrediction, fake_model, threshold_segmenter
from genuine_core import pipeline
from genuine_core.embedding import UmapConfig, UmapMap, membership_weights
from genuine_core.errors import InputError
from genuine_core.io import write_scan_tiff
from genuine_core.patches import extract_patches


@pytest.fixture()
def toy_file(tmp_path, toy_scan):
    p = tmp_path / "toy.tif"
    write_scan_tiff(p, toy_scan.image)
    return p


def test_process_scan_tables_align(toy_file, toy_scan):
    models = [fake_model("big", patch_size=64), fake_model("small", bias=0.5, patch_size=32)]
    res = pipeline.process_scan(toy_file, models, segmenter=lambda img: toy_scan.masks)
    assert res.n_nuclei == 4 and res.n_border_skipped == 1  # nucleus 5 touches the border
    assert res.patches.shape == (4, 3, 64, 64) and res.patch_size == 64
    assert res.nuclei["mask_label"].tolist() == [1, 2, 3, 4]
    for name, out in res.outputs.items():
        assert len(out.table) == 4 and out.embeddings.shape == (4, 7) and len(out.detections) == 4
    # the small model saw 32 px crops of the same nuclei: identical to extracting at 32 px
    ref = extract_patches(read_image(toy_file), toy_scan.masks, size=32).patches
    expected = models[1].predict(ref).table["prob"].to_numpy()
    assert np.allclose(res.outputs["small"].table["prob"].to_numpy(), expected, atol=1e-6)
    assert res.info["sha256"] == pipeline.scan_sha256(toy_file)
    assert res.info["channel_map"] == {"nmi": 0, "mycn": 1, "dapi": 2}
    assert res.preview.dtype == np.uint8 and res.preview.shape == (256, 256, 3)
    assert set(res.seconds) == {"read", "segment", "patches", "big", "small"}


def read_image(path):
    from genuine_core.io import read_scan

    return read_scan(path).image


def test_center_crop_matches_extraction(toy_scan):
    big = extract_patches(toy_scan.image, toy_scan.masks, size=65).patches
    for size in (64, 33, 32):
        small = extract_patches(toy_scan.image, toy_scan.masks, size=size).patches
        assert np.array_equal(pipeline.center_crop(big, size), small)
    with pytest.raises(ValueError):
        pipeline.center_crop(big, 80)


def test_process_scan_rejects_bad_model_output(toy_file, toy_scan):
    bad = fake_model("bad")
    bad.predict = lambda p: FakePrediction(pd.DataFrame({"prob": [0.5]}), np.zeros((1, 2)), pd.DataFrame())
    with pytest.raises(RuntimeError, match="bad"):
        pipeline.process_scan(toy_file, [bad], segmenter=lambda img: toy_scan.masks)
    with pytest.raises(ValueError, match="unique"):
        pipeline.process_scan(toy_file, [fake_model("a"), fake_model("a")], segmenter=threshold_segmenter)


def test_process_scan_bad_file_and_empty_scan(tmp_path, toy_file):
    bad = tmp_path / "x.tif"
    bad.write_text("hello")
    with pytest.raises(InputError):
        pipeline.process_scan(bad, [fake_model()])
    res = pipeline.process_scan(toy_file, [fake_model()], segmenter=lambda img: np.zeros(img.shape[:2], np.int32))
    assert res.n_nuclei == 0 and len(res.outputs["fake"].table) == 0


def test_match_truth_by_overlap():
    gt = np.zeros((20, 20), np.int32)
    gt[2:8, 2:8] = 1
    gt[10:18, 10:18] = 2
    gt[2:6, 12:16] = 3
    pred = np.zeros_like(gt)
    pred[2:8, 2:7] = 5          # IoU 30/36 with gt 1
    pred[10:18, 10:14] = 6      # half of gt 2: IoU 0.5
    pred[10:18, 14:18] = 7      # other half: IoU 0.5, loses the tie to 6 (one match per gt)
    pred[0:2, 0:2] = 8          # background only
    m = pipeline.match_truth(pred, gt)
    assert m[["mask_label", "gt_id"]].values.tolist() == [[5, 1], [6, 2]]
    assert m["iou"].tolist() == pytest.approx([30 / 36, 0.5])
    assert pipeline.match_truth(pred, gt, min_iou=0.9).empty


def test_codecs_roundtrip():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, (3, 16, 16)).astype(np.float32)
    back = pipeline.decode_patch(pipeline.encode_patch(p))
    assert back.shape == p.shape and np.abs(back - p).max() <= 0.5 / 255 + 1e-6
    masks = rng.integers(0, 300, (40, 30)).astype(np.int32)
    assert np.array_equal(pipeline.decode_masks(pipeline.encode_masks(masks)), masks)
    img = rng.integers(0, 255, (10, 12, 3)).astype(np.uint8)
    assert np.array_equal(pipeline.decode_image(pipeline.encode_image(img)), img)


def test_membership_weights_follow_umap_definition():
    d = np.array([[0.5, 1.0, 1.5, 3.0]])
    w = membership_weights(d)
    assert w[0, 0] == pytest.approx(1.0)
    assert w.sum() == pytest.approx(np.log2(4), rel=1e-6)
    assert np.all(np.diff(w[0]) < 0)


def test_umap_map_transform_and_safe_file(tmp_path):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 8)) * 6
    lab = np.repeat(np.arange(3), 40)
    ref = (centres[lab] + rng.normal(size=(120, 8))).astype(np.float32)
    coords = (np.array([[0, 0], [10, 0], [0, 10]])[lab] + rng.normal(size=(120, 2)) * 0.5).astype(np.float32)
    m = UmapMap(ref, coords, UmapConfig(n_neighbors=10))
    new_lab = np.array([0, 1, 2, 2, 1])
    xy = m.transform(centres[new_lab] + rng.normal(size=(5, 8)))
    target = np.array([[0, 0], [10, 0], [0, 10]])[new_lab]
    assert np.abs(xy - target).max() < 2.0
    sha = m.save(tmp_path / "map.npz")
    again = UmapMap.load(tmp_path / "map.npz", sha)
    assert np.array_equal(again.transform(centres), m.transform(centres))
    with pytest.raises(InputError, match="checksum"):
        UmapMap.load(tmp_path / "map.npz", "0" * 64)
    with pytest.raises(InputError, match="dimensions"):
        m.transform(np.zeros((2, 3)))
    # a pickle disguised as a map is refused, never executed
    import pickle

    (tmp_path / "evil.npz").write_bytes(pickle.dumps({"format": "genuine-umap/1"}))
    with pytest.raises(InputError):
        UmapMap.load(tmp_path / "evil.npz")


@pytest.mark.slow
def test_fit_umap_is_seeded_and_separates_clusters():
    from genuine_core.embedding import fit_umap

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    lab = np.repeat(np.arange(3), 60)
    x = (centres[lab] + rng.normal(size=(180, 16))).astype(np.float32)
    cfg = UmapConfig(n_epochs=50, seed=3)
    a, b = fit_umap(x, cfg), fit_umap(x, cfg)
    assert np.array_equal(a.coords, b.coords)
    means = np.stack([a.coords[lab == k].mean(0) for k in range(3)])
    spread = max(a.coords[lab == k].std(0).max() for k in range(3))
    gaps = [np.linalg.norm(means[i] - means[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 3 * spread


def test_model_folders_skip_other_folders(tmp_path):
    good = tmp_path / "gen"
    good.mkdir()
    (good / "config.json").write_text('{"kind": "genuine"}')
    (good / "weights.safetensors").write_bytes(b"x")
    cellpose = tmp_path / "cellpose_synth"
    cellpose.mkdir()
    (cellpose / "config.json").write_text('{"epochs": 300}')
    (cellpose / "weights.safetensors").write_bytes(b"x")
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text('{"kind": "resnet"}')
    assert pipeline.model_folders(tmp_path) == [good]
    assert pipeline.model_folders(good) == [good]
    assert pipeline.model_folders(tmp_path / "absent") == []


def test_scoring_scans_together_equals_one_by_one(tmp_path):
    """Batching nuclei of several scans into one model call must not change any scan's output."""
    from conftest import make_toy_scan

    paths = []
    for seed in (1, 2, 3):
        p = tmp_path / f"s{seed}.tif"
        write_scan_tiff(p, make_toy_scan(seed=seed).image)
        paths.append(p)
    models = [fake_model("a", patch_size=48), fake_model("b", bias=1.0, patch_size=32)]
    seen = []
    predict_a = models[0].predict
    models[0].predict = lambda p: seen.append(len(p)) or predict_a(p)
    models[0].batch_size = 16  # calls padded to a multiple of 8
    together = [pipeline.prepare_scan(p, 48, segmenter=threshold_segmenter) for p in paths]
    together.insert(1, pipeline.prepare_scan(paths[0], 48, segmenter=lambda img: np.zeros(img.shape[:2], np.int32)))
    pipeline.score_scans(together, models)
    for r in together:
        alone = pipeline.process_scan(r.info["path"], models, segmenter=threshold_segmenter
                                      if r.n_nuclei else (lambda img: np.zeros(img.shape[:2], np.int32)))
        for m in ("a", "b"):
            pd.testing.assert_frame_equal(r.outputs[m].table, alone.outputs[m].table)
            if r.n_nuclei:
                assert np.array_equal(r.outputs[m].embeddings, alone.outputs[m].embeddings)
            pd.testing.assert_frame_equal(r.outputs[m].detections, alone.outputs[m].detections, check_dtype=False)
    assert sum(r.n_nuclei for r in together) > 6 and together[1].n_nuclei == 0
    assert all(n % 8 == 0 for n in seen) and seen[0] >= sum(r.n_nuclei for r in together)
