"""The ``paper`` preset (ResNet50 + RetinaNet-ResNet50-FPN, 192 px) cannot be trained to
convergence on a 2-core CPU. This script shows that it builds, that a few SGD steps of the
detector and of GENUINE give finite, decreasing losses on a fixed batch, and that
inference runs; it records the step times (the training budget of the paper preset here).

Usage::

    python bench/train_paper_smoke.py [--steps 3] [--batch 4] [--threads 1]

Writes ``bench/results/train_paper_smoke.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/train_paper_smoke.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.synth.probe import make_probe, synthetic_backgrounds
    from training import modelapi
    from training.augment import AugmentConfig, make_generator
    from training.datasets import ClassificationData, DetectionData
    from training.tasks import ClassifierTask, DetectorTask

    rng = np.random.default_rng(0)
    p = preset_config("paper", "genuine").patch_size
    bg = synthetic_backgrounds(rng, args.batch, patch_size=p, scale=2.0)
    half = args.batch // 2
    probes = [make_probe(bg, 2, 2, 6.0, half, rng), make_probe(bg, 2, 14, 6.0, args.batch - half, rng)]
    patches = np.concatenate([b.patches for b in probes]).astype(np.float32)
    labels = np.array([0] * half + [1] * (args.batch - half), np.int8)
    boxes, classes = [], []
    for b in probes:
        for r in range(len(b.patches)):
            g = b.boxes[b.boxes["patch_row"] == r]
            boxes.append(g[["x1", "y1", "x2", "y2"]].to_numpy(np.float32))
            classes.append(g["cls"].to_numpy(np.int64))
    result: dict = {"patch_size": p, "batch": args.batch, "threads": args.threads, "steps": args.steps}

    def run_steps(task, params, lr):
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
        losses, secs = [], []
        for _ in range(args.steps):
            task.model.train()
            t0 = time.perf_counter()
            loss, _, _ = task.train_batch(np.arange(args.batch), make_generator(0))
            opt.zero_grad()
            loss.backward()
            opt.step()
            secs.append(time.perf_counter() - t0)
            losses.append(loss.item())
        return losses, secs

    t0 = time.perf_counter()
    det_model = GenuineClassifier.from_config(preset_config("paper", "detector"))
    det = modelapi.trainable_detector(det_model)
    result["build_seconds"] = time.perf_counter() - t0
    dd = DetectionData(patches, boxes, classes)
    dl, ds = run_steps(DetectorTask(det, dd, dd, AugmentConfig.none(), lambda *_: None),
                       list(det.parameters()), 0.01)
    result["detector"] = {"losses": dl, "step_seconds": ds,
                          "params": sum(q.numel() for q in det.parameters())}
    modelapi.freeze_detector(det_model)

    model = GenuineClassifier.from_config(preset_config("paper", "genuine", dropout=0.0))
    model.load_detector(det_model.detector.state_dict())
    cd = ClassificationData(patches, labels, labels, labels, np.zeros(len(labels), bool), None, "train")
    gl, gs = run_steps(ClassifierTask(model, cd, cd, AugmentConfig.none(), lambda *_: None),
                       [q for q in model.parameters() if q.requires_grad], 1e-3)
    result["genuine"] = {"losses": gl, "step_seconds": gs, "params": sum(q.numel() for q in model.parameters())}

    from genuine_core.inference import predict

    t0 = time.perf_counter()
    pred = predict(model, patches, batch_size=args.batch, progress=False)
    secs = time.perf_counter() - t0
    result["inference"] = {"n": len(patches), "seconds": secs, "nuclei_per_s": len(patches) / secs,
                           "prob": pred.table["prob"].round(4).tolist()}
    result["ok"] = bool(all(math.isfinite(v) for v in dl + gl) and dl[-1] < dl[0] and gl[-1] < gl[0])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "inference"}, indent=1))
    return result


if __name__ == "__main__":
    main()
