"""Train a cellpose 3 nuclei model from scratch on synthetic fields (no downloaded weights).

The recipe: ``n_fields`` synthetic fields (random mix of the four cell lines, half under
nominal and half under shifted acquisition, 25-45 nuclei per 512 x 512 field so many
touch), DAPI channel only, ``cellpose.train.train_seg`` from random initialisation,
then the cellprob threshold calibrated and instance F1 measured on validation fields
generated from an independent seed stream.
The model folder holds ``cellpose_nuclei`` (cellpose state dict), ``config.json``,
``metrics.json`` and ``checksum.sha256``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from genuine_core.checksums import sha256_file
from genuine_core.errors import ModelLoadError
from genuine_core.segmentation.cellpose_backend import MODEL_FILE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellposeTrainConfig:
    """Training recipe.

    Attributes:
        n_fields: synthetic training fields.
        n_val_fields: held-out fields for the final F1 (independent seed stream).
        epochs: passes over the training fields.
        seed: master seed (fields, network init, batch order).
        field_size: side of each square field in pixels.
        nuclei: (min, max) nuclei requested per field.
        learning_rate: AdamW learning rate (cellpose ``train_seg`` default optimiser).
        weight_decay: AdamW weight decay.
        batch_size: 224 px crops per step.
        diam_mean: diameter (px) the network sees after rescaling; our ~60 px nuclei are
            shrunk by ``diam_mean / 60`` which makes training and inference faster
            (cellpose's own nuclei model uses 17).
        nbase: CPnet widths after the input (cellpose default (32, 64, 128, 256); cellpose's
            inference code needs the last width to be 256).
        bsize: crop side for training and tile side for inference.
        nimg_per_epoch: images drawn per epoch (one optimiser step per ``batch_size``).
        min_train_masks: cellpose drops training images with fewer masks than this.
        save_every: write a checkpoint every this many epochs to ``<out>/checkpoints``
            (removed once training finishes).
        threads: torch CPU threads (1 is faster than 2 on a busy 2-core machine).
    """

    n_fields: int = 32
    n_val_fields: int = 6
    epochs: int = 300
    seed: int = 0
    field_size: int = 512
    nuclei: tuple[int, int] = (25, 45)
    learning_rate: float = 0.005
    weight_decay: float = 1e-5
    batch_size: int = 8
    diam_mean: float = 17.0
    nbase: tuple[int, ...] = (32, 64, 128, 256)
    bsize: int = 112
    nimg_per_epoch: int = 8
    min_train_masks: int = 5
    save_every: int = 50
    threads: int = 1

    def __post_init__(self) -> None:
        if self.n_fields < 1 or self.n_val_fields < 0:
            raise ValueError("n_fields must be >= 1 and n_val_fields >= 0")
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.field_size < 224:
            raise ValueError("field_size must be >= 224 (cellpose trains on 224 px crops)")
        if not 1 <= self.nuclei[0] <= self.nuclei[1]:
            raise ValueError(f"nuclei range must satisfy 1 <= min <= max, got {self.nuclei}")
        if self.nuclei[0] < self.min_train_masks:
            raise ValueError(f"fields with fewer than min_train_masks={self.min_train_masks} nuclei are dropped "
                             "by cellpose; raise nuclei[0]")
        if not 0 < self.learning_rate < 1 or self.weight_decay < 0:
            raise ValueError("learning_rate must be in (0, 1) and weight_decay >= 0")
        if self.batch_size < 1 or not 5 <= self.diam_mean <= 200:
            raise ValueError("batch_size must be >= 1 and diam_mean in [5, 200]")
        if len(self.nbase) < 2 or min(self.nbase) < 1 or self.nbase[-1] != 256:
            raise ValueError(f"nbase needs >= 2 positive widths ending in 256, got {self.nbase}")
        if self.save_every < 1 or self.threads < 1:
            raise ValueError("save_every and threads must be >= 1")
        if self.bsize < 32 or self.bsize % 2 ** len(self.nbase):
            raise ValueError(f"bsize must be >= 32 and a multiple of {2 ** len(self.nbase)}")
        if self.nimg_per_epoch < 1:
            raise ValueError("nimg_per_epoch must be >= 1")


def make_training_fields(rng: np.random.Generator, n: int, config: CellposeTrainConfig,
                         progress: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Synthetic DAPI images and their instance masks.

    Returns:
        (images, masks): lists of (S, S) float32 DAPI and (S, S) int32 labels.
    """
    from tqdm import tqdm

    from genuine_core.synth import DEFAULT_LINES, NOMINAL, SHIFTED, make_field

    names = [line.name for line in DEFAULT_LINES]
    images, masks = [], []
    for i in tqdm(range(n), desc="synthetic fields", disable=None if progress else True):
        weights = dict(zip(names, rng.dirichlet(np.ones(len(names)))))
        acq = NOMINAL if i % 2 == 0 else SHIFTED
        k = int(rng.integers(config.nuclei[0], config.nuclei[1] + 1))
        f = make_field(rng, weights, k, shape=(config.field_size, config.field_size), acquisition=acq)
        images.append(np.ascontiguousarray(f.image[..., 2], dtype=np.float32))
        masks.append(f.masks.astype(np.int32))
    return images, masks


def evaluate_cellpose(model_path, images: list[np.ndarray], masks: list[np.ndarray], iou: float = 0.5,
                      **eval_kwargs) -> dict:
    """Pooled instance metrics of a cellpose model file on fields (see ``evaluate_segmenter``).

    ``eval_kwargs`` go to :func:`~genuine_core.segmentation.cellpose_backend.segment_cellpose`.
    """
    from genuine_core.segmentation.cellpose_backend import segment_cellpose
    from genuine_core.segmentation.metrics import evaluate_segmenter

    return evaluate_segmenter(lambda img: segment_cellpose(img, model_path, **eval_kwargs), images, masks, iou)


#: cellprob thresholds tried when calibrating (cellpose default 0.0)
CELLPROB_GRID = (-1.0, 0.0, 1.0, 2.0)


def calibrate_thresholds(model_dir, images: list[np.ndarray], masks: list[np.ndarray]) -> dict:
    """Pick the cellprob threshold with the best F1 on validation fields; store it in ``config.json``.

    An under-trained network tends to over- or under-shoot the cell probability, which
    shows up as masks that are too large or missing; this corrects for it.

    Returns:
        {"cellprob_threshold": best, "grid": [{threshold, f1, mean area ratio...}, ...]}.
    """
    out = Path(model_dir)
    rows = []
    for thr in CELLPROB_GRID:
        r = evaluate_cellpose(out / MODEL_FILE, images, masks, cellprob_threshold=thr)
        rows.append({"cellprob_threshold": thr, "f1": r["f1"], "precision": r["precision"], "recall": r["recall"],
                     "merged": r["merged"], "split": r["split"], "mean_iou": r["mean_iou"]})
        logger.info("cellprob_threshold %.1f: F1 %.3f, mean IoU %.3f", thr, r["f1"], r["mean_iou"])
    best = max(rows, key=lambda row: (round(row["f1"], 3), row["mean_iou"]))
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    cfg["cellprob_threshold"] = best["cellprob_threshold"]
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return {"cellprob_threshold": best["cellprob_threshold"], "grid": rows}


def train_cellpose(out_dir, config: CellposeTrainConfig = CellposeTrainConfig(), command: str | None = None) -> dict:
    """Generate fields, train a cellpose nuclei model, evaluate it, and write the model folder.

    Args:
        out_dir: model folder to create (``cellpose_nuclei``, ``config.json``,
            ``metrics.json``, ``checksum.sha256``).
        config: the recipe.
        command: the command line, recorded in ``config.json``.

    Returns:
        The metrics dict written to ``metrics.json``.
    """
    import torch
    from cellpose import train
    from cellpose.resnet_torch import CPnet

    from genuine_core.seeding import seed_everything

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    train_rng, val_rng = _field_rngs(config.seed)
    t0 = time.perf_counter()
    images, masks = make_training_fields(train_rng, config.n_fields, config)
    val_images, val_masks = make_training_fields(val_rng, config.n_val_fields, config)
    t_data = time.perf_counter() - t0

    torch.manual_seed(config.seed)
    net = CPnet([2, *config.nbase], 3, sz=3, mkldnn=False, max_pool=True, diam_mean=config.diam_mean)
    t1 = time.perf_counter()
    (out / "checkpoints").mkdir(exist_ok=True)
    path, train_losses, _ = train.train_seg(
        net, train_data=images, train_labels=masks,
        test_data=val_images or None, test_labels=val_masks or None,
        channels=[0, 0], normalize=True, n_epochs=config.epochs, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, batch_size=config.batch_size, min_train_masks=config.min_train_masks,
        save_path=out / "checkpoints", save_every=config.save_every, save_each=True, model_name=MODEL_FILE,
        bsize=config.bsize, nimg_per_epoch=min(config.nimg_per_epoch, config.n_fields),
    )
    shutil.copyfile(path, out / MODEL_FILE)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # kept only while training (crash recovery)
    t_train = time.perf_counter() - t1

    recipe = asdict(config) | {"cellpose": _cellpose_version()} | ({"command": command} if command else {})
    (out / "config.json").write_text(json.dumps(recipe, indent=2))
    metrics: dict = {
        "train_fields": config.n_fields, "val_fields": config.n_val_fields,
        "data_seconds": round(t_data, 1), "train_seconds": round(t_train, 1),
        "final_train_loss": float(train_losses[-1]),
        "train_loss_curve": [float(x) for x in train_losses[:: max(1, len(train_losses) // 50)]],
    }
    (out / "checksum.sha256").write_text(f"{sha256_file(out / MODEL_FILE)}  {MODEL_FILE}\n")
    return _calibrate_and_score(out, val_images, val_masks, metrics)


def _field_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for training and validation fields."""
    a, b = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


def _calibrate_and_score(out: Path, val_images, val_masks, metrics: dict) -> dict:
    """Calibrate the cellprob threshold and score on validation fields; write ``metrics.json``."""
    if val_images:
        metrics["calibration"] = calibrate_thresholds(out, val_images, val_masks)
        metrics["val"] = evaluate_cellpose(out / MODEL_FILE, val_images, val_masks)
        logger.info("validation F1 %.3f (P %.3f, R %.3f)", metrics["val"]["f1"], metrics["val"]["precision"],
                    metrics["val"]["recall"])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def calibrate_folder(out_dir) -> dict:
    """Re-calibrate and re-score a model folder written by :func:`train_cellpose`.

    Regenerates the validation fields from the seed in ``config.json`` (independent of
    the training fields), then updates ``config.json`` and ``metrics.json``.
    """
    import torch

    out = Path(out_dir)
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{out}: no readable config.json ({exc})") from None
    names = {f.name for f in fields(CellposeTrainConfig)}
    config = CellposeTrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names})
    torch.set_num_threads(config.threads)
    _, val_rng = _field_rngs(config.seed)
    images, masks = make_training_fields(val_rng, max(config.n_val_fields, 1), config)
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    return _calibrate_and_score(out, images, masks, metrics)


def _cellpose_version() -> str:
    from importlib.metadata import version

    return version("cellpose")
