"""Scans and everything derived from one: written in one transaction, read back for display, removed in one."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from genuine_core.errors import StoreError
from genuine_core.io import RGB, ChannelMap
from genuine_core.pipeline import ScanResult, decode_image, decode_masks, encode_image, encode_masks, encode_patch
from store.db import Store
from store.events import record_event
from store.location import genuine_command
from store.review_stats import insert_review_stats, rebuild_review_stats

logger = logging.getLogger(__name__)

NUCLEUS_COLUMNS = ["mask_label", "cy", "cx", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "area",
                   "mean_nmi", "mean_mycn", "mean_dapi", "cropped"]
LABEL_KINDS = {"auto": "auto_label", "truth": "true_label"}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# per-scan counts as correlated subqueries on ``scans c`` (constant SQL): nuclei with any label event (undone
# ones too: such a scan is never removed), and nuclei no curator has excluded
_LABELLED_NUCLEI = ("(SELECT count(DISTINCT e.nucleus_id) FROM label_events e JOIN nuclei n ON n.id = e.nucleus_id "
                    "WHERE n.scan_id = c.id)")
_NOT_EXCLUDED_NUCLEI = ("(SELECT count(*) FROM nuclei n WHERE n.scan_id = c.id AND NOT EXISTS "
                        "(SELECT 1 FROM curated_labels x WHERE x.excluded AND x.nucleus_id = n.id))")


def scan_by_sha(store: Store, sha256: str) -> dict | None:
    """``{"id", "file_name", "sample", "channel_map", "backend", "labelled", "not_excluded"}`` of the scan with
    these file bytes, or None.

    ``channel_map`` is the :class:`~genuine_core.io.ChannelMap` the scan was read with (None
    when the stored value cannot be read); ``backend`` the segmentation backend (None: not recorded);
    ``labelled`` its nuclei with curators' label events, undone ones too (then it cannot be removed);
    ``not_excluded`` its nuclei a curator has not excluded.
    """
    return _scan_where(store, "c.sha256 = ?", sha256)


def scan_by_pixels(store: Store, pixel_sha256: str | None) -> dict | None:
    """:func:`scan_by_sha` of the scan whose decoded pixels have this fingerprint
    (``genuine_core.io.pixel_fingerprint``; scans stored without one are not found), or None."""
    return _scan_where(store, "c.pixel_sha256 = ?", pixel_sha256) if pixel_sha256 else None


def _scan_where(store: Store, condition: str, value: str) -> dict | None:
    """The first scan (by id) matching ``condition`` (constant SQL, one parameter), as :func:`scan_by_sha`."""
    df = store.query(
        "SELECT c.id, c.file_name, s.name AS sample, c.channel_map, c.segmentation, "
        + _LABELLED_NUCLEI + " AS labelled, " + _NOT_EXCLUDED_NUCLEI + " AS not_excluded "
        "FROM scans c JOIN samples s ON s.id = c.sample_id WHERE " + condition + " ORDER BY c.id LIMIT 1",
        [value],
    )
    if df.empty:
        return None
    rec = df.iloc[0].to_dict()
    rec["id"], rec["labelled"], rec["not_excluded"] = int(rec["id"]), int(rec["labelled"]), int(rec["not_excluded"])
    rec["channel_map"] = stored_channel_map(rec["channel_map"])
    rec["backend"] = _backend(rec.pop("segmentation"))
    return rec


def _backend(segmentation) -> str | None:
    """The backend named in a scan's stored ``segmentation`` JSON (None: not recorded or unreadable)."""
    if not isinstance(segmentation, str):  # NULL comes back as None or NaN (float) depending on the column
        return None
    try:
        return json.loads(segmentation or "{}").get("backend")
    except (ValueError, AttributeError):
        return None


def stored_channel_map(value) -> ChannelMap | None:
    """A scan's stored ``channel_map`` (JSON ``{"nmi", "mycn", "dapi"}``) as a ChannelMap; None when unreadable."""
    try:
        roles = json.loads(value) if isinstance(value, str) else value
        return ChannelMap(**roles) if isinstance(roles, dict) else None
    except (TypeError, ValueError):
        return None


def _describe(channel_map: ChannelMap | None) -> str:
    return channel_map.describe() if channel_map is not None else "?"


