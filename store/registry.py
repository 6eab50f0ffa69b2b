"""Registered models: name, kind, preset, weights checksum, config and metrics."""

from __future__ import annotations

import json
import logging
import shlex
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from genuine_core.errors import ModelLoadError, StoreError
from genuine_core.pipeline import ScoringModel
from store.db import Store
from store.events import record_event
from store.location import genuine_command
from store.review_stats import rebuild_for_changed, refresh_review_stats, untrusted_model_ids

logger = logging.getLogger(__name__)


#: checksums of the models whose weak validation this process has warned about
_WARNED: set[str] = set()
#: how each uncertainty method is asked for on the command line
_METHOD_OPTION = {"mc_dropout_std": "--mc-samples 1 or more", "entropy": "--mc-samples 0"}


def check_name_free(store: Store, model: ScoringModel) -> None:
    """Refuse ``model`` when its name is registered with other weights (its own weights are fine),
    when its weights are registered under another name (the same calls would count twice, as two
    models), or when its stored predictions measure uncertainty another way (one threshold reads them all).

    Raises:
        StoreError: the name is registered with another checksum, the checksum under another name, or
            the name with predictions whose ``uncertainty_method`` differs from ``model``'s; or the name is
            retired (:func:`refuse_retired`).
    """
    twin = store.query("SELECT name FROM models WHERE checksum = ? AND name <> ?", [model.checksum, model.name])
    if not twin.empty:
        raise StoreError(f"model {model.name!r} has the same weights as the model {twin.at[0, 'name']!r} "
                         f"(checksum {model.checksum[:12]}...; registered, or given in the same command): a model "
                         f"is registered once, use {twin.at[0, 'name']!r} only")
    row = store.query("SELECT checksum FROM models WHERE name = ?", [model.name])
    if row.empty:
        return
    if row.at[0, "checksum"] != model.checksum:
        raise StoreError(
            f"model {model.name!r} is registered with other weights (checksum {row.at[0, 'checksum'][:12]}..., "
            f"now {model.checksum[:12]}...); register the new weights under another name (rename the folder)"
        )
    refuse_retired(store, model.name)
    stored = stored_uncertainty(store, model.name)
    if stored is not None and stored != model.uncertainty_method:
        how = f" ({_METHOD_OPTION[stored]})" if stored in _METHOD_OPTION else ""
        raise StoreError(
            f"model {model.name!r} has stored uncertainties measured as {stored}{how}, this run would store "
            f"{model.uncertainty_method}; use the same setting as before or leave --mc-samples out (each model "
            "then keeps its kind), so that one threshold reads every nucleus of this model")


def stored_uncertainty(store: Store, name: str) -> str | None:
    """The ``uncertainty_method`` of a registered model's stored predictions (None: no predictions yet)."""
    row = store.query("SELECT m.uncertainty_method FROM models m WHERE m.name = ? "
                      "AND EXISTS (SELECT 1 FROM predictions p WHERE p.model_id = m.id)", [name])
    return None if row.empty else row.iat[0, 0]


def as_stored(store: Store, models: list[ScoringModel]) -> list[ScoringModel]:
    """``models``, each loaded again where its stored predictions measure uncertainty otherwise (with or
    without MC dropout, or over another number of passes: ``store.uncertainty.scoring_passes``), so that
    scoring with the default setting adds to what is there. Models without a folder are left as they are
    (registration then says what differs)."""
    from genuine_core.pipeline import DEFAULT_MC_SAMPLES, load_model
    from store.uncertainty import scoring_passes

    out = []
    for m in models:
        passes = scoring_passes(store, m.name, DEFAULT_MC_SAMPLES)
        if passes is not None and passes != m.mc_samples and m.folder:
            m = load_model(m.folder, name=m.name, batch_size=m.batch_size, mc_samples=passes)
        out.append(m)
    return out


