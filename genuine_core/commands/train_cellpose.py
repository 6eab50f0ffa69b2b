"""``genuine train-cellpose``: train a cellpose nuclei model on synthetic fields."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from genuine_core.commands.checks import seed_option

logger = logging.getLogger(__name__)

#: below this validation F1 a trained model is reported as unusable (the watershed default: 0.971, BENCHMARKS.md)
MIN_USEFUL_F1 = 0.5


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the options of ``genuine train-cellpose``."""
    from genuine_core.segmentation.cellpose_backend import DEFAULT_MODEL_DIR

    p.add_argument("--out", default=str(DEFAULT_MODEL_DIR), help="model folder to write (default: %(default)s)")
    p.add_argument("--fields", type=int, default=32, help="synthetic training fields (default: %(default)s)")
    p.add_argument("--val-fields", type=int, default=6, help="held-out fields for the final F1 (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=300, help="training epochs (default: %(default)s)")
    p.add_argument("--images-per-epoch", type=int, default=8, help="images drawn per epoch (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.005, help="AdamW learning rate (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--seed", type=seed_option, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--calibrate-only", action="store_true",
                   help="do not train: re-calibrate the cellprob threshold of the model in --out and re-score it")
    p.add_argument("--overwrite", action="store_true", help="replace a model already trained in --out")


def _check_options(args: argparse.Namespace) -> None:
    """Refuse a bad number by the option it came from, before any work (the config's own checks name its fields).

    Raises:
        InputError: e.g. ``--epochs must be >= 1, got 0``.
    """
    from genuine_core.commands.checks import in_range
    from genuine_core.errors import InputError

    for option, value, low in (("--fields", args.fields, 1), ("--val-fields", args.val_fields, 0),
                               ("--epochs", args.epochs, 1), ("--images-per-epoch", args.images_per_epoch, 1)):
        if value < low:
            raise InputError(f"{option} must be >= {low}, got {value}")
    if not 0 < args.lr < 1:  # NaN too
        raise InputError(f"--lr must be in (0, 1), got {args.lr:g}")
    in_range(args.threads, (1, 256), "--threads")


def run(args: argparse.Namespace) -> int:
    """Build the config, train, print the held-out metrics."""
    from genuine_core.commands.checks import invoked_command, output_folder, refuse_foreign_folder, writing_into
    from genuine_core.errors import InputError
    from genuine_core.segmentation.cellpose_backend import MODEL_FILE
    from genuine_core.segmentation.cellpose_train import CellposeTrainConfig, calibrate_folder, train_cellpose

    out = output_folder(args.out)
    _check_options(args)
    if args.calibrate_only:
        with writing_into(out):
            metrics = calibrate_folder(args.out)
        print(json.dumps({k: metrics[k] for k in ("calibration", "val") if k in metrics}, indent=2))
        return 0
    try:
        config = CellposeTrainConfig(n_fields=args.fields, n_val_fields=args.val_fields, epochs=args.epochs,
                                     nimg_per_epoch=args.images_per_epoch, learning_rate=args.lr,
                                     threads=args.threads, seed=args.seed)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    with writing_into(out):  # first: a second run into this folder is told who writes it, not mixed in
        # checkpoints/: what cellpose's trainer leaves of an interrupted run, which --overwrite may replace
        refuse_foreign_folder(out, (MODEL_FILE, "checksum.sha256", "metrics.json", "checkpoints"), "cellpose model")
        if (out / MODEL_FILE).exists() and not args.overwrite:
            raise InputError(f"--out {out} already holds a trained cellpose model ({MODEL_FILE}); pass --overwrite "
                             "to replace it (or --calibrate-only to re-calibrate it)")
        metrics = train_cellpose(out, config, command=invoked_command(args))
    summary = {k: v for k, v in metrics.items() if k != "train_loss_curve"}
    print(json.dumps(summary, indent=2))
    logger.info("model written to %s", args.out)
    f1 = (metrics.get("val") or {}).get("f1")
    if f1 is not None and f1 < MIN_USEFUL_F1:
        print(f"warning: validation F1 {f1:.3f}: this model misses most nuclei; do not segment with it "
              "(train longer or on more fields: --epochs, --fields)", file=sys.stderr)
    return 0
