"""Probe: how does a model's prediction react to the number and size of MYCN signals? (paper Fig. 4)

Synthetic signals are drawn into DAPI-only nuclei (``genuine_core.synth.make_probe``):
either synthetic nuclei or real nuclei from the store with their own signals removed.
For each condition N probes are scored by the chosen model; the page shows the mean
prediction (mean call) against the varied quantity with its 0.5 crossing beside the
generator's ground truth (share of probes the Cohn rule calls MNA on the visible counts),
example patches, and, when the model has a fitted UMAP, where the probes land in it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import streamlit as st

from genuine_core import plotting
from genuine_core.rules import MYCN_RULE, amplification_threshold
from genuine_core.errors import GenuineError
from genuine_core.synth.probe import RUN_BACKGROUNDS, RUN_BOUNDS as B, probe_conditions, run_probe, run_style
from pages import common
from store.location import genuine_command
from training.evaluate import PROBE_COUNT_SIZE, PROBE_COUNTS, PROBE_N, PROBE_NMI, PROBE_SIZES

common.require_entrypoint()

EXPERIMENTS = {"count": "MYCN signal count", "size": "MYCN signal size"}
RESULT_KEY = "probe_result"
SHOW_RUN_KEY = "probe_show_run"
NO_REAL_NUCLEI = "No sample in the store holds scans, so there are no real nuclei to draw into (ingest a scan)."
#: what the generator does with touching signals (``genuine_core.synth.signals.place_signals``)
TOUCH_HELP = ("On: independent positions, so signals may overlap (as in the paper). Touching signals of one colour "
              "read as one larger signal: they count as one MYCN (or NMI) signal in the visible counts, never as a "
              "cluster. Off: signals are kept apart.")
#: the dotted line's label: the rule applied to the signals drawn, not to those left visible after merging
RULE_LABEL = "Cohn rule (drawn signals)"
TRUTH_HELP = ("ground truth: share of the probes the Cohn rule calls MNA on the generator's visible counts "
              "(touching signals merged into one)")
#: why a saved run's chart has no ground-truth curve (``store.probes`` keeps no visible counts)
SAVED_NO_TRUTH = ("Saved runs keep the model's outputs, not the generator's visible counts, so their chart has "
                  "no ground-truth curve; a new run shows it.")
#: how the page's defaults relate to the evaluation report's Figure 4 (``training.evaluate``)
REPORT_SETTINGS = (
    f"The defaults are the evaluation report's Figure 4 settings: MYCN {PROBE_COUNTS[0]}-{PROBE_COUNTS[-1]} "
    f"with {PROBE_NMI} NMI at σ {PROBE_COUNT_SIZE:g} px, N = {PROBE_N} per condition (about 15 s for the "
    "genuine_cpu model on an idle 2-core CPU, the size sweep about 5 s; two to three times that while other work "
    "shares the CPU; narrow the range or lower N for a quicker look). The size sweep spans the "
    f"report's σ {min(PROBE_SIZES):g}-{max(PROBE_SIZES):g} px in {len(PROBE_SIZES)} even steps (the report's steps "
    "are uneven). The report draws into benchmark test-split nuclei, the page into synthetic or stored nuclei, "
    "so its curves are comparable but not identical.")


# ----------------------------------------------------------------------------- cached resources
@st.cache_resource(show_spinner="Loading model ...", max_entries=4)
def scoring_model(folder: str, checksum: str, name: str):
    """``genuine_core.pipeline.load_model`` once per model folder and checksum."""
    import torch

    from genuine_core.pipeline import load_model

    torch.set_num_threads(2)
    return load_model(folder, name=name, mc_samples=0)


@st.cache_data(show_spinner="Drawing synthetic background nuclei ...", max_entries=4)
def synthetic_backgrounds(patch_size: int, n: int, seed: int) -> np.ndarray:
    """(n, 3, P, P) DAPI-only synthetic nuclei (``genuine_core.synth.synthetic_backgrounds``)."""
    from genuine_core.synth import synthetic_backgrounds as make

    return make(np.random.default_rng(seed), n, patch_size)


@st.cache_data(show_spinner="Loading real nuclei from the store ...", max_entries=4)
def store_backgrounds(db: str, data_rev: int, sample: str, patch_size: int, n: int,
                      seed: int) -> tuple[list[int], np.ndarray]:
    """``store.nuclei.probe_backgrounds``: the ids of m <= n seeded real nuclei of ``sample`` and their patches.

    Raises:
        InputError: the sample has no nuclei, or its stored patches are smaller than the model's input.
    """
    from store.nuclei import probe_backgrounds

    return probe_backgrounds(common.store_at(db), sample, patch_size, n, seed)


#: stored nuclei drawn at most behind the probes (a fixed random subset of larger maps)
MAX_BACKDROP = 20_000


@st.cache_data(show_spinner=False, max_entries=4)
def umap_reference(db: str, data_rev: int, model: str) -> pd.DataFrame:
    """At most :data:`MAX_BACKDROP` stored UMAP points of ``model``: of the training split when the store holds
    one, else of every nucleus (``store.umap.umap_points``; GenuineError propagates)."""
    from store import umap as umap_store

    s = common.store_at(db)
    train = umap_store.umap_points(s, model, splits=["train"], limit=MAX_BACKDROP)
    return train if len(train) else umap_store.umap_points(s, model, limit=MAX_BACKDROP)


# ----------------------------------------------------------------------------- views
def umap_backdrop(ref: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The stored nuclei drawn behind the probes (``x, y`` rows of ``ref``) and their legend name.

    The training split (``split == 'train'``) when the store records one for the map, else every
    stored nucleus (mixtures, cases, all splits) under a name that says so.
    """
    train = (ref["split"] == "train").to_numpy()
    return (ref[train], "training nuclei") if train.any() else (ref, "stored nuclei")


