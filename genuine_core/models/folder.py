"""Model folders: ``config.json`` + ``weights.safetensors`` + ``metrics.json`` + ``checksum.sha256``.

Saving writes every file atomically and the checksum list last (``sha256sum -c``
format). Loading verifies every checksum first, parses the config as JSON data, reads
weights with safetensors (or, for a legacy ``weights.pt`` state dict, with
``torch.load(weights_only=True)``) and never unpickles objects. Any problem is a
:class:`~genuine_core.errors.ModelLoadError` with a message naming the file.

GENUINE and detector-baseline folders hold the detector weights too (self-contained).

Training status: ``metrics.json["status"]`` is ``"final"`` once ``genuine train`` has
finished a run (calibration and validation rates written). While it runs, the folder
holds the best weights so far with status ``"training"``, and ``<out>/checkpoint/`` is a
model folder with status ``"checkpoint"``; after an interruption (Ctrl-C, a crash) they
stay so. :func:`load_model` refuses such folders unless ``allow_unfinished=True`` (for
inspecting a run), so an unfinished model is never scored, evaluated or registered
silently. Folders without a status (saved by hand, older folders) count as finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from genuine_core import atomic
from genuine_core.checksums import sha256_file
from genuine_core.errors import ModelLoadError
from genuine_core.models.config import ModelConfig

if TYPE_CHECKING:
    from genuine_core.models.base import GenuineClassifier

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
LEGACY_WEIGHTS_FILE = "weights.pt"
METRICS_FILE = "metrics.json"
CHECKSUM_FILE = "checksum.sha256"

#: ``metrics.json["status"]``: the run finished / the folder holds the best weights of a running
#: (or interrupted) run / the folder is a run's resumable checkpoint
FINAL_STATUS, TRAINING_STATUS, CHECKPOINT_STATUS = "final", "training", "checkpoint"
#: sub-folder of a run's output that holds its resumable checkpoint (``training.checkpoint`` writes it)
CHECKPOINT_DIR = "checkpoint"

_CHECK_LINE = re.compile(r"^([0-9a-f]{64}) [ *]([A-Za-z0-9._-]+)$")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"metrics value of type {type(obj).__name__} is not JSON serialisable")


def save_model(model: GenuineClassifier, path: str | Path, metrics: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a self-contained model folder.

    Args:
        model: any :class:`GenuineClassifier`.
        path: folder (created if needed; files in it are replaced).
        metrics: JSON-serialisable dict for ``metrics.json`` (default: ``model.metrics``).

    Returns:
        The folder path.
    """
    from genuine_core.models.weights_bytes import weights_bytes

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metrics = dict(model.metrics if metrics is None else metrics)
    files = {
        WEIGHTS_FILE: weights_bytes(state, {"kind": model.config.kind, "format": "genuine-model-v1"}),
        CONFIG_FILE: model.config.to_json().encode(),
        METRICS_FILE: (json.dumps(metrics, indent=2, sort_keys=True, default=_json_default) + "\n").encode(),
    }
    for name, data in files.items():
        atomic.write_bytes(folder / name, data)
    stale = folder / LEGACY_WEIGHTS_FILE
    if stale.exists():
        stale.unlink()
    lines = "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in sorted(files))
    atomic.write_bytes(folder / CHECKSUM_FILE, lines.encode())
    model.metrics = metrics
    logger.info("saved %s model to %s", model.config.kind, folder)
    return folder


