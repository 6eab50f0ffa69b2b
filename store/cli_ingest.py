"""``genuine ingest``: scans (or a synthetic benchmark folder) into the store.

While the dashboard runs it owns the store (see ``store.db``): the ingest waits up to
``--wait`` seconds for the write lock, then exits 2 with one line saying who holds the
store and what to do. It never writes to a store it could not lock.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from store.location import add_by_option, add_db_argument, default_db_path, new_store_name_refusal, store_exists

KINDS = ("case", "cell-line", "mixture", "probe")
#: splits of a ``genuine synth benchmark`` folder (``genuine_core.synth.benchmark.SPLITS``; kept here so
#: the parser imports nothing heavy)
BENCHMARK_SPLITS = ("train", "val", "test", "mixture")
#: default seconds ``genuine ingest`` waits for a store another process holds
DEFAULT_WAIT = 30.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"--wait must be between 0 and 86400 seconds, got {text}")
    return value


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
                        help="channel map, e.g. 'nmi=0,mycn=1,dapi=2', 'RGB' or 'BGR' (default RGB); NMI, "
                             "MYCN and DAPI must all be mapped")
    parser.add_argument("--backend", choices=("watershed", "cellpose"), default=None,
                        help="segmentation backend (default: the project default)")
    parser.add_argument("--cellpose-model", type=Path, default=None, help="local cellpose model (cellpose backend)")
    parser.add_argument("--diameter", type=float, default=None, help="expected nucleus diameter in pixels")
    parser.add_argument("--mc-samples", type=int, default=None, help="MC-dropout passes for the uncertainty")
    parser.add_argument("--benchmark", type=Path, default=None, metavar="DIR",
                        help="ingest the fields of a synthetic benchmark folder with their ground truth")
    parser.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                        help=f"benchmark splits to ingest: {', '.join(BENCHMARK_SPLITS)} (default: all)")
    parser.add_argument("--max-fields", type=int, default=None,
                        help="benchmark fields per sample and split (>= 1; default: all)")
    parser.add_argument("--no-umap", action="store_true", help="do not place new nuclei on fitted UMAPs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_by_option(parser)
    parser.add_argument("--wait", type=_seconds, default=DEFAULT_WAIT, metavar="SECONDS",
                        help="how long to wait while another process (the dashboard) holds the store, "
                             f"then exit 2 (default {DEFAULT_WAIT:.0f})")
    add_db_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Ingest; print each file's line as it is done, then ``created new store PATH`` when there was none (also
    with ``--quiet``), then the total.

    Exit 0 when every file was stored or already stored, 1 when some failed (the others
    are stored), 2 when every file failed or an option is bad (nothing stored).
    """
    from genuine_core.errors import InputError
    from genuine_core.pipeline import DEFAULT_MC_SAMPLES, MAX_MC_SAMPLES, load_model
    from store.db import INTERRUPTS, Store, StoreBusy, is_interrupt, remove_store_files
    from store.ingest import resolve_models

    if not args.files and args.benchmark is None:
        raise InputError("give scan files (with --sample) or --benchmark DIR")
    if args.files and not args.sample:
        raise InputError("--sample NAME is required when ingesting scan files")
    if args.files:
        from store.samples import check_new_name

        check_new_name(args.sample)  # before any file is read (a stored sample of such a name is never made)
    if args.files and args.benchmark is not None:
        raise InputError("give either scan files or --benchmark, not both")
    channel_map = None
    if args.channels is not None:
        from genuine_core.io import ChannelMap

        channel_map = ChannelMap.parse(args.channels)
        channel_map.require_probes()
    _check_options(args)  # every option checked before the store is opened or a file read
    segment_kwargs = {}
    if args.cellpose_model is not None:
        segment_kwargs["model_path"] = str(args.cellpose_model)
    if args.diameter is not None:
        segment_kwargs["diameter"] = args.diameter
    mc = DEFAULT_MC_SAMPLES if args.mc_samples is None else args.mc_samples
    if not 0 <= mc <= MAX_MC_SAMPLES:  # each pass is one more forward pass of every nucleus
        raise InputError(f"--mc-samples must be in [0, {MAX_MC_SAMPLES}], got {mc}")
    progress = not args.quiet
    loader = lambda p: load_model(p, mc_samples=mc)  # noqa: E731
    path = Path(args.db or default_db_path())
    new_store = not store_exists(path)  # missing, or an empty file (e.g. `touch`)
    refusal = new_store_name_refusal(path, "--db" if args.db else "$GENUINE_DB") if new_store else None
    if refusal and not path.is_dir():  # a folder: Store names it
        raise InputError(refusal)
    # given model folders are loaded before the store is opened: a bad one leaves no new, empty store behind
    given = resolve_models(None, args.models, loader=loader) if args.models else None
    try:
        store = Store(path, busy_timeout=args.wait)
    except StoreBusy as exc:
        what = ("nothing was ingested; ingest on the dashboard's Ingest page, or stop the dashboard and re-run"
                if exc.dashboard else "nothing was ingested; re-run when it has finished")
        raise StoreBusy(exc.path, exc.holder, exc.waited, exc.dashboard, f"{what} (or give a longer --wait)") from None
    done: list = []  # outcomes so far, each printed as its file is done (a stored file is committed by then)

    def report_file(outcome) -> None:
        from tqdm.auto import tqdm

        done.append(outcome)
        tqdm.write(outcome.line(), file=sys.stdout)  # above the progress bars (stderr)
        sys.stdout.flush()

    try:
        report = _ingest(store, args, models_given=given, loader=loader, channel_map=channel_map,
                         segment_kwargs=segment_kwargs, progress=progress, on_outcome=report_file)
    except INTERRUPTS as exc:
        if not is_interrupt(exc):
            raise
        stored = sum(o.status == "stored" for o in done)
        raise KeyboardInterrupt(
            f"{stored} file(s) stored before the interrupt (the 'stored' lines above), "
            f"{len(done) - stored} other(s) done; the same command again skips what is stored") from None
    finally:
        if new_store and any(o.status == "stored" for o in done):  # an outcome worth a line even with --quiet:
            print(f"created new store {path.resolve()}", flush=True)  # e.g. a typo in --db or $GENUINE_DB
        elif new_store:
            remove_store_files(store.path)  # a first ingest that stored nothing leaves no empty store behind
    print(report.summary_line(), flush=True)
    return report.exit_code