def rule_switch(x: str, n_nmi: int) -> float | None:
    """MYCN count at which the Cohn rule calls MNA for ``n_nmi`` NMI signals (None off the count axis).

    0 NMI signals count as 1, as in ``genuine_core.rules.is_amplified``.
    """
    return amplification_threshold(n_nmi) if x == "n_mycn" else None


def call_and_probability(curve: pd.DataFrame) -> pd.DataFrame:
    """The two curves a probe chart draws from one ``plotting.probe_summary``: the mean call (with its SEM)
    and the mean calibrated P(MNA), one ``model`` each (``plotting.probe_curve`` draws one line per model)."""
    return pd.concat([curve.assign(model="mean call (prediction)"),
                      curve.assign(model="mean calibrated P(MNA)", mean_pred=curve["mean_prob"], sem=0.0)])


#: the saved runs' columns shown by default: all ten scrolled sideways at 1024 px, hiding NMI, range, background
RUN_COLUMNS = ["run", "model", "when (UTC)", "experiment", "range"]


def run_range(params: dict) -> str:
    """A saved run's conditions from its params: "MYCN 0-35 step 1, σ 3.5 px" (count experiment) or
    "σ 0.5-6 px in 12, 2 MYCN" (size experiment); "?" for what the params do not record."""
    def num(key: str) -> str:
        return "?" if params.get(key) is None else f"{params[key]:g}"

    count = params.get("experiment", "count") == "count"
    lo_hi = params.get("mycn_counts" if count else "signal_sizes") or []
    if len(lo_hi) != 2:
        return "?"
    if count:
        return f"MYCN {lo_hi[0]:g}-{lo_hi[1]:g} step {num('count_step')}, σ {num('fixed_size')} px"
    return f"σ {lo_hi[0]:g}-{lo_hi[1]:g} px in {num('size_steps')}, {num('fixed_count')} MYCN"


