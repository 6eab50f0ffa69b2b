"""Training building blocks: augmentations, early stopping, training-set format, loop, resume."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from genuine_core.errors import InputError
from training.augment import AugmentConfig, _geometric_image, augment_batch, augment_detection, make_generator, \
    random_blur, random_crosstalk, remove_mycn_signals, transform_boxes
from training.datasets import ClassificationData, flip_labels
from training.early_stopping import EarlyStopping
from training.labelled import LabelledPatches
from training.loop import TrainConfig, TrainingError, fit
from training.tasks import ClassifierTask


def _nucleus_batch(n=4, p=32, seed=0) -> torch.Tensor:
    """Round 'nuclei' with a few bright spots; zero outside a disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:p, :p]
    c = (p - 1) / 2  # symmetric under flips
    disc = ((yy - c) ** 2 + (xx - c) ** 2) < (p / 2.5) ** 2
    x = rng.uniform(0.1, 0.9, (n, 3, p, p)).astype(np.float32) * disc
    return torch.from_numpy(x)


# ------------------------------------------------------------------ augmentations
def test_augment_keeps_shape_range_and_zero_background():
    x = _nucleus_batch(8)
    out = augment_batch(x, AugmentConfig(p_affine=0.0, noise_std=0.2, intensity=(0.5, 3.0)), make_generator(1))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    outside = x.amax(dim=1, keepdim=True).expand_as(x) == 0
    # without the affine, flips map the centred disc onto itself: background stays exactly 0
    assert float(out[outside].abs().max()) == 0.0
    # and the input is not modified in place
    assert torch.equal(x, _nucleus_batch(8))


