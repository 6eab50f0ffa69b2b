"""Exports: a sample report, curated labels (a table, or a training set), the audit trail.

These functions write over files of the same name (the dashboard exports into fresh
temporary folders); ``genuine export`` refuses existing files unless ``--overwrite``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from genuine_core import atomic
from genuine_core.commands.checks import output_folder
from genuine_core.errors import InputError, StoreError
from genuine_core.percent_text import pct_text
from genuine_core.pipeline import center_crop, decode_patch
from store import agreement, labels, registry, report_format, samples, scans, signout, summary, uncertainty
from store.db import Store
from store.nuclei import nucleus_predictions, patch_bytes, sample_nuclei


def _wide_nuclei(store: Store, sample: str) -> pd.DataFrame:
    """One row per nucleus of a sample, with each model's prediction in its own columns."""
    base = sample_nuclei(store, sample).drop(
        columns=["prob", "prob_calibrated", "uncertainty", "call", "det_nmi", "det_mycn", "det_cluster"])
    preds = nucleus_predictions(store, base["nucleus_id"])
    if len(preds):
        wide = preds.pivot(index="nucleus_id", columns="model",
                           values=["prob", "prob_calibrated", "uncertainty", "mc_samples", "call", "det_nmi",
                                   "det_mycn", "det_cluster"])
        wide.columns = [f"{value}__{model}" for value, model in wide.columns]
        wide = wide.dropna(axis=1, how="all").reset_index()
        base = base.merge(wide, on="nucleus_id", how="left")
    return base


def _fmt(v, digits: int = 1) -> str:
    """A report cell: '-' for a missing value, floats with ``digits`` decimals, lists joined."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, list):
        return ", ".join(v) or "-"
    return str(v)


#: the files ``export_sample`` writes into its folder, in the order it returns them
SAMPLE_FILES = ("nuclei.csv", "nuclei.parquet", "summary.csv", "summary.md", "summary.html")

_REPORT_COLUMNS = [("model", "model"), ("n_scored", "nuclei"), ("mna_pct", "MNA %"), ("ci_low_pct", "95% CI low"),
                   ("ci_high_pct", "95% CI high"), ("corrected_pct", "corrected %"),
                   ("corrected_low_pct", "corrected CI low"), ("corrected_high_pct", "corrected CI high"),
                   ("expected_pct", "expected %"),
                   ("deviation_pp", "deviation (pp)"), ("true_mna_pct", "true MNA %"), ("call", "call"),
                   ("qc_flags", "QC flags")]


#: closes every sample report: what the numbers mean
REPORT_NOTE = ("MNA % is the share of scored nuclei the model calls MNA (Wilson 95 % interval); the corrected "
               "estimate removes the model's validation error rates (Rogan-Gladen; its interval also carries the "
               "uncertainty of those rates, Lang & Reiczigel 2014). Calls follow "
               "genuine_core.rules.sample_call (INRG consensus, Ambros et al. 2009: at least 50 nuclei; MNA when "
               "more than 20 % of them are called MNA, after the Children's Oncology Group, Campbell et al. 2020; "
               "heterogeneous MNA at 20 % or fewer but at least 5 nuclei, after Theissen et al. 2009, when the MNA "
               "calls exceed what the model's false-positive rate explains). "
               "Nuclei a curator excluded are not scored; a curator's relabelling does not change the model's "
               "calls or these numbers (curated labels train the next model).")


def export_sample(store: Store, sample: str, out_dir: str | Path, model: str | None = None,
                  prepared_by: str | None = None) -> list[Path]:
    """Write a sample report folder.

    Files: ``nuclei.csv`` and ``nuclei.parquet`` (one row per nucleus: position, size,
    intensities, labels, and per model ``prob__<model>``, ``call__<model>``, ``uncertainty__<model>`` with
    ``mc_samples__<model>``, the MC-dropout passes it is the std over (0: an entropy; left out: not recorded) ...),
    ``summary.csv`` (the sample summaries), ``summary.md`` and ``summary.html``.

    Args:
        model: the model whose call the report gives first (call, MNA % with its interval);
            every model stays in the table.
        prepared_by: name stated on the report.

    Raises:
        StoreError: no such sample, or ``model`` has no call for it (none of its nuclei scored, or all excluded).
    """
    info = samples.get_sample(store, sample)
    if info is None:
        raise StoreError(f"no sample named {sample!r}; samples: {samples.name_list(store)}")
    if model is not None:
        known = registry.list_models(store)["name"].tolist()
        if model not in known:
            raise StoreError(f"no model named {model!r}; registered: {', '.join(known) or 'none'}")
    summ = summary.sample_summaries(store, sample=sample)
    chosen = summ[summ["model"] == model]
    nuclei = _wide_nuclei(store, sample)
    if model is not None and chosen.empty:
        raise StoreError(f"model {model!r} has no call for sample {sample!r}: "
                         + (_no_call_reason(nuclei) if summ.empty else "it has scored none of its nuclei"))
    out = output_folder(out_dir, "output")
    flat = summ.copy()
    flat["qc_flags"] = flat["qc_flags"].map(lambda f: "; ".join(f))

    facts = _report_facts(sample, info, nuclei, None if model is None else (model, chosen.iloc[0]), prepared_by)
    if summ.empty:  # an empty table alone would not say that no model calls the sample
        facts.insert(0, ("call", f"none: {_no_call_reason(nuclei)}"))
    elif model is None:  # no model chosen: every model's call, so the report still opens with one
        facts.insert(0, ("call (each model)", _each_call(summ)))
    trail = signout.history(store, sample)
    at = 2 if model is not None else 1  # after the call the report opens with
    facts[at:at] = _sign_out_facts(store, trail, summ)
    sections = _report_sections(store, sample, summ) + _sign_out_sections(trail)
    title = f"Sample report: {sample}"
    with atomic.staged_into(out) as stage:  # a full disk leaves no half report (and an earlier one whole)
        files = [stage / name for name in SAMPLE_FILES]
        nuclei.to_csv(files[0], index=False)
        nuclei.to_parquet(files[1], index=False)
        flat.to_csv(files[2], index=False)
        files[3].write_text(report_format.markdown(title, facts, sections, REPORT_NOTE), encoding="utf-8")
        files[4].write_text(report_format.html_page(title, facts, sections, REPORT_NOTE), encoding="utf-8")
    return [out / name for name in SAMPLE_FILES]


def _each_call(summ: pd.DataFrame) -> str:
    """Every model's call on the sample: 'm1: MNA; m2 (retired): non-MNA'."""
    return "; ".join(f"{r['model']}{' (retired)' if r['retired'] else ''}: {_fmt(r['call'])}"
                     for r in summ.to_dict("records"))


