"""``scripts/run.sh``: which store the dashboard serves, and when the demo store is built.

The real script runs in a copy of the project whose setup, ``genuine`` and ``streamlit`` are stubs that say
what they were asked, so the test takes a fraction of a second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUBS = {
    "scripts/setup.sh": "true\n",
    # `genuine demo --out PATH`: says so and creates the file
    ".venv/bin/genuine": 'echo "genuine $*"; mkdir -p "$(dirname "$3")"; echo store > "$3"\n',
    ".venv/bin/streamlit": 'echo "streamlit GENUINE_DB=$GENUINE_DB cwd=$PWD"\n',
}


@pytest.fixture()
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "run.sh", root / "scripts" / "run.sh")
    for rel, body in STUBS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)
    return root


def run_sh(project: Path, cwd: Path, db: str | None) -> list[str]:
    """Run the project's ``scripts/run.sh`` from ``cwd`` with ``GENUINE_DB=db`` (unset when None); its lines."""
    env = {k: v for k, v in os.environ.items() if k != "GENUINE_DB"}
    if db is not None:
        env["GENUINE_DB"] = db
    cwd.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["bash", str(project / "scripts" / "run.sh")], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_the_demo_store_is_built_only_where_the_default_store_lies(project, tmp_path):
    demo = project / "demo" / "genuine_demo.duckdb"
    for db in (None, " ", str(demo)):
        lines = run_sh(project, tmp_path / "elsewhere", db)
        assert lines == [f"run: building the demo store at {demo} (a few minutes, once)",
                         f"genuine demo --out {demo}", f"streamlit GENUINE_DB={demo} cwd={project}"], db
        demo.unlink()
    demo.touch()  # an empty file (e.g. `touch`) holds no store: built in its place
    assert run_sh(project, tmp_path, None) == [f"run: building the demo store at {demo} (a few minutes, once)",
                                               f"genuine demo --out {demo}", f"streamlit GENUINE_DB={demo} cwd={project}"]
    assert run_sh(project, tmp_path, None) == [f"streamlit GENUINE_DB={demo} cwd={project}"]  # built once


def test_another_store_is_taken_from_the_callers_folder_and_never_filled_with_demo_data(project, tmp_path):
    caller = tmp_path / "lab"
    for db, path in (("cases/new.duckdb", caller / "cases" / "new.duckdb"),
                     ("demo/genuine_demo.duckdb", caller / "demo" / "genuine_demo.duckdb"),  # not the project's
                     (str(tmp_path / "abs.duckdb"), tmp_path / "abs.duckdb")):
        lines = run_sh(project, caller, db)
        assert lines == [f"run: {path} does not exist yet; the dashboard starts empty, and the first ingest "
                         "(Ingest page) creates it", f"streamlit GENUINE_DB={path} cwd={project}"], db
        assert not path.exists() and not (project / "demo").exists()
    existing = caller / "cases" / "kept.duckdb"
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.touch()  # an empty file: the first ingest sets it up, never the demo
    assert run_sh(project, caller, "cases/kept.duckdb") == [f"streamlit GENUINE_DB={existing} cwd={project}"]
    assert existing.stat().st_size == 0 and not (project / "demo").exists()
    existing.write_bytes(b"a store")
    assert run_sh(project, caller, "cases/kept.duckdb") == [f"streamlit GENUINE_DB={existing} cwd={project}"]
