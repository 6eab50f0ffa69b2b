"""``LabelledPatches``: the exchange format for training sets (e.g. curated store labels).

A training set is a bundle of nucleus patches with a binary label each. Two
equivalent on-disk forms are accepted; both load without unpickling anything.

**NPZ** (``*.npz``, written by :meth:`LabelledPatches.save`, read with
``numpy.load(..., allow_pickle=False)``):

===============  ======================  ==========================================
key              shape / dtype           meaning
===============  ======================  ==========================================
``format``       () unicode              ``"genuine-labelled-patches/1"``
``patches``      (N, 3, P, P) float16/32 patches in [0, 1], channels (NMI, MYCN, DAPI)
``labels``       (N,) int8               1 = MNA, 0 = non-MNA
``split``        (N,) unicode            ``train`` / ``val`` / ``test`` (optional)
``label_kind``   (N,) unicode            ``auto`` / ``truth`` / ``curated`` (optional)
``true_label``   (N,) int8               ground truth where known, else -1 (optional)
``nucleus_key``  (N,) unicode            stable id, e.g. ``"<scan sha>:<nucleus id>"`` (optional)
``normalisation`` () unicode             how the patches were normalised (optional;
                                         ``genuine_core.patches.NORMALISATIONS``, default
                                         ``percentile``)
``reviewers_disagreed`` (N,) bool        curated labels: the nucleus' reviewers disagreed
                                         (``store.agreement``; optional, training ignores it)
===============  ======================  ==========================================

**Parquet** (``*.parquet``): one row per patch with columns ``patch`` (binary:
``3*P*P`` little-endian float16 values in C order), ``label`` (int), and optionally
``split``, ``label_kind``, ``true_label``, ``nucleus_key``, ``reviewers_disagreed``; the patch side ``P`` is
stored in the schema metadata key ``genuine.patch_size`` (or inferred from the byte
length), the normalisation in ``genuine.patch_normalisation`` (default ``percentile``). This
is what a DuckDB ``COPY ... TO`` of a table with a BLOB column gives.

When ``split`` is absent, :meth:`LabelledPatches.ensure_split` assigns a seeded
80/10/10 train/val/test split.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genuine_core import atomic
from genuine_core.errors import InputError
from genuine_core.patches import LEGACY_NORMALISATION, check_normalisation

FORMAT = "genuine-labelled-patches/1"
SPLITS = ("train", "val", "test")
LABEL_KINDS = ("auto", "truth", "curated")
#: per-row arrays a training set may hold besides patches and labels
OPTIONAL = ("split", "label_kind", "true_label", "nucleus_key", "reviewers_disagreed")


@dataclass
class LabelledPatches:
    """Patches with labels, ready for training.

    Attributes:
        patches: ``(N, 3, P, P)`` float16 or float32 in [0, 1].
        labels: ``(N,)`` int8, 1 = MNA, 0 = non-MNA.
        split: ``(N,)`` str array of ``train|val|test`` or None.
        label_kind: ``(N,)`` str array of ``auto|truth|curated`` or None.
        true_label: ``(N,)`` int8 ground truth (-1 unknown) or None.
        nucleus_key: ``(N,)`` str ids or None.
        normalisation: how the patches were normalised (a model trained on them expects the same).
        reviewers_disagreed: ``(N,)`` bool, curated labels whose reviewers disagreed, or None.
    """

    patches: np.ndarray
    labels: np.ndarray
    split: np.ndarray | None = None
    label_kind: np.ndarray | None = None
    true_label: np.ndarray | None = None
    nucleus_key: np.ndarray | None = None
    normalisation: str = LEGACY_NORMALISATION
    reviewers_disagreed: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.normalisation = str(self.normalisation)
        try:
            check_normalisation(self.normalisation)
        except ValueError as exc:
            raise InputError(f"training set: {exc}") from None
        p = self.patches
        if p.ndim != 4 or p.shape[1] != 3 or p.shape[2] != p.shape[3]:
            raise InputError(f"patches must be (N, 3, P, P), got shape {p.shape}")
        if p.dtype not in (np.float16, np.float32):
            raise InputError(f"patches must be float16 or float32, got {p.dtype}")
        n = p.shape[0]
        self.labels = np.asarray(self.labels).astype(np.int8)
        if self.labels.shape != (n,):
            raise InputError(f"labels must have shape ({n},), got {self.labels.shape}")
        if not np.isin(self.labels, (0, 1)).all():
            raise InputError("labels must be 0 (non-MNA) or 1 (MNA)")
        for name, allowed in (("split", SPLITS), ("label_kind", LABEL_KINDS)):
            v = getattr(self, name)
            if v is None:
                continue
            v = np.asarray(v).astype(str)
            if v.shape != (n,):
                raise InputError(f"{name} must have shape ({n},), got {v.shape}")
            bad = set(np.unique(v)) - set(allowed)
            if bad:
                raise InputError(f"{name} holds unknown values {sorted(bad)}; allowed: {allowed}")
            setattr(self, name, v)
        if self.true_label is not None:
            self.true_label = np.asarray(self.true_label).astype(np.int8)
            if self.true_label.shape != (n,) or not np.isin(self.true_label, (-1, 0, 1)).all():
                raise InputError("true_label must be (N,) with values -1, 0, 1")
        if self.nucleus_key is not None:
            self.nucleus_key = np.asarray(self.nucleus_key).astype(str)
            if self.nucleus_key.shape != (n,):
                raise InputError(f"nucleus_key must have shape ({n},)")
        if self.reviewers_disagreed is not None:
            self.reviewers_disagreed = np.asarray(self.reviewers_disagreed).astype(bool)
            if self.reviewers_disagreed.shape != (n,):
                raise InputError(f"reviewers_disagreed must have shape ({n},)")

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    @property
    def patch_size(self) -> int:
        """Patch side ``P`` in pixels."""
        return int(self.patches.shape[-1])

    def ensure_split(self, rng: np.random.Generator, fractions=(0.8, 0.1, 0.1)) -> "LabelledPatches":
        """Assign a random stratified train/val/test split when none is stored (in place).

        Each class is shuffled and cut at the given fractions, so every split holds both
        classes whenever the class has at least 3 members (every split then gets >= 1).
        """
        if self.split is not None:
            return self
        if len(fractions) != 3 or not math.isclose(sum(fractions), 1.0) or min(fractions) <= 0:
            raise ValueError(f"fractions must be 3 positive values summing to 1, got {fractions}")
        split = np.empty(len(self), dtype="<U5")
        for cls in (0, 1):
            idx = np.flatnonzero(self.labels == cls)
            rng.shuffle(idx)
            n = len(idx)
            n_val = max(1, round(n * fractions[1])) if n >= 3 else 0
            n_test = max(1, round(n * fractions[2])) if n >= 3 else 0
            split[idx] = "train"
            split[idx[:n_val]] = "val"
            split[idx[n_val:n_val + n_test]] = "test"
        self.split = split
        return self

    def subset(self, split: str) -> "LabelledPatches":
        """The rows of one split (requires :attr:`split`)."""
        if self.split is None:
            raise InputError("this training set has no split; call ensure_split first")
        m = self.split == split
        pick = lambda a: None if a is None else a[m]  # noqa: E731
        return LabelledPatches(np.asarray(self.patches[m]), self.labels[m], self.split[m],
                               pick(self.label_kind), pick(self.true_label), pick(self.nucleus_key),
                               self.normalisation, pick(self.reviewers_disagreed))

    def save(self, path: str | Path) -> Path:
        """Write the NPZ form (no pickled objects). Returns the path written."""
        path = Path(path)
        if path.suffix != ".npz":
            raise InputError(f"LabelledPatches.save writes .npz, got {path.name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"format": np.array(FORMAT), "patches": self.patches, "labels": self.labels,
                  "normalisation": np.array(self.normalisation)}
        for name in OPTIONAL:
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        with atomic.replacing(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LabelledPatches":
        """Read an ``.npz`` or ``.parquet`` training set.

        Raises:
            InputError: missing file, unknown suffix, wrong format tag or bad content.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"training set not found: {path}")
        if path.suffix == ".npz":
            return cls._load_npz(path)
        if path.suffix == ".parquet":
            return cls._load_parquet(path)
        raise InputError(f"training set must be .npz or .parquet, got {path.name}")

    @classmethod
    def _load_npz(cls, path: Path) -> "LabelledPatches":
        try:
            with np.load(path, allow_pickle=False) as z:
                if "format" not in z or str(z["format"]) != FORMAT:
                    raise InputError(f"{path.name} is not a {FORMAT} file")
                get = lambda k: z[k] if k in z else None  # noqa: E731
                norm = get("normalisation")
                return cls(z["patches"], z["labels"], get("split"), get("label_kind"),
                           get("true_label"), get("nucleus_key"), LEGACY_NORMALISATION if norm is None else str(norm),
                           get("reviewers_disagreed"))
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # e.g. a truncated file
            if isinstance(exc, InputError):
                raise
            raise InputError(f"cannot read training set {path.name}: {exc or type(exc).__name__}") from exc

    @classmethod
    def _load_parquet(cls, path: Path) -> "LabelledPatches":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several unrelated types
            raise InputError(f"cannot read training set {path.name}: {exc}") from exc
        cols = set(table.column_names)
        if not {"patch", "label"} <= cols:
            raise InputError(f"{path.name} needs columns 'patch' and 'label', has {sorted(cols)}")
        raw = table.column("patch").to_pylist()
        if not raw:
            raise InputError(f"{path.name} holds no rows")
        meta = table.schema.metadata or {}
        size = meta.get(b"genuine.patch_size")
        n_vals = len(raw[0]) // 2
        p = int(size) if size else int(round(math.sqrt(n_vals / 3)))
        if any(len(b) != 2 * 3 * p * p for b in raw):
            raise InputError(f"{path.name}: every patch must hold 3*{p}*{p} float16 values")
        patches = np.stack([np.frombuffer(b, dtype="<f2") for b in raw]).reshape(len(raw), 3, p, p)
        col = lambda k: np.asarray(table.column(k).to_pylist()) if k in cols else None  # noqa: E731
        norm = meta.get(b"genuine.patch_normalisation", LEGACY_NORMALISATION.encode()).decode("utf-8", "replace")
        return cls(patches.astype(np.float16), col("label"), col("split"), col("label_kind"),
                   col("true_label"), col("nucleus_key"), norm, col("reviewers_disagreed"))

    def save_parquet(self, path: str | Path) -> Path:
        """Write the Parquet form (float16 patch bytes). Returns the path written."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "patch": [row.astype("<f2").tobytes() for row in np.asarray(self.patches)],
            "label": self.labels.astype(np.int64),
        }
        for name in OPTIONAL:
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        table = pa.table(data).replace_schema_metadata({"genuine.patch_size": str(self.patch_size),
                                                        "genuine.patch_normalisation": self.normalisation})
        with atomic.replacing(path) as tmp:
            pq.write_table(table, tmp)
        return path
