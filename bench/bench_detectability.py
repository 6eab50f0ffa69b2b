"""Detectability of FISH signals for candidate ``cpu``-preset detectors.

Generates synthetic fields (genuine_core.synth.make_field, the four default lines) and
extracts 96 px patches with their exact boxes. For every candidate RetinaNet it reports:

- anchor coverage (no training, seconds): per class, the share of ground-truth boxes
  whose best anchor has IoU >= 0.5 (a regular positive in training) and >= 0.3, the
  median best IoU, positives per box, and ``collide``: the share of boxes whose best
  anchor is also the best anchor of another box in the same patch (touching signals
  that one anchor cannot both represent);
- with ``--train``: a short training at equal budget (Adam, lr 1e-3, batch 16, flips /
  transposes) and per-class AP at IoU 0.5, exact-count accuracy and Cohn-rule agreement
  on held-out patches;
- inference FLOPs per patch.

Writes bench/results/detectability.json. The final detector training lives in
``training/``; this only compares architectures. Run from the repo root::

    python bench/bench_detectability.py                       # coverage only
    python bench/bench_detectability.py --train --steps 200 --batch 8 --train-fields 10 \
        --only L12_a4-8_16-28_r3 L23_a6-12_20-32_r3 L12_a32_64_r3 --out bench/results/detectability_train.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from genuine_core.models.config import DetectorConfig
from genuine_core.models.detector import SignalDetector, count_detections
from genuine_core.patches import boxes_to_patch, extract_patches
from genuine_core.rules import is_amplified
from genuine_core.seeding import seed_everything
from genuine_core.synth import DEFAULT_LINES, make_field
from training.metrics import average_precision

P = 96

_S = dict(width=32, fpn_channels=32)  # cpu-preset widths; anchor coverage does not depend on them
_R1, _R3 = (1.0,), (0.5, 1.0, 2.0)  # anchor aspect ratios
CANDIDATES: dict[str, DetectorConfig] = {
    # strides 4 + 8 (ResNet18 layers 1-2); "L12_a4-8_16-28_r3" is the cpu preset's detector
    "L12_a4-8_16-28": DetectorConfig(**_S, anchor_sizes=((4, 8), (16, 28)), aspect_ratios=_R1),
    "L12_a4-6-8_12-18-26": DetectorConfig(**_S, anchor_sizes=((4, 6, 8), (12, 18, 26)), aspect_ratios=_R1),
    "L12_a4-8_16-28_r3": DetectorConfig(**_S, anchor_sizes=((4, 8), (16, 28)), aspect_ratios=_R3),
    "L12_a5-10_14-24_r3": DetectorConfig(**_S, anchor_sizes=((5, 10), (14, 24)), aspect_ratios=_R3),
    # strides 8 + 16 (layers 2-3), the DESIGN.md starting point
    "L23_a6-12_20-32": DetectorConfig(**_S, returned_layers=(2, 3), anchor_sizes=((6, 12), (20, 32)),
                                      aspect_ratios=_R1),
    "L23_a6-12_20-32_r3": DetectorConfig(**_S, returned_layers=(2, 3), anchor_sizes=((6, 12), (20, 32)),
                                         aspect_ratios=_R3),
    # stride 8 only (layer 2)
    "L2_a6-12-24": DetectorConfig(**_S, returned_layers=(2,), anchor_sizes=((6, 12, 24),), aspect_ratios=_R1),
    # torchvision-sized anchors (no small ones): what small anchors buy
    "L12_a32_64_r3": DetectorConfig(**_S, anchor_sizes=((32,), (64,)), aspect_ratios=_R3),
}


def make_data(n_fields: int, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Patches (N, 3, P, P) float32 with boxes (M, 4) and labels (M,) per patch."""
    comp = {line.name: 1.0 for line in DEFAULT_LINES}
    xs, boxes, labels = [], [], []
    for _ in range(n_fields):
        field = make_field(rng, comp, 40, shape=(512, 512))
        ps = extract_patches(field.image, field.masks, size=P)
        b = boxes_to_patch(field.boxes, ps.table, size=P)
        for row in range(len(ps.patches)):
            sel = b[b.patch_row == row]
            boxes.append(sel[["x1", "y1", "x2", "y2"]].to_numpy(np.float32).reshape(-1, 4))
            labels.append(sel["cls"].to_numpy(np.int64))
        xs.append(ps.patches)
    return np.concatenate(xs), boxes, labels


