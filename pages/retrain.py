"""Background retraining runs of the Models page (no widgets here; ``pages/models.py`` renders them).

A run exports the current curated labels as a ``LabelledPatches`` training set, starts
``genuine train`` as a separate process (it does not touch the store) and writes into
``<store files>/runs/<run id>/``: ``curated.npz``, ``train.log`` and the model folder.
The run records live in one dict per server process, so every browser session on the
server sees the same runs; they are forgotten when the server restarts (the folders stay).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import streamlit as st

from genuine_core.errors import InputError
from pages import common
from training.cli_train import PRESET_DEFAULTS

#: fewest usable curated nuclei a run starts with
MIN_CURATED = 10
#: fewest validation nuclei of each class whose sensitivity / specificity are worth reading
MIN_VAL_PER_CLASS = 10
#: validation sensitivity or specificity below this: the model is no better than a constant answer
MIN_RATE = 0.5
#: a new model's name: it becomes a folder name and the store's model name
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@st.cache_resource(show_spinner=False)
def runs() -> dict:
    """Run id -> run record, shared by every session of this server process (survives reruns and pages)."""
    return {}


def free_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base-2``, ``base-3``, ... : the first name not in ``taken`` (a new model's default name)."""
    return next(n for n in (base if k == 1 else f"{base}-{k}" for k in range(1, len(taken) + 2)) if n not in taken)


def preset_settings(preset: str) -> dict:
    """What ``genuine train --preset`` sets: ``epochs``, ``patience``, ``per_epoch`` (training patches per epoch)."""
    epochs, patience, per_epoch = PRESET_DEFAULTS[preset]
    return {"epochs": epochs, "patience": patience, "per_epoch": per_epoch}


def check_curated(store) -> int:
    """Number of usable curated nuclei.

    Raises:
        InputError: fewer than :data:`MIN_CURATED`, or only one class.
    """
    from store.labels import current_labels

    cur = current_labels(store)
    cur = cur[~cur["excluded"].astype(bool) & cur["label"].notna()]
    if len(cur) < MIN_CURATED or cur["label"].nunique() < 2:
        raise InputError(f"need at least {MIN_CURATED} curated nuclei of both classes to retrain, "
                         f"have {len(cur)} ({cur['label'].value_counts().to_dict()})")
    return len(cur)


def start_run(store, kind: str, preset: str, epochs: int, name: str, detector: str | None) -> str:
    """Export the training set and start ``genuine train`` in the background; return the run id.

    The preset's early-stopping patience is passed explicitly (the page shows it); ``epochs`` caps the run.

    Raises:
        InputError: a name that cannot be a folder and model name, or too few curated nuclei.
    """
    if not MODEL_NAME.fullmatch(name):
        raise InputError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, not starting "
                         "with '.', '_' or '-')")
    n = check_curated(store)
    run_id = f"{name}-{datetime.now():%Y%m%d-%H%M%S-%f}"  # microseconds: two starts never share a folder
    folder = store.folder / "runs" / run_id
    folder.mkdir(parents=True)
    from store.export import export_labels

    export_labels(store, folder / "curated.npz")  # LabelledPatches, as `genuine train --data` reads
    out = folder / name
    patience = preset_settings(preset)["patience"]
    cmd = [sys.executable, "-m", "genuine_core.cli", "train", "--kind", kind, "--preset", preset,
           "--data", str(folder / "curated.npz"), "--out", str(out), "--epochs", str(epochs),
           "--patience", str(patience), "--threads", "2"]
    if kind == "genuine" and detector:
        cmd += ["--detector", detector]
    log = open(folder / "train.log", "w", encoding="utf-8")  # noqa: SIM115 (owned by the child's lifetime)
    try:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(common.REPO))
    except OSError:
        log.close()
        raise
    runs()[run_id] = {"proc": proc, "log_handle": log, "log": folder / "train.log", "out": out, "name": name,
                      "epochs": epochs, "patience": patience, "preset": preset, "n": n, "started": time.time(),
                      "cmd": cmd, "registered": False, "kind": kind}
    return run_id


def poll(rec: dict) -> int | None:
    """The run's exit code (None while it runs); on the first look after the end, fix its end time.

    The end time is the log file's last write (the child's final line), not the moment a page
    happened to look, so a run nobody watched still shows how long it took.
    """
    rc = rec["proc"].poll()
    if rc is not None and "ended" not in rec:
        log = Path(rec["log"])
        rec["ended"] = max(rec["started"], min(time.time(), log.stat().st_mtime if log.is_file() else time.time()))
        if rec.get("log_handle") is not None and not rec["log_handle"].closed:
            rec["log_handle"].close()
    return rc


def duration(rec: dict) -> float:
    """Seconds from start to end (to now while running)."""
    return rec.get("ended", time.time()) - rec["started"]


def validation(out: str | Path) -> dict | None:
    """The validation record of a finished model folder (``metrics.json["validation"]``), None when absent."""
    f = Path(out) / "metrics.json"
    try:
        metrics = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    val = metrics.get("validation", metrics) if isinstance(metrics, dict) else None
    return val if isinstance(val, dict) and "sensitivity" in val else None


def _number(val: dict, key: str) -> float:
    """``val[key]`` as a float (NaN when missing or not a number)."""
    try:
        return float(val.get(key))
    except (TypeError, ValueError):
        return math.nan


def degenerate_reasons(val: dict | None) -> list[str]:
    """Why validation says a model should not be trusted (empty list: nothing found).

    Flags missing figures, fewer than :data:`MIN_VAL_PER_CLASS` validation nuclei of either class,
    and sensitivity or specificity below :data:`MIN_RATE` (e.g. a model that always answers MNA).
    """
    if not val:
        return ["the run wrote no validation figures"]
    reasons = []
    for key, what in (("n_positive", "MNA"), ("n_negative", "non-MNA")):
        n = _number(val, key)
        if not n >= MIN_VAL_PER_CLASS:
            n = 0 if math.isnan(n) else int(n)
            reasons.append(f"only {n} {what} {'nucleus' if n == 1 else 'nuclei'} in the validation split "
                           f"(want at least {MIN_VAL_PER_CLASS})")
    for key, what, misses in (("sensitivity", "sensitivity", "MNA"), ("specificity", "specificity", "non-MNA")):
        x = _number(val, key)
        if math.isnan(x):
            reasons.append(f"validation {what} is undefined")
        elif x < MIN_RATE:
            reasons.append(f"validation {what} {x:.3f}: it misses most {misses} nuclei")
    return reasons


def register(run_id: str) -> None:
    """Register a finished run's model folder in the store; on failure keep the message in the record."""
    from genuine_core.errors import GenuineError
    from genuine_core.pipeline import load_model
    from store.registry import register_model

    rec = runs()[run_id]
    try:
        register_model(common.get_store(), load_model(rec["out"], name=rec["name"]))
    except GenuineError as exc:
        rec["error"] = f"Not registered: {exc}"
        return
    rec["registered"], rec["error"] = True, None
    common.bump("models")