def _ingest(store, args: argparse.Namespace, models_given, loader, channel_map, segment_kwargs, progress,
            on_outcome):
    """Ingest the files or the benchmark of ``args`` into ``store`` (closed after); the report."""
    from store.ingest import ingest_benchmark, ingest_files, resolve_models

    from store.registry import as_stored

    with store:
        store.require_writable()  # before any scan is read and scored: the work could not be saved
        models = models_given if models_given is not None else resolve_models(store, None, loader=loader)
        if args.mc_samples is None:  # by default a model adds uncertainties of the kind it has stored
            models = as_stored(store, models)
        if not models:
            print("warning: no models found; storing nuclei without predictions", flush=True)
        if models_given is not None:  # --models: the other registered models do not score these scans
            _note_models_left_out(store, models)
        if args.benchmark is not None:
            return ingest_benchmark(store, args.benchmark, models, splits=args.splits,
                                    max_fields_per_sample=args.max_fields, backend=args.backend,
                                    segment_kwargs=segment_kwargs or None, progress=progress,
                                    place_umap=not args.no_umap, on_outcome=on_outcome, by=args.by)
        return ingest_files(store, args.files, args.sample, kind=args.kind, expected=args.expected,
                            genotype=args.genotype, models=models, channel_map=channel_map,
                            backend=args.backend, segment_kwargs=segment_kwargs or None,
                            progress=progress, place_umap=not args.no_umap, on_outcome=on_outcome, by=args.by)


def _note_models_left_out(store, models) -> None:
    """A line naming the registered models an ingest with ``--models`` does not run, and how to add them; another
    for those that read patches cut otherwise (e.g. models of an older release), which cannot score these scans."""
    import shlex

    import pandas as pd

    from store.location import genuine_command
    from store.registry import list_models
    from store.registry import patch_normalisation as reads

    running = {m.name for m in models}
    cut = {reads(m.config) for m in models}
    left = [(r.name, reads(r.config)) for r in list_models(store).itertuples()
            if r.name not in running and pd.isna(r.retired_at)]  # retired models score no new scan anyway
    scorable = [n for n, norm in left if not cut or norm in cut]
    if scorable:
        first = genuine_command(f"store score {shlex.quote(scorable[0])}", store.path)
        print(f"note: registered model(s) {', '.join(map(repr, scorable))} do not score these scans (--models); "
              f"score them afterwards, e.g. {first}", flush=True)
    other = [(n, norm) for n, norm in left if n not in scorable]
    if other:
        print(f"note: registered model(s) {', '.join(f'{n!r} ({norm})' for n, norm in other)} read patches "
              f"normalised otherwise than these scans ({', '.join(sorted(cut))}), so they cannot score them",
              flush=True)


def _check_options(args: argparse.Namespace) -> None:
    """Refuse bad option values up front (one line, exit 2), as ``genuine segment`` does.

    Raises:
        InputError: a value out of range or unknown; ModelLoadError: no cellpose model.
    """
    from genuine_core.commands.checks import in_range
    from genuine_core.errors import InputError
    from genuine_core.segmentation import DIAMETER_RANGE
    from store import samples

    if args.diameter is not None:
        in_range(args.diameter, DIAMETER_RANGE, "--diameter", " px")
    if args.expected is not None and not 0 <= args.expected <= 1:
        raise InputError(f"--expected must be an MNA fraction in [0, 1], got {args.expected:g}")
    if args.genotype is not None and samples.genotype_label(args.genotype) is None:
        raise InputError(f"--genotype must be MNA or non-MNA, got {args.genotype!r}")
    if args.max_fields is not None and args.max_fields < 1:
        raise InputError(f"--max-fields must be >= 1, got {args.max_fields}")
    if args.splits is not None:
        unknown = [s for s in args.splits if s not in BENCHMARK_SPLITS]
        if unknown:
            raise InputError(f"--splits: unknown split(s) {', '.join(map(repr, unknown))}; "
                             f"choose from {', '.join(BENCHMARK_SPLITS)}")
    if args.benchmark is None and (args.splits is not None or args.max_fields is not None):
        raise InputError("--splits and --max-fields apply to --benchmark DIR only")
    if args.benchmark is not None and (args.sample or args.kind or args.genotype or args.expected is not None):
        raise InputError("--sample, --kind, --genotype and --expected apply to scan files; "
                         "a benchmark folder names its own samples")
    from genuine_core.segmentation import DEFAULT_BACKEND

    backend = args.backend or DEFAULT_BACKEND
    if args.cellpose_model is not None and backend != "cellpose":
        raise InputError("--cellpose-model applies to --backend cellpose only")
    if backend == "cellpose":
        from genuine_core.segmentation.cellpose_backend import resolve_model_path

        resolve_model_path(args.cellpose_model, option="--cellpose-model")
