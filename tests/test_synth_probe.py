"""Probe patches (paper 4.3) and the ``genuine synth`` command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from genuine_core.cli import main
from genuine_core.rules import is_amplified
from genuine_core.synth import make_probe, synthetic_backgrounds


@pytest.fixture(scope="module")
def backgrounds():
    return synthetic_backgrounds(np.random.default_rng(0), 12, patch_size=96)


def test_backgrounds_are_dapi_only(backgrounds):
    assert backgrounds.shape == (12, 3, 96, 96)
    assert backgrounds[:, :2].max() == 0.0
    assert backgrounds[:, 2].max() <= 1.0 and (backgrounds[:, 2] > 0).mean() > 0.2


@pytest.mark.parametrize("n_nmi,n_mycn,size", [(2, 2, 3.5), (2, 8, 3.0), (1, 0, 4.0), (2, 3, 7.0)])
def test_probe_signals_inside_nucleus_with_boxes(backgrounds, n_nmi, n_mycn, size):
    pb = make_probe(backgrounds, n_nmi, n_mycn, size, n=10, rng=np.random.default_rng(1))
    assert pb.patches.shape == (10, 3, 96, 96) and pb.patches.dtype == np.float32
    assert 0.0 <= pb.patches.min() and pb.patches.max() <= 1.0
    mask = pb.patches[:, 2] > 0
    assert (pb.patches[:, :2][~np.broadcast_to(mask[:, None], pb.patches[:, :2].shape)] == 0).all()
    t = pb.table
    assert len(t) == 10 and (t["n_nmi"] == n_nmi).all() and (t["n_mycn"] == n_mycn).all()
    assert (t["n_nmi_visible"] <= n_nmi).all() and (t["n_mycn_visible"] + t["n_cluster_visible"] <= n_mycn).all()
    assert (t["true_label"] == is_amplified(t["n_nmi_visible"], t["n_mycn_visible"], t["n_cluster_visible"])).all()
    per = pb.boxes.groupby(["patch_row", "cls"]).size().unstack(fill_value=0).reindex(range(10), fill_value=0)
    assert (per.get(1, 0) == t["n_nmi_visible"]).all()
    for b in pb.boxes.itertuples():
        ch = 0 if b.cls == 1 else 1
        assert pb.patches[b.patch_row, ch, int(b.y1):int(b.y2), int(b.x1):int(b.x2)].max() > 0.3
        cy, cx = int((b.y1 + b.y2 - 1) // 2), int((b.x1 + b.x2 - 1) // 2)
        assert mask[b.patch_row, cy, cx]
    # more MYCN signals -> more green
    if n_mycn == 0:
        assert pb.patches[:, 1].max() == 0.0


def test_probe_accepts_dapi_with_masks_and_is_deterministic(backgrounds):
    dapi = backgrounds[:, 2]
    masks = dapi > 0
    a = make_probe(dapi, 2, 4, 3.0, n=5, rng=np.random.default_rng(4), masks=masks)
    b = make_probe(backgrounds, 2, 4, 3.0, n=5, rng=np.random.default_rng(4))
    assert np.array_equal(a.patches, b.patches)
    pd.testing.assert_frame_equal(a.boxes, b.boxes)
    c = make_probe(backgrounds, 2, 4, 3.0, n=5, rng=np.random.default_rng(5))
    assert not np.array_equal(a.patches, c.patches)


def test_probe_default_batch_is_fifty(backgrounds):
    assert len(make_probe(backgrounds, 2, 2, 3.0, rng=np.random.default_rng(0)).patches) == 50


@pytest.mark.parametrize("kwargs", [
    dict(n_nmi=-1), dict(n_mycn=2.5), dict(n=0), dict(signal_size=0.0), dict(signal_size=100.0),
    dict(amplitude=(1.0, 0.5)),
])
def test_probe_rejects_bad_arguments(backgrounds, kwargs):
    args = dict(backgrounds=backgrounds, n_nmi=2, n_mycn=2, signal_size=3.0, n=3, rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(ValueError):
        make_probe(**args)


def test_probe_rejects_bad_backgrounds(backgrounds):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        make_probe(np.zeros((2, 4, 32, 32)), 2, 2, 3.0, rng=rng)
    with pytest.raises(ValueError, match="empty nucleus"):
        make_probe(np.zeros((2, 32, 32)), 2, 2, 3.0, rng=rng)
    with pytest.raises(ValueError):
        make_probe(backgrounds, 2, 2, 3.0, rng=rng, masks=np.ones((1, 8, 8), bool))


def test_cli_field_and_probe(tmp_path, capsys):
    assert main(["synth", "field", "--out", str(tmp_path / "f"), "--seed", "2", "--n-nuclei", "5",
                 "--shape", "256", "256", "--lines", "mna_hsr,nonmna_diploid"]) == 0
    nuclei = pd.read_parquet(tmp_path / "f" / "nuclei.parquet")
    assert set(nuclei["cell_line"]) <= {"mna_hsr", "nonmna_diploid"} and len(nuclei) == 5
    assert (tmp_path / "f" / "field.tif").is_file() and (tmp_path / "f" / "preview.png").is_file()
    out = tmp_path / "p.npz"
    assert main(["synth", "probe", "--out", str(out), "--mycn", "0-2", "--n", "3", "--n-backgrounds", "4"]) == 0
    z = np.load(out)
    assert z["patches"].shape == (9, 3, 96, 96)
    assert int(z["seed"]) == 0 and str(z["command"]).startswith("genuine synth probe --out ")  # provenance
    field = json.loads((tmp_path / "f" / "field.json").read_text())
    assert field["seed"] == 2 and field["command"].startswith("genuine synth field --out ")
    assert list(np.unique(z["table_n_mycn"])) == [0, 1, 2]


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert main(["synth", "field", "--out", str(tmp_path / "f"), "--lines", "no_such_line"]) == 2
    assert "unknown cell line" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "config.json").write_text('{"seed": 0, "size": {"name": "tiny"}}')  # an earlier benchmark
    assert main(["synth", "benchmark", "--out", str(tmp_path / "busy"), "--size", "tiny"]) == 2
    assert main(["synth", "benchmark", "--out", str(tmp_path / "j"), "--size", "tiny", "--acquisition-jitter", "3"]) == 2
    assert "--acquisition-jitter must be in [0, 2]" in capsys.readouterr().err and not (tmp_path / "j").exists()
    with pytest.raises(SystemExit) as bad:  # argparse refuses a normalisation it does not know
        main(["synth", "benchmark", "--out", str(tmp_path / "n"), "--normalisation", "flux"])
    assert bad.value.code == 2 and "invalid choice" in capsys.readouterr().err and not (tmp_path / "n").exists()
    assert main(["synth", "probe", "--out", str(tmp_path / "p.npz"), "--backgrounds", str(tmp_path / "busy" / "x")]) == 2


def test_probe_conditions_and_run_probe(backgrounds):
    from types import SimpleNamespace

    from genuine_core.synth.probe import PROBE_STYLE, probe_conditions, run_probe

    counts = probe_conditions("count", 2, (0, 10), 2, 0, (1.0, 4.0), 3, 3.0)
    assert counts["n_mycn"].tolist() == [0, 2, 4, 6, 8, 10] and set(counts["signal_size"]) == {3.0}
    sizes = probe_conditions("size", 2, (0, 10), 2, 8, (1.0, 4.0), 4, 3.0)
    assert sizes["signal_size"].tolist() == [1.0, 2.0, 3.0, 4.0] and set(sizes["n_mycn"]) == {8}
    same = probe_conditions("size", 2, (0, 10), 2, 8, (0.5, 0.5), 2, 3.0)  # equal ends: one condition
    assert same.to_dict("list") == {"n_nmi": [2], "n_mycn": [8], "signal_size": [0.5]}

    def predict(patches):  # a stand-in model: "MNA" when the green channel outweighs red 2x
        g, r = patches[:, 1].sum(axis=(1, 2)), patches[:, 0].sum(axis=(1, 2))
        prob = (g > 2 * r).astype(float)
        table = pd.DataFrame({"prob": 0.1 + 0.8 * prob, "prob_calibrated": prob, "call": prob.astype(int)})
        return SimpleNamespace(table=table, embeddings=np.stack([g, r], 1))

    seen = []
    out = run_probe(SimpleNamespace(predict=predict), backgrounds, counts, n=5, seed=0, spaced=True,
                    style=PROBE_STYLE, progress=lambda f, text: seen.append(f))
    res = out["results"]
    assert len(res) == 5 * len(counts) and out["embeddings"].shape == (len(res), 2)
    assert sorted(out["examples"]) == list(range(len(counts)))
    assert seen[0] == 0 and seen[-1] == 1.0
    assert np.allclose(res["prob"], 0.1 + 0.8 * res["prob_calibrated"])  # raw and calibrated both kept
    mean_call = res.groupby("n_mycn")["call"].mean()
    assert mean_call[0] == 0 and mean_call[10] == 1  # monotone extremes of the stand-in rule


@pytest.mark.parametrize("argv", [
    ["synth", "field", "--n-nuclei", "3", "--shape", "128", "128"],
    ["synth", "benchmark", "--size", "tiny"],
])
def test_cli_out_naming_a_file_is_one_line_exit_2(tmp_path, capsys, argv):
    target = tmp_path / "FILE"
    target.write_text("keep me")
    assert main([*argv, "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --out {target} is not a folder (a file of that name exists)"
    assert target.read_text() == "keep me"
    assert main([*argv, "--out", str(target / "sub")]) == 2  # below a file: refused as well
    assert "is a file, not a folder" in capsys.readouterr().err


def test_cli_field_refuses_to_replace_a_field_without_overwrite(tmp_path, capsys):
    args = ["synth", "field", "--out", str(tmp_path / "f"), "--n-nuclei", "3", "--shape", "128", "128"]
    assert main([*args, "--seed", "1"]) == 0
    before = (tmp_path / "f" / "field.tif").read_bytes()
    assert main([*args, "--seed", "2"]) == 2
    err = capsys.readouterr().err
    assert "already holds a field" in err and "--overwrite" in err and "overwrite=" not in err
    assert (tmp_path / "f" / "field.tif").read_bytes() == before
    assert main([*args, "--seed", "2", "--overwrite"]) == 0
    assert (tmp_path / "f" / "field.tif").read_bytes() != before


def test_cli_benchmark_non_empty_message_names_the_option_not_a_parameter(tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "config.json").write_text('{"seed": 0, "size": {"name": "tiny"}}')  # an earlier benchmark
    assert main(["synth", "benchmark", "--out", str(tmp_path / "busy"), "--size", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite" in err and "overwrite=True" not in err


@pytest.mark.parametrize("action, beta", [("benchmark", "0.9"), ("benchmark", "0.5"), ("benchmark", "-0.1"),
                                          ("field", "0.9")])
def test_cli_beta_range_is_the_one_train_accepts(tmp_path, capsys, action, beta):
    out = tmp_path / "o"
    assert main(["synth", action, "--out", str(out), "--size" if action == "benchmark" else "--n-nuclei",
                 "tiny" if action == "benchmark" else "3", "--beta", beta]) == 2
    assert "--beta must be in [0, 0.5)" in capsys.readouterr().err and not out.exists()
    from training.train import RunSpec  # the same range as genuine train

    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        RunSpec(kind="resnet", preset="tiny", data="d", out="o", beta=float(beta))


def test_cli_probe_reports_the_file_it_wrote_and_checks_patch_size(tmp_path, capsys):
    out = tmp_path / "x" / "bad"  # no .npz suffix, missing parent folder
    assert main(["synth", "probe", "--out", str(out), "--mycn", "0-1", "--n", "2", "--n-backgrounds", "2",
                 "--patch-size", "64"]) == 0
    real = tmp_path / "x" / "bad.npz"
    assert real.is_file() and not out.exists()
    assert capsys.readouterr().out.startswith(f"{real}: 4 probe patches")
    for size in ("4", "2000"):
        assert main(["synth", "probe", "--out", str(tmp_path / "p.npz"), "--patch-size", size]) == 2
        assert "--patch-size must be in [8, 1024]" in capsys.readouterr().err
    assert main(["synth", "probe", "--out", str(tmp_path), "--n-backgrounds", "2"]) == 2  # a folder
    assert "is a folder" in capsys.readouterr().err and not (tmp_path.parent / f"{tmp_path.name}.npz").exists()
    assert main(["synth", "probe", "--out", str(tmp_path / "p.npz"), "--n-backgrounds", "0"]) == 2
    assert "--n-backgrounds" in capsys.readouterr().err and not (tmp_path / "p.npz").exists()


def test_cli_probe_checks_every_count_and_size_before_any_work(tmp_path, capsys, monkeypatch):
    import genuine_core.synth.probe as probe

    monkeypatch.setattr(probe, "make_probe", lambda *a, **k: pytest.fail("probes drawn before the options were checked"))
    out = tmp_path / "p.npz"
    for options, message in ((["--mycn", "0-300"], "--mycn must be in [0, 200], got 300"),
                             (["--nmi", "1,250"], "--nmi must be in [0, 200], got 250"),
                             (["--signal-size", "3.5,60"], "--signal-size must be in (0, 12] px, got 60"),
                             (["--signal-size", "12.5"], "--signal-size must be in (0, 12] px, got 12.5"),
                             (["--signal-size", "nan"], "--signal-size must be in (0, 12] px, got nan")):
        assert main(["synth", "probe", "--out", str(out), "--n", "1", *options]) == 2
        assert capsys.readouterr().err.strip() == f"error: {message}"
    with pytest.raises(SystemExit) as exc:  # a range that would fill memory before any check
        main(["synth", "probe", "--out", str(out), "--mycn", "0-1000"])  # 1001 values
    assert exc.value.code == 2 and "at most 1000 values in a range" in capsys.readouterr().err
    for options in (["--patch-size", "1024", "--n", "10000", "--mycn", "3", "--n-backgrounds", "2"],
                    ["--patch-size", "1024", "--n-backgrounds", "10000", "--mycn", "3"]):
        assert main(["synth", "probe", "--out", str(out), *options]) == 2
        assert "GiB (at most 4 GiB)" in capsys.readouterr().err
    words = tmp_path / "words.npy"
    np.save(words, np.array(["a", "b"]))
    assert main(["synth", "probe", "--out", str(out), "--backgrounds", str(words)]) == 2
    assert "expected an (N, 3, P, P) or (N, P, P) array of numbers" in capsys.readouterr().err
    assert not out.exists()


def test_cli_benchmark_checks_the_jitter_before_announcing_its_work(tmp_path, capsys):
    for jitter in ("5", "nan"):
        assert main(["synth", "benchmark", "--out", str(tmp_path / "b"), "--acquisition-jitter", jitter]) == 2
        assert capsys.readouterr().err.strip() == f"error: --acquisition-jitter must be in [0, 2], got {jitter}"
    assert not (tmp_path / "b").exists()


def test_cli_benchmark_progress_on_stderr_and_quiet(tmp_path, capsys):
    assert main(["synth", "benchmark", "--out", str(tmp_path / "b"), "--size", "tiny", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "synth benchmark: 18 nuclei per cell line" in err and "nuc" in err  # start line + tqdm bar
    assert main(["synth", "benchmark", "--out", str(tmp_path / "q"), "--size", "tiny", "--workers", "1",
                 "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_cli_probe_refuses_to_write_over_its_file_unless_overwrite(tmp_path, capsys):
    args = ["synth", "probe", "--mycn", "0-1", "--n", "2", "--n-backgrounds", "2", "--patch-size", "32"]
    out = tmp_path / "p.npz"
    out.write_bytes(b"keep")
    for given in (out, tmp_path / "p"):  # without the suffix it names the file numpy would write
        assert main([*args, "--out", str(given)]) == 2
        assert capsys.readouterr().err.strip() == f"error: --out {out} already exists; pass --overwrite to replace it"
        assert out.read_bytes() == b"keep"
    assert main([*args, "--out", str(tmp_path / "p"), "--overwrite"]) == 0
    assert np.load(out)["patches"].shape == (4, 3, 32, 32)


def test_benchmark_and_field_never_replace_files_that_are_not_theirs(tmp_path, capsys):
    from genuine_core.cli import main

    proj = tmp_path / "proj"  # someone's folder: --overwrite replaces a benchmark, not this
    (proj / "patches").mkdir(parents=True)
    (proj / "patches" / "my_annotations.csv").write_text("d")
    (proj / "config.json").write_text("{}")
    for extra in ([], ["--overwrite"]):
        assert main(["synth", "benchmark", "--size", "tiny", "--out", str(proj), "--quiet", *extra]) == 2
        assert "holds config.json, patches, and is not a benchmark folder; give a new or empty folder" \
            in capsys.readouterr().err
    assert (proj / "patches" / "my_annotations.csv").read_text() == "d"
    bench = tmp_path / "bench"  # a benchmark: a field written over it would break it
    bench.mkdir()
    (bench / "config.json").write_text('{"seed": 0, "size": {"name": "tiny"}}')
    assert main(["synth", "field", "--out", str(bench), "--overwrite"]) == 2
    assert "holds a benchmark; write the field to another folder" in capsys.readouterr().err
    assert sorted(p.name for p in bench.iterdir()) == ["config.json"]


def test_touching_mycn_signals_merge_into_one_mycn_signal_not_a_cluster(backgrounds):
    """What the Probe page's "Signals may touch" help says: merged spots stay class MYCN."""
    pb = make_probe(backgrounds, 2, 40, 3.5, n=10, rng=np.random.default_rng(0))
    assert (pb.table["n_cluster_visible"] == 0).all() and (pb.boxes["cls"] != 3).all()
    assert (pb.table["n_mycn_visible"] < 40).all()  # merged: fewer visible MYCN signals than drawn


