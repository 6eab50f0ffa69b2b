"""``genuine train``: train a GENUINE model, a baseline or the signal detector.

Examples::

    genuine synth benchmark --size cpu --seed 0 --out data/bench_cpu
    genuine train --kind detector --out models/detector_cpu
    genuine train --kind genuine --detector models/detector_cpu --beta 0.2 --out models/genuine_cpu
    genuine train --kind resnet --beta 0.2 --out runs/train/resnet_b02
    genuine train --kind genuine --data curated.npz --out runs/train/genuine_curated
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from genuine_core.commands.checks import seed_option, writing_into

logger = logging.getLogger(__name__)

#: bounds of options that would otherwise run out of memory or oversubscribe the CPU
THREADS_RANGE = (1, 256)
ENCODER_WIDTH_RANGE = (1, 512)  # ResNet: 64
ENCODER_INPUT_RANGE = (0, 1024)  # 0 = no resizing; the paper's patches are 192 px
#: per-preset defaults: (epochs, patience, train patches per epoch)
PRESET_DEFAULTS = {"cpu": (30, 6, 2048), "paper": (200, 30, None), "tiny": (3, 2, 64)}
DEFAULT_DATA = "data/bench_cpu"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``genuine train`` options."""
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESET_DEFAULTS), help="model preset (default cpu)")
    parser.add_argument("--kind", default="genuine", choices=["genuine", "resnet", "detector", "ratio"],
                        help="model kind (default genuine)")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help=f"benchmark folder or LabelledPatches .npz/.parquet (default {DEFAULT_DATA})")
    parser.add_argument("--out", default=None, help="model folder to write (default runs/train/<kind>_<preset>)")
    parser.add_argument("--detector", default=None,
                        help="trained detector folder for GENUINE (default: models/detector_<preset> in the working "
                             "folder, else the shipped one)")
    parser.add_argument("--beta", type=float, default=0.0, help="flip training-pool labels with this probability")
    parser.add_argument("--encoder-width", type=int, default=None,
                        help="override the preset's encoder width (stem channels; ResNet: 64)")
    parser.add_argument("--encoder-stages", type=int, default=None, choices=[1, 2, 3, 4],
                        help="override the preset's number of encoder stages")
    parser.add_argument("--encoder-input-size", type=int, default=None,
                        help="override the side (px) the encoder resizes patches to (0 = no resizing)")
    parser.add_argument("--label", default="auto", choices=["auto", "truth"],
                        help="train on automatic labels (paper) or ground truth")
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (preset default)")
    parser.add_argument("--patience", type=int, default=None, help="early-stopping patience (paper: 30)")
    parser.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate (paper: 1e-3)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--batch-size", type=int, default=32, help="training patches per SGD step (default 32)")
    parser.add_argument("--train-per-epoch", type=int, default=-1,
                        help="training patches drawn per epoch (preset default; 0 = all)")
    parser.add_argument("--max-train", type=int, default=None, help="load at most this many training patches")
    parser.add_argument("--max-val", type=int, default=None, help="use at most this many validation patches")
    parser.add_argument("--seed", type=seed_option, default=0,
                        help="seed of weights, sampling and augmentation (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--no-augment", action="store_true", help="switch augmentations off")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint")
    parser.add_argument("--init", default=None, metavar="FOLDER",
                        help="start from this trained model folder's weights (fine-tuning; same kind)")
    parser.add_argument("--blur", type=float, default=None, metavar="P",
                        help="probability of the extra optical-blur augmentation (default 0.5; 0 = off)")
    parser.add_argument("--blur-sigma", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                        help="sd range (px) of that blur, drawn per patch (default 0.3 1.5)")
    parser.add_argument("--crosstalk", type=float, default=None, metavar="C",
                        help="largest channel bleed-through fraction of that augmentation (default 0.08; 0 = off)")
    parser.add_argument("--noise", type=float, default=None, metavar="SD",
                        help="largest sd of the in-nucleus noise augmentation (default 0.03)")
    parser.add_argument("--no-mycn", type=float, default=None, metavar="P",
                        help="probability of erasing a training patch's MYCN signals and labelling it non-MNA "
                             "(classifiers; default 0 = off)")
    parser.add_argument("--intensity", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                        help="per-channel intensity scaling range of the augmentation (default 0.8 1.2)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing finished model folder (with --resume: train a finished run on)")


