"""Segmentation benchmark: both backends on held-out synthetic fields and on the real image.

Held-out fields come from ``genuine_core.synth.make_field`` with a seed stream that
neither the cellpose training (``genuine train-cellpose``) nor the watershed sweep uses:
512 x 512, 25-45 nuclei (many touching), a random mix of the four cell lines, half under
nominal and half under shifted acquisition. Reported per backend: pooled instance F1,
precision and recall at IoU 0.5, merged / split counts, touching pairs merged, and
fields per second. On ``../shared/data/real/FISH_RGB.TIF``: nucleus count, time, and an
overlay image in ``docs/images/seg_overlay_<backend>.png``.

    python bench/bench_segmentation.py                       # both backends, 12 fields
    python bench/bench_segmentation.py --backends watershed --sweep   # + watershed settings grid

Writes ``bench/results/segmentation.json``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genuine_core.segmentation import WatershedConfig, segment  # noqa: E402
from genuine_core.segmentation.cellpose_train import CellposeTrainConfig, make_training_fields  # noqa: E402
from genuine_core.segmentation.metrics import evaluate_segmenter  # noqa: E402
from genuine_core.segmentation.watershed import segment_watershed  # noqa: E402

REAL = REPO.parent / "shared" / "data" / "real" / "FISH_RGB.TIF"


def held_out_fields(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(DAPI images, masks) from a seed stream disjoint from training (train uses SeedSequence(s).spawn)."""
    rng = np.random.default_rng([seed, 7_919])  # entropy tuple: never equal to a spawned child
    return make_training_fields(rng, n, CellposeTrainConfig(), progress=False)


def score(fn, images, masks) -> dict:
    """Pooled metrics and timing of ``fn(dapi) -> labels`` over fields, rounded for the report."""
    out = evaluate_segmenter(fn, images, masks)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def sweep_watershed(images, masks) -> list[dict]:
    """F1 over a small grid of watershed settings (run on tuning fields, not the test fields)."""
    rows = []
    grid = itertools.product((0.2, 0.25, 0.3, 0.35), (0.0, 0.5, 1.0), (0.07, 0.1, 0.14))
    for md, sw, ism in grid:
        cfg = WatershedConfig(min_distance=md, shape_weight=sw, intensity_smooth=ism)
        r = score(lambda d: segment_watershed(d, cfg), images, masks)
        rows.append({"min_distance": md, "shape_weight": sw, "intensity_smooth": ism,
                     "f1": r["f1"], "merged": r["merged"], "split": r["split"]})
        print(f"  md={md} sw={sw} ism={ism}: F1 {r['f1']:.3f} merged {r['merged']} split {r['split']}", flush=True)
    return sorted(rows, key=lambda r: -r["f1"])


def real_image(backend: str, model: str | None, overlay_dir: Path) -> dict:
    """Segment the real scan, save a downscaled overlay, return count and time."""
    from PIL import Image

    from genuine_core.io import read_scan
    from genuine_core.plotting import outline_overlay

    img = read_scan(REAL).image
    t = time.perf_counter()
    masks = segment(img, backend=backend, model_path=model)
    dt = time.perf_counter() - t
    gain = 0.9 / max(float(np.percentile(img, 99.5)), 1e-3)
    over = outline_overlay(img, masks, {}, default=(255, 255, 0), thickness=3, gain=gain)
    overlay_dir.mkdir(parents=True, exist_ok=True)
    path = overlay_dir / f"seg_overlay_{backend}.png"
    small = Image.fromarray(over).resize((700, 700), Image.LANCZOS).quantize(colors=128, method=Image.MEDIANCUT)
    small.save(path, optimize=True)
    areas = np.bincount(masks.ravel())[1:]
    areas = areas[areas > 0]
    return {"nuclei": int(len(areas)), "seconds": round(dt, 2),
            "median_area_px": float(np.median(areas)) if len(areas) else 0.0,
            "overlay": os.path.relpath(path, REPO), "overlay_kb": round(path.stat().st_size / 1024, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fields", type=int, default=12, help="held-out test fields")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--backends", default="watershed,cellpose")
    ap.add_argument("--model", default=None, help="cellpose model file or folder (default models/cellpose_synth)")
    ap.add_argument("--sweep", action="store_true", help="also sweep watershed settings on separate tuning fields")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "segmentation.json"))
    ap.add_argument("--overlay-dir", default=str(REPO / "docs" / "images"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    images, masks = held_out_fields(args.fields, args.seed)
    result: dict = {"fields": {"n": args.fields, "seed": args.seed, "shape": [512, 512], "nuclei_per_field": [25, 45],
                               "n_gt_nuclei": int(sum(m.max() for m in masks))}, "backends": {}}
    if args.sweep:
        tune_imgs, tune_masks = held_out_fields(max(args.fields // 2, 4), args.seed + 1)
        result["watershed_sweep"] = sweep_watershed(tune_imgs, tune_masks)[:10]
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend == "cellpose":  # not shipped: the benchmark runs without it, and says how to add it
            from genuine_core.errors import ModelLoadError
            from genuine_core.segmentation.cellpose_backend import resolve_model_path

            try:
                resolve_model_path(args.model)
            except ModelLoadError as exc:
                print(f"cellpose: skipped ({exc})", flush=True)
                continue
        print(f"{backend}: {args.fields} held-out fields ...", flush=True)
        r = score(lambda d: segment(d, backend=backend, model_path=args.model), images, masks)
        r["real_image"] = real_image(backend, args.model, Path(args.overlay_dir)) if REAL.is_file() else None
        result["backends"][backend] = r
        print(json.dumps(r, indent=1), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text()) if out.is_file() else {}
    old_backends = old.get("backends", {}) if old.get("fields") == result["fields"] else {}
    result["backends"] = old_backends | result["backends"]  # keep the other backend's last run
    if "watershed_sweep" not in result and "watershed_sweep" in old:
        result["watershed_sweep"] = old["watershed_sweep"]
    result["command"] = "python bench/bench_segmentation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
