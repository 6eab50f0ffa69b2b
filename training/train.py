"""Train one model end to end: data, model, loop, calibration, metrics, model folder.

:func:`train_model` is what ``genuine train`` runs. Per kind:

- ``detector``: RetinaNet on benchmark patches with their exact boxes (own loss),
  early stopping on the validation loss; then the count score threshold is chosen on
  validation (exact-count accuracy) and per-class AP@0.5 + count accuracy are measured
  on the held-out test split. The folder is also the detector-count baseline
  (Cohn rule on detected counts) and the frozen B of GENUINE.
- ``genuine``: encoder + frozen trained detector (``--detector``) + MLP, BCE-with-logits.
- ``resnet``: encoder + linear head, BCE-with-logits.
- ``ratio``: no gradient training; the green/red intensity-ratio threshold is fitted on
  the (noisy) training labels.

Every classifier then gets a temperature fitted on the validation split and its
validation sensitivity/specificity (the numbers a Rogan-Gladen prevalence correction
needs), stored in ``metrics.json``; ``train_config.json`` records the data, beta, seed,
optimiser settings, epochs run, wall time and the command, and under ``inputs`` and ``versions`` the data,
detector and init folder by content and the code and library versions (``training.provenance``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from genuine_core.errors import InputError
from genuine_core.models.folder import FINAL_STATUS
from genuine_core.seeding import seed_everything
from training import modelapi
from training.checkpoint import CHECKPOINT_DIR, TRAIN_CONFIG_FILE, checkpoint_metrics, clear_run
from training.datasets import ClassificationData, data_fingerprint, load_classification, load_detection, subsample
from training.loop import TrainConfig, TrainingError, fit
from training.metrics import bce_with_logits, binary_metrics
from training.tasks import ClassifierTask, DetectorTask, predict_logits

logger = logging.getLogger(__name__)

Kind = Literal["genuine", "resnet", "detector", "ratio"]


@dataclass(frozen=True)
class RunSpec:
    """One training run.

    Attributes:
        kind: model kind.
        preset: model preset (``cpu``, ``paper``, ``tiny``).
        data: benchmark folder or LabelledPatches file.
        out: model folder to write.
        detector: trained detector folder (required for ``genuine``).
        beta: label-flip probability on the training pool.
        label: train on ``auto`` labels (paper) or ``truth``; a training-set file's ``auto`` are its own
            labels, which ``train_config.json["label"]`` records by their kind (e.g. ``curated``).
        calibrate_on: labels for temperature and sensitivity/specificity: ``truth`` when
            the data has ground truth of both classes on the validation split (benchmark;
            curated sets of synthetic nuclei), else the training labels.
        max_train: cap on training rows loaded (seeded subsample; None = all).
        resume: continue from ``<out>/checkpoint``.
        init: start from the weights of this trained model folder (same kind and patch
            size; fine-tuning) instead of a fresh initialisation. With ``resume``: the folder
            the run started from (recorded; the weights come from the checkpoint).
        encoder: overrides of the preset's encoder fields (``width``, ``stages``, ...).
        train: optimisation settings.
        command: the command line, recorded for reproduction.
        earlier_commands: the command lines of the sessions a resumed run continues (the
            first one started it, e.g. with its ``--init``); set by :func:`train_model`.
        inputs: the data, detector and init folder by content as the run started
            (``training.provenance``); set by :func:`train_model`.
    """

    kind: Kind
    preset: str = "cpu"
    data: str = "data/bench_cpu"
    out: str = "models/genuine_cpu"
    detector: str | None = None
    beta: float = 0.0
    label: Literal["auto", "truth"] = "auto"
    calibrate_on: Literal["truth", "auto"] = "truth"
    max_train: int | None = None
    resume: bool = False
    init: str | None = None
    encoder: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    command: str | None = None
    earlier_commands: tuple[str, ...] = ()
    inputs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("genuine", "resnet", "detector", "ratio"):
            raise ValueError(f"kind must be genuine|resnet|detector|ratio, got {self.kind!r}")
        if not 0.0 <= self.beta < 0.5:
            raise ValueError(f"beta must be in [0, 0.5), got {self.beta}")
        if self.label not in ("auto", "truth") or self.calibrate_on not in ("truth", "auto"):
            raise ValueError("label must be auto|truth and calibrate_on truth|auto")
        if self.max_train is not None and self.max_train < 1:
            raise ValueError("max_train must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view."""
        d = dataclasses.asdict(self)
        d["train"] = self.train.to_dict()
        return d


