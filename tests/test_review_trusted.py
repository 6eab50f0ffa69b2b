"""The Review queue counts the trusted models only: a retired model, or one with weak validation, raises no
'models disagree' and does not speak for the All focus; ``review_stats`` follows every change of that set."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from _store_fakes import fake_model, store_at_version, synthetic_result
from store import migrations, registry, review, samples
from store.check import check_store
from store.db import Store
from store.review_stats import untrusted_model_ids
from store.scans import write_scan_result

GOOD = {"validation": {"sensitivity": 0.95, "specificity": 0.95, "n_positive": 200, "n_negative": 200}}
WEAK = {"validation": {"sensitivity": 1.0, "specificity": 0.25, "n_positive": 4, "n_negative": 4}}
#: m1 and m2 agree everywhere but on nucleus 3; 'old' calls MNA everywhere
PROBS = {"m1": [0.05, 0.1, 0.8, 0.2], "m2": [0.1, 0.05, 0.9, 0.7], "old": [0.9, 0.95, 0.99, 0.9]}


def _saved(folder, name: str):
    """A fake model whose folder holds real saved (tiny ratio) weights, so it can be reinstated."""
    from genuine_core.models import build_model, preset_config, save_model
    from genuine_core.models.folder import folder_digest

    save_model(build_model(preset_config("tiny", kind="ratio", seed=1)), folder)
    return dataclasses.replace(fake_model(name, metrics=GOOD), folder=str(folder), checksum=folder_digest(folder))


def _scan(store, models: dict, probs: dict = PROBS, sha: str = "r" * 64) -> np.ndarray:
    sid = samples.ensure_sample(store, "LINE", "cell-line", None, "non-MNA")
    mids = {name: registry.register_model(store, m) for name, m in models.items()}
    n = len(next(iter(probs.values())))
    lab = pd.DataFrame({"mask_label": np.arange(1, n + 1), "kind": "auto", "label": 0, "source": "genotype"})
    scan = write_scan_result(store, sid, synthetic_result(sha, probs), mids, labels=lab)
    return store.query("SELECT id FROM nuclei WHERE scan_id = ? ORDER BY mask_label", [scan])["id"].to_numpy()


def _disagree(store, **kw) -> list[int]:
    return sorted(review.review_queue(store, flags=["models_disagree"], **kw)["nucleus_id"].tolist())


@pytest.fixture()
def retired_store(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        ids = _scan(s, {"m1": fake_model("m1", metrics=GOOD), "m2": fake_model("m2", metrics=GOOD),
                        "old": _saved(tmp_path / "old", "old")})
        yield s, ids


def test_a_retired_models_calls_raise_no_model_disagreement(retired_store):
    store, ids = retired_store
    assert _disagree(store) == [ids[0], ids[1], ids[3]]  # active, 'old' disagrees with m1/m2 on three nuclei
    registry.retire_model(store, "old", by="ann")
    assert _disagree(store) == [ids[3]]  # only where m1 and m2 differ
    assert review.review_progress(store, flags=["models_disagree"])["total"] == 1
    every = review.review_queue(store).set_index("nucleus_id")  # All focus: m1 and m2 alone
    assert set(every["n_models"]) == {2}
    assert every.at[ids[2], "prob"] == pytest.approx(0.85) and every.at[ids[2], "spread"] == pytest.approx(0.1)
    # the retired model chosen as focus: its own calls, the trusted models' agreement
    focus = review.review_queue(store, model="old", flags=["auto_mismatch", "models_disagree"]).set_index("nucleus_id")
    assert sorted(focus.index) == sorted(ids) and focus["models_disagree"].tolist().count(True) == 1
    assert check_store(store) == []  # the stats are not 'stale' for leaving it out


def test_reinstating_a_model_counts_its_calls_again(retired_store):
    store, ids = retired_store
    registry.retire_model(store, "old", by="ann")
    registry.reinstate_model(store, "old", by="ann")
    assert _disagree(store) == [ids[0], ids[1], ids[3]]
    assert set(review.review_queue(store)["n_models"]) == {3}
    assert check_store(store) == []


def test_new_metrics_of_a_registered_model_rebuild_the_stats(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        ids = _scan(store, {n: fake_model(n, metrics=GOOD) for n in PROBS})
        assert _disagree(store) == [ids[0], ids[1], ids[3]]
        registry.register_model(store, fake_model("old", metrics=WEAK))  # same weights, weak validation now
        assert untrusted_model_ids(store.cursor()) == [int(registry.model_id(store, "old"))]
        assert _disagree(store) == [ids[3]]
        registry.register_model(store, fake_model("old", metrics=GOOD))
        assert _disagree(store) == [ids[0], ids[1], ids[3]] and check_store(store) == []


def test_a_nucleus_only_an_untrusted_model_scored_has_no_aggregates(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        ids = _scan(store, {"weak": fake_model("weak", metrics=WEAK)}, {"weak": [0.99, 0.4]})
        row = store.query("SELECT * FROM review_stats WHERE nucleus_id = ?", [int(ids[0])]).iloc[0]
        assert row["n_models"] == 0 and row["spread"] == 0 and pd.isna(row["mean_prob"])
        assert review.review_progress(store)["total"] == 0
        assert sorted(review.review_queue(store, model="weak")["nucleus_id"]) == [ids[0], ids[1]]
        assert check_store(store) == []


def test_a_store_at_version_6_gets_its_review_stats_over_the_trusted_models(tmp_path):
    """Step 7 makes review_stats anew: a model retired before the upgrade no longer counts in it."""
    path = tmp_path / "v6.duckdb"
    conn = store_at_version(path, 6)
    conn.execute(migrations.STEPS[7][2]())  # this code's scan writer needs step 8's column (the version stays 6)
    conn.close()
    with Store(path, migrate=False) as s:  # written as the version-6 release did: stats over every model
        ids = _scan(s, {n: fake_model(n, metrics=GOOD) for n in PROBS})
        s.execute("UPDATE models SET retired_at = now() WHERE name = 'old'")
        s.execute("UPDATE review_stats SET n_models = 3")
    with Store(path) as s:
        assert migrations.current_version(s.cursor()) == migrations.LATEST == 10
        assert _disagree(s) == [ids[3]] and check_store(s) == []