def register_model(store: Store, model: ScoringModel, by: str | None = None) -> int:
    """Id of ``model`` in the store, registering it on first sight (a ``store_events`` row says who: ``by``).

    A model is known by name. Registering a name again with the same weights checksum
    refreshes its metrics and folder (a new folder is an event too); with different weights it is
    refused, because the stored predictions would then mix two models under one name.

    Raises:
        StoreError: the name is registered with another checksum.
    """
    check_name_free(store, model)
    row = store.query("SELECT id, folder FROM models WHERE name = ?", [model.name])
    if not row.empty:
        with store.transaction() as cur:
            before = untrusted_model_ids(cur)
            cur.execute("UPDATE models SET metrics = ?, uncertainty_method = ? WHERE id = ?",
                        [json.dumps(model.metrics), model.uncertainty_method, int(row.at[0, "id"])])
            rebuild_for_changed(cur, before)  # new metrics may make its validation weak, or no longer
            if model.folder:
                _record_folder(cur, model.name, model.checksum, row.at[0, "folder"], model.folder, by)
        return int(row.at[0, "id"])
    from store.summary import validation_rates, weak_validation

    rates = validation_rates(model.metrics) or validation_rates(model.metrics, useful_only=False)
    if (rates is None or weak_validation(rates)) and model.checksum not in _WARNED:
        _WARNED.add(model.checksum)  # once per process (an ingest registers in a dry run first)
        logger.warning("model %r: %s; its calls are flagged on the Cases page and in sample reports", model.name,
                       "no validation sensitivity/specificity" if rates is None else
                       f"weak validation (sensitivity {rates['sensitivity']:.2f}, specificity "
                       f"{rates['specificity']:.2f}, on {rates['n_positive']} MNA and {rates['n_negative']} non-MNA "
                       "nuclei)")
    with store.transaction() as cur:
        new = cur.execute(
            "INSERT INTO models (name, kind, preset, patch_size, checksum, uncertainty_method, config, metrics, "
            "folder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [model.name, model.kind, model.preset, int(model.patch_size), model.checksum,
             model.uncertainty_method, json.dumps(model.config), json.dumps(model.metrics), model.folder],
        ).fetchone()
        record_event(cur, "register model", model.name, model.checksum, by,
                     {"kind": model.kind, "preset": model.preset, "folder": model.folder})
    return int(new[0])


def _record_folder(cur, name: str, checksum: str, previous: str | None, folder: str, by: str | None) -> None:
    """Set a registered model's folder; a new place (moved, or a restored backup) is a 'relocate model' event."""
    if folder == previous:
        return
    cur.execute("UPDATE models SET folder = ? WHERE name = ?", [folder, name])
    record_event(cur, "relocate model", name, checksum, by, {"folder": folder, "previous folder": previous})


def relocate_command(name: str, db) -> str:
    """The ``genuine store relocate-model`` command line for ``name`` in the store at ``db`` (NEW_FOLDER to fill in)."""
    return genuine_command(f"store relocate-model {shlex.quote(name)} NEW_FOLDER", db)


def weights_mismatch(folder: str | Path, checksum: str) -> str:
    """'' when ``folder`` holds the weights of ``checksum``, else a sentence saying it holds others (both checksums).

    Raises:
        ModelLoadError: ``folder`` is missing or not a complete model folder.
    """
    from genuine_core.models.folder import folder_digest

    found = folder_digest(folder)
    return "" if found == checksum else (f"{folder} holds other weights than registered (checksum {checksum[:12]}... "
                                         f"registered, {found[:12]}... there)")


def relocate_model(store: Store, name: str, folder: str | Path, by: str | None = None) -> str | None:
    """Record where a registered model's folder is now (``genuine store relocate-model``), after it was moved,
    renamed or restored elsewhere; the folder must hold the weights registered.

    Returns:
        the previous folder (None when none was recorded).

    Raises:
        StoreError: no such registered model, or ``folder`` holds other weights. ModelLoadError: ``folder``
            is not a complete model folder.
    """
    from genuine_core.models.folder import folder_digest

    row = store.query("SELECT folder, checksum FROM models WHERE id = ?", [model_id(store, name)])
    previous, checksum = row.at[0, "folder"], row.at[0, "checksum"]
    found = folder_digest(folder)
    if found != checksum:
        raise StoreError(f"{folder} holds other weights than the registered model {name!r} (checksum "
                         f"{checksum[:12]}... registered, {found[:12]}... there)")
    with store.transaction() as cur:
        _record_folder(cur, name, checksum, previous, str(Path(folder).resolve()), by)
    return previous