def _spec_from_args(args: argparse.Namespace):
    from genuine_core.commands.checks import in_range, output_folder, refuse_foreign_folder
    from genuine_core.models.folder import CHECKPOINT_DIR, CHECKSUM_FILE, METRICS_FILE
    from genuine_core.errors import InputError
    from training.loop import TrainConfig
    from training.train import RunSpec

    epochs, patience, per_epoch = PRESET_DEFAULTS[args.preset]
    if args.train_per_epoch != -1:
        per_epoch = args.train_per_epoch or None
    out = args.out or f"runs/train/{args.kind}_{args.preset}"
    output_folder(out)
    detector = _detector(args.kind, args.preset, args.detector)
    if args.kind == "genuine" and not (Path(detector) / "config.json").is_file():
        raise InputError(f"no trained detector at {detector}; pass --detector FOLDER (models/ ships "
                         f"detector_cpu, for --preset cpu) or train one first: "
                         f"genuine train --preset {args.preset} --kind detector --out {detector}")
    if args.no_mycn and args.kind not in ("genuine", "resnet"):
        raise InputError(f"--no-mycn relabels training patches; it applies to the genuine and resnet classifiers, "
                         f"not to --kind {args.kind}")
    in_range(args.threads, THREADS_RANGE, "--threads")
    if args.train_per_epoch < -1:
        raise InputError(f"--train-per-epoch must be -1 (the preset's), 0 (all) or more, got {args.train_per_epoch}")
    if args.encoder_width is not None:
        in_range(args.encoder_width, ENCODER_WIDTH_RANGE, "--encoder-width")
    if args.encoder_input_size is not None:
        in_range(args.encoder_input_size, ENCODER_INPUT_RANGE, "--encoder-input-size", " px")
    for name in ("epochs", "patience"):  # None = the preset's default; 0 is not "default", it is refused
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name} must be >= 1, got {value}")
    data = Path(args.data)
    if not data.exists():
        raise InputError(f"training data {data} not found; make the benchmark with: "
                         f"genuine synth benchmark --size {args.preset} "
                         f"--seed 0 --out {data}")
    from training.datasets import check_source

    check_source(data)  # a folder that is no benchmark, or a file that is no training set
    refuse_foreign_folder(out, (CHECKSUM_FILE, CHECKPOINT_DIR, METRICS_FILE), "model")
    if (Path(out) / METRICS_FILE).is_file() and not (args.resume or args.overwrite):
        raise InputError(f"{out} already holds a model; pass --overwrite to replace it or --resume to continue "
                         "(a finished run goes on for more --epochs with --resume --overwrite)")
    init = _check_resume(args, Path(out)) if args.resume else args.init
    try:
        train = TrainConfig(
            epochs=epochs if args.epochs is None else args.epochs,
            patience=patience if args.patience is None else args.patience, lr=args.lr, momentum=args.momentum,
            batch_size=args.batch_size, train_per_epoch=per_epoch, max_val=args.max_val, seed=args.seed,
            threads=args.threads, augment=_augment(args))
        return RunSpec(kind=args.kind, preset=args.preset, data=str(data), out=out, detector=detector,
                       beta=args.beta, label=args.label, max_train=args.max_train, resume=args.resume,
                       init=init, train=train,
                       encoder=_encoder_overrides(args),
                       command="genuine " + " ".join(shlex.quote(a) for a in
                                                     _absolute_paths(getattr(args, "_argv", sys.argv[1:]))))
    except ValueError as exc:
        raise InputError(_as_option(str(exc))) from exc


#: the settings RunSpec, TrainConfig and AugmentConfig check, by the option that sets them
OPTION_OF = {"lr": "--lr", "momentum": "--momentum", "batch_size": "--batch-size", "max_val": "--max-val",
             "max_train": "--max-train", "beta": "--beta", "seed": "--seed", "p_blur": "--blur",
             "blur_sigma": "--blur-sigma", "crosstalk": "--crosstalk", "noise_std": "--noise",
             "p_no_mycn": "--no-mycn", "intensity": "--intensity"}


def _as_option(message: str) -> str:
    """A settings check's message (``p_blur must be ...``) naming the option instead (``--blur must be ...``)."""
    name, space, rest = message.partition(" ")
    return OPTION_OF[name] + space + rest if name in OPTION_OF else message


#: options that may differ between a run and its --resume: where it is, threads, and how long it goes on
RESUME_FREE = {"resume", "overwrite", "out", "threads", "epochs", "patience"}


#: options naming files or folders: recorded as absolute paths, so the run's resume command works from any folder
PATH_OPTIONS = ("--data", "--detector", "--init", "--out")


