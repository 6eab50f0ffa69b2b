"""Synthetic bulk rows for scale tests: a store with a million nuclei in seconds.

Only used by benchmarks and tests (``bench/bench_store.py``): it writes samples, scans,
nuclei (no patch images), auto and truth labels, predictions of several models and some
label events with set-based ``INSERT ... SELECT`` over ``range()``, never row loops.
Values are random but plausible (per-sample MNA share, model probabilities that agree
with the truth most of the time).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from store.db import Store


def populate_synthetic(store: Store, n_nuclei: int = 1_000_000, n_models: int = 4, n_samples: int = 40,
                       scans_per_sample: int = 5, n_events: int = 10_000, seed: int = 0,
                       use_registered: bool = False, umap: bool = False, patch_png: bytes | None = None,
                       scan_images: tuple[bytes, bytes] | None = None) -> dict:
    """Add synthetic samples/scans/nuclei/labels/predictions/events to ``store``.

    Args:
        n_nuclei: nuclei in total (spread evenly over the scans).
        n_models: models registered (kinds cycle genuine/resnet/detector/ratio).
        use_registered: score the nuclei with the store's registered models (e.g. a demo store's)
            instead of registering ``n_models`` new ones.
        umap: also give every nucleus UMAP coordinates of each model (two blobs by truth), on the
            model's current fit, or on a new ``umap_fits`` row without a map file when it has none
            (enough for the Embeddings page; placing new nuclei on it would fail).
        patch_png: the same stored patch (PNG bytes) for every nucleus (default none), for pages that show them.
        scan_images: the same (preview PNG, masks .npz) bytes for every scan (default none), for the case view.
        n_samples: samples (alternating mixture / case); each gets ``scans_per_sample`` scans.
        n_events: label events on random nuclei, by two reviewers.
        seed: seed of every random value.

    Returns:
        Counts of what was added.
    """
    rng = np.random.default_rng(seed)
    n_scans = n_samples * scans_per_sample
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    kinds = ("genuine", "resnet", "detector", "ratio")
    with store.transaction() as cur:
        sample_ids = store.next_ids("sample_ids", n_samples)
        expected = rng.choice([0.0, 0.25, 0.5, 0.75, 0.9, 1.0], n_samples)
        samples = pd.DataFrame({"id": sample_ids, "name": [f"scale-{i:04d}-{seed}" for i in range(n_samples)],
                                "kind": ["mixture" if i % 2 == 0 else "case" for i in range(n_samples)],
                                "expected_mna": expected})
        scan_ids = np.asarray(store.next_ids("scan_ids", n_scans), np.int64)
        per_scan = np.full(n_scans, n_nuclei // n_scans)
        per_scan[: n_nuclei % n_scans] += 1
        scans = pd.DataFrame({"id": scan_ids, "sample_id": np.repeat(sample_ids, scans_per_sample),
                              "file_name": [f"scale_{i}.tif" for i in scan_ids], "sha256": [f"scale-{seed}-{i}" for i in scan_ids],
                              "n_nuclei": per_scan, "share": np.repeat(expected, scans_per_sample)})
        if use_registered:
            models = store.query("SELECT id, name, kind FROM models ORDER BY id")
            n_models = len(models)
        else:
            models = pd.DataFrame({"id": store.next_ids("model_ids", n_models),
                                   "name": [f"scale-{kinds[i % 4]}-{i}-{seed}" for i in range(n_models)],
                                   "kind": [kinds[i % 4] for i in range(n_models)]})
        models["noise"] = np.linspace(0.05, 0.25, n_models)
        first = store.next_ids("nucleus_ids", 1)[0]
        cur.execute("SELECT setval('nucleus_ids', ?)", [first + n_nuclei])
        with store.frames(s_in=samples, c_in=scans, m_in=models):
            cur.execute("INSERT INTO samples (id, name, kind, expected_mna) SELECT id, name, kind, expected_mna FROM s_in")
            cur.execute(
                "INSERT INTO scans (id, sample_id, file_name, sha256, height, width, channel_map, patch_size, "
                "n_nuclei, n_border_skipped, ingested_at, preview_png, masks_npz) "
                "SELECT id, sample_id, file_name, sha256, 1000, 1000, '{}', 96, n_nuclei, 0, ?, ?, ? FROM c_in",
                [now, *(scan_images or (None, None))])
            if not use_registered:
                cur.execute(
                    "INSERT INTO models (id, name, kind, preset, patch_size, checksum, uncertainty_method, config, "
                    "metrics) SELECT id, name, kind, 'cpu', 96, 'scale-' || id, 'mc_dropout_std', '{}', ? FROM m_in",
                    [json.dumps({"val": {"tp": 90, "fn": 10, "tn": 95, "fp": 5, "tpr": 0.9, "tnr": 0.95}})])
            cur.execute("SELECT setseed(?)", [((seed % 1000) + 1) / 1001.0])
            # nuclei: scan of nucleus k from the cumulative per-scan counts
            cur.execute(
                """
                CREATE TEMP TABLE scale_nuc AS
                WITH bounds AS (
                    SELECT id AS scan_id, share, sum(n_nuclei) OVER (ORDER BY id) - n_nuclei AS lo,
                           sum(n_nuclei) OVER (ORDER BY id) AS hi FROM c_in
                )
                SELECT ? + r.range AS id, b.scan_id, (r.range - b.lo + 1)::INTEGER AS mask_label,
                       (random() < b.share)::TINYINT AS truth
                FROM range(?) r JOIN bounds b ON r.range >= b.lo AND r.range < b.hi
                """,
                [first, n_nuclei],
            )
            cur.execute(
                "INSERT INTO nuclei (id, scan_id, mask_label, cy, cx, bbox_y0, bbox_x0, bbox_y1, bbox_x1, area, "
                "mean_nmi, mean_mycn, mean_dapi, cropped, auto_label, true_label, patch_png) SELECT id, scan_id, "
                "mask_label, random() * 1000, random() * 1000, 0, 0, 60, 60, 2800, random() * 0.3, random() * 0.5, "
                "0.3 + random() * 0.4, false, CASE WHEN random() < 0.1 THEN 1 - truth ELSE truth END, truth, ? "
                "FROM scale_nuc", [patch_png])
            cur.execute(
                """
                INSERT INTO predictions (model_id, nucleus_id, prob, prob_calibrated, uncertainty, call)
                SELECT model_id, id, p, p, u, (p >= 0.5)::TINYINT FROM (
                    SELECT m.id AS model_id, n.id,
                           CASE WHEN random() < m.noise THEN random()
                                ELSE greatest(0, least(1, n.truth * 0.8 + 0.1 + (random() - 0.5) * 0.2)) END AS p,
                           random() * 0.2 AS u
                    FROM scale_nuc n CROSS JOIN m_in m)
                """
            )
            cur.execute("INSERT INTO scan_models (scan_id, model_id, n_predictions) "
                        "SELECT c.id, m.id, c.n_nuclei FROM c_in c CROSS JOIN m_in m")
            if umap:
                _umap_coords(store, cur, models["id"].tolist(), now)
        events = pd.DataFrame({
            "id": store.next_ids("label_event_ids", n_events),
            "nucleus_id": first + rng.integers(0, n_nuclei, n_events),
            "value": rng.choice(["0", "1", "exclude"], n_events, p=[0.45, 0.45, 0.1]),
            "reviewer": rng.choice(["ann", "bob"], n_events),
        })
        events["previous"] = events.groupby("nucleus_id")["value"].shift(1).fillna("unset")
        with store.frames(e_in=events):
            cur.execute("INSERT INTO label_events (id, nucleus_id, value, previous, reviewer, created_at) "
                        "SELECT id, nucleus_id, value, previous, reviewer, ? FROM e_in", [now])
        cur.execute("DROP TABLE scale_nuc")
        from store.scans import refresh_review_stats

        refresh_review_stats(store, [int(i) for i in scan_ids])
    return {"samples": n_samples, "scans": n_scans, "nuclei": n_nuclei, "models": n_models,
            "predictions": n_nuclei * n_models, "label_events": n_events, "umap": umap}


def _umap_coords(store: Store, cur, model_ids: list[int], now: datetime) -> None:
    """UMAP coordinates of every ``scale_nuc`` nucleus for each model: a blob per truth, on the latest fit."""
    for mid in model_ids:
        fit = cur.execute("SELECT max(id) FROM umap_fits WHERE model_id = ?", [mid]).fetchone()[0]
        if fit is None:
            fit = store.next_ids("umap_fit_ids", 1)[0]
            cur.execute("INSERT INTO umap_fits (id, model_id, fitted_at, reference, n_reference, params, "
                        "reducer_path, reducer_sha256) VALUES (?, ?, ?, 'synthetic scale rows', 0, '{}', "
                        "'scale-no-map.npz', 'none')", [fit, mid, now])
        # Box-Muller normal offsets around (truth * 8, truth * 3)
        cur.execute(
            """
            INSERT INTO umap_coords (model_id, nucleus_id, fit_id, x, y, fitted_on)
            SELECT ?, id, ?, truth * 8 + r * cos(a), truth * 3 + r * sin(a), false FROM (
                SELECT id, truth, sqrt(-2 * ln(1 - random())) AS r, 2 * pi() * random() AS a FROM scale_nuc)
            """, [mid, fit])


def first_images(store: Store) -> tuple[bytes | None, tuple[bytes, bytes] | None]:
    """The store's first stored patch (PNG) and first scan's (preview PNG, masks .npz), for ``populate_synthetic``."""
    patch = store.scalar("SELECT patch_png FROM nuclei WHERE patch_png IS NOT NULL ORDER BY id LIMIT 1")
    images = store.cursor().execute("SELECT preview_png, masks_npz FROM scans WHERE preview_png IS NOT NULL "
                                    "ORDER BY id LIMIT 1").fetchone()
    return patch, (tuple(images) if images else None)
