"""``genuine probe``: the Probe page's curve from the command line (paper Figure 4 for one model).

Example::

    genuine probe --model models/genuine_cpu --vary count --out probe_run/
    genuine probe --model genuine_cpu --db store.duckdb --vary size --n 20 --out probe_size/

Draws N probes per condition into synthetic DAPI-only nuclei (or, with ``--background-sample``, real
nuclei of a stored sample), scores them with the model and writes ``probe_curve.csv`` (mean call, its
SEM, mean calibrated P(MNA) and the ground truth per condition), ``probe.json`` (settings, model name,
weights checksum, 0.5 crossings) and ``probe.png``. The same settings and seed give the page's numbers:
both call ``genuine_core.synth.probe.run_probe`` and ``genuine_core.plotting.probe_summary``, and both take
their limits from ``genuine_core.synth.probe.RUN_BOUNDS``. With ``--db`` the run is also kept in the store as
the page keeps it (``store.probes``: the probes placed on the model's UMAP when one is fitted), so it is listed
under the Probe page's "Saved probe runs" (press **Reload data** in an open dashboard).
"""

from __future__ import annotations

import argparse

from genuine_core.commands.checks import seed_option
from store.location import login_name, person_name

CSV_NAME, JSON_NAME, PNG_NAME = "probe_curve.csv", "probe.json", "probe.png"


def _pair(kind):
    """``LO-HI`` (or one value) as a (lo, hi) pair of ``kind``."""
    def parse(text: str):
        lo, sep, hi = text.partition("-")
        try:
            return (kind(lo), kind(hi if sep else lo))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected LO-HI or one number, got {text!r}") from None
    return parse


#: range options and an example of each, for the message when argparse finds no value after one
RANGE_EXAMPLES = {"--counts": "0-35", "--sizes": "1.5-12"}


