"""Registered models' folders kept inside a store's ``<name>_files`` folder (``genuine store backup``, restore).

A backup copies each registered model's folder that lives outside the store into ``<name>_files/models/``, so
that the backup holds everything a restored store needs. The store still records the original folders; on
another machine ``genuine store check --fix-paths`` records, for every model whose folder is gone or holds
other weights, a folder under ``<name>_files`` that holds its registered weights (found by checksum, so a
renamed copy or a retraining run's model under ``runs/`` is found too).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from genuine_core.errors import ModelLoadError, StoreError

#: where a backup puts the models' folders, inside ``<name>_files``
MODELS_DIR = "models"
#: folders under ``<name>_files`` searched for a model's copy (relative glob patterns)
_SEARCHED = (f"{MODELS_DIR}/*", "runs/*/*")
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def digest_or_none(folder: str | Path) -> str | None:
    """The model folder's checksum (``folder_digest``), None when it is missing or not a complete model folder."""
    from genuine_core.models.folder import folder_digest

    try:
        return folder_digest(folder)
    except (ModelLoadError, OSError):
        return None


def copy_model_folders(models: list[tuple[str, str, str]], store_files: Path, into: Path) -> tuple[dict, dict]:
    """Copy each model's folder that lies outside ``store_files`` into ``into/models/<name>/`` and check the copy.

    Args:
        models: ``(name, folder, checksum)`` of the registered models.
        store_files: the store's own ``<name>_files`` folder (copied already: folders inside it are not copied again).
        into: the copy's ``<name>_files`` folder.

    Returns:
        ``(copied, skipped)``: name -> folder of the copy relative to ``into``; name -> why it was not copied
        (its folder is missing, incomplete or holds other weights than registered).

    Raises:
        StoreError: a copy does not hold the weights its source holds.
        OSError: a copy failed (the caller removes the partial backup).
    """
    copied, skipped = {}, {}
    inside = store_files.resolve()
    for name, folder, checksum in models:
        src = Path(folder)
        if src.resolve().is_relative_to(inside):  # e.g. a retraining run's model: copied with the folder
            rel = src.resolve().relative_to(inside)
            if (into / rel).is_dir():
                copied[name] = rel.as_posix()
                continue
        found = digest_or_none(src)
        if found is None:
            skipped[name] = f"its folder {folder} is missing or not a complete model folder"
            continue
        if found != checksum:
            skipped[name] = f"its folder {folder} holds other weights than registered"
            continue
        dest = _free(into / MODELS_DIR, name if _SAFE.fullmatch(name) else "model")
        shutil.copytree(src, dest)
        if digest_or_none(dest) != checksum:
            raise StoreError(f"the copy of model {name!r}'s folder {folder} differs from it; nothing kept")
        copied[name] = dest.relative_to(into).as_posix()
    return copied, skipped


def _free(parent: Path, name: str) -> Path:
    """``parent/name``, or ``parent/name-2``, ... : the first that does not exist."""
    k = 1
    while (parent / (name if k == 1 else f"{name}-{k}")).exists():
        k += 1
    return parent / (name if k == 1 else f"{name}-{k}")


def copies_in_files(store_files: Path) -> dict[str, Path]:
    """Checksum -> folder of every complete model folder kept under ``store_files`` (first by path)."""
    found: dict[str, Path] = {}
    for pattern in _SEARCHED:
        for folder in sorted(store_files.glob(pattern)):
            if folder.is_dir() and (folder / "checksum.sha256").is_file():
                digest = digest_or_none(folder)
                if digest is not None:
                    found.setdefault(digest, folder)
    return found


def models_needing_folders(store) -> list[tuple[str, str | None, str]]:
    """``(name, folder, checksum)`` of the registered models whose recorded folder is missing, incomplete or
    holds other weights than registered (retired ones included: reinstating them needs the folder)."""
    rows = store.query("SELECT name, folder, checksum FROM models ORDER BY id").itertuples(index=False)
    return [(n, f, c) for n, f, c in rows if not isinstance(f, str) or digest_or_none(f) != c]


def find_copies(store) -> dict[str, Path]:
    """Registered model name -> a folder under the store's ``<name>_files`` that holds its registered weights,
    for the models whose recorded folder does not (:func:`models_needing_folders`)."""
    needing = models_needing_folders(store)
    if not needing or not store.folder.is_dir():
        return {}
    copies = copies_in_files(store.folder)
    return {name: copies[checksum] for name, _, checksum in needing if checksum in copies}


def copy_way_out(store, name: str, copies: dict[str, Path] | None = None) -> str:
    """How to get on when registered model ``name``'s folder is missing but a copy under the store's
    ``<name>_files`` holds its weights (a restored backup): record it with ``store check --fix-paths``;
    '' when there is no such copy. ``copies``: :func:`find_copies`, when known already."""
    from store.location import genuine_command

    copies = find_copies(store) if copies is None else copies
    if name not in copies:
        return ""
    return (f"a copy holding its weights is in {copies[name]}, e.g. from a backup: record it with "
            f"{genuine_command('store check --fix-paths', store.path)}")


def dashboard_way_out(store, name: str) -> str:
    """The Models page's way out for an active model whose folder is not on this machine (Markdown): record the
    copy a restored backup holds, else restore the folder, record where it moved, or remove the model."""
    from store.location import genuine_command

    copies = find_copies(store)
    if name in copies:
        return (f"a copy holding its weights is in `{copies[name]}` (e.g. a restored backup): stop the dashboard "
                f"and record it with `{genuine_command('store check --fix-paths', store.path)}`.")
    return ("restore the folder, record where it is now if it moved (`genuine store relocate-model NAME "
            "NEW_FOLDER`, with the dashboard stopped), or remove the model below.")


def fix_model_paths(store, by: str | None = None) -> list[tuple[str, str | None, str]]:
    """Record, for each registered model whose folder is gone or holds other weights, the copy of its folder
    under the store's ``<name>_files`` (``registry.relocate_model``: an event in the store's log).

    Returns:
        ``(name, previous folder, new folder)`` of each model relocated.
    """
    from store.registry import relocate_model

    done = []
    for name, folder in find_copies(store).items():
        previous = relocate_model(store, name, folder, by)
        done.append((name, previous, str(folder.resolve())))
    return done
