"""Models: what is registered, how it was trained and how well it does; retrain on curated labels.

A retraining run (``pages/retrain.py``) exports the current curated labels as a
``LabelledPatches`` training set and starts ``genuine train`` as a background process (it
does not touch the store); this page shows every run of the server live from the run
folder's ``history.json`` and log, warns when validation says the model is useless, and
registers the finished model folder in the store.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from genuine_core import plotting
from genuine_core.errors import GenuineError
from genuine_core.validation import MIN_VALIDATION_PER_CLASS, weak_validation_reasons
from pages import common, retrain

common.require_entrypoint()


# ----------------------------------------------------------------------------- display helpers
def _fmt(x) -> str:
    """Numbers to 4 significant digits, lists element-wise, everything else as text."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    if isinstance(x, list):
        return ", ".join(_fmt(v) for v in x)
    return str(x)


#: readable names of the keys model folders write in ``metrics.json``; other keys show with spaces for "_"
METRIC_NAMES = {
    "best_epoch": "best epoch", "best_val_loss": "best validation loss", "status": "training status",
    "n": "nuclei", "n_positive": "MNA nuclei", "n_negative": "non-MNA nuclei", "n_flipped": "labels flipped (noise)",
    "sensitivity": "sensitivity (TPR)", "specificity": "specificity (TNR)", "tpr": "TPR", "tnr": "TNR",
    "accuracy": "accuracy", "f1": "F1", "precision": "precision", "labels": "scored against",
    "tp": "true positives", "fp": "false positives", "tn": "true negatives", "fn": "false negatives",
    "temperature": "calibration temperature", "accuracy_vs_training_labels": "accuracy vs training labels",
    "loss_vs_training_labels": "loss vs training labels", "count_threshold": "count score threshold",
    "map50": "mAP (IoU 0.5)", "ap50": "AP (IoU 0.5)", "exact": "exact counts, all classes",
    "mae": "count mean absolute error", "ratio_threshold": "green/red ratio threshold", "slope": "logistic slope",
}
#: section path -> heading ("" = the top level: the figures the model is summarised by)
SECTION_NAMES = {"": "summary", "validation": "validation", "test_detection": "test patches: detection",
                 "test_detection/count_accuracy": "test patches: counting",
                 "test_rule_vs_truth": "test nuclei: Cohn rule vs ground truth", "ratio_fit": "ratio fit"}
#: signal classes as dict keys -> as shown; per-class lists (count thresholds, count accuracy) are in this order
CLASS_NAMES = {"nmi": "NMI", "mycn": "MYCN", "cluster": "cluster"}
#: session key: the model Model details shows on the next run (Register sets it, the widget already exists then)
PICK_NEXT = "_models_pick_next"
#: why a button that changes the registered models waits for a name (the store's event log records who)
NAME_NEEDED = "Enter your name under **Reviewer** in the sidebar to {what}: the store's event log records who."


def metrics_tables(metrics: dict) -> dict[str, pd.DataFrame]:
    """A nested ``metrics.json`` as one two-column table (Metric, Value as text) per section.

    Nested dicts make sections (``test_detection`` -> "test patches: detection"), in the order they
    first appear; a per-class dict (``ap50: {nmi, mycn, cluster}``) and a list of three numbers under a
    count key give one row per class ("count score threshold · MYCN": 0.25), which fits a half-width table.
    Top-level figures that repeat the ``validation`` section's (training writes its sensitivity, specificity,
    class counts and temperature in both places) are shown once, under validation: in the summary they read as
    the model's test figures.
    """
    sections: dict[str, list[tuple[str, str]]] = {}
    val = (metrics or {}).get("validation")
    if isinstance(val, dict):
        metrics = {k: v for k, v in metrics.items() if isinstance(v, dict) or k not in val or val[k] != v}

    def name(key: str) -> str:
        return METRIC_NAMES.get(key, key.replace("_", " "))

    def walk(node: dict, path: str) -> None:
        rows = sections.setdefault(SECTION_NAMES.get(path, path.replace("_", " ").replace("/", ": ")), [])
        for key, value in node.items():
            sub = f"{path}/{key}" if path else str(key)
            if isinstance(value, dict) and value and set(value) <= set(CLASS_NAMES):
                rows.extend((f"{name(key)} · {CLASS_NAMES[k]}", _fmt(v)) for k, v in value.items())
            elif isinstance(value, dict):
                walk(value, sub)
            elif isinstance(value, list) and len(value) == len(CLASS_NAMES) and "count" in sub \
                    and all(isinstance(v, (int, float)) for v in value):
                rows.extend((f"{name(key)} · {c}", _fmt(v)) for c, v in zip(CLASS_NAMES.values(), value))
            else:
                rows.append((name(key), _fmt(value)))

    walk(metrics or {}, "")
    return {title: pd.DataFrame(rows, columns=["Metric", "Value"]) for title, rows in sections.items() if rows}


