"""Review: walk the flagged nuclei, most informative first, and record curated labels.

Every decision is written at once as one label event stamped with the reviewer's name
(``store.labels.record_label_event``); undo appends a reverting event
(``store.labels.undo_last``). Keyboard: M = MNA, N = non-MNA, X = exclude, S = skip,
U = undo. The **Conflicts** queue lists nuclei whose reviewers disagree, each reviewer's decision and note
on the card (``store.agreement``); one decision settles it. **Agreement between reviewers**: per pair of
reviewers, agreement and Cohen's kappa, with each pair's confusion matrix. **Blind review** (kept in the address as
``?blind=1``): other reviewers' decisions on a nucleus stay hidden until the reviewer has decided it (card, queues,
reviews, latest decisions, agreement and downloads), for a blind second read.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import streamlit as st

from genuine_core import plotting
from genuine_core.errors import GenuineError
from genuine_core.palette import LABEL_COLOURS, text_colour_on
from pages import common
from store.labels import DecidedMeanwhile, VALUE_NAMES

common.require_entrypoint()

FLAG_NAMES = {
    "auto_mismatch": "auto label ≠ prediction",
    "models_disagree": "models disagree",
    "high_uncertainty": "high uncertainty",
    "low_confidence": "low-confidence call",
}
DECISIONS = {"mna": ("MNA", 1, "M", "primary"), "non": ("non-MNA", 0, "N", "primary"),
             "exclude": ("Exclude", "exclude", "X", "secondary")}
ALL = "All"
#: the queues offered: flagged nuclei (review_queue) or nuclei whose reviewers disagree (store.agreement)
FLAGGED, CONFLICTS = "Flagged nuclei", "Conflicts"
#: decision buttons in the label colours used everywhere (``genuine_core.palette``: MNA vermillion, non-MNA
#: blue), text black or white, whichever reads better; Streamlit tags keyed elements with a ``st-key-<key>`` class
_MNA, _NON = LABEL_COLOURS["MNA"], LABEL_COLOURS["non-MNA"]
DECISION_CSS = f"""<style>
[class*="st-key-decide_mna_"] button {{background-color: {_MNA}; border-color: {_MNA}; color: {text_colour_on(_MNA)};}}
[class*="st-key-decide_non_"] button {{background-color: {_NON}; border-color: {_NON}; color: {text_colour_on(_NON)};}}
[class*="st-key-decide_mna_"] button:hover {{filter: brightness(1.1); color: {text_colour_on(_MNA)};}}
[class*="st-key-decide_non_"] button:hover {{filter: brightness(1.1); color: {text_colour_on(_NON)};}}
.st-key-review_card [data-testid="stMetricValue"] {{font-size: 1.6rem;}}
</style>"""
QUEUE_PAGE = 50
#: session key: the nucleus whose card the decision buttons were last drawn for
SHOWN_KEY = "review_shown"
#: a decision press this soon after the last one is a double press (no curator judges a new card this fast);
#: $GENUINE_DECISION_GAP_S overrides it (0 for scripted sessions)
MIN_DECISION_GAP_S = float(os.environ.get("GENUINE_DECISION_GAP_S", "0.4"))
LAST_DECISION_KEY = "review_last_decision"
#: session key: the nucleus the last undo restored; its card comes first until it is decided or skipped
UNDONE_KEY = "review_undone"
#: the blind review toggle's key, the session's choice (kept while other pages are open) and its address parameter
BLIND_KEY, BLIND_ON, BLIND_PARAM = "review_blind", "_review_blind_on", "blind"
#: what a blind reviewer sees instead of another reviewer's decision
HIDDEN = "hidden (blind)"


# ----------------------------------------------------------------------------- cached queries
@st.cache_data(show_spinner=False, max_entries=32)
def queue(db: str, labels_rev: int, data_rev: int, sample: str | None, model: str | None, flags: tuple[str, ...],
          include_reviewed: bool, limit: int, models_rev: int = 0, reviewer: str | None = None) -> pd.DataFrame:
    """``store.review.review_queue`` (``models_rev``: which models are trusted, e.g. new metrics, changes it;
    ``reviewer``: with reviewed nuclei, the ones this reviewer decided are left out)."""
    from store.review import review_queue

    return review_queue(common.store_at(db), sample=sample, model=model, flags=flags,
                        include_reviewed=include_reviewed, limit=limit, reviewer=reviewer)


@st.cache_data(show_spinner=False, max_entries=32)
def progress(db: str, labels_rev: int, data_rev: int, sample: str | None, model: str | None,
             flags: tuple[str, ...], models_rev: int = 0, reviewer: str | None = None) -> dict:
    """``store.review.review_progress`` (with ``reviewer``: how many this reviewer decided, too)."""
    from store.review import review_progress

    return review_progress(common.store_at(db), sample=sample, model=model, flags=flags, reviewer=reviewer)


@st.cache_data(show_spinner=False, max_entries=16)
def conflict_queue(db: str, labels_rev: int, data_rev: int, sample: str | None) -> pd.DataFrame:
    """``store.agreement.conflicts``: open and settled conflicts, the longest untouched first."""
    from store.agreement import conflicts

    return conflicts(common.store_at(db), sample=sample, include_settled=True)


@st.cache_data(show_spinner=False, max_entries=4)
def agreement_data(db: str, labels_rev: int):
    """``store.agreement.agreement``: every pair of reviewers."""
    from store.agreement import agreement

    return agreement(common.store_at(db))


@st.cache_data(show_spinner=False, max_entries=64)
def card_data(db: str, labels_rev: int, data_rev: int, nucleus_id: int) -> dict:
    """Everything a review card shows for one nucleus: origin/labels, predictions, boxes."""
    from store.agreement import nucleus_review
    from store.nuclei import nucleus_detections, nucleus_info, nucleus_predictions

    s = common.store_at(db)
    return {"info": nucleus_info(s, [nucleus_id]), "preds": nucleus_predictions(s, [nucleus_id]),
            "boxes": nucleus_detections(s, [nucleus_id]), "reviews": nucleus_review(s, nucleus_id)}


@st.cache_data(show_spinner=False, max_entries=64)
def decided_by_me(db: str, labels_rev: int, who: str, nucleus_ids: tuple[int, ...]) -> frozenset[int]:
    """``store.review.decided_by``: the nuclei of ``nucleus_ids`` this reviewer has a standing decision on."""
    from store.review import decided_by

    return frozenset(decided_by(common.store_at(db), who, nucleus_ids))


@st.cache_data(show_spinner=False, max_entries=8)
def my_events(db: str, labels_rev: int, who: str, n: int = 10) -> pd.DataFrame:
    """This reviewer's latest ``n`` label events, newest first (``store.labels.audit_trail``, limited in the query)."""
    from store.labels import audit_trail

    return audit_trail(common.store_at(db), reviewer=who, latest=n).iloc[::-1]