def test_augment_is_seeded_and_does_something():
    x = _nucleus_batch(6)
    cfg = AugmentConfig()
    a = augment_batch(x, cfg, make_generator(3))
    b = augment_batch(x, cfg, make_generator(3))
    c = augment_batch(x, cfg, make_generator(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)
    full = augment_batch(x, cfg, make_generator(5))
    assert float(full.min()) >= 0.0 and float(full.max()) <= 1.0


def test_augment_with_blur_and_bleed_through_off_repeats_the_stream_from_before_they_existed():
    from dataclasses import replace

    from training.augment import photometric, random_affine, random_flips

    x = _nucleus_batch(4)
    cfg = replace(AugmentConfig(), p_blur=0.0, crosstalk=0.0)
    before, gen = x.float(), make_generator(7)  # the pipeline before blur and bleed-through: affine, flips, photometric
    before = photometric(random_flips(random_affine(before, cfg, gen), cfg, gen), cfg, gen, drop_channels=True)
    assert torch.equal(augment_batch(x, cfg, make_generator(7)), before)


def test_augment_none_is_identity():
    x = _nucleus_batch(3)
    assert torch.allclose(augment_batch(x, AugmentConfig.none(), make_generator(0)), x)


def test_blur_smooths_inside_the_nucleus_and_keeps_background_zero():
    x = _nucleus_batch(4)
    cfg = AugmentConfig(p_blur=1.0, blur_sigma=(1.5, 1.5))
    out = random_blur(x, cfg, make_generator(0))
    outside = x.amax(dim=1, keepdim=True).expand_as(x) == 0
    assert float(out[outside].abs().max()) == 0.0
    # deep inside the disc (away from its edge) a blur keeps the mean and shrinks pixel-to-pixel variation
    core = x[:, :, 14:18, 14:18], out[:, :, 14:18, 14:18]
    assert float(core[1].std()) < 0.6 * float(core[0].std())
    assert abs(float(core[1].mean()) - float(core[0].mean())) < 0.05
    assert torch.equal(random_blur(x, AugmentConfig(p_blur=0.0), make_generator(0)), x)


def test_crosstalk_bleeds_dapi_into_mycn_and_mycn_into_nmi():
    x = torch.zeros(2, 3, 8, 8)
    x[:, 2] = 0.5  # DAPI only
    x[1, 1] = 0.4  # and MYCN in the second patch
    out = random_crosstalk(x, AugmentConfig(crosstalk=0.1), make_generator(2))
    assert torch.equal(out[:, 2], x[:, 2])
    green_gain = out[:, 1] - x[:, 1]
    assert float(green_gain.min()) >= 0.0 and 0.0 < float(green_gain.max()) <= 0.05 + 1e-6
    assert float(out[0, 0].abs().max()) == 0.0  # no MYCN in patch 0: nothing bleeds into NMI
    assert 0.0 < float(out[1, 0].max()) <= 0.1 * float(out[1, 1].max()) + 1e-6


def test_channel_drop_zeroes_red_and_blue_only():
    x = _nucleus_batch(5)
    cfg = AugmentConfig(p_hflip=0, p_vflip=0, p_affine=0, intensity=(1, 1), p_drop_red=1.0, p_drop_blue=1.0,
                        noise_std=0, p_blur=0, crosstalk=0)
    out = augment_batch(x, cfg, make_generator(0))
    assert float(out[:, 0].abs().max()) == 0.0 and float(out[:, 2].abs().max()) == 0.0
    assert torch.allclose(out[:, 1], x[:, 1])


def test_remove_mycn_signals_flattens_green_of_chosen_patches_only():
    x = _nucleus_batch(6)
    x[:, 1, 14:17, 14:17] = 1.0  # a bright MYCN spot in every nucleus
    out, chosen = remove_mycn_signals(x, 0.5, make_generator(1))
    assert 0 < int(chosen.sum()) < 6
    inside = x.amax(1) > 0
    for i in range(6):
        if chosen[i]:
            median = float(x[i, 1][inside[i]].median())
            assert float(out[i, 1].max()) == pytest.approx(median)  # spot gone, background kept up to the median
            assert torch.equal(out[i, [0, 2]], x[i, [0, 2]]) and torch.equal(out[i] == 0, x[i] == 0)
        else:
            assert torch.equal(out[i], x[i])
    assert float(x[:, 1].max()) == 1.0  # input untouched


def test_remove_mycn_signals_off_draws_no_random_numbers():
    gen = make_generator(0)
    out, chosen = remove_mycn_signals(_nucleus_batch(3), 0.0, gen)
    assert not chosen.any()
    assert torch.equal(torch.rand(2, generator=gen), torch.rand(2, generator=make_generator(0)))


def test_classifier_task_labels_patches_without_mycn_non_mna():
    data = _toy_data(16, 0)
    data.labels[:] = 1
    model = TinyNet()
    task = ClassifierTask(model, data, _toy_data(8, 1), dataclasses.replace(AugmentConfig.none(), p_no_mycn=1.0),
                          lambda path, metrics: None)
    model.forward = lambda x: torch.full((len(x),), -1.0)
    loss, correct, n = task.train_batch(np.arange(16), make_generator(0))
    assert correct == n == 16  # every target became 0: the logit -1 (non-MNA) is right for all
    assert float(loss) == pytest.approx(math.log1p(math.exp(-1)))


@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize("vflip", [False, True])
@pytest.mark.parametrize("rot", [0, 1, 2, 3])
def test_boxes_follow_the_image(hflip, vflip, rot):
    p = 20
    boxes = torch.tensor([[2.0, 3.0, 7.0, 5.0], [10.0, 12.0, 19.0, 20.0]])
    img = torch.zeros(3, p, p)
    for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        img[k, y1:y2, x1:x2] = 1.0  # pixels [x1, x2) x [y1, y2)
    out_img = _geometric_image(img, hflip, vflip, rot)
    out_boxes = transform_boxes(boxes, p, hflip, vflip, rot)
    for k in range(2):
        ys, xs = torch.nonzero(out_img[k], as_tuple=True)
        expect = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        assert out_boxes[k].tolist() == pytest.approx(expect)


def test_augment_detection_consistent_and_empty_boxes_ok():
    x = _nucleus_batch(4, p=24)
    boxes = [torch.tensor([[1.0, 2.0, 5.0, 9.0]]), torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 24.0, 3.0]]),
             torch.zeros(0, 4)]
    imgs, out = augment_detection(x, boxes, AugmentConfig(), make_generator(2))
    assert imgs.shape == x.shape and float(imgs.min()) >= 0 and float(imgs.max()) <= 1
    assert [tuple(b.shape) for b in out] == [(1, 4), (0, 4), (1, 4), (0, 4)]
    for b in out:
        if len(b):
            assert (b[:, 0] <= b[:, 2]).all() and (b[:, 1] <= b[:, 3]).all()
            assert float(b.min()) >= 0 and float(b.max()) <= 24
            # area is preserved by flips and quarter turns
    assert float((out[0][0, 2] - out[0][0, 0]) * (out[0][0, 3] - out[0][0, 1])) == pytest.approx(4 * 7)
    with pytest.raises(ValueError):
        augment_detection(x, boxes[:2], AugmentConfig(), make_generator(2))


