"""``genuine store check | info``: integrity check and overview of a store file."""

from __future__ import annotations

import argparse

from store.location import add_db_argument, default_db_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``genuine store``."""
    parser.add_argument("action", choices=("check", "info"), help="check: integrity; info: counts")
    add_db_argument(parser)


def run(args: argparse.Namespace) -> int:
    """``check`` exits 1 when problems are found; ``info`` prints counts."""
    import json

    from store.check import check_store, store_info
    from store.db import Store

    with Store(args.db or default_db_path(), read_only=True) as store:
        if args.action == "info":
            print(json.dumps(store_info(store), indent=2, default=str))
            return 0
        problems = check_store(store)
    if problems:
        for p in problems:
            print(f"problem: {p}")
        return 1
    print(f"ok: {args.db or default_db_path()} is consistent")
    return 0
