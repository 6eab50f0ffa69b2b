"""Background retraining runs of the Models page (no widgets here; ``pages/models.py`` renders them).

A run exports the current curated labels as a ``LabelledPatches`` training set, starts
``genuine train`` as a separate process (it does not touch the store) and writes into
``<store files>/runs/<run id>/``: ``curated.npz``, ``train.log``, ``run.json`` (the run
record: the command with its seed, kind, preset, epochs, ...) and the model folder. The records live
in one dict per server process, so every browser session on the server sees the same runs; a
restarted server reads them back from ``run.json``. A run can be stopped (Ctrl-C to ``genuine train``: it keeps a checkpoint) and
resumed from that checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import streamlit as st

from genuine_core.errors import InputError
from pages import common
from training.cli_train import PRESET_DEFAULTS

logger = logging.getLogger(__name__)

#: fewest usable curated nuclei a run starts with
MIN_CURATED = 10
#: fewest of each class: the stratified 80/10/10 split then holds both classes in validation (calibration needs them)
MIN_PER_CLASS = 5
#: a new model's name: it becomes a folder name and the store's model name
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: the seed of every run (weights, sampling, augmentation, the training set's split), passed explicitly and
#: recorded in ``run.json``
SEED = 0
#: the run record in a run's folder
RUN_FILE = "run.json"
#: what ``run.json`` keeps (the process and the log handle exist only in the server that started the run)
SAVED = ("name", "kind", "preset", "epochs", "patience", "n", "created", "started", "spent", "cmd", "out", "log",
         "pid", "registered", "ended", "rc", "error", "resumed", "init", "seed")
#: a run's states, as :func:`poll` reports them
RUNNING, FINISHED, FAILED, STOPPED = "running", "finished", "failed", "stopped"


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


def curated_shortfall(counts: dict) -> str:
    """Why curated label ``counts`` ({0: n, 1: n}) cannot start a run ('' when they can)."""
    mna, non = int(counts.get(1, 0)), int(counts.get(0, 0))
    if mna + non < MIN_CURATED or min(mna, non) < MIN_PER_CLASS:
        return (f"a run needs at least {MIN_CURATED} curated nuclei, {MIN_PER_CLASS} of each class "
                f"(have {mna} MNA, {non} non-MNA)")
    return ""


def check_curated(store) -> int:
    """Number of usable curated nuclei.

    Raises:
        InputError: too few (see :func:`curated_shortfall`).
    """
    from store.labels import current_labels

    cur = current_labels(store)
    cur = cur[~cur["excluded"].astype(bool) & cur["label"].notna()]
    short = curated_shortfall(cur["label"].astype(int).value_counts().to_dict())
    if short:
        raise InputError(short)
    return len(cur)


#: serialises run starts in this server process (the name check and the run's registration)
_START_LOCK = threading.Lock()


def start_run(store, kind: str, preset: str, epochs: int, name: str, detector: str | None,
              init: str | None = None) -> str:
    """Export the training set and start ``genuine train`` in the background; return the run id.

    The preset's early-stopping patience is passed explicitly (the page shows it); ``epochs`` caps the run;
    ``init``: a trained model folder of the same kind and preset to fine-tune (``--init``), else random weights.

    Raises:
        InputError: a name that cannot be a folder and model name, one a registered model or another run
            has, or too few curated nuclei.
    """
    if not MODEL_NAME.fullmatch(name):
        raise InputError(f"model name {name!r}: use letters, digits, `.`, `_` or `-` (at most 64, not starting "
                         "with `.`, `_` or `-`)")
    with _START_LOCK:  # two sessions pressing Start at once must not both take the name
        return _start(store, kind, preset, epochs, name, detector, init)


def _start(store, kind: str, preset: str, epochs: int, name: str, detector: str | None, init: str | None) -> str:
    """:func:`start_run` once its name is known to be well formed (under :data:`_START_LOCK`)."""
    from store.registry import list_models

    recover_runs(store)
    if name in set(list_models(store)["name"]) | {rec["name"] for rec in runs().values()}:
        raise InputError(f"model name {name!r} is taken by a registered model or another run; choose another")
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
           "--patience", str(patience), "--threads", "2", "--seed", str(SEED)]
    if kind == "genuine" and detector:
        cmd += ["--detector", detector]
    if init:
        cmd += ["--init", str(init)]
    rec = {"log": folder / "train.log", "out": out, "name": name, "epochs": epochs, "patience": patience,
           "preset": preset, "n": n, "cmd": cmd, "registered": False, "kind": kind, "resumed": 0,
           "init": Path(init).name if init else None, "seed": SEED}
    _launch(rec, cmd, "w")
    runs()[run_id] = rec
    return run_id


def _launch(rec: dict, cmd: list[str], log_mode: str) -> None:
    """Start ``cmd`` with its output going to the run's log; record the process, its pid and the start."""
    log = open(rec["log"], log_mode, encoding="utf-8")  # noqa: SIM115 (owned by the child's lifetime)
    try:
        # its own session: Ctrl-C in the server's terminal stops the server, not the run (Stop does)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(common.REPO),
                                start_new_session=True)
    except OSError:
        log.close()
        raise
    rec.update(proc=proc, log_handle=log, pid=proc.pid, started=time.time())
    rec.setdefault("created", rec["started"])  # the first start; a resume keeps it
    for key in ("ended", "rc", "error"):
        rec.pop(key, None)
    save_record(rec)