def _sign_out_facts(store: Store, trail: pd.DataFrame, summ: pd.DataFrame) -> list[tuple[str, str]]:
    """'signed out' (the pathologist's call in force, or 'not signed out', ``signout.status_text``) and, when the
    numbers moved since, 'changed since sign-out' (from ``trail``, the sample's sign-out history)."""
    last = None if trail.empty else trail.iloc[-1].to_dict()
    facts = [("signed out", signout.status_text(last))]
    if last is not None and last["action"] == "sign out":
        changes = signout.in_force(store, summ, trail)["changes"].iloc[0]
        if changes:
            facts.append(("changed since sign-out", "; ".join(changes)))
    return facts


def _sign_out_sections(trail: pd.DataFrame) -> list[report_format.Section]:
    """Every sign-out and withdrawal of the sample, oldest first (none: no section)."""
    if trail.empty:
        return []
    rows = [[str(r["created_at"])[:16], r["action"], _fmt(signout.call_text(r) or None), r["by_user"],
             signout.numbers_text(r) if r["action"] == "sign out" else "-", _fmt(r["comment"])]
            for r in trail.to_dict("records")]
    return [("Sign-out history", ["when (UTC)", "action", "call", "by", "numbers", "comment"], rows)]


def _no_call_reason(nuclei: pd.DataFrame) -> str:
    """Why no model calls a sample with these nuclei (``_wide_nuclei``)."""
    if nuclei.empty:
        return "the sample holds no nucleus"
    if nuclei["excluded"].all():
        return f"a curator excluded all {len(nuclei)} of its nuclei, so none is scored"
    return "no model has scored its nuclei"


