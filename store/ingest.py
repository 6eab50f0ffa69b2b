"""Ingest: scan files in, one committed transaction per scan out.

For each file: hash it (a scan already stored is skipped with a message), read it (a scan whose
decoded pixels are stored, e.g. saved again as PNG, is skipped likewise: ``genuine_core.io.pixel_fingerprint``),
segment and cut patches (``genuine_core.pipeline.prepare_scan``), score with every
model (``score_scans``; the nuclei of a few consecutive small scans share one
``predict`` call per model, which saves the models' per-call overhead), then write the
scan with ``store.scans.write_scan_result`` in its own transaction. A file that fails
is reported and skipped; the rest of the batch goes on. Synthetic benchmark fields additionally
get their ground truth: segmented nuclei are matched to ground-truth nuclei by mask
overlap and carry the generator's auto and true labels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from genuine_core import atomic
from genuine_core.errors import GenuineError, InputError, ModelLoadError, StoreError
from genuine_core.io import DEFAULT_MAX_PIXELS, max_pixels_limit, read_scan
from genuine_core.pipeline import (DEFAULT_PATCH_SIZE, ScanResult, ScoringModel, load_model, match_truth,
                                   model_folders, models_normalisation, prepare_scan, score_scans, scan_sha256)
from genuine_core.segmentation import DEFAULT_BACKEND
from store import registry, samples
from store.db import Store, files_folder, is_interrupt
from store.location import genuine_command
from store.fingerprints import record_fingerprints, stored_fingerprints
from store.scans import duplicate_note, scan_by_pixels, scan_by_sha, write_scan_result

logger = logging.getLogger(__name__)

#: crash-test hook (tests/test_crash.py): ``GENUINE_TEST_KILL_AT=<stage>[:<n>]`` makes the process SIGKILL
#: itself the n-th time (default 1st) it reaches ``stage``: read, scored, commit (inside the scan's
#: transaction, before COMMIT), committed. Inert when the variable is unset.
_KILL_AT = os.environ.get("GENUINE_TEST_KILL_AT", "")
_kill_seen: dict[str, int] = {}


def _kill_point(stage: str) -> None:
    name, _, nth = _KILL_AT.partition(":")
    if name == stage:
        _kill_seen[stage] = _kill_seen.get(stage, 0) + 1
        if _kill_seen[stage] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


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
    error: BaseException | None = field(default=None, repr=False, compare=False)  # why a file failed
    holder: str | None = None  # a duplicate: the sample that already holds the scan

    def line(self) -> str:
        """The file's line of :meth:`IngestReport.lines` (the file named once, not again by its message)."""
        return f"{self.status:9s} {self.path}: {without_file_name(self.message, self.path, Path(self.path).name)}"


def without_file_name(message: str, *names: str) -> str:
    """``message`` without a leading ``"<name>: "`` for the first of ``names`` it starts with
    (a line that names the file already says it once)."""
    for name in names:
        if name and message.startswith(f"{name}: "):
            return message[len(name) + 2:]
    return message


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
        return [o.line() for o in self.outcomes] + [self.summary_line()]

    def summary_line(self) -> str:
        """The total: stored, already stored and failed files, nuclei and speed."""
        rate = self.n_nuclei / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.count('stored')} stored, {self.count('duplicate')} already stored, "
                f"{self.count('failed')} failed; {self.n_nuclei} nuclei in {self.seconds:.1f} s ({rate:.1f} nuclei/s)")