def _explain_missing_ranges(parser: argparse.ArgumentParser) -> None:
    """Make argparse's "argument --sizes: expected one argument" say the form it expects: a value such as
    ``-1-3`` starts with '-', so argparse takes it for another option and leaves ``--sizes`` without one."""
    error = parser.error

    def explained(message: str):
        for option, example in RANGE_EXAMPLES.items():
            if message == f"argument {option}: expected one argument":
                message = (f"argument {option}: expected LO-HI or one number, e.g. {option} {example} "
                           f"(no negative values: one starting with '-' is read as another option)")
        error(message)

    parser.error = explained


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``genuine probe`` options (defaults: the evaluation report's Figure 4 settings, as the page)."""
    parser.add_argument("--model", required=True, help="model folder, or the name of a model registered in --db")
    parser.add_argument("--db", default=None, help="store whose registered model --model names")
    parser.add_argument("--vary", choices=["count", "size"], required=True,
                        help="count: MYCN signal count; size: MYCN signal size")
    parser.add_argument("--out", required=True, help="folder for probe_curve.csv, probe.json and probe.png")
    parser.add_argument("--n", type=int, default=None, help="probes per condition (default 50)")
    parser.add_argument("--seed", type=seed_option, default=0, help="seed of the probes (default 0)")
    parser.add_argument("--nmi", type=int, default=None, help="NMI signals per nucleus (default 2)")
    parser.add_argument("--counts", type=_pair(int), default=None, help="MYCN count range LO-HI (default 0-35)")
    parser.add_argument("--count-step", type=int, default=None, help="MYCN count step (default 1)")
    parser.add_argument("--sizes", type=_pair(float), default=None,
                        help="signal size range LO-HI, σ px (default 1.5-12)")
    parser.add_argument("--size-steps", type=int, default=None, help="evenly spaced sizes (default 12)")
    parser.add_argument("--fixed-count", type=int, default=None,
                        help="MYCN count of the size experiment (default 2)")
    parser.add_argument("--fixed-size", type=float, default=None,
                        help="signal size of the count experiment, σ px (default 3.5)")
    parser.add_argument("--elastic", type=float, default=None, help="elastic deformation α (default the generator's)")
    parser.add_argument("--blur", type=float, default=None, help="blur σ (default 1.5)")
    parser.add_argument("--spaced", action="store_true", help="keep signals apart (default: they may touch)")
    parser.add_argument("--background-sample", default=None, metavar="SAMPLE",
                        help="draw into real nuclei of this sample in --db (default: synthetic nuclei)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files already in --out")
    parser.add_argument("--by", metavar="NAME", type=person_name, default=login_name(),
                        help="who ran the probe, kept with the run saved in --db (default: your login, %(default)s)")
    _explain_missing_ranges(parser)


def settings(args: argparse.Namespace) -> dict:
    """The run's settings with the defaults filled in, as the page's saved runs record them.

    Raises:
        InputError: a setting out of the page's range.
    """
    from genuine_core.commands.checks import in_range
    from genuine_core.errors import InputError
    from genuine_core.synth.probe import RUN_BOUNDS as B
    from training.evaluate import PROBE_COUNT_SIZE, PROBE_COUNTS, PROBE_N, PROBE_NMI, PROBE_SIZES

    counts = args.counts or (PROBE_COUNTS[0], PROBE_COUNTS[-1])
    sizes = args.sizes or (min(PROBE_SIZES), max(PROBE_SIZES))

    def given(value, key):  # the option's value, or the setting's default
        return B[key].default if value is None else value

    s = {"experiment": args.vary, "n_per_condition": PROBE_N if args.n is None else args.n,
         "n_nmi": PROBE_NMI if args.nmi is None else args.nmi, "mycn_counts": list(counts),
         "count_step": given(args.count_step, "count_step"), "signal_sizes": list(sizes),
         "size_steps": len(PROBE_SIZES) if args.size_steps is None else args.size_steps,
         "fixed_count": given(args.fixed_count, "fixed_count"),
         "fixed_size": PROBE_COUNT_SIZE if args.fixed_size is None else args.fixed_size,
         "elastic_alpha": given(args.elastic, "elastic"), "blur": given(args.blur, "blur"),
         "touching_signals": not args.spaced, "seed": args.seed,
         "background": "synthetic" if args.background_sample is None else f"store sample {args.background_sample}"}
    if args.background_sample is not None and args.db is None:
        raise InputError("--background-sample needs --db: the store that holds the sample's nuclei")
    in_range(s["n_per_condition"], B["n"].limits, "--n")
    in_range(s["n_nmi"], B["nmi"].limits, "--nmi")
    for v, option, b in ((counts[0], "--counts", B["counts"]), (counts[1], "--counts", B["counts"]),
                         (s["fixed_count"], "--fixed-count", B["fixed_count"])):
        in_range(v, b.limits, option)
    if counts[0] > counts[1]:
        raise InputError(f"--counts must be LO-HI with LO <= HI, got {counts[0]}-{counts[1]}")
    in_range(s["count_step"], B["count_step"].limits, "--count-step")
    in_range(s["size_steps"], B["size_steps"].limits, "--size-steps")
    for v, option in ((sizes[0], "--sizes"), (sizes[1], "--sizes"), (s["fixed_size"], "--fixed-size")):
        in_range(v, B["size"].limits, option, " px")  # the page's size controls' limits
    if sizes[0] > sizes[1]:
        raise InputError(f"--sizes must be LO-HI with LO <= HI, got {sizes[0]:g}-{sizes[1]:g}")
    in_range(s["elastic_alpha"], B["elastic"].limits, "--elastic")
    in_range(s["blur"], B["blur"].limits, "--blur", " px")
    return s


def load(model: str, db: str | None):
    """The scoring model of a folder, or of a model registered in ``db`` (its weights checked against the store).

    Raises:
        GenuineError: no such folder or registered model, or the folder's weights changed.
    """
    from pathlib import Path

    from genuine_core import pipeline
    from genuine_core.errors import InputError

    if db is None:
        if not Path(model).is_dir():
            raise InputError(f"--model {model}: no such model folder (to name a registered model, pass --db)")
        return pipeline.load_model(model, mc_samples=0)
    from store.db import open_store
    from store.registry import list_models, verify_registered

    with open_store(db, read_only=True) as s:
        reg = list_models(s)
        row = reg[reg["name"] == model]
        if row.empty or not isinstance(row.iloc[0]["folder"], str):
            if not Path(model).is_dir():
                raise InputError(f"--model {model}: not a model registered with a folder in {db}, nor a folder")
            return pipeline.load_model(model, mc_samples=0)
        loaded = pipeline.load_model(str(row.iloc[0]["folder"]), name=model, mc_samples=0)
        verify_registered(s, loaded, model)
    return loaded


def real_backgrounds(db: str, sample: str, patch_size: int, seed: int):
    """``store.nuclei.probe_backgrounds`` of ``sample`` in the store ``db`` (as the page draws them)."""
    from store.db import open_store
    from store.nuclei import PROBE_BACKGROUNDS, probe_backgrounds

    with open_store(db, read_only=True) as s:
        return probe_backgrounds(s, sample, patch_size, PROBE_BACKGROUNDS, seed)


def compute(model, s: dict, progress=None, backgrounds=None) -> dict:
    """Draw and score the probes of settings ``s`` as the Probe page does, into ``backgrounds`` (default the
    page's synthetic nuclei); ``{"results", "curve", "x", "crossings", "truth_crossings"}``."""
    import numpy as np

    from genuine_core import plotting
    from genuine_core.synth.probe import (RUN_BACKGROUNDS, probe_conditions, run_probe, run_style,
                                          synthetic_backgrounds)

    conds = probe_conditions(s["experiment"], s["n_nmi"], s["mycn_counts"], s["count_step"], s["fixed_count"],
                             s["signal_sizes"], s["size_steps"], s["fixed_size"])
    bg = backgrounds
    if bg is None:
        bg = synthetic_backgrounds(np.random.default_rng(s["seed"]), RUN_BACKGROUNDS, int(model.patch_size))
    out = run_probe(model, bg, conds, s["n_per_condition"], s["seed"], not s["touching_signals"],
                    run_style(s["elastic_alpha"], s["blur"]), progress=progress)
    x = "n_mycn" if s["experiment"] == "count" else "signal_size"
    curve = plotting.probe_summary(out["results"], x)
    return {"results": out["results"], "embeddings": out["embeddings"], "curve": curve, "x": x,
            "crossings": plotting.crossings(curve[x], curve["mean_pred"], 0.5),
            "truth_crossings": plotting.crossings(curve[x], curve["truth"], 0.5)}


def keep(db: str, model, s: dict, res: dict, n_backgrounds: int, by: str | None) -> str:
    """Save the run in the store ``db`` as the Probe page does (the probes placed on the model's UMAP when it
    has one; ``store.probes``); one line saying what was kept, or why not."""
    from genuine_core.errors import GenuineError
    from store.db import open_store
    from store.probes import place_probes, probe_run_frame, probe_run_params, record_probe_run
    from store.registry import list_models

    with open_store(db) as store:
        reg = list_models(store)
        named = reg[(reg["name"] == model.name) & (reg["checksum"] == model.checksum)]
        if named.empty:
            named = reg[reg["checksum"] == model.checksum]
        if named.empty:
            return f"not saved in {db}: no model registered there has these weights (register the folder first)"
        name = str(named.iloc[0]["name"])
        try:
            xy, placed = place_probes(store, name, res["embeddings"]), ""
        except GenuineError as exc:
            xy, placed = None, f"; not placed on the UMAP: {exc}"
        if xy is None and not placed:
            placed = "; not placed on a UMAP (none is fitted for the model)"
        params = probe_run_params({k: v for k, v in s.items() if k != "background_nuclei"}, n_backgrounds,
                                  model.checksum, s.get("background_nuclei"))
        run_id = record_probe_run(store, name, params, probe_run_frame(res["results"], xy), created_by=by)
    return f"saved in {db} as probe run {run_id} of {name}{placed}"


def plot(res: dict, title: str, path) -> None:
    """The curve as a PNG: mean call (with SEM) first, mean calibrated P(MNA), the ground truth, the 0.5 line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, x = res["curve"], res["x"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    call = ax.errorbar(c[x], c["mean_pred"], yerr=c["sem"], marker="o", label="mean call (prediction)")
    prob, = ax.plot(c[x], c["mean_prob"], marker=".", label="mean calibrated P(MNA)")
    truth, = ax.plot(c[x], c["truth"], ls="--", color="#333", label="ground truth (Cohn rule, visible counts)")
    ax.axhline(0.5, ls=":", color="#666")
    for v in res["crossings"][:1]:
        ax.axvline(v, ls=":", color="C0")
    ax.set_xlabel("MYCN signals per nucleus" if x == "n_mycn" else "MYCN signal size (σ, px)")
    ax.set_ylabel("mean prediction")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(handles=[call, prob, truth], fontsize=7)  # the headline mean call first, as on the page
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Check the settings, load the model, run the probe and write the CSV, JSON and PNG."""
    import json

    import torch
    from tqdm.auto import tqdm

    from genuine_core import plotting
    from genuine_core.atomic import staged_into
    from genuine_core.commands.checks import invoked_command, output_folder, refuse_existing
    from genuine_core.synth.probe import RUN_BACKGROUNDS

    out = output_folder(args.out)
    refuse_existing([out / f for f in (CSV_NAME, JSON_NAME, PNG_NAME)], args.overwrite, folder=out)
    s = settings(args)  # before the model loads
    torch.set_num_threads(2)
    model = load(args.model, args.db)
    bg = None
    n_backgrounds = RUN_BACKGROUNDS
    if args.background_sample is not None:
        s["background_nuclei"], bg = real_backgrounds(args.db, args.background_sample, int(model.patch_size),
                                                      args.seed)
        n_backgrounds = len(bg)
    with tqdm(total=1.0, desc="probe", disable=None, bar_format="{l_bar}{bar}| {elapsed}") as bar:
        res = compute(model, s, progress=lambda f, t: (bar.update(f - bar.n), bar.set_postfix_str(t)), backgrounds=bg)
    doc = {"command": invoked_command(args), "model": model.name, "model_checksum": model.checksum,
           "settings": s, "crossing": res["crossings"][0] if res["crossings"] else None,
           "crossings": res["crossings"], "truth_crossings": res["truth_crossings"]}
    with staged_into(out) as stage:  # the three files together or none (a full disk)
        (stage / CSV_NAME).write_bytes(res["curve"].to_csv(index=False).encode())
        (stage / JSON_NAME).write_bytes((json.dumps(doc, indent=2) + "\n").encode())
        plot(res, f"{model.name}: mean prediction vs MYCN signal {args.vary}", stage / PNG_NAME)
    c, x = res["curve"], res["x"]
    first = (f"crosses 0.5 at {res['crossings'][0]:.2f}" if res["crossings"]
             else f"does not cross 0.5: {plotting.crossing_text(c[x], c['mean_pred'], 0.5)}")
    print(f"{out}: {len(c)} conditions x {s['n_per_condition']} probes; the mean call {first}")
    if args.db is not None:
        print(keep(args.db, model, s, res, n_backgrounds, args.by))
    return 0
