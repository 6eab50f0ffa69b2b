"""Evaluate model folders on a synthetic benchmark: the paper's Tables 1-3 and Figure 4.

:func:`evaluate` returns a plain results dict (and :mod:`training.report` writes it):

``{"meta": {...}, "models": [ModelResult, ...], "acceptance": {...}, "ordering": {...}}``

with, per model (``ModelResult``):

- ``name``, ``label``, ``folder``, ``kind``, ``preset``, ``beta`` (None for models
  trained without labels, i.e. the detector), ``temperature``, ``training`` (epochs,
  seconds, history from ``train_config.json`` / ``history.json``);
- ``test_auto`` / ``test_truth``: :class:`training.metrics.BinaryMetrics` dicts on the
  test split against the automatic and ground-truth labels (Tables 1 and 2);
- ``mixtures``: one row per mixture sample: ``sample``, ``n``, ``nominal_pct``,
  ``true_pct``, ``pred_pct``, ``diff_nominal``, ``diff_true``, ``corrected_pct``,
  ``corrected_low_pct``, ``corrected_high_pct``, ``corrected_diff_true``,
  ``corrected_diff_nominal`` (percent / percentage points; Table 3);
  ``mixture_summary``: mean / max absolute deviations;
- ``probe_count`` / ``probe_size``: ``x``, ``mean_call``, ``mean_prob``, ``crossing``
  (Figure 4: 50 probe nuclei per condition);
- ``detector`` (detector kind): per-class AP at IoU 0.5 and count accuracy on test;
- ``speed``: nuclei per second of the test-split prediction.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from genuine_core.errors import InputError
from genuine_core.patches import LEGACY_NORMALISATION
from genuine_core.stats import wilson_interval
from training.metrics import average_precision, binary_metrics, count_accuracy, crossing, true_counts

logger = logging.getLogger(__name__)

PROBE_N = 50
PROBE_COUNTS = tuple(range(0, 36))
PROBE_NMI = 2
#: MYCN signal sigma (px) of the count probes: the middle of the benchmark lines' 3.0-4.2 px
PROBE_COUNT_SIZE = 3.5
#: signal sigmas (px) of the size sweep (2 MYCN + 2 NMI signals)
PROBE_SIZES = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0)


@dataclass
class ProbeSet:
    """Probe patches shared by every model (same nuclei for a fair comparison).

    Attributes:
        count_x: MYCN counts; ``count_patches[i]`` is ``(50, 3, P, P)`` for ``count_x[i]``.
        size_x: signal sizes; ``size_patches[i]`` likewise.
    """

    count_x: list[float]
    count_patches: list[np.ndarray]
    size_x: list[float]
    size_patches: list[np.ndarray]


# ----------------------------------------------------------------------------- data access
def _benchmark(data: Path, split: str):
    from genuine_core.synth import load_benchmark

    return load_benchmark(data, split)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def nominal_fractions(data: Path, nuclei: pd.DataFrame) -> dict[str, float]:
    """Nominal MNA fraction (0..1) of each mixture sample.

    Read from ``summary.json`` (``mixtures[sample]["target_fraction"]``, written by
    ``genuine synth benchmark``), else from a per-nucleus ``target_fraction`` column.

    Raises:
        InputError: a sample without a nominal fraction.
    """
    samples = sorted(s for s in nuclei["sample"].astype(str).unique() if s)
    mixtures = _read_json(data / "summary.json").get("mixtures", {})
    out = {s: mixtures[s]["target_fraction"] for s in samples
           if isinstance(mixtures.get(s), dict) and mixtures[s].get("target_fraction") is not None}
    if len(out) < len(samples) and "target_fraction" in nuclei.columns:
        out.update({str(s): float(g["target_fraction"].iloc[0]) for s, g in nuclei.groupby("sample") if s})
    missing = [s for s in samples if s not in out]
    if missing:
        raise InputError(f"no nominal MNA fraction for mixture samples {missing} in {data}/summary.json")
    return {s: float(v) for s, v in out.items()}


# ----------------------------------------------------------------------------- models
def load_model(folder: Path):
    """Load a model folder (checksum-verified, no unpickling)."""
    from genuine_core.models import GenuineClassifier

    return GenuineClassifier.from_folder(folder)


def run_predict(model, patches: np.ndarray, batch_size: int = 128, min_score: float | None = None,
                progress: bool = True):
    """``genuine_core.inference.predict`` (detections listed down to ``min_score``; ``progress``: its
    per-batch bar, on a terminal)."""
    from genuine_core.inference import predict

    kw = {} if min_score is None else {"min_score": float(min_score)}
    return predict(model, patches, batch_size=batch_size, progress=progress, **kw)


def model_info(folder: Path) -> dict[str, Any]:
    """Kind, preset, beta, temperature, training record and validation rates of a folder."""
    cfg = _read_json(folder / "config.json")
    tc = _read_json(folder / "train_config.json")
    metrics = _read_json(folder / "metrics.json")
    hist = _read_json(folder / "history.json")
    kind = cfg.get("kind", "?")
    beta = tc.get("beta") if kind != "detector" else None
    from training.provenance import folder_identity

    return {
        "name": folder.name,
        "folder": str(folder),
        "checksum": folder_identity(folder)["checksum"],  # as the store records it (``folder_digest``)
        "kind": kind,
        "preset": cfg.get("preset", "?"),
        "beta": None if beta is None else float(beta),
        "temperature": cfg.get("temperature"),
        "validation": metrics.get("validation", {}),
        "training": {"epochs": tc.get("epochs_run"), "seconds": tc.get("wall_seconds"),
                     "command": tc.get("command"), "history": hist if isinstance(hist, list) else []},
    }


def _label(info: dict) -> str:
    names = {"genuine": "GENUINE", "resnet": "ResNet", "detector": "RetinaNet (counts)", "ratio": "Ratio"}
    base = names.get(info["kind"], info["kind"])
    return base if info["beta"] is None else f"{base} b={info['beta']:g}"


# ----------------------------------------------------------------------------- pieces
def mixture_rows(calls: np.ndarray, nuclei: pd.DataFrame, nominal: dict[str, float],
                 validation: dict[str, Any]) -> tuple[list[dict], dict]:
    """Per-sample predicted MNA % vs nominal and true %, raw and Rogan-Gladen corrected.

    Args:
        calls: ``(N,)`` 0/1 calls aligned with ``nuclei`` rows.
        nuclei: mixture nuclei with ``sample`` and ``true_label``.
        nominal: sample -> nominal fraction.
        validation: the model's validation record (``sensitivity``, ``specificity``,
            ``n_positive``, ``n_negative``); no correction when missing or no better than chance.
    """
    rows = []
    samples = sorted((s for s in nuclei["sample"].astype(str).unique() if s), key=lambda s: (nominal.get(s, 0), s))
    sample_col = nuclei["sample"].astype(str).to_numpy()
    for s in samples:
        m = sample_col == s
        n, k = int(m.sum()), int(calls[m].sum())
        true_pct = 100 * float(nuclei["true_label"].to_numpy()[m].mean())
        pred_pct = 100 * k / n
        nom = 100 * nominal[s]
        rows.append({"sample": s, "n": n, "nominal_pct": nom, "true_pct": true_pct, "pred_pct": pred_pct,
                     "diff_nominal": pred_pct - nom, "diff_true": pred_pct - true_pct})
    return correct_mixture_rows(rows, validation)


def correct_mixture_rows(rows: list[dict], validation: dict[str, Any]) -> tuple[list[dict], dict]:
    """Add the Rogan-Gladen corrected columns to mixture rows and summarise the deviations.

    Args:
        rows: per-sample dicts with ``n``, ``pred_pct``, ``true_pct``, ``nominal_pct`` and the raw
            ``diff_*`` columns (percentages, 0-100); corrected columns already there are replaced.
        validation: as for :func:`mixture_rows`.

    Returns:
        ``(rows, summary)``: new row dicts, and mean / max absolute deviations in pp.
    """
    from genuine_core.stats import rogan_gladen

    sens, spec = validation.get("sensitivity"), validation.get("specificity")
    can_correct = sens is not None and spec is not None and sens + spec > 1
    out = []
    for row in rows:
        r = {key: v for key, v in row.items() if not key.startswith("corrected_")}
        if can_correct:
            k = round(r["pred_pct"] * r["n"] / 100)
            est = rogan_gladen(k, r["n"], float(sens), float(spec), n_positive=validation.get("n_positive"),
                               n_negative=validation.get("n_negative"))
            r.update(corrected_pct=100 * est.estimate, corrected_low_pct=100 * est.low,
                     corrected_high_pct=100 * est.high, corrected_diff_true=100 * est.estimate - r["true_pct"],
                     corrected_diff_nominal=100 * est.estimate - r["nominal_pct"])
        out.append(r)
    summary = {}
    for key, field in (("true", "diff_true"), ("nominal", "diff_nominal"), ("true_corrected", "corrected_diff_true")):
        vals = np.abs([r[field] for r in out if field in r])
        if len(vals):
            summary[f"mad_{key}"] = float(vals.mean())
            summary[f"max_abs_{key}"] = float(vals.max())
    return out, summary


def build_probes(data: Path, rng: np.random.Generator, patch_size: int, n: int = PROBE_N,
                 sizes: Sequence[float] | None = None) -> ProbeSet:
    """Probe nuclei for Figure 4: MYCN count 0..35 with 2 NMI, and signal size sweep.

    Backgrounds are test-split nuclei (their DAPI channel carries the nucleus shape).
    """
    from genuine_core.synth import make_probe

    bs = _benchmark(data, "test")
    pick = rng.choice(len(bs.patches), size=min(len(bs.patches), 4 * n), replace=False)
    backgrounds = np.asarray(bs.patches[np.sort(pick)], dtype=np.float32)
    if backgrounds.shape[-1] != patch_size:
        raise InputError(f"benchmark patches are {backgrounds.shape[-1]} px, models expect {patch_size}")
    count_p = [np.asarray(make_probe(backgrounds, PROBE_NMI, c, PROBE_COUNT_SIZE, n, rng).patches, np.float32)
               for c in PROBE_COUNTS]
    sizes = list(sizes) if sizes is not None else list(PROBE_SIZES)
    size_p = [np.asarray(make_probe(backgrounds, PROBE_NMI, 2, s, n, rng).patches, np.float32) for s in sizes]
    return ProbeSet([float(c) for c in PROBE_COUNTS], count_p, [float(s) for s in sizes], size_p)


def probe_curve(model, xs: list[float], patches: list[np.ndarray], progress: bool = True) -> dict[str, Any]:
    """Mean call and mean calibrated probability per condition, and the 0.5 crossing of the calls."""
    stacked = np.concatenate(patches)
    pred = run_predict(model, stacked, progress=progress)
    calls = pred.table["call"].to_numpy().astype(float)
    probs = pred.table["prob_calibrated"].to_numpy().astype(float)
    sizes = np.cumsum([0] + [len(p) for p in patches])
    mean_call = [float(calls[a:b].mean()) for a, b in zip(sizes[:-1], sizes[1:])]
    mean_prob = [float(probs[a:b].mean()) for a, b in zip(sizes[:-1], sizes[1:])]
    return {"x": xs, "mean_call": mean_call, "mean_prob": mean_prob, "crossing": crossing(xs, mean_call)}


def detector_metrics(pred, boxes: pd.DataFrame, n: int) -> dict[str, Any]:
    """Per-class AP@0.5 and count accuracy of detections vs exact boxes (patch coords).

    Args:
        pred: a ``Prediction`` with ``detections`` (row, cls, x1..y2, score) and the
            counted ``det_nmi/det_mycn/det_cluster`` columns in ``table``.
        boxes: ground truth with ``patch_row, cls, x1, y1, x2, y2``.
        n: number of patches.
    """
    from genuine_core.models import CLASS_NAMES

    det = pred.detections
    ap = {}
    for cls, key in CLASS_NAMES.items():
        d = det[det["cls"] == cls]
        g = boxes[boxes["cls"] == cls]
        dg = {r: grp for r, grp in d.groupby("row")}
        gg = {r: grp for r, grp in g.groupby("patch_row")}
        pb = [dg[i][["x1", "y1", "x2", "y2"]].to_numpy() if i in dg else np.zeros((0, 4)) for i in range(n)]
        ps = [dg[i]["score"].to_numpy() if i in dg else np.zeros(0) for i in range(n)]
        gb = [gg[i][["x1", "y1", "x2", "y2"]].to_numpy() if i in gg else np.zeros((0, 4)) for i in range(n)]
        ap[key] = average_precision(pb, ps, gb, iou=0.5)
    pred_counts = pred.table[["det_nmi", "det_mycn", "det_cluster"]].to_numpy().astype(np.int64)
    vals = [v for v in ap.values() if not np.isnan(v)]
    return {"ap50": ap, "map50": float(np.mean(vals)) if vals else None,
            "count_accuracy": count_accuracy(pred_counts, true_counts(boxes["patch_row"], boxes["cls"], n))}


# ----------------------------------------------------------------------------- main entry
def evaluate_model(folder: Path, data: Path, splits: dict[str, Any], probes: ProbeSet | None,
                   nominal: dict[str, float], bar=None) -> dict[str, Any]:
    """All measurements for one model folder (see the module docstring).

    ``bar``: a tqdm bar advanced by one per unit of work (test split, mixtures, each probe sweep); none
    by default.
    """
    bar = tqdm(disable=True) if bar is None else bar
    shown = not bar.disable  # the predictions' own per-batch bars too
    bar.set_postfix_str(f"{folder.name}: test split")
    info = model_info(folder)
    model = load_model(folder)
    res = {**info, "label": _label(info)}
    test = splits["test"]
    t0 = time.perf_counter()
    min_score = model.config.detector.score_thresh if info["kind"] == "detector" else None
    pred = run_predict(model, test.patches, min_score=min_score, progress=shown)
    secs = time.perf_counter() - t0
    calls = pred.table["call"].to_numpy().astype(np.int64)
    res["speed"] = {"nuclei_per_s": len(calls) / secs if secs > 0 else None, "n": len(calls)}
    res["test_auto"] = binary_metrics(calls, test.nuclei["auto_label"].to_numpy()).to_dict()
    res["test_truth"] = binary_metrics(calls, test.nuclei["true_label"].to_numpy()).to_dict()
    if info["kind"] == "detector":
        res["detector"] = detector_metrics(pred, test.boxes, len(calls))
    bar.update()
    bar.set_postfix_str(f"{folder.name}: mixtures")
    mix = splits["mixture"]
    mpred = run_predict(model, mix.patches, progress=shown)
    res["mixtures"], res["mixture_summary"] = mixture_rows(
        mpred.table["call"].to_numpy().astype(np.int64), mix.nuclei, nominal, info["validation"])
    bar.update()
    if probes is not None:
        for key, what, xs, patches in (("probe_count", "MYCN count probes", probes.count_x, probes.count_patches),
                                       ("probe_size", "signal size probes", probes.size_x, probes.size_patches)):
            bar.set_postfix_str(f"{folder.name}: {what}")
            res[key] = probe_curve(model, xs, patches, progress=shown)
            bar.update()
    logger.info("%s: truth acc %.3f, auto acc %.3f, mixture MAD(true) %.2f pp, crossing %s", res["label"],
                res["test_truth"]["accuracy"] or 0, res["test_auto"]["accuracy"] or 0,
                res["mixture_summary"].get("mad_true", float("nan")),
                (res.get("probe_count") or {}).get("crossing"))
    return res


def acceptance(results: list[dict[str, Any]], shipped: str | None) -> dict[str, Any] | None:
    """Issue 3 targets for the shipped GENUINE model (by folder name; default: the
    GENUINE model with the largest beta)."""
    gen = [m for m in results if m["kind"] == "genuine"]
    if shipped:
        gen = [m for m in gen if m["name"] == shipped]
        if not gen:  # judging another model instead would report its numbers as the shipped one's
            raise InputError(f"shipped model {shipped!r} is not a GENUINE model among the evaluated ones")
    if not gen:
        return None
    m = sorted(gen, key=lambda r: (r.get("beta") or 0))[-1] if not shipped else gen[0]
    summ = m.get("mixture_summary", {})
    cross = (m.get("probe_count") or {}).get("crossing")
    truth = m["test_truth"]
    checks = [
        {"target": "ground-truth test accuracy >= 0.97", "value": truth["accuracy"],
         "ok": (truth["accuracy"] or 0) >= 0.97, "n": truth["n"],
         "ci95": list(wilson_interval(truth["tp"] + truth["tn"], truth["n"]))},
        {"target": "mixture mean abs(pred - true) <= 3 pp", "value": summ.get("mad_true"),
         "ok": summ.get("mad_true", 99) <= 3},
        {"target": "no mixture abs(pred - true) > 6 pp", "value": summ.get("max_abs_true"),
         "ok": summ.get("max_abs_true", 99) <= 6},
        {"target": "mean prediction crosses 0.5 between 7 and 9 MYCN (2 NMI)", "value": cross,
         "ok": cross is not None and 7 <= cross <= 9},
    ]
    corrected = {"mad_true": summ.get("mad_true_corrected"), "max_abs_true": summ.get("max_abs_true_corrected")}
    return {"model": m["name"], "checks": checks, "all_ok": all(c["ok"] for c in checks), "corrected": corrected}


def evaluate(model_folders: Sequence[str | Path], data: str | Path, seed: int = 0, probes: bool = True,
             shipped: str | None = None, probe_n: int = PROBE_N, command: str | None = None,
             progress: bool | None = None) -> dict[str, Any]:
    """Evaluate several model folders on one benchmark; return the results dict.

    Args:
        model_folders: model folders (any kinds, mixed betas).
        data: benchmark folder.
        seed: seeds the probe nuclei.
        probes: compute the Figure 4 probe curves.
        shipped: folder name of the model the acceptance targets apply to.
        probe_n: probe nuclei per condition (paper: 50).
        command: the command line, recorded in the report.
        progress: a progress bar on stderr over the units of work (the probe nuclei; per model the test
            split, the mixtures and each probe sweep): True always (``genuine evaluate`` passes it unless
            ``--quiet``, so a log file gets the bar too), False never, None (the default) only when stderr is a
            terminal. The results do not depend on it.

    Raises:
        InputError: missing benchmark or model folder, mismatched patch sizes or normalisations.
    """
    data = Path(data)
    if not (data / "nuclei.parquet").is_file():
        raise InputError(f"{data} is not a benchmark folder; make one with: "
                         "genuine synth benchmark --size cpu --seed 0 --out data/bench_cpu")
    folders = [Path(f) for f in model_folders]
    from genuine_core.models.folder import check_finished, verify_folder

    for f in folders:
        if not (f / "config.json").is_file():
            raise InputError(f"not a model folder (no config.json): {f}")
        if not _read_json(f / "config.json"):  # unreadable: say whether the folder was altered after saving
            verify_folder(f)
            raise InputError(f"{f}: config.json is not a model configuration")
        check_finished(f)  # an interrupted training run is refused before any work (load_model refuses it too)
    splits = {s: _benchmark(data, s) for s in ("test", "mixture")}
    for f in folders:
        norm = _read_json(f / "config.json").get("patch_normalisation", LEGACY_NORMALISATION)
        if norm != splits["test"].normalisation:
            raise InputError(f"{f} expects {norm!r}-normalised patches, but {data} holds "
                             f"{splits['test'].normalisation!r}-normalised ones; evaluate it on a benchmark "
                             f"made with: genuine synth benchmark --normalisation {norm}")
    nominal = nominal_fractions(data, splits["mixture"].nuclei)
    units = len(folders) * (4 if probes else 2) + (1 if probes else 0)
    hide = (not progress) if progress is not None else None
    with tqdm(total=units, desc="evaluate", unit="step", disable=hide) as bar:
        probe_set = None
        if probes:
            bar.set_postfix_str("probe nuclei")
            p = int(splits["test"].patches.shape[-1])
            probe_set = build_probes(data, np.random.default_rng(seed), p, n=probe_n)
            bar.update()
        results = [evaluate_model(f, data, splits, probe_set, nominal, bar) for f in folders]
    from training.provenance import benchmark_identity, split_identity, versions

    bcfg = _read_json(data / "config.json")
    meta = {"data": str(data), "benchmark_seed": bcfg.get("seed"), "benchmark_size": (bcfg.get("size") or {}).get("name") if isinstance(bcfg.get("size"), dict)
            else bcfg.get("size"),
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command or "genuine evaluate", "probe_seed": seed, "probe_n": probe_n,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "n_test": int(len(splits["test"].patches)), "n_mixture": int(len(splits["mixture"].patches)),
            "benchmark": benchmark_identity(data),
            "splits": {k: split_identity(k, v.nuclei) for k, v in splits.items()}, "versions": versions()}
    out = {"meta": meta, "models": results, "acceptance": acceptance(results, shipped)}
    from training.report import ordering_sentence

    out["ordering"] = ordering_sentence(out)
    return out


def merge_results(parts: Sequence[dict[str, Any]], shipped: str | None = None,
                  command: str | None = None, notes: Sequence[str] = ()) -> dict[str, Any]:
    """Combine results of several ``evaluate`` runs on the same benchmark (e.g. one process per
    model, run in parallel) into one results dict with acceptance and ordering recomputed, and
    the mixtures' corrected prevalences recomputed from their counts.

    ``shipped`` None keeps the model the parts' acceptance tables named, when they agree on one that is
    merged; else the default of :func:`acceptance`.

    Raises:
        InputError: no parts, parts from different benchmarks or probe seeds, or one model in two parts.
    """
    if not parts:
        raise InputError("nothing to merge")
    # the benchmark by what it is (seed, size, split sizes), not where it lies: one benchmark may be
    # evaluated under two paths, and two benchmarks may share a folder name
    keys = {tuple(p["meta"].get(k) for k in ("benchmark_seed", "benchmark_size", "n_test", "n_mixture",
                                               "probe_seed", "probe_n")) for p in parts}
    if len(keys) > 1:
        raise InputError(f"cannot merge results of different benchmarks / probe settings: {sorted(map(str, keys))}")
    shas = {(p["meta"].get("benchmark") or {}).get("sha256") for p in parts} - {None}  # older reports lack it
    if len(shas) > 1:
        raise InputError(f"cannot merge results of different benchmarks: their nuclei.parquet sha256 differ "
                         f"({', '.join(sorted(s[:12] for s in shas))})")
    models = [dict(m) for p in parts for m in p["models"]]
    names = [m.get("name") for m in models]
    twice = sorted({n for n in names if names.count(n) > 1}, key=str)
    if twice:
        raise InputError(f"model {', '.join(map(str, twice))} is in more than one of the merged reports; merge each "
                         "model's evaluation once")
    if shipped is None:
        named = {(p.get("acceptance") or {}).get("model") for p in parts} - {None}
        shipped = named.pop() if len(named) == 1 and named <= set(names) else None
    for m in models:  # corrected columns by the current estimator (the counts behind them are in the rows)
        if m.get("mixtures"):
            m["mixtures"], m["mixture_summary"] = correct_mixture_rows(m["mixtures"], m.get("validation") or {})
    meta = dict(parts[0]["meta"])
    meta["command"] = command or meta.get("command")
    meta["generated"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # when this report was written
    # a part that is itself a merge contributes the evaluation runs it was merged from
    meta["merged_from"] = [c for p in parts for c in p["meta"].get("merged_from", [p["meta"].get("command")])]
    out = {"meta": meta, "models": models, "acceptance": acceptance(models, shipped), "notes": list(notes)}
    from training.report import ordering_sentence

    out["ordering"] = ordering_sentence(out)
    return out
