"""UMAP maps of nucleus embeddings: fit once on a reference set, place new nuclei without refitting.

:func:`fit_umap` runs umap-learn (seeded) on the reference embeddings. The nearest
neighbour graph is computed exactly with scikit-learn and handed to umap-learn as
``precomputed_knn``, which keeps the fit deterministic and skips compiling
pynndescent (minutes of numba JIT on a small CPU).

:class:`UmapMap` is the fitted map as plain arrays (reference embeddings, their 2-D
coordinates, the settings). :meth:`UmapMap.transform` places new points the way
umap-learn's ``transform`` initialises them: the fuzzy-simplicial membership weights
of each point's k nearest reference points (UMAP's smooth-kNN distance, McInnes et
al. 2018, eq. for ``rho``/``sigma``) average those points' coordinates. umap-learn's
optional refinement epochs are not run, so placement takes milliseconds, is exactly
reproducible, and needs no pickled search index.

Trust boundary: a map is saved as an ``.npz`` of numeric arrays plus a JSON config
(:meth:`UmapMap.save`), read back with ``allow_pickle=False`` and checked against the
sha256 recorded in the store. Nothing is unpickled, so a swapped file can at worst
give wrong coordinates, and a changed checksum is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genuine_core import atomic
from genuine_core.errors import InputError

FORMAT = "genuine-umap/1"
METRICS = ("euclidean", "cosine")


@dataclass(frozen=True)
class UmapConfig:
    """UMAP settings.

    Attributes:
        n_neighbors: size of the local neighbourhood (umap-learn default 15).
        min_dist: minimum distance of points in the map.
        metric: ``euclidean`` or ``cosine`` (rows are L2-normalised first).
        n_epochs: optimisation epochs of the fit.
        seed: random seed of the fit (makes it deterministic).
        max_reference: at most this many reference points are fitted (a seeded random
            subset); the rest are placed with :meth:`UmapMap.transform`.
    """

    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "euclidean"
    n_epochs: int = 200
    seed: int = 0
    max_reference: int = 5000

    def __post_init__(self) -> None:
        if not isinstance(self.n_neighbors, int) or self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be an int >= 2, got {self.n_neighbors!r}")
        if not 0 <= self.min_dist <= 1:
            raise ValueError(f"min_dist must be in [0, 1], got {self.min_dist!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if not isinstance(self.n_epochs, int) or self.n_epochs < 10:
            raise ValueError(f"n_epochs must be an int >= 10, got {self.n_epochs!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if not isinstance(self.max_reference, int) or self.max_reference < 3:
            raise ValueError(f"max_reference must be an int >= 3, got {self.max_reference!r}")


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"embeddings must be a non-empty (N, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("embeddings hold NaN or infinite values")
    if metric == "cosine":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norm, 1e-12)
    return np.ascontiguousarray(x)


def _knn(reference: np.ndarray, query: np.ndarray, k: int, chunk: int = 4096):
    """Exact k nearest reference rows of each query row: (indices (N, k) int64, distances (N, k) float32)."""
    ref_sq = np.einsum("ij,ij->i", reference, reference)
    k_eff = min(k, reference.shape[0])
    idx_out = np.empty((query.shape[0], k_eff), np.int64)
    dist_out = np.empty((query.shape[0], k_eff), np.float32)
    for s in range(0, query.shape[0], chunk):
        q = query[s:s + chunk]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] + ref_sq[None, :] - 2.0 * (q @ reference.T)
        np.maximum(d2, 0, out=d2)
        part = np.argpartition(d2, k_eff - 1, axis=1)[:, :k_eff]
        pd2 = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(pd2, axis=1, kind="stable")
        idx_out[s:s + len(q)] = np.take_along_axis(part, order, axis=1)
        dist_out[s:s + len(q)] = np.sqrt(np.take_along_axis(pd2, order, axis=1))
    return idx_out, dist_out


def membership_weights(distances: np.ndarray, n_iter: int = 64) -> np.ndarray:
    """UMAP's fuzzy membership of each point to its k nearest neighbours.

    For each row, ``rho`` = distance to the nearest neighbour and ``sigma`` solves
    ``sum_j exp(-(d_j - rho) / sigma) = log2(k)`` (bisection); weights are
    ``exp(-max(d_j - rho, 0) / sigma)``.

    Args:
        distances: (N, k) ascending distances.

    Returns:
        (N, k) float64 weights in (0, 1].
    """
    d = np.asarray(distances, dtype=np.float64)
    k = d.shape[1]
    if k == 1:
        return np.ones_like(d)
    target = np.log2(k)
    shifted = np.maximum(d - d[:, :1], 0.0)
    lo = np.zeros(d.shape[0])
    hi = np.full(d.shape[0], np.inf)
    sigma = np.ones(d.shape[0])
    for _ in range(n_iter):
        total = np.exp(-shifted / sigma[:, None]).sum(1)
        too_big = total > target  # sigma too large
        hi = np.where(too_big, sigma, hi)
        lo = np.where(too_big, lo, sigma)
        sigma = np.where(np.isinf(hi), sigma * 2, (lo + hi) / 2)
    sigma = np.maximum(sigma, 1e-3 * np.maximum(shifted.mean(1), 1e-12))
    return np.exp(-shifted / sigma[:, None])


@dataclass
class UmapMap:
    """A fitted 2-D map.

    Attributes:
        reference: (R, D) float32 reference embeddings (after the metric's preprocessing).
        coords: (R, 2) float32 their map coordinates.
        config: the settings it was fitted with.
    """

    reference: np.ndarray
    coords: np.ndarray
    config: UmapConfig

    def transform(self, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Place new embeddings (N, D) on the map; returns (N, 2) float32.

        Raises:
            InputError: wrong dimension or non-finite values.
        """
        x = _prepare(x, self.config.metric)
        if x.shape[1] != self.reference.shape[1]:
            raise InputError(f"embeddings have {x.shape[1]} dimensions, the map was fitted on "
                             f"{self.reference.shape[1]}")
        idx, dist = _knn(self.reference, x, self.config.n_neighbors, chunk=chunk)
        w = membership_weights(dist)
        w /= w.sum(1, keepdims=True)
        return np.einsum("nk,nkc->nc", w, self.coords[idx].astype(np.float64)).astype(np.float32)

    def to_bytes(self) -> bytes:
        """The ``.npz`` bytes written by :meth:`save`."""
        buf = io.BytesIO()
        np.savez_compressed(buf, format=np.array(FORMAT), reference=self.reference, coords=self.coords,
                            config=np.array(json.dumps(dataclasses.asdict(self.config), sort_keys=True)))
        return buf.getvalue()

    def save(self, path: str | Path) -> str:
        """Write the map atomically to ``path`` (``.npz``); return its sha256."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_bytes()
        atomic.write_bytes(path, data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: str | Path, sha256: str | None = None) -> "UmapMap":
        """Read a map written by :meth:`save` (never unpickles).

        Args:
            sha256: when given, the file's checksum must match.

        Raises:
            InputError: missing file, checksum mismatch, or not a map file.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read UMAP map ({exc.strerror or exc})") from exc
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise InputError(f"{path}: checksum does not match the one recorded in the store; refusing it")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                if str(z["format"]) != FORMAT:
                    raise InputError(f"{path}: not a {FORMAT} file")
                config = UmapConfig(**json.loads(str(z["config"])))
                return cls(z["reference"].astype(np.float32), z["coords"].astype(np.float32), config)
        except (ValueError, KeyError, OSError, TypeError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{path}: not a valid UMAP map ({exc})") from exc


def fit_umap(x: np.ndarray, config: UmapConfig = UmapConfig()) -> UmapMap:
    """Fit umap-learn on reference embeddings.

    Args:
        x: (R, D) reference embeddings; at most ``config.max_reference`` rows (subsample first).
        config: settings (seeded).

    Returns:
        The fitted :class:`UmapMap` (its ``coords`` are the reference points' coordinates).

    Raises:
        InputError: fewer than ``n_neighbors + 1`` points, or bad values.
    """
    import umap

    ref = _prepare(x, config.metric)
    n = ref.shape[0]
    if n > config.max_reference:
        raise ValueError(f"{n} reference points > max_reference={config.max_reference}; subsample first")
    if n <= config.n_neighbors:
        raise InputError(f"UMAP needs more than n_neighbors={config.n_neighbors} reference nuclei, got {n}")
    # each point is its own first neighbour at distance 0, as umap-learn's own search returns it
    idx, dist = _knn(ref, ref, config.n_neighbors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap warns that random_state disables parallelism
        reducer = umap.UMAP(n_neighbors=config.n_neighbors, min_dist=config.min_dist, metric="euclidean",
                            n_epochs=config.n_epochs, random_state=config.seed,
                            precomputed_knn=(idx.astype(np.int64), dist.astype(np.float32), None))
        coords = reducer.fit_transform(ref)
    return UmapMap(ref, np.asarray(coords, dtype=np.float32), config)


def subsample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``min(n, k)`` rows drawn without replacement."""
    if n <= k:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))