#: what a ratio fit uses of the training settings (no epochs, optimiser or augmentation: a threshold fit)
_RATIO_TRAIN_KEYS = ("seed", "threads", "max_val")


def _write_train_config(out: Path, spec: RunSpec, extra: dict[str, Any]) -> None:
    from training.provenance import versions

    rec = {**spec.to_dict(), **extra, "versions": versions(), "torch_threads": torch.get_num_threads()}
    if spec.kind == "ratio":  # record what the fit used, not settings it never read
        rec["train"] = {k: rec["train"][k] for k in _RATIO_TRAIN_KEYS}
    (out / TRAIN_CONFIG_FILE).write_text(json.dumps(rec, indent=1) + "\n")


def _at_most(data, limit: int | None, rng: np.random.Generator):
    """``data`` cut to ``limit`` seeded random rows; the same object when it has no more rows."""
    return data if limit is None or limit >= len(data) else data.take(subsample(len(data), limit, rng))


def _load_pool(spec: RunSpec) -> tuple[ClassificationData, ClassificationData]:
    train = load_classification(spec.data, "train", spec.label, spec.beta, spec.train.seed)
    val = load_classification(spec.data, "val", spec.label, spec.beta, spec.train.seed)
    rng = np.random.default_rng([spec.train.seed, 11])
    train = _at_most(train, spec.max_train, rng)
    val = val.take(subsample(len(val), spec.train.max_val, rng))  # in memory, --max-val rows at most
    for data, option in ((train, "--max-train"), (val, "--max-val")):
        _require_both_classes(data, option)
    return train, val


def _require_both_classes(data: ClassificationData, option: str) -> None:
    """Refuse, before any training, a split a classifier cannot learn or be calibrated on.

    Raises:
        InputError: the split holds one class only (or nothing).
    """
    counts = np.bincount(np.asarray(data.labels, np.int64), minlength=2)
    if counts.min() == 0:
        raise InputError(f"the {data.split} split holds {counts[1]} MNA and {counts[0]} non-MNA nuclei: training "
                         f"needs both classes in training and validation (a larger {option}, or more labelled data)")


def trained_label_kind(data: ClassificationData, label: str) -> str:
    """What ``data``'s training labels are (``train_config.json["label"]``): ``truth`` when asked for, else the
    data's own ``label_kind`` (a curated export: ``curated``; several kinds joined by ``+``), else ``auto``."""
    if label == "truth":
        return "truth"
    kinds = sorted(set(data.meta["label_kind"].astype(str))) if "label_kind" in data.meta else []
    return "+".join(kinds) or "auto"


def validation_record(logits: np.ndarray, val: ClassificationData, threshold_logit: float,
                      calibrate_on: str) -> tuple[dict[str, Any], np.ndarray]:
    """Validation rates of the calls ``logit >= threshold_logit``.

    Returns the record stored in ``metrics.json["validation"]`` (its ``labels`` says what the rates
    are measured against: ``truth``, ``curated`` or ``auto``) and the labels used for calibration
    (ground truth when available, of both classes, and asked for; else the training labels: a few
    curated nuclei may hold one true class only).
    """
    calls = (logits >= threshold_logit).astype(np.int64)
    use_truth = (calibrate_on == "truth" and val.true_labels is not None
                 and len(np.unique(val.true_labels)) == 2)
    kinds = set(val.meta["label_kind"]) if "label_kind" in val.meta else set()
    ref = val.true_labels if use_truth else val.labels
    m = binary_metrics(calls, ref)
    vs_train = binary_metrics(calls, val.labels)
    rec = {
        "labels": "truth" if use_truth else ("curated" if kinds == {"curated"} else "auto"),
        "n": m.n, "n_positive": m.tp + m.fn, "n_negative": m.tn + m.fp,
        "sensitivity": m.tpr, "specificity": m.tnr, "accuracy": m.accuracy, "f1": m.f1,
        "accuracy_vs_training_labels": vs_train.accuracy,
        "loss_vs_training_labels": bce_with_logits(logits, val.labels),
        "n_flipped": int(val.flipped.sum()),
    }
    return rec, ref.astype(np.float64)