def rule_text(rule_x: float | None, n_nmi: int) -> str:
    """What the dotted Cohn-rule line marks ("" off the count axis)."""
    if rule_x is None:
        return ""
    zero = " (0 NMI is counted as 1, as the rule does)" if n_nmi == 0 else ""
    return (f"Dotted line: the Cohn rule (MNA when MYCN ≥ {MYCN_RULE.amplification_ratio:g} × NMI) on the drawn "
            f"signals, before touching signals merge: {rule_x:g} drawn MYCN signals for {n_nmi} NMI signals{zero}. ")


def crossing_metric(label: str, xs: pd.Series, ys: pd.Series, what: str, beyond: bool = True) -> None:
    """The curve's first 0.5 crossing, or "no crossing" (the reason, too long for a metric, in its help; the
    caption under the metrics says it as well; ``beyond`` as :func:`genuine_core.plotting.crossing_text`)."""
    xcs = plotting.crossings(xs, ys, 0.5)
    why = "" if xcs else f" No crossing: {plotting.crossing_text(xs, ys, 0.5, beyond)}."
    st.metric(label, f"{xcs[0]:.2f}" if xcs else "no crossing",
              help=f"{what}; first crossing; linear interpolation between conditions.{why}")


def show_result(res: dict, db: str) -> None:
    """Curve with the 0.5 crossing, example patches, and the probes on the model's UMAP."""
    x = res["x"]
    xlabel = "MYCN signals per nucleus" if x == "n_mycn" else "MYCN signal size (σ, px)"
    curve = res["curve"]
    rule_x = rule_switch(x, res["n_nmi"])
    truth = curve if "truth" in curve.columns else None
    both = call_and_probability(curve)
    xcs = plotting.crossings(curve[x], curve["mean_pred"], 0.5)
    # one below the other, each at the page's width: beside each other on a 1024 px screen the chart was 290 px
    # wide (its title cut off), the metrics' labels cut to "Model crosse…" and the table's last columns hidden
    st.plotly_chart(plotting.probe_curve(both, x, xlabel, rule_x=rule_x, rule_label=RULE_LABEL, truth=truth,
                                         title=f"{res['model']}: mean prediction vs {EXPERIMENTS[res['exp']]}"),
                    key="probe_curve")
    m1, m2 = st.columns(2)
    with m1:
        crossing_metric("Model crosses 0.5 at", curve[x], curve["mean_pred"],
                        "mean prediction: share of the probes the model calls MNA")
    if truth is not None:
        with m2:
            crossing_metric("Truth crosses 0.5 at", curve[x], curve["truth"], TRUTH_HELP, beyond=False)
    if len(xcs) > 1:
        st.warning(f"The curve crosses 0.5 {len(xcs)} times (at {', '.join(f'{v:.2f}' for v in xcs)}): "
                   "the model's response is not monotonic here.", icon=":material/ssid_chart:")
    at = {"model": plotting.crossing_text(curve[x], curve["mean_pred"], 0.5)}
    note = ""
    if truth is not None:
        # a truth that stays on one side of 0.5 (size never changes the counts) is not said to cross beyond
        # the range; several crossings are all listed
        txcs = plotting.crossings(curve[x], curve["truth"], 0.5)
        at["ground truth"] = (f"{len(txcs)} times, at {', '.join(f'{v:.2f}' for v in txcs)}" if len(txcs) > 1
                              else plotting.crossing_text(curve[x], curve["truth"], 0.5, beyond=False))
        note = ("Dashed: the ground truth, the Cohn rule on the generator's visible counts (touching signals "
                "count as one signal, not as a cluster, so many drawn signals can merge into few visible ones "
                "and the truth can level off below 1). ")
    st.caption(rule_text(rule_x, res["n_nmi"]) + note
               + "0.5 crossing: " + ", ".join(f"{k} {v}" for k, v in at.items()) + ".")
    short = "MYCN" if x == "n_mycn" else "σ (px)"
    table = curve.rename(columns={x: short, "n": "probes", "mean_pred": "mean call", "sem": "SEM",
                                  "mean_prob": "mean P"})
    st.dataframe(table, hide_index=True, key="probe_table", width="content",  # six narrow columns, not stretched
                 column_config={short: st.column_config.NumberColumn(width=55, help=xlabel),
                                "probes": st.column_config.NumberColumn(width=55),
                                "mean call": st.column_config.NumberColumn(
                                    format="%.2f", width=75, help="mean prediction: share of the probes called "
                                                                  "MNA (paper Fig. 4)"),
                                "SEM": st.column_config.NumberColumn(format="%.3f", width=50),
                                "mean P": st.column_config.NumberColumn(
                                    format="%.2f", width=60, help="mean calibrated P(MNA) of the probes "
                                                                  "(as the evaluation's probe curves)"),
                                "truth": st.column_config.NumberColumn(format="%.2f", width=50,
                                                                       help=TRUTH_HELP)})
    scheme = common.patch_scheme()
    st.markdown("**Example probes** (first probes of each condition; the model sees exactly these patches; "
                f"{plotting.channel_caption(scheme)})")
    conds = res["conds"]
    per_row = 2
    cols_per_line = 6
    items = list(res["examples"].items())
    for start in range(0, len(items), cols_per_line):
        cols = st.columns(cols_per_line)
        for col, (k, patches) in zip(cols, items[start:start + cols_per_line]):
            col.image(plotting.montage([plotting.patch_rgb(p, scheme=scheme) for p in patches[:per_row]],
                                       ncols=per_row, pad=1),
                      caption=f"{'MYCN' if x == 'n_mycn' else 'size'} {conds.iloc[k][x]:g}", width="stretch",
                      output_format="PNG")  # not JPEG: it blurs the small coloured signals the probe is about

    show_umap(res, db)


