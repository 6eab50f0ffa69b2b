"""Training data: classification and detection sets over a benchmark or a training-set file.

Sources (``source`` argument):

- a synthetic benchmark folder (``genuine synth benchmark``; has ``nuclei.parquet``),
  read through :func:`genuine_core.synth.load_benchmark`;
- a :class:`training.labelled.LabelledPatches` file (``.npz`` / ``.parquet``), e.g.
  curated labels exported from the store (classification only).

Label noise (paper section 2.2.1): ``beta`` flips each training-pool label (train and
val splits, never test or mixtures) with probability ``beta``, using a generator
seeded from ``(seed, split)`` so the flips are reproducible and recorded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import pandas as pd
import torch

from genuine_core.errors import InputError
from genuine_core.patches import LEGACY_NORMALISATION
from training.labelled import LabelledPatches

logger = logging.getLogger(__name__)

LabelSource = Literal["auto", "truth"]
TRAINING_POOL = ("train", "val")
_SPLIT_SALT = {"train": 1, "val": 2, "test": 3, "mixture": 4}


@dataclass
class ClassificationData:
    """Patches with training targets.

    Attributes:
        patches: ``(N, 3, P, P)`` float16/float32 (may be a read-only memmap).
        labels: ``(N,)`` int8 targets used for training (noisy when ``beta > 0``).
        auto_labels: ``(N,)`` int8 automatic labels as stored (before ``beta`` flips),
            or None.
        true_labels: ``(N,)`` int8 ground truth, or None when unknown.
        flipped: ``(N,)`` bool, True where ``beta`` flipped the label.
        meta: per-row table (benchmark nuclei columns, or LabelledPatches fields).
        split: split name.
        normalisation: how the patches were normalised (``genuine_core.patches.NORMALISATIONS``).
    """

    patches: np.ndarray
    labels: np.ndarray
    auto_labels: np.ndarray | None
    true_labels: np.ndarray | None
    flipped: np.ndarray
    meta: pd.DataFrame
    split: str
    normalisation: str = LEGACY_NORMALISATION

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    @property
    def patch_size(self) -> int:
        """Patch side ``P``."""
        return int(self.patches.shape[-1])

    def take(self, idx: np.ndarray) -> "ClassificationData":
        """Rows ``idx`` as a new (in-memory) set."""
        idx = np.sort(np.asarray(idx))
        opt = lambda a: None if a is None else a[idx]  # noqa: E731
        return ClassificationData(np.asarray(self.patches[idx]), self.labels[idx], opt(self.auto_labels),
                                  opt(self.true_labels), self.flipped[idx],
                                  self.meta.iloc[idx].reset_index(drop=True), self.split, self.normalisation)


@dataclass
class DetectionData:
    """Patches with signal boxes.

    Attributes:
        patches: ``(N, 3, P, P)`` float16/float32.
        boxes: N arrays ``(M_i, 4)`` float32 ``x1, y1, x2, y2`` in patch pixels.
        classes: N arrays ``(M_i,)`` int64 in {1 NMI, 2 MYCN, 3 cluster}.
        meta: per-row nuclei table.
        normalisation: how the patches were normalised.
    """

    patches: np.ndarray
    boxes: list[np.ndarray]
    classes: list[np.ndarray]
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)
    normalisation: str = LEGACY_NORMALISATION

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    def take(self, idx: np.ndarray) -> "DetectionData":
        """Rows ``idx`` as a new (in-memory) set."""
        idx = np.sort(np.asarray(idx))
        return DetectionData(np.asarray(self.patches[idx]), [self.boxes[i] for i in idx],
                             [self.classes[i] for i in idx],
                             self.meta.iloc[idx].reset_index(drop=True) if len(self.meta) else self.meta,
                             self.normalisation)


def flip_labels(labels: np.ndarray, beta: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flip each binary label with probability ``beta`` (paper eq. for l').

    Args:
        labels: ``(N,)`` ints in {0, 1}.
        beta: flip probability in [0, 1].
        rng: NumPy generator.

    Returns:
        ``(noisy labels int8, flipped mask bool)``.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    labels = np.asarray(labels).astype(np.int8)
    flipped = rng.random(labels.shape[0]) < beta
    return np.where(flipped, 1 - labels, labels).astype(np.int8), flipped


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The generator used for ``beta`` flips of one split (independent per split)."""
    return np.random.default_rng([int(seed), _SPLIT_SALT.get(split, 99)])


def is_benchmark(source: str | Path) -> bool:
    """True when ``source`` is a benchmark folder."""
    p = Path(source)
    return p.is_dir() and (p / "nuclei.parquet").is_file()


def data_fingerprint(source: str | Path) -> str:
    """sha256 of what identifies a training source: a benchmark's ``nuclei.parquet`` (its nuclei, labels
    and splits), or the training-set file itself. A resumed run compares it with the one it started on."""
    from genuine_core.models.folder import sha256_file

    p = Path(source)
    return sha256_file(p / "nuclei.parquet" if is_benchmark(p) else p)


