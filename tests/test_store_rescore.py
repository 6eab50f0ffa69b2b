"""Scoring stored scans with a model registered after them (``store.rescore``, ``genuine store score``)."""

from __future__ import annotations

import numpy as np
import pytest

from _store_fakes import fake_model, fake_predict, synthetic_result
from genuine_core.cli import main
from genuine_core.errors import InputError, StoreError
from genuine_core.pipeline import decode_patch
from store import registry, samples
from store.check import check_store
from store.db import Store
from store.rescore import score_stored_scans, skip_reason, unscored_scans
from store.scans import write_scan_result


def _add(store, sample: str, sha: str, n: int, seed: int = 0) -> int:
    """A scan of ``n`` nuclei (16-px patches) scored by model ``m1``; returns its id."""
    sid = samples.ensure_sample(store, sample, "case")
    mid = registry.register_model(store, fake_model("m1", patch_size=16))
    result = synthetic_result(sha, {"m1": np.random.default_rng(seed).uniform(0, 1, n)}, patch_size=16, seed=seed)
    return write_scan_result(store, sid, result, {"m1": mid})


def _count(store, sql: str, params=None) -> int:
    return int(store.query(sql, params).iloc[0, 0])


def test_a_late_model_scores_every_stored_scan_from_the_stored_patches(store):
    a, b = _add(store, "A", "a" * 64, 5, seed=1), _add(store, "B", "b" * 64, 3, seed=2)
    late = fake_model("late", bias=0.1, patch_size=16)
    assert unscored_scans(store, "late")["id"].tolist() == [a, b]
    seen = []
    done = score_stored_scans(store, late, progress=False, on_scan=lambda o, i, n: seen.append((o.scan_id, i, n)))
    assert [(o.scan_id, o.status, o.n_nuclei) for o in done] == [(a, "scored", 5), (b, "scored", 3)]
    assert seen == [(a, 1, 2), (b, 2, 2)]
    assert unscored_scans(store, "late").empty and not check_store(store)
    # the model's answer on the stored (8-bit PNG) patches, row for row
    rows = store.query("SELECT n.patch_png, p.prob FROM nuclei n JOIN predictions p ON p.nucleus_id = n.id "
                       "JOIN models m ON m.id = p.model_id WHERE m.name = 'late' ORDER BY n.id")
    expected = fake_predict(np.stack([decode_patch(png) for png in rows["patch_png"]]), 0.1).table["prob"]
    np.testing.assert_allclose(rows["prob"].to_numpy(), expected, rtol=1e-6)
    for table in ("embeddings", "detections"):
        assert _count(store, f"SELECT count(DISTINCT nucleus_id) FROM {table} t JOIN models m ON m.id = t.model_id "
                             "WHERE m.name = 'late'") == 8
    assert _count(store, "SELECT min(n_models) FROM review_stats") == 2  # the late model counts in review
    assert score_stored_scans(store, late, progress=False) == []  # nothing left: a second run does nothing


def test_only_one_sample_and_an_unknown_sample(store):
    _add(store, "A", "a" * 64, 4)
    b = _add(store, "B", "b" * 64, 2)
    done = score_stored_scans(store, fake_model("late", patch_size=16), sample="B", progress=False)
    assert [o.scan_id for o in done] == [b]
    assert unscored_scans(store, "late")["sample"].tolist() == ["A"]
    with pytest.raises(InputError, match="no sample named 'C'"):
        score_stored_scans(store, fake_model("late", patch_size=16), sample="C", progress=False)


def test_scans_a_model_cannot_read_are_skipped_with_the_reason(store):
    a = _add(store, "A", "a" * 64, 4)
    done = score_stored_scans(store, fake_model("wide", patch_size=32), progress=False)
    assert [(o.scan_id, o.status) for o in done] == [(a, "skipped")]
    assert "its patches are 16 px, the model needs 32 px" in done[0].line()
    assert _count(store, "SELECT count(*) FROM predictions p JOIN models m ON m.id = p.model_id "
                         "WHERE m.name = 'wide'") == 0
    scan = unscored_scans(store, "wide").iloc[0].to_dict()
    assert "'percentile'" in skip_reason(scan, 16, "percentile") and skip_reason(scan, 16, "spot_flux") == ""


def test_a_name_registered_with_other_weights_is_refused_before_anything_is_written(store):
    _add(store, "A", "a" * 64, 4)
    registry.register_model(store, fake_model("late", patch_size=16))
    with pytest.raises(StoreError, match="registered with other weights"):
        score_stored_scans(store, fake_model("late", bias=0.3, patch_size=16), progress=False)
    assert _count(store, "SELECT count(*) FROM predictions") == 4