def _report_facts(sample: str, info: dict, nuclei: pd.DataFrame, chosen: tuple[str, pd.Series] | None,
                  prepared_by: str | None) -> list[tuple[str, str]]:
    """The report's opening list: the chosen model's call and MNA % first (``chosen`` = (model, its
    summary row)), then the sample, its nuclei and curation, the export time and who prepared it."""
    n_excluded = int(nuclei["excluded"].sum())
    n_curated = int(nuclei["curated_label"].notna().sum()) + n_excluded
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    expected = "-" if info["expected_mna"] is None else f"{100 * info['expected_mna']:.1f} %"
    facts = [("sample", sample), ("kind", info["kind"]), ("genotype", info.get("genotype") or "-"),
             ("expected MNA", expected), ("scans", str(nuclei["scan_id"].nunique())),
             ("nuclei", f"{len(nuclei)}" + (f" ({n_excluded} excluded by a curator, {len(nuclei) - n_excluded} scored)"
                                            if n_excluded else "")),
             ("curated nuclei", str(n_curated)), ("exported", when)]
    if chosen is not None:
        model, r = chosen
        p = {c: pct_text(r[c]) for c in r.index if c.endswith("_pct")}
        corrected = ("" if p["corrected_pct"] == "-" else f"; corrected {p['corrected_pct']} % "
                     f"(95 % CI {p['corrected_low_pct']}-{p['corrected_high_pct']} %)")
        facts[:0] = [(f"call ({model})", _fmt(r["call"])),
                     (f"MNA % ({model})",
                      f"{p['mna_pct']} % (95 % CI {p['ci_low_pct']}-{p['ci_high_pct']} %{corrected})")]
    facts.append(("prepared by", prepared_by.strip() if prepared_by and prepared_by.strip()
                  else "not signed (no reviewer name given)"))
    return facts


def _report_sections(store: Store, sample: str, summ: pd.DataFrame) -> list[report_format.Section]:
    """Per-model numbers, the QC flags raised (when any) with the models raising them, how each scan
    was read, and the models' checksums, status and uncertainty (with its MC-dropout passes)."""
    per_model = ("Per model", [h for _, h in _REPORT_COLUMNS],
                 [[(pct_text(r[c]) if c.endswith("_pct") else _fmt(r[c]))
                   + (" (retired)" if c == "model" and r["retired"] else "") for c, _ in _REPORT_COLUMNS]
                  for r in summ.to_dict("records")])
    flags = sorted({f for fs in summ["qc_flags"] for f in fs})
    raised_by = {f: [m for m, fs in zip(summ["model"], summ["qc_flags"]) if f in fs] for f in flags}
    explained = [(f"{f} ({', '.join(raised_by[f])})", summary.QC_FLAGS.get(f, "")) for f in flags]
    scan_rows = [[str(c["id"]), c["file_name"], c["channel_map"], c["backend"] or "-", str(c["n_nuclei"]),
                  str(c["ingested_at"])[:16], c["sha256"]] for c in scans.scan_overview(store, sample).to_dict("records")]
    models = registry.list_models(store).set_index("name").loc[list(dict.fromkeys(summ["model"]))]
    passes = uncertainty.passes_by_model(store, sample)
    model_rows = [[name, m["kind"], m["preset"] or "-", m["checksum"] or "-", str(m["registered_at"])[:16],
                   "active" if pd.isna(m["retired_at"]) else registry.retired_text(m["retired_at"], m["retired_by"]),
                   uncertainty.describe(m["uncertainty_method"], passes.get(name, []))]
                  for name, m in models.iterrows()]
    return [per_model, *([("QC flags", None, explained)] if flags else []),
            ("Scans (how each was read)",
             ["scan", "file", "channel map", "segmentation", "nuclei", "ingested (UTC)", "file SHA-256"], scan_rows),
            ("Models", ["model", "kind", "preset", "model folder checksum (SHA-256 of its checksum.sha256)",
                        "registered", "status", "uncertainty (of this sample's nuclei)"], model_rows)]


def curated_table(store: Store) -> pd.DataFrame:
    """The current curated labels (the Review page's CSV): ``labels.current_labels`` with where each nucleus
    comes from, ``reviewers_disagreed`` (its reviewers' latest reviews differ, ``store.agreement``) and
    ``conflict`` ('open', 'settled' or '')."""
    from store.nuclei import nucleus_info

    cur = labels.current_labels(store)
    info = nucleus_info(store, cur["nucleus_id"].tolist()) if len(cur) else pd.DataFrame(columns=["nucleus_id"])
    keep = ["nucleus_id", "sample", "scan_file", "mask_label", "cy", "cx", "auto_label", "true_label"]
    table = cur.merge(info[[c for c in keep if c in info.columns]], on="nucleus_id", how="left")
    states = agreement.conflict_states(store, table["nucleus_id"]).to_numpy()
    table["reviewers_disagreed"] = states != "none"
    table["conflict"] = np.where(states == "none", "", states)
    return table


