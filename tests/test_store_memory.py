"""``GENUINE_DUCKDB_MEMORY``: DuckDB's memory limit for every store connection (dashboard and commands)."""

from __future__ import annotations

import pytest

from genuine_core.cli import main
from genuine_core.errors import InputError
from store.db import Store
from store.memory import DEFAULT_MEMORY, memory_limit, parse_size


def _limit(store: Store) -> str:
    return store.scalar("SELECT current_setting('memory_limit')")


def test_a_store_caps_duckdb_memory_at_1gb_unless_told(tmp_path, monkeypatch):
    monkeypatch.delenv("GENUINE_DUCKDB_MEMORY", raising=False)
    assert DEFAULT_MEMORY == "1GB"
    with Store(tmp_path / "a.duckdb") as s:
        assert _limit(s) == "953.6 MiB"  # 1 GB, not DuckDB's 80 % of the machine's RAM
    monkeypatch.setenv("GENUINE_DUCKDB_MEMORY", " 256MiB ")
    with Store(tmp_path / "a.duckdb", read_only=True) as s:
        assert _limit(s) == "256.0 MiB"


@pytest.mark.parametrize(("text", "size"), [("512MB", 512 * 1000**2), ("1.5GB", 1_500_000_000),
                                            ("2GiB", 2 * 1024**3), ("300 mib", 300 * 1024**2)])
def test_sizes_in_decimal_and_binary_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "why"), [("lots", "is not a memory size; give one such as 512MB"),
                                           ("80%", "is not a memory size"), ("512", "is not a memory size"),
                                           ("64MB", "is too small for a store: give at least 128MiB")])
def test_a_bad_value_is_refused_in_one_line_before_any_file_is_made(text, why, tmp_path, monkeypatch, capsys):
    Store(tmp_path / "lab.duckdb").close()
    monkeypatch.setenv("GENUINE_DUCKDB_MEMORY", text)
    with pytest.raises(InputError, match=f"GENUINE_DUCKDB_MEMORY='{text}' {why}"):
        memory_limit()
    assert main(["store", "info", "--db", str(tmp_path / "lab.duckdb")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: GENUINE_DUCKDB_MEMORY='{text}' {why}") and err.endswith("(unset: 1GB)")
    assert "\n" not in err
    with pytest.raises(InputError):
        Store(tmp_path / "new" / "a.duckdb")
    assert not (tmp_path / "new").exists()


def _oom():
    import duckdb

    return duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block of size 256.0 KiB "
                                       "(31.8 MiB/32.0 MiB used)\n\nPossible solutions: ...")


def test_a_command_past_the_limit_says_how_to_raise_it_in_one_line(tmp_path, monkeypatch, capsys):
    import store.check

    Store(tmp_path / "lab.duckdb").close()
    monkeypatch.setenv("GENUINE_DUCKDB_MEMORY", "128MiB")

    def big(*args):
        raise _oom()

    monkeypatch.setattr(store.check, "check_store", big)
    assert main(["store", "check", "--db", str(tmp_path / "lab.duckdb")]) == 2
    assert capsys.readouterr().err == (
        "error: the store ran out of memory: GENUINE_DUCKDB_MEMORY=128MiB is too small for this query (Out of "
        "Memory Error: could not allocate block of size 256.0 KiB (31.8 MiB/32.0 MiB used)); raise it, e.g. "
        "GENUINE_DUCKDB_MEMORY=2GB\n")


def test_a_page_past_the_limit_shows_the_way_out_not_a_traceback(monkeypatch):
    from streamlit.testing.v1 import AppTest

    def app():
        import duckdb

        from pages import common

        class Page:
            def run(self):
                raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")

        common.run_page(Page())

    monkeypatch.delenv("GENUINE_DUCKDB_MEMORY", raising=False)
    at = AppTest.from_function(app).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "The store ran out of memory: the default limit 1GB (GENUINE_DUCKDB_MEMORY unset) is too small for this "
        "query (Out of Memory Error: could not allocate block); raise it, e.g. GENUINE_DUCKDB_MEMORY=2GB, and "
        "restart the dashboard"]
