"""``genuine segment``: segment nuclei in scans and cut normalised patches.

For each image, ``OUT`` receives ``<name>_masks.tif`` (int32 instance masks),
``<name>_overlay.png`` (outlines on the scan), ``<name>_patches.npy`` ((N, 3, P, P)
float16) and ``<name>_nuclei.parquet`` (the patch table), and ``OUT/summary.json``
lists counts and timings for every image. Every input is checked before anything is
written, so a bad file or a missing model leaves ``OUT`` untouched.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from genuine_core.commands.checks import PATCH_SIZE_RANGE, in_range, output_folder

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the options of ``genuine segment``."""
    p.add_argument("images", nargs="+", metavar="IMAGE", help="scan files (TIFF, PNG, JPEG)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--backend", choices=("watershed", "cellpose"), default=None,
                   help="segmentation backend (default: the package default)")
    p.add_argument("--channels", default=None,
                   help="source channel of each role, e.g. 'nmi=0,mycn=1,dapi=2', 'RGB' or 'BGR' "
                        "(required unless the image has exactly 3 channels)")
    p.add_argument("--patch-size", type=int, default=96, help="patch side in pixels (default: %(default)s)")
    p.add_argument("--model", default=None, help="cellpose model file or folder (cellpose backend)")
    p.add_argument("--diameter", type=float, default=None, help="expected nucleus diameter in pixels")
    p.add_argument("--normalisation", default="spot_flux", choices=["percentile", "spot_flux"],
                   help="patch normalisation; use the one of the models that will score the patches "
                        "(their config.json patch_normalisation; default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress (bar and per-image lines on stderr)")


def _output_names(paths: list[Path]) -> list[str]:
    """Unique file-name stems for the outputs (``name``, ``name-2``, ... on clashes)."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        stem = p.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def run(args: argparse.Namespace) -> int:
    """Check every input, then segment, extract patches and write outputs image by image."""
    import numpy as np
    from tqdm import tqdm

    from genuine_core.io import ChannelMap, read_scan
    from genuine_core.patches import extract_patches
    from genuine_core.segmentation import DEFAULT_BACKEND, DIAMETER_RANGE, segment

    backend = args.backend or DEFAULT_BACKEND
    in_range(args.patch_size, PATCH_SIZE_RANGE, "--patch-size")
    if args.diameter is not None:
        in_range(args.diameter, DIAMETER_RANGE, "--diameter", " px")
    channel_map = ChannelMap.parse(args.channels) if args.channels else None
    model_path = None
    if backend == "cellpose":
        from genuine_core.segmentation.cellpose_backend import resolve_model_path

        model_path = str(resolve_model_path(args.model))  # ModelLoadError before anything is written
    out = output_folder(args.out)
    paths = [Path(p) for p in args.images]
    quiet = getattr(args, "quiet", False)
    for p in tqdm(paths, desc="checking", unit="image", disable=True if quiet else None, leave=False):
        read_scan(p, channel_map)  # raises InputError with the reason; nothing written yet

    out.mkdir(parents=True, exist_ok=True)
    results = []
    n = len(paths)

    def say(text: str) -> None:  # per-image progress on stderr, also when stderr is not a terminal
        if not quiet:
            tqdm.write(text, file=sys.stderr)
            sys.stderr.flush()

    for i, (path, name) in enumerate(tqdm(list(zip(paths, _output_names(paths))), desc="segmenting", unit="image",
                                          disable=True if quiet else None), start=1):
        t0 = time.perf_counter()
        scan = read_scan(path, channel_map)
        t1 = time.perf_counter()
        h, w = scan.image.shape[:2]
        say(f"[{i}/{n}] {path.name}: {h} x {w} px, segmenting ({backend}) ...")
        masks = segment(scan.image, backend=backend, model_path=model_path, diameter=args.diameter)
        t2 = time.perf_counter()
        ps = extract_patches(scan.image, masks, size=args.patch_size, scan_id=name,
                             normalisation=args.normalisation)
        t3 = time.perf_counter()
        files = _write_outputs(out, name, scan.image, masks, ps)
        t4 = time.perf_counter()
        results.append({
            "image": str(path), "name": name, "sha256": scan.sha256, "shape": list(scan.image.shape[:2]),
            "source_shape": list(scan.source_shape), "source_dtype": scan.source_dtype,
            "channel_map": scan.channel_map.text(), "backend": backend,
            "nuclei_found": int(len(np.unique(masks)) - (1 if (masks == 0).any() else 0)),
            "patches": int(len(ps.patches)), "border_skipped": int(ps.n_border_skipped),
            "cropped": int(ps.table["cropped"].sum()) if len(ps.table) else 0,
            "seconds": {"read": round(t1 - t0, 3), "segment": round(t2 - t1, 3), "patches": round(t3 - t2, 3),
                        "write": round(t4 - t3, 3)},
            "files": files,
        })
        r = results[-1]
        say(f"[{i}/{n}] {path.name}: {r['nuclei_found']} nuclei, {r['patches']} patches, "
            f"{r['border_skipped']} skipped at the border ({t4 - t0:.1f} s)")
    summary = {
        "backend": backend, "model": model_path, "patch_size": args.patch_size, "diameter": args.diameter,
        "patch_normalisation": args.normalisation, "images": results,
        "totals": {k: sum(r[k] for r in results) for k in ("nuclei_found", "patches", "border_skipped")},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    t = summary["totals"]
    print(f"{len(results)} image(s): {t['nuclei_found']} nuclei, {t['patches']} patches, "
          f"{t['border_skipped']} skipped at the border -> {out}")
    return 0


def _write_outputs(out: Path, name: str, image, masks, ps) -> dict[str, str]:
    """Write masks TIFF, overlay PNG, patches .npy (float16) and the nuclei table; return file names."""
    import numpy as np
    from PIL import Image

    from genuine_core.io import write_masks_tiff
    from genuine_core.plotting import outline_overlay

    files = {"masks": f"{name}_masks.tif", "overlay": f"{name}_overlay.png",
             "patches": f"{name}_patches.npy", "table": f"{name}_nuclei.parquet"}
    write_masks_tiff(out / files["masks"], masks)
    gain = 0.9 / max(float(np.percentile(image, 99.5)), 1e-3)
    Image.fromarray(outline_overlay(image, masks, {}, default=(255, 255, 0), thickness=2, gain=gain)).save(
        out / files["overlay"])
    np.save(out / files["patches"], ps.patches.astype(np.float16))
    ps.table.to_parquet(out / files["table"], index=False)
    return files