def _finish_classifier(model, val: ClassificationData, spec: RunSpec, out: Path,
                       logits: np.ndarray) -> dict[str, Any]:
    """Fit the temperature, measure validation rates, write the final model folder."""
    thr_logit = float(np.log(model.config.threshold / (1 - model.config.threshold)))
    record, ref = validation_record(logits, val, thr_logit, spec.calibrate_on)
    temperature = modelapi.fit_temperature(logits, ref)
    modelapi.set_temperature(model, temperature)
    record["temperature"] = temperature
    return record


def resume_command(spec: RunSpec) -> str:
    """The ``genuine train`` command that continues ``spec``'s run: its own command line with
    ``--resume`` (a new run's ``--overwrite`` dropped, a resumed one's kept: its folder may still hold the
    finished model it trains on; ``--out`` made explicit; ``--init`` kept: it names where the run started,
    which ``--resume`` accepts unchanged)."""
    import shlex

    if spec.command:
        words = shlex.split(spec.command)
    else:  # not started from the command line: the options that identify the run
        words = ["genuine", "train", "--kind", spec.kind, "--preset", spec.preset, "--data", spec.data]
        words += ["--detector", spec.detector] if spec.kind == "genuine" and spec.detector else []
        words += ["--beta", f"{spec.beta:g}"] if spec.beta else []
    kept = [w for w in words if w != "--resume" and (spec.resume or w != "--overwrite")]
    if spec.init and not any(w == "--init" or w.startswith("--init=") for w in kept):
        kept += ["--init", str(spec.init)]  # a resumed session that left it out: the run's own
    if not any(w == "--out" or w.startswith("--out=") for w in kept):
        kept += ["--out", str(spec.out)]
    return " ".join(shlex.quote(w) for w in kept + ["--resume"])


#: unfinished model folders record the sha256 of their training data under this key (see ``data_fingerprint``)
RESUME_DATA_KEY = "data_sha256"
#: ... and the command lines of the sessions so far, which a resumed run records as ``earlier_commands``
SESSIONS_KEY = "session_commands"
#: ... and the run's inputs as it started (``RunSpec.inputs``), which a resumed run keeps
INPUTS_KEY = "run_inputs"


def run_inputs(spec: RunSpec) -> dict[str, Any]:
    """The run's data, detector and init folder by content (``training.provenance``), as it starts."""
    from training.provenance import data_identity, folder_identity

    return {"data": data_identity(spec.data), "detector": folder_identity(spec.detector),
            "init": folder_identity(spec.init)}


def _earlier_sessions(out: str | Path) -> tuple[str, ...]:
    """The session commands an unfinished run's checkpoint in ``out`` recorded (empty when it recorded none)."""
    found = checkpoint_metrics(out).get(SESSIONS_KEY)
    return tuple(c for c in found if isinstance(c, str)) if isinstance(found, list) else ()


def _saver(model, spec: RunSpec):
    """``task.save_model``: writes the model folder; an unfinished one (status ``training`` or
    ``checkpoint``) records the command that resumes the run, which loading it then names."""
    command = resume_command(spec)
    data = data_fingerprint(spec.data)

    sessions = [*spec.earlier_commands, spec.command or command]

    def save(path, metrics: dict[str, Any]) -> None:
        if metrics.get("status") != FINAL_STATUS:
            metrics = {**metrics, "resume_command": command, RESUME_DATA_KEY: data, SESSIONS_KEY: sessions,
                       INPUTS_KEY: spec.inputs}
        modelapi.save(model, path, metrics)

    return save


