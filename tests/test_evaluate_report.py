"""Evaluation metrics on hand-computed examples, the evaluation driver on a hand-made
benchmark folder (models replaced by a transparent fake), and the written report."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import training.evaluate as ev
from genuine_core.errors import InputError
from genuine_core.stats import wilson_interval
from training.metrics import average_precision, binary_metrics, box_iou, count_accuracy, crossing, true_counts
from training.report import MD_NAME, JSON_NAME, ordering_sentence, render_markdown, write_report


# ------------------------------------------------------------------ metrics by hand
def test_binary_metrics_hand_example():
    m = binary_metrics([1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0])
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 1, 2, 1)
    assert m.tpr == pytest.approx(2 / 3) and m.tnr == pytest.approx(2 / 3)
    assert m.precision == pytest.approx(2 / 3) and m.f1 == pytest.approx(2 / 3)
    assert m.accuracy == pytest.approx(4 / 6)
    only_neg = binary_metrics([0, 1], [0, 0])
    assert np.isnan(only_neg.tpr) and only_neg.tnr == 0.5 and only_neg.to_dict()["tpr"] is None
    with pytest.raises(ValueError):
        binary_metrics([0, 1], [0])
    with pytest.raises(ValueError):
        binary_metrics([0, 2], [0, 1])


def test_average_precision_hand_example():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)]
    pred = [np.array([[0, 0, 10, 10], [50, 50, 60, 60], [21, 21, 30, 30]], float)]
    scores = [np.array([0.9, 0.8, 0.7])]
    # ranks: TP (P=1, R=.5), FP (P=.5, R=.5), TP (P=2/3, R=1) -> AP = .5*1 + .5*(2/3)
    assert average_precision(pred, scores, gt) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a duplicate of a matched box is a false positive
    assert average_precision([np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)], [np.array([0.9, 0.8])],
                             [np.array([[0, 0, 10, 10]], float)]) == pytest.approx(1.0)
    assert average_precision([np.zeros((1, 4))], [np.array([0.5])], [np.zeros((0, 4))]) != \
        average_precision([np.zeros((1, 4))], [np.array([0.5])], [np.zeros((0, 4))])  # NaN without ground truth
    assert average_precision([np.zeros((0, 4))], [np.zeros(0)], [np.array([[0, 0, 4, 4]], float)]) == 0.0
    assert box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3]]))[0, 0] == pytest.approx(1 / 7)


def test_count_accuracy_and_crossing():
    c = count_accuracy(np.array([[2, 8, 0], [2, 3, 1]]), np.array([[2, 8, 0], [1, 3, 1]]))
    assert c["exact"] == 0.5 and c["accuracy"] == [0.5, 1.0, 1.0] and c["mae"] == [0.5, 0.0, 0.0]
    assert crossing([6, 7, 8, 9], [0.0, 0.2, 0.6, 1.0]) == pytest.approx(7.75)
    assert crossing([0, 1], [0.1, 0.2]) is None
    assert crossing([3, 4], [0.9, 1.0]) == 3.0


def test_true_counts_from_boxes():
    # two MYCN and a cluster in patch 0, one NMI in patch 2; a background class, a row out of range
    got = true_counts([0, 0, 0, 2, 1, 5], [2, 2, 3, 1, 0, 1], 3)
    assert got.tolist() == [[0, 2, 1], [0, 0, 0], [1, 0, 0]] and got.dtype == np.int64
    assert true_counts([], [], 2).tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="same length"):
        true_counts([0, 1], [1], 2)


def test_mixture_rows_raw_and_rogan_gladen():
    nuclei = pd.DataFrame({"sample": ["a"] * 10 + ["b"] * 10 + [""] * 3,
                           "true_label": [0] * 10 + [1] * 8 + [0] * 2 + [1] * 3})
    calls = np.array([0] * 9 + [1] + [1] * 7 + [0] * 3 + [1] * 3)
    nominal = {"a": 0.0, "b": 1.0}
    rows, summ = ev.mixture_rows(calls, nuclei, nominal, {"sensitivity": 0.9, "specificity": 0.9})
    assert [r["sample"] for r in rows] == ["a", "b"]  # the unassigned '' rows are left out
    a, b = rows
    assert a["pred_pct"] == pytest.approx(10) and a["diff_nominal"] == pytest.approx(10)
    assert a["diff_true"] == pytest.approx(10)
    assert b["pred_pct"] == pytest.approx(70) and b["true_pct"] == pytest.approx(80)
    assert b["diff_nominal"] == pytest.approx(-30) and b["diff_true"] == pytest.approx(-10)
    # Rogan-Gladen: (p + spec - 1) / (sens + spec - 1) = (0.1 + 0.9 - 1) / 0.8 = 0 and (0.7 - 0.1) / 0.8 = 0.75
    assert a["corrected_pct"] == pytest.approx(0) and b["corrected_pct"] == pytest.approx(75)
    assert b["corrected_low_pct"] <= 75 <= b["corrected_high_pct"]
    assert summ["mad_true"] == pytest.approx(10) and summ["max_abs_nominal"] == pytest.approx(30)
    assert summ["mad_true_corrected"] == pytest.approx((0 + 5) / 2)
    rows2, summ2 = ev.mixture_rows(calls, nuclei, nominal, {})
    assert "corrected_pct" not in rows2[0] and "mad_true_corrected" not in summ2


# ------------------------------------------------------------------ a hand-made benchmark folder
P = 16


def _split_rows(split: str, labels: list[int], rng, sample: str = "") -> tuple[pd.DataFrame, np.ndarray]:
    n = len(labels)
    patches = rng.uniform(0, 0.2, (n, 3, P, P)).astype(np.float16)
    patches[:, 1] += (np.array(labels, np.float16) * 0.6)[:, None, None]
    nuc = pd.DataFrame({
        "field_id": f"{split}_f0", "split": split, "sample": sample or split, "nucleus_id": np.arange(1, n + 1),
        "auto_label": labels, "true_label": labels, "patch_row": np.arange(n),
        "patch_y0": 0, "patch_x0": 0, "cell_line": ["L1" if v else "L0" for v in labels],
    })
    return nuc, patches


def make_fake_benchmark(root: Path) -> Path:
    """The files load_benchmark reads, with 'MNA' = bright green, one MYCN box per test nucleus."""
    rng = np.random.default_rng(0)
    (root / "patches").mkdir(parents=True)
    parts = []
    test_labels = [1, 1, 1, 0, 0, 0, 0, 1]
    test_labels_auto = [1, 1, 0, 0, 0, 1, 0, 1]  # two noisy auto labels
    for split, labels in (("train", [0, 1] * 6), ("val", [0, 1] * 3), ("test", test_labels)):
        nuc, p = _split_rows(split, labels, rng)
        if split == "test":
            nuc["auto_label"] = test_labels_auto
        np.save(root / "patches" / f"{split}.npy", p)
        parts.append(nuc)
    mix_parts, mix_p = [], []
    for sample, labels in (("mix_000", [0] * 6), ("mix_050", [1, 1, 1, 0, 0, 0])):
        nuc, p = _split_rows("mixture", labels, rng, sample)
        nuc["field_id"] = f"{sample}_f0"
        mix_parts.append(nuc)
        mix_p.append(p)
    mix = pd.concat(mix_parts, ignore_index=True)
    mix["patch_row"] = np.arange(len(mix))
    np.save(root / "patches" / "mixture.npy", np.concatenate(mix_p))
    nuclei = pd.concat(parts + [mix], ignore_index=True)
    nuclei.to_parquet(root / "nuclei.parquet", index=False)
    boxes = pd.DataFrame({"field_id": "test_f0", "nucleus_id": np.arange(1, 9), "cls": 2,
                          "x1": 2.0, "y1": 2.0, "x2": 6.0, "y2": 6.0})
    boxes.to_parquet(root / "boxes.parquet", index=False)
    (root / "summary.json").write_text(json.dumps({"mixtures": {"mix_000": {"target_fraction": 0.0},
                                                               "mix_050": {"target_fraction": 0.5}}}))
    (root / "config.json").write_text(json.dumps({"seed": 0, "size": {"name": "fake"}}))
    return root


class GreenModel:
    """A transparent fake: MNA when mean green > threshold; detections = one MYCN box."""

    def __init__(self, thr: float):
        self.thr = thr
        self.config = SimpleNamespace(detector=SimpleNamespace(score_thresh=0.05))


def _fake_predict(model, patches, batch_size=128, min_score=None, progress=True):
    green = patches[:, 1].reshape(len(patches), -1).mean(1)
    call = (green > model.thr).astype(int)
    n = len(patches)
    table = pd.DataFrame({"prob": call * 0.9 + 0.05, "prob_calibrated": call * 0.9 + 0.05, "call": call,
                          "det_nmi": 0, "det_mycn": 1, "det_cluster": 0})
    det = pd.DataFrame({"row": np.arange(n), "cls": 2, "x1": 2.0, "y1": 2.0, "x2": 6.0, "y2": 6.0, "score": 0.9})
    return SimpleNamespace(table=table, detections=det, embeddings=np.zeros((n, 2), np.float32))


def _model_folder(root: Path, name: str, kind: str, beta: float | None, thr: float) -> Path:
    f = root / name
    f.mkdir(parents=True)
    (f / "config.json").write_text(json.dumps({"kind": kind, "preset": "tiny", "temperature": 1.0, "thr": thr}))
    (f / "metrics.json").write_text(json.dumps({"validation": {"sensitivity": 1.0, "specificity": 1.0,
                                                               "n_positive": 3, "n_negative": 3}}))
    if beta is not None:
        (f / "train_config.json").write_text(json.dumps({"beta": beta, "epochs_run": 2, "wall_seconds": 1.5}))
    (f / "history.json").write_text(json.dumps([{"epoch": 1, "train_loss": 0.7, "val_loss": 0.6, "val_acc": 0.5},
                                                {"epoch": 2, "train_loss": 0.5, "val_loss": 0.4, "val_acc": 0.9}]))
    return f


@pytest.fixture()
def fake_env(tmp_path, monkeypatch):
    bench = make_fake_benchmark(tmp_path / "bench")
    models = [_model_folder(tmp_path / "models", "genuine_b02", "genuine", 0.2, 0.3),
              _model_folder(tmp_path / "models", "resnet_b02", "resnet", 0.2, 0.05),
              _model_folder(tmp_path / "models", "detector", "detector", None, 0.3)]
    monkeypatch.setattr(ev, "load_model", lambda folder: GreenModel(json.loads((folder / "config.json")
                                                                               .read_text())["thr"]))
    monkeypatch.setattr(ev, "run_predict", _fake_predict)
    return bench, models


def test_evaluate_on_a_hand_made_benchmark(fake_env, tmp_path):
    bench, models = fake_env
    res = ev.evaluate(models, bench, probes=False)
    g, r, d = res["models"]
    # the green model is right on truth, and wrong on exactly the 2 noisy auto labels
    assert g["test_truth"]["accuracy"] == 1.0
    assert g["test_auto"]["accuracy"] == pytest.approx(6 / 8)
    assert g["test_auto"]["tp"] == 3 and g["test_auto"]["fp"] == 1
    # the low-threshold "ResNet" calls everything MNA
    assert r["test_truth"]["tpr"] == 1.0 and r["test_truth"]["tnr"] == 0.0
    assert [m["sample"] for m in g["mixtures"]] == ["mix_000", "mix_050"]
    assert g["mixtures"][1]["pred_pct"] == pytest.approx(50) and g["mixture_summary"]["mad_true"] == 0
    assert r["mixtures"][0]["diff_nominal"] == pytest.approx(100)
    assert d["detector"]["ap50"]["mycn"] == pytest.approx(1.0) and d["detector"]["count_accuracy"]["exact"] == 1.0
    assert d["beta"] is None and g["beta"] == 0.2
    assert res["ordering"]["holds"] is True
    assert res["acceptance"]["model"] == "genuine_b02"
    checks = {c["target"]: c["ok"] for c in res["acceptance"]["checks"]}
    assert checks["ground-truth test accuracy >= 0.97"] is True
    assert checks["mean prediction crosses 0.5 between 7 and 9 MYCN (2 NMI)"] is False  # no probes run
    acc_check = res["acceptance"]["checks"][0]
    assert acc_check["n"] == 8 and acc_check["ci95"][0] == pytest.approx(wilson_interval(8, 8)[0])
    corrected = res["acceptance"]["corrected"]
    assert corrected["mad_true"] == g["mixture_summary"]["mad_true_corrected"]

    paths = write_report(res, tmp_path / "reports")
    names = {p.name for p in paths}
    assert {MD_NAME, JSON_NAME, "mixtures.png", "training_curves.png"} <= names
    md = (tmp_path / "reports" / MD_NAME).read_text()
    assert f"by {corrected['mad_true']:.2f} pp on average" in md
    assert f"| 1.000 (95 % CI {acc_check['ci95'][0]:.3f}-1.000, n = 8) | yes |" in md
    # Table 1 rows: GENUINE / ResNet / detector columns at beta 0.2
    assert "| Metric | GENUINE b=0.2 | ResNet b=0.2 | RetinaNet (counts) |" in md
    assert "| Accuracy | **75.00** | 50.00 | **75.00** |" in md  # vs auto labels
    assert "| Accuracy | **100.00** | 50.00 | **100.00** |" in md  # vs truth
    assert "| TNR | **100.00** | 0.00 | **100.00** |" in md
    assert "| mix_050 | 50 | 50.0 | +0.00 | +50.00 | +0.00 |" in md
    assert "paper's ordering holds here" in md
    back = json.loads((tmp_path / "reports" / JSON_NAME).read_text())
    assert back["models"][0]["test_truth"]["accuracy"] == 1.0


def test_probe_curve_and_figure(fake_env, tmp_path):
    xs = [0.0, 1.0, 2.0]
    patches = [np.full((4, 3, P, P), v, np.float32) for v in (0.1, 0.25, 0.5)]
    curve = ev.probe_curve(GreenModel(0.3), xs, patches)
    assert curve["mean_call"] == [0.0, 0.0, 1.0] and curve["crossing"] == pytest.approx(1.5)
    res = {"meta": {}, "models": [{"name": "g", "label": "GENUINE", "kind": "genuine", "beta": 0.0,
                                   "probe_count": curve, "probe_size": curve}]}
    paths = write_report(res, tmp_path / "r")
    assert (tmp_path / "r" / "fig4_mycn_count.png").stat().st_size > 1000
    md = (tmp_path / "r" / MD_NAME).read_text()
    assert "| 0.5 crossing | 1.50 |" in md
    assert any(p.name == "fig4_signal_size.png" for p in paths)
    # a curve that never crosses says why: it stays below, or it already starts at/above 0.5
    high = ev.probe_curve(GreenModel(0.05), xs, patches)
    low = ev.probe_curve(GreenModel(0.9), xs, patches)
    assert high["crossing"] == 0.0 and low["crossing"] is None
    res["models"] = [dict(res["models"][0], probe_count=high), dict(res["models"][0], name="h", probe_count=low)]
    write_report(res, tmp_path / "r2")
    assert "| 0.5 crossing | none: 1.00 already at 0.0 | never reaches 0.5 |" in (tmp_path / "r2" / MD_NAME).read_text()


def test_evaluate_rejects_bad_folders(tmp_path, fake_env):
    bench, models = fake_env
    with pytest.raises(InputError):
        ev.evaluate(models, tmp_path / "nope", probes=False)
    with pytest.raises(InputError):
        ev.evaluate([tmp_path / "not_a_model"], bench, probes=False)


def test_ordering_sentence_when_it_fails():
    mk = lambda kind, acc, mad: {"kind": kind, "beta": 0.2, "test_truth": {"accuracy": acc},  # noqa: E731
                                 "mixture_summary": {"mad_true": mad}}
    o = ordering_sentence({"models": [mk("genuine", 0.9, 5.0), mk("resnet", 0.95, 4.0)]})
    assert o["holds"] is False and "does not hold" in o["sentence"] and "90.00" in o["sentence"]
    assert ordering_sentence({"models": []})["holds"] is None


def test_ordering_sentence_states_every_beta_and_judges_the_noisiest():
    mk = lambda kind, beta, acc, mad: {"kind": kind, "beta": beta, "test_truth": {"accuracy": acc},  # noqa: E731
                                       "mixture_summary": {"mad_true": mad}}
    o = ordering_sentence({"models": [mk("genuine", 0.0, 0.90, 6.0), mk("resnet", 0.0, 0.95, 4.0),
                                      mk("genuine", 0.2, 0.94, 8.0), mk("resnet", 0.2, 0.89, 15.0)]})
    assert o["beta"] == 0.2 and o["holds"] is True
    assert [b["beta"] for b in o["by_beta"]] == [0.2, 0.0] and o["by_beta"][1]["holds"] is False
    first, second = o["sentence"].split("At label noise beta = ")[1:]
    assert first.startswith("0.2, the paper's ordering holds") and second.startswith("0, the paper's ordering does not hold")


def test_ordering_sentence_says_when_it_was_judged_on_few_test_nuclei():
    mk = lambda kind, acc, mad, n: {"kind": kind, "beta": 0.2, "mixture_summary": {"mad_true": mad},  # noqa: E731
                                    "test_truth": {"accuracy": acc, "n": n}}
    small = ordering_sentence({"models": [mk("genuine", 0.9, 3.0, 24), mk("resnet", 0.8, 5.0, 24)]})
    assert small["sentence"].startswith("At label noise beta = 0.2, the paper's ordering holds here (judged on only "
                                        "24 test nuclei, fewer than 200: too few to be sure): GENUINE reaches 90.00 %")
    assert small["holds"] is True and small["n_test"] == 24
    enough = ordering_sentence({"models": [mk("genuine", 0.8, 6.0, 200), mk("resnet", 0.9, 5.0, 200)]})
    assert enough["sentence"].startswith("At label noise beta = 0.2, the paper's ordering does not hold here: GENUINE")
    # the shipped report (600 test nuclei) reads as it was written: reports/evaluation.md needs no regeneration
    shipped = json.loads((Path(__file__).resolve().parents[1] / "reports" / JSON_NAME).read_text())
    assert ordering_sentence(shipped)["sentence"] == shipped["ordering"]["sentence"]
    assert "too few" not in shipped["ordering"]["sentence"]


def test_models_table_says_when_the_speed_is_mostly_warm_up():
    model = {"name": "g", "label": "GENUINE", "kind": "genuine", "beta": 0.0, "speed": {"nuclei_per_s": 5.0, "n": 24}}
    note = "nuclei/s (eval) is the wall time of predicting the 24 test nuclei, model warm-up included"
    assert note in render_markdown({"meta": {}, "models": [model]}, [])
    model["speed"]["n"] = 200
    assert "warm-up" not in render_markdown({"meta": {}, "models": [model]}, [])
    # the shipped report, rendered again from its JSON (ordering recomputed), reads word for word as shipped
    reports = Path(__file__).resolve().parents[1] / "reports"
    shipped = json.loads((reports / JSON_NAME).read_text())
    again = render_markdown(dict(shipped, ordering=ordering_sentence(shipped)), shipped["figures"])
    assert again == (reports / MD_NAME).read_text()


def test_merge_results_recomputes_summary(fake_env, tmp_path):
    bench, models = fake_env
    a = ev.evaluate(models[:1], bench, probes=False)
    b = ev.evaluate(models[1:], bench, probes=False)
    assert a["ordering"]["holds"] is None  # GENUINE alone: no pair
    merged = ev.merge_results([json.loads(json.dumps(a)), json.loads(json.dumps(b))], shipped="genuine_b02")
    assert [m["name"] for m in merged["models"]] == ["genuine_b02", "resnet_b02", "detector"]
    assert merged["ordering"]["holds"] is True and merged["acceptance"]["model"] == "genuine_b02"
    # merging a merge keeps the original evaluation commands as provenance
    again = ev.merge_results([json.loads(json.dumps(merged))], command="genuine evaluate --merge m.json")
    assert again["meta"]["merged_from"] == merged["meta"]["merged_from"] == [a["meta"]["command"], b["meta"]["command"]]
    assert again["meta"]["command"] == "genuine evaluate --merge m.json"
    merged["meta"]["generated"] = "2020-01-01 00:00 UTC"
    assert ev.merge_results([merged])["meta"]["generated"] > "2026"  # a merge states when it was written
    # the report's header names the commands without repeating the notes' text
    again["meta"]["command"] = "genuine evaluate --merge m.json --note 'long text' --out r"
    again["notes"] = ["long text"]
    md = render_markdown(again, [])
    assert "by `genuine evaluate --merge m.json --note ... --out r`" in md and md.count("long text") == 1
    assert f"- `{a['meta']['command']}`" in md
    other = json.loads(json.dumps(b))
    other["meta"]["data"] = "elsewhere"  # the same benchmark under another path merges
    assert len(ev.merge_results([a, other])["models"]) == len(a["models"]) + len(b["models"])
    other["meta"]["benchmark_seed"] = 9  # another benchmark, whatever its folder is called
    with pytest.raises(InputError, match="different benchmarks"):
        ev.merge_results([a, other])
    with pytest.raises(InputError):
        ev.merge_results([])


def test_merge_recomputes_corrected_mixture_columns_from_their_counts():
    """A report merged after the estimator changed carries the current intervals; the raw numbers stay."""
    from genuine_core.stats import rogan_gladen

    validation = {"sensitivity": 0.95, "specificity": 0.9, "n_positive": 120, "n_negative": 180}
    row = {"sample": "mix_025", "n": 200, "nominal_pct": 25.0, "true_pct": 22.0, "pred_pct": 30.0,
           "diff_nominal": 5.0, "diff_true": 8.0, "corrected_pct": 1.0, "corrected_low_pct": 0.5,
           "corrected_high_pct": 1.5, "corrected_diff_true": -21.0, "corrected_diff_nominal": -24.0}
    part = {"meta": {"benchmark_seed": 0, "command": "genuine evaluate --models m"},
            "models": [{"name": "m", "kind": "genuine", "beta": 0.0, "validation": validation,
                        "mixtures": [row], "mixture_summary": {"mad_true": 8.0},
                        "test_truth": {"accuracy": 0.97, "n": 100, "tp": 50, "tn": 47}}]}
    merged = ev.merge_results([part])["models"][0]
    est = rogan_gladen(60, 200, 0.95, 0.9, n_positive=120, n_negative=180)
    r = merged["mixtures"][0]
    assert (r["corrected_low_pct"], r["corrected_pct"], r["corrected_high_pct"]) == pytest.approx(
        (100 * est.low, 100 * est.estimate, 100 * est.high))
    assert r["corrected_diff_true"] == pytest.approx(100 * est.estimate - 22.0) and r["diff_true"] == 8.0
    assert merged["mixture_summary"]["mad_true_corrected"] == pytest.approx(abs(100 * est.estimate - 22.0))
    assert part["models"][0]["mixtures"][0]["corrected_pct"] == 1.0  # the input is not changed


def test_heldout_accuracy_pools_splits_with_ci_lines_and_agreement(fake_env, tmp_path, capsys):
    from training import heldout_accuracy as ha

    bench, (green, all_mna, _) = fake_env
    res = ha.heldout_accuracy(bench, [green, all_mna])
    assert res["n"] == 12 + 6 + 8 and res["splits"] == ["train", "val", "test"]
    g, r = res["models"][str(green)], res["models"][str(all_mna)]
    assert g["accuracy"] == 1.0 and g["accuracy_ci95"] == pytest.approx(list(wilson_interval(26, 26)))
    n_neg = 6 + 3 + 4
    assert r["tnr"] == 0.0 and r["errors_by_line"] == {"L0": {"n": n_neg, "errors": n_neg}, "L1": {"n": 13, "errors": 0}}
    assert res["agreement"][f"{green} | {all_mna}"] == pytest.approx(13 / 26)
    assert ha.main(["--data", str(bench), "--models", str(green), "--out", str(tmp_path / "h.json")]) == 0
    out = capsys.readouterr().out
    assert "26 nuclei of" in out and "| 1.0000 |" in out and "errors L0" in out
    assert json.loads((tmp_path / "h.json").read_text())["models"][str(green)]["tp"] == 13
    with pytest.raises(SystemExit) as stop:
        ha.main(["--data", str(tmp_path / "nope"), "--models", str(green)])
    assert stop.value.code == 2 and "not a synthetic benchmark" in capsys.readouterr().err


def test_cli_evaluate_out_naming_a_file_is_refused_before_any_work(tmp_path, fake_env, capsys, monkeypatch):
    from genuine_core.cli import main

    bench, models = fake_env
    monkeypatch.setattr(ev, "evaluate", lambda *a, **kw: pytest.fail("evaluated before checking --out"))
    target = tmp_path / "FILE"
    target.write_text("keep")
    code = main(["evaluate", "--models", *map(str, models), "--data", str(bench), "--out", str(target)])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: --out {target} is not a folder (a file of that name exists)"
    assert target.read_text() == "keep"


def test_report_into_an_earlier_report_folder_leaves_no_stale_figure(tmp_path):
    out = tmp_path / "r"
    curve = {"x": [0.0, 1.0], "mean_call": [0.0, 1.0], "crossing": 0.5}
    history = [{"epoch": 1, "train_loss": 0.7, "val_loss": 0.6, "val_acc": 0.5}]
    first = {"meta": {}, "models": [{"name": "g", "label": "GENUINE", "kind": "genuine", "beta": 0.0,
                                     "probe_count": curve, "probe_size": curve, "training": {"history": history}}]}
    write_report(first, out)
    (out / "notes.txt").write_text("mine")  # not the report's: kept
    assert {"fig4_mycn_count.png", "fig4_signal_size.png", "training_curves.png"} <= {p.name for p in out.iterdir()}
    second = {"meta": {}, "models": [{"name": "g", "label": "GENUINE", "kind": "genuine", "beta": 0.0}]}
    paths = write_report(second, out)  # e.g. --no-probes, a model without history
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in paths] + ["notes.txt"])
    assert not (out / "fig4_mycn_count.png").exists() and not (out / "training_curves.png").exists()
    assert "fig4_mycn_count.png" not in (out / MD_NAME).read_text()


def test_a_model_with_a_corrupt_config_is_reported_as_altered(fake_env, tmp_path):
    import shutil

    from genuine_core.errors import ModelLoadError

    bench, _ = fake_env
    folder = tmp_path / "ratio_cpu"
    shutil.copytree(Path(__file__).resolve().parents[1] / "models" / "ratio_cpu", folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="checksum mismatch for config.json"):
        ev.evaluate([folder], bench, probes=False)


def test_cli_evaluate_shows_progress_on_stderr_unless_quiet_and_the_numbers_do_not_change(fake_env, tmp_path,
                                                                                           capsys, monkeypatch):
    from genuine_core.cli import main

    bench, models = fake_env
    bars = []  # the predictions' own per-batch bars follow --quiet too

    def predict(*args, progress=True, **kw):
        bars.append(progress)
        return _fake_predict(*args, **kw)

    monkeypatch.setattr(ev, "run_predict", predict)
    base = ["evaluate", "--models", *map(str, models[:2]), "--data", str(bench), "--probe-n", "2"]
    assert main([*base, "--out", str(tmp_path / "shown")]) == 0
    err = capsys.readouterr().err
    assert "evaluate: 100%" in err and "9/9" in err  # probe nuclei + 2 models x (test, mixtures, 2 probe sweeps)
    assert "resnet_b02: signal size probes" in err and set(bars) == {True}
    bars.clear()
    assert main([*base, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capsys.readouterr().err == "" and bars and set(bars) == {False}
    shown, quiet = (json.loads((tmp_path / name / JSON_NAME).read_text()) for name in ("shown", "quiet"))
    for res in (shown, quiet):
        for m in res["models"]:
            m.pop("speed")
    assert shown["models"] == quiet["models"] and shown["ordering"] == quiet["ordering"]
    assert shown["models"][0]["probe_count"]["mean_call"]  # the probe curves were computed


def test_cli_evaluate_quiet_help_says_what_it_turns_off(capsys):
    from genuine_core.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--quiet no progress bar and no INFO lines (each model's summary line); warnings and errors still " \
           "print" in help_text
