"""Probe runs (synthetic-signal experiments on a model, the paper's section 4.3) and their results."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from genuine_core.errors import InputError
from genuine_core.pipeline import encode_patch
from store.db import Store
from store.registry import model_id

RESULT_COLUMNS = ["n_nmi", "n_mycn", "n_cluster", "signal_size", "prob", "prob_calibrated", "call", "umap_x", "umap_y"]


def record_probe_run(store: Store, model: str, params: dict, results: pd.DataFrame,
                     patches: np.ndarray | None = None, created_by: str | None = None) -> int:
    """Store one probe run and its per-patch results in one transaction.

    Args:
        model: registered model name.
        params: JSON-serialisable settings (counts, sizes, n per condition, seed, ...; the Probe page adds the
            model's checksum, the number of background nuclei and, for real ones, their nucleus ids).
        results: one row per probe patch with ``n_nmi, n_mycn, prob`` and optionally
            ``n_cluster, signal_size, prob_calibrated, call, umap_x, umap_y``.
        patches: optional (N, 3, P, P) float patches stored as PNG.
        created_by: who ran it.

    Returns:
        The run id.
    """
    need = {"n_nmi", "n_mycn", "prob"}
    if missing := need - set(results.columns):
        raise InputError(f"probe results lack columns {sorted(missing)}")
    if patches is not None and len(patches) != len(results):
        raise InputError(f"{len(patches)} patches for {len(results)} results")
    mid = model_id(store, model)
    frame = results.reindex(columns=RESULT_COLUMNS).reset_index(drop=True)
    frame["n_cluster"] = frame["n_cluster"].fillna(0)
    frame.insert(0, "idx", np.arange(len(frame)))
    frame["patch_png"] = [encode_patch(p) for p in patches] if patches is not None else None
    run_id = store.next_ids("probe_run_ids", 1)[0]
    frame.insert(0, "run_id", run_id)
    with store.transaction() as cur:
        cur.execute("INSERT INTO probe_runs (id, model_id, created_at, created_by, params, n_results) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [run_id, mid, datetime.now(timezone.utc).replace(tzinfo=None), created_by,
                     json.dumps(params, default=str, sort_keys=True), len(frame)])
        with store.frames(probe_in=frame):
            cur.execute("INSERT INTO probe_results (run_id, idx, n_nmi, n_mycn, n_cluster, signal_size, prob, "
                        "prob_calibrated, call, umap_x, umap_y, patch_png) SELECT run_id, idx, n_nmi, n_mycn, "
                        "n_cluster, signal_size, prob, prob_calibrated, call, umap_x, umap_y, patch_png FROM probe_in")
    return run_id


def list_probe_runs(store: Store, model: str | None = None) -> pd.DataFrame:
    """Probe runs, newest first: ``id, model, created_at, created_by, params (dict), n_results``."""
    df = store.query(
        "SELECT r.id, m.name AS model, r.created_at, r.created_by, r.params, r.n_results FROM probe_runs r "
        "JOIN models m ON m.id = r.model_id WHERE ? IS NULL OR m.name = ? ORDER BY r.id DESC",
        [model, model],
    )
    df["params"] = [json.loads(p) for p in df["params"]]
    return df


def probe_results(store: Store, run_id: int) -> pd.DataFrame:
    """Results of one run (without patches): ``idx`` + :data:`RESULT_COLUMNS`, by idx."""
    return store.query(
        "SELECT idx, n_nmi, n_mycn, n_cluster, signal_size, prob, prob_calibrated, call, umap_x, umap_y "
        "FROM probe_results WHERE run_id = ? ORDER BY idx",
        [int(run_id)],
    )
