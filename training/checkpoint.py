"""Resumable trainer state, stored without pickle.

``<out>/checkpoint/`` holds the last finished epoch:

- a complete model folder (written by the model's own ``save``), so the latest
  weights can be loaded and inspected like any model;
- ``trainer.safetensors``: model state dict (``model.<name>``), optimiser tensors
  (``optim.<param index>.<buffer>``), the best model state (``best.<name>``) and the
  torch RNG state (``rng.torch``);
- ``trainer.json``: epoch, early-stopping counters, history, optimiser hyper-parameters,
  NumPy generator state and the training config.

Everything is tensors + JSON, so resuming never unpickles code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from genuine_core.errors import InputError
from genuine_core.models.folder import (CHECKPOINT_DIR, CHECKSUM_FILE, CONFIG_FILE, LEGACY_WEIGHTS_FILE, METRICS_FILE,
                                        WEIGHTS_FILE)

TENSORS = "trainer.safetensors"
STATE = "trainer.json"
#: per-epoch curves and the run's settings, beside the model files
HISTORY_FILE = "history.json"
TRAIN_CONFIG_FILE = "train_config.json"
#: what a training run writes into its model folder (besides ``CHECKPOINT_DIR``)
RUN_FILES = (CONFIG_FILE, WEIGHTS_FILE, LEGACY_WEIGHTS_FILE, METRICS_FILE, CHECKSUM_FILE, HISTORY_FILE,
             TRAIN_CONFIG_FILE)


def clear_run(out: str | Path) -> None:
    """Delete an earlier run's files from model folder ``out`` (a fresh run, ``--overwrite``): its
    weights, curves or checkpoint must neither outlive a new run that fails nor mix with its output."""
    out = Path(out)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)


def _contiguous(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in state.items()}


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors and JSON (per-parameter buffers + groups)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, buf in sd["state"].items():
        for name, val in buf.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        if not key.startswith("optim."):
            continue
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = val
    for idx, d in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(d)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _save_tensors(tensors: dict[str, torch.Tensor], tmp: Path, target: Path) -> None:
    """``save_file`` into ``tmp``; its own error for a write the disk refused (``... (os error 28)``, not an
    OSError, so it ended in a traceback) as the OSError the command line reports in one line, naming ``target``."""
    try:
        save_file(tensors, str(tmp))
    except Exception as exc:  # noqa: BLE001 (safetensors raises its own SafetensorError)
        code = re.search(r"\(os error (\d+)\)", str(exc))
        if isinstance(exc, OSError) or code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(target)) from exc


def save_checkpoint(
    out: Path,
    model: torch.nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    opt: torch.optim.Optimizer,
    state: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the trainer state for the epoch just finished; returns the checkpoint folder.

    ``state`` must be JSON-serialisable (epoch, history, early stopping, RNG, config);
    ``extra`` holds further tensors (e.g. an augmentation generator state), restored
    by :func:`load_checkpoint` under the same names.
    Files are written to temporary names and renamed, so a crash mid-write leaves the
    previous checkpoint intact.
    """
    ck = Path(out) / CHECKPOINT_DIR
    ck.mkdir(parents=True, exist_ok=True)
    tensors = _contiguous(model.state_dict(), "model")
    if best_state is not None:
        tensors.update(_contiguous(best_state, "best"))
    opt_t, opt_meta = optimizer_tensors(opt)
    tensors.update(opt_t)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    tmp_t, tmp_s = ck / (TENSORS + ".tmp"), ck / (STATE + ".tmp")
    try:
        _save_tensors(tensors, tmp_t, ck / TENSORS)
        tmp_s.write_text(json.dumps({**state, "optimizer": opt_meta}, indent=1))
    except BaseException:  # a full disk or Ctrl-C: no half-written temporary file left
        tmp_t.unlink(missing_ok=True)
        tmp_s.unlink(missing_ok=True)
        raise
    tmp_t.replace(ck / TENSORS)
    tmp_s.replace(ck / STATE)
    return ck


def checkpoint_metrics(out: str | Path) -> dict[str, Any]:
    """The ``metrics.json`` of ``out``'s checkpoint (what an unfinished run recorded for its resume);
    ``{}`` when there is none or it cannot be read."""
    try:
        metrics = json.loads((Path(out) / CHECKPOINT_DIR / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def has_checkpoint(out: str | Path) -> bool:
    """True when ``out`` holds a resumable checkpoint."""
    ck = Path(out) / CHECKPOINT_DIR
    return (ck / TENSORS).is_file() and (ck / STATE).is_file()


def load_checkpoint(
    out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None, dict[str, torch.Tensor]]:
    """Restore model, optimiser and torch RNG in place; return ``(state, best_state, extra)``.

    Raises:
        InputError: no checkpoint, or it does not fit the model.
    """
    if not has_checkpoint(out):
        raise InputError(f"no checkpoint to resume in {Path(out) / CHECKPOINT_DIR}")
    ck = Path(out) / CHECKPOINT_DIR
    tensors = load_file(str(ck / TENSORS))
    state = json.loads((ck / STATE).read_text())
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")} or None
    try:
        model.load_state_dict(model_sd, strict=True)
        load_optimizer(opt, tensors, state.pop("optimizer"))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(f"checkpoint in {ck} does not fit this model: {exc}") from exc
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return state, best, extra
