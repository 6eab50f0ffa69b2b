"""``genuine ingest``: scans (or a synthetic benchmark folder) into the store."""

from __future__ import annotations

import argparse
from pathlib import Path

from store.db import add_db_argument, default_db_path

KINDS = ("case", "cell-line", "mixture", "probe")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``genuine ingest``."""
    parser.add_argument("files", nargs="*", type=Path, help="scan files (TIFF/PNG/JPEG)")
    parser.add_argument("--sample", help="sample the scans belong to (created when missing)")
    parser.add_argument("--kind", choices=KINDS, default=None, help="sample kind (new samples: case)")
    parser.add_argument("--expected", type=float, default=None, help="expected MNA fraction in [0, 1]")
    parser.add_argument("--genotype", default=None,
                        help="sample genotype: MNA or non-MNA gives every nucleus that auto label")
    parser.add_argument("--models", nargs="+", type=Path, default=None, metavar="DIR",
                        help="model folders, or folders of model folders (default: the store's registered "
                             "models, else the shipped models/)")
    parser.add_argument("--channels", default=None,
                        help="channel map, e.g. 'nmi=0,mycn=1,dapi=2', 'RGB' or 'BGR' (default RGB)")
    parser.add_argument("--backend", choices=("watershed", "cellpose"), default=None,
                        help="segmentation backend (default: the project default)")
    parser.add_argument("--cellpose-model", type=Path, default=None, help="local cellpose model (cellpose backend)")
    parser.add_argument("--diameter", type=float, default=None, help="expected nucleus diameter in pixels")
    parser.add_argument("--mc-samples", type=int, default=None, help="MC-dropout passes for the uncertainty")
    parser.add_argument("--benchmark", type=Path, default=None, metavar="DIR",
                        help="ingest the fields of a synthetic benchmark folder with their ground truth")
    parser.add_argument("--splits", nargs="+", default=None, help="benchmark splits to ingest (default: all)")
    parser.add_argument("--max-fields", type=int, default=None, help="benchmark fields per sample and split")
    parser.add_argument("--no-umap", action="store_true", help="do not place new nuclei on fitted UMAPs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_db_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Ingest; print one line per file. Exit 0 all stored/known, 1 some failed, 2 all failed."""
    from genuine_core.errors import InputError
    from genuine_core.pipeline import DEFAULT_MC_SAMPLES, load_model
    from store.db import Store
    from store.ingest import ingest_benchmark, ingest_files, resolve_models

    if not args.files and args.benchmark is None:
        raise InputError("give scan files (with --sample) or --benchmark DIR")
    if args.files and not args.sample:
        raise InputError("--sample NAME is required when ingesting scan files")
    if args.files and args.benchmark is not None:
        raise InputError("give either scan files or --benchmark, not both")
    channel_map = None
    if args.channels:
        from genuine_core.io import ChannelMap

        channel_map = ChannelMap.parse(args.channels)
    segment_kwargs = {}
    if args.cellpose_model is not None:
        segment_kwargs["model_path"] = str(args.cellpose_model)
    if args.diameter is not None:
        segment_kwargs["diameter"] = args.diameter
    mc = DEFAULT_MC_SAMPLES if args.mc_samples is None else args.mc_samples
    if mc < 0:
        raise InputError("--mc-samples must be >= 0")
    progress = not args.quiet
    with Store(args.db or default_db_path()) as store:
        models = resolve_models(store, args.models, loader=lambda p: load_model(p, mc_samples=mc))
        if not models:
            print("warning: no models found; storing nuclei without predictions")
        if args.benchmark is not None:
            report = ingest_benchmark(store, args.benchmark, models, splits=args.splits,
                                      max_fields_per_sample=args.max_fields, backend=args.backend,
                                      segment_kwargs=segment_kwargs or None, progress=progress,
                                      place_umap=not args.no_umap)
        else:
            report = ingest_files(store, args.files, args.sample, kind=args.kind, expected=args.expected,
                                  genotype=args.genotype, models=models, channel_map=channel_map,
                                  backend=args.backend, segment_kwargs=segment_kwargs or None,
                                  progress=progress, place_umap=not args.no_umap)
    for line in report.lines():
        print(line)
    return report.exit_code
