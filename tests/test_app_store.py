"""A small store for the dashboard tests, built through the store's own API.

``build_small_store(path)`` writes three synthetic samples (an MNA cell line, a non-MNA
cell line and a 50 % mixture; one 256 x 256 field each, ground-truth masks as the
segmenter) scored by two small deterministic models:

- ``ratio-test`` (kind ``genuine``): counts bright MYCN/NMI spots in the patch (connected
  components above a threshold) as its "detector", calls MNA by the Cohn rule on those
  counts and turns the count ratio into a probability; boxes are the components' boxes.
- ``intensity-test`` (kind ``resnet``): the mean green/red intensity ratio through a
  logistic curve, with a deliberate bias so the two models disagree on some nuclei.

Both have validation rates in their metrics (for the corrected estimate). They are
plain ``ScoringModel`` records, so the store records them like any other model.
The fixtures ``small_store`` and ``umap_store`` (conftest.py) build them once per session; this
module also tests that they hold what the page tests rely on.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from genuine_core.io import write_scan_tiff
from genuine_core.pipeline import ScoringModel, process_scan
from genuine_core.rules import is_amplified
from genuine_core.synth import make_field

PATCH = 96
#: sample name -> (kind, expected MNA fraction, genotype, composition)
SAMPLES = {
    "LINE-MNA": ("cell-line", None, "MNA", {"mna_dm": 1.0}),
    "LINE-NON": ("cell-line", None, "non-MNA", {"nonmna_diploid": 1.0}),
    "MIX-50": ("mixture", 0.5, None, {"mna_dm": 0.5, "nonmna_diploid": 0.5}),
}
METRICS = {"val": {"tp": 90, "fn": 10, "tn": 95, "fp": 5, "tpr": 0.9, "tnr": 0.95}}


def _spots(channel: np.ndarray, thr: float) -> list[tuple[int, int, int, int]]:
    lab, n = ndimage.label(channel > thr)
    return [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(lab) if s is not None]


def _ratio_predict(patches: np.ndarray):
    rows, dets, emb = [], [], []
    for i, p in enumerate(np.asarray(patches, np.float32)):
        red, green = _spots(p[0], 0.45), _spots(p[1], 0.45)
        n_nmi, n_mycn = len(red), len(green)
        call = int(is_amplified(n_nmi, n_mycn, 0))
        ratio = (n_mycn + 0.5) / (max(n_nmi, 1) * 4.0)
        prob = float(1 / (1 + np.exp(-3.0 * np.log(ratio))))
        rows.append(dict(prob=prob, prob_calibrated=prob, uncertainty=float(1 - abs(2 * prob - 1)) * 0.3, call=call,
                         det_nmi=n_nmi, det_mycn=n_mycn, det_cluster=0))
        for cls, boxes in ((1, red), (2, green)):
            dets += [dict(row=i, cls=cls, x1=float(x1), y1=float(y1), x2=float(x2), y2=float(y2), score=0.9)
                     for x1, y1, x2, y2 in boxes]
        emb.append([p[0].mean(), p[1].mean(), p[2].mean(), n_nmi / 5, n_mycn / 20, prob])
    det = pd.DataFrame(dets, columns=["row", "cls", "x1", "y1", "x2", "y2", "score"])
    return SimpleNamespace(table=pd.DataFrame(rows), embeddings=np.asarray(emb, np.float32), detections=det)


def _intensity_predict(patches: np.ndarray):
    p = np.asarray(patches, np.float32)
    inside = p[:, 2] > 0.02
    g = (p[:, 1] * inside).sum((1, 2)) / np.maximum(inside.sum((1, 2)), 1)
    r = (p[:, 0] * inside).sum((1, 2)) / np.maximum(inside.sum((1, 2)), 1)
    prob = 1 / (1 + np.exp(-4.0 * (np.log((g + 1e-3) / (r + 1e-3)) - 0.3)))
    table = pd.DataFrame(dict(prob=prob, prob_calibrated=prob, uncertainty=np.abs(0.5 - prob) * 0.1,
                              call=(prob >= 0.5).astype(int), det_nmi=pd.NA, det_mycn=pd.NA, det_cluster=pd.NA))
    emb = np.stack([g, r, p[:, 2].mean((1, 2)), prob], 1).astype(np.float32)
    return SimpleNamespace(table=table, embeddings=emb,
                           detections=pd.DataFrame(columns=["row", "cls", "x1", "y1", "x2", "y2", "score"]))


def small_models() -> list[ScoringModel]:
    """The two deterministic test models (see the module docstring)."""
    common = dict(preset="test", patch_size=PATCH, metrics=METRICS, folder=None)
    return [
        ScoringModel(name="ratio-test", kind="genuine", checksum="a" * 64, config={"kind": "genuine"},
                     predict=_ratio_predict, **common),
        ScoringModel(name="intensity-test", kind="resnet", checksum="b" * 64, config={"kind": "resnet"},
                     predict=_intensity_predict, **common),
    ]


def build_small_store(path: str | Path, seed: int = 0, n_nuclei: int = 14, with_umap: bool = False) -> dict:
    """Write the small store at ``path`` (a new file); return ``{sample: n_nuclei_stored}``.

    With ``with_umap`` a small UMAP is fitted per model (training-split nuclei as reference,
    the mixture placed with the saved map); the first fit in a process compiles umap-learn's
    numba code (~1 min), so tests that need it are marked slow.
    """
    from store.db import open_store
    from store.registry import register_model
    from store.samples import ensure_sample
    from store.scans import write_scan_result

    path = Path(path)
    rng = np.random.default_rng(seed)
    counts = {}
    models = small_models()
    with open_store(path) as s:
        ids = {m.name: register_model(s, m) for m in models}
        for name, (kind, expected, genotype, comp) in SAMPLES.items():
            field = make_field(rng, comp, n_nuclei, shape=(256, 256))
            tif = path.parent / f"{name}.tif"
            write_scan_tiff(tif, field.image)
            result = process_scan(tif, models, segmenter=lambda img, m=field.masks: m)
            nuc = field.nuclei.set_index("nucleus_id")
            kept = result.nuclei["mask_label"].to_numpy()
            labels = pd.concat([
                pd.DataFrame({"mask_label": kept, "kind": "auto", "label": nuc.loc[kept, "auto_label"].to_numpy(),
                              "source": "genotype"}),
                pd.DataFrame({"mask_label": kept, "kind": "truth", "label": nuc.loc[kept, "true_label"].to_numpy(),
                              "source": "synthetic"}),
            ], ignore_index=True)
            sid = ensure_sample(s, name, kind=kind, expected=expected, genotype=genotype)
            write_scan_result(s, sid, result, ids, labels=labels, split="mixture" if kind == "mixture" else "train")
            counts[name] = result.n_nuclei
        if with_umap:
            from genuine_core.embedding import UmapConfig
            from store.umap import fit_umap

            for m in models:
                fit_umap(s, m.name, UmapConfig(n_neighbors=5, n_epochs=50, seed=seed))
    return counts


def test_small_store_holds_samples_models_and_flags(small_store):
    from store.db import open_store
    from store.review import review_progress
    from store.summary import sample_summaries

    path, counts = small_store
    assert set(counts) == set(SAMPLES) and all(n >= 5 for n in counts.values())
    with open_store(path, read_only=True) as s:
        summ = sample_summaries(s)
        assert set(summ["model"]) == {"ratio-test", "intensity-test"}
        got = summ[summ["model"] == "ratio-test"].set_index("sample")["n_scored"].to_dict()
        assert got == counts
        assert review_progress(s)["total"] > 0


@pytest.mark.slow
def test_umap_store_places_every_nucleus(umap_store):
    from store.db import open_store
    from store.umap import umap_points

    path, counts = umap_store
    with open_store(path, read_only=True) as s:
        for model in ("ratio-test", "intensity-test"):
            pts = umap_points(s, model)
            assert len(pts) == sum(counts.values()) and set(pts["source"]) == {"training", "mixture"}
            assert np.isfinite(pts[["x", "y"]].to_numpy()).all()


def test_a_command_a_dashboard_page_suggests_names_the_store_by_its_full_path(tmp_path, monkeypatch):
    # before: "record it with genuine store check --fix-paths" (the dashboard's $GENUINE_DB left out), which in the
    # user's own shell acted on another store (demo/genuine_demo.duckdb, say)
    from streamlit.testing.v1 import AppTest

    from store.location import genuine_command

    def page():
        import streamlit as st

        from store.location import genuine_command

        st.write(genuine_command("store check --fix-paths", "lab.duckdb"))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENUINE_DB", "lab.duckdb")
    at = AppTest.from_function(page).run()
    assert at.markdown[0].value == f"genuine store check --fix-paths --db {tmp_path / 'lab.duckdb'}"
    assert genuine_command("store check --fix-paths", "lab.duckdb") == "genuine store check --fix-paths"  # the CLI
