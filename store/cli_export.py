"""``genuine export``: sample reports, curated labels as a training set, the audit trail."""

from __future__ import annotations

import argparse
from pathlib import Path

from store.location import add_db_argument, default_db_path, person_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``genuine export sample NAME --out DIR | labels --out FILE | audit --out FILE`` (each ``[--overwrite]``)."""
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    what = "nuclei table (CSV + Parquet) and summary (Markdown + HTML) of a sample"
    p = sub.add_parser("sample", help=what, description=what)
    p.add_argument("name", help="sample name")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out (else refused)")
    p.add_argument("--model", default=None, help="the model whose call the report states first")
    p.add_argument("--by", default=None, metavar="NAME", type=person_name,
                   help="name stated on the report as 'prepared by'")
    add_db_argument(p)
    what = "curated labels with patches as a training set for `genuine train --data` (.npz or .parquet)"
    p = sub.add_parser("labels", help=what, description=what)
    p.add_argument("--out", type=Path, required=True, help="output file (.npz or .parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file (else refused)")
    p.add_argument("--sample", default=None, help="only this sample")
    add_db_argument(p)
    what = "the audit trail: every label event with its reviewer, time, previous value and note"
    p = sub.add_parser("audit", help=what, description=what)
    p.add_argument("--out", type=Path, required=True,
                   help="output file: .csv, .parquet or .jsonl (JSON lines, also written for .json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file (else refused)")
    add_db_argument(p)


def run(args: argparse.Namespace) -> int:
    """Write the export and print what was written."""
    from genuine_core.commands.checks import output_file, output_folder, refuse_existing
    from store import export
    from store.db import Store

    # before the store is opened: a bad --out, or one holding files (unless --overwrite), ends with one line
    # and nothing written
    if args.what == "sample":
        out = output_folder(args.out)
        refuse_existing([out / name for name in export.SAMPLE_FILES], args.overwrite, folder=out)
    else:
        refuse_existing([output_file(args.out)], args.overwrite)
    with Store(args.db or default_db_path(), read_only=True) as store:
        if args.what == "sample":
            for path in export.export_sample(store, args.name, args.out, model=args.model, prepared_by=args.by):
                print(path)
        elif args.what == "labels":
            path = export.export_labels(store, args.out, args.sample)
            print(f"{path}")
        else:
            print(export.export_audit(store, args.out))
    return 0
