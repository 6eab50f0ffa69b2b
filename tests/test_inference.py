"""Batched inference (predict) and temperature calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit

from genuine_core.calibration import apply_temperature, binary_entropy, fit_temperature
from genuine_core.errors import InputError
from genuine_core.inference import DETECTION_COLUMNS, TABLE_COLUMNS, predict
from genuine_core.models import MODEL_KINDS, build_model, preset_config

P = 32


def tiny(kind: str = "genuine", **kw):
    return build_model(preset_config("tiny", kind, **kw))


def patches(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).random((n, 3, P, P), dtype=np.float32)
    x[:, :, :4] = 0  # some background
    return x


def crafted_detections(start: int, stop: int) -> list[dict[str, torch.Tensor]]:
    """Patch i: i % 3 NMI boxes (score 0.9), 2 MYCN (0.8, 0.3), no cluster."""
    out = []
    for i in range(start, stop):
        labels = [1] * (i % 3) + [2, 2]
        scores = [0.9] * (i % 3) + [0.8, 0.3]
        boxes = [[1.0 + j, 2.0, 5.0 + j, 6.0] for j in range(len(labels))]
        out.append({"boxes": torch.tensor(boxes).reshape(-1, 4), "scores": torch.tensor(scores),
                    "labels": torch.tensor(labels, dtype=torch.int64)})
    return out


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_predict_schema(kind):
    model = tiny(kind)
    pred = predict(model, patches(5), batch_size=2, progress=False)
    assert list(pred.table.columns) == TABLE_COLUMNS and len(pred.table) == 5
    assert list(pred.detections.columns) == DETECTION_COLUMNS
    assert pred.embeddings.dtype == np.float32 and pred.embeddings.shape[0] == 5
    t = pred.table
    assert ((t.prob >= 0) & (t.prob <= 1)).all() and set(t["call"].unique()) <= {0, 1}
    assert str(t.det_nmi.dtype) == "Int64"
    assert t.det_mycn.isna().all() == (not model.has_detector)
    assert pred.uncertainty_method == "entropy"


def test_batch_of_one_agrees_with_batch_of_n():
    model = tiny("genuine", seed=2)
    x = patches(7, seed=3)
    a = predict(model, x, batch_size=7, progress=False)
    b = predict(model, x, batch_size=1, progress=False)
    np.testing.assert_allclose(a.table.logit, b.table.logit, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.embeddings, b.embeddings, rtol=1e-4, atol=1e-5)
    pd.testing.assert_frame_equal(a.table[["call", "det_nmi", "det_mycn", "det_cluster"]],
                                  b.table[["call", "det_nmi", "det_mycn", "det_cluster"]])


def test_channels_last_gives_the_same_predictions():
    model = tiny("genuine", seed=6)
    x = patches(5, seed=8)
    a = predict(model, x, channels_last=True, progress=False)
    b = predict(model, x, channels_last=False, progress=False)
    np.testing.assert_allclose(a.table.logit, b.table.logit, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.embeddings, b.embeddings, rtol=1e-4, atol=1e-5)


def test_model_mode_restored_and_fusion_norm_not_updated():
    model = tiny("genuine").train()
    before = model.fusion_norm.running_mean.clone()
    predict(model, patches(4), progress=False)
    assert model.training and not model.detector.training
    assert torch.equal(model.fusion_norm.running_mean, before)


def test_detections_table_and_counts_agree():
    model = tiny("detector")
    n = 5
    seen = [0]

    def fake_detect(x):  # called once per batch, in order
        out = crafted_detections(seen[0], seen[0] + len(x))
        seen[0] += len(x)
        return out

    model.detector.detect = fake_detect
    pred = predict(model, patches(n), batch_size=2, progress=False)
    t = pred.table
    assert t.det_nmi.tolist() == [i % 3 for i in range(n)]
    assert t.det_mycn.tolist() == [1] * n  # the 0.3 box is below the 0.5 count threshold
    assert (t.det_cluster == 0).all()
    # default min_score = count threshold: the table lists exactly the counted boxes, rows offset per batch
    per_row = pred.detections.groupby(["row", "cls"]).size().unstack(fill_value=0)
    assert per_row.reindex(range(n), fill_value=0).get(2, 0).tolist() == [1] * n
    assert pred.detections.row.max() == n - 1 and pred.detections.score.min() >= 0.5
    # the rule: MNA only where MYCN (1) >= 4 x max(NMI, 1) -> never
    assert (t["call"] == 0).all()
    seen[0] = 0
    low = predict(model, patches(n), batch_size=2, min_score=0.0, progress=False)
    assert len(low.detections) == len(pred.detections) + n


def test_temperature_and_threshold_from_config():
    model = tiny("resnet", seed=4)
    x = patches(6)
    base = predict(model, x, progress=False).table
    model.set_calibration(temperature=2.0, threshold=0.3)
    t = predict(model, x, progress=False).table
    np.testing.assert_allclose(t.prob_calibrated, expit(t.logit.astype(np.float64) / 2.0), rtol=1e-5)
    np.testing.assert_allclose(t.prob, base.prob, rtol=1e-6)
    assert (t["call"] == (t.prob >= 0.3)).all()
    np.testing.assert_allclose(t.uncertainty, binary_entropy(t.prob_calibrated), rtol=1e-4)


def test_mc_dropout_uncertainty():
    model = tiny("genuine", dropout=0.5)
    x = patches(6)
    a = predict(model, x, mc_samples=16, seed=1, progress=False)
    b = predict(model, x, mc_samples=16, seed=1, progress=False)
    det = predict(model, x, progress=False)
    assert a.uncertainty_method == "mc_dropout_std"
    assert (a.table.uncertainty > 0).all() and (a.table.uncertainty < 0.5).all()
    np.testing.assert_allclose(a.table.uncertainty, b.table.uncertainty)  # seeded
    np.testing.assert_allclose(a.table.prob, det.table.prob, rtol=1e-6)  # prob stays deterministic
    no_drop = predict(tiny("genuine", dropout=0.0), x, mc_samples=4, progress=False)
    assert no_drop.uncertainty_method == "entropy"


@pytest.mark.parametrize("kind", ["genuine", "resnet"])
def test_a_patchs_mc_uncertainty_does_not_depend_on_the_patches_scored_with_it(kind):
    """Ingest scores consecutive scans together: a nucleus' MC-dropout uncertainty must be the same whether its
    scan was scored alone or with others, and whatever the batch size (the dropout masks were drawn per batch)."""
    model = tiny(kind, dropout=0.5)
    x, others = patches(5, seed=1), patches(7, seed=2)
    alone = predict(model, x, mc_samples=8, seed=3, progress=False).table.uncertainty.to_numpy()
    mixed = predict(model, np.concatenate([others, x]), mc_samples=8, seed=3, batch_size=4, progress=False)
    np.testing.assert_array_equal(mixed.table.uncertainty.to_numpy()[len(others):], alone)
    other_seed = predict(model, x, mc_samples=8, seed=4, progress=False).table.uncertainty.to_numpy()
    assert not np.array_equal(other_seed, alone)


def test_float16_memmap_like_input(tmp_path):
    x = patches(3).astype(np.float16)
    np.save(tmp_path / "p.npy", x)
    mm = np.load(tmp_path / "p.npy", mmap_mode="r")
    pred = predict(tiny("ratio"), mm, progress=False)
    ref = predict(tiny("ratio"), x.astype(np.float32), progress=False)
    np.testing.assert_allclose(pred.table.logit, ref.table.logit, rtol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 3, 16, 16), np.float32), r"\(N, 3, 32, 32\)"),
    (np.zeros((3, 32, 32), np.float32), "shape"),
    (np.zeros((2, 3, 32, 32), np.uint8), "floating point"),
    (np.full((2, 3, 32, 32), np.nan, np.float32), "NaN"),
    (np.full((2, 3, 32, 32), 255.0, np.float32), r"\[0, 1\]"),
])
def test_predict_rejects_bad_patches(bad, match):
    with pytest.raises(InputError, match=match):
        predict(tiny("ratio"), bad, progress=False)


def test_predict_rejects_bad_arguments():
    with pytest.raises(InputError):
        predict(tiny("ratio"), patches(2), batch_size=0)
    with pytest.raises(InputError):
        predict(tiny("ratio"), patches(2), mc_samples=-1)


# ---------------------------------------------------------------- calibration
def synthetic_logits(t_true: float, n: int = 20000, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, n)
    y = (rng.random(n) < expit(z)).astype(int)
    return z * t_true, y  # logits that are over-confident by a factor t_true


def nll(logits, y, t: float) -> float:
    """Mean negative log-likelihood (nats) of 0/1 labels under sigmoid(logits / t)."""
    s = np.asarray(logits) / t
    return float(np.mean(np.logaddexp(0.0, s) - y * s))


@pytest.mark.parametrize("t_true", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_known_temperature(t_true):
    logits, y = synthetic_logits(t_true)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(t_true, rel=0.05)
    assert nll(logits, y, t) <= nll(logits, y, t * 1.2)
    assert nll(logits, y, t) <= nll(logits, y, t / 1.2)


@pytest.mark.parametrize("n", [4, 10, 40])
def test_fit_temperature_stays_finite_on_a_separable_validation_set(n):
    """Every nucleus right with a margin: the plain NLL would push T to its bound and every
    probability to 0 or 1; Platt's targets keep a temperature that leaves doubt."""
    rng = np.random.default_rng(n)
    y = np.arange(n) % 2
    logits = np.where(y == 1, 1.0, -1.0) * rng.uniform(1.0, 4.0, n)
    t = fit_temperature(logits, y)
    assert 0.05 < t < 100
    p = apply_temperature(logits, t)
    assert p.max() < 1 - 1e-4 and p.min() > 1e-4


