"""Model configurations: frozen, validated dataclasses with a JSON round trip, and presets.

A :class:`ModelConfig` fully describes a classifier (architecture, preprocessing,
decision threshold, calibration temperature). It is written to ``config.json`` in a
model folder and parsed back as plain JSON data (never code).

Presets (:func:`preset_config`):

- ``paper``: ResNet50 encoder + RetinaNet-ResNet50-FPN (5 levels, 256 channels,
  4-conv heads), P = 192, as in the paper. The paper fed 192 px patches through
  torchvision's default transform, which upscales them to 800 px (x4.17); we never
  resize, so the anchors are torchvision's defaults divided by 4 (same object sizes).
- ``cpu`` (default): chosen by measurement on a 2-core CPU (``bench/bench_inference.py``,
  ``bench/bench_detectability.py``): P = 96; a half-width ResNet18 encoder (32-256
  channels, 2.8 M parameters, 0.18 GFLOP; full width would be 11 M parameters = 45 MB
  per model, too big for the shipped-weights budget); a RetinaNet on a half-width
  ResNet18 cut after layer 2, FPN on strides 4 and 8 with 32 channels, 2-conv heads
  (0.19 GFLOP) and anchors of 4-28 px at aspect ratios 0.5/1/2 for 2-24 px FISH
  signals. The stride-4
  level matters: it gives ~55% of signal boxes an IoU >= 0.5 anchor versus ~15% for
  strides 8/16 and none for torchvision's default 32-512 px anchors.
- ``tiny``: the same architecture with tiny widths, for tests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from genuine_core.patches import LEGACY_NORMALISATION, check_normalisation

ModelKind = Literal["genuine", "resnet", "detector", "ratio"]
ResNetArch = Literal["resnet18", "resnet34", "resnet50"]
DetectorHead = Literal["rule", "learned"]
EmbeddingKind = Literal["hidden", "concat"]

MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
RESNET_ARCHS: tuple[str, ...] = get_args(ResNetArch)
PRESETS: tuple[str, ...] = ("cpu", "paper", "tiny")
DEFAULT_PRESET = "cpu"
CONFIG_FORMAT_VERSION = 1

#: Detector class ids (0 is torchvision's unused background slot).
CLASS_NAMES: dict[int, str] = {1: "nmi", 2: "mycn", 3: "cluster"}
NUM_SIGNAL_CLASSES = 3
BOX_FEATURES = 6  # x1, y1, x2, y2 (normalised by P), class, score


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_prob(name: str, value: Any, low_open: bool = True, high_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        raise ValueError(f"{name} must be a number in {'(' if low_open else '['}0, 1{')' if high_open else ']'}, "
                         f"got {value!r}")


class _Replaceable:
    def replace(self, **changes: Any):
        """A validated copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class EncoderConfig(_Replaceable):
    """Image encoder E: a torchvision-style ResNet trunk without its classifier.

    Attributes:
        arch: ``resnet18`` | ``resnet34`` (basic blocks) | ``resnet50`` (bottlenecks).
        width: channels of the stem and first stage (torchvision: 64; ``cpu`` preset: 32);
            later stages double.
        stages: how many of the 4 residual stages to keep (truncation makes it cheaper).
        input_size: side in pixels the patch is resized to before encoding
            (``None`` = the patch as is).
    """

    arch: ResNetArch = "resnet18"
    width: int = 32
    stages: int = 4
    input_size: int | None = None

    def __post_init__(self) -> None:
        _check_choice("encoder.arch", self.arch, RESNET_ARCHS)
        _check_int("encoder.width", self.width, 4)
        if self.stages not in (1, 2, 3, 4):
            raise ValueError(f"encoder.stages must be 1..4, got {self.stages!r}")
        if self.input_size is not None:
            _check_int("encoder.input_size", self.input_size, 16)


