"""Ingest: scan files in, one committed transaction per scan out.

For each file: hash it (a scan already stored is skipped with a message), run
``genuine_core.pipeline.process_scan`` (read, segment, patches, every model), then
``store.scans.write_scan_result`` in one transaction. A file that fails is reported
and skipped; the rest of the batch goes on. Synthetic benchmark fields additionally
get their ground truth: segmented nuclei are matched to ground-truth nuclei by mask
overlap and carry the generator's auto and true labels.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genuine_core.errors import GenuineError, InputError
from genuine_core.pipeline import (ScanResult, ScoringModel, load_model, match_truth, model_folders,
                                   process_scan, sha256_file)
from store import registry, samples
from store.db import Store
from store.scans import scan_by_sha, write_scan_result

logger = logging.getLogger(__name__)


@dataclass
class FileOutcome:
    """What happened to one file: ``status`` is ``stored``, ``duplicate`` or ``failed``."""

    path: str
    status: str
    message: str = ""
    scan_id: int | None = None
    n_nuclei: int = 0
    seconds: float = 0.0
    stages: dict = field(default_factory=dict)


@dataclass
class IngestReport:
    """Outcome of a batch."""

    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        """Files with this status."""
        return sum(o.status == status for o in self.outcomes)

    @property
    def n_nuclei(self) -> int:
        """Nuclei stored by this batch."""
        return sum(o.n_nuclei for o in self.outcomes if o.status == "stored")

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 2 when every file failed, 1 otherwise."""
        failed = self.count("failed")
        if failed == 0:
            return 0
        return 2 if failed == len(self.outcomes) else 1

    def lines(self) -> list[str]:
        """One human-readable line per file plus a total."""
        out = [f"{o.status:9s} {o.path}: {o.message}" for o in self.outcomes]
        rate = self.n_nuclei / self.seconds if self.seconds > 0 else 0.0
        out.append(f"{self.count('stored')} stored, {self.count('duplicate')} already stored, "
                   f"{self.count('failed')} failed; {self.n_nuclei} nuclei in {self.seconds:.1f} s ({rate:.1f} nuclei/s)")
        return out


def resolve_models(store: Store, folders: Sequence[str | Path] | None = None,
                   loader: Callable[[Path], ScoringModel] = load_model) -> list[ScoringModel]:
    """The models an ingest runs.

    Args:
        folders: model folders (or folders of model folders) given by the user. When
            None: the models registered in the store (from their recorded folders), or,
            for a store without models, the shipped models under ``models/``.
        loader: folder -> ScoringModel (tests pass fakes).

    Raises:
        ModelLoadError: a folder cannot be loaded.
        InputError: a given folder holds no model.
    """
    paths: list[Path] = []
    if folders:
        for f in folders:
            found = model_folders(f)
            if not found:
                raise InputError(f"{f}: no model folder found (config.json with a model kind, and weights)")
            paths.extend(found)
    else:
        reg = registry.list_models(store)
        paths = [Path(p) for p in reg["folder"].dropna()] if len(reg) else model_folders()
    models = [loader(p) for p in paths]
    names = [m.name for m in models]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InputError(f"two model folders share the name(s) {sorted(dup)}")
    return models


def _auto_labels(result: ScanResult, genotype: str | None) -> pd.DataFrame | None:
    label = samples.genotype_label(genotype)
    if label is None or result.n_nuclei == 0:
        return None
    return pd.DataFrame({"mask_label": result.nuclei["mask_label"].to_numpy(np.int64), "kind": "auto",
                         "label": label, "source": "genotype"})