def curated_rows(store: Store, sample: str | None = None) -> pd.DataFrame:
    """The curated nuclei a training set holds (excluded ones left out), one row each: nucleus_id, label,
    sha256, mask_label, true_label, patch_normalisation. Cheap (no patches): callers check with it whether
    :func:`curated_training_set` would succeed.

    Raises:
        StoreError: no curated labels, or curated nuclei of scans whose patches were
            normalised differently (they cannot form one training set).
    """
    if sample is not None and samples.get_sample(store, sample) is None:
        raise StoreError(f"no sample named {sample!r}; samples: {samples.name_list(store)}")
    cur = store.query(
        """
        SELECT cl.nucleus_id, cl.label, c.sha256, n.mask_label, n.true_label, c.patch_normalisation
        FROM curated_labels cl
        JOIN nuclei n ON n.id = cl.nucleus_id
        JOIN scans c ON c.id = n.scan_id
        JOIN samples s ON s.id = c.sample_id
        WHERE NOT cl.excluded AND (? IS NULL OR s.name = ?)
        ORDER BY cl.nucleus_id
        """,
        [sample, sample],
    )
    if cur.empty:
        raise StoreError("no curated labels to export" + (f" in sample {sample!r}" if sample else "")
                         + " (excluded nuclei are left out)")
    norms = sorted(cur["patch_normalisation"].unique())
    if len(norms) > 1:
        raise StoreError(f"the curated nuclei come from scans whose patches were normalised differently ({norms}); "
                         "export one sample at a time (--sample)")
    return cur


def curated_training_set(store: Store, sample: str | None = None):
    """Curated labels (excluded nuclei left out) with their patches as ``training.labelled.LabelledPatches``.

    Patches of scans stored at different sizes are centre-cropped to the smallest.
    ``true_label`` carries the synthetic ground truth where known (else -1);
    ``nucleus_key`` is ``<scan sha256>:<mask label>`` (stable across stores); the set's
    ``normalisation`` is the one the scans' patches were cut with; ``reviewers_disagreed`` marks
    nuclei whose reviewers disagreed (``store.agreement``).

    Raises:
        StoreError: see :func:`curated_rows`.
    """
    from training.labelled import LabelledPatches

    cur = curated_rows(store, sample)
    blobs = patch_bytes(store, cur["nucleus_id"])
    patches = [decode_patch(blobs[int(i)]) for i in cur["nucleus_id"]]
    size = min(p.shape[-1] for p in patches)
    arr = np.stack([center_crop(p[None], size)[0] for p in patches]).astype(np.float16)
    keys = (cur["sha256"] + ":" + cur["mask_label"].astype(str)).to_numpy()
    true = cur["true_label"].fillna(-1).astype(int).to_numpy()
    return LabelledPatches(arr, cur["label"].astype(int).to_numpy(), None,
                           np.full(len(cur), "curated"), true, keys, cur["patch_normalisation"].iloc[0],
                           agreement.disagreed(store, cur["nucleus_id"]).to_numpy())


def export_labels(store: Store, out: str | Path, sample: str | None = None) -> Path:
    """Write curated labels as a training set ``genuine train`` reads (``.npz`` or ``.parquet``).

    Raises:
        InputError: other suffix. StoreError: nothing curated.
    """
    out = Path(out)
    if out.suffix not in (".npz", ".parquet"):
        raise InputError(f"training-set file must end in .npz or .parquet, got {out.name}")
    data = curated_training_set(store, sample)
    return data.save(out) if out.suffix == ".npz" else data.save_parquet(out)


#: file types ``export_audit`` writes (JSON lines for .jsonl and .json)
AUDIT_SUFFIXES = (".csv", ".parquet", ".jsonl", ".json")


def export_audit(store: Store, out: str | Path) -> Path:
    """Write every label event (``labels.audit_trail``) as CSV, Parquet or JSON lines (by suffix).

    Raises:
        InputError: other suffix. StoreError: no label events.
    """
    out = Path(out)
    if out.suffix not in AUDIT_SUFFIXES:  # before anything is created
        raise InputError(f"audit export must end in .csv, .parquet or .jsonl, got {out.name}")
    trail = labels.audit_trail(store)
    if trail.empty:  # as export_labels: nothing written
        raise StoreError("no label events to export")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(out) as tmp:  # a refused write leaves an earlier export whole
        if out.suffix == ".csv":
            trail.to_csv(tmp, index=False)
        elif out.suffix == ".parquet":
            trail.to_parquet(tmp, index=False)
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in trail.to_dict("records"):
                    fh.write(json.dumps(rec, default=str) + "\n")
    return out
