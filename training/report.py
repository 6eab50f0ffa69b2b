"""Write the evaluation report: ``evaluation.json``, ``evaluation.md`` and PNG figures.

Input is the plain results dict built by :func:`training.evaluate.evaluate` (see
there for its schema). This module only formats: it computes nothing but the
ordering sentence and table layout, so a report can be regenerated from a saved
``evaluation.json`` (``write_report(json.load(...), out)``).
"""

from __future__ import annotations

import json
import logging
import math
import shlex
from pathlib import Path
from typing import Any

from genuine_core import atomic

logger = logging.getLogger(__name__)

JSON_NAME = "evaluation.json"
MD_NAME = "evaluation.md"
FIG_COUNT = "fig4_mycn_count.png"
FIG_SIZE = "fig4_signal_size.png"
FIG_MIX = "mixtures.png"
FIG_CURVES = "training_curves.png"
#: every figure a report may write (``write_report`` removes those it did not draw this time)
REPORT_FIGURES = (FIG_COUNT, FIG_SIZE, FIG_MIX, FIG_CURVES)
METRIC_ROWS = (("TPR", "tpr"), ("TNR", "tnr"), ("F1-Score", "f1"), ("Accuracy", "accuracy"))
#: a test split of fewer ground-truth nuclei than this is called small: the ordering sentence says it was
#: judged on too few nuclei, and the Models table that its speed is mostly model warm-up (a tiny benchmark
#: has a few dozen; the cpu benchmark 600)
SMALL_TEST = 200


def _pct(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{digits}f}"


