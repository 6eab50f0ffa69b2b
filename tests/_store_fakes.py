"""Test doubles for the store/ingest tests: fake models with the real Prediction layout, scan files."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from scipy import ndimage

from genuine_core.io import write_scan_tiff
from genuine_core.pipeline import ScoringModel


@dataclass
class FakePrediction:
    """Same fields as ``genuine_core.inference.Prediction``."""

    table: pd.DataFrame
    embeddings: np.ndarray
    detections: pd.DataFrame


def fake_predict(patches: np.ndarray, bias: float = 0.0) -> FakePrediction:
    """Deterministic 'model': MNA probability from the green/red mass ratio of each patch."""
    n = len(patches)
    red = patches[:, 0].reshape(n, -1).sum(1)
    green = patches[:, 1].reshape(n, -1).sum(1)
    ratio = green / np.maximum(red, 1e-6)
    prob = 1.0 / (1.0 + np.exp(-(3.0 * (ratio - 1.5) + bias)))
    table = pd.DataFrame({
        "prob": prob.astype(np.float32),
        "prob_calibrated": prob.astype(np.float32),
        "uncertainty": (0.5 - np.abs(prob - 0.5)).astype(np.float32),
        "call": (prob >= 0.5).astype(np.int64),
        "det_nmi": np.full(n, 2), "det_mycn": np.full(n, 3), "det_cluster": np.zeros(n, np.int64),
    })
    emb = np.stack([patches.mean((2, 3))[:, c] for c in range(3)] + [patches.std((2, 3))[:, c] for c in range(3)]
                   + [np.full(n, bias)], 1).astype(np.float32)
    det = pd.DataFrame({"row": np.arange(n), "cls": np.full(n, 2), "x1": 10.0, "y1": 10.0, "x2": 14.0, "y2": 14.0,
                        "score": 0.9})
    return FakePrediction(table, emb, det)


def fake_model(name: str = "fake", bias: float = 0.0, patch_size: int = 64, kind: str = "genuine",
               metrics: dict | None = None) -> ScoringModel:
    """A ScoringModel around :func:`fake_predict`."""
    return ScoringModel(
        name=name, kind=kind, preset="test", patch_size=patch_size,
        checksum=hashlib.sha256(f"{name}:{bias}".encode()).hexdigest(),
        config={"kind": kind, "patch_size": patch_size}, metrics=metrics or {}, folder=None,
        predict=lambda p: fake_predict(p, bias),
    )


def threshold_segmenter(image: np.ndarray) -> np.ndarray:
    """Fast test segmenter: DAPI above background, connected components (touching nuclei merge)."""
    dapi = image[..., 2]
    masks, _ = ndimage.label(dapi > 0.12)
    return masks.astype(np.int32)


def write_toy_scans(folder: Path, n: int, make_toy_scan) -> list[Path]:
    """``n`` distinct toy scans written as RGB uint16 TIFFs; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        toy = make_toy_scan(seed=100 + i)
        p = folder / f"scan_{i}.tif"
        write_scan_tiff(p, toy.image)
        paths.append(p)
    return paths


def synthetic_result(sha: str, probs_by_model: dict[str, np.ndarray], uncertainty: np.ndarray | None = None,
                     patch_size: int = 8, emb_dim: int = 4, seed: int = 0):
    """A hand-made ScanResult with the given per-model probabilities (no image processing)."""
    from genuine_core.pipeline import ModelOutput, ScanResult

    rng = np.random.default_rng(seed)
    n = len(next(iter(probs_by_model.values())))
    nuclei = pd.DataFrame({
        "mask_label": np.arange(1, n + 1), "cy": rng.uniform(0, 100, n), "cx": rng.uniform(0, 100, n),
        "bbox_y0": 0, "bbox_x0": 0, "bbox_y1": 10, "bbox_x1": 10, "area": 80,
        "mean_nmi": 0.1, "mean_mycn": 0.2, "mean_dapi": 0.5, "cropped": False,
    })
    outputs = {}
    for name, probs in probs_by_model.items():
        probs = np.asarray(probs, np.float32)
        unc = np.zeros(n, np.float32) if uncertainty is None else np.asarray(uncertainty, np.float32)
        table = pd.DataFrame({"prob": probs, "prob_calibrated": probs, "uncertainty": unc,
                              "call": (probs >= 0.5).astype(np.int64), "det_nmi": 2, "det_mycn": 2, "det_cluster": 0})
        outputs[name] = ModelOutput(table, rng.normal(size=(n, emb_dim)).astype(np.float32),
                                    pd.DataFrame({"row": [0], "cls": [2], "x1": [1.0], "y1": [1.0], "x2": [3.0],
                                                  "y2": [3.0], "score": [0.8]}))
    info = {"file_name": f"{sha[:8]}.tif", "path": f"/nowhere/{sha[:8]}.tif", "sha256": sha, "height": 16,
            "width": 16, "source_shape": [16, 16, 3], "source_dtype": "uint8",
            "channel_map": {"nmi": 0, "mycn": 1, "dapi": 2}, "acquisition": {}, "segmentation": {"backend": "test"}}
    return ScanResult(info=info, masks=np.zeros((16, 16), np.int32), nuclei=nuclei,
                      patches=rng.uniform(0, 1, (n, 3, patch_size, patch_size)).astype(np.float32),
                      patch_size=patch_size, n_border_skipped=0, outputs=outputs,
                      preview=np.zeros((16, 16, 3), np.uint8))


def store_at_version(path: Path, version: int) -> duckdb.DuckDBPyConnection:
    """A new store file as the release of schema ``version`` wrote it (steps 1..version only), for upgrade
    tests; returns the open connection for rows to add (close it before opening the store)."""
    from store import migrations

    conn = duckdb.connect(str(path))
    for step, note, script in migrations.STEPS[:version]:
        conn.execute(script())
        conn.execute("INSERT INTO schema_version (version, note) VALUES (?, ?)", [step, note])
    return conn


def private_store_copy(src: Path, tmp_path: Path, monkeypatch) -> Path:
    """Copy the store ``src`` (and its ``_files`` folder) into ``tmp_path`` and export it as ``GENUINE_DB``."""
    dst = tmp_path / "store.duckdb"
    shutil.copy(src, dst)
    side = src.with_name(src.stem + "_files")  # saved UMAP maps live beside the store
    if side.is_dir():
        shutil.copytree(side, dst.with_name(dst.stem + "_files"))
    monkeypatch.setenv("GENUINE_DB", str(dst))
    return dst
