"""Model configs, the four model kinds, the frozen detector, box features and model folders."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from genuine_core.errors import InputError, ModelLoadError
from genuine_core.models import (
    MODEL_KINDS,
    PRESETS,
    DetectorBaseline,
    DetectorConfig,
    EncoderConfig,
    GenuineClassifier,
    GenuineModel,
    ModelConfig,
    RatioBaseline,
    SignalDetector,
    build_model,
    count_detections,
    detections_to_features,
    preset_config,
    rule_logits,
)
from genuine_core.models.folder import (
    CHECKSUM_FILE,
    CONFIG_FILE,
    LEGACY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    folder_digest,
    sha256_file,
)
from genuine_core.rules import is_amplified

P = 32


def spot_patches(rng: np.random.Generator, n: int, n_red: int, n_green: int, size: int = P, sigma: float = 1.2):
    """Patches with Gaussian red/green spots on a blue disc (zero outside), plus their boxes.

    Returns:
        patches ``(n, 3, size, size)`` float32 in [0, 1]; per patch boxes ``(M, 4)`` and
        labels ``(M,)`` (1 red/NMI, 2 green/MYCN).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c, r = (size - 1) / 2, size * 0.42
    disc = (yy - c) ** 2 + (xx - c) ** 2 <= r ** 2
    out = np.zeros((n, 3, size, size), np.float32)
    boxes, labels = [], []
    for i in range(n):
        out[i, 2][disc] = 0.5
        bx, lb = [], []
        for ch, count in ((0, n_red), (1, n_green)):
            for _ in range(count):
                ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0, r * 0.7)
                cy, cx = c + rad * np.sin(ang), c + rad * np.cos(ang)
                out[i, ch] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
                h = 2 * sigma
                bx.append([cx - h, cy - h, cx + h, cy + h])
                lb.append(ch + 1)
        out[i] = np.clip(out[i], 0, 1) * disc
        boxes.append(np.asarray(bx, np.float32).reshape(-1, 4))
        labels.append(np.asarray(lb, np.int64))
    return out, boxes, labels


def tiny(kind: str = "genuine", **kw) -> GenuineClassifier:
    return build_model(preset_config("tiny", kind, **kw))


def det(boxes, scores, labels) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64)}


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_config_json_round_trip(preset, kind):
    cfg = preset_config(preset, kind, seed=7, temperature=1.7)
    back = ModelConfig.from_json(cfg.to_json())
    assert back == cfg
    assert isinstance(back.detector.anchor_sizes[0], tuple)
    assert json.loads(cfg.to_json())["format_version"] == 1


def test_count_features_put_the_detection_counts_before_the_box_features():
    cfg = preset_config("tiny", count_features=True)
    model = build_model(cfg).eval()
    x = torch.rand(3, 3, P, P)
    z, detections = model.features(x)
    assert z.shape == (3, model.encoder.out_dim + 3 + 3 * cfg.top_k * 6) and model.feature_dim == z.shape[1]
    counts = count_detections(detections, cfg.detector.count_threshold)
    assert torch.equal(z[:, model.encoder.out_dim:model.encoder.out_dim + 3], counts.float())
    assert model(x).shape == (3,)
    # the detector baseline has its own count features; the flag changes nothing there
    assert preset_config("tiny", "detector", count_features=True).box_feature_dim == 3 * cfg.top_k * 6
    assert preset_config("cpu").count_features and not preset_config("paper").count_features


def test_nested_boxes_of_one_class_are_dropped_after_nms():
    from genuine_core.models.detector import nested_in_better

    boxes = torch.tensor([[10, 10, 26, 26], [14, 14, 22, 22], [14, 14, 22, 22], [40, 40, 50, 50], [12, 12, 20, 20]],
                         dtype=torch.float32)
    scores = torch.tensor([0.9, 0.6, 0.5, 0.8, 0.7])
    labels = torch.tensor([2, 2, 1, 2, 1])
    # box 1 sits inside box 0 (same class, lower score); box 2 is another class; box 4 overlaps box 2
    # by 36/64 of itself but scores higher, so box 2 goes
    assert nested_in_better(boxes, scores, labels, 0.5).tolist() == [False, True, True, False, False]
    assert nested_in_better(boxes, scores, labels, 0.99).tolist() == [False, True, False, False, False]
    assert nested_in_better(boxes[:1], scores[:1], labels[:1], 0.5).tolist() == [False]