def resolve_models(store: Store | None, folders: Sequence[str | Path] | None = None,
                   loader: Callable[[Path], ScoringModel] = load_model) -> list[ScoringModel]:
    """The models an ingest runs.

    Args:
        store: the store (only read when ``folders`` is None; may then not be None).
        folders: model folders (or folders of model folders) given by the user. When
            None: the models registered in the store (from their recorded folders), or,
            for a store without models, the shipped models under ``models/``.
        loader: folder -> ScoringModel (tests pass fakes).

    Raises:
        ModelLoadError: a folder cannot be loaded, or a registered folder no longer holds
            the weights the store recorded at registration (retired models are left out: see
            ``store.registry.retire_model``).
        InputError: a given folder holds no model, or the active registered models read differently normalised
            patches (:func:`store.registry.mixed_normalisations`).
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
        mixed = registry.mixed_normalisations(store)
        if mixed:  # ingest cuts a scan one way for all its models
            raise InputError(f"the active registered models read differently normalised patches: {mixed}; "
                             f"{registry.mixed_way_out(store)}")
        if len(reg):  # registered folders: the weights must still be the ones registered; retired models score none
            models = []
            for rec in reg[reg["folder"].notna() & reg["retired_at"].isna()].to_dict("records"):
                try:
                    models.append(loader(Path(rec["folder"])))
                    registry.verify_registered(store, models[-1], rec["name"])
                except (ModelLoadError, StoreError) as exc:  # one line that says how to get on
                    kind = StoreError if isinstance(exc, StoreError) else ModelLoadError
                    raise kind(f"registered model {rec['name']!r}: {exc}. {_folder_way_out(store, rec['name'])}") \
                        from None
            return _unique(models)
        paths = model_folders()
    return _unique([loader(p) for p in paths])


def _folder_way_out(store, name: str) -> str:
    """How to get on when a registered model's folder is missing or holds other weights: record the copy a restored
    backup holds (``store check --fix-paths``), else restore the folder, record where it moved, or remove it."""
    from store.model_copies import copy_way_out

    way = copy_way_out(store, name)
    if way:
        return way[0].upper() + way[1:]
    remove = genuine_command(f"store remove-model {shlex.quote(name)}", store.path)
    return (f"Restore its folder (if it moved, record its new place: {registry.relocate_command(name, store.path)}), "
            f"or remove the model ({remove})")


def _unique(models: list[ScoringModel]) -> list[ScoringModel]:
    """``models``, refusing two with one name."""
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


#: nuclei gathered from consecutive scans before the models run on them together
BATCH_NUCLEI = 192
#: at most this many scans per model call
BATCH_SCANS = 16
#: files hashed, read and segmented ahead of the one being scored and written (about a batch,
#: so the worker can prepare the next batch while this one is written)
PREFETCH = 8


@dataclass
class _Item:
    """One file to ingest and where it goes."""

    index: int
    path: Path
    sample_id: int | Callable[[], int]  # a callable creates the sample with the first stored scan
    genotype: str | None
    truth_fn: Callable | None = None
    split: str | None = None
    acquisition: dict | None = None
    file_name: str | None = None  # recorded instead of the file's own name (an upload's original name)


class _DryRun(Exception):
    """Raised to roll back :func:`_dry_run`'s transaction."""


def _dry_run(store: Store, write: Callable[[], object]) -> None:
    """Run ``write`` in a transaction that is rolled back: its checks raise now, nothing is kept."""
    try:
        with store.transaction():
            write()
            raise _DryRun
    except _DryRun:
        pass


def _check_nuclei(result: ScanResult) -> None:
    """Refuse a scan without a single scorable nucleus.

    Such a scan is an empty field or, more often, a wrong channel map; stored, it would
    also block the corrected re-ingest (same bytes = already stored).

    Raises:
        InputError: no nucleus found, or every nucleus found touches the image border.
    """
    if result.n_nuclei:
        return
    dapi = (result.info.get("channel_map") or {}).get("dapi")
    n = result.n_border_skipped
    if n:
        found = "the only nucleus found touches" if n == 1 else f"all {n} nuclei found touch"
        raise InputError(f"{result.info['file_name']}: {found} the image border (incomplete nuclei are not "
                         "scored); nothing stored")
    raise InputError(f"{result.info['file_name']}: no nuclei found in the DAPI channel (source channel {dapi}): "
                     "an empty field or a wrong channel map; nothing stored")


def _failed(item: _Item, exc: Exception, t0: float) -> FileOutcome:
    """A ``failed`` outcome; the batcher logs it (and the traceback of an unexpected error) once.

    Raises:
        KeyboardInterrupt: ``exc`` is Ctrl-C as DuckDB or another library reports it
            (``store.db.is_interrupt``): the run stops there, it is not this file's failure.
    """
    if is_interrupt(exc):
        raise KeyboardInterrupt(str(exc)) from exc
    if isinstance(exc, GenuineError):
        msg = str(exc)
    else:  # a bug or an unexpected library error: report it, keep the batch going
        msg = f"unexpected error: {type(exc).__name__}: {exc}"
    return FileOutcome(str(item.path), "failed", msg, seconds=time.perf_counter() - t0, error=exc)


