"""Store integrity check and overview (``genuine store check | info``).

The check verifies what the schema does not enforce itself: counts consistent, no
orphan rows, every nucleus of a committed scan holds a prediction and an embedding
from every model that scored the scan, UMAP map files present and unmodified, and every
active registered model's folder present and holding the weights registered, and the active models reading
patches normalised one way (ingest refuses otherwise; a retired model's folder is only noted).
"""

from __future__ import annotations

import pandas as pd

from genuine_core.checksums import sha256_file
from genuine_core.errors import ModelLoadError
from store.db import Store
from store.labels import count_current_labels
from store.location import genuine_command
from store.model_copies import copy_way_out, find_copies
from store.review_stats import untrusted_model_ids
from store.registry import (list_models, mixed_normalisations, mixed_way_out, patch_normalisation, relocate_command,
                            retired_text, weights_mismatch)

#: per nucleus with a prediction, the trusted models' predictions (``store.review_stats``; $untrusted: the others)
_TRUSTED_PER_NUCLEUS = ("SELECT nucleus_id, count(*) FILTER (WHERE NOT list_contains($untrusted::BIGINT[], model_id)) "
                        "AS k FROM predictions GROUP BY nucleus_id")

# (description, query returning one count: 0 = fine). Constant SQL only; $untrusted is the one parameter.
_CHECKS: list[tuple[str, str]] = [
    ("scans whose sample does not exist",
     "SELECT count(*) FROM scans c LEFT JOIN samples s ON s.id = c.sample_id WHERE s.id IS NULL"),
    ("nuclei whose scan does not exist",
     "SELECT count(*) FROM nuclei n LEFT JOIN scans c ON c.id = n.scan_id WHERE c.id IS NULL"),
    ("scans whose n_nuclei differs from their stored nuclei",
     "SELECT count(*) FROM scans c LEFT JOIN (SELECT scan_id, count(*) AS k FROM nuclei GROUP BY scan_id) n "
     "ON n.scan_id = c.id WHERE coalesce(n.k, 0) <> c.n_nuclei"),
    ("nuclei without a patch image", "SELECT count(*) FROM nuclei WHERE patch_png IS NULL"),
    ("predictions of unknown nuclei",
     "SELECT count(*) FROM predictions p LEFT JOIN nuclei n ON n.id = p.nucleus_id WHERE n.id IS NULL"),
    ("predictions of unknown models",
     "SELECT count(*) FROM predictions p LEFT JOIN models m ON m.id = p.model_id WHERE m.id IS NULL"),
    ("detections of unknown nuclei or models",
     "SELECT count(*) FROM detections d LEFT JOIN nuclei n ON n.id = d.nucleus_id "
     "LEFT JOIN models m ON m.id = d.model_id WHERE n.id IS NULL OR m.id IS NULL"),
    ("embeddings of unknown nuclei or models",
     "SELECT count(*) FROM embeddings e LEFT JOIN nuclei n ON n.id = e.nucleus_id "
     "LEFT JOIN models m ON m.id = e.model_id WHERE n.id IS NULL OR m.id IS NULL"),
    ("ground-truth rows of unknown nuclei",
     "SELECT count(*) FROM synthetic_truth t LEFT JOIN nuclei n ON n.id = t.nucleus_id WHERE n.id IS NULL"),
    ("label events of unknown nuclei",
     "SELECT count(*) FROM label_events e LEFT JOIN nuclei n ON n.id = e.nucleus_id WHERE n.id IS NULL"),
    ("sign-outs of unknown samples",
     "SELECT count(*) FROM sign_outs o LEFT JOIN samples s ON s.id = o.sample_id WHERE s.id IS NULL"),
    ("label events whose 'previous' is not the value before them",
     "SELECT count(*) FROM (SELECT previous, lag(value, 1, 'unset') OVER (PARTITION BY nucleus_id ORDER BY id) "
     "AS before FROM label_events) WHERE previous <> before"),
    ("UMAP coordinates of unknown nuclei or models",
     "SELECT count(*) FROM umap_coords u LEFT JOIN nuclei n ON n.id = u.nucleus_id "
     "LEFT JOIN models m ON m.id = u.model_id WHERE n.id IS NULL OR m.id IS NULL"),
    ("scan/model pairs whose prediction count differs from the scan's nuclei",
     "SELECT count(*) FROM scan_models sm JOIN scans c ON c.id = sm.scan_id "
     "LEFT JOIN (SELECT n.scan_id, p.model_id, count(*) AS k FROM predictions p JOIN nuclei n ON n.id = p.nucleus_id "
     "GROUP BY ALL) p ON p.scan_id = sm.scan_id AND p.model_id = sm.model_id "
     "WHERE coalesce(p.k, 0) <> c.n_nuclei OR sm.n_predictions <> c.n_nuclei"),
    ("scan/model pairs whose embedding count differs from the scan's nuclei",
     "SELECT count(*) FROM scan_models sm JOIN scans c ON c.id = sm.scan_id "
     "LEFT JOIN (SELECT n.scan_id, e.model_id, count(*) AS k FROM embeddings e JOIN nuclei n ON n.id = e.nucleus_id "
     "GROUP BY ALL) e ON e.scan_id = sm.scan_id AND e.model_id = sm.model_id WHERE coalesce(e.k, 0) <> c.n_nuclei"),
    ("nuclei whose review statistics are missing or stale",
     "SELECT count(*) FROM (" + _TRUSTED_PER_NUCLEUS + ") p FULL JOIN review_stats r USING (nucleus_id) "
     "WHERE r.nucleus_id IS NULL OR p.nucleus_id IS NULL OR r.n_models <> p.k"),
    ("predictions of a model on a scan it is not recorded to have scored",
     "SELECT count(*) FROM predictions p JOIN nuclei n ON n.id = p.nucleus_id "
     "LEFT JOIN scan_models sm ON sm.scan_id = n.scan_id AND sm.model_id = p.model_id WHERE sm.scan_id IS NULL"),
]

