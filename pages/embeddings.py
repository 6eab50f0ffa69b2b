"""Embeddings: stored UMAP coordinates of two models side by side (paper Figure 3).

Colour by prediction, call, auto label, curated label, ground truth, sample or source
(training vs mixture). Box or lasso selection in either map shows the selected nuclei
as a patch gallery with their labels; nuclei can also be looked up by id.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import streamlit as st

from genuine_core import plotting
from genuine_core.errors import GenuineError
from pages import common

common.require_entrypoint()

COLOUR_BY = {
    "prediction": "P(MNA) of the map's model",
    "call": "call of the map's model",
    "auto label": "automatic label (genotype)",
    "curated label": "reviewers' decision",
    "ground truth": "synthetic ground truth",
    "sample": "sample",
    "source": "benchmark split (training, validation, test) or sample kind (mixture, case): paper Fig. 3",
}
#: legend name of nuclei without a value to colour by (e.g. the real scan has no ground truth and no auto label):
#: grey, named for what is missing ("unlabelled" read as "not yet curated")
MISSING = {"call": "no call", "auto label": "no auto label", "ground truth": "no ground truth"}
MAX_GALLERY = 48
#: nuclei per map by default (a fixed random subset of larger maps, chosen by the store's query): two WebGL
#: scatters of 30,000 each took 2.4-5.5 s per visit in headless Chromium on a store of a million nuclei (BENCHMARKS.md)
MAX_POINTS = 10_000
#: column weights of the Samples | Max points row: Max points beside three selectboxes (weight 1.2 of 7.2) was
#: 82 px wide at 1024 px, under the 120 px below which Streamlit drops a number input's -/+ buttons
SAMPLES_ROW = (3, 1)


@st.cache_data(show_spinner=False, max_entries=8)
def mapped(db: str, data_rev: int) -> list[str]:
    """Models with stored UMAP coordinates (``store.umap.mapped_models``; [] without umap support)."""
    try:
        from store import umap as umap_store
    except ImportError:
        return []
    return umap_store.mapped_models(common.store_at(db))


@st.cache_data(show_spinner=False, max_entries=16)
def points(db: str, data_rev: int, labels_rev: int, model: str, only: tuple[str, ...],
           max_points: int) -> tuple[pd.DataFrame, int]:
    """At most ``max_points`` of ``model``'s map points in the samples ``only`` (all when empty), a fixed random
    subset chosen by the store (``store.umap.umap_points``), and how many the map holds there."""
    from store import umap as umap_store

    s, samples = common.store_at(db), (list(only) or None)
    return (umap_store.umap_points(s, model, samples=samples, limit=int(max_points)),
            umap_store.umap_count(s, model, samples=samples))


@st.cache_data(show_spinner=False, max_entries=32)
def located(db: str, data_rev: int, labels_rev: int, model: str, only: tuple[str, ...],
            ids: tuple[int, ...]) -> pd.DataFrame:
    """The map points of the nuclei ``ids`` (in the samples ``only``, all when empty): ringed in every map."""
    from store import umap as umap_store

    if not ids:
        return pd.DataFrame(columns=["nucleus_id", "x", "y"])
    return umap_store.umap_points(common.store_at(db), model, samples=list(only) or None, ids=list(ids))


def colour_column(df: pd.DataFrame, how: str) -> tuple[pd.DataFrame, str, bool]:
    """Add the display column for ``how``; returns (frame, column, categorical)."""
    names = {1: "MNA", 0: "non-MNA"}
    out = df.copy()
    if how == "prediction":
        out["P(MNA)"] = out["prob"].astype(float)
        return out, "P(MNA)", False
    if how == "call":
        out["colour"] = out["call"].map(names)
    elif how == "auto label":
        out["colour"] = out["auto_label"].map(names)
    elif how == "curated label":  # named, not "unlabelled": grey then says what it means in the legend
        out["colour"] = np.where(out["excluded"].fillna(False).astype(bool), "excluded",
                                 out["curated_label"].map(names).fillna("not curated"))
    elif how == "ground truth":
        out["colour"] = out["true_label"].map(names)
    elif how == "sample":
        out["colour"] = out["sample"]
    else:  # source: benchmark split, else the sample kind (store.umap.umap_points)
        out["colour"] = out["source"]
    out["colour"] = out["colour"].astype("string").fillna(MISSING.get(how, "unlabelled"))
    return out, "colour", True


@st.cache_data(show_spinner=False, max_entries=16)
def map_figure(db: str, data_rev: int, labels_rev: int, model: str, kind: str, how: str, only: tuple[str, ...],
               max_points: int, marked: tuple[int, ...]):
    """One model's UMAP scatter of at most ``max_points`` nuclei, coloured by ``how``, ``marked`` nuclei ringed."""
    df, total = points(db, data_rev, labels_rev, model, only, max_points)
    marks = located(db, data_rev, labels_rev, model, only, marked)  # ringed even when outside the subset
    df, column, categorical = colour_column(df, how)
    shown = f"{len(df):,} of {total:,} nuclei" if total > len(df) else f"{len(df):,} nuclei"
    fig = plotting.embedding_figure(df, column, title=f"{model} ({kind}) · {shown}", categorical=categorical)
    if len(marks):
        fig.add_scatter(x=marks["x"], y=marks["y"], mode="markers", name="selected / looked up",
                        marker=dict(size=14, color="rgba(0,0,0,0)", line=dict(width=2, color="black")),
                        customdata=marks["nucleus_id"], hovertemplate="nucleus %{customdata}<extra></extra>")
    return fig