@st.cache_data(show_spinner=False, max_entries=4)
def n_curated(db: str, labels_rev: int) -> int:
    """Nuclei with a current curated decision (``store.labels.count_current_labels``)."""
    from store.labels import count_current_labels

    return count_current_labels(common.store_at(db))


def curated_csv(db: str) -> bytes:
    """``store.export.curated_table`` as CSV (made when downloaded)."""
    from store.export import curated_table

    return curated_table(common.store_at(db)).to_csv(index=False).encode()


def audit_csv(db: str) -> bytes:
    """Every label event (``store.labels.audit_trail``) as CSV (made when downloaded)."""
    from store.labels import audit_trail

    return audit_trail(common.store_at(db)).to_csv(index=False).encode()


@st.cache_data(show_spinner=False, max_entries=4)
def training_set_problem(db: str, labels_rev: int, data_rev: int) -> str | None:
    """Why the curated labels cannot be exported as a training set now (``store.export.curated_rows``),
    else None. The download's file is made only when pressed, and an error then never reaches the page."""
    from store.export import curated_rows

    try:
        curated_rows(common.store_at(db))
    except GenuineError as exc:
        return str(exc)
    return None


def training_set_bytes(db: str) -> bytes:
    """Curated labels as the ``.npz`` training set ``genuine train --data`` reads (``store.export.export_labels``)."""
    import tempfile
    from pathlib import Path

    from store.export import export_labels

    with tempfile.TemporaryDirectory() as tmp:
        return export_labels(common.store_at(db), Path(tmp) / "curated.npz").read_bytes()


# ----------------------------------------------------------------------------- blind review
def blind() -> bool:
    """True while this session reviews blind (:data:`BLIND_KEY`)."""
    return bool(st.session_state.get(BLIND_ON))


def blind_to(db: str, nucleus_id: int) -> bool:
    """True when other reviewers' decisions on this nucleus are hidden now: blind review, and the reviewer has no
    standing decision on it."""
    return blind() and int(nucleus_id) in hidden_nuclei(db, (nucleus_id,))


def _blind_changed() -> None:
    st.session_state[BLIND_ON] = bool(st.session_state.get(BLIND_KEY))


def blind_toggle(where) -> None:
    """The Blind review toggle: its first value comes from ``?blind=1``, the choice stays for the session (over
    other pages) and in the address (a reload or a copied link keeps it)."""
    if BLIND_ON not in st.session_state:
        st.session_state[BLIND_ON] = st.query_params.get(BLIND_PARAM, "").strip().lower() in ("1", "true", "on", "yes")
    st.session_state[BLIND_KEY] = st.session_state[BLIND_ON]
    where.toggle("Blind review", key=BLIND_KEY, on_change=_blind_changed,
                 help="A blind second read: other reviewers' decisions on a nucleus stay hidden until you have "
                      "decided it (card, queues, reviews, agreement, downloads). The flagged queue then lists every "
                      "flagged nucleus you have not decided. Kept in the page address (`?blind=1`).")
    if blind():
        st.query_params[BLIND_PARAM] = "1"
    elif BLIND_PARAM in st.query_params:
        del st.query_params[BLIND_PARAM]


