"""UMAP coordinates of stored embeddings: fit once per model, place later nuclei with the saved map.

The reference set a model's map is fitted on is, in order of preference: nuclei of
training-split scans (synthetic benchmark), else nuclei of cell-line samples, else
every nucleus. At most ``UmapConfig.max_reference`` of them (seeded subset) are
fitted; every other nucleus (the rest of the reference, mixtures, cases, probes,
scans ingested later) is placed with ``UmapMap.transform``. The fitted map is saved
in the store's side folder (``<store>_files/``) and its sha256 recorded in
``umap_fits``; loading verifies it (see ``genuine_core.embedding`` for the trust
boundary).

Crash consistency: a map file is written under a temporary name, renamed into place
and flushed to disk before the row that references it commits, so a committed fit never
points at a missing or half-written file. A process killed in between leaves at most an
unreferenced file; the next fit of that model removes every file of the model but its new map.
Crash tests stop a fit with ``GENUINE_TEST_KILL_AT=map_saved`` (map on disk, row not committed)
or ``fit_committed`` (row committed, superseded files not yet removed); see ``store.ingest._kill_point``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import threading
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from genuine_core.embedding import UmapConfig, UmapMap, fit_umap as _fit, subsample
from genuine_core.errors import InputError, StoreError
from store.db import Store
from store.location import genuine_command
from store.ingest import _kill_point
from store.registry import model_id

logger = logging.getLogger(__name__)

_cache: dict[tuple[str, str], UmapMap] = {}
_cache_lock = threading.Lock()


_VECTORS_SQL = """
SELECT e.nucleus_id, e.vector, c.split, s.kind AS sample_kind
FROM embeddings e
JOIN nuclei n ON n.id = e.nucleus_id
JOIN scans c ON c.id = n.scan_id
JOIN samples s ON s.id = c.sample_id
LEFT JOIN umap_coords u ON u.model_id = e.model_id AND u.nucleus_id = e.nucleus_id
WHERE e.model_id = ? AND (NOT ? OR u.nucleus_id IS NULL)
ORDER BY e.nucleus_id
"""


def _vectors(store: Store, mid: int, only_missing: bool = False) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(nucleus ids (N,), embeddings (N, D) float32, info frame) of one model's nuclei."""
    cur = store.cursor()
    with warnings.catch_warnings():  # "extra copy" notice of DB-API results; the copy is cheap here
        warnings.simplefilter("ignore", UserWarning)
        tbl = cur.execute(_VECTORS_SQL, [mid, only_missing]).to_arrow_table()
    ids = tbl.column("nucleus_id").to_numpy().astype(np.int64)
    if len(ids) == 0:
        return ids, np.zeros((0, 0), np.float32), pd.DataFrame({"split": [], "sample_kind": []})
    vec = tbl.column("vector").combine_chunks()
    flat = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    dims = np.diff(vec.offsets.to_numpy())
    if dims.min() != dims.max():
        raise StoreError("embeddings of one model have different lengths")
    info = pd.DataFrame({"split": tbl.column("split").to_pylist(), "sample_kind": tbl.column("sample_kind").to_pylist()})
    return ids, flat.reshape(len(ids), int(dims[0])), info