def test_presets_match_the_paper_and_cpu_design():
    paper, cpu = preset_config("paper"), preset_config("cpu")
    assert paper.patch_size == 192 and paper.encoder.arch == "resnet50" and paper.detector.backbone == "resnet50"
    assert paper.detector.returned_layers == (2, 3, 4) and paper.detector.extra_levels == 2
    assert paper.hidden == 100 and cpu.hidden == 100
    assert preset_config().preset == "cpu"
    # cpu anchors must cover FISH signals: the smallest anchor is at most 8 px
    assert min(min(level) for level in cpu.detector.anchor_sizes) <= 8


@pytest.mark.parametrize("bad", [
    {"kind": "svm"}, {"threshold": 1.5}, {"temperature": 0.0}, {"top_k": 0}, {"patch_size": 8},
    {"dropout": 1.0}, {"hidden": 0}, {"detector_head": "magic"},
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        preset_config("tiny").replace(**bad)


def test_sub_configs_validate():
    with pytest.raises(ValueError, match="anchor_sizes"):
        DetectorConfig(returned_layers=(1, 2), anchor_sizes=((4,),))
    with pytest.raises(ValueError, match="returned_layers"):
        DetectorConfig(returned_layers=(3, 2))
    with pytest.raises(ValueError, match="stages"):
        EncoderConfig(stages=5)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")


def test_from_dict_rejects_unknown_keys():
    d = preset_config("tiny").to_dict()
    d["encoder"]["pretrained_url"] = "http://example.org/w.pth"
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict(d)


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_shape_contracts(kind):
    model = tiny(kind).eval()
    x = torch.rand(5, 3, P, P)
    logits = model(x)
    assert logits.shape == (5,) and logits.dtype == torch.float32
    emb = model.embed(x)
    assert emb.ndim == 2 and emb.shape[0] == 5
    logits2, emb2 = model(x, return_embedding=True)
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(emb2, emb)
    out = model.infer(x)
    assert (out.detections is not None) == model.has_detector
    with pytest.raises(InputError, match=r"\(N, 3, 32, 32\)"):
        model(torch.rand(2, 3, P + 4, P + 4))
    with pytest.raises(InputError):
        model(torch.rand(3, P, P))


def test_genuine_feature_and_embedding_dims():
    cfg = preset_config("tiny")
    model = build_model(cfg).eval()
    x = torch.rand(3, 3, P, P)
    z, _ = model.features(x)
    assert z.shape == (3, model.encoder.out_dim + 3 * cfg.top_k * 6)
    assert model.embed(x).shape == (3, cfg.hidden)
    concat = build_model(cfg.replace(embedding="concat")).eval()
    assert concat.embed(x).shape == (3, model.feature_dim)


def test_same_seed_same_weights_different_seed_differs():
    a, b, c = tiny(seed=3), tiny(seed=3), tiny(seed=4)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        torch.testing.assert_close(va, vb)
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values())
               if va.is_floating_point() and va.numel() > 1)


# ---------------------------------------------------------------- frozen detector
def test_genuine_detector_is_frozen_through_training_step():
    model = tiny("genuine")
    model.train()
    assert not model.detector.training
    assert all(not m.training for m in model.detector.modules())
    assert model.encoder.training and model.dropout.training
    assert all(not p.requires_grad for p in model.detector.parameters())
    before_det = {k: v.clone() for k, v in model.detector.state_dict().items()}
    before_enc = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.rand(6, 3, P, P), torch.tensor([0, 1, 0, 1, 1, 0.0])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after_det = model.detector.state_dict()
    for k, v in before_det.items():
        assert torch.equal(v, after_det[k]), f"detector tensor {k} changed"  # incl. BN running stats
    assert any(not torch.equal(v, model.encoder.state_dict()[k]) for k, v in before_enc.items()
               if v.is_floating_point())
    model.train()  # called again: still eval
    assert not model.detector.training


def test_detector_trains_with_torchvision_targets():
    cfg = preset_config("tiny")
    detector = SignalDetector(cfg.detector, cfg.patch_size).train()
    x, boxes, labels = spot_patches(np.random.default_rng(0), 3, 2, 3)
    targets = [{"boxes": torch.from_numpy(b), "labels": torch.from_numpy(lab)} for b, lab in zip(boxes, labels)]
    targets[2] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}  # empty patch is fine
    losses = detector(torch.from_numpy(x), targets)
    assert set(losses) == {"classification", "bbox_regression"}
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert detector.retinanet.head.classification_head.cls_logits.weight.grad.abs().sum() > 0