def _folder_json(folder: str | None, name: str):
    """``<folder>/<name>`` parsed; None without a folder, without the file or when it is not JSON."""
    f = Path(folder) / name if folder else None
    if f is None or not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def history(folder: str | None) -> pd.DataFrame | None:
    """Per-epoch training history from ``<folder>/history.json`` (None when absent)."""
    data = _folder_json(folder, "history.json")
    if data is None:
        return None
    if isinstance(data, dict):
        data = data.get("history", [])
    df = pd.DataFrame(data)
    if df.empty:
        return None
    if "epoch" not in df.columns:
        df.insert(0, "epoch", np.arange(1, len(df) + 1))
    return df.drop(columns=[c for c in ("seconds", "lr") if c in df.columns])  # numeric, but not curves


def train_config(folder: str | None) -> dict | None:
    """How the model was trained (``<folder>/train_config.json``: data, labels, epochs, ...)."""
    data = _folder_json(folder, "train_config.json")
    return data if isinstance(data, dict) else None


def with_label_kind(tc: dict | None, metrics: dict | None) -> dict | None:
    """``tc`` (a ``train_config.json``) with the kind of its training labels as recorded; a folder trained on a
    curated export before ``label`` recorded the data's own kind says ``auto``, while its validation (against
    those labels) says ``curated``: then ``curated``."""
    val = (metrics or {}).get("validation")
    if tc and tc.get("label") == "auto" and isinstance(val, dict) and val.get("labels") == "curated":
        return {**tc, "label": "curated"}
    return tc


#: what each training label kind is, for the training curves' caption
LABEL_KINDS = {"auto": "auto labels from each scan's genotype, noisy", "curated": "curated labels",
               "truth": "ground-truth labels"}


def curves_against(tc: dict | None) -> str:
    """The labels a model's training curves are measured against, for their legend ("auto training labels")."""
    kind = (tc or {}).get("label")
    return f"{kind} training labels" if kind in LABEL_KINDS else "training labels"


def curves_caption(tc: dict | None, metrics: dict | None) -> str:
    """Says what the training curves' validation numbers are measured against, beside the Metrics tab's.

    Args:
        tc: the folder's ``train_config.json`` (its ``label``: auto / curated / truth), or None.
        metrics: the model's metrics (``validation.accuracy``, ``validation.labels``,
            ``validation.accuracy_vs_training_labels``), or None.
    """
    kind = (tc or {}).get("label")
    what = f"the labels it was trained on ({LABEL_KINDS[kind]})" if kind in LABEL_KINDS else "its training labels"
    text = f"The curves score the validation split at each epoch against {what}."
    val = (metrics or {}).get("validation") or {}
    if isinstance(val, dict) and val.get("accuracy") is not None and val.get("labels") not in (None, kind):
        text += (f" The Metrics tab's validation accuracy ({float(val['accuracy']):.4f}) is measured against "
                 f"{val['labels']} labels, so it differs from the curve")
        vs_train = val.get("accuracy_vs_training_labels")
        text += (f" (the kept epoch scores {float(vs_train):.4f} against the training labels)."
                 if vs_train is not None else ".")
    return text


def heldout_section(name: str, checksum: str, folder: str | None) -> None:
    """The model's test-split figures from the evaluation reports that name its weights checksum
    (``training.heldout_figures``), or plainly that no report does."""
    import shlex

    from training.heldout_figures import figures_table, find_test_figures, source_text, summary_extras

    st.markdown("**held-out test split (evaluation report)**")
    found = find_test_figures(str(checksum))
    if not found.matches:
        older = (f" ({found.n_without_checksums} of them written before reports recorded model checksums, so "
                 "they cannot be matched to a model)" if found.n_without_checksums else "")
        where = f"`{found.folder}`" + (f": {found.n_reports} report(s) read{older}" if found.n_reports
                                       else ": no evaluation report there")
        run = f"genuine evaluate --models {shlex.quote(folder) if folder else 'FOLDER'} --data data/bench_cpu " \
              f"--out {shlex.quote(str(found.folder / name.replace('/', '_')))}"
        st.info(f"No evaluation report matches this model's weights (checksum `{str(checksum)[:12]}…`), so there "
                f"are no held-out test figures for it. Searched {where}. To get them: `{run}`.",
                icon=":material/assignment_late:")
        return
    best = found.matches[0]
    st.dataframe(figures_table(best.entry), hide_index=True, key=f"models_{name}_heldout", width="content")
    extras = summary_extras(best.entry)
    if extras:
        st.caption(" · ".join(f"{k}: {v:g}" for k, v in extras.items()))
    more = f" {len(found.matches) - 1} older report(s) also match." if len(found.matches) > 1 else ""
    st.caption(source_text(best, found.folder) + more)


