"""The synthetic bulk filler used by the scale benchmark writes consistent, queryable rows."""

from __future__ import annotations

from store import check, review, summary
from store.db import Store
from store.scale import populate_synthetic


def test_populate_synthetic_is_consistent(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        added = populate_synthetic(s, n_nuclei=2003, n_models=3, n_samples=4, scans_per_sample=2, n_events=300)
        assert added["predictions"] == 6009
        assert s.scalar("SELECT count(*) FROM nuclei") == 2003
        assert s.scalar("SELECT count(DISTINCT (scan_id, mask_label)) FROM nuclei") == 2003
        problems = check.check_store(s)
        # rows are bare on purpose (no patches, no embeddings); nothing else may be wrong
        assert all("patch image" in p or "embedding count" in p for p in problems), problems
        df = summary.sample_summaries(s)
        excluded = s.scalar("SELECT count(*) FROM curated_labels WHERE excluded")
        assert len(df) == 12 and df["n_scored"].sum() == 3 * (2003 - excluded)
        assert review.review_progress(s)["total"] > 0
        # a second fill does not collide with the first
        populate_synthetic(s, n_nuclei=100, n_models=1, n_samples=2, scans_per_sample=1, n_events=10, seed=1)
        assert s.scalar("SELECT count(*) FROM nuclei") == 2103
