"""The epoch loop shared by every trained model: SGD, early stopping, checkpoints, resume.

A *task* supplies the model-specific parts (how to compute a batch loss, how to
validate, how to save a model folder); :func:`fit` does the rest:

- SGD (paper: learning rate 1e-3; we add momentum 0.9 by default, configurable) over
  the parameters that require gradients (a frozen detector inside GENUINE is skipped);
- one progress bar per epoch with the live running loss and accuracy;
- early stopping on the validation loss (paper: patience 30);
- after every epoch: ``history.json`` (per-epoch train/val loss and accuracy, seconds)
  and a resumable checkpoint in ``<out>/checkpoint/`` (see :mod:`training.checkpoint`);
- whenever the validation loss improves: the model folder ``<out>`` itself is
  rewritten with the new best weights, so ``<out>`` always holds the best model;
- ``resume=True`` continues from the last finished epoch with the same optimiser
  state, early-stopping counters and random streams.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from genuine_core.errors import GenuineError
from genuine_core.models.folder import CHECKPOINT_DIR, CHECKPOINT_STATUS, TRAINING_STATUS
from training.augment import AugmentConfig, make_generator
from training.checkpoint import HISTORY_FILE, clear_run, has_checkpoint, load_checkpoint, save_checkpoint
from training.datasets import batches, subsample
from training.early_stopping import EarlyStopping

logger = logging.getLogger(__name__)


class TrainingError(GenuineError):
    """Training cannot go on (diverged loss, nothing to train, bad resume)."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (saved with every model as ``train_config.json``).

    Attributes:
        epochs: maximum epochs.
        patience: early-stopping patience in epochs (paper: 30).
        min_delta: validation-loss decrease that counts as improvement.
        lr: SGD learning rate (paper: 1e-3).
        momentum: SGD momentum (not stated in the paper; 0.9 here).
        weight_decay: L2 penalty.
        batch_size: patches per step.
        train_per_epoch: patches drawn (without replacement) per epoch; None = all.
        max_val: validation patches used (a fixed seeded subset); None = all.
        seed: seeds sampling, augmentation and initialisation.
        threads: torch intra-op threads (<= 2 on the shared machine).
        augment: augmentation strengths.
    """

    epochs: int = 30
    patience: int = 6
    min_delta: float = 0.0
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    train_per_epoch: int | None = None
    max_val: int | None = None
    seed: int = 0
    threads: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "patience", "batch_size", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be > 0 and finite, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0 or self.min_delta < 0:
            raise ValueError("weight_decay and min_delta must be >= 0")
        for name in ("train_per_epoch", "max_val"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {v}")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view."""
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        aug = AugmentConfig.from_dict(d.pop("augment", {}))
        return cls(augment=aug, **d)


class Task(Protocol):
    """What :func:`fit` needs from a model-specific task."""

    model: torch.nn.Module

    def n_train(self) -> int:
        """Number of training rows."""

    def train_batch(self, idx: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, int | None, int]:
        """Loss on rows ``idx`` (augmented with ``gen``), correct predictions (None: n/a), count."""

    def validate(self) -> tuple[float, float | None]:
        """Validation ``(loss, accuracy or None)`` with the model in eval mode."""

    def save_model(self, path: Path, metrics: dict[str, Any]) -> None:
        """Write a model folder for the current weights."""


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        history: one dict per epoch (epoch, train_loss, train_acc, val_loss, val_acc,
            seconds, best).
        best_epoch: 0-based epoch with the lowest validation loss.
        best_val_loss: that loss.
        stopped_early: True when patience ran out before ``epochs``.
        seconds: total training wall time over all (resumed) runs.
    """

    history: list[dict[str, Any]]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    seconds: float


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    """Write ``history.json`` (list of per-epoch dicts) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / HISTORY_FILE).write_text(json.dumps(history, indent=1))


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_epoch(task: Task, opt: torch.optim.Optimizer, batch_rows: list[np.ndarray], gen: torch.Generator,
                 epoch: int, epochs: int) -> tuple[float, float | None]:
    """Epoch ``epoch`` (1-based) of ``epochs``: one SGD step per batch of training rows, with a progress bar.

    Returns:
        (mean training loss, training accuracy; None when the task reports no accuracy).

    Raises:
        TrainingError: a batch loss that is not finite.
    """
    bar = tqdm(batch_rows, disable=None, leave=False, desc=f"epoch {epoch}/{epochs}", unit="batch")
    loss_sum, seen, correct, has_acc = 0.0, 0, 0, True
    for idx in bar:
        loss, n_correct, count = task.train_batch(idx, gen)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at epoch {epoch}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * count
        seen += count
        if n_correct is None:
            has_acc = False
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        else:
            correct += n_correct
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
    bar.close()
    return loss_sum / max(seen, 1), (correct / seen if seen and has_acc else None)


