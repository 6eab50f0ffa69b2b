"""A registered model's held-out test figures, from the evaluation reports that name its weights.

``genuine evaluate`` writes ``evaluation.json`` with each model's checksum (``folder_digest``, as the store
registers it) and the benchmark's and its splits' identities. The Models page looks through the reports
folder (``reports/`` of the repository, or ``$GENUINE_REPORTS``) for entries with a registered model's
checksum and shows their test-split figures; a report written before evaluate recorded checksums cannot be
matched to a model, and the page says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

#: environment variable naming another reports folder (default: the repository's ``reports/``)
REPORTS_ENV = "GENUINE_REPORTS"
#: most JSON files read from a reports folder (a folder of other files is not searched for long)
MAX_REPORTS = 200
#: the report's label sets, as the page names them
LABELS = {"test_truth": "ground truth", "test_auto": "automatic (Cohn rule) labels"}


def reports_folder() -> Path:
    """``$GENUINE_REPORTS``, else the repository's ``reports/``."""
    env = os.environ.get(REPORTS_ENV, "").strip()
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "reports"


@dataclass(frozen=True)
class ReportMatch:
    """One report entry of a model: the report file, its ``meta`` and the model's entry in ``models``."""

    path: Path
    meta: dict
    entry: dict


@dataclass(frozen=True)
class ReportSearch:
    """What a search of the reports folder found: the matches, how many reports were read, and how many of
    them record no model checksums (written before evaluate recorded them)."""

    folder: Path
    matches: list[ReportMatch]
    n_reports: int
    n_without_checksums: int


def evaluation_reports(folder: Path) -> list[tuple[Path, dict]]:
    """The evaluation reports (JSON with ``meta`` and a ``models`` list) under ``folder``, by path; unreadable
    or other JSON files are skipped."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob("*.json"))[:MAX_REPORTS]:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("meta"), dict) and isinstance(doc.get("models"), list):
            found.append((path, doc))
    return found


def find_test_figures(checksum: str, folder: Path | None = None) -> ReportSearch:
    """Every report entry under ``folder`` (default :func:`reports_folder`) whose model checksum is
    ``checksum``, newest report first."""
    folder = reports_folder() if folder is None else Path(folder)
    reports = evaluation_reports(folder)
    matches, without = [], 0
    for path, doc in reports:
        entries = [m for m in doc["models"] if isinstance(m, dict)]
        if not any(m.get("checksum") for m in entries):
            without += 1
        matches += [ReportMatch(path, doc["meta"], m) for m in entries if checksum and m.get("checksum") == checksum]
    matches.sort(key=lambda m: str(m.meta.get("generated") or ""), reverse=True)
    return ReportSearch(folder, matches, len(reports), without)


def _pct(value) -> str:
    return "–" if value is None else f"{100 * float(value):.2f} %"


def figures_table(entry: dict) -> pd.DataFrame:
    """The entry's test-split figures, one row per label set: nuclei, accuracy with its Wilson 95 % interval,
    TPR and TNR (as percentages)."""
    from genuine_core.stats import wilson_interval

    rows = []
    for key, name in LABELS.items():
        m = entry.get(key)
        if not isinstance(m, dict):
            continue
        ci = "–"
        if m.get("n") and m.get("tp") is not None and m.get("tn") is not None:
            lo, hi = wilson_interval(int(m["tp"]) + int(m["tn"]), int(m["n"]))
            ci = f"{100 * lo:.1f}-{100 * hi:.1f} %"
        rows.append({"against": name, "nuclei": m.get("n"), "accuracy": _pct(m.get("accuracy")), "95 % CI": ci,
                     "TPR": _pct(m.get("tpr")), "TNR": _pct(m.get("tnr"))})
    return pd.DataFrame(rows, columns=["against", "nuclei", "accuracy", "95 % CI", "TPR", "TNR"])


def source_text(match: ReportMatch, shown_from: Path | None = None) -> str:
    """Where the figures come from: the report file, when and by which command it was written, the benchmark
    and the test split's identity."""
    meta = match.meta
    path = match.path
    if shown_from is not None:
        try:
            path = match.path.relative_to(shown_from.parent)
        except ValueError:
            pass
    bench = meta.get("benchmark") or {}
    split = (meta.get("splits") or {}).get("test") or {}
    parts = [f"From `{path}` (entry `{match.entry.get('name', '?')}`), written {meta.get('generated', '?')} by "
             f"`{meta.get('command', 'genuine evaluate')}`"]
    what = f"benchmark `{meta.get('data', '?')}` (seed {meta.get('benchmark_seed', '?')}, size " \
           f"{meta.get('benchmark_size', '?')}"
    if bench.get("sha256"):
        what += f", nuclei.parquet sha256 {bench['sha256'][:12]}…"
    parts.append(what + ")")
    if split.get("sha256"):
        parts.append(f"test split of {split.get('n', '?')} nuclei, sha256 {split['sha256'][:12]}…")
    elif meta.get("n_test") is not None:
        parts.append(f"test split of {meta['n_test']} nuclei")
    return "; ".join(parts) + ". The model's weights checksum matches the report's."


def summary_extras(entry: dict) -> dict[str, Any]:
    """The report's other headline figures of the model: mixture error and the MYCN-count probe's crossing."""
    out: dict[str, Any] = {}
    mix = entry.get("mixture_summary") or {}
    if mix.get("mad_true") is not None:
        out["mixtures: mean |pred - true| (pp)"] = round(float(mix["mad_true"]), 2)
    cross = (entry.get("probe_count") or {}).get("crossing")
    if cross is not None:
        out["MYCN-count probe crosses 0.5 at"] = round(float(cross), 2)
    return out
