"""``genuine synth``: synthetic FISH fields, benchmark folders and probe patches.

    genuine synth benchmark --out DIR --seed N [--size tiny|cpu|paper] [--beta B] [--workers K]
    genuine synth field --out DIR --seed N [--lines mna_dm,nonmna_diploid] [--n-nuclei 25]
    genuine synth probe --out FILE.npz --seed N [--nmi 2] [--mycn 0-35] [--signal-size 3.5] [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from genuine_core.commands.checks import (PATCH_SIZE_RANGE, in_range, output_file, output_folder, refuse_existing,
                                          invoked_command, refuse_foreign_folder, seed_option, writing_into)
from genuine_core.errors import InputError

logger = logging.getLogger(__name__)


#: most values one range of an integer list may span ("0-35")
MAX_LIST = 1000


def _int_list(text: str) -> list[int]:
    """Parse ``"0-35"``, ``"2,4,8"`` or ``"0-10,20"`` into a sorted list of ints."""
    out: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, sep, hi = part.partition("-")
            if sep and int(hi) < int(lo):
                raise argparse.ArgumentTypeError(f"{part}: the range runs backwards, write {hi}-{lo}")
            if sep and int(hi) - int(lo) + 1 > MAX_LIST:
                raise argparse.ArgumentTypeError(f"at most {MAX_LIST} values in a range, got {part!r}")
            out.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like '0-35' or '2,4,8', got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("empty integer list")
    return sorted(out)


def _float_list(text: str) -> list[float]:
    try:
        vals = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like '2,3.5,5', got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("empty number list")
    return vals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``benchmark``, ``field`` and ``probe`` actions."""
    sub = parser.add_subparsers(dest="synth_action", metavar="ACTION", required=True)

    what = "write a benchmark folder (4 lines, splits, 8 mixtures)"
    b = sub.add_parser("benchmark", help=what, description=what)
    b.add_argument("--out", required=True, help="output directory (must be empty unless --overwrite)")
    b.add_argument("--seed", type=seed_option, default=0,
                   help="random seed, >= 0 (default 0): the same seed and options write the same benchmark")
    b.add_argument("--size", default="cpu", choices=["tiny", "cpu", "paper"],
                   help="tiny: a few hundred nuclei for tests; cpu (default): 6,000-nucleus pool, 8 x 256 mixtures, "
                        "96 px; paper: 50,000, 8 x 2,048, 192 px")
    b.add_argument("--beta", type=float, default=0.0, help="auto-label flip rate of the training pool")
    b.add_argument("--acquisition-jitter", type=float, default=0.0, metavar="S",
                   help="give every training-pool field its own imaging conditions around the nominal "
                        "ones (strength S in [0, 2]; 1 = exposure x0.74-1.35, blur x0.67-1.49); default 0")
    b.add_argument("--normalisation", default="spot_flux", choices=["percentile", "spot_flux"],
                   help="patch normalisation: MYCN scaled by the median flux of its single spots (default, "
                        "as the shipped models; follows exposure where the percentile saturates), or every "
                        "channel by its per-scan 99.9th percentile (models trained before 2026-12-03)")
    b.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes (output does not depend on it); default: up to 2")
    b.add_argument("--overwrite", action="store_true", help="replace the benchmark in a non-empty --out")
    b.add_argument("--quiet", action="store_true", help="no progress bar")

    what = "write one synthetic field (TIFF, masks, tables, preview PNG)"
    f = sub.add_parser("field", help=what, description=what)
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--overwrite", action="store_true", help="replace a field already in --out")
    f.add_argument("--seed", type=seed_option, default=0,
                   help="random seed, >= 0 (default 0): the same seed and options write the same field")
    f.add_argument("--lines", default="mna_dm,mna_hsr,nonmna_diploid,nonmna_gain",
                   help="comma-separated cell lines mixed in equal shares")
    f.add_argument("--n-nuclei", type=int, default=25,
                   help=f"nuclei in the field, in [{FIELD_NUCLEI[0]}, {FIELD_NUCLEI[1]}] (default 25)")
    f.add_argument("--shape", type=int, nargs=2, default=[512, 512], metavar=("H", "W"),
                   help=f"field size in px, each side in [{FIELD_SIDE[0]}, {FIELD_SIDE[1]}] (default 512 512)")
    f.add_argument("--scale", type=float, default=1.0, help="length scale (1 = the real image)")
    f.add_argument("--shifted", action="store_true", help="use the shifted (mixture) acquisition")
    f.add_argument("--beta", type=float, default=0.0, help="auto-label flip rate, in [0, 0.5) (default 0)")

    what = "write probe patches (paper 4.3) to an .npz"
    p = sub.add_parser("probe", help=what, description=what)
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file (else refused)")
    p.add_argument("--seed", type=seed_option, default=0,
                   help="random seed, >= 0 (default 0): the same seed and options write the same probes")
    p.add_argument("--nmi", type=_int_list, default=[2], help="NMI counts, e.g. 2 or 1-3")
    p.add_argument("--mycn", type=_int_list, default=_int_list("0-35"), help="MYCN counts, e.g. 0-35")
    p.add_argument("--signal-size", type=_float_list, default=[3.5], help="MYCN widths (sigma px), e.g. 2,3.5,5,7")
    p.add_argument("--n", type=int, default=50, help="probes per condition")
    p.add_argument("--backgrounds", default=None,
                   help="patches to use as nuclei (red/green ignored): an (N,3,P,P) or (N,P,P) .npy, or an .npz "
                        "holding them as 'patches' (as genuine synth probe and genuine export labels write); "
                        "default: synthetic")
    p.add_argument("--n-backgrounds", type=int, default=100, help="synthetic backgrounds to draw")
    p.add_argument("--patch-size", type=int, default=96,
                   help=f"side (px) of the synthetic backgrounds, in [{PATCH_SIZE_RANGE[0]}, {PATCH_SIZE_RANGE[1]}] "
                        "(default: %(default)s)")