def show_umap(res: dict, db: str) -> None:
    """The probes on the model's UMAP, or why they are not there (the store's own error text)."""
    if res.get("umap_error"):
        st.warning(f"The probes are not placed on the model's UMAP: {res['umap_error']}", icon=":material/error:")
        return
    if res.get("umap") is None:
        fit = genuine_command(f"umap --model {shlex.quote(res['model'])}", db)
        st.caption(f"No UMAP is fitted for this model in the store (run `{fit}`), so the probes are not placed "
                   "in the embedding.")
        return
    try:
        ref = umap_reference(db, common.rev("data"), res["model"])
    except GenuineError as exc:
        st.warning(f"The model's stored UMAP coordinates cannot be read: {exc}", icon=":material/error:")
        return
    backdrop, backdrop_name = umap_backdrop(ref)
    size = res["x"] == "signal_size"  # sizes ("11.1") are wider than their markers: every other is labelled
    st.plotly_chart(plotting.probe_embedding(backdrop, res["umap"], res["x"], reference_name=backdrop_name,
                                             title="Probe conditions on the model's UMAP "
                                                   "(ellipse: 1 SD; colour: mean prediction)",
                                             label_every=2 if size else 1),
                    key="probe_umap")
    if len(ref) >= MAX_BACKDROP:
        st.caption(f"Behind the probes: a fixed random subset of {MAX_BACKDROP:,} of the model's {backdrop_name}, "
                   "so the chart stays responsive on a large store.")
    every = "Every other size is labelled, and a" if size else "A"
    st.caption(f"{every} condition that lands on a labelled one is left unlabelled, so labels do not print over "
               "each other; hover over a condition for its value.")


def place_on_umap(db: str, model: str, embeddings: np.ndarray) -> np.ndarray | None:
    """``store.probes.place_probes`` on the store ``db`` (GenuineError propagates)."""
    from store.probes import place_probes

    return place_probes(common.store_at(db), model, embeddings)


def save_run(model: str, params: dict, results: pd.DataFrame, xy: np.ndarray | None) -> int | None:
    """Record the run in the store (``store.probes.record_probe_run``); None when it cannot be saved."""
    from store.probes import probe_run_frame, record_probe_run

    try:
        run_id = record_probe_run(common.get_store(), model, params, probe_run_frame(results, xy),
                                  created_by=common.reviewer() or None)
    except GenuineError as exc:
        st.warning(f"The probe ran but was not saved: {exc}")
        return None
    common.bump("probes")
    st.session_state[SHOW_RUN_KEY] = run_id  # "Saved probe runs" shows the newest run, not the one chosen before
    return run_id