def test_calibration_input_errors_and_helpers():
    with pytest.raises(InputError, match="both classes"):
        fit_temperature([1.0, 2.0], [1, 1])
    with pytest.raises(InputError):
        fit_temperature([1.0, 2.0], [1])
    with pytest.raises(InputError):
        fit_temperature([1.0, np.inf], [0, 1])
    with pytest.raises(InputError):
        fit_temperature([1.0, 2.0], [0, 2])
    assert binary_entropy([0.5, 1.0, 0.0]).round(6).tolist() == [1.0, 0.0, 0.0]


def test_save_after_predict_round_trips(tmp_path):
    from genuine_core.models import GenuineClassifier

    model = tiny("genuine", seed=9)
    x = patches(4, seed=2)
    before = predict(model, x, progress=False)  # converts weights to channels-last in place
    loaded = GenuineClassifier.from_folder(model.save(tmp_path / "g"))
    after = predict(loaded, x, progress=False)
    np.testing.assert_allclose(after.table.logit, before.table.logit, rtol=1e-5, atol=1e-6)


def test_nested_shared_detections_join_the_outer_memo(monkeypatch):
    """Ingest scores one model per ``score_scans`` call inside one outer block: the detector must run once."""
    from genuine_core.models import detector as detector_module

    genuine, baseline = tiny("genuine"), tiny("detector")
    baseline.load_detector(genuine)
    x = patches(8)
    calls = []
    real = detector_module.SignalDetector._detect
    monkeypatch.setattr(detector_module.SignalDetector, "_detect",
                        lambda self, images: calls.append(1) or real(self, images))
    with detector_module.shared_detections():
        for m in (genuine, baseline):
            with detector_module.shared_detections():
                predict(m, x, batch_size=8, progress=False)
    assert len(calls) == 1
    with detector_module.shared_detections():  # the outer block ended: a new block starts afresh
        predict(genuine, x, batch_size=8, progress=False)
    assert len(calls) == 2