def verify_registered(store: Store, model: ScoringModel, name: str | None = None) -> None:
    """Refuse a model loaded from a registered folder whose weights are not the ones registered.

    The checksum recorded at registration (``folder_digest``: the sha256 of the folder's
    verified checksum list) must equal the loaded model's. A folder whose files were
    replaced since, even with a consistent new checksum list, is refused.

    Args:
        model: the model as loaded now.
        name: the registered name (default ``model.name``).

    Raises:
        ModelLoadError: the store recorded other weights under that name.
        StoreError: no model of that name is registered.
    """
    name = name or model.name
    recorded = store.scalar("SELECT checksum FROM models WHERE name = ?", [name])
    if recorded is None:
        raise StoreError(f"no model named {name!r} in the store")
    if recorded != model.checksum:
        raise ModelLoadError(
            f"model {name!r}: the folder {model.folder} no longer holds the weights registered in the store "
            f"(checksum {recorded[:12]}... recorded, {model.checksum[:12]}... now); refusing to use it")


def model_id(store: Store, name: str) -> int:
    """Id of a registered model.

    Raises:
        StoreError: no such model.
    """
    mid = store.scalar("SELECT id FROM models WHERE name = ?", [name])
    if mid is None:
        known = store.query("SELECT name FROM models ORDER BY name")["name"].tolist()
        raise StoreError(f"no model named {name!r} in the store (registered: {', '.join(known) or 'none'})")
    return int(mid)


def list_models(store: Store) -> pd.DataFrame:
    """Registered models with prediction counts.

    Returns:
        DataFrame ``id, name, kind, preset, patch_size, checksum, uncertainty_method, folder, registered_at,
        retired_at (NaT: active), retired_by, config (dict), metrics (dict), n_predictions, n_scans``, ordered by id.
    """
    df = store.query(
        """
        SELECT m.id, m.name, m.kind, m.preset, m.patch_size, m.checksum, m.uncertainty_method, m.folder,
               m.registered_at, m.retired_at, m.retired_by,
               m.config, m.metrics,
               coalesce(sum(sm.n_predictions), 0)::BIGINT AS n_predictions,
               count(sm.scan_id)::INTEGER AS n_scans
        FROM models m LEFT JOIN scan_models sm ON sm.model_id = m.id
        GROUP BY ALL ORDER BY m.id
        """
    )
    for col in ("config", "metrics"):
        df[col] = [json.loads(v) if isinstance(v, str) and v else {} for v in df[col]]
    return df


#: what a model's removal deletes, in order: table -> rows of the model ($model: its id)
_MODEL_ROWS = {
    "probe_results": "FROM probe_results WHERE run_id IN (SELECT id FROM probe_runs WHERE model_id = $model)",
    "probe_runs": "FROM probe_runs WHERE model_id = $model",
    "umap_coords": "FROM umap_coords WHERE model_id = $model",
    "umap_fits": "FROM umap_fits WHERE model_id = $model",
    "embeddings": "FROM embeddings WHERE model_id = $model",
    "detections": "FROM detections WHERE model_id = $model",
    "predictions": "FROM predictions WHERE model_id = $model",
    "scan_models": "FROM scan_models WHERE model_id = $model",
    "models": "FROM models WHERE id = $model",
}


def plan_model_removal(store: Store, name: str) -> dict[str, int]:
    """Rows :func:`remove_model` would delete, by table (read only).

    Raises:
        StoreError: no model of that name.
    """
    params = {"model": model_id(store, name)}
    cur = store.cursor()
    return {t: int(cur.execute("SELECT count(*) " + where, params).fetchone()[0]) for t, where in _MODEL_ROWS.items()}


