"""Model-specific training tasks for :func:`training.loop.fit`.

- :class:`ClassifierTask`: GENUINE / ResNet (any module mapping ``(N, 3, P, P)`` to
  logits ``(N,)``) with BCE-with-logits against 0/1 labels.
- :class:`DetectorTask`: the RetinaNet signal detector with its own focal + box loss
  (``detector(images, targets)`` in train mode).

Saving is delegated to a ``save_fn(path, metrics)`` callable, so the same tasks
train the real model folders and the tiny fakes used in tests.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from training.augment import AugmentConfig, augment_batch, augment_detection, remove_mycn_signals
from training.datasets import ClassificationData, DetectionData, to_tensor

SaveFn = Callable[[Path, dict[str, Any]], None]


@torch.no_grad()
def predict_logits(model: torch.nn.Module, patches: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Logits ``(N,)`` float64 of a classifier in eval mode (mode restored afterwards)."""
    was = model.training
    model.eval()
    out = []
    try:
        for s in range(0, len(patches), batch_size):
            x = to_tensor(patches[s:s + batch_size])
            out.append(model(x).reshape(-1).double().cpu().numpy())
    finally:
        model.train(was)
    return np.concatenate(out) if out else np.zeros(0)


class ClassifierTask:
    """Binary classification with augmentation.

    Args:
        model: module returning logits ``(N,)``.
        train, val: data; ``train.labels`` / ``val.labels`` are the targets.
        augment: augmentation strengths.
        save_fn: writes a model folder for the current weights.
        eval_batch: batch size for validation.
    """

    def __init__(self, model: torch.nn.Module, train: ClassificationData, val: ClassificationData,
                 augment: AugmentConfig, save_fn: SaveFn, eval_batch: int = 128) -> None:
        self.model = model
        self.train_x = np.asarray(train.patches)
        self.train_y = torch.from_numpy(train.labels.astype(np.float32))
        self.val_x = np.asarray(val.patches)
        self.val_y = val.labels.astype(np.float64)
        self.augment = augment
        self.save_fn = save_fn
        self.eval_batch = eval_batch

    def n_train(self) -> int:
        return len(self.train_x)

    def train_batch(self, idx: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, int, int]:
        x, no_mycn = remove_mycn_signals(to_tensor(self.train_x, idx), self.augment.p_no_mycn, gen)
        x = augment_batch(x, self.augment, gen)
        y = self.train_y[torch.from_numpy(np.asarray(idx))].masked_fill(no_mycn, 0.0)
        logits = self.model(x).reshape(-1)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        correct = int(((logits.detach() >= 0).float() == y).sum())
        return loss, correct, len(idx)

    def validate(self) -> tuple[float, float]:
        from training.metrics import bce_with_logits

        z = predict_logits(self.model, self.val_x, self.eval_batch)
        return bce_with_logits(z, self.val_y), float(((z >= 0) == (self.val_y == 1)).mean())

    def save_model(self, path: Path, metrics: dict[str, Any]) -> None:
        self.save_fn(Path(path), metrics)


@contextlib.contextmanager
def _frozen_norm(module: torch.nn.Module):
    """Train mode for loss computation but with normalisation layers using running stats."""
    was = module.training
    module.train()
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        module.train(was)


def detection_targets(data: DetectionData, idx) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Boxes and classes of rows ``idx`` as tensors."""
    boxes = [torch.from_numpy(np.asarray(data.boxes[i], np.float32).reshape(-1, 4)) for i in idx]
    labels = [torch.from_numpy(np.array(data.classes[i], np.int64)) for i in idx]
    return boxes, labels


class DetectorTask:
    """RetinaNet training on patches with exact boxes (flips/rot90 + photometric augmentation).

    Args:
        detector: module called as ``detector(images, targets)`` -> loss dict in train mode.
        train, val: detection data.
        augment: augmentation strengths (affine and channel drop are not used).
        save_fn: writes a model folder for the current weights.
        eval_batch: batch size for the validation loss.
    """

    def __init__(self, detector: torch.nn.Module, train: DetectionData, val: DetectionData,
                 augment: AugmentConfig, save_fn: SaveFn, eval_batch: int = 64) -> None:
        self.model = detector
        self.train = train
        self.train_x = np.asarray(train.patches)
        self.val = val
        self.val_x = np.asarray(val.patches)
        self.augment = augment
        self.save_fn = save_fn
        self.eval_batch = eval_batch

    def n_train(self) -> int:
        return len(self.train_x)

    def _loss(self, x: torch.Tensor, boxes, labels) -> torch.Tensor:
        targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
        losses = self.model(x, targets)
        return sum(losses.values())

    def train_batch(self, idx: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, None, int]:
        boxes, labels = detection_targets(self.train, idx)
        x, boxes = augment_detection(to_tensor(self.train_x, idx), boxes, self.augment, gen)
        return self._loss(x, boxes, labels), None, len(idx)

    @torch.no_grad()
    def validate(self) -> tuple[float, None]:
        total, n = 0.0, 0
        with _frozen_norm(self.model):
            for s in range(0, len(self.val_x), self.eval_batch):
                idx = np.arange(s, min(s + self.eval_batch, len(self.val_x)))
                boxes, labels = detection_targets(self.val, idx)
                total += float(self._loss(to_tensor(self.val_x, idx), boxes, labels)) * len(idx)
                n += len(idx)
        return total / max(n, 1), None

    def save_model(self, path: Path, metrics: dict[str, Any]) -> None:
        self.save_fn(Path(path), metrics)
