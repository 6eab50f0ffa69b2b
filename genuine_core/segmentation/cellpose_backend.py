"""Cellpose 3 backend: a local model file applied to the DAPI channel.

Cellpose silently downloads its built-in ``cyto3`` weights when a
``pretrained_model`` path does not exist; this module resolves and checks the path
itself and only ever hands cellpose an existing file, so nothing is downloaded.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import numpy as np

from genuine_core.errors import ModelLoadError

logger = logging.getLogger(__name__)

#: where ``genuine train-cellpose`` puts its model by default (relative to the repo root)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "cellpose_synth"
#: file name of the trained network inside a model folder
MODEL_FILE = "cellpose_nuclei"
#: environment variable that may point at a model file or folder
MODEL_ENV = "GENUINE_CELLPOSE_MODEL"
#: built-in cellpose model names and their cached file names (used only when already cached)
_BUILTIN_FILES = {"nuclei": "nucleitorch_0", "cyto": "cytotorch_0", "cyto2": "cyto2torch_0", "cyto3": "cyto3"}


def _cellpose_cache_dir() -> Path:
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(env) if env else Path.home() / ".cellpose" / "models"


def resolve_model_path(model_path: str | os.PathLike | None = None, option: str = "--model") -> Path:
    """Find the cellpose model file to use, without downloading anything.

    Order: ``model_path`` (a file, a folder holding ``cellpose_nuclei``, or the name of
    a built-in model that is already in the cellpose cache), then ``$GENUINE_CELLPOSE_MODEL``,
    then ``models/cellpose_synth/cellpose_nuclei`` in the repository.

    Args:
        option: the command-line option that gives ``model_path``, named in the message
            (``genuine segment --model``, ``genuine ingest --cellpose-model``).

    Raises:
        ModelLoadError: nothing usable exists; the message says how to get a model.
    """
    given = model_path if model_path is not None else os.environ.get(MODEL_ENV)
    if given is not None and str(given) in _BUILTIN_FILES and not Path(given).exists():
        cached = _cellpose_cache_dir() / _BUILTIN_FILES[str(given)]
        if cached.is_file():
            return cached
        raise ModelLoadError(f"built-in cellpose model {given!r} is not cached at {cached} and will not be "
                             "downloaded; train one with `genuine train-cellpose` or pass a local model file")
    if given is None:
        candidate = DEFAULT_MODEL_DIR / MODEL_FILE
    else:
        candidate = Path(given) / MODEL_FILE if Path(given).is_dir() else Path(given)
    if candidate.is_file():
        return candidate
    raise ModelLoadError(f"cellpose model not found at {candidate}; train one with "
                         f"`genuine train-cellpose --out {DEFAULT_MODEL_DIR}`, pass {option} PATH, "
                         "or use --backend watershed")


def infer_nbase(state_dict) -> list[int]:
    """Channel widths ``[nchan, n1, n2, ...]`` of a cellpose ``CPnet`` from its state dict."""
    widths, i = [], 0
    while (key := f"downsample.down.res_down_{i}.proj.1.weight") in state_dict:
        w = state_dict[key]
        if i == 0:
            widths.append(int(w.shape[1]))
        widths.append(int(w.shape[0]))
        i += 1
    if len(widths) < 2:
        raise ModelLoadError("file is not a cellpose 3 CPnet state dict (no res_down blocks)")
    return widths


@functools.lru_cache(maxsize=2)
def load_cellpose(path: str, mtime: float):
    """Load a ``CellposeModel`` on the CPU from an existing file (cached per path and mtime).

    Standard-width networks go through ``CellposeModel(pretrained_model=path)``; narrower
    networks trained by ``genuine train-cellpose`` (widths read from the weights) get the
    same model object with a ``CPnet`` of their own widths. Weights are read with
    ``torch.load(weights_only=True)``: no pickled objects.
    """
    if not Path(path).is_file():  # never let cellpose fall back to downloading cyto3
        raise ModelLoadError(f"cellpose model file {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch zip or legacy pickle
        raise ModelLoadError(f"cannot load cellpose model {path}: not a torch weights file")
    import torch
    from cellpose import models
    from cellpose.resnet_torch import CPnet

    torch.set_num_threads(min(2, torch.get_num_threads()))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        nbase = infer_nbase(state)
        if nbase[1:] == [32, 64, 128, 256]:
            return models.CellposeModel(gpu=False, pretrained_model=str(path), nchan=nbase[0])
        model = models.CellposeModel(gpu=False, pretrained_model=False, nchan=nbase[0])
        net = CPnet(nbase, 3, sz=3, mkldnn=model.mkldnn, max_pool=True).to(model.device)
        net.load_model(str(path), device=model.device)
        model.net, model.nbase, model.pretrained_model = net, nbase, str(path)
        model.diam_mean = float(net.diam_mean.data.cpu().numpy()[0])
        model.diam_labels = float(net.diam_labels.data.cpu().numpy()[0])
        return model
    except ModelLoadError:
        raise
    except Exception as exc:  # corrupt file, wrong format, CP4 weights, pickled objects
        raise ModelLoadError(f"cannot load cellpose model {path}: {exc}") from None


#: eval settings a model folder's ``config.json`` may carry, with cellpose's defaults
EVAL_DEFAULTS = {"bsize": 224, "flow_threshold": 0.4, "cellprob_threshold": 0.0}


def model_settings(path: Path) -> dict:
    """Eval settings stored with a model (``config.json`` beside the file), else cellpose's defaults.

    ``genuine train-cellpose`` records the tile size it trained with and the thresholds
    it calibrated on held-out fields.
    """
    out = dict(EVAL_DEFAULTS)
    try:
        cfg = json.loads((Path(path).parent / "config.json").read_text())
        for key, default in EVAL_DEFAULTS.items():
            if key in cfg:
                out[key] = type(default)(cfg[key])
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    return out


def segment_cellpose(dapi: np.ndarray, model_path=None, diameter: float | None = None,
                     flow_threshold: float | None = None, cellprob_threshold: float | None = None,
                     min_size: int = 15, resample: bool = False, min_foreground: float = 0.3) -> np.ndarray:
    """Segment nuclei with a cellpose model on the DAPI channel.

    Args:
        dapi: (H, W) float DAPI image.
        model_path: see :func:`resolve_model_path`.
        diameter: nucleus diameter in pixels; None = the mean diameter the model was trained on.
        flow_threshold, cellprob_threshold: cellpose ``eval`` thresholds; None = the
            model folder's calibrated values (:func:`model_settings`).
        min_size: smallest mask kept, pixels.
        resample: run the flow dynamics at full resolution (cellpose default True). False
            runs them at the network's scale and upsamples the masks: ~5x faster on a
            CPU with the same F1 on synthetic fields.
        min_foreground: drop masks with less than this share of pixels above the Otsu
            threshold of the smoothed DAPI (the watershed's foreground). Cellpose
            normalises each image, so dim DAPI-positive cytoplasm can become masks; 0 keeps all.

    Returns:
        (H, W) int32 instance labels, 0 = background.
    """
    path = resolve_model_path(model_path)
    model = load_cellpose(str(path), path.stat().st_mtime)
    img = np.asarray(dapi, np.float32)
    if img.ndim != 2:
        raise ValueError(f"dapi must be (H, W), got {img.shape}")
    cfg = model_settings(path)
    masks = model.eval(
        img, channels=[0, 0], diameter=diameter,
        flow_threshold=cfg["flow_threshold"] if flow_threshold is None else flow_threshold,
        cellprob_threshold=cfg["cellprob_threshold"] if cellprob_threshold is None else cellprob_threshold,
        min_size=min_size, bsize=cfg["bsize"], resample=resample)[0]
    masks = np.asarray(masks, np.int32)
    if min_foreground > 0:
        from genuine_core.segmentation.watershed import drop_dim_objects, otsu_foreground

        masks = drop_dim_objects(masks, otsu_foreground(img, sigma=2.0), min_foreground)
    return masks
