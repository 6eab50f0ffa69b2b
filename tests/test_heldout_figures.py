"""Held-out test figures on the Models page: an evaluation report matched to a registered model by checksum."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

import training.evaluate as ev  # noqa: E402
from test_app import open_page, texts  # noqa: E402
from test_evaluate_report import GreenModel, _fake_predict, make_fake_benchmark  # noqa: E402
from training.report import JSON_NAME, write_report  # noqa: E402


def tiny_folder(path: Path) -> Path:
    """A saved tiny ResNet model folder (a real checksum list)."""
    from genuine_core.models import GenuineClassifier, preset_config

    GenuineClassifier.from_config(preset_config("tiny", kind="resnet")).save(path, metrics={"status": "final"})
    return path


def evaluated(tmp_path: Path, monkeypatch, folder: Path) -> dict:
    """``training.evaluate.evaluate`` of ``folder`` on a hand-made 8-nucleus benchmark (a transparent fake
    model scores it: MNA when the patch is green)."""
    bench = make_fake_benchmark(tmp_path / "bench")
    norm = json.loads((folder / "config.json").read_text()).get("patch_normalisation")
    cfg = json.loads((bench / "config.json").read_text())
    (bench / "config.json").write_text(json.dumps({**cfg, "patch_normalisation": norm}))
    monkeypatch.setattr(ev, "load_model", lambda f: GreenModel(0.3))
    monkeypatch.setattr(ev, "run_predict", _fake_predict)
    return ev.evaluate([folder], bench, probes=False, command="genuine evaluate --models tiny")


def test_evaluation_report_records_the_weights_checksum_and_the_test_splits_identity(tmp_path, monkeypatch):
    # a report named its benchmark but not which nuclei its test figures were measured on
    from genuine_core.models.folder import folder_digest

    folder = tiny_folder(tmp_path / "tiny-resnet")
    res = evaluated(tmp_path, monkeypatch, folder)
    assert res["models"][0]["checksum"] == folder_digest(folder)
    test = res["meta"]["splits"]["test"]
    assert test["split"] == "test" and test["n"] == 8 and len(test["sha256"]) == 64
    assert res["meta"]["splits"]["mixture"]["n"] == 12 and res["meta"]["splits"]["mixture"]["sha256"] != test["sha256"]
    again = evaluated(tmp_path / "again", monkeypatch, folder)  # the same nuclei: the same identity
    assert again["meta"]["splits"]["test"]["sha256"] == test["sha256"]
    write_report(res, tmp_path / "r")
    assert json.loads((tmp_path / "r" / JSON_NAME).read_text())["meta"]["splits"]["test"] == test


def register(db: Path, folder: Path) -> str:
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    model = load_model(folder)
    with open_store(db) as s:
        register_model(s, model)
    return model.name


def heldout_table(at):
    return next(d.value for d in at.dataframe if "against" in d.value.columns)


def test_models_page_shows_the_test_figures_of_the_report_that_names_its_weights(store_copy, tmp_path,
                                                                                 monkeypatch):
    # the page showed no held-out test figures: reports could not be matched to a registered model
    folder = tiny_folder(tmp_path / "tiny-resnet")
    name = register(store_copy[0], folder)
    reports = tmp_path / "reports"
    write_report(evaluated(tmp_path, monkeypatch, folder), reports / "tiny")
    monkeypatch.setenv("GENUINE_REPORTS", str(reports))
    at = open_page("models")
    at.selectbox(key="models_pick").set_value(name).run()
    assert not at.exception, [e.value for e in at.exception]
    table = heldout_table(at)
    truth = table.set_index("against").loc["ground truth"]
    assert truth["nuclei"] == 8 and truth["accuracy"] == "100.00 %" and truth["TNR"] == "100.00 %"
    assert table.set_index("against").loc["automatic (Cohn rule) labels", "accuracy"] == "75.00 %"
    caption = texts(at)
    assert f"From `reports/tiny/{JSON_NAME}` (entry `tiny-resnet`)" in caption
    assert "by `genuine evaluate --models tiny`" in caption and "test split of 8 nuclei, sha256 " in caption
    assert "The model's weights checksum matches the report's." in caption


def test_models_page_says_plainly_when_no_report_matches(store_copy, tmp_path, monkeypatch):
    folder = tiny_folder(tmp_path / "tiny-resnet")
    name = register(store_copy[0], folder)
    reports = tmp_path / "reports"
    res = evaluated(tmp_path, monkeypatch, tiny_folder(tmp_path / "other-weights"))
    for m in res["models"]:
        m.pop("checksum")  # as reports written before evaluate recorded checksums
    write_report(res, reports / "old")
    monkeypatch.setenv("GENUINE_REPORTS", str(reports))
    at = open_page("models")
    at.selectbox(key="models_pick").set_value(name).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("against" in d.value.columns for d in at.dataframe)
    info = " ".join(i.value for i in at.info)
    assert "No evaluation report matches this model's weights" in info and "no held-out test figures" in info
    assert "1 report(s) read (1 of them written before reports recorded model checksums" in info
    assert f"genuine evaluate --models {folder} --data data/bench_cpu" in info


@pytest.mark.parametrize("content", ["not json", json.dumps({"meta": {}, "models": "x"}), json.dumps([1])])
def test_other_json_in_the_reports_folder_is_not_read_as_a_report(tmp_path, content):
    from training.heldout_figures import find_test_figures

    (tmp_path / "x.json").write_text(content)
    found = find_test_figures("c" * 64, tmp_path)
    assert found.matches == [] and found.n_reports == 0
