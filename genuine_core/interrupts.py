"""Ctrl-C, remembered: libraries (DuckDB's Python callbacks, numba) sometimes turn the
``KeyboardInterrupt`` Python raises into an error of their own. A command that installed
:func:`remember_interrupts` can still tell that such an error was the user stopping it.
"""

from __future__ import annotations

import signal
import threading

_SEEN = threading.Event()


def remember_interrupts() -> None:
    """Install a SIGINT handler that notes the interrupt, then raises ``KeyboardInterrupt`` as Python does
    (main thread only; elsewhere nothing is installed)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        _SEEN.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, handler)


def interrupted() -> bool:
    """Whether Ctrl-C reached this process since :func:`remember_interrupts` was installed."""
    return _SEEN.is_set()
