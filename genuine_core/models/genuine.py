"""GENUINE: ``y = F(flatten(E(P)) (+) flatten(B(P)))`` (paper, section 2.1).

E is a ResNet encoder (trained), B the frozen RetinaNet signal detector whose output
per patch is the top-K boxes per class (see
:func:`~genuine_core.models.detector.detections_to_features`), F an MLP with one
hidden layer (100 units in the paper's code) and dropout.
"""

from __future__ import annotations

import torch
from torch import nn

from genuine_core.models.base import GenuineClassifier
from genuine_core.models.config import ModelConfig
from genuine_core.models.detector import (
    Detections,
    SignalDetector,
    count_detections,
    detections_to_features,
    freeze,
)
from genuine_core.models.encoder import PatchEncoder


class FrozenDetectorMixin:
    """Keeps ``self.detector`` frozen: no gradients, always in eval mode."""

    detector: SignalDetector

    def train(self, mode: bool = True):
        """Set train/eval mode on the model; the detector stays in eval mode."""
        super().train(mode)  # type: ignore[misc]
        self.detector.eval()
        return self

    def load_detector(self, source: SignalDetector | GenuineClassifier | dict[str, torch.Tensor]) -> None:
        """Copy detector weights from a trained detector, a model holding one, or a state dict.

        The detector configs must match (same architecture); it stays frozen.
        """
        if isinstance(source, GenuineClassifier):
            if not source.has_detector:
                raise ValueError(f"a {source.kind!r} model has no detector")
            source = source.detector  # type: ignore[attr-defined]
        if isinstance(source, SignalDetector):
            if source.config != self.detector.config or source.patch_size != self.detector.patch_size:
                raise ValueError("detector config differs from this model's detector config")
            source = source.state_dict()
        self.detector.load_state_dict(source)
        freeze(self.detector)

    def detect_features(self, x: torch.Tensor) -> tuple[torch.Tensor, Detections]:
        """Box features ``(N, 3 * top_k * 6)`` and raw detections from the frozen detector."""
        detections = self.detector.detect(x)
        cfg: ModelConfig = self.config  # type: ignore[attr-defined]
        return detections_to_features(detections, cfg.top_k, cfg.patch_size), detections


def _with_counts(box: torch.Tensor, detections: Detections, count_threshold: float) -> torch.Tensor:
    """``(N, F)`` box features -> ``(N, 3 + F)``: counts (NMI, MYCN, cluster) first."""
    return torch.cat([count_detections(detections, count_threshold).to(box.dtype), box], dim=1)


class GenuineModel(FrozenDetectorMixin, GenuineClassifier, kind="genuine"):
    """The two-stream GENUINE classifier.

    ``features(x)`` = ``concat(E(x), flatten(B(x)))`` of size
    ``encoder.out_dim + 3 * top_k * 6`` (+ 3 detection counts with
    ``config.count_features``); the head is
    ``[BatchNorm1d] -> Linear(hidden) -> ReLU -> Dropout -> Linear(1)``.
    ``embed`` returns the hidden layer (``config.embedding="hidden"``) or the
    concatenated vector (``"concat"``).

    Note: with ``fusion_norm`` (BatchNorm1d) training batches need >= 2 patches.
    """

    has_detector = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.encoder = PatchEncoder(config.encoder)
        self.detector = freeze(SignalDetector(config.detector, config.patch_size))
        dim = self.feature_dim
        self.fusion_norm = nn.BatchNorm1d(dim) if config.fusion_norm else nn.Identity()
        self.hidden = nn.Sequential(nn.Linear(dim, config.hidden), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden, 1)

    @property
    def feature_dim(self) -> int:
        """Length of the concatenated vector."""
        return self.encoder.out_dim + self.config.box_feature_dim

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, Detections]:
        box, detections = self.detect_features(x)
        if self.config.count_features:
            box = _with_counts(box, detections, self.config.detector.count_threshold)
        return torch.cat([self.encoder(x), box], dim=1), detections

    def head(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(self.fusion_norm(z))
        return self.out(self.dropout(h)).squeeze(1), h

    def embedding_from(self, z: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
        return z if self.config.embedding == "concat" else hidden  # type: ignore[return-value]
