"""The dashboard served by ``streamlit run`` on a free localhost port, for benches and browser tests.

One place for the browser's launch settings and for starting, health-checking and stopping the
server, shared by
``bench/bench_load.py``, ``bench/bench_pages.py`` and ``tests/test_browser.py``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Debian's chromium (never a browser download) and how headless sessions launch it
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-dev-shm-usage"]


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll Streamlit's health endpoint until it answers ``ok``.

    Raises:
        RuntimeError: the server exited. TimeoutError: not healthy within ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        time.sleep(0.5)
    raise TimeoutError(f"streamlit did not become healthy within {timeout:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the server (it closes the store on exit), SIGKILL when it does not stop."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@contextlib.contextmanager
def serve_app(db: Path, log_path: Path | None = None, timeout: float = 120.0, port: int | None = None):
    """Serve ``app.py`` against the store ``db``; yields (base url, process) once healthy, stops it after.

    ``log_path`` receives the server's output (discarded when None); ``port``: a free one when None.
    """
    port = port or free_port()
    env = {**os.environ, "GENUINE_DB": str(db), "PYTHONPATH": str(REPO)}
    with open(log_path or os.devnull, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(port, proc, timeout)
            yield f"http://127.0.0.1:{port}", proc
        finally:
            stop(proc)
