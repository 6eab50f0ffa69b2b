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


def probe_run_frame(results: pd.DataFrame, xy: np.ndarray | None = None) -> pd.DataFrame:
    """The rows :func:`record_probe_run` keeps of ``genuine_core.synth.probe.run_probe`` results: the requested
    counts, the visible clusters, the size, the model's outputs and, with (N, 2) ``xy``, the UMAP place."""
    frame = pd.DataFrame({"n_nmi": results["n_nmi"], "n_mycn": results["n_mycn"],
                          "n_cluster": results["n_cluster_visible"], "signal_size": results["signal_size"],
                          "prob": results["prob"], "prob_calibrated": results["prob_calibrated"],
                          "call": results["call"]})
    if xy is not None:
        frame["umap_x"], frame["umap_y"] = xy[:, 0], xy[:, 1]
    return frame


def place_probes(store: Store, model: str, embeddings: np.ndarray) -> np.ndarray | None:
    """(N, 2) UMAP coordinates of (N, D) probe embeddings on the model's saved map; None when none is fitted.

    Raises:
        GenuineError: the map exists but cannot be used (missing or corrupt file: ``StoreError``),
            or UMAP support is not installed (``InputError``).
    """
    try:
        from store import umap as umap_store
    except ImportError as exc:
        raise InputError(f"UMAP support is not available ({exc})") from None
    return umap_store.transform_embeddings(store, model, embeddings)


def probe_run_params(settings: dict, n_backgrounds: int, model_checksum: str,
                     background_nuclei: list[int] | None = None) -> dict:
    """What a saved run records (the Probe page and ``genuine probe --db``): the run's settings, how many
    background nuclei the probes were drawn into, the model's checksum and, for real nuclei, their ids (the same
    seed draws other nuclei once the sample's scans change)."""
    params = {**settings, "backgrounds": int(n_backgrounds), "model_checksum": str(model_checksum)}
    params.pop("background_nuclei", None)
    if background_nuclei is not None:
        params["background_nuclei"] = [int(i) for i in background_nuclei]
    return params


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