@dataclass
class _Prepared:
    """A file hashed and prepared by the worker: ``result`` None with no error = already stored."""

    t0: float
    sha: str | None = None
    result: ScanResult | None = None
    error: Exception | None = None
    seconds: float = 0.0
    pixels: str | None = None  # the decoded pixels' fingerprint (None: not read, its bytes are stored)
    found: dict = field(default_factory=dict)  # fingerprints of stored scans that had none (to record)


class _Batcher:
    """Prepares files ahead in a worker thread, scores them in batches, writes each in its own transaction."""

    def __init__(self, store: Store, models: Sequence[ScoringModel], prepare_kwargs: dict, progress: bool,
                 desc: str, total: int, on_outcome: Callable[[FileOutcome], None] | None = None,
                 by: str | None = None):
        from tqdm.auto import tqdm

        self.store, self.models, self.kwargs = store, list(models), prepare_kwargs
        self.on_outcome = on_outcome  # called as each file is done (the CLI prints its line then)
        self.by = by  # who registers the models (store_events)
        for m in self.models:  # a retired model or a taken name (e.g. given with --models) says so first
            registry.check_name_free(store, m)
        self.normalisation = models_normalisation(self.models)  # refused before anything is read or written
        # registered with the first stored scan (same transaction): a batch whose files all fail
        # leaves the store unchanged; name clashes are still refused now
        _dry_run(store, lambda: [registry.register_model(store, m) for m in models])
        self.model_ids: dict[str, int] | None = None
        self.patch_size = max([m.patch_size for m in models], default=DEFAULT_PATCH_SIZE)
        self.pending: list[tuple[_Item, ScanResult, float]] = []
        self.pending_sha: set[str] = set()
        self.pending_pixels: set[str] = set()
        # the models use every core (torch threads); the worker prepares while this thread writes
        self.models_running = threading.Lock()
        self.outcomes: list[tuple[int, FileOutcome]] = []
        self.bar = tqdm(total=total, desc=desc, unit="scan", disable=not progress)
        self.stage = tqdm(total=len(self.models), desc="models", unit="model", leave=False, disable=not progress)

    def run(self, items: Iterable[_Item]) -> list[FileOutcome]:
        """Ingest ``items`` in order; the outcomes in input order.

        A worker thread hashes, reads, segments and cuts the patches of the next
        :data:`PREFETCH` files while this thread writes (PNG encoding and DuckDB inserts
        are mostly single-threaded, so they overlap on two cores); it waits while the
        models run, which use every core (two jobs on them slow torch's threads down). The
        worker never writes to the store; every check that decides what is written runs
        here, in input order.
        """
        it = iter(items)
        with ThreadPoolExecutor(1, thread_name_prefix="genuine-prepare") as pool:
            ahead: deque[tuple[_Item, Future]] = deque()

            def submit_next() -> None:
                item = next(it, None)
                if item is not None:
                    ahead.append((item, pool.submit(self._prepare, item)))

            for _ in range(PREFETCH):
                submit_next()
            try:
                while ahead:
                    item, prepared = ahead.popleft()
                    submit_next()
                    self._accept(item, prepared.result())
            finally:
                for _, prepared in ahead:
                    prepared.cancel()
                pool.submit(self.store.release_cursor)
        return self.finish()

    def _prepare(self, item: _Item) -> _Prepared:
        """Hash and prepare one file (worker thread; reads the store, never writes)."""
        t0 = time.perf_counter()
        try:
            sha = scan_sha256(item.path)
            if scan_by_sha(self.store, sha):
                return _Prepared(t0, sha)
            with self.models_running:
                scan = read_scan(item.path, self.kwargs.get("channel_map"),
                                 self.kwargs.get("max_pixels") or DEFAULT_MAX_PIXELS)
                h, w = scan.image.shape[:2]
                found = stored_fingerprints(self.store, h, w, scan.source_dtype)
                if scan_by_pixels(self.store, scan.pixel_sha256) or scan.pixel_sha256 in found.values():
                    return _Prepared(t0, sha, pixels=scan.pixel_sha256, found=found)
                read = time.perf_counter() - t0
                result = prepare_scan(item.path, self.patch_size, acquisition=item.acquisition,
                                      normalisation=self.normalisation, scan=scan, **self.kwargs)
                result.seconds["read"] = read
            if item.file_name:
                result.info["file_name"] = item.file_name
            _check_nuclei(result)
            return _Prepared(t0, sha, result, seconds=time.perf_counter() - t0, pixels=scan.pixel_sha256, found=found)
        except Exception as exc:  # noqa: BLE001 - reported per file
            return _Prepared(t0, error=exc)

    def _accept(self, item: _Item, prep: _Prepared) -> None:
        """Skip a duplicate or failed file, else queue it; score and write when a batch is full."""
        if prep.error is not None:
            self._done(item, _failed(item, prep.error, prep.t0))
            return
        record_fingerprints(self.store, prep.found)
        known = scan_by_sha(self.store, prep.sha)
        same_pixels = not known and bool(prep.pixels)
        if same_pixels:
            known = scan_by_pixels(self.store, prep.pixels)
        earlier = prep.sha in self.pending_sha or (prep.pixels is not None and prep.pixels in self.pending_pixels)
        if known or earlier:
            # names the stored scan's channel map, and remove-scan when this ingest asked for another one
            backend = None if self.kwargs.get("segmenter") else self.kwargs.get("backend") or DEFAULT_BACKEND
            same = "same sha256" if prep.sha in self.pending_sha else "same pixels"
            msg = (duplicate_note(known, self.kwargs.get("channel_map"), self.store.path, backend, same_pixels)
                   if known else f"already stored as an earlier file of this batch ({same}); nothing written")
            self._done(item, FileOutcome(str(item.path), "duplicate", msg, known["id"] if known else None,
                                         holder=known["sample"] if known else None))
            return
        if prep.result is None:  # the worker saw it stored, it is gone since (deleted meanwhile): prepare it here
            self._accept(item, self._prepare(item))
            return
        _kill_point("read")
        self.pending.append((item, prep.result, prep.seconds))
        self.pending_sha.add(prep.sha)
        if prep.pixels:
            self.pending_pixels.add(prep.pixels)
        if sum(r.n_nuclei for _, r, _ in self.pending) >= BATCH_NUCLEI or len(self.pending) >= BATCH_SCANS:
            self.flush()

    def flush(self) -> None:
        """Score the pending scans together, then write each in its own transaction."""
        batch, self.pending, self.pending_sha, self.pending_pixels = self.pending, [], set(), set()
        if not batch:
            return
        from genuine_core.models.detector import shared_detections

        results = [r for _, r, _ in batch]
        self.stage.reset(total=len(self.models))
        try:
            with self.models_running, shared_detections():  # one detector pass for every model with that detector
                for m in self.models:
                    self.stage.set_description_str(f"{m.name} on {sum(r.n_nuclei for r in results)} nuclei")
                    score_scans(results, [m])
                    self.stage.update()
        except Exception:  # noqa: BLE001 - find the file the models choke on: score one at a time
            kept = []
            for item, result, prep in batch:
                result.outputs.clear()
                try:
                    score_scans([result], self.models)
                    kept.append((item, result, prep))
                except Exception as exc:  # noqa: BLE001
                    self._done(item, _failed(item, exc, time.perf_counter() - prep))
            batch = kept
        _kill_point("scored")
        for item, result, prep in batch:
            self._write(item, result, prep)

    def _write(self, item: _Item, result: ScanResult, prep_seconds: float) -> None:
        t0 = time.perf_counter()
        try:
            labels = _auto_labels(result, item.genotype)
            truth = None
            if item.truth_fn is not None:
                truth, truth_labels = item.truth_fn(result)
                if labels is not None:  # the generator's per-nucleus auto label wins where matched
                    matched = truth_labels.loc[truth_labels["kind"] == "auto", "mask_label"]
                    labels = labels[~labels["mask_label"].isin(matched)]
                labels = pd.concat([x for x in (labels, truth_labels) if x is not None], ignore_index=True)
            with self.store.transaction():  # write_scan_result joins it; lets the kill hook sit before COMMIT
                model_ids = self.model_ids or {m.name: registry.register_model(self.store, m, self.by)
                                               for m in self.models}
                sid = item.sample_id() if callable(item.sample_id) else item.sample_id
                scan_id = write_scan_result(self.store, sid, result, model_ids, labels=labels,
                                            truth=truth, split=item.split)
                _kill_point("commit")
            self.model_ids = model_ids
        except Exception as exc:  # noqa: BLE001 - reported per file
            self._done(item, _failed(item, exc, t0))
            return
        _kill_point("committed")
        write = time.perf_counter() - t0
        seconds = prep_seconds + sum(result.seconds.get(m.name, 0.0) for m in self.models) + write
        if scan_id is None:
            self._done(item, FileOutcome(str(item.path), "duplicate",
                                         "stored meanwhile by another writer; nothing written", seconds=seconds))
            return
        msg = (f"scan {scan_id}: {result.n_nuclei} nuclei ({result.n_border_skipped} at the border skipped), "
               f"{len(self.models)} model{'' if len(self.models) == 1 else 's'}, {seconds:.1f} s")
        self._done(item, FileOutcome(str(item.path), "stored", msg, scan_id, result.n_nuclei, seconds,
                                     dict(result.seconds, write=write)))

    def _done(self, item: _Item, outcome: FileOutcome) -> None:
        self.outcomes.append((item.index, outcome))
        if outcome.status == "failed":
            unexpected = outcome.error is not None and not isinstance(outcome.error, GenuineError)
            if self.on_outcome is None:  # nobody reports it: the log does, once
                if unexpected:
                    logger.error("ingest of %s failed", item.path, exc_info=outcome.error)
                else:
                    logger.warning("skipped %s: %s", item.path, outcome.message)
            elif unexpected:  # the callback states the reason; the traceback is for -v
                logger.debug("ingest of %s failed", item.path, exc_info=outcome.error)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        self.bar.update()
        self.bar.set_postfix(nuclei=sum(o.n_nuclei for _, o in self.outcomes if o.status == "stored"),
                             failed=sum(o.status == "failed" for _, o in self.outcomes))

    def finish(self) -> list[FileOutcome]:
        """Flush the last batch; the outcomes in input order."""
        self.flush()
        self.stage.close()
        self.bar.close()
        return [o for _, o in sorted(self.outcomes, key=lambda x: x[0])]