#: --patch-size range, as ``genuine segment``
#: files ``genuine synth field`` writes into --out (field.json: the command's settings and seed)
FIELD_FILES = ("field.tif", "field_masks.tif", "nuclei.parquet", "boxes.parquet", "preview.png", "field.json")
#: --shape side and --n-nuclei bounds of ``synth field`` (a 512 px field holds about 60 nuclei)
FIELD_SIDE = (64, 8192)
FIELD_NUCLEI = (1, 5000)
#: bounds of ``synth probe``: probes per condition (and backgrounds), and patches in all
MAX_PROBES = 10_000
MAX_PROBE_PATCHES = 200_000
#: most memory (bytes) the probe patches (float16) or the backgrounds (float32) may take
MAX_PROBE_BYTES = 4 * 2**30
#: --workers bound of ``synth benchmark``
MAX_WORKERS = 64


def _check_beta(beta: float) -> None:
    """The label flip rate ``genuine train --beta`` accepts: [0, 0.5) (0.5 or more inverts the labels' meaning)."""
    if not 0.0 <= beta < 0.5:
        raise InputError(f"--beta must be in [0, 0.5) (as for genuine train), got {beta:g}")


def _check_probe_memory(n_patches: int, n_backgrounds: int, side: int) -> None:
    """Refuse, before any work, probes whose patches (float16) or backgrounds (float32) would not fit in
    :data:`MAX_PROBE_BYTES`."""
    for what, n, itemsize in (("probe patches", n_patches, 2), ("backgrounds", n_backgrounds, 4)):
        size = n * 3 * side * side * itemsize
        if size > MAX_PROBE_BYTES:
            raise InputError(f"{n:,} {what} of {side} px would take {size / 2**30:.0f} GiB (at most "
                             f"{MAX_PROBE_BYTES / 2**30:.0f} GiB); lower --n, the conditions or the patch size")


