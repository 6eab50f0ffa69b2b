"""DuckDB's memory limit for every store connection: ``$GENUINE_DUCKDB_MEMORY`` (light: no duckdb import).

DuckDB's own default is 80 % of the machine's RAM, too much for a lab server shared with other services; the
store caps it at :data:`DEFAULT_MEMORY` unless the variable says otherwise. Past the limit DuckDB spills large
sorts and joins to a temporary folder beside the store, and a query that still does not fit fails with an
out-of-memory error (``store.db`` turns it into one line naming the variable).
"""

from __future__ import annotations

import os
import re

from genuine_core.errors import InputError

#: the environment variable, and the limit when it is unset or empty
ENV = "GENUINE_DUCKDB_MEMORY"
DEFAULT_MEMORY = "1GB"
#: the smallest accepted limit: below it the dashboard's first queries fail
MIN_BYTES = 128 * 1024**2
_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes of a size such as ``512MB``, ``1.5GB`` or ``2GiB`` (KB/MB/GB/TB powers of 1000, KiB/... of 1024).

    Raises:
        InputError: not such a size, or below :data:`MIN_BYTES` (the message names the variable).
    """
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise InputError(f"{ENV}={text!r} is not a memory size; give one such as 512MB, 1GB or 2GiB "
                         f"(unset: {DEFAULT_MEMORY})")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size < MIN_BYTES:
        raise InputError(f"{ENV}={text!r} is too small for a store: give at least 128MiB (unset: {DEFAULT_MEMORY})")
    return size


def memory_limit() -> str:
    """DuckDB's ``memory_limit`` setting from ``$GENUINE_DUCKDB_MEMORY`` (default :data:`DEFAULT_MEMORY`), in KiB.

    Raises:
        InputError: the variable holds no valid size (:func:`parse_size`).
    """
    text = os.environ.get(ENV, "").strip() or DEFAULT_MEMORY
    return f"{parse_size(text) // 1024}KiB"


def out_of_memory_message(exc: BaseException, where: str = "") -> str:
    """One line for DuckDB's out-of-memory error ``exc``: the limit in force and how to raise it (``where``:
    what to restart afterwards, e.g. 'the dashboard')."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    now = os.environ.get(ENV, "").strip()
    limit = f"{ENV}={now}" if now else f"the default limit {DEFAULT_MEMORY} ({ENV} unset)"
    return (f"the store ran out of memory: {limit} is too small for this query ({first}); raise it, e.g. "
            f"{ENV}=2GB" + (f", and restart {where}" if where else ""))


def is_out_of_memory(exc: BaseException) -> bool:
    """True for DuckDB's out-of-memory error (without importing duckdb when nothing did yet)."""
    import sys

    duckdb = sys.modules.get("duckdb")
    return duckdb is not None and isinstance(exc, duckdb.OutOfMemoryException)
