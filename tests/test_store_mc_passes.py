"""The MC-dropout passes of each scoring (``scan_models.mc_samples``, schema step 5): recorded by ingest and
``store score``, re-used by ``store score`` (or given with ``--mc-samples``), shown with the uncertainty."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _store_fakes import fake_model, store_at_version, synthetic_result
from genuine_core.cli import main
from genuine_core.errors import InputError
from genuine_core.pipeline import load_model
from store import export, migrations, registry, samples
from store.db import Store
from store.rescore import model_to_score, score_stored_scans
from store.scans import write_scan_result
from store.uncertainty import describe, passes_by_model, scoring_passes, uncertainty_help


def _scan(store, sha: str, sample: str = "CASE", n: int = 3) -> int:
    """A scan of ``n`` nuclei with 32-px percentile patches, scored by the fake model ``m1`` (passes unknown)."""
    sid = samples.ensure_sample(store, sample, "case")
    mid = registry.register_model(store, fake_model("m1", patch_size=32))
    result = synthetic_result(sha, {"m1": np.linspace(0.2, 0.8, n)}, patch_size=32, seed=n)
    result.normalisation = "percentile"
    return write_scan_result(store, sid, result, {"m1": mid})


def _resnet(folder):
    """A tiny ResNet folder (it has dropout: its uncertainty is an MC-dropout std)."""
    from genuine_core.models import GenuineClassifier, preset_config

    GenuineClassifier.from_config(preset_config("tiny", kind="resnet")).save(folder, metrics={})
    return folder


def _passes(store, model: str) -> dict[int, int | None]:
    df = store.query("SELECT sm.scan_id, sm.mc_samples FROM scan_models sm JOIN models m ON m.id = sm.model_id "
                     "WHERE m.name = ? ORDER BY 1", [model])
    return {int(s): (None if pd.isna(p) else int(p)) for s, p in zip(df["scan_id"], df["mc_samples"])}


def test_each_scoring_records_its_passes_and_store_score_reuses_them(store, tmp_path):
    folder = _resnet(tmp_path / "r")
    a = _scan(store, "a" * 64)
    score_stored_scans(store, load_model(folder, name="r", mc_samples=30), progress=False)
    assert _passes(store, "r") == {a: 30} and _passes(store, "m1") == {a: None}
    b = _scan(store, "b" * 64, sample="CASE2")
    model = model_to_score(store, "r")  # no --mc-samples: as its stored uncertainties
    assert (model.uncertainty_method, model.mc_samples) == ("mc_dropout_std", 30)
    score_stored_scans(store, model, progress=False)
    c = _scan(store, "c" * 64, sample="CASE3")
    score_stored_scans(store, model_to_score(store, "r", mc_samples=5), progress=False)
    assert _passes(store, "r") == {a: 30, b: 30, c: 5}
    assert scoring_passes(store, "r", 10) == 30  # most of its scorings
    assert passes_by_model(store) == {"m1": [None], "r": [5, 30]}
    assert describe("mc_dropout_std", passes_by_model(store)["r"]) == (
        "MC-dropout standard deviation over 5 or 30 passes (differs between scans)")
    assert describe("mc_dropout_std", passes_by_model(store, "CASE2")["r"]) == (
        "MC-dropout standard deviation over 30 passes")
    assert describe("mc_dropout_std", [None]) == "MC-dropout standard deviation (passes not recorded)"
    assert describe("mc_dropout_std", [None, 10]) == (
        "MC-dropout standard deviation over 10 passes (not recorded for some scans)")
    assert describe("entropy", [0]) == "predictive entropy (bits)"
    with pytest.raises(InputError, match=r"--mc-samples must be in \[0, 100\], got 101"):
        model_to_score(store, "r", mc_samples=101)


def test_a_model_without_dropout_records_zero_passes(store, tmp_path):
    from genuine_core.models import GenuineClassifier, preset_config

    GenuineClassifier.from_config(preset_config("tiny", kind="ratio")).save(tmp_path / "ratio", metrics={})
    a = _scan(store, "a" * 64)
    score_stored_scans(store, load_model(tmp_path / "ratio"), progress=False)
    assert _passes(store, "ratio") == {a: 0} and scoring_passes(store, "ratio", 10) == 0


def test_the_sample_export_gives_the_passes_beside_the_uncertainty(store, tmp_path):
    _scan(store, "a" * 64)
    score_stored_scans(store, load_model(_resnet(tmp_path / "r"), name="r", mc_samples=20), progress=False)
    export.export_sample(store, "CASE", tmp_path / "out")
    nuclei = pd.read_csv(tmp_path / "out" / "nuclei.csv")
    assert nuclei["mc_samples__r"].tolist() == [20] * 3 and "uncertainty__r" in nuclei
    md = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "uncertainty (of this sample's nuclei)" in md and "MC-dropout standard deviation over 20 passes |" in md


def test_a_version_4_store_gets_the_column_with_nothing_recorded(tmp_path):
    path = tmp_path / "v4.duckdb"
    conn = store_at_version(path, 4)
    conn.execute("INSERT INTO models (name, kind, patch_size, checksum, uncertainty_method, config) "
                 "VALUES ('old', 'genuine', 8, 'c1', 'mc_dropout_std', '{}')")
    conn.execute("INSERT INTO samples (name, kind) VALUES ('CASE', 'case')")
    conn.execute("INSERT INTO scans (id, sample_id, file_name, sha256, height, width, channel_map, patch_size, "
                 "n_nuclei, n_border_skipped, ingested_at) VALUES (1, 1, 'x.tif', 'sha', 8, 8, '{}', 8, 0, 0, "
                 "current_timestamp)")
    conn.execute("INSERT INTO scan_models (scan_id, model_id, n_predictions) VALUES (1, 1, 0)")
    conn.close()
    assert main(["store", "migrate", "--db", str(path)]) == 0
    with Store(path) as s:
        assert migrations.current_version(s.cursor()) == migrations.LATEST == 10
        assert passes_by_model(s) == {"old": [None]}
        assert describe("mc_dropout_std", passes_by_model(s)["old"]).endswith("(passes not recorded)")


def test_cli_store_score_takes_or_reuses_the_passes(tmp_path, capsys):
    db = tmp_path / "lab.duckdb"
    folder = _resnet(tmp_path / "r")
    with Store(db) as s:
        _scan(s, "a" * 64)
    assert main(["store", "score", str(folder), "--mc-samples", "101", "--db", str(db)]) == 2
    assert capsys.readouterr().err.strip() == "error: --mc-samples must be in [0, 100], got 101"
    assert main(["store", "score", str(folder), "--mc-samples", "7", "--quiet", "--db", str(db)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "r: scored 1 scan(s), 3 nuclei (uncertainty: MC-dropout standard deviation over 7 passes)")
    with Store(db) as s:
        _scan(s, "b" * 64, sample="CASE2")
    assert main(["store", "score", "r", "--quiet", "--db", str(db)]) == 0
    assert "over 7 passes" in capsys.readouterr().out
    with Store(db, read_only=True) as s:
        assert set(_passes(s, "r").values()) == {7}


def test_cli_ingest_records_its_passes_and_a_plain_ingest_reuses_them(tmp_path, capsys):
    from _store_fakes import write_toy_scans
    from conftest import make_toy_scan

    folder = _resnet(tmp_path / "models" / "r")
    scans = write_toy_scans(tmp_path / "scans", 2, make_toy_scan)
    db = tmp_path / "lab.duckdb"
    assert main(["ingest", str(scans[0]), "--sample", "S", "--models", str(folder), "--mc-samples", "4",
                 "--no-umap", "--quiet", "--db", str(db)]) == 0
    assert main(["ingest", str(scans[1]), "--sample", "S", "--models", str(folder), "--no-umap", "--quiet",
                 "--db", str(db)]) == 0
    with Store(db, read_only=True) as s:
        assert list(_passes(s, "r").values()) == [4, 4]


def test_review_names_each_models_uncertainty_with_its_passes():
    preds = pd.DataFrame({"model": ["g", "r", "old"], "uncertainty_method": ["mc_dropout_std", "entropy",
                                                                             "mc_dropout_std"],
                          "mc_samples": [10, 0, np.nan]})
    assert uncertainty_help(preds) == ("uncertainty of the prediction: g: MC-dropout standard deviation over 10 "
                                       "passes; r: predictive entropy (bits); old: MC-dropout standard deviation "
                                       "(passes not recorded)")