def duplicate_note(known: dict, channel_map: ChannelMap | None = None, db: str | Path | None = None,
                   backend: str | None = None, same_pixels: bool = False) -> str:
    """Why a file is not ingested again: which scan holds it, read with which channel map.

    Args:
        known: :func:`scan_by_sha` of the file (or :func:`scan_by_pixels`).
        same_pixels: ``known`` has the file's pixels in other file bytes (another format, compression or
            metadata): the note names the stored scan's file too.
        channel_map: the map this ingest asked for (None = RGB).
        db: the store file, named in the suggested command unless it is the default one.
        backend: the segmentation backend this ingest asked for (None: not compared).

    Returns:
        e.g. ``already stored as scan 3 in sample 'X' with channel map nmi=2,mycn=1,dapi=0 (BGR)
        (same sha256); nothing written``, plus, when ``channel_map`` differs from the stored
        one, that it does and the ``genuine store remove-scan`` command that allows a re-ingest
        (``genuine store exclude-scan`` when curators decided on its nuclei: it cannot be removed).
    """
    stored = known.get("channel_map")
    where = f"already stored as scan {known['id']} in sample {known['sample']!r}"
    same = "same sha256"
    if same_pixels:
        where += f" from file {known['file_name']!r}"
        same = "same pixels in another file"
    if stored is None:
        return f"{where} ({same}); nothing written"
    note = f"{where} with channel map {stored.describe()} ({same}); nothing written"
    asked = channel_map or RGB
    other = [asked.describe()] if asked != stored else []
    if backend and known.get("backend") and backend != known["backend"]:
        other.append(f"the {backend} segmentation (the scan was segmented with {known['backend']})")
    if other and known.get("labelled"):  # remove_scan refuses it: the audit trail stays
        note += (f"; this ingest asked for {' and '.join(other)}, but {known['labelled']} of the stored scan's "
                 "nuclei carry curators' label events, so it is kept and the file cannot be stored again")
        if known.get("not_excluded", 1):
            exclude = genuine_command(f"store exclude-scan {known['id']} --by NAME", db)
            note += f"; to leave the stored scan out of every call, exclude its nuclei with: {exclude}"
        else:
            note += " (every nucleus of it is excluded already, so it counts in no call)"
    elif other:
        remove = genuine_command(f"store remove-scan {known['id']}", db)
        note += (f"; this ingest asked for {' and '.join(other)}: to re-ingest the file so, remove the "
                 f"stored scan first with: {remove}")
    return note


# -- writing ---------------------------------------------------------------------------------
# Each _insert_* runs inside the caller's transaction; split into functions so tests can
# inject a failure between them.


def _insert_scan(cur, scan_id: int, sample_id: int, result: ScanResult, split: str | None,
                 label_source: str | None) -> None:
    info = result.info
    cur.execute(
        "INSERT INTO scans (id, sample_id, file_name, path, sha256, pixel_sha256, height, width, source_shape, "
        "source_dtype, channel_map, acquisition, segmentation, patch_size, patch_normalisation, split, label_source, "
        "n_nuclei, n_border_skipped, preview_png, masks_npz, ingested_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [scan_id, sample_id, info["file_name"], info.get("path"), info["sha256"], info.get("pixel_sha256"),
         info["height"], info["width"],
         json.dumps(info.get("source_shape")), info.get("source_dtype"), json.dumps(info["channel_map"]),
         json.dumps(info.get("acquisition") or {}), json.dumps(info.get("segmentation") or {}),
         int(result.patch_size), result.normalisation, split, label_source, result.n_nuclei,
         int(result.n_border_skipped), encode_image(result.preview), encode_masks(result.masks), _now()],
    )