def verify(folder: str, registered: str) -> tuple[bool, str]:
    """Check a model folder's files against its checksum list, and that list against the ``registered``
    checksum (``genuine_core.models.folder.folder_digest``). Not cached: files copied over in place keep
    the folder's time, and the check reads a few MB only when asked."""
    from genuine_core.models.folder import folder_digest

    try:
        digest = folder_digest(folder)
    except GenuineError as exc:
        return False, str(exc)
    if digest != registered:
        return False, (f"the folder holds other weights than the ones registered (checksum {digest[:12]}…, "
                       f"registered {registered[:12]}…): its files were replaced after registration")
    return True, "weights and config match the recorded checksums, and they are the registered ones"


def remove_model_clicked(name: str, who: str) -> None:
    """Remove button callback: unregister the model and delete what it produced."""
    from store.registry import list_models, remove_model

    st.session_state.pop(f"models_remove_sure_{name}", None)
    try:
        deleted = remove_model(common.get_store(), name, by=who)
    except GenuineError as exc:
        st.session_state["models_remove_error"] = str(exc)
        return
    # Pick the default model explicitly: only popping the key leaves the browser showing the removed name
    # over the default model's details (the widget keeps its value in the browser unless the app sets it).
    left = list_models(common.get_store())
    if left.empty:
        st.session_state.pop("models_pick", None)
    else:
        st.session_state["models_pick"] = common.default_model(left["name"].tolist(),
                                                               dict(zip(left["name"], left["kind"])))
    st.session_state["models_removed"] = (f"Model {name} removed by {who}: {deleted.get('predictions', 0)} "
                                          "predictions and its maps deleted; its folder is untouched.")
    common.bump("data", "models")


def remove_model_section(name: str, n_predictions: int) -> None:
    """Unregister the model (e.g. its folder is gone, or it was a mistake); needs the reviewer's name and a tick."""
    st.divider()
    st.markdown("**Remove this model**")
    st.caption(f"Unregisters {name} and deletes its {n_predictions} predictions, its embeddings, maps and probe "
               "runs in one transaction; curators' decisions stay. Its folder is left alone.")
    who = common.reviewer()
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    sure = c1.checkbox(f"Yes, remove {name}", key=f"models_remove_sure_{name}", disabled=not who)
    c2.button("Remove model", key="models_remove", type="primary", icon=":material/delete:",
              disabled=not (who and sure), on_click=remove_model_clicked, args=(name, who))
    if not who:
        st.caption(NAME_NEEDED.format(what="remove a model"))
    error = st.session_state.pop("models_remove_error", None)
    if error:
        st.error(error, icon=":material/error:")


def status_text(row: pd.Series) -> str:
    """'active', or 'retired on ... by ...' for a model that keeps its predictions but scores no new scan."""
    from store.registry import retired_text

    return "active" if pd.isna(row["retired_at"]) else retired_text(row["retired_at"], row["retired_by"])


def retire_clicked(name: str, who: str, retire: bool) -> None:
    """Retire / Reinstate button callback; the outcome is shown on the next run."""
    from store.registry import reinstate_model, retire_model

    try:
        (retire_model if retire else reinstate_model)(common.get_store(), name, by=who)
    except GenuineError as exc:
        st.session_state["models_retire_error"] = str(exc)
        return
    st.session_state["models_retired"] = (
        f"Model {name} retired by {who}: it scores no new scans; its predictions, maps and calls stay." if retire
        else f"Model {name} reinstated by {who}: new scans are scored with it again.")
    common.bump("data", "models")