def _npz_path(out: str) -> Path:
    """Where ``numpy.savez`` writes ``out``: ``.npz`` is appended unless the name already ends with it."""
    return Path(out if str(out).endswith(".npz") else f"{out}.npz")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action."""
    return {"benchmark": _benchmark, "field": _field, "probe": _probe}[args.synth_action](args)


def _benchmark(args: argparse.Namespace) -> int:
    from genuine_core.synth.benchmark import MAX_ACQUISITION_JITTER, SIZES, make_benchmark

    out = output_folder(args.out)
    _check_beta(args.beta)
    in_range(args.workers, (1, MAX_WORKERS), "--workers")
    in_range(args.acquisition_jitter, (0, MAX_ACQUISITION_JITTER), "--acquisition-jitter")  # before the banner
    with writing_into(out):  # first: a second generator into this folder is told who writes it
        if out.is_dir() and any(out.iterdir()):
            if not _is_benchmark(out):  # --overwrite replaces a benchmark, never someone else's files
                refuse_foreign_folder(out, (), "benchmark")
            if not args.overwrite:
                raise InputError(f"--out {out} holds a benchmark; pass --overwrite to replace it")
        if not args.quiet:
            size = SIZES[args.size]
            print(f"synth benchmark: {size.nuclei_per_line} nuclei per cell line and {size.mixture_nuclei} per "
                  f"mixture sample, {size.patch_size} px patches -> {out}", file=sys.stderr, flush=True)
        try:
            summary = make_benchmark(out, seed=args.seed, size=args.size, beta=args.beta, workers=args.workers,
                                     acquisition_jitter=args.acquisition_jitter, normalisation=args.normalisation,
                                     overwrite=args.overwrite, progress=not args.quiet,
                                     command=invoked_command(args))
        except ValueError as exc:
            raise InputError(str(exc)) from None
    mix = {k: (v["target_fraction"], round(v["realised_fraction"], 4), round(v["true_mna_fraction"], 4))
           for k, v in summary["mixtures"].items()}
    print(json.dumps({"out": args.out, "per_split": summary["per_split"],
                      "label_noise_rate": round(summary["label_noise_rate"], 4),
                      "mixtures (target, realised, true MNA)": mix}, indent=1))
    return 0


def _is_benchmark(folder: Path) -> bool:
    """Whether ``folder`` holds a benchmark (or a partial one): its ``config.json`` names a seed and a size."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and {"seed", "size"} <= set(cfg)


