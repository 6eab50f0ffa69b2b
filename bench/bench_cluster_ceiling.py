"""How much nucleus accuracy the benchmark allows when clusters must be told from single spots by their look.

The Cohn rule calls a nucleus MNA when it holds a MYCN cluster or MYCN >= 4 x NMI signals, so
one MYCN signal mistaken for a cluster (or a cluster for a single) can flip a nucleus. This
measures that limit with an *oracle* for everything else:

1. crops of ``--crop`` px (all three channels) centred on every ground-truth MYCN signal and
   cluster box of the ``--train`` benchmark's train and val patches train a small CNN to tell
   cluster (1) from single MYCN signal (0) (seeded; flips, 90-degree turns, intensity scaling);
2. on every nucleus of ``--test`` (``--test-splits``, default all three: nuclei no model saw), each
   ground-truth MYCN signal or cluster is called a cluster when the CNN's probability is >= t;
   the Cohn rule then runs on the *true* NMI count, the true signal positions and these calls.
   The best accuracy over t (chosen on the same nuclei, so optimistic) is the ceiling a
   nucleus classifier reaches when it counts perfectly and judges each signal by its look.
   ``--detector`` adds the same with a detector's cluster score for each true box (the
   highest cluster detection at IoU > 0.3).

A perfect cluster call gives accuracy 1.0 (checked and recorded). Writes ``--out`` JSON
with the config. Run from the repo root (about 10 min on 2 cores at the defaults), after building
the two benchmarks (about 1 min each)::

    genuine synth benchmark --size cpu --seed 0 --acquisition-jitter 1 --out data/bench_cpu_flux_jit
    genuine synth benchmark --size cpu --seed 5 --out data/bench_nom_s5
    python bench/bench_cluster_ceiling.py --train data/bench_cpu_flux_jit --test data/bench_nom_s5 \
        --detector models/detector_cpu --out bench/results/cluster_ceiling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genuine_core.rules import is_amplified  # noqa: E402
from genuine_core.seeding import seed_everything  # noqa: E402
from genuine_core.synth import BenchmarkSplit, load_benchmark  # noqa: E402
from genuine_core.synth.signals import CLUSTER, MYCN  # noqa: E402

#: thresholds are these quantiles of the scores (true clusters are about 6 % of the boxes)
THRESHOLD_QUANTILES = np.linspace(0.80, 0.995, 79)


def load_splits(data: Path, splits: list[str]) -> dict[str, BenchmarkSplit]:
    """``{split: BenchmarkSplit}`` of a benchmark folder, in the order given."""
    return {split: load_benchmark(data, split) for split in splits}


def signal_crops(parts: dict[str, BenchmarkSplit], crop: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Crops ``(M, 3, crop, crop)`` float32 around each true MYCN/cluster box, and the box rows
    (``split, patch_row, is_cluster, x1, y1, x2, y2``)."""
    images, rows = [], []
    for split, part in parts.items():
        padded = np.pad(np.asarray(part.patches, dtype=np.float32), ((0, 0), (0, 0), (crop, crop), (crop, crop)))
        boxes = part.boxes[part.boxes.cls.isin([MYCN, CLUSTER])]
        for r, x1, y1, x2, y2, cls in boxes[["patch_row", "x1", "y1", "x2", "y2", "cls"]].itertuples(index=False):
            cy, cx = int((y1 + y2) / 2) + crop, int((x1 + x2) / 2) + crop
            images.append(padded[r, :, cy - crop // 2:cy - crop // 2 + crop, cx - crop // 2:cx - crop // 2 + crop])
            rows.append((split, int(r), int(cls == CLUSTER), x1, y1, x2, y2))
    table = pd.DataFrame(rows, columns=["split", "patch_row", "is_cluster", "x1", "y1", "x2", "y2"])
    return np.stack(images), table


def crop_net(width: int) -> nn.Module:
    """Small CNN: crop ``(N, 3, c, c)`` -> cluster logit ``(N,)``."""
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(3, width), *block(width, width), nn.MaxPool2d(2),
                         *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),
                         *block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2 * width, 1), nn.Flatten(0))