def augment(x: torch.Tensor, boxes: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal/vertical flip and transpose of one (3, P, P) patch, box-exact."""
    b = boxes.clone()
    if torch.rand(1, generator=gen) < 0.5:
        x = x.flip(-1)
        b[:, [0, 2]] = P - b[:, [2, 0]]
    if torch.rand(1, generator=gen) < 0.5:
        x = x.flip(-2)
        b[:, [1, 3]] = P - b[:, [3, 1]]
    if torch.rand(1, generator=gen) < 0.5:
        x = x.transpose(-1, -2)
        b = b[:, [1, 0, 3, 2]]
    return x.contiguous(), b


def evaluate(det: SignalDetector, x: np.ndarray, boxes, labels, count_threshold: float = 0.5) -> dict:
    """AP@0.5 per class, exact-count accuracy per class, Cohn-rule agreement."""
    dets = []
    for i in range(0, len(x), 64):
        dets += det.detect(torch.from_numpy(x[i:i + 64]))
    out: dict = {}
    for c, name in ((1, "nmi"), (2, "mycn"), (3, "cluster")):
        pb = [d["boxes"][d["labels"] == c].numpy() for d in dets]
        ps = [d["scores"][d["labels"] == c].numpy() for d in dets]
        gb = [b[lab == c] for b, lab in zip(boxes, labels)]
        out[f"ap50_{name}"] = average_precision(pb, ps, gb)
    pred = count_detections(dets, count_threshold).numpy()
    true = np.stack([np.bincount(lab - 1, minlength=3)[:3] for lab in labels])
    for k, name in enumerate(("nmi", "mycn", "cluster")):
        out[f"count_exact_{name}"] = float(np.mean(pred[:, k] == true[:, k]))
        out[f"count_mae_{name}"] = float(np.mean(np.abs(pred[:, k] - true[:, k])))
    out["rule_agreement"] = float(np.mean(is_amplified(pred[:, 0], pred[:, 1], pred[:, 2])
                                          == is_amplified(true[:, 0], true[:, 1], true[:, 2])))
    out["map50"] = float(np.nanmean([out["ap50_nmi"], out["ap50_mycn"], out["ap50_cluster"]]))
    return out


def anchor_coverage(det: SignalDetector, boxes, labels) -> dict:
    """Best-anchor IoU statistics of the ground-truth boxes (see module docstring)."""
    from torchvision.ops import box_iou

    det.eval()
    r = det.retinanet
    with torch.inference_mode():
        images, _ = r.transform([torch.zeros(3, P, P)])
        feats = list(r.backbone(images.tensors).values())
        anchors = r.anchor_generator(images, feats)[0]
    best_iou, n_pos, collide, cls = [], [], [], []
    for b, lab in zip(boxes, labels):
        if not len(b):
            continue
        iou = box_iou(torch.from_numpy(b), anchors)
        best, arg = iou.max(dim=1)
        best_iou.append(best.numpy())
        n_pos.append((iou >= 0.5).sum(dim=1).numpy())
        shared = np.bincount(arg.numpy(), minlength=len(anchors))[arg.numpy()] > 1
        collide.append(shared)
        cls.append(lab)
    best_iou, n_pos, collide, cls = map(np.concatenate, (best_iou, n_pos, collide, cls))
    out = {"n_anchors": len(anchors)}
    for c, name in ((1, "nmi"), (2, "mycn"), (3, "cluster")):
        m = cls == c
        out[f"iou50_{name}"] = float(np.mean(best_iou[m] >= 0.5))
        out[f"iou30_{name}"] = float(np.mean(best_iou[m] >= 0.3))
        out[f"median_best_iou_{name}"] = float(np.median(best_iou[m]))
        out[f"positives_per_box_{name}"] = float(np.mean(n_pos[m]))
        out[f"collide_{name}"] = float(np.mean(collide[m]))
    return out


def gflops(det: SignalDetector) -> float:
    det.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        det(torch.rand(4, 3, P, P))
    return fc.get_total_flops() / 4 / 1e9


def train_and_eval(name: str, cfg: DetectorConfig, data, steps: int, batch: int, seed: int) -> dict:
    (xtr, btr, ltr), (xte, bte, lte) = data
    torch.manual_seed(seed)
    det = SignalDetector(cfg, P)
    opt = torch.optim.Adam(det.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    det.train()
    t0 = time.perf_counter()
    losses = []
    for step in range(steps):
        idx = torch.randint(len(xtr), (batch,), generator=gen).tolist()
        ims, tg = [], []
        for i in idx:
            im, b = augment(torch.from_numpy(xtr[i]), torch.from_numpy(btr[i]), gen)
            ims.append(im)
            tg.append({"boxes": b, "labels": torch.from_numpy(ltr[i].copy())})
        loss_dict = det(torch.stack(ims), tg)
        loss = sum(loss_dict.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 50 == 0:
            print(f"  {name} step {step + 1}/{steps} loss {np.mean(losses[-50:]):.3f}", flush=True)
    train_s = time.perf_counter() - t0
    res = evaluate(det, xte, bte, lte)
    res.update(train_steps=steps, train_seconds=train_s, final_loss=float(np.mean(losses[-50:])))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", action="store_true", help="also train and evaluate each candidate")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--train-fields", type=int, default=16)
    ap.add_argument("--test-fields", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="candidate names (default: all)")
    ap.add_argument("--out", default="bench/results/detectability.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = seed_everything(args.seed)
    test = make_data(args.test_fields, rng)
    train = make_data(args.train_fields, rng) if args.train else test
    print(f"train patches {len(train[0])}, test patches {len(test[0])}", flush=True)
    results = {}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.only or CANDIDATES:
        print(f"candidate {name}", flush=True)
        torch.manual_seed(args.seed)
        det = SignalDetector(CANDIDATES[name], P)
        results[name] = {"config": dataclasses.asdict(CANDIDATES[name]), "gflops_per_patch": gflops(det),
                         **anchor_coverage(det, test[1], test[2])}
        if args.train:
            results[name].update(train_and_eval(name, CANDIDATES[name], (train, test), args.steps, args.batch,
                                                args.seed))
        print(json.dumps({name: results[name]}, indent=1), flush=True)
        out.write_text(json.dumps({"settings": vars(args), "n_train": len(train[0]) if args.train else 0,
                                   "n_test": len(test[0]),
                                   "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
