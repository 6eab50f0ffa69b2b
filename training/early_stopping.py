"""Early stopping on a monitored value (validation loss), with resumable state."""

from __future__ import annotations

import math


class EarlyStopping:
    """Stop when the monitored value has not improved for ``patience`` epochs.

    An epoch improves when ``value < best - min_delta``. After ``patience``
    consecutive epochs without improvement, :attr:`should_stop` becomes True.

    Args:
        patience: epochs without improvement tolerated (paper: 30), >= 1.
        min_delta: minimum decrease that counts as an improvement, >= 0.

    Example:
        >>> es = EarlyStopping(patience=2)
        >>> [es.step(v) for v in (1.0, 0.9, 0.95, 0.91)]
        [True, True, False, False]
        >>> es.should_stop, es.best_epoch
        (True, 1)
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        if int(patience) < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.best = math.inf
        self.best_epoch = -1
        self.epoch = -1
        self.bad_epochs = 0
        self.should_stop = False

    def step(self, value: float) -> bool:
        """Record one epoch's value; return True when it is a new best.

        Raises:
            ValueError: ``value`` is NaN (a diverged run should not silently continue).
        """
        value = float(value)
        if math.isnan(value):
            raise ValueError("monitored value is NaN")
        self.epoch += 1
        if value < self.best - self.min_delta:
            self.best = value
            self.best_epoch = self.epoch
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.should_stop = True
        return False

    def state_dict(self) -> dict:
        """JSON-serialisable state for resuming."""
        return {
            "patience": self.patience,
            "min_delta": self.min_delta,
            "best": None if math.isinf(self.best) else self.best,
            "best_epoch": self.best_epoch,
            "epoch": self.epoch,
            "bad_epochs": self.bad_epochs,
            "should_stop": self.should_stop,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore counters saved by :meth:`state_dict` (patience keeps the current value)."""
        self.best = math.inf if state.get("best") is None else float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.epoch = int(state["epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.should_stop = self.bad_epochs >= self.patience