@st.cache_data(show_spinner=False, max_entries=4)
def saved_runs(db: str, probes_rev: int) -> pd.DataFrame:
    """``store.probes.list_probe_runs``."""
    from store.probes import list_probe_runs

    return list_probe_runs(common.store_at(db))


@st.cache_data(show_spinner=False, max_entries=8)
def saved_results(db: str, run_id: int) -> pd.DataFrame:
    """``store.probes.probe_results`` of one run."""
    from store.probes import probe_results

    return probe_results(common.store_at(db), run_id)


def previous_runs(db: str) -> None:
    """Saved probe runs: table and the curve of a chosen run."""
    runs = saved_runs(db, common.rev("probes"))
    if runs.empty:
        return
    with st.expander(f"Saved probe runs ({len(runs)})", icon=":material/history:"):
        view = pd.DataFrame({"run": runs["id"], "model": runs["model"], "when (UTC)": runs["created_at"],
                             "by": runs["created_by"], "probes": runs["n_results"],
                             "experiment": [p.get("experiment", "?") for p in runs["params"]],
                             "N": [p.get("n_per_condition") for p in runs["params"]],
                             "NMI": [p.get("n_nmi") for p in runs["params"]],
                             "range": [run_range(p) for p in runs["params"]],
                             "background": [p.get("background", "?") for p in runs["params"]]})
        every = st.toggle("Every column (by, probes, N, NMI, background)", key="probe_runs_every",
                          help="the columns beyond these scroll sideways in a narrow window (1024 px)")
        st.dataframe(view if every else view[RUN_COLUMNS], hide_index=True, key="probe_runs", placeholder="–",
                     column_config={"N": st.column_config.NumberColumn(help="probes per condition"),
                                    "NMI": st.column_config.NumberColumn(help="NMI signals per nucleus")})
        run_id = st.selectbox("Show run", runs["id"].tolist(), key=SHOW_RUN_KEY)
        row = runs[runs["id"] == run_id].iloc[0]
        x = "n_mycn" if row["params"].get("experiment", "count") == "count" else "signal_size"
        curve = plotting.probe_summary(saved_results(db, int(run_id)), x)
        label = "MYCN signals per nucleus" if x == "n_mycn" else "MYCN signal size (σ, px)"
        n_nmi = int(row["params"].get("n_nmi", 0))
        rule_x = rule_switch(x, n_nmi)
        st.plotly_chart(plotting.probe_curve(call_and_probability(curve), x, label,
                                             title=f"run {run_id}: {row['model']}",
                                             rule_x=rule_x, rule_label=RULE_LABEL),
                        key="probe_saved_curve")
        st.caption(rule_text(rule_x, n_nmi) + SAVED_NO_TRUTH)


@dataclass(frozen=True)
class ProbeSettings:
    """What the form asks for: the experiment (``count`` or ``size``), the model, probes per condition,
    the conditions' ranges, the signal style, the background nuclei and the seed."""

    exp: str
    model: str
    n: int
    n_nmi: int
    counts: tuple[int, int]
    step: int
    sizes: tuple[float, float]
    n_sizes: int
    fixed_count: int
    fixed_size: float
    elastic: float
    blur: float
    touching: bool
    background: str  # "synthetic" or "real nuclei from the store"
    bg_sample: str | None
    seed: int

    def conditions(self) -> pd.DataFrame:
        """``genuine_core.synth.probe.probe_conditions`` of these settings."""
        return probe_conditions(self.exp, self.n_nmi, self.counts, self.step, self.fixed_count, self.sizes,
                                self.n_sizes, self.fixed_size)

    def params(self) -> dict:
        """The settings as a saved probe run records them."""
        return {"experiment": self.exp, "n_per_condition": self.n, "n_nmi": self.n_nmi,
                "mycn_counts": list(self.counts), "count_step": self.step, "signal_sizes": list(self.sizes),
                "size_steps": self.n_sizes, "fixed_count": self.fixed_count, "fixed_size": self.fixed_size,
                "elastic_alpha": self.elastic, "blur": self.blur, "touching_signals": self.touching,
                "background": self.background if self.background == "synthetic" else f"store sample {self.bg_sample}",
                "seed": self.seed}