def remove_model(store: Store, name: str, by: str | None = None) -> dict[str, int]:
    """Unregister a model and delete everything it produced (predictions, detections, embeddings, UMAP maps
    and coordinates, probe runs, ``scan_models`` rows) in ONE transaction; the review statistics of the
    scans it had scored are rebuilt from the remaining predictions. Label events are not touched. Its
    map files are deleted after the commit; its model folder is left alone.

    Args:
        by: who removes it (kept in ``store_events`` with the model's checksum and the rows deleted).

    Returns:
        Rows deleted, by table.

    Raises:
        StoreError: no model of that name.
    """
    mid = model_id(store, name)
    params = {"model": mid}
    with store.transaction() as cur:
        checksum, folder = cur.execute("SELECT checksum, folder FROM models WHERE id = $model", params).fetchone()
        scans = [int(r[0]) for r in cur.execute("SELECT scan_id FROM scan_models WHERE model_id = $model",
                                                params).fetchall()]
        maps = [str(r[0]) for r in cur.execute("SELECT reducer_path FROM umap_fits WHERE model_id = $model",
                                               params).fetchall()]
        deleted = {t: int(cur.execute("DELETE " + where, params).fetchone()[0]) for t, where in _MODEL_ROWS.items()}
        refresh_review_stats(cur, scans)  # in place, unless nuclei lost their only prediction
        record_event(cur, "remove model", name, checksum, by,
                     {"folder": folder, "deleted": {t: n for t, n in deleted.items() if n}})
    for rel in maps:  # after the commit: a leftover file is harmless, a missing referenced one is not
        (store.folder / rel).unlink(missing_ok=True)
    logger.info("model %r removed by %s: %s", name, by or "an unnamed user", deleted)
    return deleted


# -- retiring: a model that keeps what it stored but scores no new scan ----------------------------------------


def retired(store: Store, name: str) -> tuple | None:
    """``(retired_at, retired_by)`` of a retired registered model; None when it is active or not registered."""
    row = store.query("SELECT retired_at, retired_by FROM models WHERE name = ? AND retired_at IS NOT NULL", [name])
    return None if row.empty else (row.at[0, "retired_at"], row.at[0, "retired_by"])


def retired_text(when, by: str | None) -> str:
    """'retired on 2026-12-05 01:02 by Ann' (by nobody named: without 'by')."""
    return f"retired on {str(when)[:16]}" + (f" by {by}" if by else "")


def refuse_retired(store: Store, name: str) -> None:
    """Refuse to score with a retired model, saying how to reinstate it.

    Raises:
        StoreError: ``name`` is a retired registered model.
    """
    found = retired(store, name)
    if found is not None:
        again = genuine_command(f"store reinstate-model {shlex.quote(name)} --by NAME", store.path)
        raise StoreError(f"model {name!r} is {retired_text(*found)}: it scores no new scans (its stored "
                         f"predictions stay); to score with it again, reinstate it: {again}")


def patch_normalisation(config: dict) -> str:
    """The patch normalisation a registered model reads, from its stored ``config`` (none recorded: 'percentile')."""
    from genuine_core.patches import LEGACY_NORMALISATION

    return str(config.get("patch_normalisation", LEGACY_NORMALISATION))


def _active_reads(models: pd.DataFrame) -> dict[str, str]:
    """Name -> patch normalisation of each model ingest runs (of :func:`list_models`' ``models``): not retired,
    with a recorded folder."""
    active = models[models["retired_at"].isna() & models["folder"].notna()]
    return {r.name: patch_normalisation(r.config) for r in active.itertuples()}


def _retire_command(db) -> str:
    """The ``genuine store retire-model`` command line for the store at ``db`` (NAMEs to fill in)."""
    return genuine_command("store retire-model NAME --by NAME", db)


def mixed_normalisations(store: Store) -> str:
    """'' when the active models read patches normalised one way, else which read which, e.g.
    "'percentile' (old), 'spot_flux' (new_a, new_b)": ingest then refuses every scan (it cuts one way).
    Models without a recorded folder are left out, as ingest leaves them out."""
    reads: dict[str, list[str]] = {}
    for name, kind in _active_reads(list_models(store)).items():
        reads.setdefault(kind, []).append(name)
    return "" if len(reads) < 2 else ", ".join(f"{k!r} ({', '.join(v)})" for k, v in sorted(reads.items()))


def mixed_way_out(store: Store) -> str:
    """What to do about :func:`mixed_normalisations`: retire the models of one normalisation, or ingest with some."""
    return (f"retire the models of one normalisation ({_retire_command(store.path)}, or Retire on the Models page), "
            "or run only some with genuine ingest --models")


