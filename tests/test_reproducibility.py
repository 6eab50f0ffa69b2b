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


def test_an_evaluation_report_names_its_models_and_benchmark_by_content(bench, detector, tmp_path):
    """evaluation.json records each model's checksum (as the store does) and the benchmark's sha256 with the seed,
    size and command that made it; evaluation.md lists them; two runs differ only in when and how fast."""
    _train(bench, detector, tmp_path / "m")
    reports = []
    for out in ("r1", "r2"):
        assert main(["evaluate", "--models", str(tmp_path / "m"), "--data", str(bench), "--out", str(tmp_path / out),
                     "--probe-n", "2", "--seed", "3", "--quiet"]) == 0
        reports.append(json.loads((tmp_path / out / "evaluation.json").read_text()))
    meta, model = reports[0]["meta"], reports[0]["models"][0]
    assert model["checksum"] == folder_digest(tmp_path / "m")
    assert meta["benchmark"]["sha256"] == data_fingerprint(bench) and meta["probe_seed"] == 3
    assert (meta["benchmark"]["seed"], meta["benchmark"]["size"]) == (4, "tiny")
    assert meta["benchmark"]["command"] == "genuine synth benchmark --size tiny --seed 4"
    assert "numpy" in meta["versions"] and "git_commit" in meta["versions"]
    md = (tmp_path / "r1" / "evaluation.md").read_text()
    assert model["checksum"][:12] in md and data_fingerprint(bench)[:12] in md

    def timeless(rep: dict) -> dict:
        rep = json.loads(json.dumps(rep))
        for key in ("generated", "command"):
            rep["meta"].pop(key)
        for m in rep["models"]:
            m.pop("speed")
        return rep

    assert timeless(reports[0]) == timeless(reports[1])


def test_merging_reports_of_benchmarks_with_other_contents_is_refused(bench, tmp_path):
    """Two benchmarks of one seed and size may differ (jitter, normalisation): their reports are not merged."""
    from genuine_core.errors import InputError
    from training.evaluate import merge_results

    def part(sha: str, name: str) -> dict:
        meta = {"benchmark_seed": 4, "benchmark_size": "tiny", "n_test": 24, "n_mixture": 64, "probe_seed": 0,
                "probe_n": 2, "command": "genuine evaluate", "benchmark": {"sha256": sha}}
        return {"meta": meta, "models": [{"name": name, "kind": "resnet", "beta": 0.0}]}

    with pytest.raises(InputError, match="different benchmarks"):
        merge_results([part("a" * 64, "m1"), part("b" * 64, "m2")])
    assert merge_results([part("a" * 64, "m1"), part("a" * 64, "m2")])["meta"]["benchmark"]["sha256"] == "a" * 64
