"""The few calls training makes into ``genuine_core.models`` (one place to adapt).

Builds models from presets, wires a trained detector into GENUINE, saves folders,
stores calibration, tunes the detector's counting threshold and fits the ratio
baseline's threshold.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genuine_core.errors import InputError
from genuine_core.patches import LEGACY_NORMALISATION

logger = logging.getLogger(__name__)

COUNT_THRESHOLDS = tuple(round(0.05 + 0.05 * i, 2) for i in range(16))  # 0.05 .. 0.80


def build(preset: str, kind: str, seed: int, patch_size: int, detector_folder: str | None,
          encoder: dict[str, Any] | None = None, normalisation: str = LEGACY_NORMALISATION):
    """A freshly initialised model of ``kind`` from ``preset``.

    ``encoder`` overrides fields of the preset's encoder (e.g. ``{"width": 32}``); the
    result is recorded in the model's ``config.json``, as is ``normalisation``, the one of
    the training data's patches.

    For ``genuine`` the trained detector in ``detector_folder`` is copied in (its
    detector settings are adopted, so architectures match) and frozen.

    Raises:
        InputError: the data's patch size differs from the preset's, or the detector
            folder cannot be used (e.g. it was trained on patches normalised another way).
    """
    from genuine_core.models import GenuineClassifier, preset_config

    overrides: dict[str, Any] = {"seed": int(seed), "patch_normalisation": normalisation}
    if preset == "tiny":  # the test preset adapts to whatever patch size the fixture has
        overrides["patch_size"] = int(patch_size)
    det_model = None
    if kind == "genuine":
        if not detector_folder:
            raise InputError("GENUINE needs --detector (a trained detector folder)")
        det_model = GenuineClassifier.from_folder(detector_folder)
        if not getattr(det_model, "has_detector", False):
            raise InputError(f"{detector_folder} holds a {det_model.kind!r} model, not a detector")
        overrides["detector"] = det_model.config.detector
        check_same_normalisation(det_model.config.patch_normalisation, normalisation, f"--detector {detector_folder}")
        if det_model.config.preset != preset:
            logger.warning("detector preset %r differs from %r", det_model.config.preset, preset)
    try:
        if encoder:
            overrides["encoder"] = dataclasses.replace(preset_config(preset, kind).encoder, **encoder)
        config = preset_config(preset, kind, **overrides)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if config.patch_size != patch_size:
        raise InputError(f"the data has {patch_size} px patches but preset {preset!r} expects {config.patch_size} px")
    model = GenuineClassifier.from_config(config)
    if det_model is not None:
        model.load_detector(det_model.detector.state_dict())
    return model


def check_same_normalisation(model_norm: str, data_norm: str, what: str) -> None:
    """Refuse a model (``what``) trained on patches normalised otherwise than this run's data.

    Raises:
        InputError: the two normalisations differ.
    """
    if model_norm != data_norm:
        raise InputError(f"{what} was trained on {model_norm!r}-normalised patches, but the training data's "
                         f"patches are {data_norm!r}-normalised; use a model trained on data cut the same way")


def load_weights(model, folder: str | Path) -> None:
    """Copy the weights of a trained model folder into ``model`` (``--init``: fine-tuning).

    Only the weights move: settings that are not learned (e.g. the detector's NMS and
    containment thresholds) stay those ``model`` was built with (its preset's; for GENUINE the
    ``--detector`` folder's detector settings), and the patch
    normalisation stays the training data's (weights trained on patches normalised another
    way are only a starting point; a warning says so). A GENUINE model keeps its frozen
    detector (the one ``--detector`` named): the encoder and head
    start from ``folder``, so a GENUINE model can be fine-tuned over a retrained detector.

    Raises:
        InputError: the folder is missing, holds another kind, or another architecture.
    """
    from genuine_core.models import GenuineClassifier

    if not (Path(folder) / "config.json").is_file():
        raise InputError(f"--init: no model folder at {folder} (config.json missing)")
    source = GenuineClassifier.from_folder(folder)
    if source.kind != model.kind:
        raise InputError(f"--init: {folder} holds a {source.kind!r} model, not {model.kind!r}")
    if source.config.patch_size != model.config.patch_size:
        raise InputError(f"--init: {folder} expects {source.config.patch_size} px patches, "
                         f"the run uses {model.config.patch_size} px")
    if source.config.patch_normalisation != model.config.patch_normalisation:  # a starting point only
        logger.warning("--init %s was trained on %r-normalised patches; this run trains it on %r-normalised ones",
                       folder, source.config.patch_normalisation, model.config.patch_normalisation)
    state = source.state_dict()
    if model.kind == "genuine":
        state.update({f"detector.{k}": v for k, v in model.detector.state_dict().items()})
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # torch lists every mismatched tensor: name the first and count them
        own = model.state_dict()
        differ = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        missing = sorted(set(own) ^ set(state))
        first = (f"{differ[0]} is {tuple(state[differ[0]].shape)} there, {tuple(own[differ[0]].shape)} here"
                 if differ else f"{missing[0]} is in one model only" if missing else str(exc).splitlines()[0])
        raise InputError(f"--init: {folder} has another architecture than this run's preset "
                         f"({len(differ)} tensors of other shapes, {len(missing)} in one model only; {first})") from None


def from_checkpoint(out: str | Path):
    """Rebuild the model of an interrupted run from ``<out>/checkpoint/config.json``.

    Resuming uses the configuration the run started with, even if the preset has changed
    since; the weights are then restored from the trainer state.

    Raises:
        InputError: no readable checkpoint config.
    """
    from genuine_core.models import GenuineClassifier, ModelConfig
    from training.checkpoint import CHECKPOINT_DIR

    path = Path(out) / CHECKPOINT_DIR / "config.json"
    try:
        config = ModelConfig.from_json(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot resume: {path} is missing or invalid ({exc})") from exc
    return GenuineClassifier.from_config(config)


def save(model, path: Path, metrics: dict[str, Any]) -> None:
    """Write a model folder (config, safetensors weights, metrics, checksums)."""
    model.save(path, metrics)


def set_temperature(model, temperature: float) -> None:
    """Store the calibration temperature in the model's config."""
    model.set_calibration(temperature=float(temperature))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature ``T`` for ``sigmoid(logits / T)`` (see ``genuine_core.calibration.fit_temperature``)."""
    from genuine_core.calibration import fit_temperature as core_fit

    return float(core_fit(np.asarray(logits, np.float64), np.asarray(labels, np.float64)))


def trainable_detector(model) -> torch.nn.Module:
    """The model's signal detector with gradients switched on (for detector training)."""
    det = model.detector
    for p in det.parameters():
        p.requires_grad_(True)
    return det