@dataclass(frozen=True)
class DetectorConfig(_Replaceable):
    """Signal detector B: torchvision RetinaNet on a ResNet trunk + FPN.

    Attributes:
        backbone: trunk architecture.
        width: trunk stem/first-stage channels (torchvision: 64).
        returned_layers: trunk stages (1..4, increasing) fed to the FPN; the trunk is cut
            after the last one. Stage k has stride ``2 ** (k + 1)``.
        fpn_channels: FPN and head channels.
        extra_levels: 0, or 2 for torchvision's P6/P7 levels (RetinaNet default).
        anchor_sizes: anchor sides in pixels, one tuple per feature level.
        aspect_ratios: anchor aspect ratios (height / width), shared by all levels.
        head_convs: 3x3 conv layers in each head branch before its predictor (torchvision: 4).
        head_groupnorm: GroupNorm in the head convs (torchvision's RetinaNet v2).
        score_thresh: minimum class score kept by post-processing.
        nms_thresh: IoU above which same-class boxes are suppressed.
        containment_thresh: after NMS, also drop a box when its intersection with a
            higher-scoring box of its class covers more than this share of the smaller
            box (a small box nested in a large one on the same spot has a low IoU and
            survives NMS; it would count one signal twice). 0 = off.
        detections_per_img: maximum boxes per patch after NMS.
        topk_candidates: boxes per level considered before NMS.
        count_threshold: score at or above which a detection is counted as a signal: one
            value for every class, or one per class (NMI, MYCN, cluster).
        fg_iou_thresh: anchor/box IoU for a positive anchor in training.
        bg_iou_thresh: anchor/box IoU below which an anchor is background in training.
        image_mean: per-channel mean subtracted from the [0, 1] input.
        image_std: per-channel divisor. Identity by default: zero stays zero outside the
            nucleus and the trunk's BatchNorm handles scale.
    """

    backbone: ResNetArch = "resnet18"
    width: int = 32
    returned_layers: tuple[int, ...] = (1, 2)
    fpn_channels: int = 32
    extra_levels: int = 0
    anchor_sizes: tuple[tuple[int, ...], ...] = ((4, 8), (16, 28))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    head_convs: int = 2
    head_groupnorm: bool = True
    score_thresh: float = 0.05
    nms_thresh: float = 0.4
    containment_thresh: float = 0.0
    detections_per_img: int = 100
    topk_candidates: int = 300
    count_threshold: float | tuple[float, float, float] = 0.5
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.4
    image_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    image_std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        _check_choice("detector.backbone", self.backbone, RESNET_ARCHS)
        _check_int("detector.width", self.width, 4)
        layers = tuple(self.returned_layers)
        if not layers or any(k not in (1, 2, 3, 4) for k in layers) or list(layers) != sorted(set(layers)):
            raise ValueError(f"detector.returned_layers must be increasing stages in 1..4, got {layers!r}")
        _check_int("detector.fpn_channels", self.fpn_channels, 4)
        if self.extra_levels not in (0, 2):
            raise ValueError(f"detector.extra_levels must be 0 or 2, got {self.extra_levels!r}")
        n_levels = len(layers) + self.extra_levels
        if len(self.anchor_sizes) != n_levels:
            raise ValueError(f"detector.anchor_sizes needs one tuple per feature level ({n_levels}), "
                             f"got {len(self.anchor_sizes)}")
        n_per_level = {len(s) for s in self.anchor_sizes}
        if len(n_per_level) != 1 or 0 in n_per_level:
            raise ValueError("detector.anchor_sizes: every level needs the same, non-zero number of sizes")
        if any((not isinstance(s, (int, float))) or s <= 0 for level in self.anchor_sizes for s in level):
            raise ValueError("detector.anchor_sizes must be positive")
        if not self.aspect_ratios or any(r <= 0 for r in self.aspect_ratios):
            raise ValueError("detector.aspect_ratios must be a non-empty tuple of positive numbers")
        _check_int("detector.head_convs", self.head_convs, 0)
        if self.head_groupnorm and self.fpn_channels % _groupnorm_groups(self.fpn_channels):
            raise ValueError("detector.fpn_channels must be divisible by its GroupNorm groups")
        _check_prob("detector.score_thresh", self.score_thresh, low_open=False)
        _check_prob("detector.containment_thresh", self.containment_thresh, low_open=False)
        _check_prob("detector.nms_thresh", self.nms_thresh)
        _check_int("detector.detections_per_img", self.detections_per_img, 1)
        _check_int("detector.topk_candidates", self.topk_candidates, 1)
        t = self.count_threshold
        if isinstance(t, (tuple, list)):
            if len(t) != NUM_SIGNAL_CLASSES:
                raise ValueError(f"detector.count_threshold needs one value or {NUM_SIGNAL_CLASSES} "
                                 f"(NMI, MYCN, cluster), got {t!r}")
            for v in t:
                _check_prob("detector.count_threshold", v, low_open=False)
            object.__setattr__(self, "count_threshold", tuple(float(v) for v in t))
        else:
            _check_prob("detector.count_threshold", t, low_open=False)
        _check_prob("detector.fg_iou_thresh", self.fg_iou_thresh)
        _check_prob("detector.bg_iou_thresh", self.bg_iou_thresh)
        if self.bg_iou_thresh > self.fg_iou_thresh:
            raise ValueError("detector.bg_iou_thresh must be <= fg_iou_thresh")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or any(s <= 0 for s in self.image_std):
            raise ValueError("detector.image_mean/image_std need 3 values, std > 0")

    @property
    def count_thresholds(self) -> tuple[float, float, float]:
        """Count score threshold per class (NMI, MYCN, cluster)."""
        t = self.count_threshold
        return t if isinstance(t, tuple) else (t,) * NUM_SIGNAL_CLASSES

    @property
    def num_levels(self) -> int:
        """Number of FPN feature levels."""
        return len(self.returned_layers) + self.extra_levels