def test_cli_probe_backgrounds_from_an_npz_and_refused_ones_say_why(tmp_path, capsys):
    args = ["synth", "probe", "--mycn", "0-1", "--n", "2", "--patch-size", "32"]
    first = tmp_path / "first.npz"  # an earlier probe file: its patches carry the nuclei
    assert main([*args, "--n-backgrounds", "3", "--out", str(first)]) == 0
    np.save(tmp_path / "bg.npy", np.load(first)["patches"])
    for name, given in (("from_npz", first), ("from_npy", tmp_path / "bg.npy")):
        assert main([*args, "--seed", "4", "--backgrounds", str(given), "--out", str(tmp_path / name)]) == 0
    from_npz, from_npy = (np.load(tmp_path / f"{name}.npz")["patches"] for name in ("from_npz", "from_npy"))
    assert from_npz.shape == (4, 3, 32, 32) and np.array_equal(from_npz, from_npy)
    capsys.readouterr()
    other, empty = tmp_path / "other.npz", tmp_path / "empty.npy"
    np.savez(other, masks=np.zeros((2, 32, 32)))
    np.save(empty, np.zeros((0, 3, 96, 96), np.float32))
    out = tmp_path / "p.npz"
    for given, message in ((other, f"{other}: an .npz without a 'patches' array (it holds masks); --backgrounds "
                                   "takes an (N, 3, P, P) .npy or an .npz holding one as 'patches'"),
                           (empty, f"{empty}: holds no patches (shape (0, 3, 96, 96))")):
        assert main([*args, "--backgrounds", str(given), "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not out.exists()


def test_cli_probe_says_a_range_runs_backwards(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "probe", "--out", str(tmp_path / "p.npz"), "--mycn", "1,5-2"])
    assert exc.value.code == 2 and "5-2: the range runs backwards, write 2-5" in capsys.readouterr().err
    assert not (tmp_path / "p.npz").exists()


def test_genuine_probe_png_legend_lists_the_mean_call_first(tmp_path, monkeypatch):
    # matplotlib listed the error-bar curve (the mean call, the headline number) last
    import matplotlib.pyplot as plt

    from training import cli_probe

    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    curve = pd.DataFrame({"n_mycn": [0, 4], "n": 3, "mean_pred": [0.0, 1.0], "sem": 0.0, "mean_prob": [0.1, 0.9],
                          "truth": [0.0, 1.0]})
    cli_probe.plot({"curve": curve, "x": "n_mycn", "crossings": [2.0]}, "t", tmp_path / "p.png")
    labels = [t.get_text() for t in figs[0].axes[0].get_legend().get_texts()]
    assert labels[:2] == ["mean call (prediction)", "mean calibrated P(MNA)"] and (tmp_path / "p.png").exists()