# Which rows a failed check is about: description -> query giving up to 5 labels (one per row).
_EXAMPLES: dict[str, str] = {
    "scans whose sample does not exist": (
        "SELECT 'scan ' || c.id || ' (' || c.file_name || ', sample id ' || c.sample_id || ')' FROM scans c "
        "LEFT JOIN samples s ON s.id = c.sample_id WHERE s.id IS NULL ORDER BY c.id LIMIT 5"),
    "nuclei whose scan does not exist": (
        "SELECT 'nucleus ' || n.id || ' (scan id ' || n.scan_id || ')' FROM nuclei n "
        "LEFT JOIN scans c ON c.id = n.scan_id WHERE c.id IS NULL ORDER BY n.id LIMIT 5"),
    "predictions of unknown nuclei": (
        "SELECT 'nucleus ' || p.nucleus_id || ' (model id ' || p.model_id || ')' FROM predictions p "
        "LEFT JOIN nuclei n ON n.id = p.nucleus_id WHERE n.id IS NULL ORDER BY p.nucleus_id, p.model_id LIMIT 5"),
    "embeddings of unknown nuclei or models": (
        "SELECT 'nucleus ' || e.nucleus_id || ' (model id ' || e.model_id || ')' FROM embeddings e "
        "LEFT JOIN nuclei n ON n.id = e.nucleus_id LEFT JOIN models m ON m.id = e.model_id "
        "WHERE n.id IS NULL OR m.id IS NULL ORDER BY e.nucleus_id, e.model_id LIMIT 5"),
    "scan/model pairs whose prediction count differs from the scan's nuclei": (
        "SELECT 'scan ' || c.id || ' (' || c.file_name || '), model ' || m.name || ': ' || coalesce(p.k, 0) "
        "|| ' predictions for ' || c.n_nuclei || ' nuclei' FROM scan_models sm JOIN scans c ON c.id = sm.scan_id "
        "JOIN models m ON m.id = sm.model_id LEFT JOIN (SELECT n.scan_id, p.model_id, count(*) AS k FROM predictions p "
        "JOIN nuclei n ON n.id = p.nucleus_id GROUP BY ALL) p ON p.scan_id = sm.scan_id AND p.model_id = sm.model_id "
        "WHERE coalesce(p.k, 0) <> c.n_nuclei OR sm.n_predictions <> c.n_nuclei ORDER BY c.id, m.id LIMIT 5"),
    "scan/model pairs whose embedding count differs from the scan's nuclei": (
        "SELECT 'scan ' || c.id || ' (' || c.file_name || '), model ' || m.name || ': ' || coalesce(e.k, 0) "
        "|| ' embeddings for ' || c.n_nuclei || ' nuclei' FROM scan_models sm JOIN scans c ON c.id = sm.scan_id "
        "JOIN models m ON m.id = sm.model_id LEFT JOIN (SELECT n.scan_id, e.model_id, count(*) AS k FROM embeddings e "
        "JOIN nuclei n ON n.id = e.nucleus_id GROUP BY ALL) e ON e.scan_id = sm.scan_id AND e.model_id = sm.model_id "
        "WHERE coalesce(e.k, 0) <> c.n_nuclei ORDER BY c.id, m.id LIMIT 5"),
    "nuclei whose review statistics are missing or stale": (
        "SELECT 'nucleus ' || coalesce(p.nucleus_id, r.nucleus_id) FROM (" + _TRUSTED_PER_NUCLEUS + ") p "
        "FULL JOIN review_stats r USING (nucleus_id) "
        "WHERE r.nucleus_id IS NULL OR p.nucleus_id IS NULL OR r.n_models <> p.k ORDER BY 1 LIMIT 5"),
}