def verify_folder(path: str | Path) -> dict[str, str]:
    """Check a model folder's checksum list against its files.

    Returns:
        ``{file name: sha256}`` of every listed file.

    Raises:
        ModelLoadError: no folder / checksum file, a malformed line, a listed file missing
            or modified, or the config or weights not covered by the list.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is a file, not a model folder" if folder.is_file()
                             else f"model folder not found: {folder}")
    check_path = folder / CHECKSUM_FILE
    if not check_path.is_file():
        raise ModelLoadError(f"{folder}: missing {CHECKSUM_FILE}; not a model folder or incomplete save")
    try:
        text = check_path.read_text(encoding="ascii")
    except (UnicodeDecodeError, OSError) as exc:
        raise ModelLoadError(f"{check_path}: unreadable checksum file ({exc})") from exc
    listed: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _CHECK_LINE.match(line.strip())
        if not m:
            raise ModelLoadError(f"{check_path}: malformed line {n}: {line[:80]!r}")
        listed[m.group(2)] = m.group(1)
    if CONFIG_FILE not in listed:
        raise ModelLoadError(f"{folder}: {CONFIG_FILE} is not covered by {CHECKSUM_FILE}")
    if WEIGHTS_FILE not in listed and LEGACY_WEIGHTS_FILE not in listed:
        raise ModelLoadError(f"{folder}: no weights file ({WEIGHTS_FILE}) covered by {CHECKSUM_FILE}")
    for name, digest in listed.items():
        f = folder / name
        if not f.is_file():
            raise ModelLoadError(f"{folder}: {name} is listed in {CHECKSUM_FILE} but missing")
        if sha256_file(f) != digest:
            raise ModelLoadError(f"{folder}: checksum mismatch for {name}; the file was modified or "
                                 f"corrupted after saving, refusing to load")
    return listed


def folder_digest(path: str | Path) -> str:
    """A short identity for a saved model: SHA-256 of its verified checksum list (hex)."""
    verify_folder(path)
    return sha256_file(Path(path) / CHECKSUM_FILE)


def _parse_config(folder: Path) -> ModelConfig:
    try:
        data = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        return ModelConfig.from_dict(data)
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ModelLoadError(f"{folder / CONFIG_FILE}: invalid model config: {exc}") from exc


def read_config(path: str | Path) -> ModelConfig:
    """The verified, validated config of a model folder (weights not loaded)."""
    verify_folder(path)
    return _parse_config(Path(path))


def _looks_pickled(head: bytes) -> bool:
    """Pickle streams start with PROTO 0x80; torch.save archives are zip files ('PK')."""
    return head[:1] == b"\x80" or head[:2] == b"PK"


def _check_safetensors_header(f: Path) -> None:
    """A safetensors file is a little-endian u64 header length, then a JSON header ('{')."""
    size = f.stat().st_size
    with open(f, "rb") as fh:
        head = fh.read(9)
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if len(head) == 9 and head[8:9] == b"{" and 0 < n <= size - 8:
        return
    if _looks_pickled(head):
        raise ModelLoadError(f"{f}: holds a pickled/zip object, not safetensors; refusing to unpickle it")
    raise ModelLoadError(f"{f}: not a valid safetensors file (bad header)")


def _read_weights(folder: Path, listed: dict[str, str]) -> dict[str, torch.Tensor]:
    if WEIGHTS_FILE in listed:
        f = folder / WEIGHTS_FILE
        _check_safetensors_header(f)
        from safetensors.torch import load_file

        try:
            return load_file(str(f), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ModelLoadError(f"{f}: not a valid safetensors file ({exc})") from exc
    f = folder / LEGACY_WEIGHTS_FILE
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError ...
        raise ModelLoadError(f"{f}: refused; a legacy weights file must be a plain tensor state dict "
                             f"readable with weights_only=True ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelLoadError(f"{f}: not a state dict of named tensors")
    logger.warning("%s: legacy .pt weights read with weights_only=True; re-save to get safetensors", f)
    return state


class UnfinishedModelError(ModelLoadError):
    """A model folder whose training run did not finish (``metrics.json`` status not ``"final"``).

    Attributes:
        folder: the model folder. status: its training status (``"training"``, ``"checkpoint"``, ...).
    """

    def __init__(self, folder: Path, status: str, message: str):
        self.folder, self.status = folder, status
        super().__init__(message)


def training_status(metrics: dict[str, Any]) -> str | None:
    """The ``status`` a training run recorded in ``metrics.json`` (None: not recorded)."""
    status = metrics.get("status") if isinstance(metrics, dict) else None
    return None if status is None else str(status)


def is_finished(metrics: dict[str, Any]) -> bool:
    """True unless ``metrics`` record a training status other than :data:`FINAL_STATUS`.

    Folders without a status (saved outside ``genuine train``, or before it recorded one)
    count as finished.
    """
    status = training_status(metrics)
    return status is None or status == FINAL_STATUS


def _unfinished_message(folder: Path, metrics: dict[str, Any]) -> str:
    """One line: the run did not finish, what the folder holds, and the command that continues it."""
    status = training_status(metrics)
    out, what = folder, f"its training run did not finish (status {status!r} in {METRICS_FILE})"
    if status == TRAINING_STATUS:
        epoch = metrics.get("epoch")
        what += f"; it holds the best weights so far (epoch {epoch})" if epoch is not None else ""
    elif status == CHECKPOINT_STATUS or folder.name == CHECKPOINT_DIR:
        out = folder.parent
        what = f"it is the resumable checkpoint of the training run in {out}, not a finished model"
        parent = _read_metrics_quietly(out)
        if parent is not None and training_status(parent) == FINAL_STATUS:
            return f"{folder}: {what}; that run finished: use {out}"
    command = metrics.get("resume_command")
    if not isinstance(command, str) or not command.strip():
        command = f"genuine train <the run's options> --out {out} --resume"
    return f"{folder}: {what}; refusing to use an unfinished model. Continue the run with: {command}"


def _read_metrics_quietly(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_finished(path: str | Path) -> None:
    """Refuse a model folder whose training run did not finish (see the module docstring).

    Reads only ``metrics.json`` (no checksums, no weights): a cheap pre-flight check before
    long work, e.g. ``genuine evaluate`` on several folders. :func:`load_model` checks the
    same on the verified file.

    Raises:
        UnfinishedModelError: the recorded training status is not ``"final"``.
    """
    folder = Path(path)
    metrics = _read_metrics_quietly(folder)
    if metrics is not None:
        _refuse_unfinished(folder, metrics)


def _refuse_unfinished(folder: Path, metrics: dict[str, Any]) -> None:
    """Raise :class:`UnfinishedModelError` when ``metrics`` record an unfinished training run."""
    if not is_finished(metrics):
        raise UnfinishedModelError(folder, str(training_status(metrics)), _unfinished_message(folder, metrics))


def _read_metrics(folder: Path, listed: dict[str, str]) -> dict[str, Any]:
    if METRICS_FILE not in listed:
        return {}
    try:
        metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelLoadError(f"{folder / METRICS_FILE}: invalid JSON ({exc})") from exc
    if not isinstance(metrics, dict):
        raise ModelLoadError(f"{folder / METRICS_FILE}: must hold a JSON object")
    return metrics


def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               allow_unfinished: bool = False) -> GenuineClassifier:
    """Rebuild any model kind from a folder written by :func:`save_model`.

    Args:
        path: the model folder.
        map_location: device the model is moved to.
        allow_unfinished: also load a folder whose training run did not finish (status
            ``"training"`` or ``"checkpoint"``), e.g. to inspect an interrupted run. Never
            for scoring, evaluating or registering.

    Returns:
        The model (subclass for ``config.kind``) in eval mode, ``.metrics`` filled.

    Raises:
        UnfinishedModelError: the training run did not finish (the message names the
            ``genuine train ... --resume`` command that continues it).
        ModelLoadError: missing/incomplete/tampered folder, unsafe or invalid weights,
            invalid config, or weights that do not fit the config's architecture.
    """
    from genuine_core.models.base import GenuineClassifier

    folder = Path(path)
    listed = verify_folder(folder)
    config = _parse_config(folder)
    metrics = _read_metrics(folder, listed)
    if not allow_unfinished:
        _refuse_unfinished(folder, metrics)
    state = _read_weights(folder, listed)
    model = GenuineClassifier.from_config(config)
    expected = model.state_dict()
    bad_shapes = [k for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected or bad_shapes:
        raise ModelLoadError(
            f"{folder}: weights do not match the {config.kind!r} architecture in {CONFIG_FILE} "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
            f"{unexpected[:3]}{'...' if len(unexpected) > 3 else ''}, wrong shape {bad_shapes[:3]})")
    model.load_state_dict(state, strict=True)
    model.metrics = metrics
    return model.to(map_location).eval()