def selected_ids(event) -> list[int]:
    """Nucleus ids (``customdata``) of the points selected in a plotly chart event."""
    if event is None:
        return []
    sel = event.get("selection", {}) if isinstance(event, dict) else getattr(event, "selection", {})
    pts = sel.get("points", []) if isinstance(sel, dict) else getattr(sel, "points", [])
    ids = []
    for p in pts:
        cd = p.get("customdata")
        if isinstance(cd, (list, tuple)):
            cd = cd[0] if cd else None
        if cd is not None:
            ids.append(int(cd))
    return list(dict.fromkeys(ids))


#: the largest nucleus id (ids are BIGINT)
MAX_ID = 2**63 - 1


def parse_ids(text: str) -> tuple[list[int], list[str]]:
    """'12, 15 99' -> ([12, 15, 99], []); tokens that are no nucleus id come back as the second list
    ('-5', '1.5', '12e3', a number beyond BIGINT) instead of being read as other ids."""
    ids, bad = [], []
    for token in re.split(r"[\s,;]+", (text or "").strip()):
        if not token:
            continue
        if token.isascii() and token.isdigit() and len(token) <= 19 and int(token) <= MAX_ID:
            ids.append(int(token))
        else:
            bad.append(token if len(token) <= 24 else token[:21] + "...")
    return list(dict.fromkeys(ids)), bad


def fit_section(store, models: pd.DataFrame, have: list[str]) -> None:
    """Models with stored predictions but no map (e.g. registered after the demo was built): fit one here,
    as ``genuine umap --model NAME`` does with its defaults."""
    without = [m for m, n in zip(models["name"], models["n_predictions"]) if n and m not in have] \
        if len(models) else []
    if not without:
        return
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    model = c1.selectbox(f"{len(without)} model{'s have' if len(without) > 1 else ' has'} no map yet", without,
                         key="emb_fit_model", help="UMAP of the model's stored embeddings, fitted on its "
                         "reference nuclei (the training split when there is one) with the default settings")
    if not c2.button("Fit a map", key="emb_fit", icon=":material/scatter_plot:"):
        return
    from store.umap import fit_umap

    with st.spinner(f"Fitting a UMAP of {model}'s embeddings…"):
        try:
            r = fit_umap(store, model)
        except GenuineError as exc:
            common.show_error(exc)
            return
        finally:
            common.bump("data")
    st.toast(f"{model}: map fitted on {r['n_fitted']} nuclei, {r['n_placed']} others placed",
             icon=":material/check:")
    st.rerun()


