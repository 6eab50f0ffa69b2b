"""Which store file a command or page uses; light (no duckdb or pandas), so the CLI parser stays fast."""

from __future__ import annotations

import os
from pathlib import Path

#: store used when neither ``--db`` nor ``$GENUINE_DB`` names one (the dashboard's default too)
DEFAULT_DB = "demo/genuine_demo.duckdb"


#: file name endings of a store a command creates (DuckDB's own; an existing store opens whatever its name)
STORE_SUFFIXES = (".duckdb", ".db", ".ddb")


def new_store_name_refusal(path: str | Path, option: str) -> str | None:
    """Why ``path`` is no name for a new store (``x.txt``, ``store``), or None when it ends as a store does."""
    p = Path(path)
    if p.suffix.lower() in STORE_SUFFIXES:
        return None
    return (f"{option} {path}: a store file's name ends in {STORE_SUFFIXES[0]} (or {', '.join(STORE_SUFFIXES[1:])}),"
            f" e.g. {p.with_suffix(STORE_SUFFIXES[0])}")


def default_db_path() -> Path:
    """``$GENUINE_DB`` when set, else :data:`DEFAULT_DB` (relative to the working directory)."""
    return Path(os.environ.get("GENUINE_DB", "").strip() or DEFAULT_DB)


def store_exists(path: str | Path) -> bool:
    """True when ``path`` is a file with something in it: an empty file (e.g. made by ``touch``) holds no store
    yet, and the first command that writes creates the store in its place (``store.db.Store``)."""
    p = Path(path)
    return p.is_file() and p.stat().st_size > 0


def no_store_message(path: str | Path) -> str:
    """Why ``path`` holds no store to work on: it is missing, or an empty file (:func:`store_exists` is False)."""
    if Path(path).is_dir():  # as Store says it on opening
        return f"{path}: is a directory, not a store file"
    if not Path(path).is_file():
        return f"{path}: no such store"
    return (f"{path}: an empty file, not yet a GENUINE store; an ingest into it, or "
            f"`{genuine_command('store migrate', path)}`, sets it up")


def genuine_command(command: str, db: str | Path | None) -> str:
    """``genuine COMMAND`` as a message suggests it, with ``--db PATH`` unless ``db`` is the store the
    command would open anyway: the suggestion must act on the store the user is working on. On a dashboard
    page it always names the store, by its full path (:func:`_on_dashboard_page`)."""
    import shlex

    if db is not None and _on_dashboard_page():
        return f"genuine {command} --db {shlex.quote(str(Path(db).expanduser().resolve()))}"
    same = db is None or Path(db).expanduser().resolve() == default_db_path().expanduser().resolve()
    return f"genuine {command}" + ("" if same else f" --db {shlex.quote(str(db))}")


def _on_dashboard_page() -> bool:
    """True while a dashboard page runs (Streamlit's script thread). Its user types a suggested command into
    another shell, where the dashboard's ``$GENUINE_DB`` and working directory need not hold: without ``--db``
    the command would act on another store (the demo's, say)."""
    import sys

    if "streamlit" not in sys.modules:  # the CLI never imports it: stay light
        return False
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    return get_script_run_ctx(suppress_warning=True) is not None


def add_db_argument(parser) -> None:
    """The ``--db PATH`` option every store command shares."""
    parser.add_argument("--db", type=Path, default=None,
                        help=f"store file (default: $GENUINE_DB or {DEFAULT_DB})")


def login_name() -> str | None:
    """The operating-system login running this process (None when it has none, e.g. some containers)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def has_control_characters(text: str) -> bool:
    """True when ``text`` holds a control character (a newline or terminal escape would forge printed lines)."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def person_name(text: str) -> str | None:
    """A ``--by`` value: stripped; empty means nobody named (None).

    Raises:
        argparse.ArgumentTypeError: control characters (a newline or a terminal escape would forge lines
            of the event log as printed).
    """
    import argparse

    name = text.strip()
    if has_control_characters(name):
        raise argparse.ArgumentTypeError("a name without control characters (newlines, escapes)")
    return name or None


def add_by_option(parser) -> None:
    """``--by NAME``: who runs a command that registers, relocates or removes a model, or relocates or removes a scan
    (``store_events``)."""
    parser.add_argument("--by", metavar="NAME", type=person_name, default=login_name(),
                        help="who does this, kept in the store's event log (default: your login, %(default)s)")