def save_record(rec: dict) -> None:
    """Write the run's :data:`SAVED` fields to ``run.json`` in its folder (atomically: a reader never sees half)."""
    path = Path(rec["log"]).parent / RUN_FILE
    data = {k: (str(rec[k]) if isinstance(rec[k], Path) else rec[k]) for k in SAVED if k in rec}
    tmp = path.with_name(f".{RUN_FILE}.{threading.get_ident()}.tmp")  # sessions are threads of one process
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


_UNREADABLE: set[Path] = set()


def recover_runs(store) -> None:
    """Add the runs recorded under ``<store files>/runs/*/run.json`` that this server does not know yet
    (it was restarted): they have no process handle; :func:`poll` finds out what became of them.
    Unreadable records are skipped."""
    known = runs()
    for path in sorted((store.folder / "runs").glob(f"*/{RUN_FILE}")):
        run_id = path.parent.name
        if run_id in known:
            continue
        try:
            rec = rebased(json.loads(path.read_text(encoding="utf-8")), path.parent)
            float(rec["started"]), int(rec["epochs"]), str(rec["name"])
        except (OSError, ValueError, TypeError, KeyError) as exc:
            if path not in _UNREADABLE:
                _UNREADABLE.add(path)
                logger.warning("retraining run %s not listed: %s is unreadable (%s)", run_id, path, exc)
            continue
        known[run_id] = {**rec, "proc": None, "log_handle": None}


def rebased(rec: dict, folder: Path) -> dict:
    """A run record read from ``folder/run.json`` whose paths (log, model folder, the command's training set and
    output) name the run's folder where it was written: a store restored from a backup elsewhere, or a moved
    store, keeps its runs, so they are taken to be in ``folder`` (``log`` and ``out`` as Paths)."""
    old = Path(rec["log"]).parent
    if old == folder:
        rec["log"], rec["out"] = Path(rec["log"]), Path(rec["out"])
        return rec

    def moved(value):
        p = Path(value) if isinstance(value, str) else None
        return str(folder / p.relative_to(old)) if p is not None and p.is_relative_to(old) else value

    rec["log"], rec["out"] = Path(moved(rec["log"])), Path(moved(rec["out"]))
    if isinstance(rec.get("cmd"), list) and rec["cmd"]:
        rec["cmd"] = [moved(a) for a in rec["cmd"]]
        if not Path(rec["cmd"][0]).is_file():  # the Python of another machine's installation
            rec["cmd"][0] = sys.executable
    return rec


def _pid_runs(rec: dict) -> bool:
    """True while the run's process (started by an earlier server) still runs: its pid is alive and its
    command line names the run's model folder (so a recycled pid does not count)."""
    pid = rec.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(rec["out"]).encode() in cmdline