def _label_columns(result: ScanResult, labels: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """``auto_label`` / ``true_label`` per nucleus row (nullable Int8) from a long labels frame."""
    keys = result.nuclei["mask_label"].to_numpy(np.int64)
    out = {}
    for kind, col in LABEL_KINDS.items():
        values = pd.Series(pd.NA, index=keys, dtype="Int8")
        if labels is not None and len(labels):
            sel = labels[labels["kind"] == kind]
            if sel["mask_label"].duplicated().any():
                raise StoreError(f"two {kind} labels for one nucleus")
            sel = sel[sel["mask_label"].isin(keys)]
            values.loc[sel["mask_label"].to_numpy(np.int64)] = sel["label"].to_numpy(np.int64)
        out[col] = values.to_numpy()
    return out


def _insert_nuclei(store: Store, cur, scan_id: int, ids: np.ndarray, result: ScanResult,
                   labels: pd.DataFrame | None) -> None:
    frame = result.nuclei[NUCLEUS_COLUMNS].copy()
    frame.insert(0, "id", ids)
    frame.insert(1, "scan_id", scan_id)
    for col, values in _label_columns(result, labels).items():
        frame[col] = pd.array(values, dtype="Int8")
    frame["patch_png"] = [encode_patch(p) for p in result.patches]
    with store.frames(nuclei_in=frame):
        cur.execute(
            "INSERT INTO nuclei (id, scan_id, mask_label, cy, cx, bbox_y0, bbox_x0, bbox_y1, bbox_x1, area, "
            "mean_nmi, mean_mycn, mean_dapi, cropped, auto_label, true_label, patch_png) "
            "SELECT id, scan_id, mask_label, cy, cx, bbox_y0, bbox_x0, bbox_y1, bbox_x1, area, "
            "mean_nmi, mean_mycn, mean_dapi, cropped, auto_label, true_label, patch_png FROM nuclei_in"
        )


def _insert_predictions(store: Store, cur, ids: np.ndarray, result: ScanResult, model_ids: dict[str, int]) -> None:
    frames = []
    for name, out in result.outputs.items():
        t = out.table.copy()
        t.insert(0, "model_id", model_ids[name])
        t.insert(1, "nucleus_id", ids)
        frames.append(t)
    if not frames or not len(ids):
        return
    frame = pd.concat(frames, ignore_index=True)
    with store.frames(pred_in=frame):
        cur.execute(
            "INSERT INTO predictions (model_id, nucleus_id, prob, prob_calibrated, uncertainty, call, "
            "det_nmi, det_mycn, det_cluster) SELECT model_id, nucleus_id, prob, prob_calibrated, uncertainty, "
            "call, det_nmi, det_mycn, det_cluster FROM pred_in"
        )


def refresh_review_stats(store: Store, scan_ids: list[int] | None = None) -> int:
    """Rebuild the derived ``review_stats`` rows of some scans (None: every scan; ``store.review_stats``);
    returns rows written."""
    with store.transaction() as cur:
        if scan_ids is None:
            scan_ids = [int(r[0]) for r in cur.execute("SELECT id FROM scans").fetchall()]
        ids = {"scans": [int(s) for s in scan_ids]}
        rebuild_review_stats(cur, ids["scans"])
        return int(cur.execute("SELECT count(*) FROM review_stats WHERE scan_id IN (SELECT unnest($scans))",
                               ids).fetchall()[0][0])


def _insert_detections(store: Store, cur, ids: np.ndarray, result: ScanResult, model_ids: dict[str, int]) -> None:
    frames = []
    for name, out in result.outputs.items():
        d = out.detections
        if len(d):
            frames.append(pd.DataFrame({
                "model_id": model_ids[name],
                "nucleus_id": ids[d["row"].to_numpy(np.int64)],
                "cls": d["cls"].to_numpy(np.int64),
                "x1": d["x1"], "y1": d["y1"], "x2": d["x2"], "y2": d["y2"], "score": d["score"],
            }))
    if not frames:
        return
    with store.frames(det_in=pd.concat(frames, ignore_index=True)):
        cur.execute("INSERT INTO detections (model_id, nucleus_id, cls, x1, y1, x2, y2, score) "
                    "SELECT model_id, nucleus_id, cls, x1, y1, x2, y2, score FROM det_in")


def embeddings_table(model_id: int, nucleus_ids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    """Arrow table ``model_id, nucleus_id, vector (list<float32>)`` for a bulk insert."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int64) * d, type=pa.int64())
    lists = pa.LargeListArray.from_arrays(offsets, pa.array(vectors.ravel(), type=pa.float32()))
    return pa.table({"model_id": pa.array(np.full(n, model_id, np.int64)),
                     "nucleus_id": pa.array(np.asarray(nucleus_ids, np.int64)), "vector": lists})


def _insert_embeddings(store: Store, cur, ids: np.ndarray, result: ScanResult, model_ids: dict[str, int]) -> None:
    for name, out in result.outputs.items():
        if not len(ids):
            continue
        with store.frames(emb_in=embeddings_table(model_ids[name], ids, out.embeddings)):
            cur.execute("INSERT INTO embeddings (model_id, nucleus_id, vector) "
                        "SELECT model_id, nucleus_id, vector::FLOAT[] FROM emb_in")


def _insert_scan_models(cur, scan_id: int, result: ScanResult, model_ids: dict[str, int]) -> None:
    for name, out in result.outputs.items():
        cur.execute("INSERT INTO scan_models (scan_id, model_id, n_predictions, seconds, mc_samples) "
                    "VALUES (?, ?, ?, ?, ?)", [scan_id, model_ids[name], len(out.table), float(out.seconds),
                                               out.mc_samples])


def _by_mask_label(frame: pd.DataFrame, ids: np.ndarray, result: ScanResult) -> pd.DataFrame:
    """Replace ``mask_label`` by ``nucleus_id``; rows of nuclei not kept are dropped."""
    lookup = pd.Series(ids, index=result.nuclei["mask_label"].to_numpy(np.int64))
    frame = frame[frame["mask_label"].isin(lookup.index)].copy()
    frame.insert(0, "nucleus_id", lookup.loc[frame["mask_label"].to_numpy(np.int64)].to_numpy())
    return frame.drop(columns=["mask_label"])


def _insert_truth(store: Store, cur, ids: np.ndarray, result: ScanResult, truth: pd.DataFrame | None) -> None:
    if truth is not None and len(truth):
        cols = ["mask_label", "gt_id", "match_iou", "cell_line", "n_nmi", "n_mycn", "n_cluster", "noise"]
        frame = _by_mask_label(truth.reindex(columns=cols), ids, result)
        with store.frames(truth_in=frame):
            cur.execute("INSERT INTO synthetic_truth (nucleus_id, gt_id, match_iou, cell_line, n_nmi, n_mycn, "
                        "n_cluster, noise) SELECT nucleus_id, gt_id, match_iou, cell_line, n_nmi, n_mycn, "
                        "n_cluster, noise FROM truth_in")


def write_scan_result(store: Store, sample_id: int, result: ScanResult, model_ids: dict[str, int],
                      labels: pd.DataFrame | None = None, truth: pd.DataFrame | None = None,
                      split: str | None = None) -> int | None:
    """Store one scan and everything derived from it in ONE transaction.

    Args:
        store: open writable store.
        sample_id: sample the scan belongs to.
        result: output of ``genuine_core.pipeline.process_scan``.
        model_ids: model name -> registered id, for every model in ``result.outputs``.
        labels: optional ``mask_label, kind ('auto'|'truth'), label (0/1)`` (+ ``source``:
            recorded once per scan as ``label_source``).
        truth: optional synthetic ground truth per segmented nucleus: ``mask_label, gt_id,
            match_iou, cell_line, n_nmi, n_mycn, n_cluster, noise``.
        split: benchmark split of a synthetic scan.

    Returns:
        The new scan id, or None when a scan with the same sha256 or the same pixels (``pixel_sha256``)
        is already stored (nothing is written).

    Raises:
        StoreError: a model is not registered, or the write failed (nothing is written).
    """
    missing = set(result.outputs) - set(model_ids)
    if missing:
        raise StoreError(f"models not registered: {sorted(missing)}")
    with store.transaction() as cur:
        if cur.execute("SELECT 1 FROM scans WHERE sha256 = ? OR pixel_sha256 = ?",
                       [result.info["sha256"], result.info.get("pixel_sha256")]).fetchone():
            return None
        scan_id = store.next_ids("scan_ids", 1)[0]
        ids = np.asarray(store.next_ids("nucleus_ids", result.n_nuclei), dtype=np.int64)
        source = None
        if labels is not None and len(labels) and "source" in labels.columns:
            source = ",".join(sorted(set(labels["source"].dropna().astype(str)))) or None
        _insert_scan(cur, scan_id, sample_id, result, split, source)
        _insert_nuclei(store, cur, scan_id, ids, result, labels)
        _insert_predictions(store, cur, ids, result, model_ids)
        insert_review_stats(cur, [scan_id])
        _insert_detections(store, cur, ids, result, model_ids)
        _insert_embeddings(store, cur, ids, result, model_ids)
        _insert_scan_models(cur, scan_id, result, model_ids)
        _insert_truth(store, cur, ids, result, truth)
    return scan_id


def add_model_outputs(store: Store, scan_id: int, nucleus_ids: np.ndarray, result: ScanResult,
                      model_ids: dict[str, int]) -> bool:
    """Store the outputs of models that scored an already stored scan (``result.outputs``, rows in the
    order of ``nucleus_ids``) in ONE transaction: predictions, detections, embeddings, the scan's
    ``scan_models`` rows and its review statistics.

    Returns:
        False (nothing written) when one of the models has scored the scan meanwhile.
    """
    ids = np.asarray(nucleus_ids, dtype=np.int64)
    with store.transaction() as cur:
        held = cur.execute("SELECT count(*) FROM scan_models WHERE scan_id = ? AND model_id IN (SELECT unnest(?))",
                           [int(scan_id), [int(model_ids[n]) for n in result.outputs]]).fetchall()[0][0]
        if held:
            return False
        _insert_predictions(store, cur, ids, result, model_ids)
        _insert_detections(store, cur, ids, result, model_ids)
        _insert_embeddings(store, cur, ids, result, model_ids)
        _insert_scan_models(cur, int(scan_id), result, model_ids)
        rebuild_review_stats(cur, [int(scan_id)])
    return True


# -- reading ---------------------------------------------------------------------------------


def list_scans(store: Store, sample: str | None = None) -> pd.DataFrame:
    """Scans (optionally of one sample): ``id, sample, file_name, path, sha256, height, width,
    channel_map, split, n_nuclei, n_border_skipped, patch_size, patch_normalisation, ingested_at``."""
    return store.query(
        """
        SELECT c.id, s.name AS sample, c.file_name, c.path, c.sha256, c.height, c.width, c.channel_map,
               c.split, c.n_nuclei, c.n_border_skipped, c.patch_size, c.patch_normalisation, c.ingested_at
        FROM scans c JOIN samples s ON s.id = c.sample_id
        WHERE ? IS NULL OR s.name = ?
        ORDER BY c.id
        """,
        [sample, sample],
    )


def scan_images(store: Store, scan_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Display image (H, W, 3) uint8 and instance masks (H, W) int32 of a stored scan.

    Raises:
        StoreError: no such scan.
    """
    row = store.cursor().execute("SELECT preview_png, masks_npz FROM scans WHERE id = ?", [scan_id]).fetchone()
    if row is None:
        raise StoreError(f"no scan with id {scan_id}")
    return decode_image(row[0]), decode_masks(row[1])


def scan_overview(store: Store, sample: str | None = None) -> pd.DataFrame:
    """One row per scan (optionally of one sample), for finding a scan's id.

    Returns:
        DataFrame ``id, sample, file_name, channel_map (text, ``ChannelMap.describe``), backend
        (segmentation; None when not recorded), n_nuclei, n_models, curated_nuclei (nuclei with a current
        curated decision, exclusions included: the Review page's "reviewed" and ``store info``'s
        ``curated_nuclei``), excluded_nuclei (of those, the ones excluded: all of them = the scan counts in
        no call), labelled_nuclei (nuclei with any label event, undone ones too: such a scan
        is not removed, see :func:`remove_scan`), ingested_at, sha256`` (of the file's bytes), ordered by id.
    """
    df = store.query(
        """
        SELECT c.id, s.name AS sample, c.file_name, c.channel_map, c.segmentation AS backend, c.n_nuclei,
               (SELECT count(*) FROM scan_models sm WHERE sm.scan_id = c.id)::INTEGER AS n_models,
               (SELECT count(*) FROM curated_labels cl JOIN nuclei n ON n.id = cl.nucleus_id
                WHERE n.scan_id = c.id)::INTEGER AS curated_nuclei,
               (SELECT count(*) FROM curated_labels cl JOIN nuclei n ON n.id = cl.nucleus_id
                WHERE n.scan_id = c.id AND cl.excluded)::INTEGER AS excluded_nuclei,
               """ + _LABELLED_NUCLEI + """::INTEGER AS labelled_nuclei,
               c.ingested_at, c.sha256
        FROM scans c JOIN samples s ON s.id = c.sample_id
        WHERE ? IS NULL OR s.name = ?
        ORDER BY c.id
        """,
        [sample, sample],
    )
    df["channel_map"] = [_describe(stored_channel_map(t)) for t in df["channel_map"]]
    df["backend"] = [_backend(t) for t in df["backend"]]
    return df


# -- removing --------------------------------------------------------------------------------
# Every table holding rows of one scan or of its nuclei, in the order remove_scan deletes them
# (constant SQL, the scan id bound as $scan). label_events is not here: the audit trail is never
# deleted, so a scan whose nuclei have label events is refused. The sample, the models, UMAP fits
# (maps stay valid functions) and probe runs do not belong to a scan and stay.
_OF_SCAN = "SELECT id FROM nuclei WHERE scan_id = $scan"
_REMOVE_TABLES: list[tuple[str, str]] = [
    ("umap_coords", "FROM umap_coords WHERE nucleus_id IN (" + _OF_SCAN + ")"),
    ("embeddings", "FROM embeddings WHERE nucleus_id IN (" + _OF_SCAN + ")"),
    ("detections", "FROM detections WHERE nucleus_id IN (" + _OF_SCAN + ")"),
    ("predictions", "FROM predictions WHERE nucleus_id IN (" + _OF_SCAN + ")"),
    ("review_stats", "FROM review_stats WHERE scan_id = $scan OR nucleus_id IN (" + _OF_SCAN + ")"),
    ("synthetic_truth", "FROM synthetic_truth WHERE nucleus_id IN (" + _OF_SCAN + ")"),
    ("scan_models", "FROM scan_models WHERE scan_id = $scan"),
    ("nuclei", "FROM nuclei WHERE scan_id = $scan"),
    ("scans", "FROM scans WHERE id = $scan"),
]
_COUNT_SQL = {t: "SELECT count(*) " + where for t, where in _REMOVE_TABLES}
_DELETE_SQL = {t: "DELETE " + where for t, where in _REMOVE_TABLES}
_SCAN_SQL = ("SELECT c.id, c.sample_id, s.name AS sample, c.file_name, c.path, c.channel_map, c.n_nuclei, "
             "c.sha256 FROM scans c JOIN samples s ON s.id = c.sample_id WHERE c.id = $scan")
_EVENTS_SQL = ("SELECT count(*), count(DISTINCT e.nucleus_id) FROM label_events e JOIN nuclei n "
               "ON n.id = e.nucleus_id WHERE n.scan_id = $scan")
_PATH_USERS_SQL = "SELECT count(*) FROM scans WHERE path = ? AND id <> ?"
_NOT_EXCLUDED_SQL = "SELECT " + _NOT_EXCLUDED_NUCLEI + " FROM scans c WHERE c.id = $scan"


class ScanHasLabelEvents(StoreError):
    """A scan cannot be removed: curators' label events refer to its nuclei (the audit trail stays).

    Attributes:
        scan_id: the scan. n_events: its label events. n_nuclei: nuclei with at least one.
        The message suggests ``genuine store exclude-scan`` on the store ``db`` (named unless it is the
        default one) by ``by`` (``NAME`` when not known), or says that ``all_excluded`` already.
    """

    def __init__(self, scan_id: int, file_name: str, sample: str, n_events: int, n_nuclei: int,
                 db: str | Path | None = None, by: str | None = None, all_excluded: bool = False):
        import shlex

        self.scan_id, self.n_events, self.n_nuclei = scan_id, n_events, n_nuclei
        exclude = genuine_command(f"store exclude-scan {scan_id} --by {shlex.quote(by) if by else 'NAME'}", db)
        super().__init__(
            f"scan {scan_id} ({file_name}, sample {sample!r}) is not removed: {n_events} label event(s) on "
            f"{n_nuclei} of its nuclei refer to it, and the audit trail of curators' decisions is never "
            "deleted (nothing was changed); "
            + ("every nucleus of it is excluded already, so it counts in no call" if all_excluded else
               f"to leave it out of every call, exclude its nuclei: {exclude}"))


@dataclass
class ScanRemoval:
    """What removing one scan deletes (:func:`plan_scan_removal`) or deleted (:func:`remove_scan`).

    Attributes:
        scan_id, sample, file_name, channel_map (text), n_nuclei: the scan.
        rows: table -> rows of that scan (``scans`` 1, ``nuclei`` n, predictions, ...).
        label_events: label events on its nuclei (removal is refused when > 0).
        curated_nuclei: nuclei with at least one label event.
        not_excluded: nuclei a curator has not excluded (0: the scan counts in no call).
        files: files beside the store that belong to the scan only (an uploaded scan's kept bytes).
        sample_scans_left: scans its sample holds besides this one (the sample itself stays).
        sha256: the scan file's checksum.
    """

    scan_id: int
    sample: str
    file_name: str
    channel_map: str
    n_nuclei: int
    rows: dict[str, int] = field(default_factory=dict)
    label_events: int = 0
    curated_nuclei: int = 0
    files: list[Path] = field(default_factory=list)
    sample_scans_left: int = 0
    sha256: str = ""
    not_excluded: int = 0

    def lines(self) -> list[str]:
        """Human-readable summary, one line per table with rows and per file."""
        out = [f"scan {self.scan_id}: {self.file_name} in sample {self.sample!r}, channel map {self.channel_map}, "
               f"{self.n_nuclei} nuclei"]
        out += [f"  {n:8d} {t}" for t, n in self.rows.items() if n]
        out += [f"  file {f}" for f in self.files]
        left = f"{self.sample_scans_left} other scan(s)" if self.sample_scans_left else "no other scans"
        out.append(f"  sample {self.sample!r} is kept ({left})")
        return out


def _plan(store: Store, cur, scan_id: int) -> ScanRemoval:
    params = {"scan": int(scan_id)}
    rows = cur.execute(_SCAN_SQL, params).fetchall()
    if not rows:
        raise StoreError(f"no scan with id {scan_id}; list them with: "
                         f"{genuine_command('store scans', store.path)}")
    sid, sample_id, sample, file_name, path, cmap, n_nuclei, sha256 = rows[0]
    n_events, n_curated = cur.execute(_EVENTS_SQL, params).fetchone()
    counts = {t: int(cur.execute(_COUNT_SQL[t], params).fetchone()[0]) for t, _ in _REMOVE_TABLES}
    left = int(cur.execute("SELECT count(*) FROM scans WHERE sample_id = ? AND id <> ?",
                           [sample_id, sid]).fetchone()[0])
    files = []
    owned = _owned_file(store, path, sha256)
    if owned is not None and not int(cur.execute(_PATH_USERS_SQL, [path, sid]).fetchone()[0]):
        files.append(owned)
    not_excluded = int(cur.execute(_NOT_EXCLUDED_SQL, params).fetchone()[0])
    return ScanRemoval(int(sid), str(sample), str(file_name), _describe(stored_channel_map(cmap)), int(n_nuclei),
                       counts, int(n_events), int(n_curated), files, left, str(sha256), not_excluded)


def _owned_file(store: Store, path: str | None, sha256: str = "") -> Path | None:
    """``path`` when it is an existing file inside the store's own uploads folder (``<store>_files/uploads``) or
    its folder of a backup's scan copies (``<store>_files/scans``); for a store restored from a backup elsewhere
    (``path`` names the original store's folder or the scan's original file), the same upload or the backup's
    copy in this store's folder (:func:`kept_upload`, ``store.scan_copies.kept_copy``).

    Files anywhere else (the user's scans, benchmark folders) are never the store's to delete.
    """
    from store.scan_copies import SCANS_DIR

    if not path:
        return None
    p = Path(path).resolve()
    if p.is_file() and any(p.is_relative_to((store.folder / d).resolve()) for d in ("uploads", SCANS_DIR)):
        return p
    return _kept_in_store(store, path, sha256)


def kept_upload(store: Store, path: str | None, sha256: str) -> Path | None:
    """The uploaded file of a scan in this store's ``<store>_files/uploads`` whose recorded ``path`` names an
    uploads folder elsewhere (a store restored from a backup): same file name, which starts with the first 12
    hex digits of the scan's sha256 (``store.ingest.upload_path``). None when there is none."""
    if not path or len(sha256) < 12 or Path(path).parent.name != "uploads":
        return None
    mine = store.folder / "uploads" / Path(path).name
    return mine.resolve() if mine.name.startswith(sha256[:12]) and mine.is_file() else None


def _kept_in_store(store: Store, path: str | None, sha256: str) -> Path | None:
    """This store's own copy of a scan file recorded elsewhere: an upload in its uploads folder
    (:func:`kept_upload`), else a backup's copy in its ``<name>_files/scans/`` (``store.scan_copies.kept_copy``)."""
    from store.scan_copies import kept_copy

    return kept_upload(store, path, sha256) or kept_copy(store.folder, path, sha256)


def found_scan_file(store: Store, path: str | None, sha256: str) -> Path | None:
    """A scan's file: at its recorded ``path``, else this store's own copy of it (:func:`_kept_in_store`); None
    if none."""
    if path and Path(path).is_file():
        return Path(path)
    return _kept_in_store(store, path, sha256)


def missing_scan_files(store: Store) -> pd.DataFrame:
    """Scans whose file is gone: :func:`found_scan_file` finds none. ``id, file_name, path, upload`` (True: the store's own uploaded copy), by id.
    Nothing the store does needs them: the preview, masks and patches of every scan are in the store."""
    df = store.query("SELECT id, file_name, path, sha256 FROM scans WHERE path IS NOT NULL ORDER BY id")
    gone = np.array([found_scan_file(store, p, sha) is None for p, sha in zip(df["path"], df["sha256"])], dtype=bool)
    out = df.loc[gone].drop(columns="sha256").reset_index(drop=True)
    out["upload"] = [Path(p).parent.name == "uploads" for p in out["path"]]
    return out


def plan_scan_removal(store: Store, scan_id: int) -> ScanRemoval:
    """What :func:`remove_scan` would delete, without deleting anything.

    Raises:
        StoreError: no scan with that id.
    """
    return _plan(store, store.cursor(), scan_id)


def remove_scan(store: Store, scan_id: int, by: str | None = None) -> ScanRemoval:
    """Delete one scan and everything derived from it, in ONE transaction.

    Deleted: the scan row (with its preview and masks), its nuclei (patches, auto and true
    labels), their predictions, review statistics, detections, embeddings, UMAP coordinates
    and synthetic ground truth, and the scan's ``scan_models`` rows; after the commit, the
    uploaded file the scan was read from when it lies in the store's ``<store>_files/uploads``
    folder. Kept: the sample (possibly without scans now), the models, UMAP fits and probe
    runs. A later ingest of the same file stores it anew (with new scan and nucleus ids).

    The label events of a scan's nuclei are the audit trail and are never deleted: such a
    scan is refused, nothing is changed.

    Args:
        store: writable store.
        scan_id: id of the scan (``genuine store scans`` lists them).
        by: who removes it (kept in ``store_events`` with what was deleted, and logged).

    Returns:
        :class:`ScanRemoval` with the rows deleted per table.

    Raises:
        ScanHasLabelEvents: label events refer to the scan's nuclei (nothing deleted).
        StoreError: no such scan, the store is read-only or busy (nothing deleted).
    """

    def delete(cur) -> ScanRemoval:
        plan = _plan(store, cur, scan_id)
        if plan.label_events:
            raise ScanHasLabelEvents(plan.scan_id, plan.file_name, plan.sample, plan.label_events,
                                     plan.curated_nuclei, store.path, by, all_excluded=not plan.not_excluded)
        params = {"scan": plan.scan_id}
        deleted = {}
        for table, _ in _REMOVE_TABLES:
            deleted[table] = int(cur.execute(_DELETE_SQL[table], params).fetchone()[0])
        if deleted != plan.rows:  # cannot happen inside one transaction; never commit a surprise
            raise StoreError(f"scan {plan.scan_id}: deleted {deleted}, expected {plan.rows}; nothing removed")
        record_event(cur, "remove scan", plan.file_name, plan.sha256, by,
                     {"scan_id": plan.scan_id, "sample": plan.sample, "deleted": {t: n for t, n in deleted.items() if n}})
        return plan

    removal = store.write(delete)
    for f in removal.files:  # after the commit: a leftover file is harmless, a missing referenced one is not
        try:
            f.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("scan %d removed, but its file %s could not be deleted: %s", removal.scan_id, f, exc)
    logger.info("removed scan %d (%s, sample %r)%s: %s", removal.scan_id, removal.file_name, removal.sample,
                f" by {by}" if by else "", {t: n for t, n in removal.rows.items() if n})
    return removal