def train_crop_net(x: np.ndarray, y: np.ndarray, width: int, epochs: int, seed: int) -> nn.Module:
    """Adam 1e-3 with cosine decay, batch 128, balanced BCE; returns the net in eval mode."""
    rng = seed_everything(seed)
    net = crop_net(width)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    steps = epochs * -(-len(x) // 128)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    pos_weight = torch.tensor((1 - y.mean()) / y.mean())
    for epoch in range(epochs):
        t0, net = time.time(), net.train()
        for idx in np.array_split(rng.permutation(len(x)), -(-len(x) // 128)):
            xb = torch.rot90(xt[idx], int(rng.integers(4)), (2, 3))
            if rng.random() < 0.5:
                xb = xb.flip(-1)
            xb = xb * torch.from_numpy(rng.uniform(0.7, 1.4, (len(idx), 1, 1, 1)).astype(np.float32))
            loss = nn.functional.binary_cross_entropy_with_logits(net(xb), yt[idx], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
    return net.eval()


@torch.no_grad()
def predict(net: nn.Module, x: np.ndarray) -> np.ndarray:
    """Cluster probability per crop ``(M,)``."""
    return np.concatenate([torch.sigmoid(net(torch.from_numpy(x[i:i + 512]))).numpy() for i in range(0, len(x), 512)])


def detector_cluster_scores(folder: Path, parts: dict[str, BenchmarkSplit], boxes: pd.DataFrame) -> np.ndarray:
    """For each true box of :func:`signal_crops`, the highest cluster-class detection score at
    IoU > 0.3 (0 when none)."""
    from training.evaluate import load_model, run_predict
    from training.metrics import box_iou

    model = load_model(folder)
    corners = ["x1", "y1", "x2", "y2"]
    out = np.zeros(len(boxes))
    for split, part in parts.items():
        det = run_predict(model, np.asarray(part.patches), min_score=0.01).detections
        by_row = dict(tuple(det[det.cls == CLUSTER].groupby("row")))
        in_split = np.flatnonzero((boxes.split == split).to_numpy())
        for row, idx in boxes.iloc[in_split].groupby("patch_row").indices.items():
            d = by_row.get(row)
            if d is None:
                continue
            rows = in_split[idx]
            iou = box_iou(boxes.iloc[rows][corners].to_numpy(), d[corners].to_numpy())
            out[rows] = np.where(iou > 0.3, d.score.to_numpy()[None, :], 0.0).max(1)
    return out


def rule_calls(nuclei: pd.DataFrame, boxes: pd.DataFrame, is_cluster: np.ndarray) -> np.ndarray:
    """Cohn-rule calls ``(N,)`` in {0, 1}, one per row of ``nuclei``, from the true NMI counts, the true
    signal positions ``boxes`` and the cluster calls ``is_cluster`` per box."""
    calls = boxes.assign(cl=is_cluster.astype(int)).groupby(["split", "patch_row"]).agg(
        n_cl=("cl", "sum"), n_sig=("cl", "size")).reset_index()
    m = nuclei.merge(calls, on=["split", "patch_row"], how="left").fillna({"n_cl": 0, "n_sig": 0})
    return is_amplified(m.n_nmi.to_numpy(), (m.n_sig - m.n_cl).to_numpy(), m.n_cl.to_numpy()).astype(np.int64)


def errors_by_line(calls: np.ndarray, nuclei: pd.DataFrame) -> dict[str, int]:
    """Wrong calls per cell line (``training.heldout_accuracy.accuracy_summary``)."""
    from training.heldout_accuracy import accuracy_summary

    return {line: v["errors"] for line, v in accuracy_summary(calls, nuclei)["errors_by_line"].items()}


def rule_accuracy(nuclei: pd.DataFrame, boxes: pd.DataFrame, is_cluster: np.ndarray) -> tuple[float, dict]:
    """Accuracy of :func:`rule_calls` against ``nuclei.true_label``, and the errors per cell line."""
    calls = rule_calls(nuclei, boxes, is_cluster)
    return float(1 - (calls != nuclei.true_label.to_numpy()).mean()), errors_by_line(calls, nuclei)


def sweep(nuclei: pd.DataFrame, boxes: pd.DataFrame, prob: np.ndarray) -> dict:
    """Accuracy per threshold (a grid of score quantiles) and the best one."""
    from sklearn.metrics import roc_auc_score

    truth = nuclei.true_label.to_numpy()
    calls = {float(t): rule_calls(nuclei, boxes, prob >= t) for t in np.unique(np.quantile(prob, THRESHOLD_QUANTILES))}
    acc = {t: float(1 - (c != truth).mean()) for t, c in calls.items()}
    best = max(acc, key=acc.get)
    return {"box_auc": float(roc_auc_score(boxes.is_cluster, prob)), "accuracy_by_threshold": acc,
            "best_threshold": best, "best_accuracy": acc[best], "best_errors_by_line": errors_by_line(calls[best], nuclei)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, default=Path("data/bench_cpu_flux_jit"),
                    help="benchmark whose train and val boxes train the crop CNN")
    ap.add_argument("--test", type=Path, default=Path("data/bench_nom_s5"), help="benchmark whose nuclei are scored")
    ap.add_argument("--test-splits", nargs="+", default=["train", "val", "test"], choices=["train", "val", "test"],
                    help="its splits to score (only unseen ones)")
    ap.add_argument("--detector", type=Path, help="also score a detector model folder's cluster scores")
    ap.add_argument("--crop", type=int, default=24, help="crop side (px)")
    ap.add_argument("--width", type=int, default=48, help="CNN width")
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/results/cluster_ceiling.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0, load_start = time.time(), os.getloadavg()[0]
    x_train, b_train = signal_crops(load_splits(args.train, ["train", "val"]), args.crop)
    test_parts = load_splits(args.test, args.test_splits)
    x_test, b_test = signal_crops(test_parts, args.crop)
    nuclei = pd.concat([part.nuclei for part in test_parts.values()], ignore_index=True)
    print(f"{len(x_train)} training crops ({int(b_train.is_cluster.sum())} clusters), {len(x_test)} test crops, "
          f"{len(nuclei)} test nuclei", flush=True)
    net = train_crop_net(x_train, b_train.is_cluster.to_numpy(), args.width, args.epochs, args.seed)
    perfect, _ = rule_accuracy(nuclei, b_test, b_test.is_cluster.to_numpy().astype(bool))
    result = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": platform.platform(), "n_test_nuclei": len(nuclei), "n_test_boxes": len(b_test),
              "perfect_cluster_calls_accuracy": perfect,
              "crop_net": sweep(nuclei, b_test, predict(net, x_test))}
    if args.detector:
        result["detector"] = sweep(nuclei, b_test, detector_cluster_scores(args.detector, test_parts, b_test))
    result["seconds"] = round(time.time() - t0, 1)
    result["load_start_end"] = [load_start, os.getloadavg()[0]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for name in ("crop_net", "detector"):
        if name in result:
            r = result[name]
            print(f"{name}: box AUC {r['box_auc']:.4f}; best nucleus accuracy {r['best_accuracy']:.4f} "
                  f"at t = {r['best_threshold']} (errors by line {r['best_errors_by_line']})")
    print(f"perfect cluster calls: {perfect:.4f}; wrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