def _ingest_one(store: Store, path: Path, sample_id: int, genotype: str | None, models: Sequence[ScoringModel],
                model_ids: dict[str, int], process_kwargs: dict, truth_fn=None, split: str | None = None,
                acquisition: dict | None = None) -> FileOutcome:
    t0 = time.perf_counter()
    name = str(path)
    try:
        sha = sha256_file(path)
        known = scan_by_sha(store, sha)
        if known:
            return FileOutcome(name, "duplicate", f"already stored as scan {known['id']} in sample "
                               f"{known['sample']!r} (same sha256); nothing written", known["id"])
        result = process_scan(path, models, acquisition=acquisition, **process_kwargs)
        labels = _auto_labels(result, genotype)
        truth = None
        if truth_fn is not None:
            truth, truth_labels = truth_fn(result)
            if labels is not None:  # the generator's per-nucleus auto label wins where matched
                matched = truth_labels.loc[truth_labels["kind"] == "auto", "mask_label"]
                labels = labels[~labels["mask_label"].isin(matched)]
            labels = pd.concat([x for x in (labels, truth_labels) if x is not None], ignore_index=True)
        t_write = time.perf_counter()
        scan_id = write_scan_result(store, sample_id, result, model_ids, labels=labels, truth=truth, split=split)
        stages = dict(result.seconds, write=time.perf_counter() - t_write)
    except GenuineError as exc:
        return FileOutcome(name, "failed", str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:  # a bug or an unexpected library error: report, keep the batch going
        logger.exception("ingest of %s failed", name)
        return FileOutcome(name, "failed", f"unexpected error: {type(exc).__name__}: {exc}",
                           seconds=time.perf_counter() - t0)
    dt = time.perf_counter() - t0
    if scan_id is None:
        return FileOutcome(name, "duplicate", "stored meanwhile by another writer; nothing written", seconds=dt)
    msg = f"scan {scan_id}: {result.n_nuclei} nuclei ({result.n_border_skipped} at the border skipped), " \
          f"{len(models)} models, {dt:.1f} s"
    return FileOutcome(name, "stored", msg, scan_id, result.n_nuclei, dt, stages)


def _register(store: Store, models: Sequence[ScoringModel]) -> dict[str, int]:
    return {m.name: registry.register_model(store, m) for m in models}


def ingest_files(store: Store, paths: Sequence[str | Path], sample: str, kind: str | None = None,
                 expected: float | None = None, genotype: str | None = None,
                 models: Sequence[ScoringModel] = (), channel_map=None, backend: str | None = None,
                 segment_kwargs: dict | None = None, segmenter=None, acquisition: dict | None = None,
                 progress: bool = True, place_umap: bool = True) -> IngestReport:
    """Ingest scan files into one sample.

    Args:
        store: writable store.
        paths: scan files.
        sample: sample name (created when missing; see ``samples.ensure_sample``).
        kind, expected, genotype: sample attributes (checked against an existing sample).
        models: models to run (see :func:`resolve_models`); registered on the way.
        channel_map: ``genuine_core.io.ChannelMap`` for the files (None: RGB).
        backend, segment_kwargs, segmenter: segmentation settings (see ``process_scan``).
        acquisition: metadata recorded with every scan.
        progress: tqdm bars (overall and per scan).
        place_umap: place the new nuclei on every fitted UMAP afterwards.

    Returns:
        IngestReport (one outcome per file, in order).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    sid = samples.ensure_sample(store, sample, kind, expected, genotype)
    genotype = samples.get_sample(store, sample)["genotype"]
    model_ids = _register(store, models)
    kwargs = dict(channel_map=channel_map, backend=backend, segment_kwargs=segment_kwargs, segmenter=segmenter,
                  progress=progress)
    report = IngestReport()
    bar = tqdm(list(paths), desc=f"ingest {sample}", unit="scan", disable=not progress)
    for p in bar:
        outcome = _ingest_one(store, Path(p), sid, genotype, models, model_ids, kwargs, acquisition=acquisition)
        report.outcomes.append(outcome)
        bar.set_postfix(nuclei=report.n_nuclei, failed=report.count("failed"))
        if outcome.status == "failed":
            logger.warning("skipped %s: %s", p, outcome.message)
    bar.close()
    report.seconds = time.perf_counter() - t0
    if place_umap and report.count("stored"):
        _place_on_umaps(store, [m.name for m in models])
    return report


def _place_on_umaps(store: Store, model_names: Sequence[str]) -> None:
    from store import umap as umap_store

    for name in model_names:
        try:
            n = umap_store.place_missing(store, name)
        except GenuineError as exc:
            logger.warning("UMAP placement for %s skipped: %s", name, exc)
            continue
        if n:
            logger.info("placed %d new nuclei on the %s UMAP", n, name)


# -- synthetic benchmark folders ---------------------------------------------------------------


def benchmark_fields(bench_dir: str | Path) -> pd.DataFrame:
    """Fields of a benchmark folder with their sample, split and expected MNA fraction.

    Returns:
        DataFrame ``field_id, path, masks_path, sample, split, kind, expected_mna, genotype``
        (one row per field image that exists), ordered by kind, sample, field.

    Raises:
        InputError: not a benchmark folder.
    """
    bench = Path(bench_dir)
    table = bench / "nuclei.parquet"
    if not table.is_file() or not (bench / "fields").is_dir():
        raise InputError(f"{bench}: not a benchmark folder (needs nuclei.parquet and fields/)")
    nuclei = pd.read_parquet(table, columns=["field_id", "split", "sample", "auto_label"])
    summary = _read_json_file(bench / "summary.json")
    config = _read_json_file(bench / "config.json")
    targets = _mixture_targets(summary)
    line_mna = {str(line["name"]): bool(line["mna"]) for line in config.get("lines", [])
                if isinstance(line, dict) and "name" in line and "mna" in line}
    named = nuclei[nuclei["sample"].astype(str) != ""]  # '' marks surplus mixture nuclei
    auto_share = named.groupby("sample")["auto_label"].mean()
    rows = []
    for field_id, grp in named.groupby("field_id", sort=True):
        img = bench / "fields" / f"{field_id}.tif"
        if not img.is_file():
            continue
        sample_name = str(grp["sample"].mode().iloc[0])
        split = str(grp["split"].iloc[0])
        kind = "mixture" if split == "mixture" else "cell-line"
        if kind == "mixture":
            expected = targets.get(sample_name, float(auto_share.get(sample_name, np.nan)))
            genotype = None
        else:
            mna = line_mna.get(sample_name, bool(round(float(auto_share.get(sample_name, 0.0)))))
            expected, genotype = float(mna), ("MNA" if mna else "non-MNA")
        rows.append({"field_id": str(field_id), "path": str(img),
                     "masks_path": str(bench / "fields" / f"{field_id}_masks.tif"), "sample": sample_name,
                     "split": split, "kind": kind, "expected_mna": expected, "genotype": genotype})
    fields = pd.DataFrame(rows, columns=["field_id", "path", "masks_path", "sample", "split", "kind", "expected_mna",
                                         "genotype"])
    return fields.sort_values(["kind", "sample", "field_id"], kind="stable").reset_index(drop=True)


def _read_json_file(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _mixture_targets(summary: dict) -> dict[str, float]:
    """Sample name -> nominal MNA fraction, from the benchmark's summary.json (several layouts accepted)."""
    out: dict[str, float] = {}
    mix = summary.get("mixtures") or summary.get("mixture_fractions") or {}
    if isinstance(mix, dict):
        for name, v in mix.items():
            if isinstance(v, dict):
                v = v.get("target", v.get("target_fraction", v.get("fraction")))
            if isinstance(v, (int, float)):
                out[str(name)] = float(v) / 100.0 if v > 1 else float(v)
    elif isinstance(mix, list):
        for item in mix:
            if isinstance(item, dict) and "sample" in item:
                v = item.get("target", item.get("target_fraction", item.get("fraction")))
                if isinstance(v, (int, float)):
                    out[str(item["sample"])] = float(v) / 100.0 if v > 1 else float(v)
    return out


def _read_gt_masks(path: str | Path) -> np.ndarray:
    import tifffile

    try:
        masks = tifffile.imread(str(path))
    except Exception as exc:  # tifffile raises several types
        raise InputError(f"{path}: cannot read ground-truth masks ({exc})") from exc
    masks = np.asarray(masks)
    if masks.ndim != 2 or not np.issubdtype(masks.dtype, np.integer):
        raise InputError(f"{path}: ground-truth masks must be a 2-D integer image, got {masks.shape} {masks.dtype}")
    return masks.astype(np.int32, copy=False)


def truth_tables(result: ScanResult, gt_masks: np.ndarray, gt_nuclei: pd.DataFrame,
                 min_iou: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ground truth for the segmented nuclei of a synthetic scan.

    Args:
        result: the processed scan.
        gt_masks: (H, W) ground-truth instance masks of the field.
        gt_nuclei: the field's rows of ``nuclei.parquet`` (``nucleus_id`` = mask label,
            ``auto_label``, ``true_label``, optional ``cell_line, n_nmi, n_mycn, n_cluster, noise``).
        min_iou: smallest mask IoU for a match.

    Returns:
        ``(truth, labels)``: ``truth`` rows ``mask_label, gt_id, match_iou, cell_line, n_nmi,
        n_mycn, n_cluster, noise``; ``labels`` rows ``mask_label, kind, label, source`` with an
        ``auto`` and a ``truth`` label per matched nucleus.
    """
    match = match_truth(result.masks, gt_masks, min_iou)
    match = match[match["mask_label"].isin(result.nuclei["mask_label"])]
    gt = gt_nuclei.set_index("nucleus_id")
    match = match[match["gt_id"].isin(gt.index)]
    info = gt.reindex(match["gt_id"].to_numpy())
    truth = pd.DataFrame({
        "mask_label": match["mask_label"].to_numpy(np.int64),
        "gt_id": match["gt_id"].to_numpy(np.int64),
        "match_iou": match["iou"].to_numpy(np.float64),
    })
    for col in ("cell_line", "n_nmi", "n_mycn", "n_cluster", "noise"):
        truth[col] = info[col].to_numpy() if col in info.columns else None
    labels = pd.concat([
        pd.DataFrame({"mask_label": truth["mask_label"], "kind": "auto",
                      "label": info["auto_label"].to_numpy(np.int64), "source": "benchmark"}),
        pd.DataFrame({"mask_label": truth["mask_label"], "kind": "truth",
                      "label": info["true_label"].to_numpy(np.int64), "source": "benchmark"}),
    ], ignore_index=True)
    return truth, labels


def ingest_benchmark(store: Store, bench_dir: str | Path, models: Sequence[ScoringModel] = (),
                     splits: Sequence[str] | None = None, max_fields_per_sample: int | None = None,
                     samples_filter: Sequence[str] | None = None, backend: str | None = None,
                     segment_kwargs: dict | None = None, segmenter=None, min_iou: float = 0.5,
                     progress: bool = True, place_umap: bool = True) -> IngestReport:
    """Ingest the fields of a synthetic benchmark with their ground truth.

    Each benchmark sample (cell line or mixture) becomes a store sample; fields keep their
    split. Segmented nuclei matched to a ground-truth nucleus (mask IoU >= ``min_iou``)
    get its ``auto`` and ``truth`` labels and counts; unmatched nuclei of a cell line keep
    the line's genotype auto label only.

    Args:
        bench_dir: folder written by ``genuine synth benchmark``.
        splits: only fields of these splits (None: all).
        max_fields_per_sample: at most this many fields per (sample, split) (None: all).
        samples_filter: only these sample names.
        other args: as :func:`ingest_files`.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    bench = Path(bench_dir)
    fields = benchmark_fields(bench)
    if splits is not None:
        fields = fields[fields["split"].isin(list(splits))]
    if samples_filter is not None:
        fields = fields[fields["sample"].isin(list(samples_filter))]
    if max_fields_per_sample is not None:
        fields = fields.groupby(["sample", "split"], sort=False).head(max_fields_per_sample)
    nuclei = pd.read_parquet(bench / "nuclei.parquet")
    by_field = dict(tuple(nuclei.groupby("field_id", sort=False)))
    model_ids = _register(store, models)
    kwargs = dict(backend=backend, segment_kwargs=segment_kwargs, segmenter=segmenter, progress=progress)
    config = _read_json_file(bench / "config.json")
    report = IngestReport()
    bar = tqdm(fields.to_dict("records"), desc=f"ingest {bench.name}", unit="scan", disable=not progress)
    for f in bar:
        sid = samples.ensure_sample(store, f["sample"], f["kind"], None if pd.isna(f["expected_mna"]) else
                                    float(f["expected_mna"]), f["genotype"])
        gt_nuclei = by_field.get(f["field_id"], pd.DataFrame(columns=["nucleus_id", "auto_label", "true_label"]))

        def truth_fn(result, _f=f, _gt=gt_nuclei):
            return truth_tables(result, _read_gt_masks(_f["masks_path"]), _gt, min_iou)

        acquisition = {"benchmark": bench.name, "field_id": f["field_id"], "seed": config.get("seed")}
        outcome = _ingest_one(store, Path(f["path"]), sid, f["genotype"], models, model_ids, kwargs,
                              truth_fn=truth_fn, split=f["split"], acquisition=acquisition)
        report.outcomes.append(outcome)
        bar.set_postfix(nuclei=report.n_nuclei, failed=report.count("failed"))
    bar.close()
    report.seconds = time.perf_counter() - t0
    if place_umap and report.count("stored"):
        _place_on_umaps(store, [m.name for m in models])
    return report