def test_detector_does_not_resize_patches():
    cfg = preset_config("tiny")
    detector = SignalDetector(cfg.detector.replace(score_thresh=0.0), cfg.patch_size)
    images, _ = detector.retinanet.transform(list(torch.rand(2, 3, P, P)))
    assert images.tensors.shape[-2:] == (P, P) and images.image_sizes == [(P, P), (P, P)]
    dets = detector.detect(torch.rand(2, 3, P, P))
    assert len(dets) == 2 and all(len(d["boxes"]) > 0 for d in dets)
    assert all((d["labels"] >= 1).all() and (d["labels"] <= 3).all() for d in dets)
    assert all((d["boxes"] >= 0).all() and (d["boxes"] <= P).all() for d in dets)


def test_load_detector_into_genuine():
    donor = tiny("detector", seed=11)
    model = tiny("genuine", seed=12)
    model.load_detector(donor)
    for k, v in donor.detector.state_dict().items():
        assert torch.equal(v, model.detector.state_dict()[k])
    assert all(not p.requires_grad for p in model.detector.parameters())
    other = build_model(preset_config("tiny", "detector").replace(top_k=2))  # same detector config: fine
    model.load_detector(other.detector)
    wrong = SignalDetector(DetectorConfig(width=4, fpn_channels=8, anchor_sizes=((4,), (8,))), P)
    with pytest.raises(ValueError, match="detector config differs"):
        model.load_detector(wrong)
    with pytest.raises(ValueError, match="no detector"):
        model.load_detector(tiny("resnet"))


# ---------------------------------------------------------------- box features and counts
def test_detections_to_features_order_padding_and_normalisation():
    dets = [
        det([[0, 0, 4, 4], [8, 8, 16, 16], [2, 2, 6, 6], [1, 1, 3, 3], [5, 5, 9, 9]],
            [0.3, 0.9, 0.5, 0.7, 0.2], [2, 2, 2, 1, 0]),  # label 0 (background slot) is ignored
        det([], [], []),
    ]
    f = detections_to_features(dets, top_k=2, patch_size=16)
    assert f.shape == (2, 3 * 2 * 6)
    rows = f[0].reshape(3, 2, 6)
    # NMI: one box, then a zero row
    torch.testing.assert_close(rows[0, 0], torch.tensor([1 / 16, 1 / 16, 3 / 16, 3 / 16, 1.0, 0.7]))
    assert torch.all(rows[0, 1] == 0)
    # MYCN: the two best of three by score, in score order
    torch.testing.assert_close(rows[1, 0], torch.tensor([0.5, 0.5, 1.0, 1.0, 2.0, 0.9]))
    torch.testing.assert_close(rows[1, 1], torch.tensor([2 / 16, 2 / 16, 6 / 16, 6 / 16, 2.0, 0.5]))
    assert torch.all(rows[2] == 0)  # no clusters
    assert torch.all(f[1] == 0)
    assert detections_to_features([], 3, 16).shape == (0, 54)


def test_count_detections_threshold():
    dets = [det([[0, 0, 1, 1]] * 5, [0.9, 0.6, 0.4, 0.8, 0.95], [1, 2, 2, 3, 2]), det([], [], [])]
    assert count_detections(dets, 0.5).tolist() == [[1, 2, 1], [0, 0, 0]]
    assert count_detections(dets, 0.3).tolist() == [[1, 3, 1], [0, 0, 0]]
    # one threshold per class (NMI, MYCN, cluster)
    assert count_detections(dets, (0.95, 0.3, 0.85)).tolist() == [[0, 3, 0], [0, 0, 0]]


def test_per_class_count_thresholds_validate_and_round_trip():
    cfg = preset_config("tiny")
    per_class = cfg.replace(detector=dataclasses.replace(cfg.detector, count_threshold=[0.25, 0.3, 0.45]))
    assert per_class.detector.count_threshold == (0.25, 0.3, 0.45)
    assert per_class.detector.count_thresholds == (0.25, 0.3, 0.45)
    assert cfg.detector.count_thresholds == (cfg.detector.count_threshold,) * 3
    assert ModelConfig.from_json(per_class.to_json()) == per_class
    for bad in ((0.3, 0.4), (0.3, 0.4, 1.5), ("a", 0.4, 0.5)):
        with pytest.raises(ValueError, match="count_threshold"):
            DetectorConfig(count_threshold=bad)


# ---------------------------------------------------------------- baselines
def test_rule_logits_follow_cohn_rule():
    counts = torch.tensor([[2, 8, 0], [2, 7, 0], [0, 4, 0], [0, 3, 0], [3, 1, 1], [1, 0, 0], [4, 16, 0], [2, 0, 2]])
    logits = rule_logits(counts)
    expected = is_amplified(counts[:, 0].numpy(), counts[:, 1].numpy(), counts[:, 2].numpy())
    assert expected.tolist() == [1, 0, 1, 0, 1, 0, 1, 1]
    assert ((logits > 0).numpy().astype(int) == expected).all()
    assert (logits.abs() >= 0.5).all()
    assert logits[6] == pytest.approx(0.5) and logits[1] == pytest.approx(-1.5)
    torch.testing.assert_close(rule_logits(counts, scale=2.0), 2 * logits)


