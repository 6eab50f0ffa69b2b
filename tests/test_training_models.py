"""Training with the real model classes (tiny preset): loss goes down, the frozen detector
stays put, and the whole ``genuine train`` / ``genuine evaluate`` path on a hand-made benchmark."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from genuine_core.models import GenuineClassifier, preset_config
from training import modelapi
from training.augment import AugmentConfig, make_generator
from training.datasets import ClassificationData, DetectionData
from training.tasks import ClassifierTask, DetectorTask

P = 32


def _cls_data(n: int, seed: int) -> ClassificationData:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int8)
    x = rng.uniform(0, 0.2, (n, 3, P, P)).astype(np.float32)
    x[:, 1, 8:24, 8:24] += y[:, None, None] * 0.6
    return ClassificationData(x, y, y, y, np.zeros(n, bool), pd.DataFrame(index=range(n)), "train")


def _det_data(n: int, seed: int) -> DetectionData:
    """Patches with 2 red and 1-3 green 4x4 squares, boxes exact."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, P, P), np.float32)
    x[:, 2] = 0.2
    boxes, classes = [], []
    for i in range(n):
        b, c = [], []
        for cls, ch, k in ((1, 0, 2), (2, 1, int(rng.integers(1, 4)))):
            for _ in range(k):
                x0, y0 = rng.integers(1, P - 6, 2)
                x[i, ch, y0:y0 + 4, x0:x0 + 4] = 0.9
                b.append([x0, y0, x0 + 4, y0 + 4])
                c.append(cls)
        boxes.append(np.array(b, np.float32))
        classes.append(np.array(c, np.int64))
    return DetectionData(x, boxes, classes)


def _tiny(kind: str, **kw) -> GenuineClassifier:
    return GenuineClassifier.from_config(preset_config("tiny", kind, patch_size=P, **kw))


@pytest.mark.parametrize("kind", ["genuine", "resnet"])
def test_two_step_training_with_real_models(kind):
    torch.manual_seed(0)
    model = _tiny(kind, dropout=0.0)
    det_before = {k: v.clone() for k, v in model.detector.state_dict().items()} if kind == "genuine" else {}
    task = ClassifierTask(model, _cls_data(16, 0), _cls_data(8, 1), AugmentConfig.none(), lambda p, m: None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    idx = np.arange(16)
    losses = []
    for _ in range(3):
        model.train()
        loss, _, _ = task.train_batch(idx, make_generator(0))
        losses.append(loss.item())
        if len(losses) < 3:
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert all(math.isfinite(v) for v in losses)
    assert losses[2] < losses[0]
    for k, v in det_before.items():  # the frozen detector did not move
        assert torch.equal(model.detector.state_dict()[k], v), k
    if kind == "genuine":
        assert not model.detector.training  # stays in eval mode while the rest trains


def test_detector_two_steps_loss_decreases():
    torch.manual_seed(0)
    model = _tiny("detector")
    det = modelapi.trainable_detector(model)
    data = _det_data(8, 0)
    task = DetectorTask(det, data, _det_data(4, 1), AugmentConfig.none(), lambda p, m: None)
    opt = torch.optim.SGD(det.parameters(), lr=0.01, momentum=0.9)
    det.train()
    losses = []
    for _ in range(3):
        loss, correct, n = task.train_batch(np.arange(8), make_generator(0))
        assert correct is None and n == 8
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(math.isfinite(v) for v in losses) and losses[2] < losses[0]
    val_loss, _ = task.validate()
    assert math.isfinite(val_loss) and det.training  # validation restores train mode


def test_build_adopts_the_trained_detector(tmp_path):
    det_model = _tiny("detector", seed=5)
    det_model.save(tmp_path / "det", {})
    g = modelapi.build("tiny", "genuine", 1, P, str(tmp_path / "det"))
    for k, v in det_model.detector.state_dict().items():
        assert torch.equal(g.detector.state_dict()[k], v)
    assert all(not p.requires_grad for p in g.detector.parameters())
    r = modelapi.build("tiny", "resnet", 1, P, None, encoder={"width": 4})
    assert r.config.encoder.width == 4
    from genuine_core.errors import InputError

    with pytest.raises(InputError):
        modelapi.build("cpu", "resnet", 0, 48, None)  # patch size mismatch
    with pytest.raises(InputError):
        modelapi.build("tiny", "genuine", 0, P, None)


def test_init_starts_from_a_trained_folder_and_checks_kind_and_size(tmp_path):
    from genuine_core.errors import InputError
    from training.train import RunSpec, _start_model

    det_model = _tiny("detector", seed=5)
    det_model.save(tmp_path / "det", {})
    _tiny("resnet").save(tmp_path / "res", {})
    spec = RunSpec(kind="detector", preset="tiny", out=str(tmp_path / "ft"), init=str(tmp_path / "det"))
    started = _start_model(spec, P, "percentile")
    for k, v in det_model.state_dict().items():
        assert torch.equal(started.state_dict()[k], v)
    fresh = _start_model(RunSpec(kind="detector", preset="tiny", out=str(tmp_path / "new")), P, "percentile")
    assert not all(torch.equal(fresh.state_dict()[k], v) for k, v in det_model.state_dict().items())
    with pytest.raises(InputError, match="not 'resnet'"):
        _start_model(RunSpec(kind="resnet", preset="tiny", init=str(tmp_path / "det")), P, "percentile")
    with pytest.raises(InputError, match="px"):
        _start_model(spec, 2 * P, "percentile")
    with pytest.raises(InputError, match="architecture"):
        _start_model(RunSpec(kind="resnet", preset="tiny", init=str(tmp_path / "res"), encoder={"width": 4}), P,
                     "percentile")
    with pytest.raises(InputError, match="no model folder"):
        _start_model(RunSpec(kind="detector", preset="tiny", init=str(tmp_path / "missing")), P, "percentile")
    resumed = RunSpec(kind="detector", preset="tiny", out=str(tmp_path / "ft"), init=str(tmp_path / "missing"),
                      resume=True)  # init records where the run started; the weights come from the checkpoint
    assert resumed.init == str(tmp_path / "missing")


def test_genuine_init_keeps_the_detector_named_by_detector(tmp_path):
    from training.train import RunSpec, _start_model

    _tiny("detector", seed=5).save(tmp_path / "det_a", {})
    new_det = _tiny("detector", seed=6)
    new_det.save(tmp_path / "det_b", {})
    old = modelapi.build("tiny", "genuine", 1, P, str(tmp_path / "det_a"))
    old.save(tmp_path / "gen", {})
    spec = RunSpec(kind="genuine", preset="tiny", out=str(tmp_path / "ft"), init=str(tmp_path / "gen"),
                   detector=str(tmp_path / "det_b"))
    started = _start_model(spec, P, "percentile")
    for k, v in new_det.detector.state_dict().items():
        assert torch.equal(started.detector.state_dict()[k], v), k
    for k, v in old.encoder.state_dict().items():
        assert torch.equal(started.encoder.state_dict()[k], v), k
    assert all(not p.requires_grad for p in started.detector.parameters())


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-true_logit))).astype(float)
    t = modelapi.fit_temperature(true_logit * 3.0, y)  # over-confident by 3x
    assert t == pytest.approx(3.0, rel=0.1)


