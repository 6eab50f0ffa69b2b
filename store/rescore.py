"""Score stored scans with a model registered after they were ingested (e.g. one retrained on curated labels).

The model reads the patches the store keeps (the ingest's model input, as 8-bit PNG: the
same patches a curated-label training set is made of). Each scan is written in its own
transaction, with its predictions, detections, embeddings and review statistics, so an
interrupted run leaves whole scans scored and running it again scores the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from genuine_core.errors import InputError, StoreError
from genuine_core.pipeline import (DEFAULT_MC_SAMPLES, MAX_MC_SAMPLES, ScanResult, ScoringModel, decode_patch,
                                   load_model, score_scans)
from store import registry
from store.db import Store
from store.location import genuine_command
from store.samples import name_list
from store.scans import add_model_outputs


@dataclass
class ScanScore:
    """What happened to one scan: ``status`` ``scored`` or ``skipped`` (``reason`` says why)."""

    scan_id: int
    sample: str
    file_name: str
    status: str
    n_nuclei: int = 0
    reason: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        """One line for the CLI and the page."""
        what = f"scan {self.scan_id} ({self.sample}: {self.file_name})"
        if self.status == "scored":
            return f"{what}: scored {self.n_nuclei} nuclei in {self.seconds:.1f} s"
        return f"{what}: skipped, {self.reason}"


def check_passes(mc_samples: int | None) -> None:
    """Refuse an MC-dropout pass count out of range (None: not given).

    Raises:
        InputError: ``mc_samples`` is not in [0, MAX_MC_SAMPLES].
    """
    if mc_samples is not None and not 0 <= mc_samples <= MAX_MC_SAMPLES:
        raise InputError(f"--mc-samples must be in [0, {MAX_MC_SAMPLES}], got {mc_samples}")


def model_to_score(store: Store, name_or_folder: str, mc_samples: int | None = None) -> ScoringModel:
    """The model ``name_or_folder`` names: a model folder, or the name of a registered model (loaded from the
    folder it was registered from, whose weights must still be the registered ones).

    Args:
        mc_samples: MC-dropout passes for the uncertainty; None: as the model's stored uncertainties were
            measured (``registry.as_stored``: the pass count its scorings recorded, else the default).

    Raises:
        InputError: neither a folder nor a registered name, or ``mc_samples`` out of range.
        StoreError: a retired model (the message says how to reinstate it).
        ModelLoadError: the folder cannot be loaded, holds an unfinished run, or no longer holds the
            registered weights.
    """
    if not name_or_folder.strip():
        raise InputError("no model given: name a model folder or a registered model")
    check_passes(mc_samples)
    passes = DEFAULT_MC_SAMPLES if mc_samples is None else mc_samples
    as_stored = registry.as_stored if mc_samples is None else (lambda _store, models: models)
    folder = Path(name_or_folder).expanduser()
    if folder.is_dir():
        return as_stored(store, [load_model(folder, mc_samples=passes)])[0]
    models = registry.list_models(store)
    row = models[models["name"] == name_or_folder]
    if row.empty:
        raise InputError(f"{name_or_folder!r} is neither a model folder nor a registered model "
                         f"(registered: {', '.join(models['name']) or 'none'})")
    registry.refuse_retired(store, name_or_folder)
    if not isinstance(row.iloc[0]["folder"], str) or not Path(row.iloc[0]["folder"]).is_dir():
        raise InputError(f"model {name_or_folder!r}: its folder {row.iloc[0]['folder']} is not on this machine")
    model = load_model(row.iloc[0]["folder"], name=name_or_folder, mc_samples=passes)
    registry.verify_registered(store, model, name_or_folder)
    return as_stored(store, [model])[0]


def stored_scan_count(store: Store) -> int:
    """Number of scans in the store."""
    return int(store.cursor().execute("SELECT count(*) FROM scans").fetchone()[0])


def unscored_scans(store: Store, model_name: str, sample: str | None = None) -> pd.DataFrame:
    """Scans (optionally of one sample) the model named ``model_name`` has not scored: ``id, sample,
    file_name, n_nuclei, patch_size, patch_normalisation``, by id. Every scan when the name is not registered."""
    return store.query(
        """
        SELECT c.id, s.name AS sample, c.file_name, c.n_nuclei, c.patch_size, c.patch_normalisation
        FROM scans c JOIN samples s ON s.id = c.sample_id
        WHERE (? IS NULL OR s.name = ?)
          AND c.id NOT IN (SELECT sm.scan_id FROM scan_models sm JOIN models m ON m.id = sm.model_id
                           WHERE m.name = ?)
        ORDER BY c.id
        """,
        [sample, sample, model_name],
    )


def skip_reason(scan: dict, patch_size: int, normalisation: str) -> str:
    """Why a model taking ``patch_size``-px patches normalised ``normalisation`` cannot read the stored
    patches of ``scan`` (a row of :func:`unscored_scans`); '' when it can."""
    if int(scan["patch_size"]) < patch_size:
        return f"its patches are {scan['patch_size']} px, the model needs {patch_size} px"
    if scan["patch_normalisation"] != normalisation:
        return f"its patches are {scan['patch_normalisation']!r}-normalised, the model expects {normalisation!r}"
    return ""


def registered_inputs(config: dict) -> tuple[int, str]:
    """Patch size (px) and normalisation a registered model reads, from its stored ``config`` (no weights loaded)."""
    return int(config["patch_size"]), registry.patch_normalisation(config)


def _stored_patches(store: Store, scan_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus ids (N,) int64 and their patches (N, 3, P, P) float32 in [0, 1] of one scan, by id.

    Raises:
        StoreError: a nucleus has no stored patch.
    """
    rows = store.cursor().execute("SELECT id, patch_png FROM nuclei WHERE scan_id = ? ORDER BY id",
                                  [scan_id]).fetchall()
    if any(png is None for _, png in rows):
        raise StoreError(f"scan {scan_id}: some nuclei have no stored patch "
                         f"(run {genuine_command('store check', store.path)})")
    ids = np.asarray([r[0] for r in rows], dtype=np.int64)
    patches = np.stack([decode_patch(png) for _, png in rows]) if rows else np.zeros((0, 3, 1, 1), np.float32)
    return ids, patches