def _start_model(spec: RunSpec, patch_size: int, normalisation: str):
    """The model a run starts from: its checkpoint (resume), else the preset, with the
    weights of a trained folder copied in (init). It takes the data's patch normalisation."""
    if spec.resume:
        model = modelapi.from_checkpoint(spec.out)
        modelapi.check_same_normalisation(model.config.patch_normalisation, normalisation,
                                          f"the checkpoint in {spec.out}")
        return model
    model = modelapi.build(spec.preset, spec.kind, spec.train.seed, patch_size, spec.detector, spec.encoder,
                           normalisation)
    if spec.init:
        modelapi.load_weights(model, spec.init)
    return model


def train_classifier(spec: RunSpec) -> dict[str, Any]:
    """GENUINE or ResNet: SGD + early stopping, then calibration (see module docstring)."""
    out = Path(spec.out)
    seed_everything(spec.train.seed)
    train, val = _load_pool(spec)
    model = _start_model(spec, train.patch_size, train.normalisation)
    task = ClassifierTask(model, train, val, spec.train.augment, _saver(model, spec))
    t0 = time.perf_counter()
    result = fit(task, spec.train, out, resume=spec.resume)
    logits = predict_logits(model, val.patches)
    record = _finish_classifier(model, val, spec, out, logits)
    metrics = {"status": FINAL_STATUS, "best_epoch": result.best_epoch + 1, "best_val_loss": result.best_val_loss,
               "validation": record, **_flat_rates(record)}
    modelapi.save(model, out, metrics)
    extra = {"epochs_run": len(result.history), "stopped_early": result.stopped_early,
             "wall_seconds": result.seconds, "session_seconds": time.perf_counter() - t0,
             "n_train": len(train), "n_val": len(val), "n_train_flipped": int(train.flipped.sum()),
             "label": trained_label_kind(train, spec.label)}
    _write_train_config(out, spec, extra)
    logger.info("%s: best epoch %d, val sensitivity %.3f specificity %.3f (%s labels), T=%.2f, %.0f s", out,
                result.best_epoch + 1, record["sensitivity"], record["specificity"], record["labels"],
                record["temperature"], result.seconds)
    return {"out": str(out), "metrics": metrics, **extra}


def _flat_rates(record: dict[str, Any]) -> dict[str, Any]:
    """Top-level copies of the numbers the store reads for prevalence correction."""
    return {k: record[k] for k in ("sensitivity", "specificity", "n_positive", "n_negative", "temperature")}


def train_ratio(spec: RunSpec) -> dict[str, Any]:
    """Fit the intensity-ratio threshold on the training pool; calibrate on validation."""
    out = Path(spec.out)
    seed_everything(spec.train.seed)
    t0 = time.perf_counter()
    train, val = _load_pool(spec)
    model = modelapi.build(spec.preset, "ratio", spec.train.seed, train.patch_size, None,
                           normalisation=train.normalisation)
    info = modelapi.fit_ratio_threshold(model, np.asarray(train.patches, np.float32), train.labels)
    logits = predict_logits(model, val.patches)
    record = _finish_classifier(model, val, spec, out, logits)
    seconds = time.perf_counter() - t0
    metrics = {"status": FINAL_STATUS, "validation": record, "ratio_fit": info, **_flat_rates(record)}
    clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    modelapi.save(model, out, metrics)
    extra = {"epochs_run": 0, "stopped_early": False, "wall_seconds": seconds, "n_train": len(train),
             "n_val": len(val), "n_train_flipped": int(train.flipped.sum()),
             "label": trained_label_kind(train, spec.label)}
    _write_train_config(out, spec, extra)
    return {"out": str(out), "metrics": metrics, **extra}