def test_detector_baseline_rule_on_known_counts():
    model = tiny("detector").eval()
    box = [4.0, 4.0, 8.0, 8.0]
    known = [(2, 8, 0), (2, 5, 0), (1, 1, 1), (0, 0, 0)]
    crafted = []
    for nmi, mycn, cl in known:
        labels = [1] * nmi + [2] * mycn + [3] * cl + [2, 1]  # + two low-score boxes, not counted
        scores = [0.9] * (nmi + mycn + cl) + [0.2, 0.3]
        crafted.append(det([box] * len(labels), scores, labels))
    model.detector.detect = lambda x: crafted[: len(x)]
    out = model.infer(torch.rand(4, 3, P, P))
    counts = DetectorBaseline.counts_from_features(out.features)
    assert counts.tolist() == [list(k) for k in known]
    assert (out.logits > 0).tolist() == [True, False, True, False]


def test_detector_baseline_learned_head_has_dropout_and_hidden_embedding():
    model = tiny("detector", detector_head="learned").eval()
    assert model.has_dropout
    assert model.embed(torch.rand(2, 3, P, P)).shape == (2, model.config.hidden)
    assert not tiny("detector").has_dropout


def test_ratio_baseline_fits_threshold_on_spot_patches():
    rng = np.random.default_rng(1)
    neg, _, _ = spot_patches(rng, 20, n_red=2, n_green=2)
    pos, _, _ = spot_patches(rng, 20, n_red=2, n_green=10)
    x = np.concatenate([neg, pos])
    y = np.array([0] * 20 + [1] * 20)
    model = tiny("ratio")
    ratio = model.fit_threshold(x, y)
    lr = model.log_ratios(x).numpy()
    assert lr[:20].max() < np.log(ratio) < lr[20:].min()
    assert 1.0 < ratio < 5.0
    calls = (model(torch.from_numpy(x)) > 0).numpy()
    assert (calls == y.astype(bool)).all()
    with pytest.raises(InputError, match="both classes"):
        model.fit_threshold(x[:20], y[:20])
    with pytest.raises(InputError):
        model.fit_threshold(x, y[:-1])


# ---------------------------------------------------------------- model folders
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_save_load_round_trip(tmp_path, kind):
    model = tiny(kind, seed=5).eval()
    model.set_calibration(temperature=1.8, threshold=0.4)
    folder = model.save(tmp_path / kind, metrics={"val_loss": np.float32(0.25), "n": np.int64(3)})
    assert {p.name for p in folder.iterdir()} == {CONFIG_FILE, WEIGHTS_FILE, "metrics.json", CHECKSUM_FILE}
    loaded = GenuineClassifier.from_folder(folder)
    assert type(loaded) is type(model)
    assert loaded.config == model.config and loaded.config.temperature == 1.8
    assert loaded.metrics == {"val_loss": 0.25, "n": 3}
    sd = model.state_dict()
    assert set(loaded.state_dict()) == set(sd)
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, sd[k])
    x = torch.rand(4, 3, P, P)
    torch.testing.assert_close(loaded(x), model(x))
    if model.has_detector:  # self-contained: detector weights are in the folder
        assert any(k.startswith("detector.") for k in sd)


def _rewrite_checksums(folder: Path) -> None:
    names = sorted(p.name for p in folder.iterdir() if p.name != CHECKSUM_FILE)
    (folder / CHECKSUM_FILE).write_text("".join(f"{sha256_file(folder / n)}  {n}\n" for n in names))


def test_tampered_weights_refused(tmp_path):
    folder = tiny("resnet").save(tmp_path / "m")
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="checksum mismatch for weights.safetensors"):
        GenuineClassifier.from_folder(folder)