def probe_form(db: str, usable: pd.DataFrame) -> ProbeSettings | None:
    """The experiment switch and the probe form; the settings when **Run probe** was pressed, else None."""
    # outside the form: choosing the experiment reruns the page at once, so the controls it does not use
    # are disabled (a widget inside a form only reports its value when the form is submitted)
    exp = st.segmented_control("Vary", list(EXPERIMENTS), format_func=EXPERIMENTS.get, default="count",
                               required=True, key="probe_exp") or "count"
    count_off, size_off = exp != "count", exp != "size"  # True: that experiment's controls are disabled
    with st.form("probe_form", border=True):
        c1, c3 = st.columns([4, 1])
        names = usable["name"].tolist()
        retired = set(usable.loc[usable["retired_at"].notna(), "name"])
        start = common.default_model([m for m in names if m not in retired] or names,
                                     dict(zip(usable["name"], usable["kind"])))
        name = c1.selectbox("Model", names, key="probe_model", index=names.index(start),
                            format_func=lambda m: f"{m} (retired)" if m in retired else m)
        n = c3.number_input("N per condition", B["n"].lo, B["n"].hi, PROBE_N, key="probe_n")
        c1, c2, c3 = st.columns(3, vertical_alignment="bottom")
        n_nmi = c1.number_input("NMI signals per nucleus", B["nmi"].lo, B["nmi"].hi, PROBE_NMI, key="probe_nmi")
        counts = c2.slider("MYCN count range", B["counts"].lo, B["counts"].hi, (PROBE_COUNTS[0], PROBE_COUNTS[-1]),
                           key="probe_counts", disabled=count_off)
        step = c3.number_input("Count step", B["count_step"].lo, B["count_step"].hi, B["count_step"].default,
                                key="probe_step", disabled=count_off)
        c1, c2, c3 = st.columns(3, vertical_alignment="bottom")  # "MYCN count (size experiment)" wraps
        sizes = c1.slider("Signal size range (σ, px)", B["size"].lo, B["size"].hi,
                          (min(PROBE_SIZES), max(PROBE_SIZES)), 0.5, key="probe_sizes", disabled=size_off)
        n_sizes = c2.number_input("Size steps", B["size_steps"].lo, B["size_steps"].hi, len(PROBE_SIZES),
                                  key="probe_nsizes", disabled=size_off,
                                  help="evenly spaced sizes over the range; equal range ends are one condition")
        fixed_count = c3.number_input("MYCN count (size experiment)", B["fixed_count"].lo, B["fixed_count"].hi,
                                      B["fixed_count"].default, key="probe_fixed_count", disabled=size_off)
        c1, c2, c3 = st.columns(3, vertical_alignment="bottom")
        fixed_size = c1.number_input("Signal size (count experiment)", B["size"].lo, B["size"].hi, PROBE_COUNT_SIZE,
                                     0.5, key="probe_fixed_size", disabled=count_off)
        elastic = c2.slider("Elastic deformation α", B["elastic"].lo, B["elastic"].hi, B["elastic"].default, 5.0,
                            key="probe_elastic")
        blur = c3.slider("Blur σ", B["blur"].lo, B["blur"].hi, B["blur"].default, 0.25, key="probe_blur")
        # its own line: a fourth column on a 1024 px screen cut its label to "Signals …"
        clusters = st.toggle("Signals may touch", value=True, key="probe_clusters", help=TOUCH_HELP)
        c1, c2, c3 = st.columns([2, 2, 1])
        smp = common.samples(db, common.rev("data"))
        bg_kind = c1.radio("Background nuclei", ["synthetic", "real nuclei from the store"], horizontal=True,
                           key="probe_bg", disabled=smp.empty, help=NO_REAL_NUCLEI if smp.empty else None)
        bg_sample = c2.selectbox("Real nuclei from sample", smp["name"].tolist(), key="probe_bg_sample",
                                 disabled=smp.empty)
        seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key="probe_seed")
        run = st.form_submit_button("Run probe", type="primary", icon=":material/play_arrow:")
        st.caption(REPORT_SETTINGS)
    if not run:
        return None
    return ProbeSettings(exp, name, int(n), int(n_nmi), counts, int(step), sizes, int(n_sizes), int(fixed_count),
                         float(fixed_size), float(elastic), float(blur), bool(clusters), bg_kind, bg_sample, int(seed))


