"""Inference throughput (nuclei per second) of every model kind, ``cpu`` vs ``paper`` preset, one run.

Each (preset, kind) runs ``genuine_core.inference.predict`` (the product path: batching,
model, detections, table) on random patches. Measurements are interleaved over rounds
(round r times every configuration once) so a change in machine load hits all of them
alike; the best round (closest to an idle machine: other jobs only ever slow a round
down) and the median round are reported, plus process CPU time per nucleus.
On a shared, busy machine the absolute numbers drop; a yardstick case (ResNet18 with
torchvision widths at 96 px, measured at ~210 patches/s on this machine when idle,
docs/DESIGN) is timed in the same rounds, and ``idle_estimate_nuclei_per_s`` scales
each result by ``210 / yardstick``. The ``paper`` preset gets a few small
batches only. Random weights leave the detector with almost no boxes above its score
threshold, which makes post-processing cheap; the ``genuine/dense`` row forces every
candidate box through NMS (``score_thresh=0``) as an upper bound of that cost.

Run from the repo root (writes bench/results/inference.json)::

    python bench/bench_inference.py
    python bench/bench_inference.py --models models/genuine_cpu models/resnet_cpu   # trained folders too
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from genuine_core.inference import predict
from genuine_core.models import (
    MODEL_KINDS,
    GenuineClassifier,
    build_model,
    preset_config,
)

YARDSTICK_IDLE_PER_S = 210.0


def gflops_per_patch(model: GenuineClassifier) -> float:
    p = model.config.patch_size
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model.infer(torch.rand(2, 3, p, p))
    return fc.get_total_flops() / 2 / 1e9


def make_cases(args) -> list[dict]:
    cases = []
    for preset, n, bs in (("cpu", args.cpu_patches, args.cpu_batch), ("paper", args.paper_patches, args.paper_batch)):
        for kind in MODEL_KINDS:
            cases.append({"name": f"{preset}/{kind}", "preset": preset, "kind": kind, "n": n, "batch": bs,
                          "model": build_model(preset_config(preset, kind))})
    dense = preset_config("cpu", "genuine")
    dense = dense.replace(detector=dense.detector.replace(score_thresh=0.0))
    cases.append({"name": "cpu/genuine/dense", "preset": "cpu", "kind": "genuine", "n": args.cpu_patches,
                  "batch": args.cpu_batch, "model": build_model(dense)})
    # yardstick: ResNet18 (torchvision widths) at 96 px, ~210 patches/s on this machine when idle
    ref = preset_config("cpu", "resnet")
    cases.append({"name": "reference/resnet18w64_96px", "preset": "reference", "kind": "resnet", "n": args.cpu_patches,
                  "batch": args.cpu_batch, "model": build_model(ref.replace(encoder=ref.encoder.replace(width=64)))})
    for folder in args.models:
        model = GenuineClassifier.from_folder(folder)
        cases.append({"name": f"folder:{folder}", "preset": model.config.preset, "kind": model.config.kind,
                      "n": args.cpu_patches if model.config.patch_size <= 128 else args.paper_patches,
                      "batch": args.cpu_batch, "model": model})
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--cpu-patches", type=int, default=128, help="patches per round, cpu preset")
    ap.add_argument("--cpu-batch", type=int, default=64)
    ap.add_argument("--paper-patches", type=int, default=32, help="patches per round, paper preset")
    ap.add_argument("--paper-batch", type=int, default=16)
    ap.add_argument("--models", nargs="*", default=[], help="model folders to measure as well")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/inference.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    cases = make_cases(args)
    data = {}
    for c in cases:
        p = c["model"].config.patch_size
        if (p, c["n"]) not in data:
            data[(p, c["n"])] = rng.random((c["n"], 3, p, p), dtype=np.float32)
        c["gflops"] = gflops_per_patch(c["model"])
        c["params"] = sum(t.numel() for t in c["model"].parameters())
        predict(c["model"], data[(p, c["n"])][: c["batch"]], batch_size=c["batch"], progress=False)  # warm-up
        c["times"], c["cpu"] = [], []
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for c in cases:
            x = data[(c["model"].config.patch_size, c["n"])]
            t0, cpu0 = time.perf_counter(), time.process_time()
            predict(c["model"], x, batch_size=c["batch"], progress=False)
            c["times"].append(time.perf_counter() - t0)
            c["cpu"].append(time.process_time() - cpu0)
            print(f"round {r + 1}/{args.rounds} {c['name']:28s} {c['n'] / c['times'][-1]:8.1f} nuclei/s", flush=True)
    load_after = os.getloadavg()

    results = []
    for c in cases:
        best, med = min(c["times"]), statistics.median(c["times"])
        results.append({"name": c["name"], "preset": c["preset"], "kind": c["kind"],
                        "patch_size": c["model"].config.patch_size, "batch_size": c["batch"],
                        "patches_per_round": c["n"], "rounds": args.rounds,
                        "nuclei_per_s_best": c["n"] / best, "nuclei_per_s_median": c["n"] / med,
                        "nuclei_per_cpu_s_median": c["n"] / statistics.median(c["cpu"]),
                        "gflops_per_patch": c["gflops"], "params": c["params"]})
    by = {r["name"]: r for r in results}
    yard = by["reference/resnet18w64_96px"]["nuclei_per_s_median"]
    for r in results:
        r["idle_estimate_nuclei_per_s"] = r["nuclei_per_s_median"] * YARDSTICK_IDLE_PER_S / yard
    speedup = {k: by[f"cpu/{k}"]["nuclei_per_s_median"] / by[f"paper/{k}"]["nuclei_per_s_median"]
               for k in MODEL_KINDS}
    speedup_best = {k: by[f"cpu/{k}"]["nuclei_per_s_best"] / by[f"paper/{k}"]["nuclei_per_s_best"]
                    for k in MODEL_KINDS}
    report = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads": args.threads, "loadavg_before": load_before, "loadavg_after": load_after,
                    "cuda": torch.cuda.is_available()},
        "settings": {k: v for k, v in vars(args).items()},
        "results": results,
        "speedup_cpu_vs_paper_median": speedup,
        "speedup_cpu_vs_paper_best": speedup_best,
        "targets": {"cpu_genuine_nuclei_per_s_ge_100": by["cpu/genuine"]["nuclei_per_s_best"] >= 100,
                    "cpu_genuine_idle_estimate_ge_100": by["cpu/genuine"]["idle_estimate_nuclei_per_s"] >= 100,
                    "cpu_genuine_speedup_ge_10x": min(speedup["genuine"], speedup_best["genuine"]) >= 10},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'model':28s} {'GFLOP':>7s} {'best/s':>8s} {'median/s':>9s} {'per cpu-s':>10s} {'idle est/s':>10s}")
    for r in results:
        print(f"{r['name']:28s} {r['gflops_per_patch']:7.2f} {r['nuclei_per_s_best']:8.1f} "
              f"{r['nuclei_per_s_median']:9.1f} {r['nuclei_per_cpu_s_median']:10.1f} "
              f"{r['idle_estimate_nuclei_per_s']:10.1f}")
    print("speedup cpu vs paper (median):", {k: round(v, 1) for k, v in speedup.items()})
    print("speedup cpu vs paper (best):  ", {k: round(v, 1) for k, v in speedup_best.items()})
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