def train_detector(spec: RunSpec) -> dict[str, Any]:
    """RetinaNet on exact boxes; count threshold on validation; AP/counts on test."""
    from training.evaluate import _benchmark, detector_metrics, run_predict

    out = Path(spec.out)
    seed_everything(spec.train.seed)
    train = load_detection(spec.data, "train")
    val = load_detection(spec.data, "val")
    rng = np.random.default_rng([spec.train.seed, 13])
    train = _at_most(train, spec.max_train, rng)
    val = _at_most(val, spec.train.max_val, rng)
    model = _start_model(spec, int(train.patches.shape[-1]), train.normalisation)
    det = modelapi.trainable_detector(model)
    task = DetectorTask(det, train, val, spec.train.augment, _saver(model, spec))
    result = fit(task, spec.train, out, resume=spec.resume)
    modelapi.freeze_detector(model)
    thr, thr_scores = modelapi.tune_count_threshold(model, val)
    test = _benchmark(Path(spec.data), "test")
    pred = run_predict(model, test.patches, min_score=model.config.detector.score_thresh)
    det_metrics = detector_metrics(pred, test.boxes, len(test.patches))
    rule = binary_metrics(pred.table["call"].to_numpy().astype(np.int64), test.nuclei["true_label"].to_numpy())
    # the Cohn-rule baseline's validation rates, for prevalence correction like any classifier
    vcalls = run_predict(model, val.patches).table["call"].to_numpy().astype(np.int64)
    vm = binary_metrics(vcalls, val.meta["true_label"].to_numpy())
    record = {"labels": "truth", "n": vm.n, "n_positive": vm.tp + vm.fn, "n_negative": vm.tn + vm.fp,
              "sensitivity": vm.tpr, "specificity": vm.tnr, "accuracy": vm.accuracy, "f1": vm.f1,
              "temperature": model.config.temperature}
    metrics = {"status": FINAL_STATUS, "best_epoch": result.best_epoch + 1, "best_val_loss": result.best_val_loss,
               "count_threshold": thr, "count_threshold_scan": thr_scores, "test_detection": det_metrics,
               "test_rule_vs_truth": rule.to_dict(), "validation": record, **_flat_rates(record)}
    modelapi.save(model, out, metrics)
    extra = {"epochs_run": len(result.history), "stopped_early": result.stopped_early,
             "wall_seconds": result.seconds, "n_train": len(train), "n_val": len(val), "n_test": len(test.patches)}
    _write_train_config(out, spec, extra)
    logger.info("%s: AP50 %s, exact counts %.3f, rule accuracy vs truth %.3f", out,
                {k: round(v, 3) for k, v in det_metrics["ap50"].items()},
                det_metrics["count_accuracy"]["exact"], rule.accuracy)
    return {"out": str(out), "metrics": metrics, **extra}


def train_model(spec: RunSpec) -> dict[str, Any]:
    """Dispatch on ``spec.kind``; returns a summary dict (also logged).

    Raises:
        InputError: bad data or detector folder; TrainingError: training failed.
    """
    if spec.kind == "genuine" and not spec.detector:
        raise InputError("GENUINE needs a trained detector: --detector models/detector_cpu "
                         "(train one with: genuine train --kind detector)")
    checkpoint = Path(spec.out) / CHECKPOINT_DIR
    if spec.resume and not checkpoint.is_dir() and spec.kind != "ratio":
        raise TrainingError(f"--resume: no checkpoint in {checkpoint}")
    if not spec.resume:  # a new run (e.g. --overwrite): an earlier run's checkpoint must never be resumed
        shutil.rmtree(checkpoint, ignore_errors=True)
        spec = dataclasses.replace(spec, inputs=run_inputs(spec))
    else:
        started = checkpoint_metrics(spec.out).get(INPUTS_KEY)
        spec = dataclasses.replace(spec, earlier_commands=_earlier_sessions(spec.out),
                                   inputs=started if isinstance(started, dict) and started else run_inputs(spec))
    try:
        if spec.kind == "detector":
            return train_detector(spec)
        if spec.kind == "ratio":
            return train_ratio(spec)
        return train_classifier(spec)
    except KeyboardInterrupt:
        raise TrainingInterrupted(interrupted_message(spec)) from None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train_model`; the message says what the folder holds and how to resume."""


def interrupted_message(spec: RunSpec) -> str:
    """What an interrupted run left in ``spec.out`` and the command that continues it (one line)."""
    from training.checkpoint import has_checkpoint

    out = Path(spec.out)
    if spec.kind != "ratio" and has_checkpoint(out):
        return (f"training stopped before it finished; {out} holds the best weights so far, marked unfinished "
                f"(ingest, evaluate and registration refuse it). Continue the run with: {resume_command(spec)}")
    return (f"training stopped before its first epoch was saved; nothing to resume in {out}. "
            "Start it again with the same command")