def test_shared_detections_runs_a_shared_detector_once(monkeypatch):
    from genuine_core.models import detector as detector_module

    genuine, baseline = tiny("genuine"), tiny("detector")
    baseline.load_detector(genuine)  # the same frozen detector in both models
    other = tiny("detector", seed=7)  # a different detector: must not be served genuine's result
    x = patches(8)
    alone = {name: predict(m, x, progress=False) for name, m in
             (("genuine", genuine), ("baseline", baseline), ("other", other))}

    calls = []
    real = detector_module.SignalDetector._detect
    monkeypatch.setattr(detector_module.SignalDetector, "_detect",
                        lambda self, images: calls.append(1) or real(self, images))
    with detector_module.shared_detections():
        shared = {name: predict(m, x, batch_size=4, progress=False) for name, m in
                  (("genuine", genuine), ("baseline", baseline), ("other", other))}
    assert len(calls) == 4  # 2 batches for the shared detector + 2 for the other one
    for name in alone:
        pd.testing.assert_frame_equal(shared[name].table, alone[name].table, check_exact=False, atol=1e-5)
    other_counts = shared["other"].table[["det_nmi", "det_mycn", "det_cluster"]]
    pd.testing.assert_frame_equal(other_counts, alone["other"].table[["det_nmi", "det_mycn", "det_cluster"]])