def test_augment_detection_blur_and_crosstalk_keep_boxes_and_background():
    x = _nucleus_batch(4, p=24)
    boxes = [torch.tensor([[1.0, 2.0, 5.0, 9.0]]) for _ in range(4)]
    plain = AugmentConfig(p_blur=0, crosstalk=0)
    imgs0, out0 = augment_detection(x, boxes, plain, make_generator(3))
    imgs1, out1 = augment_detection(x, boxes, AugmentConfig(p_blur=1.0), make_generator(3))
    assert all(torch.equal(a, b) for a, b in zip(out0, out1))  # geometry is drawn first: same boxes
    assert not torch.allclose(imgs0, imgs1)
    outside = x.amax(1) == 0  # the disc is symmetric: flips and quarter turns keep this mask
    assert bool(outside.any()) and float(imgs1.amax(1)[outside].max()) == 0.0
    # switched off, blur and crosstalk consume no random numbers (older detector runs repeat exactly)
    again, _ = augment_detection(x, boxes, plain, make_generator(3))
    assert torch.equal(imgs0, again)


def test_augment_config_validation():
    with pytest.raises(ValueError):
        AugmentConfig(p_hflip=1.5)
    with pytest.raises(ValueError):
        AugmentConfig(scale=(1.2, 0.8))
    cfg = AugmentConfig(scale=(0.9, 1.1))
    assert AugmentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_train_cli_augmentation_flags_reach_the_config():
    import argparse

    from training.cli_train import _augment, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = _augment(parser.parse_args(["--blur", "0.9", "--blur-sigma", "0.5", "2.0", "--intensity", "0.7", "1.3",
                                      "--no-mycn", "0.05"]))
    assert (cfg.p_blur, cfg.blur_sigma, cfg.intensity, cfg.p_no_mycn) == (0.9, (0.5, 2.0), (0.7, 1.3), 0.05)
    assert _augment(parser.parse_args([])) == AugmentConfig()
    from training.cli_train import _spec_from_args

    for kind in ("detector", "ratio"):  # they never see the relabelled patches
        with pytest.raises(InputError, match="--no-mycn"):
            _spec_from_args(parser.parse_args(["--kind", kind, "--no-mycn", "0.1"]))
    with pytest.raises(ValueError):
        _augment(parser.parse_args(["--blur-sigma", "2.0", "0.5"]))


# ------------------------------------------------------------------ early stopping
def test_early_stopping_scripted_sequence():
    es = EarlyStopping(patience=3)
    seq = [1.0, 0.8, 0.9, 0.85, 0.79, 0.8, 0.81, 0.82, 0.5]
    stopped_at = None
    for epoch, v in enumerate(seq):
        es.step(v)
        if es.should_stop:
            stopped_at = epoch
            break
    assert stopped_at == 7  # best at epoch 4, then 3 epochs without improvement
    assert es.best_epoch == 4 and es.best == pytest.approx(0.79)
    es2 = EarlyStopping(patience=3)
    es2.load_state_dict(json.loads(json.dumps(es.state_dict())))
    assert es2.should_stop and es2.best == es.best and es2.best_epoch == 4
    with pytest.raises(ValueError):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError):
        EarlyStopping(2).step(float("nan"))


def test_early_stopping_min_delta():
    es = EarlyStopping(patience=2, min_delta=0.1)
    assert es.step(1.0) is True
    assert es.step(0.95) is False  # not enough improvement
    assert es.step(0.85) is True


# ------------------------------------------------------------------ labels and training-set files
def test_flip_labels_rate_and_seed():
    y = np.array([0, 1] * 5000)
    a, fa = flip_labels(y, 0.2, np.random.default_rng(0))
    b, _ = flip_labels(y, 0.2, np.random.default_rng(0))
    assert np.array_equal(a, b)
    assert abs(fa.mean() - 0.2) < 0.02
    assert np.array_equal(a[fa], 1 - y[fa]) and np.array_equal(a[~fa], y[~fa])
    assert not flip_labels(y, 0.0, np.random.default_rng(0))[1].any()
    with pytest.raises(ValueError):
        flip_labels(y, 1.5, np.random.default_rng(0))


def _lp(n=30, p=8) -> LabelledPatches:
    rng = np.random.default_rng(0)
    return LabelledPatches(rng.random((n, 3, p, p)).astype(np.float16), np.arange(n) % 2,
                           label_kind=np.array(["curated"] * n), nucleus_key=np.array([f"s:{i}" for i in range(n)]))


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_labelled_patches_round_trip(tmp_path, suffix):
    lp = _lp().ensure_split(np.random.default_rng(1))
    path = lp.save(tmp_path / f"set{suffix}") if suffix == ".npz" else lp.save_parquet(tmp_path / f"set{suffix}")
    back = LabelledPatches.load(path)
    assert np.array_equal(back.patches, lp.patches) and back.patches.dtype == np.float16
    assert np.array_equal(back.labels, lp.labels)
    assert list(back.split) == list(lp.split) and list(back.nucleus_key) == list(lp.nucleus_key)


def test_labelled_patches_split_is_stratified():
    lp = _lp(100).ensure_split(np.random.default_rng(2))
    for s in ("train", "val", "test"):
        sub = lp.subset(s)
        assert set(sub.labels.tolist()) == {0, 1}
    assert (lp.split == "train").sum() == 80