def _field(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from genuine_core import io
    from genuine_core.seeding import seed_everything
    from genuine_core.synth.acquisition import NOMINAL, SHIFTED
    from genuine_core.synth.fields import Scene, make_field

    out = output_folder(args.out)
    _check_beta(args.beta)
    for side in args.shape:
        in_range(side, FIELD_SIDE, "--shape", " px")
    in_range(args.n_nuclei, FIELD_NUCLEI, "--n-nuclei")
    if _is_benchmark(out):
        raise InputError(f"--out {out} holds a benchmark; write the field to another folder")
    held = [name for name in FIELD_FILES if (out / name).exists()]
    if held and not args.overwrite:
        raise InputError(f"--out {out} already holds a field ({', '.join(held)}); pass --overwrite to replace it")
    lines = [s.strip() for s in args.lines.split(",") if s.strip()]
    rng = seed_everything(args.seed)
    try:
        f = make_field(rng, {name: 1.0 for name in lines}, args.n_nuclei, tuple(args.shape),
                       SHIFTED if args.shifted else NOMINAL, args.beta, scene=Scene(scale=args.scale))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    io.write_scan_tiff(out / "field.tif", f.image)
    io.write_masks_tiff(out / "field_masks.tif", f.masks)
    f.nuclei.to_parquet(out / "nuclei.parquet", index=False)
    f.boxes.to_parquet(out / "boxes.parquet", index=False)
    Image.fromarray((np.clip(f.image, 0, 1) * 255 + 0.5).astype(np.uint8)).save(out / "preview.png")
    settings = {k: getattr(args, k) for k in ("seed", "lines", "n_nuclei", "shape", "scale", "shifted", "beta")}
    settings["command"] = invoked_command(args)
    (out / "field.json").write_text(json.dumps(settings, indent=1) + "\n")
    print(f"{out}: {len(f.nuclei)} nuclei, {len(f.boxes)} signal boxes, "
          f"{int(f.nuclei['true_label'].sum())} truly amplified")
    return 0


def _load_backgrounds(path: str):
    """The ``--backgrounds`` array: an ``.npy``, or the ``patches`` of an ``.npz`` (memory-mapped when ``.npy``).

    Raises:
        InputError: unreadable, no ``patches`` in an ``.npz``, not (N, 3, P, P) / (N, P, P) numbers, or no patches.
    """
    import zipfile

    import numpy as np

    names: list[str] = []
    try:
        bg = np.load(path, mmap_mode="r", allow_pickle=False)
        if isinstance(bg, np.lib.npyio.NpzFile):
            with bg:
                names = bg.files
                bg = bg["patches"] if "patches" in names else None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npy or .npz array ({exc})") from None
    if bg is None:
        raise InputError(f"{path}: an .npz without a 'patches' array (it holds {', '.join(names) or 'nothing'}); "
                         "--backgrounds takes an (N, 3, P, P) .npy or an .npz holding one as 'patches'")
    if bg.dtype.kind not in "biuf" or bg.ndim not in (3, 4):
        raise InputError(f"{path}: expected an (N, 3, P, P) or (N, P, P) array of numbers, got {bg.dtype} {bg.shape}")
    if not len(bg):
        raise InputError(f"{path}: holds no patches (shape {bg.shape})")
    return bg


def _probe(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd
    from tqdm import tqdm

    from genuine_core.seeding import seed_everything
    from genuine_core.synth.probe import MAX_SIGNAL_SIZE, MAX_SIGNALS, make_probe, synthetic_backgrounds

    output_file(args.out)  # an existing folder is refused as given, before .npz is appended
    out = output_file(_npz_path(args.out))
    refuse_existing([out], args.overwrite)
    in_range(args.patch_size, PATCH_SIZE_RANGE, "--patch-size")
    in_range(args.n, (1, MAX_PROBES), "--n")
    in_range(args.n_backgrounds, (1, MAX_PROBES), "--n-backgrounds")
    for option, counts in (("--nmi", args.nmi), ("--mycn", args.mycn)):  # every value, before any work
        in_range(max(counts), (0, MAX_SIGNALS), option)  # (the parser takes no negative counts)
    for size in args.signal_size:
        if not 0 < size <= MAX_SIGNAL_SIZE:
            raise InputError(f"--signal-size must be in (0, {MAX_SIGNAL_SIZE:g}] px, got {size:g}")
    n_conditions = len(args.nmi) * len(args.mycn) * len(args.signal_size)
    if n_conditions * args.n > MAX_PROBE_PATCHES:
        raise InputError(f"{n_conditions} conditions x {args.n} probes is more than {MAX_PROBE_PATCHES:,} patches; "
                         "narrow --nmi/--mycn/--signal-size or lower --n")
    if not args.backgrounds:
        _check_probe_memory(n_conditions * args.n, args.n_backgrounds, args.patch_size)
    rng = seed_everything(args.seed)
    if args.backgrounds:
        bg = _load_backgrounds(args.backgrounds)
        _check_probe_memory(n_conditions * args.n, bg.shape[0], bg.shape[-1])
        bg = np.asarray(bg, np.float32)
    else:
        try:
            bg = synthetic_backgrounds(rng, args.n_backgrounds, args.patch_size)
        except ValueError as exc:
            raise InputError(f"--n-backgrounds: {exc}") from None
    conds = [(k, m, s) for k in args.nmi for m in args.mycn for s in args.signal_size]
    patches, tables, boxes = [], [], []
    offset = 0
    try:
        for cond, (k, m, s) in enumerate(tqdm(conds, desc="probe", unit="cond", disable=None)):
            pb = make_probe(bg, k, m, s, n=args.n, rng=rng)
            pb.table["condition"] = cond
            pb.table["patch_row"] += offset
            pb.boxes["patch_row"] += offset
            offset += len(pb.patches)
            patches.append(pb.patches.astype(np.float16))
            tables.append(pb.table)
            boxes.append(pb.boxes)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    table = pd.concat(tables, ignore_index=True)
    box = pd.concat(boxes, ignore_index=True)
    arrays = {"patches": np.concatenate(patches), "seed": np.int64(args.seed),
              "command": np.str_(invoked_command(args))}
    arrays.update({f"table_{c}": table[c].to_numpy() for c in table.columns})
    arrays.update({f"boxes_{c}": box[c].to_numpy() for c in box.columns})
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    print(f"{out}: {len(table)} probe patches in {len(conds)} conditions")
    return 0