def _groupnorm_groups(channels: int) -> int:
    """GroupNorm groups for the detector head: 32 like torchvision, fewer for narrow heads."""
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0 and channels // g >= 2:
            return g
    return 1


@dataclass(frozen=True)
class ModelConfig(_Replaceable):
    """A whole classifier: what ``config.json`` of a model folder holds.

    Attributes:
        kind: ``genuine`` (encoder + frozen detector + MLP), ``resnet`` (encoder + linear
            head), ``detector`` (counts from the detector: Cohn rule or a learned head)
            or ``ratio`` (green/red intensity ratio with a learned threshold).
        preset: name of the preset it was built from (informational).
        patch_size: P, side of the (3, P, P) input patches in pixels.
        patch_normalisation: how its input patches are normalised
            (``genuine_core.patches.NORMALISATIONS``); patches cut another way must not
            reach it. Set from the training data; older folders without it are ``percentile``.
        encoder: image encoder settings (``genuine``, ``resnet``).
        detector: signal detector settings (``genuine``, ``detector``).
        hidden: hidden units of the GENUINE MLP and of the learned detector head (paper's
            code: Linear(100), ReLU, Linear(1); the paper only says "fully connected layers").
        dropout: dropout before the output layer (ours, also in the ``paper`` preset; it
            drives MC-dropout uncertainty).
        top_k: detections kept per class and patch for the box features (without
            ``count_features``, as in the ``paper`` preset, the box stream cannot tell
            ``top_k`` signals of a class from more).
        fusion_norm: BatchNorm1d on the concatenated features before the MLP (ours, also in
            the ``paper`` preset: balances the encoder stream, 256-d in ``cpu`` and 2048-d in
            ``paper``, against the box stream).
        count_features: GENUINE only: append the per-class detection counts (NMI, MYCN,
            cluster at ``detector.count_threshold``) to the box features. They are a
            function of B(P), so the paper's equation still holds, but the MLP no longer
            has to learn counting from sorted scores (our addition; the ``cpu`` preset
            uses it, the ``paper`` preset does not).
        detector_head: ``rule`` (Cohn rule on counts) or ``learned`` (MLP on box features).
        rule_logit_scale: logits per signal of margin for the rule head.
        embedding: what ``embed`` returns for ``genuine``: MLP ``hidden`` layer or the
            ``concat`` vector.
        threshold: probability (uncalibrated) at or above which a nucleus is called MNA.
        temperature: calibration temperature T; calibrated probability = sigmoid(logit / T).
        seed: seed used to initialise the weights.
    """

    kind: ModelKind = "genuine"
    preset: str = DEFAULT_PRESET
    patch_size: int = 96
    patch_normalisation: str = LEGACY_NORMALISATION
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    hidden: int = 100
    dropout: float = 0.2
    top_k: int = 12
    fusion_norm: bool = True
    count_features: bool = False
    detector_head: DetectorHead = "rule"
    rule_logit_scale: float = 1.0
    embedding: EmbeddingKind = "hidden"
    threshold: float = 0.5
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, MODEL_KINDS)
        if not isinstance(self.preset, str) or not self.preset:
            raise ValueError("preset must be a non-empty string")
        _check_int("patch_size", self.patch_size, 16)
        check_normalisation(self.patch_normalisation)
        if not isinstance(self.encoder, EncoderConfig):
            raise ValueError("encoder must be an EncoderConfig")
        if not isinstance(self.detector, DetectorConfig):
            raise ValueError("detector must be a DetectorConfig")
        _check_int("hidden", self.hidden, 1)
        _check_prob("dropout", self.dropout, low_open=False)
        _check_int("top_k", self.top_k, 1)
        _check_choice("detector_head", self.detector_head, get_args(DetectorHead))
        _check_choice("embedding", self.embedding, get_args(EmbeddingKind))
        if not isinstance(self.rule_logit_scale, (int, float)) or self.rule_logit_scale <= 0:
            raise ValueError(f"rule_logit_scale must be > 0, got {self.rule_logit_scale!r}")
        _check_prob("threshold", self.threshold)
        if not isinstance(self.temperature, (int, float)) or not 0 < self.temperature < 1e3:
            raise ValueError(f"temperature must be in (0, 1000), got {self.temperature!r}")
        _check_int("seed", self.seed, 0)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists), with a format version."""
        d = dataclasses.asdict(self)
        d["format_version"] = CONFIG_FORMAT_VERSION
        return json.loads(json.dumps(d))

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output. Unknown keys raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError("model config must be a JSON object")
        data = dict(data)
        version = data.pop("format_version", CONFIG_FORMAT_VERSION)
        if version != CONFIG_FORMAT_VERSION:
            raise ValueError(f"unsupported config format_version {version!r}")
        enc = _sub_config(EncoderConfig, data.pop("encoder", {}), "encoder")
        det = _sub_config(DetectorConfig, data.pop("detector", {}), "detector")
        _reject_unknown(cls, data, "model config")
        return cls(encoder=enc, detector=det, **data)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Parse JSON text (data only) into a validated config."""
        return cls.from_dict(json.loads(text))

    @property
    def box_feature_dim(self) -> int:
        """Length of the flattened detector features: 3 classes x top_k x 6 (+ 3 counts)."""
        counts = NUM_SIGNAL_CLASSES if self.count_features and self.kind == "genuine" else 0
        return NUM_SIGNAL_CLASSES * self.top_k * BOX_FEATURES + counts