def test_labelled_patches_bad_input(tmp_path):
    with pytest.raises(InputError):
        LabelledPatches(np.zeros((2, 3, 4, 4), np.float32), np.array([0, 2]))
    with pytest.raises(InputError):
        LabelledPatches(np.zeros((2, 4, 4), np.float32), np.array([0, 1]))
    with pytest.raises(InputError):
        LabelledPatches(np.zeros((2, 3, 4, 4), np.float32), np.array([0, 1]), split=np.array(["train", "dev"]))
    bad = tmp_path / "x.npz"
    np.savez(bad, patches=np.zeros((1, 3, 4, 4)))
    with pytest.raises(InputError):
        LabelledPatches.load(bad)
    # a pickled object array is refused, never unpickled
    evil = tmp_path / "evil.npz"
    np.savez(evil, format=np.array("genuine-labelled-patches/1"), patches=np.zeros((1, 3, 4, 4), np.float32),
             labels=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError):
        LabelledPatches.load(evil)
    with pytest.raises(InputError):
        LabelledPatches.load(tmp_path / "missing.npz")


# ------------------------------------------------------------------ loop with a tiny model
class TinyNet(torch.nn.Module):
    """A small CNN with the classifier interface (logits (N,), save to a folder)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.fc(h).reshape(-1)

    def save(self, path: Path, metrics: dict):
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / "weights.safetensors"))
        (path / "metrics.json").write_text(json.dumps(metrics))


def _toy_data(n, seed, p=12):
    """Class 1 = bright green channel, class 0 = dim green."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int8)
    x = rng.uniform(0, 0.3, (n, 3, p, p)).astype(np.float32)
    x[:, 1] += y[:, None, None] * 0.5
    return ClassificationData(x.astype(np.float16), y, y, y, np.zeros(n, bool), pd.DataFrame(index=range(n)), "train")


def _task(model, seed=0):
    return ClassifierTask(model, _toy_data(64, seed), _toy_data(32, seed + 100), AugmentConfig.none(),
                          lambda path, metrics: model.save(path, metrics))


