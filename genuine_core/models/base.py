"""The common classifier interface: every model kind is a :class:`GenuineClassifier`.

A classifier maps patches ``(N, 3, P, P)`` float32 in [0, 1] to logits ``(N,)`` (MNA
vs non-MNA). Its computation is split in two so that inference can reuse the costly
part for MC-dropout samples:

- :meth:`GenuineClassifier.features`: the deterministic part (encoder, frozen
  detector, intensity sums) -> a feature vector ``z`` and the detections (if any);
- :meth:`GenuineClassifier.head`: ``z`` -> (logits, hidden layer or ``None``); the only
  place with dropout.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from genuine_core.errors import InputError
from genuine_core.models.config import ModelConfig
from genuine_core.models.detector import Detections


@dataclass
class ModelOutput:
    """Everything one forward pass gives.

    Attributes:
        logits: ``(N,)`` float32.
        embedding: ``(N, D)`` float32 (see :meth:`GenuineClassifier.embedding_from`).
        features: ``(N, F)`` float32 output of :meth:`GenuineClassifier.features`.
        detections: one dict per patch (``boxes``, ``scores``, ``labels``) or ``None``
            for kinds without a detector.
    """

    logits: torch.Tensor
    embedding: torch.Tensor
    features: torch.Tensor
    detections: Detections | None


class GenuineClassifier(nn.Module):
    """Base class of the four model kinds; also their single loader.

    Build with :meth:`from_config` (seeded initialisation) or load with
    :meth:`from_folder`; both return the subclass named by ``config.kind``.

    Attributes:
        config: the model's :class:`ModelConfig` (replaced, never mutated, by
            :meth:`set_calibration`).
        metrics: the ``metrics.json`` content of the folder it was loaded from (else {}).
    """

    kind: ClassVar[str] = ""
    has_detector: ClassVar[bool] = False
    _registry: ClassVar[dict[str, type[GenuineClassifier]]] = {}

    def __init_subclass__(cls, kind: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind:
            cls.kind = kind
            GenuineClassifier._registry[kind] = cls

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError("config must be a ModelConfig")
        if self.kind and config.kind != self.kind:
            raise ValueError(f"{type(self).__name__} needs config.kind={self.kind!r}, got {config.kind!r}")
        self.config = config
        self.metrics: dict[str, Any] = {}

    # ---------------------------------------------------------------- building
    @classmethod
    def from_config(cls, config: ModelConfig) -> GenuineClassifier:
        """A freshly initialised model of ``config.kind``; weights depend only on ``config.seed``."""
        _import_kinds()
        if config.kind not in cls._registry:
            raise ValueError(f"no model class for kind {config.kind!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return cls._registry[config.kind](config)

    @classmethod
    def from_folder(cls, path: str | Path, map_location: str | torch.device = "cpu",
                    allow_unfinished: bool = False) -> GenuineClassifier:
        """Load any model kind from a model folder (checksums verified, no unpickling).

        ``allow_unfinished=True`` also loads the folder of a training run that did not
        finish (to inspect it; see ``genuine_core.models.folder.load_model``).

        Raises:
            ModelLoadError: missing, incomplete, tampered or unsafe folder, or (``UnfinishedModelError``)
                a training run that did not finish.
        """
        from genuine_core.models.folder import load_model

        return load_model(path, map_location=map_location, allow_unfinished=allow_unfinished)

    def save(self, path: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        """Write this model as a folder (config, safetensors weights, metrics, checksums)."""
        from genuine_core.models.folder import save_model

        return save_model(self, path, metrics)

    # ----------------------------------------------------------- computation
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, Detections | None]:
        """Deterministic features ``(N, F)`` and detections (or ``None``)."""
        raise NotImplementedError

    def head(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(N,)`` and the hidden layer ``(N, H)`` (or ``None``) from features."""
        raise NotImplementedError

    def embedding_from(self, z: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
        """The embedding for UMAP: the hidden layer when there is one, else the features."""
        return hidden if hidden is not None else z

    def infer(self, x: torch.Tensor) -> ModelOutput:
        """One pass giving logits, embedding, features and detections."""
        self.check_input(x)
        z, detections = self.features(x)
        logits, hidden = self.head(z)
        return ModelOutput(logits, self.embedding_from(z, hidden), z, detections)

    def forward(self, x: torch.Tensor, return_embedding: bool = False):
        """Logits ``(N,)``; with ``return_embedding`` the pair ``(logits, embedding (N, D))``."""
        out = self.infer(x)
        return (out.logits, out.embedding) if return_embedding else out.logits

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding ``(N, D)`` float32 (see :meth:`embedding_from`)."""
        return self.infer(x).embedding

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` unless ``x`` is a float ``(N, 3, P, P)`` batch of this model's P."""
        p = self.config.patch_size
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (3, p, p):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"expected patches of shape (N, 3, {p}, {p}), got {shape}")
        if not x.is_floating_point():
            raise InputError(f"patches must be floating point in [0, 1], got {x.dtype}")

    # ------------------------------------------------------------ uncertainty
    @property
    def has_dropout(self) -> bool:
        """Whether the head has active dropout (then MC-dropout is meaningful)."""
        return any(isinstance(m, nn.Dropout) and m.p > 0 for m in self.modules())

    @contextlib.contextmanager
    def mc_dropout(self):
        """Context in which dropout layers sample (train mode) while everything else stays eval."""
        drops = [m for m in self.modules() if isinstance(m, nn.Dropout)]
        modes = [m.training for m in drops]
        for m in drops:
            m.train()
        try:
            yield self
        finally:
            for m, mode in zip(drops, modes):
                m.train(mode)

    # ------------------------------------------------------------ calibration
    def set_calibration(self, temperature: float | None = None, threshold: float | None = None) -> None:
        """Store a fitted temperature and/or decision threshold in the config (validated)."""
        changes: dict[str, float] = {}
        if temperature is not None:
            changes["temperature"] = float(temperature)
        if threshold is not None:
            changes["threshold"] = float(threshold)
        self.config = self.config.replace(**changes)

    @property
    def device(self) -> torch.device:
        """Device of the first parameter or buffer (CPU when the model has none)."""
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")


def _import_kinds() -> None:
    """Import the modules that register the model kinds."""
    for module in ("genuine_core.models.baselines", "genuine_core.models.genuine"):
        importlib.import_module(module)
