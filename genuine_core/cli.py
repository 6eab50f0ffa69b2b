"""The ``genuine`` command line: one entry point, one module per subcommand.

Each subcommand lives in a module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Those modules stay light at import time; heavy work is imported
inside ``run``. Errors meant for the user (:class:`~genuine_core.errors.GenuineError`)
become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys

from genuine_core.errors import GenuineError
from genuine_core.interrupts import interrupt_exit_code, interrupted, remember_interrupts

#: OSError numbers that mean "this cannot be written here" (read-only, no permission, disk full, file too large)
WRITE_REFUSED = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

#: subcommand name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("genuine_core.commands.synth", "make synthetic FISH fields, benchmarks and probes"),
    "segment": ("genuine_core.commands.segment", "segment nuclei in scans and extract patches"),
    "train-cellpose": ("genuine_core.commands.train_cellpose", "train a cellpose nuclei model on synthetic fields"),
    "train": ("training.cli_train", "train a model (GENUINE, ResNet, detector, ratio)"),
    "evaluate": ("training.cli_evaluate", "evaluate models on a synthetic benchmark"),
    "probe": ("training.cli_probe", "the Probe page's curve for one model: mean call vs MYCN signal count or size"),
    "ingest": ("store.cli_ingest", "ingest scans into the store"),
    "umap": ("store.cli_umap", "fit UMAP on stored embeddings"),
    "demo": ("store.cli_demo", "build the demo store"),
    "export": ("store.cli_export", "export sample reports, curated labels and the audit trail of label events"),
    "store": ("store.cli_store", "store maintenance (check, info, scans, remove-scan, exclude-scan, unexclude-scan, "
              "score, remove-model, retire-model, reinstate-model, relocate-model, events, agreement, sign-out, "
              "sign-outs, migrate, backup)"),
}


def get_args_parser() -> argparse.ArgumentParser:
    """Build the parser with every subcommand whose module is installed."""
    parser = argparse.ArgumentParser(prog="genuine", description="GENUINE: MYCN FISH nucleus classification")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # subcommand not built yet
            raise
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
        _name_parsers(p)
    return parser


def _name_parsers(parser: argparse.ArgumentParser) -> None:
    """Let each (sub)subcommand's parser name itself in ``args._parser``: an unknown option is then reported
    with the usage of ``genuine store events``, not of ``genuine store``."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _name_parsers(child)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; return the process exit code."""
    parser = get_args_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the subcommand's usage, not the top-level one, says what it takes
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    args._argv = list(sys.argv[1:] if argv is None else argv)  # the command line as given (runs record it)
    quiet = getattr(args, "quiet", False)  # a command's --quiet silences the INFO lines of libraries too
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if argv is None:  # a real command line (not a call from Python): Ctrl-C is told apart from errors it causes
        remember_interrupts()
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt as exc:  # a command may say what was left and how to go on (genuine train: --resume)
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return interrupt_exit_code()
    except Exception as exc:
        if interrupted():  # a library's own error made of Ctrl-C (numba's SystemError, DuckDB's Error)
            print("interrupted", file=sys.stderr)
            return interrupt_exit_code()
        return _exit_code(exc)


def _exit_code(exc: Exception) -> int:
    """The exit code of an error meant for the user, said in one line on stderr; anything else is raised."""
    if isinstance(exc, GenuineError):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from store.memory import is_out_of_memory, out_of_memory_message

    if is_out_of_memory(exc):  # past $GENUINE_DUCKDB_MEMORY: the way out, not a traceback
        print(f"error: {out_of_memory_message(exc)}", file=sys.stderr)
        return 2
    if isinstance(exc, BrokenPipeError):  # output piped into a reader that stopped (e.g. `| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the final flush has nowhere to fail
        return 0
    if isinstance(exc, OSError) and exc.errno in WRITE_REFUSED:  # the disk said no where no check could tell
        print(f"error: cannot access {exc.filename or 'an output file'}: {exc.strerror}", file=sys.stderr)
        return 2
    from genuine_core.atomic import is_short_write

    if is_short_write(exc):  # numpy's word for a full disk
        print(f"error: cannot write an output file: {os.strerror(errno.ENOSPC)} ({exc})", file=sys.stderr)
        return 2
    raise exc


if __name__ == "__main__":
    sys.exit(main())