def fit(task: Task, cfg: TrainConfig, out: str | Path, resume: bool = False) -> FitResult:
    """Train ``task.model`` in place; leave it holding the best weights.

    Args:
        task: model-specific batch loss, validation and saving.
        cfg: optimisation settings.
        out: model folder (created); ``<out>/checkpoint`` holds the last epoch.
        resume: continue from ``<out>/checkpoint`` (error when there is none).

    Returns:
        :class:`FitResult`.

    Raises:
        TrainingError: non-finite loss, no trainable parameters, or nothing to resume.
    """
    out = Path(out)
    model = task.model
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    torch.set_num_threads(min(cfg.threads, torch.get_num_threads() or cfg.threads))
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    es = EarlyStopping(cfg.patience, cfg.min_delta)
    rng = np.random.default_rng([cfg.seed, 7])
    gen = make_generator(cfg.seed + 1)
    history: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    start = 0
    if resume:
        if not has_checkpoint(out):
            raise TrainingError(f"--resume: no checkpoint in {out / 'checkpoint'}")
        state, best_state, extra = load_checkpoint(out, model, opt)
        es.load_state_dict(state["early_stopping"])
        history = state["history"]
        rng.bit_generator.state = state["numpy_rng"]
        if "augment_rng" in extra:
            gen.set_state(extra["augment_rng"])
        start = int(state["epoch"]) + 1
        logger.info("resuming after epoch %d (best val loss %.4f at epoch %d)", start, es.best, es.best_epoch + 1)
    else:
        clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    for epoch in range(start, cfg.epochs):
        if es.should_stop:
            break
        t0 = time.perf_counter()
        model.train()
        rows = subsample(task.n_train(), cfg.train_per_epoch, rng)
        chunks = list(batches(len(rows), cfg.batch_size, rng))
        train_loss, train_acc = _train_epoch(task, opt, [rows[b] for b in chunks], gen, epoch + 1, cfg.epochs)
        val_loss, val_acc = task.validate()
        if not math.isfinite(val_loss):
            raise TrainingError(f"validation loss became {val_loss} at epoch {epoch + 1}; lower the learning rate")
        improved = es.step(val_loss)
        rec = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": float(val_loss),
            "val_acc": None if val_acc is None else float(val_acc),
            "seconds": time.perf_counter() - t0,
            "best": improved,
        }
        history.append(rec)
        logger.info("epoch %d/%d train loss %.4f acc %s | val loss %.4f acc %s | %.0fs%s", epoch + 1, cfg.epochs,
                    rec["train_loss"], _fmt(rec["train_acc"]), rec["val_loss"], _fmt(rec["val_acc"]),
                    rec["seconds"], " *" if improved else "")
        metrics = {"epoch": epoch + 1, "val_loss": rec["val_loss"], "val_acc": rec["val_acc"]}
        if improved:
            best_state = _clone_state(model)
            task.save_model(out, {**metrics, "status": TRAINING_STATUS})
        write_history(out, history)
        state = {
            "epoch": epoch,
            "history": history,
            "early_stopping": es.state_dict(),
            "numpy_rng": rng.bit_generator.state,
            "train_config": cfg.to_dict(),
        }
        # the model folder first, the trainer state last (has_checkpoint looks for it): Ctrl-C in between
        # leaves no checkpoint after the first epoch, the previous epoch's complete one later
        task.save_model(Path(out) / CHECKPOINT_DIR, {**metrics, "status": CHECKPOINT_STATUS})
        save_checkpoint(out, model, best_state, opt, state, extra={"augment_rng": gen.get_state()})
    if best_state is not None:
        model.load_state_dict(best_state)
    seconds = float(sum(h["seconds"] for h in history))
    return FitResult(history, es.best_epoch, es.best, es.should_stop, seconds)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
