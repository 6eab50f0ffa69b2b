"""Up-front checks of output paths shared by the subcommands (light: no heavy imports).

Every subcommand checks its output path before doing any work, so a typo ends with one
line and exit code 2 (:class:`~genuine_core.errors.InputError`) and nothing written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from genuine_core.errors import InputError

#: side (px) of a square patch the commands accept (segment, synth probe backgrounds)
PATCH_SIZE_RANGE = (8, 1024)


def _check_parents(path: Path, option: str) -> None:
    """Refuse a path below an existing file (``FILE/sub``): it could never be created; and one
    whose nearest existing folder cannot be written (read-only file system, no permission)."""
    for folder in (path, *path.parents):
        if folder.is_dir():
            if not os.access(folder, os.W_OK | os.X_OK):
                raise InputError(f"{option} {path}: cannot write in {folder} (read-only or no permission)")
            return
        if folder is not path and folder.exists():
            raise InputError(f"{option} {path}: {folder} is a file, not a folder")


def invoked_command(args) -> str:
    """The command line that ran, as ``genuine ...`` (recorded in the files a command writes)."""
    import shlex
    import sys

    return "genuine " + shlex.join(getattr(args, "_argv", None) or sys.argv[1:])


def seed_option(text: str) -> int:
    """``--seed`` as argparse reads it: a non-negative integer (NumPy refuses negative seeds deep
    inside a run), else a usage line and exit code 2."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def in_range(value: float, bounds: tuple[float, float], option: str, unit: str = "") -> None:
    """Refuse ``value`` outside ``bounds`` (inclusive) with one line naming ``option``.

    Raises:
        InputError: e.g. ``--diameter must be in [4, 2000] px, got 0``.
    """
    lo, hi = bounds
    if not lo <= value <= hi:
        shown = value if isinstance(value, int) else f"{value:g}"  # 100000000, not 1e+08
        raise InputError(f"{option} must be in [{lo:g}, {hi:g}]{unit}, got {shown}")


def output_folder(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a folder to write into: absent (created later) or an existing folder.

    Raises:
        InputError: ``path`` or one of its parents is an existing file.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{option} {p} is not a folder (a file of that name exists)")
    _check_parents(p, option)
    return p


@contextmanager
def writing_into(path: str | Path, option: str = "--out") -> Iterator[Path]:
    """Hold an exclusive advisory lock on the output folder ``path`` while a command writes into it, so a
    second command on the same folder (another terminal, the Retrain page) is refused instead of mixing
    its files in. The lock file ``.<name>.genuine-lock`` sits beside the folder (created with its parents,
    after the up-front checks); the operating system releases the lock when the process ends.

    Raises:
        InputError: another process holds the lock (its pid is named).
    """
    import fcntl

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    real = p.resolve()  # one lock per folder, whichever symlink names it
    with open(real.parent / f".{real.name}.genuine-lock", "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise InputError(f"{option} {p} is being written by another genuine command ({holder}); wait for it "
                             "to finish, or choose another folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield p


def refuse_foreign_folder(path: str | Path, markers: Iterable[str], what: str, option: str = "--out",
                          show: int = 3) -> None:
    """Refuse an existing, non-empty folder holding none of ``markers`` (the files or folders a
    ``what`` folder always has): writing there would replace someone else's files (a benchmark's
    ``config.json``), ``--overwrite`` or not.

    Raises:
        InputError: e.g. ``--out data/bench holds config.json, test, train and 2 more, and is not a model
            folder; give a new or empty folder``.
    """
    p = Path(path)
    if not p.is_dir() or any((p / m).exists() for m in markers):
        return
    held = sorted(c.name for c in p.iterdir())
    if held:
        more = f" and {len(held) - show} more" if len(held) > show else ""
        raise InputError(f"{option} {p} holds {', '.join(held[:show])}{more}, and is not a {what} folder; "
                         "give a new or empty folder")


def output_file(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a file to write: not an existing folder, not below an existing file.

    Raises:
        InputError: ``path`` is an existing folder or lies below an existing file.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {p} is a folder; give a file name")
    _check_parents(p, option)
    return p


def refuse_existing(paths: Iterable[str | Path], overwrite: bool, option: str = "--out",
                    folder: str | Path | None = None, show: int = 3) -> None:
    """Refuse to write over outputs that already exist, unless ``overwrite``.

    The one line names up to ``show`` of them, then how many more: with ``folder`` (the
    paths lie in it) ``--out DIR already holds a.tif, b.png, c.npy and 2 more; pass
    --overwrite to replace them``, else ``--out FILE already exists; pass --overwrite to
    replace it``.

    Raises:
        InputError: an output exists and ``overwrite`` is false, or an output is a folder
            (no file can replace it, ``overwrite`` or not).
    """
    held = [Path(p) for p in paths if Path(p).exists()]
    for p in held:
        if p.is_dir():
            where = f"{option} {p}" if folder is None else f"{option} {folder}: {p.name}"
            raise InputError(f"{where} is a folder, not a file to replace")
    if not held or overwrite:
        return
    names = [p.name if folder is not None else str(p) for p in held]
    listed = ", ".join(names[:show]) + (f" and {len(names) - show} more" if len(names) > show else "")
    one = len(held) == 1
    if folder is not None:
        said = f"{option} {folder} already holds {listed}"
    else:
        said = f"{option} {listed} already {'exists' if one else 'exist'}"
    raise InputError(f"{said}; pass --overwrite to replace {'it' if one else 'them'}")