def retire_section(name: str, row: pd.Series) -> None:
    """Retire an active model (e.g. one an upgrade replaced), or reinstate a retired one; needs the reviewer's
    name."""
    retired = not pd.isna(row["retired_at"])
    st.markdown(f"**Status:** {status_text(row)}")
    if retired:
        st.caption(f"{name} keeps its predictions, maps and rows on the Cases page, but scores no new scans and its "
                   "folder is not checked. Reinstating it checks that its folder holds the registered weights and "
                   "that the active models read patches normalised as it does.")
    else:
        st.caption(f"Retiring {name} keeps its predictions, maps and rows on the Cases page (marked retired), but it "
                   "scores no new scans, ingest no longer needs its folder nor checks its patch normalisation against "
                   "the other models'. Nothing is deleted; it can be reinstated.")
    who = common.reviewer()
    label, icon = ("Reinstate model", ":material/restore:") if retired else ("Retire model", ":material/archive:")
    st.button(label, key="models_retire", icon=icon, disabled=not who, on_click=retire_clicked,
              args=(name, who, not retired))
    if not who:
        st.caption(NAME_NEEDED.format(what=label.lower().replace(" model", " a model")))
    error = st.session_state.pop("models_retire_error", None)
    if error:
        st.error(error, icon=":material/error:")


# ----------------------------------------------------------------------------- scoring stored scans
def score_section(store, row: pd.Series) -> None:
    """How many stored scans the model of ``row`` (its registry row) has scored, and a button that scores
    the others it can read (e.g. scans ingested before it was registered), with a progress bar."""
    from store.rescore import (model_to_score, registered_inputs, score_stored_scans, skip_reason, stored_scan_count,
                               unscored_scans)

    name = row["name"]
    todo = unscored_scans(store, name)
    if todo.empty:
        return
    if not pd.isna(row["retired_at"]):  # it keeps what it scored; new scans are not its to score
        st.caption(f"**{name}** is retired: it has not scored {len(todo)} of the {stored_scan_count(store)} stored "
                   "scans and scores none while retired (reinstate it under **Integrity** to score them).")
        return
    n_scans = stored_scan_count(store)
    size, normalisation = registered_inputs(row["config"])
    reasons = [skip_reason(scan, size, normalisation) for scan in todo.to_dict("records")]
    readable = todo[[not r for r in reasons]]
    st.caption(f"**{name}** has scored {n_scans - len(todo)} of the {n_scans} stored scans; the other {len(todo)} "
               f"({int(todo['n_nuclei'].sum())} nuclei) were ingested before it was registered. Scoring them "
               "uses the patches the store keeps.")
    unreadable = sorted({r for r in reasons if r})
    if unreadable:
        st.caption(f"{len(todo) - len(readable)} of them it cannot read: " + "; ".join(unreadable) + ".")
    folder = row["folder"] if isinstance(row["folder"], str) else None
    if readable.empty:
        return
    if not folder or not Path(folder).is_dir():
        st.warning("Its folder is not on this machine, so it cannot score them.", icon=":material/warning:")
        return
    who = common.reviewer()
    if not who:
        st.caption(NAME_NEEDED.format(what="score them"))
    if not st.button(f"Score {len(readable)} scans ({int(readable['n_nuclei'].sum())} nuclei) with {name}",
                     key=f"score_{name}", icon=":material/play_arrow:", disabled=not who):
        return
    bar = st.progress(0.0, text=f"loading {name}")
    try:
        model = model_to_score(store, name)
        done = score_stored_scans(store, model, progress=False, on_scan=lambda outcome, i, n: bar.progress(
            i / n, text=f"{i} of {n} scans: {outcome.line()}"), by=who)
    except GenuineError as exc:
        bar.empty()
        common.show_error(exc)
        return
    finally:
        common.bump("data", "models")  # whatever was committed: predictions, counts, review statistics
    st.toast(f"{name} scored {sum(o.status == 'scored' for o in done)} scans", icon=":material/check:")
    st.rerun(scope="app")


# ----------------------------------------------------------------------------- retraining runs
#: runs shown open; older ones go in an expander
SHOWN_RUNS = 3


def run_status(rec: dict, state: str) -> str:
    """'running · 12 s', 'finished after 40 s', 'failed (exit 1) after 3 s' or 'stopped after 9 s' (the end
    time is fixed); a resumed run says so."""
    secs = retrain.duration(rec)
    if state == retrain.RUNNING:
        text = f"running · {secs:.0f} s"
    elif state == retrain.FAILED:
        text = f"failed (exit {rec['rc']}) after {secs:.0f} s"
    else:
        text = f"{state} after {secs:.0f} s"
    resumed = int(rec.get("resumed") or 0)
    return text + (f" (resumed {'once' if resumed == 1 else f'{resumed} times'})" if resumed else "")


