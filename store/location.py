"""Which store file a command or page uses; light (no duckdb or pandas), so the CLI parser stays fast."""

from __future__ import annotations

import os
from pathlib import Path

#: store used when neither ``--db`` nor ``$GENUINE_DB`` names one (the dashboard's default too)
DEFAULT_DB = "demo/genuine_demo.duckdb"


def default_db_path() -> Path:
    """``$GENUINE_DB`` when set, else :data:`DEFAULT_DB` (relative to the working directory)."""
    return Path(os.environ.get("GENUINE_DB", "").strip() or DEFAULT_DB)


def add_db_argument(parser) -> None:
    """The ``--db PATH`` option every store command shares."""
    parser.add_argument("--db", type=Path, default=None,
                        help=f"store file (default: $GENUINE_DB or {DEFAULT_DB})")