def test_two_steps_loss_finite_and_decreasing():
    torch.manual_seed(0)
    model = TinyNet()
    task = _task(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    idx = np.arange(32)
    losses = []
    for _ in range(2):
        model.train()
        loss, correct, count = task.train_batch(idx, make_generator(0))
        assert math.isfinite(loss.item()) and 0 <= correct <= count == 32
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.train()
    after, _, _ = task.train_batch(idx, make_generator(0))
    assert after.item() < losses[0]
    assert losses[1] < losses[0]


class ScriptedTask:
    """A task whose validation losses follow a script (to test early stopping in fit)."""

    def __init__(self, val_losses):
        self.model = TinyNet()
        self.val_losses = list(val_losses)
        self.calls = 0
        self.saved: list[dict] = []

    def n_train(self):
        return 8

    def train_batch(self, idx, gen):
        x = torch.rand(len(idx), 3, 6, 6, generator=gen)
        return self.model(x).pow(2).mean(), 0, len(idx)

    def validate(self):
        v = self.val_losses[self.calls]
        self.calls += 1
        return v, 0.5

    def save_model(self, path, metrics):
        self.saved.append({"path": str(path), **metrics})
        self.model.save(Path(path), metrics)


def test_fit_stops_at_the_right_epoch(tmp_path):
    task = ScriptedTask([1.0, 0.7, 0.8, 0.75, 0.71, 0.9, 0.1, 0.1])
    res = fit(task, TrainConfig(epochs=8, patience=3, batch_size=4), tmp_path / "m")
    assert len(res.history) == 5 and res.stopped_early
    assert res.best_epoch == 1 and res.best_val_loss == pytest.approx(0.7)
    assert [h["best"] for h in res.history] == [True, True, False, False, False]
    hist = json.loads((tmp_path / "m" / "history.json").read_text())
    assert [h["val_loss"] for h in hist] == [1.0, 0.7, 0.8, 0.75, 0.71]
    best_saves = [s for s in task.saved if s["status"] == "training"]
    assert [s["epoch"] for s in best_saves] == [1, 2]


def test_fit_rejects_nan_loss(tmp_path):
    task = ScriptedTask([1.0])
    task.train_batch = lambda idx, gen: (torch.tensor(float("nan"), requires_grad=True), 0, len(idx))
    with pytest.raises(TrainingError):
        fit(task, TrainConfig(epochs=1, batch_size=4), tmp_path / "m")


def test_resume_continues_from_checkpoint_and_matches_uninterrupted_run(tmp_path):
    cfg4 = TrainConfig(epochs=4, patience=10, batch_size=16, lr=0.05, seed=3,
                       augment=AugmentConfig(p_affine=0.0))
    torch.manual_seed(0)
    full = TinyNet()
    fit(_task(full), cfg4, tmp_path / "full")

    torch.manual_seed(0)
    part = TinyNet()
    fit(_task(part), TrainConfig.from_dict({**cfg4.to_dict(), "epochs": 2}), tmp_path / "part")
    state = json.loads((tmp_path / "part" / "checkpoint" / "trainer.json").read_text())
    assert state["epoch"] == 1 and len(state["history"]) == 2

    torch.manual_seed(123)  # a fresh process would start from other random weights
    resumed = TinyNet()
    res = fit(_task(resumed), cfg4, tmp_path / "part", resume=True)
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    full_hist = json.loads((tmp_path / "full" / "history.json").read_text())
    assert [h["val_loss"] for h in res.history] == pytest.approx([h["val_loss"] for h in full_hist], rel=1e-5)
    # last-epoch weights agree with the uninterrupted run
    a = load_file(str(tmp_path / "full" / "checkpoint" / "trainer.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoint" / "trainer.safetensors"))
    for k in a:
        if k.startswith("model."):
            assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(TrainingError):
        fit(ScriptedTask([1.0]), TrainConfig(epochs=1), tmp_path / "nothing", resume=True)


def test_train_config_validation_and_round_trip():
    with pytest.raises(ValueError):
        TrainConfig(lr=0)
    with pytest.raises(ValueError):
        TrainConfig(patience=0)
    cfg = TrainConfig(epochs=3, train_per_epoch=100)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("argv, fragment", [
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--epochs", "-1"], "--epochs must be >= 1, got -1"),
    (["--patience", "0"], "--patience must be >= 1, got 0"),
])
def test_train_cli_zero_epochs_is_refused_not_the_preset_default(tmp_path, argv, fragment):
    import argparse

    from training.cli_train import _spec_from_args, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--kind", "resnet", "--preset", "tiny", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    with pytest.raises(InputError, match=fragment):
        _spec_from_args(parser.parse_args([*base, *argv]))
    bench = tmp_path / "bench"  # a benchmark folder as far as the check goes
    bench.mkdir()
    (bench / "nuclei.parquet").write_bytes(b"")
    spec = _spec_from_args(parser.parse_args([*base[:4], "--data", str(bench), "--out", str(tmp_path / "o"),
                                              "--epochs", "1", "--patience", "1"]))
    assert (spec.train.epochs, spec.train.patience) == (1, 1)  # 1 is honoured, not replaced by the preset's
    spec = _spec_from_args(parser.parse_args([*base[:4], "--data", str(bench), "--out", str(tmp_path / "o")]))
    assert (spec.train.epochs, spec.train.patience) == (3, 2)  # no option: the tiny preset's defaults


@pytest.mark.parametrize("argv, line", [
    # NaN noise and crosstalk trained a model on NaN patches; inf ran a whole run into "loss became nan"
    (["--noise", "nan"], "--noise must be >= 0 and finite, got nan"),
    (["--noise", "inf"], "--noise must be >= 0 and finite, got inf"),
    (["--crosstalk", "nan"], "--crosstalk must be in [0, 1], got nan"),
    (["--lr", "inf"], "--lr must be > 0 and finite, got inf"),
    (["--intensity", "1", "inf"], "--intensity must be (low, high) with 0.0 <= low <= high, finite, got (1.0, inf)"),
    # the settings' own names (p_blur, batch_size) were not the options a user typed
    (["--blur", "nan"], "--blur must be in [0, 1], got nan"),
    (["--no-mycn", "2"], "--no-mycn must be in [0, 1], got 2.0"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--momentum", "nan"], "--momentum must be in [0, 1), got nan"),
    (["--max-train", "-5"], "--max-train must be >= 1"),
])
def test_train_cli_refuses_non_finite_settings_naming_the_option(argv, line, tmp_path, capsys):
    from genuine_core.cli import main

    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "nuclei.parquet").write_bytes(b"")
    out = tmp_path / "o"
    assert main(["train", "--kind", "resnet", "--preset", "tiny", "--data", str(bench), "--out", str(out),
                 *argv]) == 2
    assert capsys.readouterr().err.strip() == f"error: {line}"
    assert not out.exists()


def test_train_cli_data_naming_another_file_says_what_is_expected(tmp_path, capsys):
    from genuine_core.cli import main

    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert main(["train", "--kind", "resnet", "--data", str(other), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file but not a training set" in err and "benchmark folder" in err and ".npz/.parquet" in err
    target = tmp_path / "FILE"
    target.write_text("x")
    assert main(["train", "--kind", "resnet", "--data", str(tmp_path), "--out", str(target)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    bench = tmp_path / "bench"  # --out naming a benchmark (or any folder that is not a model's)
    bench.mkdir()
    (bench / "nuclei.parquet").write_bytes(b"")
    (bench / "config.json").write_text("{}")
    for extra in ([], ["--overwrite"]):
        assert main(["train", "--kind", "ratio", "--preset", "tiny", "--data", str(bench), "--out", str(bench),
                     *extra]) == 2
        assert "holds config.json, nuclei.parquet, and is not a model folder" in capsys.readouterr().err
    assert (bench / "config.json").read_text() == "{}"


def test_train_cli_finds_the_shipped_detector_from_any_folder(tmp_path, monkeypatch, capsys):
    from genuine_core.cli import main

    monkeypatch.chdir(tmp_path)  # no models/ here: the default detector is the shipped one
    assert main(["train", "--kind", "genuine", "--preset", "cpu", "--data", "nope", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert "training data nope not found" in err and "no trained detector" not in err


def test_ctrl_c_while_a_checkpoint_is_written_never_leaves_a_half_one(tmp_path, monkeypatch):
    """The checkpoint's model folder is written before the trainer state: an interrupt in between leaves
    no resumable checkpoint after epoch 1, and epoch 1's complete one during epoch 2's."""
    import training.loop as loop
    from training.checkpoint import has_checkpoint

    real, calls = loop.save_checkpoint, []

    def interrupted_at(n):
        def save(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)
        return save

    cfg = TrainConfig(epochs=3, patience=10, batch_size=16, lr=0.05, seed=3, augment=AugmentConfig(p_affine=0.0))
    monkeypatch.setattr(loop, "save_checkpoint", interrupted_at(1))
    with pytest.raises(KeyboardInterrupt):
        fit(_task(TinyNet()), cfg, tmp_path / "first")
    assert not has_checkpoint(tmp_path / "first")
    calls.clear()
    monkeypatch.setattr(loop, "save_checkpoint", interrupted_at(2))
    with pytest.raises(KeyboardInterrupt):
        fit(_task(TinyNet()), cfg, tmp_path / "second")
    assert has_checkpoint(tmp_path / "second")
    assert json.loads((tmp_path / "second" / "checkpoint" / "trainer.json").read_text())["epoch"] == 0


def test_validation_falls_back_to_the_training_labels_when_the_truth_has_one_class():
    """A few curated nuclei may all be truly non-MNA while the curator labelled both classes."""
    from training.train import validation_record

    labels = np.array([0, 1, 0, 1], np.int8)
    logits = np.array([-2.0, 1.5, 0.5, 2.0])

    def val(truth):
        return ClassificationData(np.zeros((4, 3, 8, 8), np.float32), labels, labels, truth, np.zeros(4, bool),
                                  pd.DataFrame(index=range(4)), "val")

    record, ref = validation_record(logits, val(np.zeros(4, np.int8)), 0.0, "truth")
    assert record["labels"] == "auto" and ref.tolist() == labels.tolist()
    assert record["sensitivity"] == 1.0 and record["specificity"] == 0.5
    record, ref = validation_record(logits, val(np.array([0, 1, 1, 1], np.int8)), 0.0, "truth")
    assert record["labels"] == "truth" and ref.tolist() == [0, 1, 1, 1] and record["specificity"] == 1.0
    curated = val(None)
    curated.meta["label_kind"] = "curated"  # a training set exported from reviewers' decisions
    assert validation_record(logits, curated, 0.0, "truth")[0]["labels"] == "curated"


def test_train_config_records_the_kind_of_labels_the_data_has(tmp_path):
    """A model trained on a curated export says so (``label: curated``), not the --label option's default."""
    from training.train import RunSpec, trained_label_kind, train_model

    data = _lp(40, 32)
    data.save(tmp_path / "curated.npz")
    spec = RunSpec(kind="resnet", preset="tiny", data=str(tmp_path / "curated.npz"), out=str(tmp_path / "m"),
                   train=TrainConfig(epochs=1, threads=1, augment=AugmentConfig.none()))
    train_model(spec)
    assert json.loads((tmp_path / "m" / "train_config.json").read_text())["label"] == "curated"

    def meta(**cols):
        return ClassificationData(np.zeros((2, 3, 8, 8), np.float32), np.array([0, 1], np.int8), None, None,
                                  np.zeros(2, bool), pd.DataFrame(cols, index=range(2)), "train")

    assert trained_label_kind(meta(), "auto") == "auto"  # a benchmark's automatic labels
    assert trained_label_kind(meta(label_kind=["curated", "auto"]), "auto") == "auto+curated"
    assert trained_label_kind(meta(label_kind=["curated", "curated"]), "truth") == "truth"


def test_train_warns_when_its_validation_says_the_model_should_not_be_trusted(tmp_path, capsys, monkeypatch):
    """The rule that gates registration on the Models page, said at the end of a command-line run."""
    from types import SimpleNamespace

    import training.train
    from genuine_core.cli import main

    weak = {"n_positive": 3, "n_negative": 3, "sensitivity": 1.0, "specificity": 0.0}
    good = {"n_positive": 40, "n_negative": 60, "sensitivity": 0.95, "specificity": 0.97}
    for validation, warned in ((weak, True), (good, False)):
        monkeypatch.setattr(training.train, "train_model", lambda spec, v=validation: {
            "out": str(spec.out), "wall_seconds": 1.0, "epochs_run": 1,
            "metrics": {"validation": v, "sensitivity": v["sensitivity"], "specificity": v["specificity"]}})
        monkeypatch.setattr("training.cli_train._spec_from_args",  # the options are checked elsewhere
                            lambda args: SimpleNamespace(out=tmp_path / "m", kind="resnet"))
        assert main(["train", "--kind", "resnet", "--data", str(tmp_path / "data.npz"), "--out",
                     str(tmp_path / "m")]) == 0
        err = capsys.readouterr().err
        assert ("validation says it should not be trusted: only 3 MNA nuclei" in err
                and "validation specificity 0.000: it misses most non-MNA nuclei" in err) == warned


@pytest.mark.parametrize("command", [["synth", "field", "--out", "o"], ["train-cellpose", "--out", "o"],
                                     ["evaluate", "--out", "o"], ["umap", "--model", "m"], ["demo"]])
def test_a_negative_seed_is_a_usage_error_in_every_command(command, tmp_path, capsys, monkeypatch):
    from genuine_core.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main([*command, "--seed", "-1"])
    assert stop.value.code == 2
    assert "argument --seed: must be a non-negative integer, got '-1'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["umap"], ["store", "events"], ["synth", "probe", "--out", "x"]])
def test_an_unknown_option_is_reported_with_the_usage_of_the_command_given(command, capsys):
    from genuine_core.cli import main

    with pytest.raises(SystemExit) as stop:
        main([*command, "--bogus"])
    err = capsys.readouterr().err
    name = " ".join(c for c in command if not c.startswith("-") and c != "x")
    assert stop.value.code == 2 and err.startswith(f"usage: genuine {name} ")
    assert f"genuine {name}: error: unrecognized arguments: --bogus" in err


def test_merge_refuses_a_json_that_is_no_evaluation(tmp_path, capsys):
    from genuine_core.cli import main

    other = tmp_path / "config.json"
    other.write_text('{"kind": "resnet"}')
    assert main(["evaluate", "--merge", str(other), "--out", str(tmp_path / "r")]) == 2
    assert "is not an evaluation.json written by genuine evaluate" in capsys.readouterr().err
    image = tmp_path / "scan.tif"  # said "cannot read ...: 'utf-8' codec can't decode byte 0xc2 in position 42"
    image.write_bytes(b"II*\x00\x08\x00\x00\x00\xc2\xff\xfe")
    assert main(["evaluate", "--merge", str(image), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {image} is not an evaluation.json written by genuine "
                                               "evaluate (not text)")
    assert main(["evaluate", "--merge", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path} is a folder; give its evaluation.json"
    assert not (tmp_path / "r").exists()


def test_a_file_given_as_a_model_folder_is_called_a_file(tmp_path, capsys):
    # 'model folder not found: x' of a file that is there (e.g. relocate-model NAME weights.safetensors)
    from genuine_core.models.folder import ModelLoadError, verify_folder

    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=f"^{re.escape(str(weights))} is a file, not a model folder$"):
        verify_folder(weights)


def test_a_merge_keeps_the_reports_notes_unless_notes_are_given(tmp_path):
    """Re-rendering the shipped report from its own JSON must not drop its Notes section."""
    from genuine_core.cli import main

    shipped = Path(__file__).resolve().parents[1] / "reports" / "evaluation.json"
    notes = json.loads(shipped.read_text())["notes"]
    assert len(notes) > 3
    merge = ["evaluate", "--merge", str(shipped), "--shipped", "genuine_cpu"]
    assert main([*merge, "--out", str(tmp_path / "same")]) == 0
    assert json.loads((tmp_path / "same" / "evaluation.json").read_text())["notes"] == notes
    assert "## Notes" in (tmp_path / "same" / "evaluation.md").read_text()
    assert main([*merge, "--note", "only this", "--out", str(tmp_path / "new")]) == 0
    assert json.loads((tmp_path / "new" / "evaluation.json").read_text())["notes"] == ["only this"]


def test_a_merge_refuses_a_model_twice_keeps_the_shipped_model_and_ignores_malformed_notes(tmp_path, capsys):
    from genuine_core.cli import main

    shipped = Path(__file__).resolve().parents[1] / "reports" / "evaluation.json"
    assert main(["evaluate", "--merge", str(shipped), str(shipped), "--out", str(tmp_path / "twice")]) == 2
    assert "is in more than one of the merged reports" in capsys.readouterr().err
    odd = json.loads(shipped.read_text())
    odd["notes"] = "one note as a string"  # hand-edited
    (tmp_path / "odd.json").write_text(json.dumps(odd))
    assert main(["evaluate", "--merge", str(tmp_path / "odd.json"), "--out", str(tmp_path / "r")]) == 0
    merged = json.loads((tmp_path / "r" / "evaluation.json").read_text())
    assert merged["notes"] == [] and merged["acceptance"]["model"] == odd["acceptance"]["model"] == "genuine_cpu"


def test_evaluate_refuses_to_replace_a_report_unless_told(tmp_path, capsys):
    from genuine_core.cli import main

    shipped = Path(__file__).resolve().parents[1] / "reports" / "evaluation.json"
    out = tmp_path / "reports"
    out.mkdir()
    (out / "evaluation.md").write_text("the shipped report")
    merge = ["evaluate", "--merge", str(shipped), "--shipped", "genuine_cpu", "--out", str(out)]
    assert main(merge) == 2
    assert capsys.readouterr().err.strip() == (f"error: --out {out} already holds evaluation.md; pass --overwrite "
                                               "to replace it")
    assert [p.name for p in out.iterdir()] == ["evaluation.md"]
    assert main([*merge, "--overwrite"]) == 0 and (out / "evaluation.md").read_text() != "the shipped report"
    (out / "evaluation.md").unlink()
    (out / "evaluation.json").unlink()
    assert main(merge) == 2  # its figures are the report's files too
    assert "already holds fig4_mycn_count.png" in capsys.readouterr().err


def test_init_from_another_architecture_says_so_in_one_line(tmp_path):
    from genuine_core.models import GenuineClassifier, preset_config
    from training.modelapi import load_weights

    wide = preset_config("tiny", kind="resnet", patch_size=32)
    folder = GenuineClassifier.from_config(dataclasses.replace(wide, encoder=dataclasses.replace(
        wide.encoder, width=wide.encoder.width * 2))).save(tmp_path / "wide", metrics={})
    with pytest.raises(InputError) as err:
        load_weights(GenuineClassifier.from_config(wide), folder)
    assert "another architecture" in str(err.value) and "tensors of other shapes" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--kind", "resnet", "--threads", "1000"], "--threads must be in [1, 256]"),
    (["train", "--kind", "resnet", "--encoder-width", "100000"], "--encoder-width must be in [1, 512]"),
    (["train", "--kind", "resnet", "--encoder-input-size", "100000"], "--encoder-input-size must be in [0, 1024] px"),
    (["train", "--kind", "resnet", "--train-per-epoch", "-5"], "--train-per-epoch must be -1"),
    (["train", "--kind", "resnet", "--crosstalk", "5"], "--crosstalk must be in [0, 1]"),
    (["synth", "field", "--shape", "100000", "100000"], "--shape must be in [64, 8192] px"),
    (["synth", "field", "--n-nuclei", "0"], "--n-nuclei must be in [1, 5000]"),
    (["synth", "benchmark", "--workers", "1000"], "--workers must be in [1, 64]"),
    (["ingest", "x.tif", "--sample", "S", "--mc-samples", "100000000"], "--mc-samples must be in [0, 100]"),
    (["evaluate", "--models", "models/genuine_cpu", "--shipped", "nope"], "--shipped 'nope' is none of"),
    (["evaluate", "--models", "models/genuine_cpu", "models/resnet_cpu", "--shipped", "resnet_cpu"],
     "--shipped 'resnet_cpu' is a resnet model; the targets apply to a GENUINE model"),
])
def test_options_that_would_exhaust_the_machine_or_judge_another_model_are_refused(argv, fragment, tmp_path,
                                                                                  capsys, monkeypatch):
    from genuine_core.cli import main

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    argv = [str(repo / a) if a.startswith("models/") else a for a in argv]
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "nuclei.parquet").write_bytes(b"")
    extra = {"train": ["--preset", "tiny", "--data", str(bench)], "ingest": ["--db", str(tmp_path / "s.duckdb")],
             "evaluate": ["--data", str(bench)]}.get(argv[0], [])
    assert main([*argv, *extra, "--out", str(tmp_path / "o")] if argv[0] != "ingest" else [*argv, *extra]) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "s.duckdb").exists()
