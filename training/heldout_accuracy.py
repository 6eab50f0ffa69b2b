"""Ground-truth accuracy of model folders on every nucleus of a benchmark none of them saw.

The report's test split holds 600 nuclei: at 97 % its 95 % interval is about +-1.4 points,
too wide to tell models apart or to say on which side of a 0.97 target a model truly sits.
Generate a benchmark with another seed (no model was trained or selected on it) and pool
its train, val and test splits (6,000 nominally imaged nuclei for ``--size cpu``)::

    genuine synth benchmark --size cpu --seed 5 --out data/bench_nom_s5
    python -m training.heldout_accuracy --data data/bench_nom_s5 --models models/genuine_cpu models/resnet_cpu

Prints a markdown table with a row per model (accuracy with its Wilson 95 % interval, TPR, TNR
and the errors per cell line) and, for two or more models, how often each pair agrees; ``--out``
writes the same numbers as JSON. All pooled patches are held in memory (6,000 x 3 x 96 x 96
float16: 330 MB).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from genuine_core.errors import InputError
from genuine_core.stats import wilson_interval
from training.metrics import binary_metrics
from training.report import markdown_table

DEFAULT_SPLITS = ("train", "val", "test")


def pooled_split(data: Path, splits: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Patches ``(N, 3, P, P)`` and nuclei rows of ``splits`` of a benchmark, in that order."""
    from genuine_core.synth import load_benchmark

    parts = [load_benchmark(data, s) for s in splits]
    return (np.concatenate([np.asarray(p.patches) for p in parts]),
            pd.concat([p.nuclei for p in parts], ignore_index=True))


def accuracy_summary(calls: np.ndarray, nuclei: pd.DataFrame) -> dict[str, Any]:
    """Metrics of ``calls`` (N,) in {0, 1} against ``nuclei.true_label``, with a Wilson 95 % CI
    for the accuracy and the error count per ``cell_line``."""
    truth = nuclei["true_label"].to_numpy().astype(np.int64)
    m = binary_metrics(calls, truth).to_dict()
    low, high = wilson_interval(m["tp"] + m["tn"], m["n"])
    wrong = calls != truth
    lines = nuclei["cell_line"].astype(str).to_numpy()
    per_line = {str(name): {"n": int((lines == name).sum()), "errors": int(wrong[lines == name].sum())}
                for name in sorted(set(lines))}
    return {**m, "accuracy_ci95": [low, high], "errors_by_line": per_line}


def heldout_accuracy(data: str | Path, folders: Sequence[str | Path],
                     splits: Sequence[str] = DEFAULT_SPLITS) -> dict[str, Any]:
    """Evaluate each model folder on the pooled ``splits`` of benchmark ``data``.

    Returns:
        ``{"data", "splits", "n", "models": {folder: summary}, "agreement": {"a | b": fraction}}``.

    Raises:
        InputError: missing benchmark or model folder, or a model made for another patch size.
    """
    from training.evaluate import load_model, run_predict

    if not folders:
        raise InputError("give at least one model folder")
    patches, nuclei = pooled_split(Path(data), splits)
    calls: dict[str, np.ndarray] = {}
    models: dict[str, Any] = {}
    for folder in folders:
        model = load_model(Path(folder))
        calls[str(folder)] = run_predict(model, patches).table["call"].to_numpy().astype(np.int64)
        models[str(folder)] = accuracy_summary(calls[str(folder)], nuclei)
    names = list(calls)
    agreement = {f"{a} | {b}": float((calls[a] == calls[b]).mean())
                 for i, a in enumerate(names) for b in names[i + 1:]}
    return {"data": str(data), "splits": list(splits), "n": int(len(nuclei)), "models": models,
            "agreement": agreement}


def render(result: dict[str, Any]) -> str:
    """Markdown table of a :func:`heldout_accuracy` result (every model scored the same nuclei)."""
    line_names = sorted(next(iter(result["models"].values()))["errors_by_line"])
    rows = [[f"`{name}`", f"{m['accuracy']:.4f}", f"{m['accuracy_ci95'][0]:.4f}-{m['accuracy_ci95'][1]:.4f}",
             f"{m['tpr']:.4f}", f"{m['tnr']:.4f}"]
            + [f"{m['errors_by_line'][ln]['errors']} / {m['errors_by_line'][ln]['n']}" for ln in line_names]
            for name, m in result["models"].items()]
    out = [f"{result['n']} nuclei of `{result['data']}` (splits {', '.join(result['splits'])}), "
           "against the ground-truth labels.", ""]
    header = ["model", "accuracy", "95 % CI", "TPR", "TNR"] + [f"errors {ln}" for ln in line_names]
    out += markdown_table(header, rows)
    if result["agreement"]:
        out += ["Calls agree on: " + "; ".join(f"{k}: {v:.4f}" for k, v in result["agreement"].items())]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="benchmark folder (genuine synth benchmark)")
    parser.add_argument("--models", nargs="+", required=True, help="model folders")
    parser.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS),
                        help="benchmark splits to pool (default: train val test)")
    parser.add_argument("--out", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    try:
        result = heldout_accuracy(args.data, args.models, args.splits)
    except InputError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(render(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