def ingest_files(store: Store, paths: Sequence[str | Path], sample: str, kind: str | None = None,
                 expected: float | None = None, genotype: str | None = None,
                 models: Sequence[ScoringModel] = (), channel_map=None, backend: str | None = None,
                 segment_kwargs: dict | None = None, segmenter=None, acquisition: dict | None = None,
                 progress: bool = True, place_umap: bool = True, max_pixels: int | None = None,
                 file_names: Sequence[str] | None = None,
                 on_outcome: Callable[[FileOutcome], None] | None = None, by: str | None = None) -> IngestReport:
    """Ingest scan files into one sample.

    The sample is created and the models registered together with the first stored
    scan: when every file fails, the store is left unchanged.

    Args:
        store: writable store.
        paths: scan files.
        sample: sample name (created when missing; see ``samples.ensure_sample``).
        kind, expected, genotype: sample attributes (checked against an existing sample).
        models: models to run (see :func:`resolve_models`); registered on the way.
        channel_map: ``genuine_core.io.ChannelMap`` for the files (None: RGB).
        backend, segment_kwargs, segmenter: segmentation settings (see ``process_scan``).
        acquisition: metadata recorded with every scan.
        progress: tqdm bars (overall per scan, and the models' progress on each batch).
        place_umap: place the new nuclei on every fitted UMAP afterwards.
        max_pixels: refuse larger images from their header (None: ``$GENUINE_MAX_PIXELS`` or
            ``genuine_core.io.DEFAULT_MAX_PIXELS``).
        file_names: the name to record for each file (None: the file's own; an upload is kept
            under a hash-prefixed name, but users know it by its original name).
        on_outcome: called with each file's outcome as soon as it is done (stored files are
            committed by then); when given, it reports failures instead of the log.
        by: who ingests (recorded when a model is registered on the way).

    Returns:
        IngestReport (one outcome per file, in order).
    """
    t0 = time.perf_counter()
    sid = partial(samples.ensure_sample, store, sample, kind, expected, genotype)  # created with the first scan
    _dry_run(store, sid)  # a clash with an existing sample is refused before any file is read
    existing = samples.get_sample(store, sample)
    genotype = existing["genotype"] if existing else samples.normalise_genotype(genotype)
    kwargs = dict(channel_map=channel_map, backend=backend, segment_kwargs=segment_kwargs, segmenter=segmenter,
                  max_pixels=max_pixels_limit(max_pixels))
    batcher = _Batcher(store, models, kwargs, progress, f"ingest {sample}", len(paths), on_outcome, by)
    names = list(file_names) if file_names is not None else [None] * len(paths)
    items = (_Item(i, Path(p), sid, genotype, acquisition=acquisition, file_name=n)
             for i, (p, n) in enumerate(zip(paths, names, strict=True)))
    report = IngestReport(batcher.run(items), time.perf_counter() - t0)
    if place_umap:  # even when nothing new was stored: a killed earlier run may have left scans unplaced
        _place_on_umaps(store, [m.name for m in models])
    return report


