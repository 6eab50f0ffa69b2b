"""``genuine segment``: segment nuclei in scans and cut normalised patches.

For each image, ``OUT`` receives ``<name>_masks.tif`` (int32 instance masks),
``<name>_overlay.png`` (outlines on the scan), ``<name>_patches.npy`` ((N, 3, P, P)
float16) and ``<name>_nuclei.parquet`` (the patch table), and ``OUT/summary.json``
lists counts, timings and settings for every image segmented into ``OUT``: a run adds its
images to the summary already there (an image of the same name replaces its entry; the
top-level settings are the latest run's). Every input is checked before anything is
written, so a bad file, a missing model, an output file already in ``OUT`` (unless
``--overwrite``) or an unreadable ``summary.json`` leaves ``OUT`` untouched.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from genuine_core import atomic
from genuine_core.commands.checks import (PATCH_SIZE_RANGE, in_range, invoked_command, output_folder,
                                          refuse_existing, writing_into)
from genuine_core.errors import InputError

logger = logging.getLogger(__name__)

#: the file in --out that lists every image segmented into it
SUMMARY = "summary.json"
#: settings of a run, recorded at the top of the summary (latest run) and with each image (an image of an
#: older summary without them takes the top's; not so the ``command``, which each run records with its images)
RUN_SETTINGS = ("backend", "model", "patch_size", "diameter", "patch_normalisation")
#: per-image counts the summary totals
TOTALS = ("nuclei_found", "patches", "border_skipped")


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
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files of the same name already in --out (else refused)")
    p.add_argument("--quiet", action="store_true", help="no progress (bar and per-image lines on stderr)")


def _output_names(paths: list[Path]) -> list[str]:
    """Unique file-name stems for the outputs (``name``, ``name-2``, ... on clashes).

    Unique also when a stem looks like a renamed one (``scan``, ``scan``, ``scan-2`` ->
    ``scan``, ``scan-2``, ``scan-2-2``), so no image writes over another's files.
    """
    used: set[str] = set()
    names = []
    for p in paths:
        name, k = p.stem, 1
        while name in used:
            k += 1
            name = f"{p.stem}-{k}"
        used.add(name)
        names.append(name)
    return names


def _output_files(name: str) -> dict[str, str]:
    """The files one image writes into --out, by kind."""
    return {"masks": f"{name}_masks.tif", "overlay": f"{name}_overlay.png",
            "patches": f"{name}_patches.npy", "table": f"{name}_nuclei.parquet"}


def _earlier_images(out: Path) -> list[dict]:
    """The image entries of the ``summary.json`` already in ``out`` (``[]`` when there is none).

    Entries of summaries written before images carried their settings get the run's
    settings from the top of that summary.

    Raises:
        InputError: the file cannot be read, is not JSON, or is not a segment summary
            (a list of images, each with a name and integer counts).
    """
    path = out / SUMMARY
    if not path.exists():
        return []
    fix = "move it away (or repair it) and run again"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc.strerror}); {fix}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise InputError(f"{path} is not valid JSON ({exc}); {fix}") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str)
            and all(isinstance(e.get(k), int) for k in TOTALS) for e in images):
        raise InputError(f"{path} is not a genuine segment summary (a list of images with names and counts); {fix}")
    for entry in images:
        for k in RUN_SETTINGS:
            if k in data:
                entry.setdefault(k, data[k])
    return images


def _write_summary(out: Path, settings: dict, earlier: list[dict], results: list[dict]) -> dict:
    """Write ``summary.json``: the earlier entries not replaced by this run's, then this run's.

    Written to a temporary file first and renamed, so an interruption never leaves half a file.
    """
    new = {r["name"] for r in results}
    images = [e for e in earlier if e["name"] not in new] + results
    summary = {**settings, "images": images, "totals": {k: sum(r[k] for r in images) for k in TOTALS}}
    atomic.write_bytes(out / SUMMARY, json.dumps(summary, indent=2).encode())
    return summary


def run(args: argparse.Namespace) -> int:
    """Check every input, then segment, extract patches and write outputs image by image."""
    from tqdm import tqdm

    from genuine_core.io import ChannelMap, read_scan
    from genuine_core.segmentation import DEFAULT_BACKEND, DIAMETER_RANGE

    backend = args.backend or DEFAULT_BACKEND
    in_range(args.patch_size, PATCH_SIZE_RANGE, "--patch-size")
    if args.diameter is not None:
        in_range(args.diameter, DIAMETER_RANGE, "--diameter", " px")
    channel_map = ChannelMap.parse(args.channels) if args.channels is not None else None
    if args.model is not None and backend != "cellpose":
        raise InputError("--model applies to --backend cellpose only")
    model_path = None
    if backend == "cellpose":
        from genuine_core.segmentation.cellpose_backend import resolve_model_path

        model_path = str(resolve_model_path(args.model))  # ModelLoadError before anything is written
    out = output_folder(args.out)
    paths = [Path(p) for p in args.images]
    names = _output_names(paths)
    refuse_existing([out / f for name in names for f in _output_files(name).values()], args.overwrite, folder=out)
    _earlier_images(out)  # an unreadable summary.json is refused before any work
    quiet = getattr(args, "quiet", False)
    for p in tqdm(paths, desc="checking", unit="image", disable=True if quiet else None, leave=False):
        read_scan(p, channel_map)  # raises InputError with the reason; nothing written yet

    with writing_into(out):  # a second segment into the same folder is refused instead of mixing summaries
        return _segment_into(out, args, list(zip(paths, names)), channel_map, backend, model_path,
                             _earlier_images(out))  # read again under the lock


def _segment_into(out: Path, args: argparse.Namespace, items: list[tuple[Path, str]], channel_map, backend: str,
                  model_path: str | None, earlier: list[dict]) -> int:
    """Segment ``items`` (path, output name) into ``out`` image by image, updating ``summary.json`` after each."""
    import numpy as np
    from tqdm import tqdm

    from genuine_core.io import read_scan
    from genuine_core.patches import extract_patches
    from genuine_core.segmentation import segment

    quiet = getattr(args, "quiet", False)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"backend": backend, "model": model_path, "patch_size": args.patch_size, "diameter": args.diameter,
                "patch_normalisation": args.normalisation, "command": invoked_command(args)}
    results: list[dict] = []
    n = len(items)

    def say(text: str) -> None:  # per-image progress on stderr, also when stderr is not a terminal
        if not quiet:
            tqdm.write(text, file=sys.stderr)
            sys.stderr.flush()

    for i, (path, name) in enumerate(tqdm(items, desc="segmenting", unit="image",
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
        with atomic.staged_into(out) as stage:  # Ctrl-C or a full disk mid-write: no half set of files
            files = _write_outputs(stage, name, scan.image, masks, ps)
        t4 = time.perf_counter()
        results.append({
            "image": str(path), "name": name, "sha256": scan.sha256, "shape": list(scan.image.shape[:2]),
            "source_shape": list(scan.source_shape), "source_dtype": scan.source_dtype,
            "channel_map": scan.channel_map.text(), **settings,
            "nuclei_found": int(len(np.unique(masks)) - (1 if (masks == 0).any() else 0)),
            "patches": int(len(ps.patches)), "border_skipped": int(ps.n_border_skipped),
            "cropped": int(ps.table["cropped"].sum()) if len(ps.table) else 0,
            "seconds": {"read": round(t1 - t0, 3), "segment": round(t2 - t1, 3), "patches": round(t3 - t2, 3),
                        "write": round(t4 - t3, 3)},
            "files": files,
        })
        summary = _write_summary(out, settings, earlier, results)  # after each image: it lists what is in OUT
        r = results[-1]
        say(f"[{i}/{n}] {path.name}: {r['nuclei_found']} nuclei, {r['patches']} patches, "
            f"{r['border_skipped']} skipped at the border ({t4 - t0:.1f} s)")
    t = {k: sum(r[k] for r in results) for k in TOTALS}
    listed = len(summary["images"])
    print(f"{len(results)} image(s): {t['nuclei_found']} nuclei, {t['patches']} patches, "
          f"{t['border_skipped']} skipped at the border -> {out}"
          + (f" ({SUMMARY} lists {listed} images)" if listed > len(results) else ""))
    return 0


def _write_outputs(out: Path, name: str, image, masks, ps) -> dict[str, str]:
    """Write masks TIFF, overlay PNG, patches .npy (float16) and the nuclei table; return file names."""
    import numpy as np
    from PIL import Image

    from genuine_core.io import write_masks_tiff
    from genuine_core.plotting import outline_overlay

    files = _output_files(name)
    write_masks_tiff(out / files["masks"], masks)
    gain = 0.9 / max(float(np.percentile(image, 99.5)), 1e-3)
    Image.fromarray(outline_overlay(image, masks, {}, default=(255, 255, 0), thickness=2, gain=gain)).save(
        out / files["overlay"])
    np.save(out / files["patches"], ps.patches.astype(np.float16))
    ps.table.to_parquet(out / files["table"], index=False)
    return files