def _score_one(store: Store, model: ScoringModel, model_id: int, scan: dict) -> ScanScore:
    """Score one scan's stored patches and write the outputs in one transaction."""
    t0 = time.perf_counter()
    ids, patches = _stored_patches(store, int(scan["id"]))
    result = ScanResult(info={"file_name": scan["file_name"]}, masks=np.zeros((0, 0), np.int32),
                        nuclei=pd.DataFrame({"nucleus_id": ids}), patches=patches,
                        patch_size=int(scan["patch_size"]), n_border_skipped=0, outputs={},
                        preview=np.zeros((0, 0, 3), np.uint8), normalisation=scan["patch_normalisation"])
    score_scans([result], [model])
    if not add_model_outputs(store, int(scan["id"]), ids, result, {model.name: model_id}):
        return ScanScore(int(scan["id"]), scan["sample"], scan["file_name"], "skipped",
                         reason="scored meanwhile by another writer")
    return ScanScore(int(scan["id"]), scan["sample"], scan["file_name"], "scored", len(ids),
                     seconds=time.perf_counter() - t0)


def score_stored_scans(store: Store, model: ScoringModel, sample: str | None = None, progress: bool = True,
                       on_scan: Callable[[ScanScore, int, int], None] | None = None,
                       by: str | None = None) -> list[ScanScore]:
    """Score every stored scan (optionally of one sample) that ``model`` has not scored yet.

    Args:
        store: open writable store.
        model: the model; registered when it can read some scan's patches (a name registered with other
            weights is refused, before anything is read).
        sample: only this sample's scans.
        progress: a progress bar on stderr.
        on_scan: called after each scan with (its outcome, scans done, scans to do).
        by: who scores (recorded when the model is registered now).

    Returns:
        One :class:`ScanScore` per scan considered, in scan order. Scans whose stored patches the
        model cannot read (smaller, or normalised otherwise) are skipped with the reason. When the
        model has a UMAP map, the newly scored nuclei are placed on it.

    Raises:
        InputError: an unknown sample.
        StoreError: the model's name is registered with other weights, or is retired.
    """
    from tqdm.auto import tqdm

    if sample is not None and store.query("SELECT 1 FROM samples WHERE name = ?", [sample]).empty:
        raise InputError(f"no sample named {sample!r} in the store; samples: {name_list(store)}")
    registry.check_name_free(store, model)  # also when there is nothing to score: say so, not "all scored"
    todo = unscored_scans(store, model.name, sample).to_dict("records")
    reasons = [skip_reason(scan, model.patch_size, model.normalisation) for scan in todo]
    # registered only when it scores something: a model that cannot read this store's patches stays out
    model_id = registry.register_model(store, model, by) if not all(reasons) else None
    done: list[ScanScore] = []
    for scan, why in zip(tqdm(todo, desc=f"scoring with {model.name}", unit="scan",
                              disable=not progress or not todo), reasons):
        outcome = (ScanScore(int(scan["id"]), scan["sample"], scan["file_name"], "skipped", reason=why) if why
                   else _score_one(store, model, model_id, scan))
        done.append(outcome)
        if on_scan is not None:
            on_scan(outcome, len(done), len(todo))
    if any(o.status == "scored" for o in done):
        from store.umap import place_missing

        place_missing(store, model.name)  # on the model's map, when it has one
    return done