def main() -> None:
    common.page_header("Embeddings", "Where nuclei sit in each model's feature space (UMAP of the stored "
                                     "embeddings). Select points with box or lasso to see the nuclei.")
    store = common.store_or_stop()
    db = str(store.path)
    models = common.models(db, common.rev("models"))
    have = [m for m in mapped(db, common.rev("data")) if m in set(models["name"])] if len(models) else []
    fit_section(store, models, have)
    if not have:
        if len(models) and models["n_predictions"].sum():  # scored nuclei, only no map yet
            st.info("No model has a UMAP map yet. Fit one above, or with `genuine umap --model NAME`.",
                    icon=":material/scatter_plot:")
        else:
            common.empty_state("UMAP coordinates")
        return
    kinds = dict(zip(models["name"], models["kind"]))
    left_default = common.default_model(have, kinds)
    right_default = next((m for m in have if kinds.get(m) == "resnet" and m != left_default),
                         next((m for m in have if m != left_default), left_default))
    c1, c2, c3 = st.columns(3)
    left = c1.selectbox("Left map", have, index=have.index(left_default), key="emb_left_model")
    right = c2.selectbox("Right map", have, index=have.index(right_default), key="emb_right_model")
    how = c3.selectbox("Colour by", list(COLOUR_BY), key="emb_colour",  # the box is too narrow for more
                       help="  \n".join(f"**{k}**: {v}" for k, v in COLOUR_BY.items()))
    smp = common.samples(db, common.rev("data"))
    c_samples, c_max = st.columns(SAMPLES_ROW)
    only = c_samples.multiselect("Samples", smp["name"].tolist(), key="emb_samples", placeholder="all samples")
    max_points = c_max.number_input("Max points", 1000, 500_000, MAX_POINTS, 5000, key="emb_max",
                                    help="at most this many nuclei per map (a fixed random subset beyond that), "
                                         "for a responsive browser")
    find = st.text_input("Highlight nucleus ids", key="emb_find", placeholder="e.g. 1204, 1310")
    typed, bad = parse_ids(find)
    if bad:
        st.warning(f"Not a nucleus id (whole numbers only): {', '.join(bad)}", icon=":material/search_off:")
    if typed:
        known = set(common.nucleus_info(db, common.rev("labels"), tuple(typed))["nucleus_id"].astype(int))
        missing = [i for i in typed if i not in known]
        if missing:
            st.warning(f"No nucleus with id {', '.join(map(str, missing))} in this store.",
                       icon=":material/search_off:")
        typed = [i for i in typed if i in known]

    maps = list(dict.fromkeys([left, right]))
    for model in maps:  # a looked-up nucleus must not vanish silently
        placed = set(located(db, common.rev("data"), common.rev("labels"), model, tuple(only),
                             tuple(typed))["nucleus_id"])
        off = [i for i in typed if i not in placed]
        if off:
            st.caption(f":material/visibility_off: Not on {model}'s map: nucleus {', '.join(map(str, off))} "
                       + ("(outside the chosen samples, or not placed on this map)" if only else
                          "(not placed on this map: e.g. not scored by this model)"))
    # linked brushing: nuclei selected in one map (state of the previous run) are ringed in the other
    before = {m: selected_ids(st.session_state.get(f"emb_plot_{m}")) for m in maps}
    chosen: list[int] = []
    cols = st.columns(2) if len(maps) == 2 else [st.container()]
    for col, model in zip(cols, maps):
        others = tuple(i for m, ids in before.items() if m != model for i in ids)
        fig = map_figure(db, common.rev("data"), common.rev("labels"), model, kinds.get(model, "?"), how,
                         tuple(only), int(max_points), tuple(typed) + others)
        with col:
            event = st.plotly_chart(fig, key=f"emb_plot_{model}", on_select="rerun", selection_mode=("box", "lasso"),
                                    config={"displaylogo": False})
        chosen += selected_ids(event)
    chosen = list(dict.fromkeys(chosen + typed))
    totals = {m: points(db, common.rev("data"), common.rev("labels"), m, tuple(only), int(max_points))[1]
              for m in maps}
    if max(totals.values()) > max_points:
        st.caption(f":material/filter_alt: Each map shows at most {int(max_points):,} nuclei: a fixed random subset "
                   f"of the {max(totals.values()):,} on it (raise **Max points** to draw more, or pick samples); "
                   "looked-up and selected nuclei are ringed wherever they are.")

    st.subheader(f"Selected nuclei ({len(chosen)})")
    if not chosen:
        st.caption("Draw a box or lasso around points in either map (or type ids above) to see those nuclei.")
        return
    info = common.nucleus_info(db, common.rev("labels"), tuple(chosen[:MAX_GALLERY]))
    if len(chosen) > MAX_GALLERY:
        st.caption(f"showing the first {MAX_GALLERY}")
    caps = []
    for r in info.itertuples(index=False):
        cur = common.curated_name(r._asdict())
        caps.append(f"#{r.nucleus_id} · auto {common.label_name(r.auto_label)}" + (f" → {cur}" if cur != "-" else ""))
    common.gallery(info["nucleus_id"].tolist(), caps, ncols=8, db=db)
    st.caption("caption: nucleus id · automatic label (→ reviewer's decision, if any)")
    st.dataframe(info, hide_index=True, key="emb_selected_table", placeholder="–")


main()