def check_store(store: Store) -> list[str]:
    """Run every integrity check.

    Returns:
        One line per problem found (empty when the store is consistent).
    """
    problems = []
    cur = store.cursor()
    untrusted = untrusted_model_ids(cur)

    def run(sql: str):
        return cur.execute(sql, {"untrusted": untrusted} if "$untrusted" in sql else None).fetchall()

    for what, sql in _CHECKS:
        n = int(run(sql)[0][0])
        if n:
            rows = [str(r[0]) for r in run(_EXAMPLES[what])] if what in _EXAMPLES else []
            more = ", ..." if n > len(rows) else ""
            problems.append(f"{n} {what}" + (f": {', '.join(rows)}{more}" if rows else ""))
    fits = store.query(
        "SELECT f.id, m.name, f.reducer_path, f.reducer_sha256 FROM umap_fits f JOIN models m ON m.id = f.model_id "
        "WHERE f.id IN (SELECT max(id) FROM umap_fits GROUP BY model_id)"
    )
    for rec in fits.to_dict("records"):
        path = store.folder / rec["reducer_path"]
        if not path.is_file():
            problems.append(f"UMAP map of model {rec['name']!r} missing: {path}")
        elif sha256_file(path) != rec["reducer_sha256"]:
            problems.append(f"UMAP map of model {rec['name']!r} does not match its recorded checksum: {path}")
    mixed = mixed_normalisations(store)
    if mixed:
        problems.append(f"the active models read differently normalised patches: {mixed}, so a plain ingest "
                        f"refuses every scan; {mixed_way_out(store)}")
    return problems + _model_folder_problems(store)


def _folder_state(folder: str, checksum: str) -> str:
    """'' when ``folder`` holds the weights of ``checksum``, else why not."""
    try:
        return weights_mismatch(folder, checksum)
    except ModelLoadError as exc:
        return str(exc)


def retired_model_notes(store: Store) -> list[str]:
    """One informational line per retired model whose folder is gone or holds other weights: not a problem,
    since a retired model scores nothing new (reinstating it checks the folder again)."""
    notes = []
    for name, folder, checksum in store.query("SELECT name, folder, checksum FROM models WHERE folder IS NOT NULL "
                                              "AND retired_at IS NOT NULL ORDER BY id").itertuples(index=False):
        why = _folder_state(folder, checksum)
        if why:
            notes.append(f"retired model {name!r}: {why} (it scores no new scans; its stored predictions stay)")
    return notes


def folder_notes(store: Store) -> list[str]:
    """A line when the store's ``<name>_files`` folder is missing while a ``*_files`` folder without a store of its own
    lies beside it: most likely a backup restored under another name with its folder not renamed."""
    if store.folder.exists():
        return []
    parent = store.path.parent
    orphans = [p for p in sorted(parent.glob("*_files")) if p.is_dir()
               and not any(f.is_file() and f.stem == p.name[:-len("_files")] for f in parent.iterdir())]
    if not orphans:
        return []
    named = ", ".join(str(p) for p in orphans)
    return [f"the store's folder {store.folder} is missing, while {named} lies beside it without a store of its own "
            f"(a backup restored under another name?): rename it to {store.folder.name}, where the store looks for "
            "its UMAP maps, uploads and the backup's copies of model folders and scan files"]