class _Exploit:
    """Unpickling this would create a marker file (runs code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("target", [WEIGHTS_FILE, LEGACY_WEIGHTS_FILE])
def test_crafted_pickle_is_refused_and_never_executed(tmp_path, target):
    folder = tiny("ratio").save(tmp_path / "m")
    marker = tmp_path / "pwned"
    (folder / WEIGHTS_FILE).unlink()
    with open(folder / target, "wb") as f:
        pickle.dump({"log_threshold": _Exploit(marker)}, f)
    _rewrite_checksums(folder)  # the attacker also fixes the checksums
    with pytest.raises(ModelLoadError, match="refus"):
        GenuineClassifier.from_folder(folder)
    assert not marker.exists()


def test_torch_save_archive_as_legacy_pt_with_object_is_refused(tmp_path):
    folder = tiny("ratio").save(tmp_path / "m")
    marker = tmp_path / "pwned"
    (folder / WEIGHTS_FILE).unlink()
    torch.save({"log_threshold": _Exploit(marker)}, folder / LEGACY_WEIGHTS_FILE)
    _rewrite_checksums(folder)
    with pytest.raises(ModelLoadError, match="weights_only"):
        GenuineClassifier.from_folder(folder)
    assert not marker.exists()


def test_legacy_state_dict_pt_loads(tmp_path):
    model = tiny("resnet", seed=9).eval()
    folder = model.save(tmp_path / "m")
    (folder / WEIGHTS_FILE).unlink()
    torch.save(model.state_dict(), folder / LEGACY_WEIGHTS_FILE)
    _rewrite_checksums(folder)
    loaded = GenuineClassifier.from_folder(folder)
    x = torch.rand(2, 3, P, P)
    torch.testing.assert_close(loaded(x), model(x))


def test_bad_folders_give_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        GenuineClassifier.from_folder(tmp_path / "nope")
    folder = tiny("ratio").save(tmp_path / "m")
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    cfg["kind"] = "genuine"  # weights no longer fit the architecture
    (folder / CONFIG_FILE).write_text(json.dumps(cfg))
    _rewrite_checksums(folder)
    with pytest.raises(ModelLoadError, match="do not match"):
        GenuineClassifier.from_folder(folder)
    cfg["kind"], cfg["exec"] = "ratio", "__import__('os')"
    (folder / CONFIG_FILE).write_text(json.dumps(cfg))
    _rewrite_checksums(folder)
    with pytest.raises(ModelLoadError, match="unknown keys"):
        GenuineClassifier.from_folder(folder)
    (folder / CHECKSUM_FILE).unlink()
    with pytest.raises(ModelLoadError, match="missing checksum.sha256"):
        GenuineClassifier.from_folder(folder)


def test_genuine_model_type():
    assert isinstance(tiny("genuine"), GenuineModel) and isinstance(tiny("ratio"), RatioBaseline)


def test_safetensors_header_length_ending_in_0x80_is_not_mistaken_for_pickle(tmp_path):
    from safetensors.torch import save

    model = tiny("ratio", seed=1)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    for k in range(300):  # find padding that makes the header length's low byte 0x80 (pickle's PROTO)
        data = save(state, metadata={"pad": "x" * k})
        if data[0] == 0x80:
            break
    assert data[0] == 0x80
    folder = model.save(tmp_path / "m")
    (folder / WEIGHTS_FILE).write_bytes(data)
    _rewrite_checksums(folder)
    loaded = GenuineClassifier.from_folder(folder)
    torch.testing.assert_close(loaded.log_threshold, model.log_threshold)


def test_garbage_weights_file_refused(tmp_path):
    folder = tiny("ratio").save(tmp_path / "m")
    (folder / WEIGHTS_FILE).write_bytes(b"not a tensor file at all")
    _rewrite_checksums(folder)
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        GenuineClassifier.from_folder(folder)


def test_cpu_preset_builds_and_runs():
    model = build_model(preset_config("cpu")).eval()
    x = torch.rand(2, 3, 96, 96)
    logits, emb = model(x, return_embedding=True)
    assert logits.shape == (2,) and emb.shape == (2, 100)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 4_000_000  # shipped weights budget: ~12 MB per GENUINE folder


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["genuine", "resnet", "detector"])
def test_paper_preset_builds_and_runs(kind):
    model = build_model(preset_config("paper", kind)).eval()
    with torch.inference_mode():
        logits = model(torch.rand(1, 3, 192, 192))
    assert logits.shape == (1,) and torch.isfinite(logits).all()


def test_kind_mismatch_is_refused():
    with pytest.raises(ValueError, match="kind"):
        GenuineModel(preset_config("tiny", "resnet"))


def test_the_same_weights_save_to_the_same_bytes_and_checksum(tmp_path):
    """A retrained model with the same weights gets the same folder checksum (its identity in the store and the
    reports): safetensors wrote its header metadata in a random order, so equal weights saved to other bytes."""
    model = tiny("ratio", seed=5)
    digests = {folder_digest(model.save(tmp_path / f"m{i}")) for i in range(12)}
    weights = {(tmp_path / f"m{i}" / WEIGHTS_FILE).read_bytes() for i in range(12)}
    assert len(weights) == 1 and len(digests) == 1