# ------------------------------------------------------------------ end to end (slow)
@pytest.mark.slow
def test_train_and_evaluate_end_to_end(tmp_path, monkeypatch):
    """genuine train (detector, genuine with beta, resnet, ratio) + genuine evaluate on a small real benchmark."""
    from genuine_core.cli import main
    from genuine_core.synth.benchmark import make_benchmark

    bench = tmp_path / "bench"
    make_benchmark(bench, seed=0, size="tiny")
    monkeypatch.chdir(tmp_path)
    common = ["--preset", "tiny", "--data", str(bench), "--epochs", "2", "--threads", "1"]
    assert main(["train", "--kind", "detector", "--out", "m/det", *common]) == 0
    det_metrics = json.loads((tmp_path / "m/det/metrics.json").read_text())
    # one count threshold per class, each the best of its validation scan
    thr = GenuineClassifier.from_folder(tmp_path / "m/det").config.detector.count_threshold
    assert len(thr) == 3 and list(thr) == det_metrics["count_threshold"]
    for t, (name, scan) in zip(thr, det_metrics["count_threshold_scan"].items()):
        assert scan[f"{t:.2f}"] == max(scan.values()), name
    assert main(["train", "--kind", "genuine", "--detector", "m/det", "--beta", "0.2", "--out", "m/gen", *common]) == 0
    assert main(["train", "--kind", "resnet", "--out", "m/res", *common]) == 0
    assert main(["train", "--kind", "ratio", "--out", "m/ratio", *common]) == 0
    tc = json.loads((tmp_path / "m/gen/train_config.json").read_text())
    assert tc["beta"] == 0.2 and tc["epochs_run"] == 2 and tc["kind"] == "genuine"
    metrics = json.loads((tmp_path / "m/gen/metrics.json").read_text())
    assert {"sensitivity", "specificity", "n_positive", "n_negative", "temperature"} <= set(metrics)
    hist = json.loads((tmp_path / "m/gen/history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    # an existing model is not overwritten by accident; --resume --overwrite trains a finished one on
    assert main(["train", "--kind", "resnet", "--out", "m/res", *common]) == 2
    more = ["train", "--kind", "resnet", "--out", "m/res", *common[:-4], "--epochs", "3", "--threads", "1", "--resume"]
    assert main(more) == 2
    assert main([*more, "--overwrite"]) == 0
    hist = json.loads((tmp_path / "m/res/history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    GenuineClassifier.from_folder(tmp_path / "m/gen")  # checksums still verify
    rc = main(["evaluate", "--models", "m/gen", "m/res", "m/det", "m/ratio", "--data", str(bench),
               "--out", "rep", "--probe-n", "2"])
    assert rc == 0
    res = json.loads((tmp_path / "rep/evaluation.json").read_text())
    assert [m["kind"] for m in res["models"]] == ["genuine", "resnet", "detector", "ratio"]
    assert len(res["models"][0]["probe_count"]["x"]) == 36
    md = (tmp_path / "rep/evaluation.md").read_text()
    assert "Table 1" in md and "Table 3" in md and "fig4_mycn_count.png" in md
