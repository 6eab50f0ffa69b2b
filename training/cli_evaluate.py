"""``genuine evaluate``: the paper's tables and Figure 4 for several models on one benchmark.

Example::

    genuine evaluate --models models/genuine_cpu models/resnet_cpu_b02 models/detector_cpu \
        --data data/bench_cpu --out reports/

Writes ``evaluation.md``, ``evaluation.json`` and PNG figures into ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genuine_core.commands.checks import invoked_command, seed_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``genuine evaluate`` options."""
    parser.add_argument("--models", nargs="+", default=None,
                        help="model folders (default: every folder with a config.json under models/)")
    parser.add_argument("--data", default="data/bench_cpu", help="benchmark folder (default data/bench_cpu)")
    parser.add_argument("--out", default="reports", help="report folder (default reports/)")
    parser.add_argument("--seed", type=seed_option, default=0, help="seed of the probe nuclei")
    parser.add_argument("--probe-n", type=int, default=50, help="probe nuclei per condition (paper: 50)")
    parser.add_argument("--no-probes", action="store_true", help="skip the Figure 4 probe curves")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="instead of evaluating, merge evaluation.json files of earlier runs "
                             "(e.g. one per model, run in parallel) into one report")
    parser.add_argument("--note", action="append", default=[],
                        help="a sentence for the report's Notes section (repeatable; with --merge the notes given "
                             "replace the merged reports' own, which are kept when none is given)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the report (evaluation.json / evaluation.md) already in --out")
    parser.add_argument("--shipped", default=None,
                        help="folder name of the model the acceptance targets apply to (default: with --merge, "
                             "the one the merged reports named; else the GENUINE model with the largest beta)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no INFO lines (each model's summary line); warnings and errors "
                             "still print")


def _default_models() -> list[str]:
    root = Path("models")
    return sorted(str(p.parent) for p in root.glob("*/config.json")) if root.is_dir() else []


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report, print where it is and the ordering sentence."""
    from genuine_core.commands.checks import output_folder, refuse_existing
    from genuine_core.errors import InputError
    from training.evaluate import evaluate
    from training.report import JSON_NAME, MD_NAME, REPORT_FIGURES, write_report

    out = output_folder(args.out)  # before any evaluation work
    refuse_existing([out / f for f in (JSON_NAME, MD_NAME, *REPORT_FIGURES)], args.overwrite, folder=out)
    if args.merge:
        import json

        from training.evaluate import merge_results

        parts = []
        for path in args.merge:
            try:
                part = json.loads(Path(path).read_text(encoding="utf-8"))
            except UnicodeDecodeError:  # e.g. an image given by mistake: the codec's byte position says nothing
                raise InputError(f"{path} is not an evaluation.json written by genuine evaluate (not text)") from None
            except IsADirectoryError:
                raise InputError(f"{path} is a folder; give its evaluation.json") from None
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read {path}: {exc}") from exc
            if not (isinstance(part, dict) and isinstance(part.get("meta"), dict)
                    and isinstance(part.get("models"), list)):
                raise InputError(f"{path} is not an evaluation.json written by genuine evaluate (no meta and models)")
            parts.append(part)
        _check_shipped(args.shipped, {m["name"]: m.get("kind") for part in parts for m in part["models"]})
        kept = [n for part in parts if isinstance(part.get("notes"), list) for n in part["notes"] if isinstance(n, str)]
        results = merge_results(parts, args.shipped, notes=args.note or list(dict.fromkeys(kept)),
                                command=invoked_command(args))
        paths = write_report(results, args.out)
        print(f"wrote {', '.join(str(p) for p in paths)}")
        print(results["ordering"]["sentence"])
        return 0
    models = args.models or _default_models()
    if not models:
        raise InputError("no model folders given and none found under models/; pass --models DIR ...")
    if not 1 <= args.probe_n <= 1000:  # the paper uses 50 per condition
        raise InputError(f"--probe-n must be in [1, 1000], got {args.probe_n}")
    from genuine_core.pipeline import folder_kind

    # an unreadable config.json gives None here; the evaluation says why later
    _check_shipped(args.shipped, {Path(m).name: folder_kind(m) for m in models})
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():  # each model's INFO line above the progress bar, not inside it
        results = evaluate(models, args.data, seed=args.seed, probes=not args.no_probes, shipped=args.shipped,
                           probe_n=args.probe_n, command=invoked_command(args), progress=not args.quiet)
    results["notes"] = list(args.note)
    paths = write_report(results, args.out)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    print(results.get("ordering", {}).get("sentence", ""))
    return 0


def _check_shipped(shipped: str | None, kinds: dict[str, str | None]) -> None:
    """Refuse, before any work, a ``--shipped`` name that is none of the models (name -> kind) or
    not a GENUINE model: the targets would be judged on another one."""
    from genuine_core.errors import InputError

    if shipped is None:
        return
    if shipped not in kinds:
        raise InputError(f"--shipped {shipped!r} is none of the evaluated models ({', '.join(kinds)})")
    if kinds[shipped] not in (None, "genuine"):
        raise InputError(f"--shipped {shipped!r} is a {kinds[shipped]} model; the targets apply to a GENUINE model")