def freeze_detector(model) -> None:
    """Freeze the detector again (no gradients, eval mode)."""
    from genuine_core.models import freeze

    freeze(model.detector)


@torch.no_grad()
def _detect_all(model, patches: np.ndarray, batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
    out = []
    for s in range(0, len(patches), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(patches[s:s + batch_size], dtype=np.float32))
        out.extend(model.detector.detect(x))
    return out


def tune_count_threshold(model, val) -> tuple[tuple[float, float, float], dict[str, dict[str, float]]]:
    """Pick, per class, the score threshold for counting signals that maximises that class'
    exact-count accuracy on validation (ties: the threshold nearest 0.5).

    Args:
        model: a detector-kind model (its config is updated in place).
        val: :class:`training.datasets.DetectionData` (validation).

    Returns:
        ``((NMI, MYCN, cluster) thresholds, {class: {threshold: exact-count accuracy}})``.
    """
    from genuine_core.models import CLASS_NAMES, count_detections

    from training.metrics import count_accuracy, true_counts

    dets = _detect_all(model, np.asarray(val.patches))
    classes = [np.asarray(c, np.int64).ravel() for c in val.classes]
    rows = np.repeat(np.arange(len(classes)), [len(c) for c in classes])
    truth = true_counts(rows, np.concatenate([np.zeros(0, np.int64), *classes]), len(val))
    per_class = {t: count_accuracy(count_detections(dets, t).cpu().numpy(), truth)["accuracy"] for t in COUNT_THRESHOLDS}
    best, scores = [], {}
    for c, name in enumerate(CLASS_NAMES.values()):
        scores[name] = {f"{t:.2f}": per_class[t][c] for t in COUNT_THRESHOLDS}
        best.append(float(max(COUNT_THRESHOLDS, key=lambda t: (per_class[t][c], -abs(t - 0.5)))))
    best = tuple(best)
    cfg = model.config
    model.config = cfg.replace(detector=dataclasses.replace(cfg.detector, count_threshold=best))
    logger.info("count thresholds NMI %.2f, MYCN %.2f, cluster %.2f (exact-count accuracy %s on validation)",
                *best, ", ".join(f"{scores[k][f'{t:.2f}']:.3f}" for k, t in zip(scores, best)))
    return best, scores


def fit_ratio_threshold(model, patches: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Fit the ratio baseline's threshold and slope on (noisy) training labels."""
    t = model.fit_threshold(patches, labels)
    return {"ratio_threshold": float(t), "slope": float(model.log_slope.detach().exp())}