# ----------------------------------------------------------------------------- actions
def _say(kind: str, text: str) -> None:
    st.session_state["review_msg"] = (kind, text)


def decide(nucleus_id: int, value, seen: str) -> None:
    """Button callback: write one label event for ``nucleus_id`` with the sidebar reviewer.

    Only for the nucleus the page shows: a key pressed twice before the page caught up would
    otherwise decide the same nucleus twice, and one undo would leave it decided. ``seen``: the
    decision the card showed; one another curator made since is not overwritten unseen (None: a blind card,
    which shows none: the decision is recorded as a blind read, ``store.agreement``).
    """
    from store.labels import record_label_event

    now = time.monotonic()
    if (st.session_state.get(SHOWN_KEY) != nucleus_id
            or now - st.session_state.get(LAST_DECISION_KEY, -1e9) < MIN_DECISION_GAP_S):
        _say("info", f"A press {MIN_DECISION_GAP_S:g} s or less after a decision was ignored (nucleus "
                     f"{nucleus_id}): the next card may not have been seen yet.")
        return
    who = common.reviewer()
    note = (st.session_state.get("review_note") or "").strip() or None
    try:
        event = record_label_event(common.get_store(), int(nucleus_id), value, who, note, seen=seen,
                                   blind=seen is None)
    except DecidedMeanwhile as exc:
        common.bump("labels")  # the queue and the cards read the new decision
        back = "" if st.session_state.get("review_include") or st.session_state.get("review_mode") == CONFLICTS \
            else " The queue has moved on past it: turn on **Include reviewed** to see it again."
        _say("error", f"Not saved: {exc}{back}")
        return
    except GenuineError as exc:
        _say("error", f"Not saved: {exc}")
        return
    common.bump("labels")
    st.session_state.pop(UNDONE_KEY, None)
    st.session_state[SHOWN_KEY] = None  # decided: the next press waits for the next card
    st.session_state[LAST_DECISION_KEY] = now
    st.session_state["review_note"] = ""
    from store.labels import normalise_decision

    _say("success", f"Nucleus {nucleus_id}: **{VALUE_NAMES[normalise_decision(value)]}** recorded "
                    f"(event {event}, {who}{', a blind read' if seen is None else ''}).")


def undo() -> None:
    """Button callback: revert this reviewer's latest decision."""
    from store.labels import overridden_latest, undo_last

    try:
        overridden = overridden_latest(common.get_store(), common.reviewer())
        event = undo_last(common.get_store(), common.reviewer())
    except GenuineError as exc:
        _say("error", f"Undo failed: {exc}")
        return
    if event is None:
        _say("info", "Nothing to undo.")
        return
    common.bump("labels")
    from store.labels import label_event

    undone = label_event(common.get_store(), event)
    nid = int(undone["nucleus_id"])
    st.session_state[UNDONE_KEY] = nid  # its card next: the curator undid to decide again
    back = HIDDEN if blind_to(str(common.get_store().path), nid) else VALUE_NAMES.get(undone["value"], undone["value"])
    what = f"nucleus {nid} is back to **{back}** (event {event})."
    _say("success", f"Undone: {what}" if overridden is None else
         f"Your latest decision, on nucleus {overridden[0]}, was replaced by {overridden[1]} since, so the one "
         f"before it was undone: {what}")


def skip(nucleus_id: int) -> None:
    """Button callback: move a nucleus to the end of this session's queue."""
    skipped = st.session_state.setdefault("review_skipped", [])
    if int(nucleus_id) in skipped:  # skipped again: to the back again
        skipped.remove(int(nucleus_id))
    skipped.append(int(nucleus_id))
    if st.session_state.get(UNDONE_KEY) == int(nucleus_id):
        st.session_state.pop(UNDONE_KEY)
    _say("info", f"Nucleus {nucleus_id} skipped: it comes back at the end of the queue (this browser session; "
                 "it is the only one left if it shows again).")


# ----------------------------------------------------------------------------- views
def _label(v) -> str:
    return common.label_name(v)