def reference_mask(info: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Which nuclei form the reference set, and its description."""
    train = (info["split"] == "train").to_numpy()
    if train.any():
        return train, "training split"
    lines = (info["sample_kind"] == "cell-line").to_numpy()
    if lines.any():
        return lines, "cell-line samples"
    return np.ones(len(info), bool), "all nuclei"


def _insert_coords(store: Store, cur, mid: int, fit_id: int, ids: np.ndarray, xy: np.ndarray,
                   fitted: np.ndarray) -> None:
    frame = pd.DataFrame({"model_id": mid, "nucleus_id": ids, "fit_id": fit_id, "x": xy[:, 0], "y": xy[:, 1],
                          "fitted_on": fitted})
    with store.frames(coords_in=frame):
        cur.execute("INSERT INTO umap_coords (model_id, nucleus_id, fit_id, x, y, fitted_on) "
                    "SELECT model_id, nucleus_id, fit_id, x, y, fitted_on FROM coords_in")


def fit_umap(store: Store, model: str, config: UmapConfig = UmapConfig()) -> dict:
    """Fit a model's map on its reference nuclei and (re)write every nucleus' coordinates.

    Returns:
        ``{"model", "fit_id", "n_reference", "n_fitted", "n_placed", "reference", "path"}``.

    Raises:
        StoreError: unknown model or no embeddings. InputError: too few reference nuclei.
    """
    mid = model_id(store, model)
    ids, x, info = _vectors(store, mid)
    if len(ids) == 0:
        raise StoreError(f"model {model!r} has no stored embeddings; ingest scans first")
    ref_mask, reference = reference_mask(info)
    ref_rows = np.flatnonzero(ref_mask)
    rng = np.random.default_rng(config.seed)
    fit_rows = ref_rows[subsample(len(ref_rows), config.max_reference, rng)]
    logger.info("UMAP %s: fitting %d of %d reference nuclei (%s)", model, len(fit_rows), len(ref_rows), reference)
    umap_map = _fit(x[fit_rows], config)
    fitted = np.zeros(len(ids), bool)
    fitted[fit_rows] = True
    xy = np.empty((len(ids), 2), np.float32)
    xy[fit_rows] = umap_map.coords
    if (~fitted).any():
        xy[~fitted] = umap_map.transform(x[~fitted])

    fit_id = store.next_ids("umap_fit_ids", 1)[0]
    rel = f"umap_model{mid}_fit{fit_id}.npz"
    path = store.folder / rel
    sha = umap_map.save(path)  # temporary file + rename: never half-written under its final name
    _sync(path)
    _kill_point("map_saved")
    try:
        with store.transaction() as cur:
            cur.execute(
                "INSERT INTO umap_fits (id, model_id, fitted_at, reference, n_reference, params, reducer_path, "
                "reducer_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [fit_id, mid, datetime.now(timezone.utc).replace(tzinfo=None), reference, int(len(fit_rows)),
                 json.dumps(config.__dict__, sort_keys=True), rel, sha],
            )
            cur.execute("DELETE FROM umap_coords WHERE model_id = ?", [mid])  # derived data, replaced whole
            _insert_coords(store, cur, mid, fit_id, ids, xy, fitted)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    _kill_point("fit_committed")
    for stale in store.folder.glob(f"umap_model{mid}_fit*"):  # superseded maps, leftovers of killed fits
        if stale.name != rel:
            stale.unlink(missing_ok=True)
    return {"model": model, "fit_id": fit_id, "n_reference": int(len(ref_rows)), "n_fitted": int(len(fit_rows)),
            "n_placed": int((~fitted).sum()), "reference": reference, "path": str(path)}


def _sync(path: Path) -> None:
    """Flush a written file and its folder entry to disk (the row referencing it commits after)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # folders cannot be fsynced on some platforms
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def latest_fit(store: Store, model: str) -> dict | None:
    """The model's current fit row (``id, reducer_path, reducer_sha256, reference, n_reference, params``) or None."""
    df = store.query(
        "SELECT f.* FROM umap_fits f JOIN models m ON m.id = f.model_id WHERE m.name = ? ORDER BY f.id DESC LIMIT 1",
        [model],
    )
    return None if df.empty else df.iloc[0].to_dict()


def load_map(store: Store, model: str) -> UmapMap | None:
    """The model's saved map (checksum-verified, cached per process), or None when never fitted.

    Raises:
        StoreError: the map file is missing or does not match its recorded checksum.
    """
    fit = latest_fit(store, model)
    if fit is None:
        return None
    path = store.folder / fit["reducer_path"]
    key = (str(path.resolve()), fit["reducer_sha256"])
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    try:
        umap_map = UmapMap.load(path, fit["reducer_sha256"])
    except InputError as exc:
        rerun = genuine_command(f"umap --model {shlex.quote(model)}", store.path)
        raise StoreError(f"UMAP map of {model!r}: {exc}; rerun `{rerun}`") from exc
    with _cache_lock:
        _cache[key] = umap_map
    return umap_map


def transform_embeddings(store: Store, model: str, embeddings: np.ndarray) -> np.ndarray | None:
    """Place embeddings (e.g. of probe nuclei) on the model's map: (N, 2) float32, or None without a map."""
    umap_map = load_map(store, model)
    return None if umap_map is None else umap_map.transform(embeddings)


def place_missing(store: Store, model: str) -> int:
    """Place nuclei that have embeddings but no coordinates on the model's current map.

    Returns:
        How many were placed (0 when the model has no map yet).
    """
    if latest_fit(store, model) is None:
        return 0
    mid = model_id(store, model)
    ids, x, _ = _vectors(store, mid, only_missing=True)
    if len(ids) == 0:  # the usual case of a re-run: no map to read
        return 0
    xy = load_map(store, model).transform(x)
    fit_id = int(latest_fit(store, model)["id"])
    with store.transaction() as cur:
        _insert_coords(store, cur, mid, fit_id, ids, xy, np.zeros(len(ids), bool))
    return int(len(ids))


_POINTS_FROM = """
        FROM umap_coords u
        JOIN models m ON m.id = u.model_id
        JOIN nuclei n ON n.id = u.nucleus_id
        JOIN scans c ON c.id = n.scan_id
        JOIN samples s ON s.id = c.sample_id
        WHERE m.name = $model AND ($sample IS NULL OR s.name = $sample)
          AND ($samples IS NULL OR list_contains($samples, s.name))
          AND ($ids IS NULL OR list_contains($ids, u.nucleus_id))
          AND ($splits IS NULL OR list_contains($splits, c.split))
"""


def _point_params(model: str, sample, samples, ids, splits) -> dict:
    as_list = lambda v, t: None if v is None else [t(x) for x in v]  # noqa: E731
    return {"model": model, "sample": sample, "samples": as_list(samples, str), "ids": as_list(ids, int),
            "splits": as_list(splits, str)}


def umap_points(store: Store, model: str, sample: str | None = None, *, samples=None, ids=None, splits=None,
                limit: int | None = None) -> pd.DataFrame:
    """Map coordinates with everything to colour by.

    Args:
        sample / samples: only nuclei of this sample / of these samples (None: every sample).
        ids: only these nuclei. splits: only nuclei of scans of these benchmark splits (e.g. ``["train"]``).
        limit: at most this many nuclei, a fixed pseudo-random subset (by a hash of the nucleus id, so the
            same on every call), chosen in the query: a map of a million nuclei is never read whole.

    Returns:
        DataFrame ``nucleus_id, x, y, fitted_on, sample, sample_kind, split, source ('training' |
        'validation' | 'test' for benchmark splits, else the sample kind: 'mixture' | 'case' | ...), prob, call,
        auto_label, true_label, curated_label, excluded``, by nucleus id.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    picked = "SELECT u.nucleus_id, u.x, u.y, u.fitted_on, s.name AS sample, s.kind AS sample_kind, c.split, " \
             "u.model_id, n.auto_label, n.true_label" + _POINTS_FROM
    if limit is not None:
        picked += " ORDER BY hash(u.nucleus_id), u.nucleus_id LIMIT $limit"
    return store.query(
        f"""
        SELECT u.nucleus_id, u.x, u.y, u.fitted_on, u.sample, u.sample_kind, u.split,
               CASE u.split WHEN 'train' THEN 'training' WHEN 'val' THEN 'validation' WHEN 'test' THEN 'test'
                            ELSE u.sample_kind END AS source,
               p.prob_calibrated AS prob, p.call, u.auto_label, u.true_label,
               cl.label AS curated_label, coalesce(cl.excluded, false) AS excluded
        FROM ({picked}) u
        LEFT JOIN predictions p ON p.model_id = u.model_id AND p.nucleus_id = u.nucleus_id
        LEFT JOIN curated_labels cl ON cl.nucleus_id = u.nucleus_id
        ORDER BY u.nucleus_id
        """,
        {**_point_params(model, sample, samples, ids, splits), **({} if limit is None else {"limit": int(limit)})},
    )


def umap_count(store: Store, model: str, sample: str | None = None, *, samples=None, ids=None, splits=None) -> int:
    """How many nuclei :func:`umap_points` would return without a limit."""
    return int(store.scalar("SELECT count(*)" + _POINTS_FROM, _point_params(model, sample, samples, ids, splits)))


def mapped_models(store: Store) -> list[str]:
    """Names of models with stored UMAP coordinates, by model id (cheap: reads no coordinates)."""
    return store.query("SELECT m.name FROM models m WHERE EXISTS (SELECT 1 FROM umap_coords u "
                       "WHERE u.model_id = m.id) ORDER BY m.id")["name"].tolist()


def models_with_embeddings(store: Store) -> list[str]:
    """Names of models that have stored embeddings, by model id."""
    return store.query(
        "SELECT m.name FROM models m WHERE EXISTS (SELECT 1 FROM embeddings e WHERE e.model_id = m.id) ORDER BY m.id"
    )["name"].tolist()