def _stat(value, rate: bool) -> str:
    """A validation figure as text: rates to 3 decimals, counts as integers, '–' when missing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return "–"
    return f"{value:.3f}" if rate else str(int(value))


def show_validation(val: dict | None) -> None:
    """The finished model's validation figures as metrics (readable, unlike the log's last line)."""
    if not val:
        return
    figures = (("sensitivity", "validation sensitivity", True), ("specificity", "validation specificity", True),
               ("n_positive", "validation MNA nuclei", False), ("n_negative", "validation non-MNA nuclei", False))
    for col, (key, label, rate) in zip(st.columns(4), figures):
        col.metric(label, _stat(val.get(key), rate))
    against = {"truth": "the ground truth known for these nuclei (synthetic samples)",
               "auto": "the labels the run trained on"}
    st.caption(f"Figures against {against.get(val.get('labels'), 'the validation labels')}, on the held-out "
               "validation nuclei; the training curves' accuracy is against the labels the run trained on "
               "(here the curated ones), so the two can differ.")


def register_button(run_id: str, rec: dict, val: dict | None) -> None:
    """Warning for a degenerate model (its validation record ``val``), then the Register button; a
    registration reruns the whole app."""
    reasons = weak_validation_reasons(val)
    if reasons:
        st.warning("**This model is probably useless:** " + "; ".join(reasons) + ". Curate more nuclei of both "
                   "classes and retrain, or register it only for testing: the Cases page and the sample reports "
                   "flag its calls 'weak validation'.", icon=":material/warning:")
        ok = st.checkbox("Register it anyway", key=f"register_anyway_{run_id}")
    else:
        ok = True
    who = common.reviewer()
    if st.button(f"Register {rec['name']}", key=f"register_{run_id}", type="primary",
                 icon=":material/library_add:", disabled=not (ok and who)):
        retrain.register(run_id, who)
        if rec["registered"]:  # Model details switches to it on the rerun, so Score applies to it at once
            st.session_state[PICK_NEXT] = rec["name"]
        st.rerun(scope="app")  # the models table and the sidebar live outside this fragment
    if not who:
        st.caption(NAME_NEEDED.format(what="register a model"))


def run_controls(run_id: str, rec: dict, state: str) -> None:
    """Stop a running run (it keeps a checkpoint, as Ctrl-C does) or resume a stopped one from it."""
    if state == retrain.RUNNING:
        if st.button("Stop", key=f"stop_{run_id}", icon=":material/stop:",
                     help="Stops after saving the best weights so far; the run can be resumed."):
            retrain.stop_run(rec)
            st.toast(f"Stopping {run_id}", icon=":material/stop:")
    elif state == retrain.FAILED:
        st.caption("The run failed; the log above says why. Start a new run once that is fixed.")
    elif state == retrain.STOPPED and not retrain.resumable(rec):
        st.caption("The run stopped before its first epoch was saved: there is nothing to resume. Start a new run.")
    elif state == retrain.STOPPED:
        st.caption("The run did not finish; its checkpoint keeps the best weights so far. Ingest, evaluation and "
                   "registration refuse the unfinished model until the run is resumed and finishes.")
        if st.button("Resume", key=f"resume_{run_id}", icon=":material/play_arrow:", type="primary"):
            try:
                retrain.resume_run(rec)
            except (GenuineError, OSError) as exc:  # e.g. its --init folder is gone (a restored backup)
                common.show_error(exc)


def render_run(run_id: str, rec: dict, registered: set[tuple[str, str]], compact: bool = False) -> None:
    """Live status of one run: epochs from history.json, log tail, validation, stop / resume / register;
    ``registered``: (name, folder) of the registered models (a run registered by ``genuine store score``
    while the app was stopped counts, one removed from the store does not); ``compact`` (the folded
    earlier runs, redrawn every 2 s too) leaves out the curves and the log."""
    state = retrain.poll(rec)
    if rec["registered"] != ((rec["name"], str(rec["out"])) in registered):  # registered or removed elsewhere
        rec["registered"] = not rec["registered"]
        retrain.save_record(rec)
    hist = history(str(rec["out"]))
    done = 0 if hist is None else len(hist)
    start = f" from {rec['init']}" if rec.get("init") else ""
    seed = f", seed {rec['seed']}" if rec.get("seed") is not None else ""  # runs of older versions: not recorded
    st.markdown(f"**{run_id}** · {rec['kind']} ({rec.get('preset', '?')} preset){start} on {rec['n']} curated "
                f"nuclei{seed} · {run_status(rec, state)}")
    patience = rec.get("patience")
    early = (f" (stops early after {patience} epochs without a better validation loss)"
             if isinstance(patience, int) and patience < rec["epochs"] else "")
    st.progress(min(done / max(rec["epochs"], 1), 1.0) if state != retrain.FINISHED else 1.0,
                text=f"epoch {done} of at most {rec['epochs']}{early}")
    if hist is not None and len(hist) > 1 and not compact:
        st.plotly_chart(plotting.training_curves(hist, title="training curves"), key=f"run_curve_{run_id}")
    log = Path(rec["log"])
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-8:] if log.is_file() and not compact else []
    if tail:
        st.code("\n".join(tail), language=None, wrap_lines=True)
    run_controls(run_id, rec, state)
    val = retrain.validation(rec["out"]) if state == retrain.FINISHED else None  # metrics.json, once per refresh
    if state == retrain.FINISHED:
        show_validation(val)
    if state == retrain.FINISHED and not rec["registered"]:
        register_button(run_id, rec, val)
    elif rec["registered"]:
        st.caption(f":green[:material/check: registered as {rec['name']}.] To score the scans already stored, "
                   f"press **Score** for it under **Model details** above; the **Embeddings** page then fits "
                   "its map. Scans uploaded on the **Ingest** "
                   "page are scored with it (and every other registered model); its predictions then show in Cases. "
                   "The `genuine ingest` command cannot open the store while this app holds it: stop the app first.")
    if rec.get("error"):
        st.error(rec["error"], icon=":material/error:")


@st.fragment(run_every=2.0)
def live_runs() -> None:
    """Every retraining run of this store (all sessions see the same runs, a restarted server reads them
    back); refreshes every 2 s."""
    store = common.get_store()
    if store is not None:
        retrain.recover_runs(store)
    newest = sorted(retrain.runs().items(), key=lambda item: retrain.created(item[1]), reverse=True)
    if not newest:
        st.caption("No retraining run in this store yet.")
        return
    st.caption("Retraining runs of this store, newest first, shared by everyone using it; they are kept in the "
               "store's `runs/` folder.")
    models = common.models(str(store.path), common.rev("models")) if store is not None else pd.DataFrame()
    registered = set(zip(models["name"], models["folder"].astype(str))) if len(models) else set()
    earlier = newest[SHOWN_RUNS:]
    groups = [(st.container(), newest[:SHOWN_RUNS])]
    if earlier:
        groups.append((st.expander(f"{len(earlier)} earlier {'run' if len(earlier) == 1 else 'runs'}"), earlier))
    for i, (place, group) in enumerate(groups):
        for run_id, rec in group:
            with place, st.container(border=True):
                render_run(run_id, rec, registered, compact=i > 0)


# ----------------------------------------------------------------------------- retraining form
def follow_default(key: str, default) -> None:
    """Set widget ``key`` to ``default`` unless the user edited it (call before creating the widget)."""
    mark = f"_{key}_default"
    if st.session_state.get(key) in (None, "", st.session_state.get(mark)):
        st.session_state[key] = default
    st.session_state[mark] = default


def retrain_section(store, models: pd.DataFrame) -> None:
    """Retraining settings (name and epochs follow kind and preset unless edited) and the start button."""
    st.subheader("Retrain on curated labels")
    from store.labels import current_labels

    cur = current_labels(store)
    usable = cur[~cur["excluded"].astype(bool)] if len(cur) else cur
    counts = usable["label"].value_counts().to_dict() if len(usable) else {}
    st.caption(f"{len(usable)} curated nuclei ({counts.get(1, 0)} MNA, {counts.get(0, 0)} non-MNA), split 80 / 10 / "
               f"10 % into training, validation and test nuclei within each class; the validation figures need about "
               f"{10 * MIN_VALIDATION_PER_CLASS} curated nuclei of each class ({MIN_VALIDATION_PER_CLASS} of them "
               "then validate) to mean something. The run trains in a separate "
               "process; this page shows its progress.")
    c1, c2, c3, c4 = st.columns(4)
    kind = c1.selectbox("Kind", ["genuine", "resnet"], key="retrain_kind")
    preset = c2.selectbox("Preset", ["cpu", "tiny"], key="retrain_preset")
    settings = retrain.preset_settings(preset)
    follow_default("retrain_epochs", settings["epochs"])
    epochs = c3.number_input("Max epochs", 1, 500, key="retrain_epochs")
    retrain.recover_runs(store)  # after a server restart: their names are taken too
    taken = set(models["name"]) | {rec["name"] for rec in retrain.runs().values()}
    if st.session_state.pop("_retrain_started", False):
        st.session_state["retrain_name"] = ""  # the name just used is taken: back to a free default
    follow_default("retrain_name", retrain.free_name(f"{kind}-curated", taken))
    out_name = c4.text_input("New model name", key="retrain_name")
    per_epoch = settings["per_epoch"] or "all"
    st.caption(f"Preset **{preset}**: at most {settings['epochs']} epochs by default (this run: {int(epochs)}), "
               f"early stopping after {settings['patience']} epochs without a better validation loss, "
               f"at most {per_epoch} training patches per epoch.")
    # a retired model is left out: an upgrade may have put other weights in its folder
    same = models[(models["kind"] == kind) & (models["preset"] == preset) & models["retired_at"].isna()
                  ].dropna(subset=["folder"])
    starts = {"": "random weights", **{f: f"{n} (fine-tune)" for f, n in zip(same["folder"], same["name"])}}
    init = st.selectbox("Start from", list(starts), index=min(1, len(starts) - 1), format_func=starts.get,
                        key=f"retrain_init_{kind}_{preset}",
                        help="Fine-tuning a registered model of this kind and preset keeps what it learnt from the "
                             "benchmark; a few hundred curated nuclei are too few to learn from random weights.")
    detector = None
    if kind == "genuine":
        dets = models[models["kind"] == "detector"].dropna(subset=["folder"])
        if len(dets):
            folder_names = dict(zip(dets["folder"], dets["name"]))
            detector = st.selectbox("Detector for GENUINE", list(folder_names), key="retrain_detector",
                                    format_func=folder_names.get)
        else:
            st.caption(f"No detector is registered: the run uses `models/detector_{preset}`.")
    short = retrain.curated_shortfall(counts)
    if short:
        st.caption(f"Start is off: {short}. Curate more on the **Review** page.")
    if st.button("Start retraining", type="primary", icon=":material/model_training:", disabled=bool(short),
                 key="retrain_start"):
        name = out_name.strip() or f"{kind}-curated"
        try:
            run_id = retrain.start_run(store, kind, preset, int(epochs), name, detector, init or None)
        except (GenuineError, OSError) as exc:
            common.show_error(exc)
        else:
            st.toast(f"Started {run_id}", icon=":material/play_arrow:")
            st.session_state["_retrain_started"] = True
            st.rerun()  # the name field moves on to a free name


# ----------------------------------------------------------------------------- event log
@st.cache_data(show_spinner=False, max_entries=8)
def event_log(db: str, models_rev: int, data_rev: int) -> pd.DataFrame:
    """``store.events.store_events``, newest first."""
    from store.events import store_events

    return store_events(common.store_at(db)).iloc[::-1].reset_index(drop=True)


def event_log_section(db: str) -> None:
    """Who registered and removed which model weights, and who removed which scan, when (the store keeps it)."""
    from store.events import detail_text

    log = event_log(db, common.rev("models"), common.rev("data"))
    with st.expander(f"Event log ({len(log)}): model registrations, retirements, relocations and removals, "
                     "scan relocations and removals",
                     icon=":material/history:"):
        if log.empty:
            st.caption("Nothing registered or removed yet.")
            return
        st.dataframe(pd.DataFrame({
            "When": log["created_at"], "Action": log["action"], "Model or scan": log["subject"],
            "Checksum": log["identity"].str[:12] + "…", "By": log["by_user"],
            "Details": [detail_text(d) for d in log["detail"]],
        }), hide_index=True, key="models_event_log", placeholder="not named",
            column_config={"When": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")})
        st.caption("Kept by the store and never edited; `genuine store events` prints it. Sample reports name "
                   "each model's checksum, which this log ties to when those weights came and went.")


# ----------------------------------------------------------------------------- page
def main() -> None:
    common.page_header("Models", "Registered models, their evaluation and training history; retrain on the "
                                 "curated labels.")
    store = common.store_or_stop()
    db = str(store.path)
    removed = st.session_state.pop("models_removed", None)
    if removed:
        st.success(removed, icon=":material/delete:")
    changed = st.session_state.pop("models_retired", None)
    if changed:
        st.success(changed, icon=":material/check:")
    models = common.models(db, common.rev("models"))
    if models.empty:
        common.empty_state("registered models")
        event_log_section(db)
        return
    from store.uncertainty import describe

    passes = common.uncertainty_passes(db, common.rev("data"), common.rev("models"))
    status = [status_text(r) for _, r in models.iterrows()]
    view = pd.DataFrame({
        "Model": models["name"], "Status": [s.split(" ", 1)[0] for s in status],  # "retired": when and by below
        "Kind": models["kind"], "Preset": models["preset"],
        "Predictions": models["n_predictions"], "Scans": models["n_scans"], "Registered": models["registered_at"],
    })
    st.dataframe(view, hide_index=True, key="models_table", placeholder="–",
                 column_config={"Registered": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")})
    with st.expander("More about each model: status, uncertainty, patch size, checksum, folder",
                     icon=":material/table_view:"):
        st.dataframe(pd.DataFrame({
            "Model": models["name"], "Status": status,
            "Uncertainty": [describe(m, passes.get(n, []))
                            for n, m in zip(models["name"], models["uncertainty_method"])],
            "Patch px": models["patch_size"], "Checksum": models["checksum"].str[:12] + "…",
            "Folder": models["folder"],
        }), hide_index=True, key="models_table_more", placeholder="–")
    event_log_section(db)

    names = models["name"].tolist()
    if st.session_state.get(PICK_NEXT) in names:  # a model just registered (set before the widget exists)
        st.session_state["models_pick"] = st.session_state.pop(PICK_NEXT)
    name = st.selectbox("Model details", names, key="models_pick",
                        index=names.index(common.default_model(names, dict(zip(models["name"], models["kind"])))))
    row = models[models["name"] == name].iloc[0]
    folder = row["folder"] if isinstance(row["folder"], str) else None
    score_section(store, row)
    tab_m, tab_h, tab_t, tab_c, tab_i = st.tabs(["Metrics", "Training curves", "Training data", "Configuration",
                                                 "Integrity"])
    with tab_m:
        metrics = dict(row["metrics"] or {})
        scans = metrics.pop("count_threshold_scan", None)
        if scans:
            st.plotly_chart(plotting.threshold_scan(scans, metrics.get("count_threshold"),
                                                    title="Counting threshold per class (circled: in use)"),
                            key=f"metrics_{name}_scan")
        heldout_section(name, row["checksum"], folder)
        tables = metrics_tables(metrics)
        if not tables and not scans:
            st.caption("No metrics recorded for this model.")
        for i, (title, table) in enumerate(tables.items()):
            if i % 2 == 0:
                cols = st.columns(2)
            with cols[i % 2]:
                st.markdown(f"**{title}**")
                st.dataframe(table, hide_index=True, width="stretch", height=35 * (len(table) + 1) + 3,
                             key=f"metrics_{name}_{title}",
                             column_config={"Metric": st.column_config.TextColumn(width="medium"),
                                            "Value": st.column_config.TextColumn(width="large")})
    with tab_h:
        hist = history(folder)
        if hist is None:
            st.caption("No training history (`history.json`) in the model folder.")
        else:
            tc = with_label_kind(train_config(folder), row["metrics"])
            st.plotly_chart(plotting.training_curves(hist, title=f"{name}: training curves",
                                                     against=curves_against(tc)), key="models_curves")
            st.caption(curves_caption(tc, row["metrics"]))
    with tab_t:
        tc = with_label_kind(train_config(folder), row["metrics"])
        if tc is None:
            st.caption("No training record (`train_config.json`) in the model folder.")
        else:
            keep = {k: tc.get(k) for k in ("data", "kind", "preset", "label", "beta", "detector", "calibrate_on")
                    if k in tc}
            st.dataframe(pd.DataFrame([{k: str(v) for k, v in keep.items()}]), hide_index=True,
                         key="models_train_data")
            with st.expander("Full training configuration"):
                st.json(tc, expanded=1)
    with tab_c:
        st.json(row["config"], expanded=1)
    with tab_i:
        st.markdown(f"Full checksum: `{row['checksum']}`")
        if folder and Path(folder).is_dir():
            st.caption(f"Folder: `{folder}`")
            if st.button("Verify files against the checksums", key="models_verify", icon=":material/verified:"):
                ok, msg = verify(folder, row["checksum"])
                (st.success if ok else st.error)(msg)
        elif not pd.isna(row["retired_at"]):  # a retired model scores nothing new: its folder may be gone
            st.info("The model folder is not on this machine; the checksum cannot be re-verified. The model is "
                    "retired, so ingesting does not need it; to reinstate it, restore the folder or record where it "
                    "is now (`genuine store relocate-model NAME NEW_FOLDER`, with the dashboard stopped).")
        else:
            from store.model_copies import dashboard_way_out

            st.warning("The model folder is not on this machine; the checksum cannot be re-verified. While a "
                       f"registered model's folder is missing, ingesting new scans is refused: "
                       f"{dashboard_way_out(store, name)}")
        st.divider()
        retire_section(name, row)
        remove_model_section(name, int(row["n_predictions"]))

    st.divider()
    retrain_section(store, models)
    live_runs()


main()
