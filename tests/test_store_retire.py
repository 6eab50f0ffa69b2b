"""Retiring a model: it keeps everything it stored but scores no new scan (``genuine store retire-model``).

After an upgrade the old models' folders hold retrained weights and read patches normalised otherwise; their
predictions must stay (past cases were signed with them), yet they must no longer block ingest or ``store check``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pytest

from _store_fakes import fake_model, store_at_version, synthetic_result
from genuine_core.cli import main
from genuine_core.errors import InputError, ModelLoadError, StoreError
from genuine_core.pipeline import models_normalisation
from store import export, ingest, migrations, registry, rescore, samples
from store.check import check_store, retired_model_notes
from store.db import Store
from store.events import store_events
from store.scans import write_scan_result
from store.summary import sample_summaries


def _model(name: str, normalisation: str = "spot_flux", folder: str | None = None):
    fake = fake_model(name)
    return dataclasses.replace(fake, normalisation=normalisation, folder=folder,
                               config={**fake.config, "patch_normalisation": normalisation})


def _saved(folder, seed: int, name: str = "old"):
    """A fake model whose folder holds real saved (tiny ratio) weights."""
    from genuine_core.models import build_model, preset_config, save_model
    from genuine_core.models.folder import folder_digest

    save_model(build_model(preset_config("tiny", kind="ratio", seed=seed)), folder)
    return dataclasses.replace(fake_model(name), folder=str(folder), checksum=folder_digest(folder))


def _scan(store, sha: str, models: list, sample: str = "CASE", ingested=None) -> int:
    sid = samples.ensure_sample(store, sample, "case")
    mids = {m.name: registry.register_model(store, m) for m in models}
    probs = {m.name: np.linspace(0.1, 0.9, 4) for m in models}
    scan = write_scan_result(store, sid, synthetic_result(sha, probs), mids)
    if ingested is not None:
        store.execute("UPDATE scans SET ingested_at = ? WHERE id = ?", [ingested, scan])
    return scan


def _actions(store) -> list[tuple]:
    df = store_events(store)
    return list(zip(df["action"], df["subject"], df["by_user"], strict=True))


# -- store functions ------------------------------------------------------------------------------------------


def test_retire_and_reinstate_are_logged_and_a_repeat_is_refused(store, tmp_path):
    old = _saved(tmp_path / "old", seed=0)
    _scan(store, "a" * 64, [old])
    registry.retire_model(store, "old", by="ann")
    rec = registry.list_models(store).iloc[0]
    assert rec["retired_by"] == "ann" and not np.isnat(np.datetime64(rec["retired_at"]))
    with pytest.raises(StoreError, match=r"model 'old' is already retired on .* by ann; nothing changed"):
        registry.retire_model(store, "old", by="bob")
    registry.reinstate_model(store, "old", by="bob")
    with pytest.raises(StoreError, match="model 'old' is not retired"):
        registry.reinstate_model(store, "old", by="bob")
    with pytest.raises(StoreError, match="no model named 'nope'"):
        registry.retire_model(store, "nope", by="bob")
    assert _actions(store)[1:] == [("retire model", "old", "ann"), ("reinstate model", "old", "bob")]
    assert store_events(store)["identity"].tolist() == [old.checksum] * 3
    assert registry.list_models(store)["retired_at"].isna().all()


def test_a_retired_model_keeps_its_predictions_and_reinstating_checks_its_folder(store, tmp_path):
    old = _saved(tmp_path / "old", seed=0)
    _scan(store, "a" * 64, [old])
    before = store.scalar("SELECT count(*) FROM predictions")
    registry.retire_model(store, "old", by="ann")
    assert store.scalar("SELECT count(*) FROM predictions") == before == 4
    _saved(tmp_path / "old", seed=1)  # the upgrade shipped retrained weights into the same folder
    with pytest.raises(StoreError, match=r"model 'old' not reinstated: .* holds other weights than registered.*"
                                         r"store relocate-model old NEW_FOLDER"):
        registry.reinstate_model(store, "old", by="ann")
    (tmp_path / "old").rename(tmp_path / "gone")
    with pytest.raises(ModelLoadError, match="model 'old' not reinstated: model folder not found"):
        registry.reinstate_model(store, "old", by="ann")
    assert registry.retired(store, "old") is not None  # refused: still retired
    _saved(tmp_path / "kept" / "old", seed=0)  # the copy the lab kept aside
    registry.relocate_model(store, "old", tmp_path / "kept" / "old", by="ann")
    registry.reinstate_model(store, "old", by="ann")
    assert registry.retired(store, "old") is None


def test_reinstating_a_model_that_reads_other_patches_than_the_active_ones_is_refused(store, tmp_path):
    old = _saved(tmp_path / "old", seed=0)  # a tiny ratio model: 'percentile' patches, as before 2026-12-03
    _scan(store, "a" * 64, [old])
    registry.retire_model(store, "old", by="ann")
    _scan(store, "b" * 64, [_model(n, folder=f"/models/{n}") for n in ("new_a", "new_b")], sample="CASE2")
    with pytest.raises(StoreError) as exc:
        registry.reinstate_model(store, "old", by="ann")
    assert str(exc.value) == (
        "model 'old' not reinstated: it reads 'percentile' patches, the active model(s) new_a, new_b read "
        "'spot_flux' ones, and ingest cuts a scan one way for all its models; keep it retired (its predictions "
        f"stay) or first retire those: genuine store retire-model NAME --by NAME --db {store.path}")
    assert registry.retired(store, "old") is not None and _actions(store)[-1][0] == "register model"
    for name in ("new_a", "new_b"):
        registry.retire_model(store, name, by="ann")
    registry.reinstate_model(store, "old", by="ann")  # going back to the old models
    assert registry.retired(store, "old") is None


def test_ingest_leaves_retired_models_out_of_its_models_and_of_the_normalisation_check(store):
    olds = [_model(n, "percentile", folder=f"/models-old/{n}") for n in ("old_a", "old_b")]
    new = _model("new", "spot_flux", folder="/models/new")
    for m in [*olds, new]:
        registry.register_model(store, m)
    by_folder = {m.folder: m for m in [*olds, new]}
    loader = lambda p: by_folder[str(p)]  # noqa: E731
    with pytest.raises(InputError, match=r"^the active registered models read differently normalised patches: "
                                         r"'percentile' \(old_a, old_b\), 'spot_flux' \(new\); retire the models "
                                         r"of one normalisation \(genuine store retire-model NAME --by NAME --db "):
        ingest.resolve_models(store, loader=loader)  # both kinds active: the way out is named
    for m in olds:
        registry.retire_model(store, m.name, by="ann")
    models = ingest.resolve_models(store, loader=loader)
    assert [m.name for m in models] == ["new"] and models_normalisation(models) == "spot_flux"


def test_an_ingest_given_a_retired_model_is_refused_with_the_way_back(store, tmp_path):
    old = _model("old", "percentile")
    _scan(store, "a" * 64, [old])
    registry.retire_model(store, "old", by="ann")
    scan = tmp_path / "x.tif"
    scan.write_bytes(b"not read")
    with pytest.raises(StoreError, match=r"model 'old' is retired on .* by ann: it scores no new scans .*"
                                         r"genuine store reinstate-model old --by NAME"):
        ingest.ingest_files(store, [scan], "CASE2", models=[old, _model("new")], progress=False)
    retrained = dataclasses.replace(_model("old"), checksum="f" * 64)  # the upgrade's weights under the old name
    with pytest.raises(StoreError, match="'old' is registered with other weights .* under another name"):
        ingest.ingest_files(store, [scan], "CASE2", models=[retrained], progress=False)
    assert store.scalar("SELECT count(*) FROM scans") == 1


def test_store_score_refuses_a_retired_model_by_name_or_folder(store, tmp_path):
    old = _saved(tmp_path / "old", seed=0)
    _scan(store, "a" * 64, [old])
    _scan(store, "b" * 64, [_model("new")])
    registry.retire_model(store, "old", by="ann")
    with pytest.raises(StoreError, match="'old' is retired .*reinstate-model old"):
        rescore.model_to_score(store, "old")
    with pytest.raises(StoreError, match="'old' is retired"):
        rescore.score_stored_scans(store, old, progress=False)
    assert store.scalar("SELECT count(*) FROM scan_models WHERE model_id = 1") == 1


def test_store_check_notes_a_retired_models_folder_instead_of_reporting_it(store, tmp_path):
    old = _saved(tmp_path / "old", seed=0)
    _scan(store, "a" * 64, [old])
    _saved(tmp_path / "old", seed=1)
    (problem,) = check_store(store)
    assert "registered model 'old'" in problem and "holds other weights" in problem
    registry.retire_model(store, "old", by="ann")
    assert check_store(store) == []
    (note,) = retired_model_notes(store)
    assert note.startswith("retired model 'old': ") and "holds other weights" in note


def test_store_check_reports_active_models_that_read_differently_normalised_patches(store):
    for m in (_model("old", "percentile", "/old"), _model("new_a", folder="/a"), _model("new_b", folder="/b")):
        registry.register_model(store, m)
    problem = check_store(store)[0]  # then the made-up folders
    assert problem.startswith("the active models read differently normalised patches: 'percentile' (old), "
                              "'spot_flux' (new_a, new_b), so a plain ingest refuses every scan; retire the models "
                              "of one normalisation (genuine store retire-model NAME --by NAME --db ")
    registry.retire_model(store, "old", by="ann")  # the upgrade done: the retired model reads what it likes
    assert not any("normalised" in p for p in check_store(store))  # (the made-up folders are reported)


def test_store_info_gives_each_models_status(tmp_path, capsys):
    import json

    db = tmp_path / "lab.duckdb"
    with Store(db) as s:
        _scan(s, "a" * 64, [_model("old"), _model("new")])
        registry.retire_model(s, "old", by="ann")
    assert main(["store", "info", "--db", str(db)]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert models["new"]["status"] == "active" and models["new"]["patch_normalisation"] == "spot_flux"
    assert models["old"]["status"].startswith("retired on ") and models["old"]["status"].endswith(" by ann")


def test_partly_scored_spares_a_retired_model_the_scans_ingested_after_its_retirement(store):
    old, new = _model("old"), _model("new")
    t0 = datetime(2026, 1, 1)
    _scan(store, "a" * 64, [old, new], ingested=t0)
    _scan(store, "b" * 64, [new], ingested=t0 + timedelta(days=1))  # old has not scored it: partly scored
    flags = sample_summaries(store).set_index("model")["qc_flags"]
    assert "partly scored" in flags["old"] and "partly scored" not in flags["new"]
    registry.retire_model(store, "old", by="ann")
    store.execute("UPDATE models SET retired_at = ? WHERE name = 'old'", [t0 + timedelta(hours=12)])
    summ = sample_summaries(store).set_index("model")
    assert "partly scored" not in summ.at["old", "qc_flags"] and summ["retired"].to_dict() == {"old": True,
                                                                                               "new": False}
    assert summ.at["old", "n_scored"] == 4  # its rows stay
    store.execute("UPDATE models SET retired_at = ? WHERE name = 'old'", [t0 + timedelta(days=2)])
    assert "partly scored" in sample_summaries(store).set_index("model").at["old", "qc_flags"]  # missed it before


def test_the_sample_report_marks_a_retired_model(store, tmp_path):
    _scan(store, "a" * 64, [_model("old"), _model("new")])
    registry.retire_model(store, "old", by="ann")
    export.export_sample(store, "CASE", tmp_path / "report", model="old", prepared_by="Dr. B")
    md = (tmp_path / "report" / "summary.md").read_text(encoding="utf-8")
    assert "| old (retired) |" in md and "| new |" in md
    assert "retired on " in md and " by ann |" in md and "| active |" in md


# -- schema step 4 --------------------------------------------------------------------------------------------


def _version_3_store(path) -> None:
    """A store as the version before retiring wrote it (schema steps 1-3), with a model, a scan and events."""
    conn = store_at_version(path, 3)
    conn.execute("INSERT INTO models (name, kind, patch_size, checksum, config) VALUES ('old', 'genuine', 8, 'c1', "
                 "'{\"kind\": \"genuine\", \"patch_size\": 8}')")
    conn.execute("INSERT INTO store_events (action, subject, identity, by_user, detail) VALUES ('register model', "
                 "'old', 'c1', 'ann', '{}'), ('remove scan', 'x.tif', 'sha', 'bob', '{}')")
    conn.close()


def test_a_version_3_store_migrates_keeping_its_event_log(tmp_path):
    path = tmp_path / "v3.duckdb"
    _version_3_store(path)
    with pytest.raises(duckdb.ConstraintException):  # the old log refuses the new actions
        with duckdb.connect(str(path)) as conn:
            conn.execute("INSERT INTO store_events (action, subject, identity) VALUES ('retire model', 'old', 'c1')")
    assert main(["store", "migrate", "--db", str(path)]) == 0
    with Store(path) as s:
        assert migrations.current_version(s.cursor()) == migrations.LATEST
        ev = store_events(s)
        assert ev["event_id"].tolist() == [1, 2] and ev["action"].tolist() == ["register model", "remove scan"]
        assert ev["by_user"].tolist() == ["ann", "bob"]
        assert registry.list_models(s)["retired_at"].isna().all()
        registry.retire_model(s, "old", by="cy")
        assert store_events(s)["event_id"].tolist() == [1, 2, 3]  # the id sequence goes on
        assert s.scalar("SELECT retired_by FROM models") == "cy"


def test_a_version_1_store_migrates_to_the_latest_in_one_go(tmp_path):
    path = tmp_path / "v1.duckdb"
    conn = store_at_version(path, 1)
    conn.execute("INSERT INTO models (name, kind, patch_size, checksum, config) VALUES ('m', 'genuine', 8, 'c', '{}')")
    conn.close()
    with Store(path) as s:
        assert s.query("SELECT version FROM schema_version ORDER BY version")["version"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        assert store_events(s)["action"].tolist() == ["register model"]  # step 3's backfill survives step 4
        registry.retire_model(s, "m", by="ann")
        assert store_events(s)["action"].tolist() == ["register model", "retire model"]


# -- command line ---------------------------------------------------------------------------------------------


def test_cli_retire_reinstate_and_events(tmp_path, capsys):
    db = tmp_path / "lab.duckdb"
    with Store(db) as s:
        _scan(s, "a" * 64, [_saved(tmp_path / "old", seed=0)])
        _scan(s, "b" * 64, [_model("new", "percentile")], sample="CASE2")
    assert main(["store", "retire-model", "old", "--by", "Ann", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model 'old' retired: it scores no new scans") and "reinstate-model old --by Ann" in out
    assert main(["store", "retire-model", "old", "--by", "Ann", "--db", str(db)]) == 2
    assert "model 'old' is already retired on " in capsys.readouterr().err
    assert main(["store", "score", "old", "--by", "Ann", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "model 'old' is retired on " in err and f"genuine store reinstate-model old --by NAME --db {db}" in err
    _saved(tmp_path / "old", seed=1)  # retrained weights over the old folder
    assert main(["store", "check", "--db", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("note: retired model 'old': ") and out[-1] == f"ok: {db} is consistent"
    assert main(["store", "reinstate-model", "old", "--by", "Bo", "--db", str(db)]) == 2
    assert "not reinstated" in capsys.readouterr().err
    _saved(tmp_path / "old", seed=0)
    assert main(["store", "reinstate-model", "old", "--by", "Bo", "--db", str(db)]) == 0
    assert capsys.readouterr().out.startswith("model 'old' reinstated")
    assert main(["store", "reinstate-model", "old", "--by", "Bo", "--db", str(db)]) == 2
    assert "model 'old' is not retired" in capsys.readouterr().err
    assert main(["store", "events", "--subject", "old", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "retire model" in lines[2] and "Ann" in lines[2] and "reinstate model" in lines[3] and "Bo" in lines[3]
