"""How a model's stored uncertainties were measured: the method (``models.uncertainty_method``) and, for an
MC-dropout standard deviation, the passes each scoring averaged over (``scan_models.mc_samples``, schema step 5;
NULL: scored before the store recorded it). Fewer passes give a noisier std, so a reviewer reading an
uncertainty needs both."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from store.db import Store

#: how pages and reports name the stored uncertainty kinds
METHOD_NAMES = {"mc_dropout_std": "MC-dropout standard deviation", "entropy": "predictive entropy (bits)"}


def _known(value) -> bool:
    return value is not None and not pd.isna(value)


def passes_by_model(store: Store, sample: str | None = None) -> dict[str, list[int | None]]:
    """Model name -> the distinct pass counts its scorings recorded (None: not recorded), smallest first;
    only the scans of ``sample`` when given. Models that scored nothing are left out."""
    df = store.query(
        """
        SELECT DISTINCT m.name, sm.mc_samples
        FROM scan_models sm JOIN models m ON m.id = sm.model_id
        JOIN scans c ON c.id = sm.scan_id JOIN samples s ON s.id = c.sample_id
        WHERE ? IS NULL OR s.name = ?
        ORDER BY m.name, sm.mc_samples NULLS LAST
        """,
        [sample, sample],
    )
    out: dict[str, list[int | None]] = {}
    for name, passes in zip(df["name"], df["mc_samples"]):
        out.setdefault(name, []).append(int(passes) if _known(passes) else None)
    return out


def describe(method: str, passes: Iterable = ()) -> str:
    """What a model's uncertainty is, e.g. 'MC-dropout standard deviation over 10 passes' (``passes``: the
    pass counts its scorings recorded; None or NaN: not recorded)."""
    name = METHOD_NAMES.get(method, str(method))
    if method != "mc_dropout_std":
        return name
    passes = list(passes)
    known = sorted({int(p) for p in passes if _known(p)})
    notes = (["differs between scans"] if len(known) > 1 else []) + (
        ["not recorded for some scans"] if known and len(known) < len(passes) else [])
    if not known:
        return name + (" (passes not recorded)" if passes else "")
    return f"{name} over {' or '.join(map(str, known))} passes" + (f" ({'; '.join(notes)})" if notes else "")


def uncertainty_help(preds: pd.DataFrame) -> str:
    """What each model's uncertainty of one nucleus is (``preds``: ``store.nuclei.nucleus_predictions``), e.g.
    'uncertainty of the prediction: genuine_cpu: MC-dropout standard deviation over 10 passes; ...'."""
    return "uncertainty of the prediction: " + "; ".join(
        f"{m}: {describe(method, [passes])}"
        for m, method, passes in zip(preds["model"], preds["uncertainty_method"], preds["mc_samples"]))


def scoring_passes(store: Store, name: str, default: int) -> int | None:
    """The MC-dropout passes that score the model ``name`` as its stored uncertainties were: 0 when they are
    entropies, else the pass count most of its scorings recorded (``default`` when none is recorded);
    None when it has stored no predictions (or their method is unknown)."""
    from store.registry import stored_uncertainty

    method = stored_uncertainty(store, name)
    if method not in METHOD_NAMES:
        return None
    if method == "entropy":
        return 0
    common = store.scalar("SELECT sm.mc_samples FROM scan_models sm JOIN models m ON m.id = sm.model_id "
                          "WHERE m.name = ? AND sm.mc_samples > 0 GROUP BY sm.mc_samples "
                          "ORDER BY count(*) DESC, sm.mc_samples DESC LIMIT 1", [name])
    return default if common is None else int(common)
