"""GENUINE models: configs and presets, signal detector, encoder, classifiers, model folders.

Public API::

    ModelConfig, EncoderConfig, DetectorConfig, preset_config, PRESETS   (config.py)
    SignalDetector, detections_to_features, count_detections, freeze     (detector.py)
    PatchEncoder                                                          (encoder.py)
    GenuineClassifier (base + loader), ModelOutput                        (base.py)
    GenuineModel                                                          (genuine.py)
    ResNetBaseline, DetectorBaseline, RatioBaseline, rule_logits          (baselines.py)
    save_model, load_model, read_config, verify_folder, folder_digest     (folder.py)

``build_model(config)`` is ``GenuineClassifier.from_config(config)``.
"""

from genuine_core.models.base import GenuineClassifier, ModelOutput
from genuine_core.models.baselines import (
    DetectorBaseline,
    RatioBaseline,
    ResNetBaseline,
    rule_logits,
)
from genuine_core.models.config import (
    CLASS_NAMES,
    MODEL_KINDS,
    PRESETS,
    DetectorConfig,
    EncoderConfig,
    ModelConfig,
    preset_config,
)
from genuine_core.models.detector import (
    SignalDetector,
    count_detections,
    detections_to_features,
    freeze,
)
from genuine_core.models.encoder import PatchEncoder
from genuine_core.models.folder import (
    folder_digest,
    load_model,
    read_config,
    save_model,
    verify_folder,
)
from genuine_core.models.genuine import GenuineModel


def build_model(config: ModelConfig) -> GenuineClassifier:
    """A freshly initialised model for ``config`` (seeded by ``config.seed``)."""
    return GenuineClassifier.from_config(config)


__all__ = [
    "CLASS_NAMES",
    "MODEL_KINDS",
    "PRESETS",
    "DetectorBaseline",
    "DetectorConfig",
    "EncoderConfig",
    "GenuineClassifier",
    "GenuineModel",
    "ModelConfig",
    "ModelOutput",
    "PatchEncoder",
    "RatioBaseline",
    "ResNetBaseline",
    "SignalDetector",
    "build_model",
    "count_detections",
    "detections_to_features",
    "folder_digest",
    "freeze",
    "load_model",
    "preset_config",
    "read_config",
    "rule_logits",
    "save_model",
    "verify_folder",
]
