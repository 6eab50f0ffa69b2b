"""The patch normalisation travels with models, benchmarks, training sets and stored scans,
so that patches and models cut differently never meet."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from _store_fakes import fake_model, store_at_version, synthetic_result, threshold_segmenter, write_toy_scans
from conftest import make_toy_scan
from genuine_core.errors import InputError, StoreError
from genuine_core.models import GenuineClassifier, ModelConfig, preset_config
from genuine_core.patches import extract_patches
from genuine_core.pipeline import models_normalisation, process_scan, score_scans
from store import export, labels, migrations, registry, samples
from store.db import Store
from store.ingest import ingest_files
from store.scans import list_scans, write_scan_result
from test_evaluate_report import make_fake_benchmark
from training import evaluate as ev
from training import modelapi
from training.labelled import LabelledPatches

P = 32


def _model(name: str, normalisation: str, **kw):
    return dataclasses.replace(fake_model(name, **kw), normalisation=normalisation)


def test_model_config_records_it_and_older_configs_read_as_percentile():
    cfg = preset_config("tiny", "resnet", patch_normalisation="spot_flux")
    assert ModelConfig.from_json(cfg.to_json()).patch_normalisation == "spot_flux"
    old = cfg.to_dict()
    del old["patch_normalisation"]
    assert ModelConfig.from_dict(old).patch_normalisation == "percentile"
    with pytest.raises(ValueError, match="normalisation"):
        preset_config("tiny", "resnet", patch_normalisation="zscore")


def test_labelled_patches_keep_it_in_both_file_forms(tmp_path):
    rng = np.random.default_rng(0)
    data = LabelledPatches(rng.uniform(0, 1, (4, 3, 8, 8)).astype(np.float16), np.array([0, 1, 0, 1]),
                           normalisation="spot_flux")
    assert LabelledPatches.load(data.save(tmp_path / "a.npz")).normalisation == "spot_flux"
    assert LabelledPatches.load(data.save_parquet(tmp_path / "a.parquet")).normalisation == "spot_flux"
    np.savez(tmp_path / "old.npz", format=np.array("genuine-labelled-patches/1"), patches=data.patches,
             labels=data.labels)  # written before the field existed
    assert LabelledPatches.load(tmp_path / "old.npz").normalisation == "percentile"
    with pytest.raises(InputError, match="normalisation"):
        LabelledPatches(data.patches, data.labels, normalisation="zscore")


def test_training_takes_the_data_normalisation_and_refuses_a_frozen_detector_cut_otherwise(tmp_path, caplog):
    GenuineClassifier.from_config(preset_config("tiny", "detector", patch_size=P)).save(tmp_path / "det", {})
    with pytest.raises(InputError, match="'percentile'-normalised"):
        modelapi.build("tiny", "genuine", 0, P, str(tmp_path / "det"), normalisation="spot_flux")
    assert modelapi.build("tiny", "genuine", 0, P, str(tmp_path / "det")).config.patch_normalisation == "percentile"
    resnet = modelapi.build("tiny", "resnet", 0, P, None, normalisation="spot_flux")
    assert resnet.config.patch_normalisation == "spot_flux"
    # --init across normalisations: the weights are a starting point, the run keeps the data's
    GenuineClassifier.from_config(preset_config("tiny", "resnet", patch_size=P)).save(tmp_path / "res", {})
    with caplog.at_level(logging.WARNING, logger="training.modelapi"):
        modelapi.load_weights(resnet, tmp_path / "res")
    assert resnet.config.patch_normalisation == "spot_flux"
    assert "trained on 'percentile'-normalised patches" in caplog.text


def test_a_benchmark_reports_it_and_evaluate_refuses_a_model_cut_otherwise(tmp_path):
    from genuine_core.synth import load_benchmark

    bench = make_fake_benchmark(tmp_path / "bench")
    assert load_benchmark(bench, "test").normalisation == "percentile"  # older benchmarks: no key
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"kind": "genuine", "patch_normalisation": "spot_flux"}))
    with pytest.raises(InputError, match="--normalisation spot_flux"):
        ev.evaluate([folder], bench, probes=False)
    cfg = json.loads((bench / "config.json").read_text())
    (bench / "config.json").write_text(json.dumps({**cfg, "patch_normalisation": "zscore"}))
    with pytest.raises(InputError, match="config.json"):
        load_benchmark(bench, "test")


def test_process_scan_cuts_patches_the_models_way(tmp_path):
    toy = make_toy_scan(seed=3)
    path = write_toy_scans(tmp_path / "scans", 1, lambda seed: toy)[0]
    result = process_scan(path, [_model("flux", "spot_flux", patch_size=48)], segmenter=threshold_segmenter)
    assert result.normalisation == "spot_flux"
    from genuine_core.io import read_scan

    image = read_scan(path).image
    masks = threshold_segmenter(image)
    flux = extract_patches(image, masks, size=48, normalisation="spot_flux")
    percentile = extract_patches(image, masks, size=48, normalisation="percentile")
    assert np.array_equal(result.patches, flux.patches)
    assert flux.scale[1] != percentile.scale[1]  # the toy scan has enough spots to differ


def test_models_cut_differently_are_refused_together():
    with pytest.raises(InputError, match=r"a \(percentile\), b \(spot_flux\)"):
        models_normalisation([_model("a", "percentile"), _model("b", "spot_flux")])
    assert models_normalisation([]) == "spot_flux"  # new patches are cut the shipped models' way
    result = dataclasses.replace(synthetic_result("a" * 64, {"x": np.array([0.2, 0.8])}), normalisation="percentile")
    with pytest.raises(ValueError, match="expects 'spot_flux'"):
        score_scans([result], [_model("b", "spot_flux", patch_size=8)])


def test_ingest_records_it_and_the_curated_export_carries_it(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    paths = write_toy_scans(tmp_path / "scans", 1, make_toy_scan)
    with pytest.raises(InputError, match="differently normalised"):
        ingest_files(store, paths, "mixed", models=[_model("a", "percentile"), _model("b", "spot_flux")],
                     progress=False, segmenter=threshold_segmenter)
    assert store.scalar("SELECT count(*) FROM samples") == 0  # refused before anything was written
    ingest_files(store, paths, "fluxcase", models=[_model("flux", "spot_flux")], progress=False,
                 segmenter=threshold_segmenter)
    assert list_scans(store)["patch_normalisation"].tolist() == ["spot_flux"]
    sid = samples.ensure_sample(store, "oldcase", "case")
    mids = {"p": registry.register_model(store, _model("p", "percentile"))}
    old = dataclasses.replace(synthetic_result("b" * 64, {"p": np.array([0.2, 0.9])}), normalisation="percentile")
    write_scan_result(store, sid, old, mids)
    ids = store.query("SELECT n.id FROM nuclei n JOIN scans c ON c.id = n.scan_id ORDER BY c.id, n.id")["id"]
    labels.record_label_event(store, int(ids.iloc[0]), 1, "ann")
    assert export.curated_training_set(store).normalisation == "spot_flux"
    labels.record_label_event(store, int(ids.iloc[-1]), 0, "ann")
    with pytest.raises(StoreError, match="normalised differently"):
        export.curated_training_set(store)
    assert export.curated_training_set(store, sample="oldcase").normalisation == "percentile"
    store.close()


def test_a_version_1_store_migrates_and_its_scans_read_as_percentile(tmp_path):
    path = tmp_path / "old.duckdb"
    conn = store_at_version(path, 1)
    conn.execute("INSERT INTO samples (id, name, kind) VALUES (1, 's', 'case')")
    conn.execute("INSERT INTO scans (id, sample_id, file_name, sha256, height, width, channel_map, patch_size, "
                 "n_nuclei, n_border_skipped, ingested_at) VALUES (1, 1, 'a.tif', 'x', 8, 8, '{}', 96, 0, 0, now())")
    conn.close()
    with Store(path) as store:
        assert migrations.current_version(store.cursor()) == migrations.LATEST
        assert list_scans(store)["patch_normalisation"].tolist() == ["percentile"]