def refuse_other_normalisation(store: Store, name: str) -> None:
    """Refuse to reinstate ``name`` when an active model reads patches normalised otherwise: ingest cuts each
    scan one way for all its models, so it would refuse every scan afterwards.

    Raises:
        StoreError: an active model's patch normalisation differs from ``name``'s (both named).
    """
    models = list_models(store)
    own = patch_normalisation(models.loc[models["name"] == name, "config"].iloc[0])
    other = {n: kind for n, kind in _active_reads(models).items() if kind != own}
    if other:
        kinds = sorted(set(other.values()))
        raise StoreError(
            f"model {name!r} not reinstated: it reads {own!r} patches, the active model(s) "
            f"{', '.join(other)} read {' and '.join(map(repr, kinds))} ones, and ingest cuts a scan one way for all "
            f"its models; keep it retired (its predictions stay) or first retire those: {_retire_command(store.path)}")


def retire_model(store: Store, name: str, by: str | None = None) -> None:
    """Retire a registered model (``genuine store retire-model``): its predictions, maps and rows on the Cases
    page stay, but it scores no new scan, ingest leaves it out (and out of the patch-normalisation check), and
    ``store check`` no longer needs its folder. A 'retire model' event records who.

    Raises:
        StoreError: no such model, or it is retired already.
    """
    mid = model_id(store, name)
    with store.transaction() as cur:
        checksum, folder, when, who = cur.execute(
            "SELECT checksum, folder, retired_at, retired_by FROM models WHERE id = ?", [mid]).fetchone()
        if when is not None:
            raise StoreError(f"model {name!r} is already {retired_text(when, who)}; nothing changed")
        # naive UTC, as scans.ingested_at (the Cases page compares the two)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        before = untrusted_model_ids(cur)
        cur.execute("UPDATE models SET retired_at = ?, retired_by = ? WHERE id = ?", [now, by or None, mid])
        rebuild_for_changed(cur, before)  # its calls leave the Review queue's aggregates
        record_event(cur, "retire model", name, checksum, by, {"folder": folder})
    logger.info("model %r retired by %s", name, by or "an unnamed user")


def reinstate_model(store: Store, name: str, by: str | None = None) -> None:
    """Let a retired model score new scans again (``genuine store reinstate-model``), once its recorded folder
    holds the registered weights (as :func:`relocate_model` checks); a 'reinstate model' event records who.

    Raises:
        StoreError: no such model, it is not retired, it reads patches normalised otherwise than an active
            model (:func:`refuse_other_normalisation`), or its folder holds other weights (or none is recorded).
        ModelLoadError: its folder is missing or incomplete.
    """
    mid = model_id(store, name)
    folder, checksum, when = store.cursor().execute(
        "SELECT folder, checksum, retired_at FROM models WHERE id = ?", [mid]).fetchone()
    if when is None:
        raise StoreError(f"model {name!r} is not retired (it scores new scans); nothing changed")
    refuse_other_normalisation(store, name)
    relocate = relocate_command(name, store.path)
    if not folder:
        raise StoreError(f"model {name!r} has no recorded folder; record where its weights are first: {relocate}")
    try:
        why = weights_mismatch(folder, checksum)
    except ModelLoadError as exc:
        raise ModelLoadError(f"model {name!r} not reinstated: {exc}; restore the folder or, if it moved, "
                             f"record its new place first: {relocate}") from None
    if why:
        raise StoreError(f"model {name!r} not reinstated: {why}; record the folder that holds them first: {relocate}")
    with store.transaction() as cur:
        if cur.execute("SELECT retired_at FROM models WHERE id = ?", [mid]).fetchone()[0] is None:
            raise StoreError(f"model {name!r} is not retired (it scores new scans); nothing changed")
        before = untrusted_model_ids(cur)
        cur.execute("UPDATE models SET retired_at = NULL, retired_by = NULL WHERE id = ?", [mid])
        rebuild_for_changed(cur, before)  # its calls count in the Review queue again (unless weak)
        record_event(cur, "reinstate model", name, checksum, by, {"folder": folder})
    logger.info("model %r reinstated by %s", name, by or "an unnamed user")
