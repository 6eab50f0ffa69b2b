"""Cost of MC-dropout uncertainty in ``genuine_core.inference.predict`` (nuclei per second, one run).

Three configurations of the shipped GENUINE model on the same random patches, interleaved over rounds so
machine load hits them alike: no MC passes; 10 passes with per-patch dropout seeds (the product path
since 2026-12-05: a nucleus' uncertainty does not depend on what else is in its batch); 10 passes
drawn for the whole batch at once (the path before). Reports the best and median round of each and the
ratios to the batched path.

Usage: ``python -W ignore bench/bench_mc_dropout.py [--n 1024] [--rounds 3] [--model models/genuine_cpu]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from genuine_core import inference
from genuine_core.models import load_model


def _batched_mc_logits(model, features, x, mc_samples, seed):
    """The earlier path: ``mc_samples`` dropout masks drawn for the whole batch, ``(mc_samples, N)``."""
    with model.mc_dropout():
        return torch.stack([model.head(features)[0] for _ in range(mc_samples)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1024, help="patches per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="models/genuine_cpu")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)
    patches = np.random.default_rng(0).random((args.n, 3, model.config.patch_size, model.config.patch_size),
                                              dtype=np.float32)
    per_patch = inference._mc_logits
    configs = {"no MC": (0, per_patch), "MC 10, per-patch seeds": (10, per_patch),
               "MC 10, batched (before)": (10, _batched_mc_logits)}
    inference.predict(model, patches[:64], progress=False)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in configs}
    try:
        for _ in range(args.rounds):
            for name, (mc, path) in configs.items():
                inference._mc_logits = path
                t = time.perf_counter()
                inference.predict(model, patches, mc_samples=mc, progress=False)
                rates[name].append(args.n / (time.perf_counter() - t))
    finally:
        inference._mc_logits = per_patch
    ref = max(rates["MC 10, batched (before)"])
    for name, r in rates.items():
        print(f"{name:26s} best {max(r):6.1f} nuclei/s  median {statistics.median(r):6.1f}  "
              f"best / batched {max(r) / ref:.2f}")


if __name__ == "__main__":
    main()
