"""Ctrl-C, remembered: libraries (DuckDB's Python callbacks, numba) sometimes turn the
``KeyboardInterrupt`` Python raises into an error of their own. A command that installed
:func:`remember_interrupts` can still tell that such an error was the user stopping it.

SIGTERM (``kill``, a service manager or container stopping) is handled as Ctrl-C is, so a command
cleans up (a backup's partial folder, a training checkpoint) instead of dying mid-write.
"""

from __future__ import annotations

import signal
import threading

_SEEN = threading.Event()
_LAST = [signal.SIGINT]  # the signal that stopped the command


def remember_interrupts() -> None:
    """Install SIGINT and SIGTERM handlers that note the signal, then raise ``KeyboardInterrupt`` as Python
    does for SIGINT (main thread only; elsewhere nothing is installed)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        _SEEN.set()
        _LAST[0] = signum
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def interrupted() -> bool:
    """Whether Ctrl-C reached this process since :func:`remember_interrupts` was installed."""
    return _SEEN.is_set()


def interrupt_exit_code() -> int:
    """The shell's exit code for a command stopped by a signal: 128 + its number (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + int(_LAST[0])