def scan_file_notes(store: Store) -> list[str]:
    """Informational lines on scans whose file is gone (``scans.missing_scan_files``): not a problem, since the
    store keeps each scan's preview, masks and patches (pages, reports and rescoring read those); one line for
    the store's own uploaded copies, one for files ingested by path; and one on files found only as a restored
    backup's copies (``store.scan_copies``), which ``--fix-paths`` records."""
    from store.scans import missing_scan_files

    from store.scan_copies import SCANS_DIR, copies_to_record

    gone = missing_scan_files(store)
    notes = []
    copies = copies_to_record(store)
    if copies:
        named = ", ".join(f"scan {sid} ({path})" for sid, path, _, _ in copies[:5])
        more = f" and {len(copies) - 5} more" if len(copies) > 5 else ""
        notes.append(f"{len(copies)} scan file(s) missing at their recorded place are read from the backup's copies "
                     f"in {store.folder / SCANS_DIR}: {named}{more}; record those as their place with "
                     f"{genuine_command('store check --fix-paths', store.path)}")
    for upload, rows in gone.groupby("upload", sort=True):
        named = ", ".join(f"scan {i} ({p})" for i, p in zip(rows["id"][:5], rows["path"][:5]))
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        if upload:
            notes.append(f"{len(rows)} uploaded scan file(s) missing from {store.folder / 'uploads'}: {named}{more}; "
                         "the store does not need them (it keeps each scan's preview, masks and patches), but a "
                         "backup holds them: copy its <name>_files/uploads/ back to keep the originals")
        else:
            notes.append(f"{len(rows)} scan(s) ingested by path no longer find their file: {named}{more}; the "
                         "store does not need them (it keeps each scan's preview, masks and patches); a backup "
                         "copies them into <name>_files/scans/ (`genuine store backup`), or keep the originals "
                         "elsewhere if your lab's records need them")
    return notes


def _model_folder_problems(store: Store) -> list[str]:
    """One line per active registered model whose folder is gone or holds other weights than registered
    (retired models score nothing new: :func:`retired_model_notes`)."""
    problems, copies = [], None
    for name, folder, checksum in store.query(
            "SELECT name, folder, checksum FROM models WHERE folder IS NOT NULL AND retired_at IS NULL "
            "ORDER BY id").itertuples(index=False):
        try:
            why = weights_mismatch(folder, checksum)
        except ModelLoadError as exc:
            why, missing = str(exc), True
        else:
            missing = False
        if not why:
            continue
        copies = find_copies(store) if copies is None else copies
        way = copy_way_out(store, name, copies)
        if not way and missing:
            way = f"restore the folder or, if it moved, record its new place: {relocate_command(name, store.path)}"
        problems.append(f"registered model {name!r}: {why}" + (f" ({way})" if way else ""))
    return problems


_COUNT_TABLES = ("samples", "scans", "nuclei", "models", "predictions", "detections", "embeddings", "labels",
                 "synthetic_truth", "label_events", "store_events", "sign_outs", "umap_coords", "umap_fits",
                 "probe_runs", "probe_results")
_COUNT_SQL = {t: "SELECT count(*) FROM " + t for t in _COUNT_TABLES}


def store_info(store: Store) -> dict:
    """Schema version, file size, row counts per table and the registered models, each with the patch
    normalisation it reads and its status ('active', or 'retired on ... by ...': it keeps its predictions but
    scores no new scan)."""
    cur = store.cursor()
    info = {
        "path": str(store.path),
        "size_mb": round(store.path.stat().st_size / 1e6, 2) if store.path.is_file() else 0.0,
        "schema_version": int(cur.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0),
        "counts": {t: int(cur.execute(_COUNT_SQL[t]).fetchone()[0]) for t in _COUNT_TABLES},
        "curated_nuclei": count_current_labels(store),
    }
    info["models"] = [{"name": m.name, "kind": m.kind, "preset": m.preset,
                       "patch_normalisation": patch_normalisation(m.config),
                       "status": "active" if pd.isna(m.retired_at) else retired_text(m.retired_at, m.retired_by)}
                      for m in list_models(store).itertuples(index=False)]
    return info
