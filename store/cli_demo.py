"""``genuine demo``: build the demo store (synthetic cell lines and mixtures, the real scan, UMAPs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from genuine_core.commands.checks import seed_option
from store.location import DEFAULT_DB, new_store_name_refusal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``genuine demo``."""
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_DB), help=f"store to create (default {DEFAULT_DB})")
    parser.add_argument("--benchmark", type=Path, default=None, metavar="DIR",
                        help="ingest this benchmark folder instead of generating a small one")
    parser.add_argument("--models", nargs="+", type=Path, default=None, metavar="DIR",
                        help="model folders (default: the shipped models/)")
    parser.add_argument("--seed", type=seed_option, default=1, help="seed of the generated benchmark and the UMAP fits")
    parser.add_argument("--nuclei-per-line", type=int, default=150, help="nuclei per synthetic cell line")
    parser.add_argument("--mixture-nuclei", type=int, default=64, help="nuclei per mixture sample")
    parser.add_argument("--max-fields", type=int, default=None, help="fields per sample and split (default all)")
    parser.add_argument("--no-real", action="store_true", help="leave out the real scan")
    parser.add_argument("--force", action="store_true", help="replace an existing store")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Build the store and print where the time went."""
    from genuine_core.commands.checks import in_range
    from genuine_core.errors import InputError
    from store.demo import MAX_DEMO_NUCLEI, DemoConfig, build_demo

    in_range(args.nuclei_per_line, (3, MAX_DEMO_NUCLEI), "--nuclei-per-line")  # named as typed, before any work
    in_range(args.mixture_nuclei, (1, MAX_DEMO_NUCLEI), "--mixture-nuclei")
    if args.max_fields is not None and args.max_fields < 1:
        raise InputError(f"--max-fields must be >= 1, got {args.max_fields}")
    refusal = None if args.out.is_dir() else new_store_name_refusal(args.out, "--out")  # a folder: build_demo says
    if refusal:
        raise InputError(refusal)
    bench = args.benchmark
    if bench is not None and not ((bench / "nuclei.parquet").is_file() and (bench / "fields").is_dir()):
        raise InputError(f"--benchmark {bench}: not a benchmark folder (needs nuclei.parquet and fields/)")
    try:
        config = DemoConfig(seed=args.seed, nuclei_per_line=args.nuclei_per_line, mixture_nuclei=args.mixture_nuclei,
                            max_fields_per_sample=args.max_fields, include_real=not args.no_real)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    report = build_demo(args.out, config, benchmark=args.benchmark, model_dirs=args.models, force=args.force,
                        progress=not args.quiet)
    print(f"demo store: {report['path']} ({report['n_nuclei']} nuclei, {len(report['samples'])} samples, "
          f"models: {', '.join(report['models'])})")
    print("seconds: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()))
    for line in report["failed"]:
        print(f"failed: {line}")
    return 0