def _num(v: float | None, digits: int = 2, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _beta_groups(models: list[dict]) -> list[tuple[str, list[dict]]]:
    """Columns per label-noise level; models without a beta (detector) join every group."""
    betas = sorted({m["beta"] for m in models if m.get("beta") is not None})
    shared = [m for m in models if m.get("beta") is None]
    if not betas:
        return [("all models", models)]
    return [(f"beta = {b:g}", [m for m in models if m.get("beta") == b] + shared) for b in betas]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a Markdown table (header, rule, rows), then an empty line."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _bold_best(values: list[float | None], text: list[str], higher: bool = True) -> list[str]:
    valid = [v for v in values if v is not None and not math.isnan(v)]
    if len(values) < 2 or not valid:
        return text
    best = max(valid) if higher else min(valid)
    return [f"**{t}**" if v is not None and not math.isnan(v) and v == best else t for v, t in zip(values, text)]


def _metric_table(group: list[dict], key: str) -> list[str]:
    header = ["Metric"] + [m["label"] for m in group]
    rows = []
    for name, field in METRIC_ROWS:
        vals = [(m.get(key) or {}).get(field) for m in group]
        rows.append([name] + _bold_best(vals, [_pct(v) for v in vals]))
    n = [(m.get(key) or {}).get("n") for m in group]
    rows.append(["n nuclei"] + [str(v) if v is not None else "n/a" for v in n])
    return markdown_table(header, rows)


def _mixture_table(group: list[dict], field: str, ci: bool = False) -> list[str]:
    samples = group[0].get("mixtures", []) if group else []
    header = ["Sample", "nominal %", "true %"] + [m["label"] for m in group]
    rows = []
    for i, s in enumerate(samples):
        row = [s["sample"], _num(s["nominal_pct"], 0), _num(s["true_pct"], 1)]
        for m in group:
            mix = m.get("mixtures") or []
            r = mix[i] if i < len(mix) else {}
            cell = _num(r.get(field), 2, signed=True)
            if ci and r.get("corrected_low_pct") is not None:
                cell += f" [{_num(r['corrected_low_pct'], 1)}, {_num(r['corrected_high_pct'], 1)}]"
            row.append(cell)
        rows.append(row)
    summ = {"diff_true": "mad_true", "diff_nominal": "mad_nominal", "corrected_diff_true": "mad_true_corrected"}[field]
    rows.append(["mean abs.", "", ""] + [_num((m.get("mixture_summary") or {}).get(summ), 2) for m in group])
    mx = {"diff_true": "max_abs_true", "diff_nominal": "max_abs_nominal",
          "corrected_diff_true": "max_abs_true_corrected"}[field]
    rows.append(["max abs.", "", ""] + [_num((m.get("mixture_summary") or {}).get(mx), 2) for m in group])
    return markdown_table(header, rows)


def _probe_table(models: list[dict], key: str, xname: str) -> list[str]:
    with_probe = [m for m in models if m.get(key)]
    if not with_probe:
        return ["(no probe results)", ""]
    xs = with_probe[0][key]["x"]
    header = [xname] + [m["label"] for m in with_probe]
    rows = [[str(x)] + [_num(m[key]["mean_call"][i], 2) for m in with_probe] for i, x in enumerate(xs)]
    rows.append(["0.5 crossing"] + [_crossing_cell(m[key]) for m in with_probe])
    return markdown_table(header, rows)


def _crossing_cell(curve: dict) -> str:
    """The crossing, or why there is none: the curve never reaches 0.5, or already starts at/above it."""
    if curve.get("crossing") is None:
        return "never reaches 0.5"
    if curve["mean_call"] and curve["mean_call"][0] >= 0.5:
        return f"none: {_num(curve['mean_call'][0], 2)} already at {curve['x'][0]}"
    return _num(curve["crossing"], 2)


def _ordering_at(b: float, g: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """GENUINE ``g`` vs ResNet ``r`` at label noise ``b``: numbers, verdict and sentence."""
    ga, ra = g["test_truth"]["accuracy"], r["test_truth"]["accuracy"]
    gm, rm = g["mixture_summary"]["mad_true"], r["mixture_summary"]["mad_true"]
    acc_ok, mix_ok = ga > ra, gm < rm
    holds = acc_ok and mix_ok
    verdict = "holds" if holds else ("holds only partly" if acc_ok or mix_ok else "does not hold")
    n = min((m["test_truth"].get("n") for m in (g, r) if m["test_truth"].get("n") is not None), default=None)
    caveat = f" (judged on only {n} test nuclei, fewer than {SMALL_TEST}: too few to be sure)" \
        if n is not None and n < SMALL_TEST else ""
    sentence = (
        f"At label noise beta = {b:g}, the paper's ordering {verdict} here{caveat}: GENUINE reaches "
        f"{100 * ga:.2f} % ground-truth test accuracy vs ResNet {100 * ra:.2f} % "
        f"({'better' if acc_ok else 'not better'}), and a mixture mean absolute deviation from the true "
        f"MNA % of {gm:.2f} pp vs ResNet {rm:.2f} pp ({'better' if mix_ok else 'not better'})."
    )
    return {"beta": b, "holds": holds, "genuine_accuracy": ga, "resnet_accuracy": ra,
            "genuine_mad_true": gm, "resnet_mad_true": rm, "n_test": n, "sentence": sentence}


def ordering_sentence(results: dict[str, Any]) -> dict[str, Any]:
    """Does GENUINE beat ResNet on ground truth and on mixtures under label noise?

    Compares the ground-truth test accuracy and the mixture mean absolute deviation from the
    true MNA % of a ``genuine`` and a ``resnet`` model at each beta holding both. The verdict
    is the largest such beta's (the most label noise); the sentence then adds the others.
    Returns ``{"beta", "holds", "sentence", ...numbers, "by_beta": [...]}``.
    """
    models = results.get("models", [])
    betas = sorted({m.get("beta") for m in models if m.get("beta") is not None}, reverse=True)
    by_beta = []
    for b in betas:
        g = [m for m in models if m.get("beta") == b and m["kind"] == "genuine"]
        r = [m for m in models if m.get("beta") == b and m["kind"] == "resnet"]
        if g and r:
            by_beta.append(_ordering_at(b, g[0], r[0]))
    if not by_beta:
        return {"beta": None, "holds": None, "sentence": "No GENUINE/ResNet pair at the same beta was evaluated.",
                "by_beta": []}
    main = dict(by_beta[0])
    main["sentence"] = " ".join(o["sentence"] for o in by_beta)
    main["by_beta"] = by_beta
    return main


def _acceptance_lines(acc: dict[str, Any] | None) -> list[str]:
    if not acc:
        return []
    lines = [f"## Acceptance targets for the shipped GENUINE model (`{acc['model']}`)", ""]
    rows = []
    for item in acc["checks"]:
        measured = _num(item["value"], 3)
        if item.get("ci95"):
            measured += f" (95 % CI {item['ci95'][0]:.3f}-{item['ci95'][1]:.3f}, n = {item['n']})"
        rows.append([item["target"], measured, "yes" if item["ok"] else "**no**"])
    lines += markdown_table(["target", "measured", "met"], rows)
    corr = acc.get("corrected") or {}
    if corr.get("mad_true") is not None:
        lines += [f"The mixture targets are measured on the raw calls. After Rogan-Gladen prevalence correction "
                  f"(Table 3) the same model deviates from the true MNA % by {corr['mad_true']:.2f} pp on average "
                  f"and by at most {corr['max_abs_true']:.2f} pp.", ""]
    return lines


def _figures(results: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is pinned in requirements
        logger.warning("matplotlib not installed: no PNG figures")
        return []
    written = []
    models = results.get("models", [])
    for key, fname, xlabel, title in (
        ("probe_count", FIG_COUNT, "MYCN signals (2 NMI signals)", "Mean prediction vs MYCN signal count"),
        ("probe_size", FIG_SIZE, "MYCN signal size (Gaussian sigma, px; 2 MYCN + 2 NMI)",
         "Mean prediction vs signal size"),
    ):
        ms = [m for m in models if m.get(key)]
        if not ms:
            continue
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        for m in ms:
            ax.plot(m[key]["x"], m[key]["mean_call"], marker="o", ms=3, label=m["label"])
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        if key == "probe_count":
            ax.axvline(8, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean predicted label (50 nuclei)")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname)
        plt.close(fig)
        written.append(fname)
    ms = [m for m in models if m.get("mixtures")]
    if ms:
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        true = [s["true_pct"] for s in ms[0]["mixtures"]]
        ax.plot([0, 100], [0, 100], color="grey", lw=0.8, ls="--")
        for m in ms:
            ax.plot([s["true_pct"] for s in m["mixtures"]], [s["pred_pct"] for s in m["mixtures"]], marker="o",
                    ms=3, lw=0.8, label=m["label"])
        ax.set_xlabel("true MNA % of the sample's nuclei")
        ax.set_ylabel("predicted MNA %")
        ax.set_title(f"Mixture samples ({len(true)})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / FIG_MIX)
        plt.close(fig)
        written.append(FIG_MIX)
    ms = [m for m in models if (m.get("training") or {}).get("history")]
    if ms:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=110)
        for m in ms:
            h = m["training"]["history"]
            ep = [r["epoch"] for r in h]
            line, = axes[0].plot(ep, [r["val_loss"] for r in h], label=m["label"])
            axes[0].plot(ep, [r["train_loss"] for r in h], color=line.get_color(), ls=":", lw=0.8)
            if all(r.get("val_acc") is not None for r in h):
                axes[1].plot(ep, [r["val_acc"] for r in h], color=line.get_color(), label=m["label"])
        axes[0].set_title("loss (solid: validation, dotted: train)")
        axes[1].set_title("validation accuracy (training labels)")
        for a in axes:
            a.set_xlabel("epoch")
        axes[0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / FIG_CURVES)
        plt.close(fig)
        written.append(FIG_CURVES)
    return written


def _short_command(command: str) -> str:
    """``command`` with the text of each ``--note`` replaced by ``...`` (the report lists the notes)."""
    try:
        args = shlex.split(command)
    except ValueError:
        return command
    return " ".join("..." if i and args[i - 1] == "--note" else shlex.quote(a) for i, a in enumerate(args))


def _provenance_lines(meta: dict[str, Any], models: list[dict[str, Any]]) -> list[str]:
    """What the report used by content: the benchmark's sha256 and command, each model's checksum, the code
    ([] for reports written before these were recorded)."""
    bench, ver = meta.get("benchmark") or {}, meta.get("versions") or {}
    lines = []
    if bench.get("sha256"):
        made = f" made by `{bench['command']}`" if bench.get("command") else ""
        lines.append(f"Benchmark sha256 (`nuclei.parquet`) `{bench['sha256']}`{made}; probe seed "
                     f"{meta.get('probe_seed', '?')}.")
    sums = [f"`{m['name']}` `{m['checksum']}`" for m in models if m.get("checksum")]
    if sums:
        lines.append("Model checksums: " + ", ".join(sums) + ".")
    if ver.get("git_commit"):
        dirty = " with uncommitted changes" if ver.get("git_dirty") else ""
        lines.append(f"Code: commit `{ver['git_commit']}`{dirty}; numpy {ver.get('numpy')}, torch {ver.get('torch')}.")
    return [" ".join(lines), ""] if lines else []


def render_markdown(results: dict[str, Any], figures: list[str]) -> str:
    """The human-readable report."""
    models = results.get("models", [])
    lines = ["# GENUINE evaluation report", ""]
    meta = results.get("meta", {})
    lines += [f"Benchmark: `{meta.get('data', '?')}` (seed {meta.get('benchmark_seed', '?')}, "
              f"size {meta.get('benchmark_size', '?')}); generated {meta.get('generated', '?')} "
              f"by `{_short_command(meta.get('command') or 'genuine evaluate')}`"
              f"{' (the notes are listed under Notes)' if results.get('notes') else ''}.", ""]
    lines += _provenance_lines(meta, models)
    if meta.get("merged_from"):
        lines += ["Merged from the evaluation runs:", ""] + [f"- `{_short_command(c)}`" for c in meta["merged_from"]]
        lines += [""]
    order = results.get("ordering") or ordering_sentence(results)
    lines += ["## Summary", "", order["sentence"], ""]
    lines += _acceptance_lines(results.get("acceptance"))
    lines += ["## Models", ""]
    rows = []
    for m in models:
        t = m.get("training") or {}
        rows.append([m["label"], m["kind"], m.get("preset", "?"), "-" if m.get("beta") is None else f"{m['beta']:g}",
                     "n/a" if t.get("epochs") is None else str(t["epochs"]), _num(t.get("seconds"), 0), _num(m.get("temperature"), 2),
                     _num((m.get("speed") or {}).get("nuclei_per_s"), 0)])
    lines += markdown_table(["model", "kind", "preset", "beta", "epochs", "train s", "temperature",
                             "nuclei/s (eval)"], rows)
    n_timed = min(((m.get("speed") or {}).get("n") or SMALL_TEST for m in models), default=SMALL_TEST)
    if n_timed < SMALL_TEST:
        lines += [f"nuclei/s (eval) is the wall time of predicting the {n_timed} test nuclei, model warm-up "
                  "included: on so few nuclei it is mostly warm-up and understates the throughput.", ""]
    for title, key in (("Table 1: test split against the automatic (noisy) labels", "test_auto"),
                       ("Table 2: test split against the ground-truth labels", "test_truth")):
        lines += [f"## {title}", "", "Rates in %. Best per row in bold.", ""]
        for name, group in _beta_groups(models):
            lines += [f"**{name}**", ""] + _metric_table(group, key)
    lines += ["## Table 3: mixture samples", "",
              "Predicted MNA % minus the nominal target % (the paper's view), minus the true MNA % of the "
              "sample's nuclei, and the Rogan-Gladen prevalence (corrected with each model's validation "
              "sensitivity/specificity against ground truth) minus the true MNA %, with its 95 % CI in "
              "brackets (corrected %, not difference). Percentage points.", ""]
    for name, group in _beta_groups(models):
        lines += [f"**{name}: predicted - nominal (raw)**", ""] + _mixture_table(group, "diff_nominal")
        lines += [f"**{name}: predicted - true (raw)**", ""] + _mixture_table(group, "diff_true")
        lines += [f"**{name}: corrected - true (Rogan-Gladen)**", ""] + _mixture_table(group, "corrected_diff_true",
                                                                                          ci=True)
    lines += ["## Figure 4 analogues: synthetic probe nuclei", "",
              f"Mean predicted label over {meta.get('probe_n') or 50} probe nuclei per condition "
              "(paper section 4.3).", ""]
    lines += ["**MYCN signal count, 2 NMI signals** (Cohn rule: MNA from 8 MYCN signals)", ""]
    lines += _probe_table(models, "probe_count", "MYCN signals")
    lines += ["**MYCN signal size, 2 MYCN + 2 NMI signals**", ""]
    lines += _probe_table(models, "probe_size", "signal sigma (px)")
    dets = [m for m in models if m.get("detector")]
    if dets:
        lines += ["## Signal detector: held-out test patches", ""]
        rows = []
        for m in dets:
            d = m["detector"]
            ca = d["count_accuracy"]
            rows.append([m["label"], _num(d["ap50"].get("nmi"), 3), _num(d["ap50"].get("mycn"), 3),
                         _num(d["ap50"].get("cluster"), 3), _num(d.get("map50"), 3), _pct(ca["exact"], 1),
                         " / ".join(_pct(v, 1) for v in ca["accuracy"]), " / ".join(_num(v, 2) for v in ca["mae"])])
        lines += markdown_table(["model", "AP50 NMI", "AP50 MYCN", "AP50 cluster", "mAP50", "counts exact %",
                                 "count acc. % (NMI/MYCN/cluster)", "count MAE"], rows)
    notes = results.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines).rstrip() + "\n"


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # NumPy scalars
        return _json_safe(obj.item())
    return obj


def write_report(results: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``evaluation.json``, ``evaluation.md`` and the PNG figures into ``out``.

    A report owns these file names in ``out``: a figure of an earlier report that this one
    does not draw (e.g. no probe curves with ``--no-probes``) is removed, so the folder never
    shows another run's figure beside this report. Other files in ``out`` are left alone.

    Returns:
        Paths written.
    """
    out = Path(out)
    results = _json_safe(dict(results))
    results.setdefault("ordering", ordering_sentence(results))
    with atomic.staged_into(out) as stage:  # the report lands whole or not at all (a full disk)
        figures = _figures(results, stage)
        results["figures"] = figures
        (stage / JSON_NAME).write_text(json.dumps(results, indent=1) + "\n")
        (stage / MD_NAME).write_text(render_markdown(results, figures))
    for stale in set(REPORT_FIGURES) - set(figures):
        (out / stale).unlink(missing_ok=True)
    return [out / JSON_NAME, out / MD_NAME] + [out / f for f in figures]
