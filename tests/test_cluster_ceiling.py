"""bench/bench_cluster_ceiling.py: the Cohn-rule oracle and a tiny end-to-end run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genuine_core.rules import is_amplified
from genuine_core.synth import make_benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_cluster_ceiling as ceiling  # noqa: E402

SPLITS = ["train", "val", "test"]
DETECTOR = Path(__file__).resolve().parents[1] / "models" / "detector_cpu"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ceiling") / "tiny"
    make_benchmark(out, seed=4, size="tiny", progress=False)
    return out


def test_rule_oracle_is_exact_with_true_clusters_and_counts_clusters_as_singles_otherwise(bench):
    parts = ceiling.load_splits(bench, SPLITS)
    crops, boxes = ceiling.signal_crops(parts, crop=16)
    nuclei = pd.concat([part.nuclei for part in parts.values()], ignore_index=True)
    assert crops.shape == (len(boxes), 3, 16, 16) and boxes.is_cluster.sum() > 0
    acc, errors = ceiling.rule_accuracy(nuclei, boxes, boxes.is_cluster.to_numpy().astype(bool))
    assert acc == 1.0 and sum(errors.values()) == 0
    # no cluster call: every cluster counts as one more MYCN signal
    as_singles = is_amplified(nuclei.n_nmi, nuclei.n_mycn + nuclei.n_cluster, 0)
    expected = float((as_singles == nuclei.true_label).mean())
    assert expected < 1.0
    assert ceiling.rule_accuracy(nuclei, boxes, np.zeros(len(boxes), bool))[0] == pytest.approx(expected)


def test_end_to_end_writes_config_sweep_and_best(bench, tmp_path):
    out = tmp_path / "ceiling.json"
    ceiling.main(["--train", str(bench), "--test", str(bench), "--epochs", "1", "--width", "4", "--crop", "16",
                  "--threads", "1", "--detector", str(DETECTOR), "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["config"]["width"] == 4 and res["perfect_cluster_calls_accuracy"] == 1.0
    for name in ("crop_net", "detector"):
        sweep = res[name]
        assert 0.0 <= sweep["box_auc"] <= 1.0
        assert sweep["best_accuracy"] == max(sweep["accuracy_by_threshold"].values())
        assert sum(sweep["best_errors_by_line"].values()) == round((1 - sweep["best_accuracy"]) * res["n_test_nuclei"])
    # the trained detector tells clusters from single signals well even on this tiny benchmark
    assert res["detector"]["box_auc"] > 0.9
