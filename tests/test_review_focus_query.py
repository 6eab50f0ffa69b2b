"""The Review queue focused on one model finds that model's predictions by id, not by joining the models table:
the same pages and counts as the join, without the flag filter becoming a condition of the nucleus join."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from store import review
from store.db import Store
from store.scale import populate_synthetic

#: the focus query as it was: a join with models (the reference the new query must match row for row)
_OLD_AGG_ONE = """
WITH agg AS (
    SELECT r.nucleus_id, r.sample_id, r.scan_id, r.auto_label, p.prob_calibrated AS prob, p.uncertainty,
           r.spread, r.n_models, r.min_call <> r.max_call AS models_disagree,
           p.uncertainty >= CASE WHEN m.uncertainty_method = 'entropy' THEN $ent ELSE $mc END AS high_unc,
           abs(p.prob_calibrated - 0.5) < $margin AS low_conf,
           p.call AS min_focus_call, p.call AS max_focus_call
    FROM review_stats r
    JOIN predictions p ON p.nucleus_id = r.nucleus_id
    JOIN models m ON m.id = p.model_id AND m.name = $model
    {scope}
)"""
_PAGE = """
    SELECT * FROM scored WHERE $include_reviewed OR curated_value IS NULL
    ORDER BY informativeness DESC, nucleus_id LIMIT $limit OFFSET $offset
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """2,000 nuclei in 4 samples, four models (one reporting entropy, 0-1 bits), 400 label events."""
    with Store(tmp_path_factory.mktemp("focus") / "s.duckdb") as s:
        populate_synthetic(s, n_nuclei=2000, n_models=4, n_samples=4, scans_per_sample=2, n_events=400, seed=5)
        s.execute("UPDATE models SET uncertainty_method = 'entropy' WHERE id = (SELECT max(id) FROM models)")
        s.execute("UPDATE predictions SET uncertainty = uncertainty * 5 WHERE model_id = (SELECT max(id) FROM models)")
        yield s


def _old_page(store, model, sample, flags, include_reviewed, offset) -> pd.DataFrame:
    scope = review._SCOPE_SAMPLE if sample else review._SCOPE_ALL
    sql = _OLD_AGG_ONE.replace("{scope}", scope) + review._REST + _PAGE
    return store.query(sql, review._params(sql, model, sample, flags, review.REVIEW_CONFIG,
                                           include_reviewed=include_reviewed, limit=50, offset=offset))


@pytest.mark.parametrize("flags", [None, ("high_uncertainty",), ("auto_mismatch", "low_confidence")])
@pytest.mark.parametrize("include_reviewed", [False, True])
def test_a_focus_page_is_the_one_the_models_join_gave(store, flags, include_reviewed):
    models = store.query("SELECT name FROM models ORDER BY id")["name"].tolist()
    one = store.scalar("SELECT name FROM samples ORDER BY id LIMIT 1")
    for model in models:
        for sample in (None, one):
            for offset in (0, 150):
                new = review.review_queue(store, sample=sample, model=model, flags=flags,
                                          include_reviewed=include_reviewed, offset=offset)
                old = _old_page(store, model, sample, flags, include_reviewed, offset)
                assert offset or sample or len(new) == 50
                pd.testing.assert_frame_equal(new, old, check_exact=True)


def test_focus_progress_and_an_unknown_model_are_as_before(store):
    model = store.scalar("SELECT max(name) FROM models")
    sql = _OLD_AGG_ONE.replace("{scope}", "") + review._REST + (
        "SELECT count(*), count(curated_value), count(*) FILTER (WHERE curated_value = 'exclude') FROM scored")
    old = store.cursor().execute(sql, review._params(sql, model, None, None, review.REVIEW_CONFIG)).fetchall()[0]
    got = review.review_progress(store, model=model)
    assert (got["total"], got["reviewed"], got["excluded"]) == old and got["total"] > 0
    assert review.review_queue(store, model="no such model").empty


def _joins(node: dict):
    if "JOIN" in str(node.get("name")):
        yield node.get("extra_info", {})
    for child in node.get("children", []):
        yield from _joins(child)


def test_the_flag_filter_is_no_condition_of_the_nucleus_join(store):
    """The million-row join of review_stats and the focus model's predictions matches on nucleus_id alone."""
    sql = review._flagged("any", None) + _PAGE
    params = review._params(sql, "any", None, None, review.REVIEW_CONFIG, include_reviewed=False, limit=50, offset=0)
    plan = json.loads(store.cursor().execute("EXPLAIN (FORMAT json) " + sql, params).fetchall()[0][1])
    on_nuclei = [info.get("Conditions") for root in plan for info in _joins(root)
                 if info.get("Join Type") == "INNER" and "nucleus_id = nucleus_id" in str(info.get("Conditions"))]
    assert on_nuclei == ["nucleus_id = nucleus_id"]
