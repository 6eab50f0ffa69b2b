"""Cases (home): one row per sample, predicted vs expected for mixtures, and a case drill-down."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from genuine_core import plotting
from genuine_core.percent_text import pct_digits, pct_round, pct_text
from pages import common

common.require_entrypoint()

#: the address's query parameters: the open case, and the model whose calls the page shows
CASE_KEY, MODEL_KEY = "case", "model"


# ----------------------------------------------------------------------------- cached queries
@st.cache_data(show_spinner=False, max_entries=8)
def summaries(db: str, data_rev: int, labels_rev: int, models_rev: int) -> pd.DataFrame:
    """``store.summary.sample_summaries`` for every sample and model."""
    from store.summary import sample_summaries

    return sample_summaries(common.store_at(db))


@st.cache_data(show_spinner=False, max_entries=8)
def sign_outs(db: str, data_rev: int, labels_rev: int, models_rev: int, signouts_rev: int) -> pd.DataFrame:
    """``store.signout.in_force``: the sign-out in force per sample, with what changed since."""
    from store.signout import in_force

    return in_force(common.store_at(db), summaries(db, data_rev, labels_rev, models_rev))


@st.cache_data(show_spinner=False, max_entries=16)
def sign_out_history(db: str, signouts_rev: int, sample: str) -> pd.DataFrame:
    """``store.signout.history`` of one sample, oldest first."""
    from store.signout import history

    return history(common.store_at(db), sample)


def current_sign_outs(db: str) -> pd.DataFrame:
    """:func:`sign_outs` at the current revisions."""
    return sign_outs(db, common.rev("data"), common.rev("labels"), common.rev("models"), common.rev("signouts"))


@st.cache_data(show_spinner=False, max_entries=8)
def sample_list(db: str, data_rev: int) -> pd.DataFrame:
    """Every sample, scored or not: ``name, kind, n_nuclei`` (``store.samples.list_samples``)."""
    from store.samples import list_samples

    return list_samples(common.store_at(db))[["name", "kind", "n_nuclei"]]


def no_call_text(n_nuclei: int) -> str:
    """The Call of a sample no model has a call for now: its nuclei all excluded, or none stored."""
    return "no call now: all nuclei excluded" if n_nuclei else "no call now: no nucleus stored"


def uncalled_samples(summary: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """The samples without a summary row (``name, kind, n_nuclei``): every nucleus excluded, or none stored."""
    return samples[~samples["name"].isin(set(summary["sample"]))].reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=32)
def sample_nuclei(db: str, data_rev: int, labels_rev: int, sample: str, model: str) -> pd.DataFrame:
    """``store.nuclei.sample_nuclei`` (one model's predictions and every label), ``prob`` calibrated."""
    from store.nuclei import sample_nuclei as q

    return calibrated(q(common.store_at(db), sample, model))


def calibrated(nuc: pd.DataFrame) -> pd.DataFrame:
    """``prob`` := the temperature-calibrated P(MNA), the one every page shows (Review, Embeddings, summaries)."""
    return nuc.assign(prob=nuc["prob_calibrated"])


@st.cache_data(show_spinner=False, max_entries=16)
def scans(db: str, data_rev: int, labels_rev: int, sample: str) -> pd.DataFrame:
    """``store.scans.scan_overview`` of one sample (with its excluded nuclei)."""
    from store.scans import scan_overview

    return scan_overview(common.store_at(db), sample)


def scan_labels(sc: pd.DataFrame) -> dict[int, str]:
    """Scan id -> as the case's Scan picker names it: 'FILE (N nuclei)', with ', K excluded' (', all excluded':
    a curator excluded the scan), and 'scan ID · ' first when another scan of the sample has the same file name."""
    twice = set(sc.loc[sc["file_name"].duplicated(), "file_name"])
    out = {}
    for i, f, n, k in zip(sc["id"], sc["file_name"], sc["n_nuclei"], sc["excluded_nuclei"]):
        excluded = "" if not k else ", all excluded" if k >= n else f", {k} excluded"
        out[int(i)] = ("" if f not in twice else f"scan {int(i)} · ") + f"{f} ({n} nuclei{excluded})"
    return out


@st.cache_data(show_spinner=False, max_entries=12)
def scan_overlay(db: str, data_rev: int, labels_rev: int, scan_id: int, model: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Scan image with nucleus outlines coloured by ``model``'s probability, and the scan's nuclei."""
    from store.nuclei import scan_nuclei
    from store.scans import scan_images

    s = common.store_at(db)
    image, masks = scan_images(s, int(scan_id))
    nuc = calibrated(scan_nuclei(s, int(scan_id), model))
    probs = nuc["prob"].to_numpy(np.float64)
    colours = dict(zip(nuc["mask_label"].astype(int), map(tuple, plotting.colour_for_probability(probs))))
    for label in nuc.loc[nuc["excluded"].astype(bool), "mask_label"]:
        colours[int(label)] = (128, 128, 128)
    thickness = 2 if max(image.shape[:2]) >= 700 else 1
    # nuclei without a row (cut by the border, not scored) keep a dim outline
    overlay = plotting.outline_overlay(image, masks, colours, default=(90, 90, 90), thickness=thickness)
    return overlay, nuc


@st.cache_data(show_spinner=False, max_entries=12)
def scan_figure(db: str, data_rev: int, labels_rev: int, scan_id: int, model: str, title: str):
    """The zoomable scan figure (PNG-encoded overlay + hover per nucleus), built once per scan/model."""
    overlay, nuc = scan_overlay(db, data_rev, labels_rev, scan_id, model)
    nuc = nuc.assign(label=[("excluded" if e else f"curated {common.label_name(c)}"
                             if pd.notna(c) else f"auto {common.label_name(a)}")
                            for e, c, a in zip(nuc["excluded"], nuc["curated_label"], nuc["auto_label"])])
    return plotting.scan_figure(overlay, nuc, title=title)


@st.cache_data(show_spinner=False, max_entries=4)
def mixture_figure(db: str, data_rev: int, labels_rev: int, models_rev: int):
    """Predicted vs expected MNA % for samples with a known expected fraction (None when there are none)."""
    known = summaries(db, data_rev, labels_rev, models_rev).dropna(subset=["expected_pct"])
    if known.empty:
        return None
    return plotting.predicted_vs_expected(known.rename(columns={"mna_pct": "pred_pct"}),
                                          title="Predicted vs expected MNA share (samples with an expected share: "
                                                "mixtures, and cell lines by genotype)")


@st.cache_data(show_spinner=False, max_entries=16)
def histogram_figure(db: str, data_rev: int, labels_rev: int, sample: str, models: tuple[str, ...]):
    """Per-nucleus probability histogram of one sample, one series per model."""
    preds = pd.concat([sample_nuclei(db, data_rev, labels_rev, sample, m).assign(model=m)[["model", "prob"]]
                       for m in models], ignore_index=True).dropna()
    return plotting.probability_histogram(preds, title="Per-nucleus P(MNA)")


# ----------------------------------------------------------------------------- views
#: what the corrected estimate is, wherever the page shows it
CORRECTED_HELP = ("Rogan-Gladen estimate corrected for the model's validation sensitivity/specificity (measured on "
                  "the split that also chose its best epoch, so slightly optimistic: the correction may fall short)")
CALL_COLOURS = {"MNA": "red", "heterogeneous MNA": "orange", "non-MNA": "blue", "not enough nuclei": "gray"}


def call_badge(call: str) -> str:
    """The clinical call as a coloured markdown badge."""
    return f":{CALL_COLOURS.get(call, 'gray')}-badge[{call}]"


def model_labels(summary: pd.DataFrame):
    """Model name -> as shown: a retired model (its stored calls stay, it scores no new scan) says so."""
    retired = set(summary.loc[summary["retired"].astype(bool), "model"]) if "retired" in summary else set()
    return lambda model: f"{model} (retired)" if model in retired else model


#: the table's sign-out marker (column "Signed out", before the QC flags): signed out, and its numbers since moved
SIGNED_MARK, CHANGED_MARK = "✓", "✓ changed"


def signed_mark(row: dict) -> str:
    """The sign-out in force as the table's narrow marker: '✓', or '✓ changed' when its numbers moved since."""
    return CHANGED_MARK if len(row["changes"]) else SIGNED_MARK


def signed_text(row: dict) -> str:
    """A sign-out in the case table: 'MNA · Dr. A · 2026-12-05' (the call as ``store.signout.call_text`` says it,
    with the model's call it overrides), with '· changed since' when its numbers moved."""
    from store import signout

    return " · ".join([signout.call_text(row), row["by_user"], str(row["created_at"])[:10]]
                      + (["changed since"] if len(row["changes"]) else []))


def case_table(summary: pd.DataFrame, models: list[str], primary: str,
               signed: pd.DataFrame | None = None, uncalled: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per sample: the primary model's MNA %, call, whether it is signed out (a narrow marker) and QC
    flags first (in view without scrolling at 1280 px), the pathologist's sign-out in force in words (``signed``:
    ``store.signout.in_force``; blank: none), then
    the primary model's other numbers, then every other model's MNA %. A signed-out sample of ``uncalled``
    (:func:`uncalled_samples`: no model has a call for it now) stays listed, its Call saying why there is none."""
    signed = signed if signed is not None else pd.DataFrame(columns=["sample"])
    kept = pd.DataFrame(columns=["name", "kind", "n_nuclei"]) if uncalled is None else \
        uncalled[uncalled["name"].isin(set(signed["sample"]))]
    first = summary.drop_duplicates("sample").set_index("sample")
    first = first.reindex(first.index.union(kept["name"]))
    first.loc[kept["name"], "sample_kind"] = kept["kind"].to_numpy()
    out = pd.DataFrame(index=pd.Index(sorted(set(summary["sample"]) | set(kept["name"])), name="Sample"))
    label = model_labels(summary)

    def rows_of(model: str) -> pd.DataFrame:
        return summary[summary["model"] == model].set_index("sample").reindex(out.index)

    def interval(m: pd.DataFrame) -> list[str]:
        return [f"{pct_text(lo)}–{pct_text(hi)}" if np.isfinite(lo) else ""
                for lo, hi in zip(m["ci_low_pct"], m["ci_high_pct"])]

    prim = rows_of(primary)
    out[f"{label(primary)} MNA %"] = prim["mna_pct"]
    out["Call"] = prim["call"]
    for name, n_nuclei in zip(kept["name"], kept["n_nuclei"]):
        out.loc[name, "Call"] = no_call_text(int(n_nuclei))
    in_force = {r["sample"]: r for r in signed.to_dict("records")}
    out["Signed out"] = [signed_mark(in_force[name]) if name in in_force else "" for name in out.index]
    out["QC flags"] = [list(f) if isinstance(f, (list, np.ndarray)) else [] for f in prim["qc_flags"]]
    out["Sign-out in force"] = [signed_text(in_force[name]) if name in in_force else "" for name in out.index]
    out["Nuclei scored"] = prim["n_scored"]
    out["Kind"] = first["sample_kind"]
    out[f"{label(primary)} 95 % CI"] = interval(prim)
    out["Corrected %"] = prim["corrected_pct"]
    out["Expected %"] = first["expected_pct"]
    out["Deviation (pp)"] = prim["deviation_pp"]
    if prim["true_mna_pct"].notna().any():  # synthetic samples know their nuclei's truth
        out["True % (synthetic)"] = prim["true_mna_pct"]
    for model in (m for m in models if m != primary):
        m = rows_of(model)
        out[f"{label(model)} MNA %"] = m["mna_pct"]
        out[f"{label(model)} 95 % CI"] = interval(m)
    # the digits the sample report prints (the table's JavaScript formatting rounds ties such as 6.25 up)
    for c in out.columns:
        if c.endswith("%"):
            out[c] = out[c].map(pct_round)
    out["Deviation (pp)"] = [float(f"{v:.1f}") if pd.notna(v) else np.nan for v in out["Deviation (pp)"]]
    return out.reset_index()


def pct_format(values: pd.Series) -> str:
    """printf format for a percentage column: one decimal, or as many as its values need to show a share
    above 20 % (or 0 %) as above it (``genuine_core.percent_text``)."""
    return f"%.{max([pct_digits(v) for v in values if pd.notna(v)], default=1)}f"


def header_width(header: str) -> int:
    """Column width (px) that shows ``header`` uncut: ~8 px per character of the 14 px table font, plus room
    for the sort arrow (a width set from the cells alone cut long headers such as "genuine_cpu 95 % CI")."""
    return 24 + 8 * len(header)


def render_table(summary: pd.DataFrame, models: list[str], primary: str,
                 signed: pd.DataFrame | None = None,
                 uncalled: pd.DataFrame | None = None) -> tuple[str | None, list[str]]:
    """Filters + the case table; returns the sample picked in the table (or None) and the samples shown."""
    table = case_table(summary, models, primary, signed, uncalled)
    f1, f2, f3, f4 = st.columns([2, 2, 2, 1.3])
    text = f1.text_input("Search sample", placeholder="name contains ...", key="cases_search")
    kinds = f2.multiselect("Kind", sorted(table["Kind"].dropna().unique()), key="cases_kinds")
    calls = f3.multiselect("Call", sorted(table["Call"].dropna().unique()), key="cases_calls")
    flagged_only = f4.toggle("QC-flagged only", key="cases_flagged")
    view = table
    if text:
        view = view[view["Sample"].str.contains(text, case=False, regex=False)]
    if kinds:
        view = view[view["Kind"].isin(kinds)]
    if calls:
        view = view[view["Call"].isin(calls)]
    if flagged_only:
        view = view[view["QC flags"].map(len) > 0]
    config = {c: st.column_config.NumberColumn(format=pct_format(view[c]), width=header_width(c))
              for c in view.columns if c.endswith("%")}
    config.update({c: st.column_config.TextColumn(width=header_width(c)) for c in view.columns if c.endswith(" CI")})
    config.update({
        "Sample": st.column_config.TextColumn(pinned=True),  # stays in view when the table scrolls sideways
        "Nuclei scored": st.column_config.NumberColumn(format="%d", width=header_width("Nuclei scored")),
        "Deviation (pp)": st.column_config.NumberColumn(format="%+.1f", width=header_width("Deviation (pp)"),
                                                        help="predicted minus expected MNA share (primary model)"),
        "True % (synthetic)": st.column_config.NumberColumn(
            format=pct_format(view.get("True % (synthetic)", pd.Series(dtype=float))),
            width=header_width("True % (synthetic)"),
            help="ground-truth MNA share of the scored nuclei (synthetic samples only); below the "
                 "expected share where amplified lines hold non-amplified nuclei"),
        "Corrected %": st.column_config.NumberColumn(
            format=pct_format(view["Corrected %"]), width=header_width("Corrected %"), help=CORRECTED_HELP),
        "Call": st.column_config.TextColumn(width="medium", help="MNA (more than 20 % of the nuclei called MNA) / "
                                                                 "heterogeneous MNA (20 % or fewer, at least 5) / "
                                                                 "non-MNA / not enough nuclei (fewer than 50); see "
                                                                 "genuine_core.rules"),
        # "large" (400 px): two flags ("high uncertainty", "auto-label disagreement") were cut at "medium"
        "QC flags": st.column_config.ListColumn(width="large", help="open the case for what each flag means"),
        # narrow, before the 400 px QC flags: in view at 1280 px (the words are in "Sign-out in force")
        "Signed out": st.column_config.TextColumn(width=header_width("Signed out"), help=(
            f"{SIGNED_MARK}: a pathologist signed the sample out (final call in force); {CHANGED_MARK}: its "
            "numbers moved since (open the case); blank: not signed out. The call, who and when: the 'Sign-out "
            "in force' column and the case")),
        "Sign-out in force": st.column_config.TextColumn(width="large", help="the pathologist's final call in "
                                                         "force, who signed it out and when; 'changed since': its "
                                                         "numbers moved (open the case)"),
    })
    st.caption(f"{len(view)} of {len(table)} samples · call, corrected estimate and deviation from **{primary}** · "
               "click a row to open the case below · the numbers are the models' calls: nuclei a curator "
               "excluded are left out, relabelled ones keep the model's call")
    if view.empty:
        st.info("No sample matches these filters.", icon=":material/filter_alt_off:")
        return None, []
    # the selection is a row number: a table under other filters is another widget, so a row picked
    # before the filter changed can never open the sample that now sits at that row
    filters = repr((text, sorted(kinds), sorted(calls), flagged_only, primary))
    event = st.dataframe(view, hide_index=True, column_config=config, on_select="rerun", placeholder="–",
                         selection_mode="single-row", key=f"cases_table {filters}",
                         height=min(38 + 35 * len(view), 420))
    rows = [r for r in (event.selection.rows if event is not None else []) if r < len(view)]
    return (str(view.iloc[rows[0]]["Sample"]) if rows else None), view["Sample"].astype(str).tolist()


def report_files(db: str, sample: str, model: str, prepared_by: str | None) -> dict[str, bytes]:
    """The sample report folder of ``genuine export sample`` (``store.export.export_sample``) as bytes by
    file name, stating ``model``'s call first."""
    import tempfile
    from pathlib import Path

    from store.export import export_sample

    with tempfile.TemporaryDirectory() as tmp:
        files = export_sample(common.store_at(db), sample, Path(tmp), model=model, prepared_by=prepared_by)
        return {p.name: p.read_bytes() for p in files}


def zipped(files: dict[str, bytes], folder: str) -> bytes:
    """``files`` in one zip archive, inside ``folder/``."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(f"{folder}/{name}", data)
    return buf.getvalue()


def render_downloads(db: str, sample: str, primary: str | None) -> None:
    """The sample report (HTML) and the whole report folder (zip), built when clicked (``primary``: the model
    whose call it states first; None: the model for calls has none, so the report opens with the sign-out)."""
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in sample)
    who = common.reviewer() or None  # read now: the buttons build their files outside this script run
    c1, c2, c3 = st.columns([1, 1, 3])
    c1.download_button("Report (HTML)", lambda: report_files(db, sample, primary, who)["summary.html"],
                       file_name=f"{stem}_report.html", mime="text/html", icon=":material/description:",
                       key="case_report_html", on_click="ignore")  # a rerun would drop a second click's file
    c2.download_button("All files (.zip)", lambda: zipped(report_files(db, sample, primary, who), stem),
                       file_name=f"{stem}_report.zip", mime="application/zip", icon=":material/folder_zip:",
                       key="case_report_zip", on_click="ignore")
    c3.caption((f"{primary}'s call first, then every" if primary else "The sign-out and its history, every")
               + " model's MNA %, interval, corrected estimate and call, and one row per nucleus (CSV and Parquet); "
               "signed with the reviewer's name when one is set. The same as `genuine export sample"
               + (" --model`." if primary else "`."))


def render_sign_out(db: str, sample: str, r: pd.Series | None, primary: str,
                    missed: tuple[int, int] = (0, 0)) -> None:
    """The sign-out in force (and what changed since), the form that signs the sample out on ``primary``'s
    numbers as shown (``r``; None: ``primary`` has no call for the sample now, so no form; ``missed``: scans and
    nuclei of the sample ``primary`` did not score, ``store.signout.unscored``: no form either), withdrawal, and
    the sample's sign-out history."""
    from store import signout

    box = st.container(border=True, key="case_sign_out")
    force = current_sign_outs(db)
    force = force[force["sample"] == sample]
    trail = sign_out_history(db, common.rev("signouts"), sample)
    if not force.empty:
        row = force.iloc[0].to_dict()
        box.success(f"**Signed out**: {signout.sign_out_text(row)}", icon=":material/verified:")
        if len(row["changes"]):
            box.warning(f"**Changed since sign-out** ({row['model']}, signed out → now): "
                        + "; ".join(row["changes"]) + ". Check the case, then sign it out again or withdraw the "
                        "sign-out.", icon=":material/published_with_changes:")
    else:
        text = signout.status_text(None if trail.empty else trail.iloc[-1].to_dict())
        box.caption(f"{text[0].upper()}{text[1:]}.")
    who = common.reviewer()
    if r is None:
        box.caption(f"{primary} has no call for this sample now, so it cannot be signed out on its numbers"
                    + (": withdraw the sign-out in force, or sign out again once nuclei are scored or included "
                       "again." if not force.empty else "."))
    elif missed[0]:  # e.g. a scan ingested after the model was retired: its numbers are not the sample's
        box.caption(f"{primary} has not scored {missed[0]} of this sample's scans ({missed[1]} nuclei; e.g. "
                    "ingested after it was retired), so the sample cannot be signed out on its numbers: pick "
                    "another Model for calls.")
    else:
        _sign_out_form(db, sample, r, primary, box, who, amends=not force.empty)
    if not force.empty:
        with box.form("withdraw_form", border=False, clear_on_submit=True):
            w1, w2 = st.columns([4.2, 1], vertical_alignment="bottom")
            reason = w1.text_input("Reason to withdraw", key=f"sign_out_withdraw_reason {sample}",
                                   placeholder="required, e.g. wrong sample scanned")
            withdrawn = w2.form_submit_button("Withdraw", disabled=not who, width="stretch")
        if withdrawn:
            _act(db, lambda s: signout.withdraw(s, sample, who, reason))
    if not trail.empty:
        with box.expander(f"Sign-out history ({len(trail)})", icon=":material/history:"):
            shown = trail.assign(when=trail["created_at"].astype(str).str[:16],
                                 call=[signout.call_text(t) for t in trail.to_dict("records")],
                                 numbers=[signout.numbers_text(t) if t["action"] == "sign out" else ""
                                          for t in trail.to_dict("records")])
            st.dataframe(shown[["when", "action", "call", "by_user", "numbers", "comment"]]
                         .rename(columns={"when": "when (UTC)", "by_user": "by"}),
                         hide_index=True, key="sign_out_history")


def _sign_out_form(db: str, sample: str, r: pd.Series, primary: str, box, who: str, amends: bool) -> None:
    """The form that signs ``sample`` out on ``primary``'s numbers as shown (``r``), the rule call preselected."""
    from store import signout

    calls = list(signout.CALLS)
    rule_call = str(r["call"])
    with box.form("sign_out_form", border=False, clear_on_submit=True):
        c1, c2, c3 = st.columns([1.2, 3, 1], vertical_alignment="bottom")
        call = c1.selectbox("Final call", calls, index=calls.index(rule_call) if rule_call in calls else 0,
                            key=f"sign_out_call {sample} {primary}",
                            help=f"preselected: {primary}'s rule call; 'not assessable' when no call can be made")
        comment = c2.text_input("Comment", key=f"sign_out_comment {sample}", placeholder="optional")
        submitted = c3.form_submit_button("Sign out", type="primary", disabled=not who, width="stretch")
        st.caption(f"On {primary}'s numbers shown above ({int(r['n_mna'])} of {int(r['n_scored'])} nuclei MNA), as "
                   + (f"**{who}** (the sidebar's Reviewer)." if who else
                      "the sidebar's Reviewer: :orange[enter your name there to sign out].")
                   + (" Replaces the sign-out in force, which stays in the history." if amends else ""))
    if submitted:
        _act(db, lambda s: signout.sign_out(s, sample, call, primary, who, comment,
                                        seen=(int(r["n_scored"]), int(r["n_mna"]))))


def _act(db: str, write) -> None:
    """Run one sign-out write on the store; redraw the page after it, or show why it was refused."""
    from genuine_core.errors import GenuineError

    try:
        write(common.store_at(db))
    except GenuineError as exc:
        common.show_error(exc)
        return
    common.bump("signouts")
    st.rerun()


def render_mixture_chart(db: str) -> None:
    """Predicted vs expected MNA % for samples with a known expected fraction."""
    fig = mixture_figure(db, common.rev("data"), common.rev("labels"), common.rev("models"))
    if fig is None:
        st.caption("No sample has an expected MNA fraction, so there is nothing to compare against.")
        return
    st.plotly_chart(fig, key="mixture_chart")


def vs_expected(deviation_pp: float) -> str | None:
    """A metric's delta text, e.g. "-2.3 pp vs expected" (None when the sample has no expected share)."""
    return None if not np.isfinite(deviation_pp) else f"{deviation_pp:+.1f} pp vs expected"


def render_case(db: str, sample: str, summary: pd.DataFrame, models: list[str], primary: str,
                no_call: str | None = None) -> None:
    """Drill-down of one sample: key numbers, the scan with outlines, probability histogram, gallery; for a
    sample ``primary`` has no call for (``no_call``: why no model has), what it is and its sign-out."""
    s = summary[(summary["sample"] == sample) & (summary["model"] == primary)]
    st.subheader(f"Case {sample}")
    if s.empty:
        st.info(f"**{no_call[0].upper() + no_call[1:]}**: no model has a call for this sample (curators excluded "
                "its nuclei: undo that on the Review page, or see the Ingest page)." if no_call else
                f"{primary} has no call for {sample}: it scored none of its nuclei; pick another Model for calls.",
                icon=":material/visibility_off:")
        render_sign_out(db, sample, None, primary)
        render_downloads(db, sample, None)  # the report still documents the sign-out and what changed
        return
    r = s.iloc[0]
    st.html("<style>.st-key-case_metrics [data-testid='stMetricValue'] {font-size: 1.9rem;}</style>")
    m1, m2, m3, m4, m5 = st.container(key="case_metrics").columns([0.9, 1.25, 1.4, 1.25, 1.3])  # fits 1280 px
    m1.metric("Nuclei scored", f"{int(r['n_scored']):,}")
    ci = f"{pct_text(r['ci_low_pct'])}–{pct_text(r['ci_high_pct'])} %"
    m2.metric(f"MNA ({model_labels(summary)(primary)})", f"{pct_text(r['mna_pct'])} %",
              delta=vs_expected(r["deviation_pp"]), delta_color="off", help=f"95 % Wilson interval {ci}")
    m3.metric("95 % CI", ci)
    corrected = np.isfinite(r["corrected_pct"])
    corrected_ci = "" if not corrected else (
        f"95 % CI {pct_text(r['corrected_low_pct'])}–{pct_text(r['corrected_high_pct'])} %"
        if r["corrected_high_pct"] > r["corrected_low_pct"] else "no interval: the rates do not fit (see QC)")
    m4.metric("Corrected", "–" if not corrected else f"{pct_text(r['corrected_pct'])} %",
              delta=vs_expected(r["corrected_deviation_pp"]), delta_color="off",
              help=CORRECTED_HELP + (f"; {corrected_ci}" if corrected else ""))
    if corrected:
        m4.caption(corrected_ci)
    with m5:
        st.markdown("Call")
        st.markdown(f"### {call_badge(str(r['call']))}")
    flags = list(r["qc_flags"]) if isinstance(r["qc_flags"], (list, np.ndarray)) else []
    if flags:
        from store.summary import QC_FLAGS

        st.warning("  \n".join(f"QC · **{f}**: {QC_FLAGS.get(f, '')}" for f in flags), icon=":material/flag:")
    from store import signout

    missed = signout.unscored(common.store_at(db), sample, primary)
    if missed[0] and "partly scored" not in flags:  # e.g. scans ingested after the model was retired
        st.warning(f"**{primary} has not scored {missed[0]} of this sample's scans** ({missed[1]} nuclei; e.g. "
                   "ingested after it was retired): its numbers leave them out. Pick another **Model for calls**, "
                   "or score them on the Models page.", icon=":material/rule:")
    render_sign_out(db, sample, r, primary, missed)
    render_downloads(db, sample, primary)

    sc = scans(db, common.rev("data"), common.rev("labels"), sample)
    c1, c2 = st.columns([1, 1])
    if st.session_state.get("_cases_colour_follows") != primary:  # a new "Model for calls" recolours the scan
        st.session_state["_cases_colour_follows"] = st.session_state["case_colour_model"] = primary
    colour_model = c1.selectbox("Colour outlines by", models, key="case_colour_model")
    named = scan_labels(sc)
    scan_id = c2.selectbox("Scan", list(named), format_func=named.get, key="case_scan") if len(sc) else None

    left, right = st.columns([3, 2])
    with left:
        if scan_id is not None:
            fig = scan_figure(db, common.rev("data"), common.rev("labels"), int(scan_id), colour_model,
                              f"{named[scan_id]} · P(MNA) by {colour_model}")
            st.plotly_chart(fig, key="scan_figure", config={"scrollZoom": True, "displaylogo": False})
            st.caption("Outline colour: blue = non-MNA, red = MNA (model probability); grey = excluded by a "
                       "reviewer; dark grey = not scored by this model (cut by the image border, or its scoring of "
                       "this scan is missing). Drag to zoom, double-click to reset.")
    with right:
        st.plotly_chart(histogram_figure(db, common.rev("data"), common.rev("labels"), sample, tuple(models)),
                        key="case_hist")

    nuc_all = sample_nuclei(db, common.rev("data"), common.rev("labels"), sample, primary)
    n_excluded = int(nuc_all["excluded"].sum())
    excluded = f", {n_excluded:,} of them excluded by a curator" if n_excluded else ""
    st.markdown(f"**Nuclei** ({len(nuc_all):,}{excluded}) · sorted by {primary} probability")
    g1, g2, g3 = st.columns([2.7, 1.8, 1])  # every option (with "excluded") stays in view at 1280 px
    from store.summary import uncertainty_threshold
    from store.uncertainty import describe

    method = common.models(db, common.rev("models")).set_index("name").at[primary, "uncertainty_method"]
    threshold = uncertainty_threshold(method)
    passes = common.uncertainty_passes(db, common.rev("data"), common.rev("models"), sample).get(primary, [])
    groups = ["all", "MNA", "non-MNA", "uncertain"] + (["excluded"] if n_excluded else [])
    if st.session_state.get("case_gallery_filter") not in groups:  # "excluded" chosen in a sample without any
        st.session_state.pop("case_gallery_filter", None)
    show = g1.segmented_control(f"Show ({primary}'s call)", groups, default="all",
                                required=True, key="case_gallery_filter",
                                help=f"MNA, non-MNA, uncertain: the scored nuclei, as the metrics count them (a "
                                     f"nucleus a curator excluded is in none of them, only in 'excluded'); "
                                     f"uncertain: {describe(method, passes)} of at least "
                                     f"{threshold:g}, the nuclei the 'high uncertainty' QC flag counts")
    order = g2.segmented_control("Order", ["most MNA first", "least MNA first"], default="most MNA first",
                                 required=True, key="case_gallery_order")
    n_show = g3.number_input("Max", min_value=8, max_value=200, value=32, step=8, key="case_gallery_n")
    excluded_mask = nuc_all["excluded"].astype(bool)
    sel = nuc_all if show == "all" else nuc_all[excluded_mask] if show == "excluded" else nuc_all[~excluded_mask]
    if show == "MNA":
        sel = sel[sel["call"] == 1]
    elif show == "non-MNA":
        sel = sel[sel["call"] == 0]
    elif show == "uncertain":
        sel = sel[sel["uncertainty"] >= threshold]
    n_match = len(sel)
    sel = sel.sort_values("prob", ascending=(order == "least MNA first")).head(int(n_show))
    st.caption(f"{len(sel):,} shown of {n_match:,} {'nuclei' if show == 'all' else show + ' nuclei'}"
               + ("" if n_match == len(nuc_all) else f" ({len(nuc_all):,} in the sample)"))
    captions = [f"#{i} · {p:.2f}" + (" · excl." if e else "") for i, p, e in
                zip(sel["nucleus_id"], sel["prob"].fillna(np.nan), sel["excluded"])]
    common.gallery(sel["nucleus_id"].tolist(), captions, ncols=8, db=db)


def render_case_section(db: str, summary: pd.DataFrame, models: list[str], primary: str, picked: str | None,
                        names: list[str], no_calls: dict[str, str] | None = None) -> None:
    """The case picker (the samples the table shows) and the drill-down of the chosen one (``no_calls``: the
    Call text of listed samples no model has a call for)."""
    # A new row picked in the table, or a new ?case= link, opens that case once; the
    # selectbox stays free to change afterwards.
    for source, wanted in (("_cases_last_pick", picked), ("_cases_last_link", st.query_params.get(CASE_KEY))):
        if wanted in names and wanted != st.session_state.get(source):
            st.session_state[source] = wanted
            st.session_state["case_select"] = wanted
    if st.session_state.get("case_select") not in names:
        st.session_state.pop("case_select", None)
    link = st.query_params.get(CASE_KEY)
    if link and link not in set(summary["sample"]) | set(no_calls or {}):
        st.warning(f"No scored sample named '{link}' in this store.", icon=":material/search_off:")
    sample = st.selectbox("Open case", names, key="case_select")
    if st.query_params.get(CASE_KEY) != sample:  # the address bar links to the open case
        st.query_params[CASE_KEY] = st.session_state["_cases_last_link"] = sample
    render_case(db, sample, summary, models, primary, (no_calls or {}).get(sample))


# ----------------------------------------------------------------------------- page
def model_choices(summary: pd.DataFrame, registered: pd.DataFrame,
                  signed: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """The models "Model for calls" offers, with their kinds: those with a call for some sample; when no sample
    has one (every nucleus excluded), the registered models, else the models the sign-outs in force rest on."""
    if not summary.empty:
        return list(dict.fromkeys(summary["model"])), dict(zip(summary["model"], summary["model_kind"]))
    if not registered.empty:
        return registered["name"].tolist(), dict(zip(registered["name"], registered["kind"]))
    return sorted(set(signed["model"])), {}


def main() -> None:
    common.page_header("Cases", "One row per sample: nuclei scored, predicted MNA share per model with its "
                                "95 % interval, the clinical call and QC flags.")
    store = common.store_or_stop()
    db = str(store.path)
    summary = summaries(db, common.rev("data"), common.rev("labels"), common.rev("models"))
    signed = current_sign_outs(db)
    uncalled = uncalled_samples(summary, sample_list(db, common.rev("data")))
    listed = uncalled["name"].isin(set(signed["sample"]))  # signed out: listed, its Call saying why none
    if summary.empty and not listed.any():  # a sign-out in force stays listed even when nothing has a call
        common.empty_state("scored samples")
        return
    models, kinds = model_choices(summary, common.models(db, common.rev("models")), signed)
    link = st.query_params.get(MODEL_KEY)  # a new ?model= link picks the model once, as ?case= picks the case
    if link in models and link != st.session_state.get("_cases_last_model_link"):
        st.session_state["_cases_last_model_link"] = st.session_state["cases_primary"] = link
    if st.session_state.get("cases_primary") not in models:  # an active model: a retired one has no new cases
        active = [m for m in models if model_labels(summary)(m) == m]
        st.session_state["cases_primary"] = common.default_model(active or models, kinds)
    primary = st.selectbox("Model for calls", models, key="cases_primary", format_func=model_labels(summary),
                           help="The model whose call, corrected estimate and deviation the table shows; every "
                                "model's MNA % is listed.")
    if st.query_params.get(MODEL_KEY) != primary:  # a copied address shows the same model's calls
        st.query_params[MODEL_KEY] = st.session_state["_cases_last_model_link"] = primary
    picked, names = render_table(summary, models, primary, signed, uncalled)
    if not uncalled[~listed].empty:  # a sample whose nuclei curators all excluded (or that holds none)
        st.caption(f":material/visibility_off: Not in the table, no nucleus to call (all excluded by curators, or "
                   f"none stored): {', '.join(sorted(uncalled.loc[~listed, 'name']))}")
    if names:
        no_calls = {n: no_call_text(int(k)) for n, k in zip(uncalled["name"], uncalled["n_nuclei"])}
        render_case_section(db, summary, models, primary, picked, names, no_calls)
    st.divider()
    with st.expander("Predicted vs expected (mixtures)", expanded=True, icon=":material/insights:"):
        render_mixture_chart(db)


main()
