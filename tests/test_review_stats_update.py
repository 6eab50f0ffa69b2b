"""A change of the trusted models (retire, reinstate, new metrics) rewrites ``review_stats`` in place: the same rows
and numbers as the delete-and-insert rebuild, without deleting and re-adding every row and its index entry."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from store import registry
from store.db import Store
from store.review_stats import rebuild_for_changed, rebuild_review_stats, untrusted_model_ids, update_review_stats
from store.scale import populate_synthetic

WEAK = {"validation": {"sensitivity": 1.0, "specificity": 0.25, "n_positive": 4, "n_negative": 4}}


def _stats(store: Store) -> pd.DataFrame:
    return store.query("SELECT rowid AS row, * FROM review_stats ORDER BY nucleus_id")


def _rebuilt(store: Store) -> pd.DataFrame:
    """What the delete-and-insert rebuild of every scan writes (the way before), rolled back afterwards."""
    cur = store.cursor()
    cur.execute("BEGIN")
    try:
        rebuild_review_stats(cur, [int(r[0]) for r in cur.execute("SELECT id FROM scans").fetchall()])
        return _stats(store).drop(columns="row")
    finally:
        cur.execute("ROLLBACK")


@pytest.fixture()
def store(tmp_path):
    """3,000 nuclei in 12 scans, four models; one model reports entropy, one did not score two scans."""
    with Store(tmp_path / "s.duckdb") as s:
        populate_synthetic(s, n_nuclei=3000, n_models=4, n_samples=4, scans_per_sample=3, n_events=50, seed=3)
        models = s.query("SELECT id FROM models ORDER BY id")["id"].tolist()
        scans = s.query("SELECT id FROM scans ORDER BY id")["id"].tolist()
        with s.transaction() as cur:
            cur.execute("UPDATE models SET uncertainty_method = 'entropy' WHERE id = ?", [models[1]])
            cur.execute("DELETE FROM predictions WHERE model_id = ? AND nucleus_id IN "
                        "(SELECT id FROM nuclei WHERE scan_id IN (?, ?))", [models[3], scans[0], scans[1]])
            cur.execute("DELETE FROM scan_models WHERE model_id = ? AND scan_id IN (?, ?)",
                        [models[3], scans[0], scans[1]])
            rebuild_review_stats(cur, scans)
        yield s


def test_retiring_rewrites_the_review_stats_in_place_as_the_rebuild_would(store):
    before = _stats(store)
    registry.retire_model(store, store.scalar("SELECT name FROM models ORDER BY id LIMIT 1"), by="ann")
    after = _stats(store)
    assert after["row"].tolist() == before["row"].tolist()  # updated, not deleted and inserted again
    assert (after["n_models"] < before["n_models"]).all()  # the retired model scored every scan
    pd.testing.assert_frame_equal(after.drop(columns="row"), _rebuilt(store), check_exact=True)


@pytest.mark.parametrize("model", [1, 3])  # the entropy model; the model that scored 10 of the 12 scans
def test_weak_metrics_update_the_stats_of_the_scans_the_model_scored(store, model):
    mid = int(store.query("SELECT id FROM models ORDER BY id")["id"][model])
    with store.transaction() as cur:
        before = untrusted_model_ids(cur)
        cur.execute("UPDATE models SET metrics = ? WHERE id = ?", [json.dumps(WEAK), mid])
        assert len(rebuild_for_changed(cur, before)) == (12 if model == 1 else 10)
    pd.testing.assert_frame_equal(_stats(store).drop(columns="row"), _rebuilt(store), check_exact=True)
    with store.transaction() as cur:  # and back
        before = untrusted_model_ids(cur)
        cur.execute("UPDATE models SET metrics = '{}' WHERE id = ?", [mid])
        rebuild_for_changed(cur, before)
    pd.testing.assert_frame_equal(_stats(store).drop(columns="row"), _rebuilt(store), check_exact=True)


FIRST = "(SELECT min(nucleus_id) FROM review_stats)"


@pytest.mark.parametrize("damage", [
    "DELETE FROM review_stats WHERE nucleus_id = " + FIRST,  # a scored nucleus without its row
    "DELETE FROM predictions WHERE nucleus_id = " + FIRST,  # a row of a nucleus without predictions
])
def test_rows_that_do_not_match_the_predictions_are_rebuilt_instead(store, damage):
    store.execute(damage)
    with store.transaction() as cur:
        scans = [int(r[0]) for r in cur.execute("SELECT id FROM scans").fetchall()]
        assert not update_review_stats(cur, scans)
        before = untrusted_model_ids(cur)
        cur.execute("UPDATE models SET metrics = ? WHERE id = (SELECT min(id) FROM models)", [json.dumps(WEAK)])
        rebuild_for_changed(cur, before)
    pd.testing.assert_frame_equal(_stats(store).drop(columns="row"), _rebuilt(store), check_exact=True)


@pytest.mark.parametrize("model", [0, 3])  # a model of every scan; the one whose removal leaves 2 scans unscored
def test_removing_a_model_updates_the_review_stats_in_place_as_the_rebuild_would(store, model):
    """remove_model deleted and re-inserted every row of the scans the model scored (as retire did); now in place
    when every scored nucleus keeps a prediction, and rebuilt where nuclei lost their only one."""
    name = store.query("SELECT name FROM models ORDER BY id")["name"][model]
    before = _stats(store)
    registry.remove_model(store, name, by="ann")
    after = _stats(store)
    pd.testing.assert_frame_equal(after.drop(columns="row"), _rebuilt(store), check_exact=True)
    assert after["row"].tolist() == before["row"].tolist()  # same rows: updated, not deleted and inserted again