def check_source(source: str | Path) -> Path:
    p = Path(source)
    if is_benchmark(p):
        return p
    if p.is_file() and p.suffix in (".npz", ".parquet"):
        return p
    if p.is_dir():
        raise InputError(f"{p} is not a benchmark folder (no nuclei.parquet); "
                         "make one with: genuine synth benchmark --size cpu --seed 0 --out data/bench_cpu")
    if p.is_file():
        raise InputError(f"{p} is a file but not a training set: expected a benchmark folder or a labelled-patches "
                         ".npz/.parquet file (genuine export labels)")
    raise InputError(f"training data not found: {p}. Make a benchmark with: "
                     "genuine synth benchmark --size cpu --seed 0 --out data/bench_cpu "
                     "or pass a LabelledPatches .npz/.parquet file")


def _load_split(source: Path, split: str):
    from genuine_core.synth import load_benchmark  # imported late: heavy and optional

    return load_benchmark(source, split)


def load_classification(
    source: str | Path, split: str, label: LabelSource = "auto", beta: float = 0.0, seed: int = 0
) -> ClassificationData:
    """Load one split as a classification set.

    Args:
        source: benchmark folder or LabelledPatches file.
        split: ``train`` | ``val`` | ``test`` | ``mixture`` (mixture: benchmark only).
        label: train on automatic labels (``auto``, the paper's setting) or on ground
            truth (``truth``, benchmark only; an upper bound).
        beta: extra label-flip probability applied to the training pool (train, val).
        seed: seeds the flips (and the split of a LabelledPatches file without one).

    Raises:
        InputError: missing data, unknown split, or ``truth`` without ground truth.
    """
    src = check_source(source)
    if label not in ("auto", "truth"):
        raise InputError(f"label must be 'auto' or 'truth', got {label!r}")
    if is_benchmark(src):
        bs = _load_split(src, split)
        nuclei = bs.nuclei.reset_index(drop=True)
        auto = nuclei["auto_label"].to_numpy().astype(np.int8)
        truth = nuclei["true_label"].to_numpy().astype(np.int8)
        base = truth if label == "truth" else auto
        patches, meta, normalisation = bs.patches, nuclei, bs.normalisation
    else:
        lp = LabelledPatches.load(src).ensure_split(np.random.default_rng(seed))
        if split not in ("train", "val", "test"):
            raise InputError(f"a training-set file has splits train/val/test, not {split!r}")
        lp = lp.subset(split)
        truth = lp.true_label
        if truth is not None and (truth < 0).any():
            truth = None if label != "truth" else truth
        if label == "truth" and (truth is None or (truth < 0).any()):
            raise InputError("label='truth' needs ground truth (true_label) for every patch")
        auto = lp.labels
        base = truth if label == "truth" else auto
        patches, normalisation = lp.patches, lp.normalisation
        meta = pd.DataFrame({k: getattr(lp, k) for k in ("label_kind", "nucleus_key") if getattr(lp, k) is not None})
        meta = meta if len(meta.columns) else pd.DataFrame(index=range(len(lp)))
    if split in TRAINING_POOL and beta > 0:
        labels, flipped = flip_labels(base, beta, split_rng(seed, split))
        logger.info("beta=%.3f flipped %d of %d %s labels", beta, int(flipped.sum()), len(labels), split)
    else:
        labels, flipped = base.astype(np.int8), np.zeros(len(base), bool)
    if len(labels) == 0:
        raise InputError(f"split {split!r} of {src} is empty")
    return ClassificationData(patches, labels, auto, truth, flipped, meta, split, normalisation)


def load_detection(source: str | Path, split: str) -> DetectionData:
    """Load one benchmark split with its exact signal boxes (patch coordinates).

    Raises:
        InputError: ``source`` is not a benchmark folder.
    """
    src = check_source(source)
    if not is_benchmark(src):
        raise InputError("detector training needs a benchmark folder with boxes, not a training-set file")
    bs = _load_split(src, split)
    n = int(bs.patches.shape[0])
    boxes = [np.zeros((0, 4), np.float32) for _ in range(n)]
    classes = [np.zeros((0,), np.int64) for _ in range(n)]
    b = bs.boxes
    if len(b):
        b = b[(b["patch_row"] >= 0) & (b["patch_row"] < n)]
        for row, grp in b.groupby("patch_row", sort=True):
            boxes[int(row)] = grp[["x1", "y1", "x2", "y2"]].to_numpy(np.float32)
            classes[int(row)] = grp["cls"].to_numpy(np.int64)
    return DetectionData(bs.patches, boxes, classes, bs.nuclei.reset_index(drop=True), bs.normalisation)


def subsample(n: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` rows (all when ``limit`` is None), sorted."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=int(limit), replace=False))


def batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Yield index batches over ``range(n)``; shuffled when ``rng`` is given. A last batch of one
    row joins the one before it (batch normalisation cannot train on a single row)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = rng.permutation(n) if rng is not None else np.arange(n)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        yield order[start:starts[i + 1] if i + 1 < len(starts) else n]


def to_tensor(patches: np.ndarray, idx: np.ndarray | None = None) -> torch.Tensor:
    """Rows of a float16/float32 patch array as a float32 tensor ``(B, 3, P, P)``."""
    arr = patches if idx is None else patches[idx]
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