def _reject_unknown(cls: type, data: dict[str, Any], what: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{what} has unknown keys: {unknown}")


def _tupleize(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupleize(v) for v in value)
    return value


def _sub_config(cls: type, data: Any, what: str):
    if not isinstance(data, dict):
        raise ValueError(f"{what} config must be a JSON object")
    _reject_unknown(cls, data, f"{what} config")
    return cls(**{k: _tupleize(v) for k, v in data.items()})


# ---------------------------------------------------------------------- presets
def _preset_base(name: str) -> ModelConfig:
    if name == "cpu":
        return ModelConfig(preset="cpu", count_features=True, detector=DetectorConfig(containment_thresh=0.5))
    if name == "paper":
        return ModelConfig(
            preset="paper",
            patch_size=192,
            encoder=EncoderConfig(arch="resnet50", width=64, stages=4, input_size=None),
            detector=DetectorConfig(
                backbone="resnet50",
                returned_layers=(2, 3, 4),
                fpn_channels=256,
                extra_levels=2,
                anchor_sizes=tuple((s, round(s * 2 ** (1 / 3)), round(s * 2 ** (2 / 3))) for s in (8, 16, 32, 64, 128)),
                aspect_ratios=(0.5, 1.0, 2.0),
                head_convs=4,
                head_groupnorm=False,
                nms_thresh=0.5,
                topk_candidates=1000,
            ),
        )
    if name == "tiny":
        return ModelConfig(
            preset="tiny",
            patch_size=32,
            encoder=EncoderConfig(arch="resnet18", width=8, stages=2, input_size=None),
            detector=DetectorConfig(width=8, returned_layers=(1, 2), fpn_channels=16, anchor_sizes=((4, 8), (12, 20)),
                                    aspect_ratios=(1.0,), head_convs=1, detections_per_img=20, topk_candidates=50),
            hidden=16,
            top_k=4,
        )
    raise ValueError(f"unknown preset {name!r}; choose from {PRESETS}")


def preset_config(name: str = DEFAULT_PRESET, kind: str = "genuine", **overrides: Any) -> ModelConfig:
    """The named preset for a model kind, with optional top-level field overrides.

    Args:
        name: ``cpu`` (default), ``paper`` or ``tiny``.
        kind: model kind (``genuine``, ``resnet``, ``detector``, ``ratio``).
        **overrides: any :class:`ModelConfig` field (e.g. ``seed=3``, ``top_k=8``).

    Raises:
        ValueError: unknown preset, kind or field value.
    """
    return _preset_base(name).replace(kind=kind, **overrides)
