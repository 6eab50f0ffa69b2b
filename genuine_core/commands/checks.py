"""Up-front checks of output paths shared by the subcommands (light: no heavy imports).

Every subcommand checks its output path before doing any work, so a typo ends with one
line and exit code 2 (:class:`~genuine_core.errors.InputError`) and nothing written.
"""

from __future__ import annotations

from pathlib import Path

from genuine_core.errors import InputError

#: side (px) of a square patch the commands accept (segment, synth probe backgrounds)
PATCH_SIZE_RANGE = (8, 1024)


def _check_parents(path: Path, option: str) -> None:
    """Refuse a path below an existing file (``FILE/sub``): it could never be created."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{option} {path}: {parent} is a file, not a folder")
            return


def in_range(value: float, bounds: tuple[float, float], option: str, unit: str = "") -> None:
    """Refuse ``value`` outside ``bounds`` (inclusive) with one line naming ``option``.

    Raises:
        InputError: e.g. ``--diameter must be in [4, 2000] px, got 0``.
    """
    lo, hi = bounds
    if not lo <= value <= hi:
        raise InputError(f"{option} must be in [{lo:g}, {hi:g}]{unit}, got {value:g}")


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