def finished_model(out: str | Path) -> bool:
    """True when the run's model folder holds a finished model (``metrics.json`` status final)."""
    from genuine_core.models.folder import is_finished

    try:
        metrics = json.loads((Path(out) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(metrics, dict) and is_finished(metrics)


def resumable(rec: dict) -> bool:
    """True when the run ended unfinished but left a checkpoint that ``genuine train --resume`` continues."""
    from training.checkpoint import has_checkpoint

    return has_checkpoint(rec["out"]) and not finished_model(rec["out"])


def poll(rec: dict) -> str:
    """The run's state: :data:`RUNNING`, :data:`FINISHED`, :data:`FAILED` (``rec["rc"]``: exit code) or
    :data:`STOPPED` (interrupted; see :func:`resumable`).

    On the first look after the end, fix the end time and save the record. The end time is the log
    file's last write (the child's final line), not the moment a page happened to look, so a run
    nobody watched still shows how long it took. A run whose process an earlier server started has
    no exit code: its model folder tells whether it finished.
    """
    if "ended" not in rec:
        if rec.get("proc") is not None:
            rc = rec["proc"].poll()
            if rc is None:
                return RUNNING
        elif _pid_runs(rec):
            return RUNNING
        else:
            rc = None  # ended while no server watched it
        log = Path(rec["log"])
        rec["ended"] = max(rec["started"], min(time.time(), log.stat().st_mtime if log.is_file() else time.time()))
        rec["rc"] = rc
        if rec.get("log_handle") is not None and not rec["log_handle"].closed:
            rec["log_handle"].close()
        save_record(rec)
    rc = rec.get("rc")
    if rc == 0 or (rc is None and finished_model(rec["out"])):
        return FINISHED
    if rc is None or rc in (130, 143, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL):
        return STOPPED
    return FAILED


def stop_run(rec: dict) -> None:
    """Ask a running run to stop as Ctrl-C does: ``genuine train`` saves its checkpoint and exits 130."""
    if rec.get("proc") is not None:
        rec["proc"].send_signal(signal.SIGINT)
    elif _pid_runs(rec):
        os.kill(rec["pid"], signal.SIGINT)


_RESUMING = threading.Lock()


def resume_run(rec: dict) -> None:
    """Continue a stopped run from its checkpoint (``genuine train ... --resume``), appending to its log.
    Nothing happens when it runs already (e.g. resumed from another browser tab a moment ago)."""
    with _RESUMING:
        if poll(rec) == RUNNING:
            return
        rec["cmd"] = relocated_inputs(rec)  # saved with the record when it starts
        with open(rec["log"], "a", encoding="utf-8") as log:
            log.write(f"\n--- resumed {datetime.now():%Y-%m-%d %H:%M:%S} ---\n")
        rec["resumed"] = int(rec.get("resumed", 0)) + 1
        rec["spent"] = duration(rec)  # the earlier legs; the new one is timed from its own start
        _launch(rec, [*rec["cmd"], "--resume"], "a")


#: the options of a run's command naming model folders it reads as it starts (``--init``, ``--detector``)
INPUT_FOLDERS = ("--init", "--detector")


def relocated_inputs(rec: dict) -> list[str]:
    """The run's command with each :data:`INPUT_FOLDERS` folder that is gone (a store restored from a backup on
    another server) replaced by the folder under the store's ``<name>_files`` holding the weights the run
    started from (``genuine store backup`` copies them into ``models/``), found by the checksum its checkpoint
    recorded.

    Raises:
        InputError: such a folder is gone and no folder there holds its weights.
    """
    from store.model_copies import MODELS_DIR, copies_in_files
    from training.checkpoint import checkpoint_metrics
    from training.train import INPUTS_KEY

    cmd, files, copies = list(rec["cmd"]), Path(rec["log"]).parent.parent.parent, None
    started = checkpoint_metrics(rec["out"]).get(INPUTS_KEY)
    started = started if isinstance(started, dict) else {}
    for i in range(len(cmd) - 1):
        if cmd[i] not in INPUT_FOLDERS or Path(cmd[i + 1]).is_dir():
            continue
        if copies is None:
            copies = copies_in_files(files)
        known = started.get(cmd[i][2:])
        copy_of = copies.get(known.get("checksum")) if isinstance(known, dict) else None
        if copy_of is None:
            raise InputError(f"cannot resume run {rec['name']!r}: its {cmd[i]} folder {cmd[i + 1]} is not on this "
                             f"machine and no folder in {files / MODELS_DIR} holds its weights; copy that folder "
                             f"back to {cmd[i + 1]} or into {files / MODELS_DIR}, or start a new run")
        cmd[i + 1] = str(copy_of.resolve())
    return cmd


def duration(rec: dict) -> float:
    """Seconds the run has trained: earlier legs (before a stop and resume) plus the current one, from its
    start to its end (to now while running)."""
    return float(rec.get("spent") or 0.0) + rec.get("ended", time.time()) - rec["started"]


def created(rec: dict) -> float:
    """When the run was first started (epoch seconds): runs are listed by it, newest first."""
    return float(rec.get("created") or rec["started"])


def validation(out: str | Path) -> dict | None:
    """The validation record of a finished model folder (``metrics.json["validation"]``), None when absent."""
    f = Path(out) / "metrics.json"
    try:
        metrics = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    val = metrics.get("validation", metrics) if isinstance(metrics, dict) else None
    return val if isinstance(val, dict) and "sensitivity" in val else None


def register(run_id: str, by: str) -> None:
    """Register a finished run's model folder in the store (``by``: who, for its event log); on failure keep
    the message in the record."""
    from genuine_core.errors import GenuineError
    from genuine_core.pipeline import load_model
    from store.registry import register_model

    rec = runs()[run_id]
    try:
        register_model(common.get_store(), load_model(rec["out"], name=rec["name"]), by=by)
    except GenuineError as exc:
        rec["error"] = f"Not registered: {exc}"
        save_record(rec)
        return
    rec["registered"], rec["error"] = True, None
    save_record(rec)
    common.bump("models")