def test_an_interrupt_leaves_whole_scans_and_the_rest_is_scored_next_time(store):
    _add(store, "A", "a" * 64, 4)
    b = _add(store, "B", "b" * 64, 3)
    late = fake_model("late", patch_size=16)

    def stop(outcome, i, n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_stored_scans(store, late, progress=False, on_scan=stop)
    assert unscored_scans(store, "late")["id"].tolist() == [b] and not check_store(store)
    assert [o.scan_id for o in score_stored_scans(store, late, progress=False)] == [b]


def _store_file(tmp_path):
    path = tmp_path / "cli.duckdb"
    with Store(path) as s:
        _add(s, "A", "a" * 64, 4)
    return path


def _model_folder(tmp_path, name: str, patch_size: int):
    """A tiny ResNet folder reading ``patch_size``-px ``spot_flux`` patches (as the stored ones are)."""
    from genuine_core.models import GenuineClassifier, preset_config

    cfg = preset_config("tiny", kind="resnet", patch_size=patch_size, patch_normalisation="spot_flux")
    return GenuineClassifier.from_config(cfg).save(tmp_path / name, metrics={})


def test_cli_scores_with_a_registered_name_or_a_folder(tmp_path, capsys):
    path, folder = _store_file(tmp_path), _model_folder(tmp_path, "late", 16)
    assert main(["store", "--db", str(path), "score", str(folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "scan 1 (A: " in out and "scored 4 nuclei" in out and "late: scored 1 scan(s), 4 nuclei" in out
    assert main(["store", "score", "late", "--db", str(path)]) == 0  # now registered: by name, nothing left
    assert "nothing to score: late has scored every stored scan" in capsys.readouterr().out


def test_cli_refuses_unknown_models_stores_and_samples(tmp_path, capsys):
    path = _store_file(tmp_path)
    assert main(["store", "--db", str(path), "score", "nope"]) == 2
    assert "'nope' is neither a model folder nor a registered model (registered: m1)" in capsys.readouterr().err
    assert main(["store", "--db", str(path), "score", "m1"]) == 2  # registered without a folder
    assert "not on this machine" in capsys.readouterr().err
    assert main(["store", "--db", str(tmp_path / "none.duckdb"), "score", "m1"]) == 2
    assert "no such store" in capsys.readouterr().err and not (tmp_path / "none.duckdb").exists()
    assert main(["store", "--db", str(path), "score", str(_model_folder(tmp_path, "late", 16)), "--sample", "B"]) == 2
    assert "no sample named 'B'" in capsys.readouterr().err


def test_cli_ctrl_c_while_the_model_loads_says_what_was_scored(tmp_path, capsys, monkeypatch):
    import store.rescore

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.rescore, "model_to_score", interrupted)
    assert main(["store", "--db", str(_store_file(tmp_path)), "score", "m1"]) == 130
    assert "interrupted: 0 scan(s) scored before the interrupt" in capsys.readouterr().err


def test_cli_exits_1_when_scans_were_skipped(tmp_path, capsys):
    path, folder = _store_file(tmp_path), _model_folder(tmp_path, "wide", 32)
    assert main(["store", "--db", str(path), "score", str(folder), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "skipped, its patches are 16 px, the model needs 32 px" in out and "1 skipped (see above)" in out


def test_a_model_that_can_read_no_scan_is_not_registered(store):
    _add(store, "A", "a" * 64, 4)
    done = score_stored_scans(store, fake_model("wide", patch_size=32), progress=False)
    assert [o.status for o in done] == ["skipped"]
    assert "wide" not in registry.list_models(store)["name"].tolist()  # ingest never meets it later


def test_a_name_taken_by_other_weights_is_refused_when_nothing_is_left_to_score(store):
    _add(store, "A", "a" * 64, 4)  # scored by m1
    with pytest.raises(StoreError, match="registered with other weights"):
        score_stored_scans(store, fake_model("m1", bias=0.5, patch_size=16), progress=False)


def test_duckdb_interrupts_count_as_ctrl_c():
    import duckdb

    from store.db import is_interrupt

    assert is_interrupt(RuntimeError("Query interrupted")) and is_interrupt(duckdb.InterruptException())
    assert is_interrupt(KeyboardInterrupt())
    assert not is_interrupt(RuntimeError("model returned malformed output"))


def test_an_error_a_library_makes_of_ctrl_c_stops_an_ingest_and_exits_130(tmp_path, monkeypatch, capsys):
    """DuckDB may report Ctrl-C in a Python callback as a plain duckdb.Error (then 'transaction is aborted');
    once the command saw SIGINT, such an error stops the batch instead of failing one file and going on."""
    import threading

    import duckdb

    from _store_fakes import threshold_segmenter, write_toy_scans
    from conftest import make_toy_scan
    from genuine_core import interrupts
    from genuine_core.cli import main
    from store import ingest
    from store.db import Store, is_interrupt

    error = duckdb.Error("Traceback ...\nKeyboardInterrupt:")
    assert not is_interrupt(error)  # without Ctrl-C it is an error like any other
    seen = threading.Event()
    monkeypatch.setattr(interrupts, "_SEEN", seen)
    paths = write_toy_scans(tmp_path / "scans", 2, make_toy_scan)

    def write_after_ctrl_c(*args, **kwargs):
        seen.set()  # what the SIGINT handler does before Python raises KeyboardInterrupt
        raise error

    monkeypatch.setattr(ingest, "write_scan_result", write_after_ctrl_c)
    with Store(tmp_path / "s.duckdb") as store, pytest.raises(KeyboardInterrupt):
        ingest.ingest_files(store, paths, "case", models=[fake_model("m1")], progress=False,
                            segmenter=threshold_segmenter)

    def numba_like(args):
        raise SystemError("CPUDispatcher(<function _extend_centers>) returned a result with an exception set")

    monkeypatch.setattr("store.cli_store.run", numba_like)
    assert main(["store", "info", "--db", str(tmp_path / "s.duckdb")]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_removing_a_model_takes_back_everything_it_added(store):
    _add(store, "A", "a" * 64, 5, seed=1)
    _add(store, "B", "b" * 64, 3, seed=2)
    tables = ("predictions", "detections", "embeddings", "scan_models", "review_stats", "models")
    before = {t: store.query(f"SELECT * FROM {t} ORDER BY ALL") for t in tables}
    score_stored_scans(store, fake_model("late", patch_size=16), progress=False)
    plan = registry.plan_model_removal(store, "late")
    assert plan["predictions"] == 8 and plan["scan_models"] == 2 and plan["models"] == 1
    assert registry.remove_model(store, "late") == plan
    for t in tables:
        after = store.query(f"SELECT * FROM {t} ORDER BY ALL")
        assert after.drop(columns=["registered_at"], errors="ignore").equals(
            before[t].drop(columns=["registered_at"], errors="ignore")), t
    assert not check_store(store)
    with pytest.raises(StoreError, match="no model named 'late'"):
        registry.remove_model(store, "late")


def test_cli_remove_model_asks_unless_yes(tmp_path, capsys):
    path = _store_file(tmp_path)
    assert main(["store", "--db", str(path), "score", str(_model_folder(tmp_path, "late", 16)), "--quiet"]) == 0
    assert main(["store", "--db", str(path), "remove-model", "late"]) == 2  # stdin is not a terminal
    # the command to run names this store: without --db it would act on the default one
    assert f"confirm with --yes (genuine store remove-model late --db {path} --yes)" in capsys.readouterr().err
    # the suggestion keeps --by: copied, it records the name given, not the login
    assert main(["store", "--db", str(path), "remove-model", "late", "--by", "Dr. Eve"]) == 2
    assert f"(genuine store remove-model late --by 'Dr. Eve' --db {path} --yes)" in capsys.readouterr().err
    assert main(["store", "--db", str(path), "remove-model", "late", "--yes"]) == 0
    assert "removed model 'late': 4 embeddings" in capsys.readouterr().out
    with Store(path, read_only=True) as s:
        assert registry.list_models(s)["name"].tolist() == ["m1"]
    assert (tmp_path / "late" / "config.json").is_file()  # the folder is left alone


def test_ingest_names_the_way_out_when_a_registered_folder_is_gone(tmp_path):
    import shutil

    from genuine_core.errors import ModelLoadError
    from genuine_core.pipeline import load_model
    from store.ingest import resolve_models

    path = _store_file(tmp_path)
    with Store(path) as s:
        registry.register_model(s, load_model(_model_folder(tmp_path, "late", 16)))
        shutil.rmtree(tmp_path / "late")
        with pytest.raises(ModelLoadError, match=r"registered model 'late': .*remove-model late --db .*cli.duckdb\)"):
            resolve_models(s)


def test_a_model_stored_without_mc_dropout_scores_more_scans_the_same_way(store, tmp_path):
    """Scans ingested with --mc-samples 0 hold entropies: scoring or ingesting more with the default setting
    adds entropies too (loading it with MC dropout would be refused as another kind of uncertainty)."""
    import dataclasses

    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.pipeline import load_model
    from store.rescore import model_to_score

    folder = GenuineClassifier.from_config(preset_config("tiny", kind="resnet")).save(tmp_path / "res", metrics={})
    entropy = load_model(folder, mc_samples=0)
    assert load_model(folder).uncertainty_method == "mc_dropout_std" != entropy.uncertainty_method
    sid = samples.ensure_sample(store, "s", "case")
    mid = registry.register_model(store, dataclasses.replace(entropy, predict=lambda p: fake_predict(p, 0.0)))
    write_scan_result(store, sid, synthetic_result("a" * 64, {"res": [0.9, 0.1]}), {"res": mid})
    assert registry.stored_uncertainty(store, "res") == "entropy"
    for given in (str(folder), "res"):  # a folder or the registered name
        assert model_to_score(store, given).uncertainty_method == "entropy"
    assert [m.uncertainty_method for m in registry.as_stored(store, [load_model(folder)])] == ["entropy"]
