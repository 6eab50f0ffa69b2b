"""Reproducibility records: a model folder and an evaluation report name what made them by content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genuine_core.cli import main
from genuine_core.models import build_model, folder_digest, preset_config
from genuine_core.synth import make_benchmark
from training.datasets import data_fingerprint


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A tiny benchmark (seed 4) as ``genuine synth benchmark`` writes it."""
    out = tmp_path_factory.mktemp("bench") / "tiny"
    make_benchmark(out, seed=4, size="tiny", progress=False, command="genuine synth benchmark --size tiny --seed 4")
    return out


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    """An untrained tiny detector folder (enough for GENUINE to run)."""
    return build_model(preset_config("tiny", "detector", seed=1, patch_normalisation="spot_flux")).save(tmp_path_factory.mktemp("det") / "det")


def _train(bench: Path, detector: Path, out: Path) -> dict:
    assert main(["train", "--preset", "tiny", "--kind", "genuine", "--data", str(bench), "--detector", str(detector),
                 "--out", str(out), "--epochs", "1", "--train-per-epoch", "16", "--threads", "1",
                 "--seed", "2"]) == 0
    return json.loads((out / "train_config.json").read_text())


def test_a_model_folder_names_its_data_detector_and_code_by_content(bench, detector, tmp_path):
    """A stranger with the folder alone can rebuild the benchmark (its seed, size and command) and check they hold
    the same data and detector (sha256, checksum); the code and library versions are recorded too."""
    tc = _train(bench, detector, tmp_path / "m")
    data = tc["inputs"]["data"]
    assert data["sha256"] == data_fingerprint(bench) and data["path"] == str(bench.resolve())
    assert (data["seed"], data["size"], data["generator_version"]) == (4, "tiny", 2)
    assert data["command"] == "genuine synth benchmark --size tiny --seed 4"
    assert data["patch_normalisation"] == "spot_flux" and data["acquisition_jitter"] == 0.0
    assert tc["inputs"]["detector"] == {"path": str(detector.resolve()), "checksum": folder_digest(detector)}
    assert tc["inputs"]["init"] is None
    assert {"genuine", "numpy", "torch", "torchvision", "python", "git_commit", "git_dirty"} <= set(tc["versions"])
    assert tc["torch_threads"] == 1 and tc["train"]["seed"] == 2