def patch_panel(db: str, nucleus_id: int, boxes: pd.DataFrame, model_sizes: dict[str, int],
                model_configs: dict[str, dict]) -> None:
    """The patch (RGB with detector boxes) and its three channels."""
    imgs = common.patch_rgbs(db, (int(nucleus_id),))
    if nucleus_id not in imgs:
        st.warning("No stored patch for this nucleus.")
        return
    rgb = imgs[nucleus_id]
    size = rgb.shape[0]
    with_boxes = [m for m in boxes["model"].unique()] if len(boxes) else []
    shown = boxes.iloc[0:0]
    if with_boxes:
        det_model = st.selectbox("Detector boxes from", with_boxes, key="review_box_model")
        shown = boxes[boxes["model"] == det_model].copy()
        if not st.toggle("Also boxes below the count threshold", key="review_weak_boxes",
                         help="The detector stores weaker boxes too; the counts in the table use only those at or "
                              "above its per-class count threshold."):
            shown = plotting.counted_boxes(shown, model_configs.get(det_model, {}))
        off = size // 2 - model_sizes.get(det_model, size) // 2  # model saw a centre crop of the stored patch
        shown[["x1", "x2", "y1", "y2"]] += off
    scale = max(1, 288 // size)
    gain = st.session_state.get("review_gain", 1.0)
    scheme = common.patch_scheme()
    patch = np.moveaxis(rgb.astype(np.float32) / 255.0, -1, 0)
    big = plotting.draw_boxes(plotting.patch_rgb(patch, gain=gain, scheme=scheme), shown, scale=scale,
                              thickness=2, colours=plotting.box_colours(scheme))
    # PNG: Streamlit sends an array as JPEG (quality 90), whose chroma subsampling blurs the small coloured signals
    st.image(big, caption=patch_caption(scheme, bool(len(shown))), width=288, output_format="PNG")
    chans = plotting.patch_channels(patch, gain=gain, scheme=scheme)
    cols = st.columns(3)
    for col, (name, img) in zip(cols, chans):
        col.image(plotting.upscale(img, max(1, 96 // size)), caption=name, width=92, output_format="PNG")
    st.slider("Display brightness", 0.5, 3.0, 1.0, 0.25, key="review_gain",
              help="display only; decisions and models are unaffected")


def patch_caption(scheme: str, boxes: bool) -> str:
    """What the patch's colours are: each channel's colour in ``scheme`` and, with ``boxes``, the box legend."""
    legend = f"detector boxes: {plotting.box_caption(scheme)}" if boxes else "no detector boxes"
    return f"{plotting.channel_caption(scheme)}; {legend}"


def untrusted_models(models: pd.DataFrame) -> dict[str, str]:
    """Name -> why the queue's flags leave the model out ('retired', 'weak validation'; ``store.review_stats``),
    of ``common.models``' registered models."""
    from store.review_stats import untrusted_reason

    reasons = {n: untrusted_reason(pd.notna(gone), m)
               for n, gone, m in zip(models["name"], models["retired_at"], models["metrics"])}
    return {n: why for n, why in reasons.items() if why}


def predictions_panel(preds: pd.DataFrame, untrusted: dict[str, str] | None = None) -> None:
    """Each model's probability, call, uncertainty and detected counts; ``untrusted``: name -> why a model's
    call is shown but raises no 'models disagree' flag (:func:`untrusted_models`)."""
    from store.uncertainty import uncertainty_help

    if preds.empty:
        st.caption("No predictions.")
        return
    counted = preds["det_nmi"].notna()
    view = pd.DataFrame({
        "Model": preds["model"], "P(MNA)": preds["prob_calibrated"].astype(float),
        "Call": preds["call"].map(_label), "Unc.": preds["uncertainty"].astype(float),
        "Signals": np.where(counted, [f"{a:.0f} · {b:.0f} · {c:.0f}" for a, b, c in
                                      preds[["det_nmi", "det_mycn", "det_cluster"]].fillna(0).to_numpy()], None),
    })
    # the five columns fit the card's right half on a 1280 px laptop screen
    st.dataframe(view, hide_index=True, placeholder="–", column_config={
        "P(MNA)": st.column_config.ProgressColumn(format="%.2f", min_value=0.0, max_value=1.0, width=96),
        "Call": st.column_config.TextColumn(width=72),
        "Unc.": st.column_config.NumberColumn(format="%.2f", width=52, help=uncertainty_help(preds)),
        "Signals": st.column_config.TextColumn(width=80, help="detected NMI · MYCN · MYCN-cluster signals"),
    }, key="review_preds")
    for why in ("retired", "weak validation"):
        names = [m for m in preds["model"] if (untrusted or {}).get(m) == why]
        if names:
            st.caption(f":orange[:material/warning: {why}: {', '.join(names)}; its call is shown but does not "
                       "count toward 'models disagree' or the All focus.]")


def card(db: str, row: pd.Series, model_sizes: dict[str, int], model_configs: dict[str, dict],
         untrusted: dict[str, str] | None = None) -> None:
    """One nucleus: images on the left, facts and decision buttons on the right."""
    nid = int(row["nucleus_id"])
    data = card_data(db, common.rev("labels"), common.rev("data"), nid)
    info = data["info"].iloc[0] if len(data["info"]) else pd.Series(dtype=object)
    with st.container(border=True, key="review_card"):
        left, right = st.columns([2, 3], gap="large")
        with left:
            patch_panel(db, nid, data["boxes"], model_sizes, model_configs)
        with right:
            st.markdown(f"#### Nucleus {nid}")
            st.caption(f"sample **{info.get('sample', '?')}** · scan `{info.get('scan_file', '?')}` · "
                       f"mask {info.get('mask_label', '?')} · centre ({info.get('cx', 0):.0f}, {info.get('cy', 0):.0f})"
                       + (f" · informativeness {row['informativeness']:.2f}" if "informativeness" in row else ""))
            if "informativeness" in row:  # a flagged-queue row (a conflict row carries no flags)
                flags = [FLAG_NAMES[f] for f in FLAG_NAMES if bool(row.get(f, False))]
                st.markdown(" ".join(f":orange-badge[{f}]" for f in flags) or ":gray-badge[no flag]")
            hidden = blind_to(db, nid)
            l1, l2, l3 = st.columns(3)
            l1.metric("Auto label", _label(info.get("auto_label")))
            if hidden:
                l2.metric("Curated", "hidden", help="blind review: other reviewers' decisions show once you decided")
            else:
                l2.metric("Curated", common.curated_name(info) if len(info) else "-",
                          help=f"by {info.get('curated_by')}" if pd.notna(info.get("curated_by")) else None)
            if pd.notna(info.get("true_label")):
                l3.metric("Ground truth", _label(info.get("true_label")), help="synthetic sample: known truth")
            predictions_panel(data["preds"], untrusted)
            if hidden:
                st.caption(":material/visibility_off: Blind review: other reviewers' decisions on this nucleus "
                           "show once you have decided it.")
                decision_bar(nid, None)
                return
            reviews_panel(data["reviews"])
            seen = "exclude" if bool(info.get("excluded", False)) else (
                "unset" if pd.isna(info.get("curated_label")) else str(int(info.get("curated_label"))))
            decision_bar(nid, seen)


#: the card's badge per conflict state (``store.agreement.STATES``; ``majority``: settled by a blind read's majority)
STATE_BADGES = {"open": ":red-badge[reviewers disagree: your decision settles it]",
                "settled": ":green-badge[reviewers disagreed · settled: a different decision opens it again]",
                "majority": ":green-badge[reviewers disagreed · settled by majority: a blind read sided with one "
                            "of them]",
                "none": ":gray-badge[reviewers agree]"}


def reviews_panel(review) -> None:
    """Each reviewer's latest decision and note (``store.agreement.NucleusReview``), whether they disagree, and
    the decisions made since they disagreed (adjudications); nothing for a nucleus no two reviewers decided. A
    blind read (decided in blind review) is a review, marked as such."""
    from store.agreement import CATEGORIES, settled_by

    if len(review.reviews) < 2 and not review.adjudications:
        return
    st.markdown(f"**Reviews** {STATE_BADGES['majority' if settled_by(review) == 'majority' else review.state]}")
    rows = [{**r, "Reviewer": f"{who} (blind read)" if r.get("blind") else who}
            for who, r in sorted(review.reviews.items())]
    rows += [{**a, "Reviewer": f"{a['reviewer'] or '(unnamed)'} (adjudication)"} for a in review.adjudications]
    table = pd.DataFrame(rows)
    view = pd.DataFrame({"Reviewer": table["Reviewer"], "Decision": table["value"].map(lambda v: CATEGORIES.get(v, v)),
                         "Note": table["note"], "When (UTC)": table["created_at"]})
    st.dataframe(view, hide_index=True, placeholder="–", key="review_reviews", column_config={
        "When (UTC)": st.column_config.DatetimeColumn(format="MM-DD HH:mm", width=84),
        "Note": st.column_config.TextColumn(width="medium")})


def decision_key(which: str, nid: int, seen: str | None) -> str:
    """The key of a decision button: it names the card (nucleus and the decision it shows), so a press made
    on a card the browser still showed reaches the server as that card's button. Once the next card is
    drawn, Streamlit drops a press on a button that is no longer on the page: a fast double press can
    never decide a card the curator has not seen. A blind card (``seen`` None) is named ``blind``: the key is
    in the page, and must not tell the hidden decision."""
    return f"decide_{which}_{nid}_{'blind' if seen is None else seen}"


def decision_bar(nid: int, seen: str | None) -> None:
    """MNA / non-MNA / exclude / skip / undo with keyboard shortcuts, and the note; ``seen``: the
    nucleus' stored decision the card shows ('0', '1', 'exclude', 'unset'; None on a blind card)."""
    who = common.reviewer()
    st.session_state[SHOWN_KEY] = nid  # the nucleus a decision button press may decide
    st.text_input("Note (optional)", key="review_note", placeholder="e.g. two overlapping nuclei")
    for col, (key, (label, value, shortcut, kind)) in zip(st.columns(3), DECISIONS.items()):
        col.button(label, key=decision_key(key, nid, seen), type=kind, shortcut=shortcut, disabled=not who,
                   width="stretch", on_click=decide, args=(nid, value, seen), help=f"record '{label}' ({shortcut})")
    skip_col, undo_col, _ = st.columns(3)
    skip_col.button("Skip", key="review_skip", shortcut="S", on_click=skip, args=(nid,), width="stretch",
                    help="later (S)")
    undo_col.button("Undo", key="review_undo", shortcut="U", on_click=undo, disabled=not who, width="stretch",
                    help="revert your latest decision (U)")
    if not who:
        st.warning("Enter your name under **Reviewer** in the sidebar to record decisions.",
                   icon=":material/person:")


def export_panel(db: str) -> None:
    """Download buttons for curated labels and the full audit trail.

    A download does not rerun the page (``on_click="ignore"``): a rerun replaces the Training set's deferred
    file, so a second download pressed before the browser had the new page was lost. Nothing here changes on
    a download. Every file is made from the store when pressed: building both CSVs on every decision took
    0.3 s at 10,000 label events, and grew with every event. None in blind review: every file holds every
    reviewer's decisions."""
    if blind():
        st.caption(":material/visibility_off: Downloads are off in blind review: the curated labels, the training "
                   "set and the audit trail hold every reviewer's decisions.")
        return
    n = n_curated(db, common.rev("labels"))
    c1, c2, c3, c4 = st.columns([1.2, 1.2, 1, 1.8])
    c1.download_button(f"Curated labels ({n})", lambda: curated_csv(db), file_name="curated_labels.csv",
                       mime="text/csv",
                       icon=":material/download:", key="export_labels", disabled=n == 0, on_click="ignore")
    problem = training_set_problem(db, common.rev("labels"), common.rev("data"))
    c2.download_button("Training set", lambda: training_set_bytes(db), file_name="curated.npz",
                       mime="application/octet-stream", icon=":material/dataset:", key="export_training",
                       disabled=problem is not None, on_click="ignore",
                       help=f"Not available: {problem}." if problem else
                       "curated.npz: patches + curated labels for `genuine train --data curated.npz`")
    c3.download_button("Audit trail", lambda: audit_csv(db), file_name="label_audit.csv", mime="text/csv",
                       icon=":material/history:", key="export_audit", on_click="ignore")
    c4.caption("Curated labels: the current decision per nucleus (latest event). The audit trail lists every "
               "event with reviewer, time, previous value and note.")
    if problem and n:
        st.caption(f":orange[:material/info: Training set not available: {problem}.]")


# ----------------------------------------------------------------------------- queues
def _show(msg) -> None:
    """The last action's message, in a slot drawn on every run (empty without one): the card below keeps its
    place when a rerun drops the message (the note's text sent as Tab leaves it), so the browser does not
    draw it anew and the decision button Tab focused keeps the focus (Enter presses it)."""
    slot = st.empty()
    if msg:
        getattr(slot, msg[0])(msg[1])


def flagged_queue(db: str, models: pd.DataFrame, smp: pd.DataFrame, msg) -> pd.DataFrame | None:
    """Filters, progress and the page of flagged nuclei (``store.review``); None when no flag is chosen."""
    f1, f2, f3 = st.columns([2, 2, 1.4], vertical_alignment="bottom")
    sample = f1.selectbox("Sample", [ALL] + smp["name"].tolist(), key="review_sample")
    model = f2.selectbox("Focus model", [ALL] + models["name"].tolist(), key="review_model",
                         help="flags and ordering use this model's predictions (All: every active model "
                              "without weak validation)")
    if blind():  # every nucleus this reviewer has not decided, whether others have or not (which is hidden)
        include = f3.toggle("Include reviewed", value=True, disabled=True, key="review_include_blind",
                            help="blind review lists every flagged nucleus you have not decided")
    else:
        include = f3.toggle("Include reviewed", key="review_include",
                            help="also list nuclei that already have another reviewer's decision (a second review); "
                                 "those you decided leave the queue")
    flags = st.pills("Flags", list(FLAG_NAMES), selection_mode="multi", default=list(FLAG_NAMES),
                     format_func=FLAG_NAMES.get, key="review_flags",
                     help="list nuclei with any of the chosen flags. 'models disagree': the active models without "
                          "weak validation make different calls; a retired model, or one flagged 'weak validation' "
                          "on the Cases page, is shown on the card but never raises it")
    sample_arg = None if sample == ALL else sample
    model_arg = None if model == ALL else model
    flags_t = tuple(flags)
    _show(msg)
    if not flags_t:
        st.info("Choose at least one flag.")
        return None
    me = common.reviewer() if include else None  # a second review: the nuclei this reviewer decided leave the queue
    prog = progress(db, common.rev("labels"), common.rev("data"), sample_arg, model_arg, flags_t, common.rev("models"),
                    me)
    total = prog["total"]
    if total:
        st.progress(*progress_line(prog, blind()))
    q = queue(db, common.rev("labels"), common.rev("data"), sample_arg, model_arg, flags_t, include, QUEUE_PAGE,
              common.rev("models"), me)
    if q.empty:
        if total:
            st.success("Queue done: you have decided every flagged nucleus here." if me else
                       "Queue done: every flagged nucleus here has a decision.", icon=":material/task_alt:")
            _undo_button()
        elif model_arg is not None and int(models.set_index("name").loc[model_arg, "n_predictions"]) == 0:
            st.info(f"**{model_arg}** has no predictions yet: score the stored scans with it on the "
                    "Models page (**Score**), or ingest new ones.",
                    icon=":material/inbox:")
        else:
            st.info("No flagged nuclei for this filter: try another sample or focus model, or more flags.",
                    icon=":material/filter_alt_off:")
    return q


def progress_line(prog: dict, blind_review: bool = False) -> tuple[float, str]:
    """The progress bar's fraction and text (``store.review.review_progress``). With ``mine`` (a second review,
    Include reviewed) it is this reviewer's progress: the queue lists the flagged nuclei they have not decided,
    whoever else did; blind, nothing about other reviewers' decisions is said."""
    total = prog["total"]
    if blind_review and "mine" not in prog:  # no reviewer name: nothing is theirs, and others' decisions are hidden
        return 0.0, f"**{total} flagged nuclei** · enter your name under **Reviewer** to review them"
    if "mine" not in prog:
        return prog["reviewed"] / total, (f"**{prog['reviewed']} of {total} reviewed** · {prog['remaining']} to go · "
                                          f"{prog['excluded']} excluded")
    mine = prog["mine"]
    text = f"**{mine} of {total} reviewed by you** · {total - mine} to go"
    if not blind_review:
        text += f" · {prog['reviewed']} with a decision (anyone's) · {prog['excluded']} excluded"
    return mine / total, text


def _undo_button() -> None:
    st.button("Undo", key="review_undo", shortcut="U", on_click=undo, disabled=not common.reviewer(),
              help="revert your latest decision (U)")


def conflicts_queue(db: str, smp: pd.DataFrame, msg) -> pd.DataFrame:
    """Filters, progress and the nuclei whose reviewers disagree (``store.agreement.conflicts``), open first."""
    f1, f3 = st.columns([4, 1.4], vertical_alignment="bottom")
    sample = f1.selectbox("Sample", [ALL] + smp["name"].tolist(), key="review_sample")
    include = f3.toggle("Include settled", key="review_include_settled",
                        help="also list conflicts a decision has settled")
    sample_arg = None if sample == ALL else sample
    _show(msg)
    every = conflict_queue(db, common.rev("labels"), common.rev("data"), sample_arg)
    if blind():  # only conflicts this reviewer took part in: on the others, whose decisions are hidden
        mine = decided_by_me(db, common.rev("labels"), common.reviewer(), tuple(every["nucleus_id"].astype(int)))
        every = every[every["nucleus_id"].isin(mine)]
        st.caption(":material/visibility_off: Blind review: only conflicts on nuclei you have decided are listed.")
    total, settled = len(every), int((every["state"] == "settled").sum())
    by_majority = int((every["settled_by"] == "majority").sum())
    if total:
        st.progress(settled / total, text=f"**{settled} of {total} conflicts settled**"
                                          + (f" ({by_majority} by majority: a blind read sided with one reviewer)"
                                             if by_majority else "") + f" · {total - settled} open")
    q = every if include else every[every["state"] == "open"]
    if q.empty:
        if total:
            st.success("No open conflict: a decision has settled every nucleus its reviewers disagreed on"
                       + (" in this sample." if sample_arg else "."), icon=":material/task_alt:")
            _undo_button()
        elif blind():
            st.info("No conflicts on nuclei you have decided" + (" in this sample." if sample_arg else "."),
                    icon=":material/handshake:")
        else:
            res = agreement_data(db, common.rev("labels"))
            st.info(f"No conflicts{' in this sample' if sample_arg else ''}: no nucleus has reviewers whose latest "
                    f"decisions disagree ({res.summary()}).", icon=":material/handshake:")
    return q.reset_index(drop=True)


def agreement_panel(db: str, expanded: bool) -> None:
    """Per pair of reviewers: nuclei both reviewed, agreement, kappa with CI; a pair's confusion matrix."""
    from store.agreement import METHOD, pair_table

    if blind():
        st.caption(":material/visibility_off: Agreement between reviewers is hidden in blind review: it is made of "
                   "other reviewers' decisions, on nuclei you may not have decided yet.")
        return
    res = agreement_data(db, common.rev("labels"))
    with st.expander("Agreement between reviewers", expanded=expanded, icon=":material/groups:"):
        st.caption(res.summary() + ".")
        if res.pairs.empty:
            return
        st.dataframe(pair_table(res.pairs), hide_index=True, key="review_agreement", placeholder="–",
                     column_config={"Note": st.column_config.TextColumn(width="large")})
        st.caption(METHOD)
        pair = st.selectbox("Confusion matrix of", list(res.matrices), format_func=lambda p: f"{p[0]} / {p[1]}",
                            key="review_matrix_pair")  # a pair in the table: it reviewed at least one nucleus
        m = res.matrices[pair]
        st.caption(f"rows: {pair[0]}'s decision · columns: {pair[1]}'s")
        st.dataframe(m.rename_axis(index=pair[0], columns=pair[1]), key="review_matrix", width="content")


def hidden_nuclei(db: str, nucleus_ids) -> set[int]:
    """Of ``nucleus_ids``, those this reviewer has no standing decision on (blind: others' decisions hidden)."""
    ids = tuple(sorted({int(i) for i in nucleus_ids}))
    return set(ids) - decided_by_me(db, common.rev("labels"), common.reviewer(), ids)


def recent_table(ev: pd.DataFrame, hidden: set[int]) -> pd.DataFrame:
    """The reviewer's latest events (``my_events``) in words; on the ``hidden`` nuclei (blind review, their own
    decision undone) the value before each event and the one an undo went back to are other reviewers'."""
    blind_rows = ev["nucleus_id"].astype(int).isin(hidden).to_numpy()
    undo = ev["undoes"].notna().to_numpy()
    before = ev["previous"].map(lambda v: VALUE_NAMES.get(v, v)).to_numpy(dtype=object)
    value = ev["value"].map(lambda v: VALUE_NAMES.get(v, v)).to_numpy(dtype=object)
    return pd.DataFrame({
        "Time (UTC)": ev["created_at"], "Nucleus": ev["nucleus_id"], "Sample": ev["sample"],
        "Before": np.where(blind_rows, HIDDEN, before),
        "Decision": np.where(blind_rows & undo, HIDDEN, value) + np.where(undo, " (undo)", ""),
        "Note": ev["note"], "Event": ev["event_id"]})


# ----------------------------------------------------------------------------- page
def main() -> None:
    st.html(DECISION_CSS)
    common.page_header("Review", "Nuclei where the automatic label, the models or their confidence disagree, "
                                 "most informative first. Each click records one decision under your name.")
    store = common.store_or_stop()
    db = str(store.path)
    models = common.models(db, common.rev("models"))
    smp = common.samples(db, common.rev("data"))
    if models.empty or smp.empty:
        common.empty_state("scored nuclei")
        return
    model_sizes = dict(zip(models["name"], models["patch_size"].astype(int)))
    untrusted = untrusted_models(models)

    mode_col, blind_col = st.columns([4, 1.4], vertical_alignment="bottom")
    blind_toggle(blind_col)
    mode = mode_col.segmented_control("Queue", [FLAGGED, CONFLICTS], default=FLAGGED, required=True, key="review_mode",
                                help="Flagged nuclei: where the automatic label, the models or their confidence "
                                     "disagree. Conflicts: nuclei whose reviewers' latest decisions disagree; one "
                                     "decision settles each.")
    msg = st.session_state.pop("review_msg", None)
    if mode == CONFLICTS:
        q = conflicts_queue(db, smp, msg)
    else:
        q = flagged_queue(db, models, smp, msg)
    if q is None:
        return
    if len(q):
        from store.review import skipped_last

        q = skipped_last(q, st.session_state.get("review_skipped", []))
        undone = q["nucleus_id"] == st.session_state.get(UNDONE_KEY)
        q = pd.concat([q[undone], q[~undone]])  # the nucleus just undone first (else a queue order may bury it)
        card(db, q.iloc[0], model_sizes, dict(zip(models["name"], models["config"])), untrusted)
        upcoming = q.iloc[1:9]
        if len(upcoming):
            whose = ("current decision" if mode == CONFLICTS else
                     "mean P(MNA) of the models" if st.session_state.get("review_model", ALL) == ALL
                     else f"P(MNA) of {st.session_state['review_model']}")
            st.markdown(f"**Up next** <small>(#nucleus · {whose})</small>", unsafe_allow_html=True)
            captions = ([f"#{i} · {VALUE_NAMES.get(v, v)}"
                         for i, v in zip(upcoming["nucleus_id"], upcoming["current"])] if mode == CONFLICTS else
                        [f"#{i} · {p:.2f}" for i, p in zip(upcoming["nucleus_id"], upcoming["prob"])])
            common.gallery(upcoming["nucleus_id"].tolist(), captions, ncols=8, width=80, db=db)
    st.divider()
    who = common.reviewer()
    if who:
        ev = my_events(db, common.rev("labels"), who)
        if len(ev):
            st.markdown(f"**Your latest decisions** ({who})")
            show = recent_table(ev, hidden_nuclei(db, ev["nucleus_id"]) if blind() else set())
            st.dataframe(show, hide_index=True, key="review_recent", placeholder="–", column_config={
                "Time (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
                "Decision": st.column_config.TextColumn(width="medium"),
                "Note": st.column_config.TextColumn(width="large")})
    agreement_panel(db, expanded=mode == CONFLICTS)
    export_panel(db)


main()