def _absolute_paths(argv: list[str]) -> list[str]:
    """``argv`` with the values of :data:`PATH_OPTIONS` made absolute (``--data x`` and ``--data=x``)."""
    out, previous = [], None
    for word in argv:
        option, eq, value = word.partition("=")
        if previous in PATH_OPTIONS:
            word = str(Path(word).resolve())
        elif eq and option in PATH_OPTIONS:
            word = f"{option}={Path(value).resolve()}"
        out.append(word)
        previous = word
    return out


def _recorded_argv(out: Path) -> list[str] | None:
    """The ``genuine train`` options a run in ``out`` was started with (None when not recorded)."""
    import json

    for file, key in (("metrics.json", "resume_command"), ("train_config.json", "command")):
        try:
            command = json.loads((out / file).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        words = shlex.split(command) if isinstance(command, str) else []
        if words[:2] == ["genuine", "train"]:
            return words[2:]
    return None


def _holds_finished_model(out: Path) -> bool:
    """True when ``out`` holds a finished model (``metrics.json`` readable, status final or none)."""
    import json

    from genuine_core.models.folder import METRICS_FILE, is_finished

    try:
        metrics = json.loads((out / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(metrics, dict) and is_finished(metrics)


def _started_argv(out: Path) -> list[str] | None:
    """The ``genuine train`` options of the session that started the run in ``out`` (None when not recorded):
    the first of an unfinished run's ``session_commands``, else of a finished run's ``earlier_commands``,
    else its ``command``."""
    import json

    from training.train import SESSIONS_KEY

    for file, key in (("metrics.json", SESSIONS_KEY), ("train_config.json", "earlier_commands"),
                      ("train_config.json", "command")):
        try:
            commands = json.loads((out / file).read_text(encoding="utf-8")).get(key)
            words = shlex.split(commands if isinstance(commands, str) else commands[0])
        except (OSError, ValueError, AttributeError, TypeError, IndexError):
            continue
        if words[:2] == ["genuine", "train"]:
            return words[2:]
    return None


def _check_same_data(data: Path, out: Path) -> None:
    """Refuse to resume on training data that changed since the run started (e.g. a benchmark made
    again in the same folder): half the run would have learned from other nuclei.

    Raises:
        InputError: the recorded fingerprint differs from the data's.
    """
    from genuine_core.errors import InputError
    from training.checkpoint import checkpoint_metrics
    from training.datasets import data_fingerprint
    from training.train import RESUME_DATA_KEY

    recorded = checkpoint_metrics(out).get(RESUME_DATA_KEY)  # None: no checkpoint (said later) or an older one
    if recorded and recorded != data_fingerprint(data):
        raise InputError(f"--resume: the training data in {data} changed since the run started; "
                         f"start a new run with --overwrite")


def _detector(kind: str, preset: str, given: str | None) -> str | None:
    """The detector folder a run uses: ``given``; for a GENUINE run without one, the preset's detector in
    ``models/`` here, else the shipped one."""
    if kind != "genuine" or given is not None:
        return given
    from genuine_core.pipeline import SHIPPED_MODELS

    local = Path("models") / f"detector_{preset}"
    return str(local if local.exists() else SHIPPED_MODELS / local.name)


def _check_resume(args: argparse.Namespace, out: Path) -> str | None:
    """``--resume`` continues a run as it was started: refuse options that differ from the recorded ones.
    ``--init`` may be the run's own or left out; either way the run's is returned (where it started).

    Raises:
        InputError: a ratio fit (nothing to resume), a finished run without ``--overwrite`` (its weights
            may be replaced) or options that differ, with the command to use.
    """
    from genuine_core.errors import InputError

    if args.kind == "ratio":
        raise InputError("--resume: a ratio fit has no checkpoint to resume; run it again with --overwrite")
    if not args.overwrite and _holds_finished_model(out):
        raise InputError(f"{out} holds a finished model: --resume would train it on, and a better epoch replaces "
                         f"its weights (a registered model's too); add --overwrite to do so, or fine-tune a copy "
                         f"with --init {out} --out NEW_FOLDER")
    _check_same_data(Path(args.data), out)
    recorded = _recorded_argv(out)
    if recorded is None:
        return args.init
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    try:
        old = parser.parse_args(recorded)
    except SystemExit:  # recorded by an older version with other options: nothing to compare
        return args.init
    try:  # older versions left --init out of the resume command: the session that started the run has it
        old.init = parser.parse_args(_started_argv(out) or recorded).init or old.init
    except SystemExit:
        pass

    moved = _moved_inputs(out)

    def same(key: str, a, b) -> bool:
        paths = isinstance(a, (str, Path)) and isinstance(b, (str, Path))
        return a == b or (paths and (Path(a).resolve() == Path(b).resolve() or moved(key, Path(a), Path(b))))

    now = vars(args) | {"detector": _detector(args.kind, args.preset, args.detector),  # a default as resolved
                        "init": args.init or old.init}  # left out: the run's own
    then = vars(old) | {"detector": _detector(old.kind, old.preset, old.detector)}
    differ = [f"--{k.replace('_', '-')} {now.get(k)} (the run: {v})" for k, v in then.items()
              if k not in RESUME_FREE and not same(k, now.get(k), v)]
    if differ:
        rebased = {f"--{k}": str(now[k]) for k, v in then.items()  # gone, and found here: suggest where it is now
                   if k in ("data", "detector", "init") and v and now.get(k) and moved(k, Path(now[k]), Path(v))}
        kept = [rebased.get(prev, w) for w, prev in zip(recorded, [None] + recorded)
                if w not in ("--resume", "--overwrite", "--out") and prev != "--out"]
        raise InputError("--resume continues the run with the options it started with; these differ: "
                         + "; ".join(differ) + ". Resume with: genuine train "
                         + " ".join(shlex.quote(w) for w in kept + ["--out", str(out), "--resume"]
                                    + ["--overwrite"] * bool(args.overwrite)))
    if args.init and old.init and not Path(old.init).exists():  # moved (same weights, checked above)
        return str(Path(args.init).resolve())
    return old.init


def _moved_inputs(out: Path):
    """``moved(option, now, then)``: True when the run's ``then`` (its data, detector or init folder) is gone and
    ``now`` holds what it held as the run started (its checkpoint's fingerprint or checksum): the run's store
    was restored from a backup on another server, which keeps copies of them."""
    from genuine_core.errors import ModelLoadError
    from genuine_core.models.folder import folder_digest
    from training.checkpoint import checkpoint_metrics
    from training.datasets import data_fingerprint
    from training.train import INPUTS_KEY, RESUME_DATA_KEY

    metrics = checkpoint_metrics(out)
    started = metrics.get(INPUTS_KEY) if isinstance(metrics.get(INPUTS_KEY), dict) else {}

    def moved(option: str, now: Path, then: Path) -> bool:
        if then.exists() or not now.exists():
            return False
        if option == "data":
            return bool(metrics.get(RESUME_DATA_KEY)) and metrics[RESUME_DATA_KEY] == data_fingerprint(now)
        known = started.get(option) if option in ("detector", "init") else None
        if not (isinstance(known, dict) and known.get("checksum")):
            return False
        try:
            return known["checksum"] == folder_digest(now)
        except (ModelLoadError, OSError):
            return False

    return moved


def _augment(args: argparse.Namespace):
    from training.augment import AugmentConfig

    if args.no_augment:
        return AugmentConfig.none()
    over = {k: v for k, v in (("p_blur", args.blur), ("crosstalk", args.crosstalk), ("noise_std", args.noise),
                              ("p_no_mycn", args.no_mycn),
                              ("intensity", tuple(args.intensity) if args.intensity else None),
                              ("blur_sigma", tuple(args.blur_sigma) if args.blur_sigma else None)) if v is not None}
    return AugmentConfig(**over)


def _encoder_overrides(args: argparse.Namespace) -> dict:
    out = {k: v for k, v in (("width", args.encoder_width), ("stages", args.encoder_stages)) if v is not None}
    if args.encoder_input_size is not None:
        out["input_size"] = args.encoder_input_size or None
    return out


def run(args: argparse.Namespace) -> int:
    """Train; print the folder and headline numbers."""
    from training.train import train_model

    spec = _spec_from_args(args)
    with writing_into(spec.out):
        summary = train_model(spec)
    m = summary["metrics"]
    line = f"trained {spec.kind} -> {summary['out']} in {summary['wall_seconds']:.0f} s ({summary['epochs_run']} epochs)"
    if "sensitivity" in m:
        line += f"; validation sensitivity {m['sensitivity']:.3f}, specificity {m['specificity']:.3f}"
    if "test_detection" in m:
        d = m["test_detection"]
        line += f"; test mAP50 {d['map50']:.3f}, exact counts {d['count_accuracy']['exact']:.3f}"
    print(line)
    if "validation" in m:  # classifiers; the same rule gates registration on the Models page
        from genuine_core.validation import weak_validation_reasons

        reasons = weak_validation_reasons(m["validation"])
        if reasons:
            print(f"warning: this model's validation says it should not be trusted: {'; '.join(reasons)}. Train on "
                  "more labelled nuclei of both classes; registered as it is, its calls are flagged "
                  "'weak validation'", file=sys.stderr)
    return 0
