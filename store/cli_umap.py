"""``genuine umap``: fit a model's UMAP on its reference nuclei and store every nucleus' coordinates."""

from __future__ import annotations

import argparse
import shlex

from genuine_core.commands.checks import seed_option
from store.location import add_db_argument, default_db_path, genuine_command, no_store_message, store_exists


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``genuine umap``."""
    parser.add_argument("--model", action="append", default=None, metavar="NAME",
                        help="registered model (repeatable; default: every model with embeddings)")
    parser.add_argument("--place-only", action="store_true",
                        help="do not refit: place nuclei without coordinates on the saved map")
    parser.add_argument("--neighbors", type=int, default=15, help="UMAP n_neighbors (default: %(default)s)")
    parser.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=200, help="UMAP optimisation epochs (default: %(default)s)")
    parser.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean",
                        help="distance between embeddings (default: %(default)s)")
    parser.add_argument("--seed", type=seed_option, default=0,
                        help="random seed (fit is deterministic for a seed; default: %(default)s)")
    parser.add_argument("--max-reference", type=int, default=5000,
                        help="fit on at most this many reference nuclei (seeded subset); the rest are placed "
                             "(default: %(default)s)")
    add_db_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Fit (or place) and print one line per model."""
    import time

    from genuine_core.embedding import UmapConfig
    from genuine_core.errors import InputError, StoreError
    from store import umap as umap_store
    from store.db import Store

    try:
        config = UmapConfig(n_neighbors=args.neighbors, min_dist=args.min_dist, metric=args.metric,
                            n_epochs=args.epochs, seed=args.seed, max_reference=args.max_reference)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    path = args.db or default_db_path()
    if not store_exists(path):  # a typo or an empty file must not become an empty store (as `genuine store`)
        raise StoreError(no_store_message(path))
    with Store(path) as store:
        store.require_writable()  # before a fit: it could not be saved
        names = args.model or umap_store.models_with_embeddings(store)
        if not names:
            raise InputError("no model has stored embeddings; ingest scans first")
        for name in names:
            t = time.perf_counter()
            if args.place_only:
                if umap_store.latest_fit(store, name) is None:
                    fit = genuine_command(f"umap --model {shlex.quote(name)}", path)
                    print(f"{name}: no map fitted yet, nothing placed; fit one with `{fit}`")
                    continue
                n = umap_store.place_missing(store, name)
                print(f"{name}: placed {n} nuclei on the saved map ({time.perf_counter() - t:.1f} s)")
                continue
            r = umap_store.fit_umap(store, name, config)
            print(f"{name}: fitted on {r['n_fitted']} of {r['n_reference']} reference nuclei ({r['reference']}), "
                  f"placed {r['n_placed']} others; map {r['path']} ({time.perf_counter() - t:.1f} s)")
    return 0