def uploads_dir(store_path: str | Path) -> Path:
    """Folder beside a store where uploaded scans are kept (``<store>_files/uploads``)."""
    return files_folder(store_path) / "uploads"


def upload_path(folder: str | Path, name: str, data: bytes) -> Path:
    """Where :func:`save_upload` keeps these bytes: a safe file name prefixed by their hash."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).lstrip(".") or "scan"
    return Path(folder) / f"{hashlib.sha256(data).hexdigest()[:12]}_{safe[:100]}"


def save_upload(folder: str | Path, name: str, data: bytes, max_pixels: int | None = None) -> Path:
    """Check an uploaded file's header, then keep its bytes under ``folder`` (see :func:`upload_path`).

    Only the header is read (``genuine_core.io.inspect_scan``): non-images, unreadable or
    truncated headers and decompression bombs are refused before anything is written.

    Raises:
        InputError: the bytes are not a usable scan header; nothing is written.
    """
    from genuine_core.io import inspect_scan

    inspect_scan(data, max_pixels, name=Path(name).name)
    path = upload_path(folder, name, data)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(path, data)
    return path


def ingest_upload(store: Store, folder: str | Path, name: str, data: bytes, sample: str, **kwargs) -> IngestReport:
    """What the dashboard's Ingest page does with one uploaded file.

    :func:`save_upload` (header check, bytes kept under ``folder``), then :func:`ingest_files`
    with ``kwargs`` (``kind``, ``expected``, ``genotype``, ``models``, ``channel_map``, ...); the
    scan is recorded under its original file name ``name`` (its ``path`` is the saved file).
    A refused or unsavable file gets a ``failed`` outcome, and bytes this call saved for a file
    that was not stored (failed, or a duplicate of a stored scan) are removed again: only stored
    scans keep their bytes there.

    Returns:
        IngestReport with one outcome.
    """
    t0 = time.perf_counter()
    kept = upload_path(folder, name, data)
    saved_before = kept.is_file()  # the same bytes under the same name: a stored scan's file, never removed here
    try:
        path = save_upload(folder, name, data, kwargs.get("max_pixels"))
    except (InputError, OSError) as exc:
        message = str(exc) if isinstance(exc, InputError) else f"cannot save the upload under {folder}: {exc.strerror}"
        outcome = FileOutcome(str(kept), "failed", message, seconds=time.perf_counter() - t0)
        return IngestReport([outcome], time.perf_counter() - t0)
    kwargs.setdefault("progress", False)
    report = ingest_files(store, [path], sample, file_names=[Path(name).name], **kwargs)
    if report.outcomes[0].status != "stored" and not saved_before:
        path.unlink(missing_ok=True)
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
                     progress: bool = True, place_umap: bool = True,
                     on_outcome: Callable[[FileOutcome], None] | None = None, by: str | None = None) -> IngestReport:
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
    config = _read_json_file(bench / "config.json")
    kwargs = dict(backend=backend, segment_kwargs=segment_kwargs, segmenter=segmenter)
    batcher = _Batcher(store, models, kwargs, progress, f"ingest {bench.name}", len(fields), on_outcome, by)

    def items() -> Iterator[_Item]:
        for i, f in enumerate(fields.to_dict("records")):
            sid = partial(samples.ensure_sample, store, f["sample"], f["kind"],
                          None if pd.isna(f["expected_mna"]) else float(f["expected_mna"]), f["genotype"])
            _dry_run(store, sid)
            gt_nuclei = by_field.get(f["field_id"], pd.DataFrame(columns=["nucleus_id", "auto_label", "true_label"]))

            def truth_fn(result, _f=f, _gt=gt_nuclei):
                return truth_tables(result, _read_gt_masks(_f["masks_path"]), _gt, min_iou)

            acquisition = {"benchmark": bench.name, "field_id": f["field_id"], "seed": config.get("seed")}
            yield _Item(i, Path(f["path"]), sid, f["genotype"], truth_fn, f["split"], acquisition)

    report = IngestReport(batcher.run(items()), time.perf_counter() - t0)
    if place_umap:  # even when nothing new was stored: a killed earlier run may have left scans unplaced
        _place_on_umaps(store, [m.name for m in models])
    return report