def run_and_keep(db: str, usable: pd.DataFrame, s: ProbeSettings) -> bool:
    """Draw and score the probes, place them on the model's UMAP, save the run and keep the result for
    :func:`show_result`; False (the error shown) when the probes could not be drawn or scored."""
    from store.nuclei import PROBE_BACKGROUNDS
    from store.probes import probe_run_params
    from store.registry import verify_registered

    if s.background != "synthetic" and s.bg_sample is None:  # chosen before the last scan was removed
        st.info(NO_REAL_NUCLEI + " This run uses synthetic backgrounds.", icon=":material/info:")
        s = replace(s, background="synthetic")
    row = usable[usable["name"] == s.model].iloc[0]
    conds = s.conditions()
    try:
        model = scoring_model(str(row["folder"]), str(row["checksum"]), s.model)
        verify_registered(common.store_at(db), model, s.model)  # the folder may hold other weights by now
        p = int(model.patch_size)
        if s.background == "synthetic":
            bg_ids, bg = None, synthetic_backgrounds(p, RUN_BACKGROUNDS, s.seed)
        else:
            bg_ids, bg = store_backgrounds(db, common.rev("data"), s.bg_sample, p, PROBE_BACKGROUNDS, s.seed)
        style = run_style(s.elastic, s.blur)
        bar = st.progress(0.0, text="Drawing and scoring probes ...")
        out = run_probe(model, bg, conds, s.n, s.seed, not s.touching, style,
                        progress=lambda f, t: bar.progress(f, text=t))
    except GenuineError as exc:
        common.show_error(exc)
        return False
    x = "n_mycn" if s.exp == "count" else "signal_size"
    res = {"model": s.model, "exp": s.exp, "x": x, "n_nmi": s.n_nmi, "conds": conds, **out}
    res["curve"] = plotting.probe_summary(out["results"], x)
    try:
        xy = place_on_umap(db, s.model, out["embeddings"])
    except GenuineError as exc:
        xy, res["umap_error"] = None, str(exc)
    if xy is not None:
        res["umap"] = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "pred": out["results"]["call"],
                                    x: out["results"][x]})
    params = probe_run_params(s.params(), len(bg), str(row["checksum"]), bg_ids)
    res["run_id"] = save_run(s.model, params, out["results"], xy)
    st.session_state[RESULT_KEY] = res
    return True


def main() -> None:
    common.page_header("Probe", "Draw synthetic MYCN/NMI signals into nuclei and watch the model's prediction "
                                "change with their number and size (paper Figure 4).")
    store = common.store_or_stop()
    db = str(store.path)
    models = common.models(db, common.rev("models"))
    usable = models[models["folder"].notna()] if len(models) else models
    if usable.empty:
        common.empty_state("model with a folder on disk")
        return
    settings = probe_form(db, usable)
    if settings is not None and not run_and_keep(db, usable, settings):
        return
    res = st.session_state.get(RESULT_KEY)
    if res is None:
        st.caption("Set the conditions and press **Run probe**.")
    else:
        if res.get("run_id") is not None:
            st.caption(f"Saved as probe run {res['run_id']}.")
        show_result(res, db)
    previous_runs(db)

main()
