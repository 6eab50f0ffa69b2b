"""The demo store builder, end to end on a miniature benchmark with tiny models (slow: UMAP's JIT)."""

from __future__ import annotations

from pathlib import Path

import pytest

from genuine_core.errors import InputError, StoreError


@pytest.mark.slow
def test_build_demo_end_to_end(tmp_path):
    from genuine_core.models import build_model, preset_config, save_model
    from store import review, summary
    from store import umap as umap_store
    from store.check import check_store
    from store.db import Store
    from store.demo import DemoConfig, build_demo

    models = tmp_path / "models"
    for kind in ("genuine", "resnet", "detector", "ratio"):
        save_model(build_model(preset_config("tiny", kind=kind)), models / kind)
    cfg = DemoConfig(nuclei_per_line=12, mixture_nuclei=6, nuclei_per_field=6, include_real=False, mc_samples=2)
    out = tmp_path / "demo" / "demo.duckdb"
    report = build_demo(out, cfg, model_dirs=[models], progress=False)
    assert report["failed"] == [] and out.is_file()
    assert not (tmp_path / "demo" / "demo.partial.duckdb").exists()
    assert sorted(report["models"]) == ["detector", "genuine", "ratio", "resnet"]
    with Store(out, read_only=True) as s:
        names = s.query("SELECT name, kind FROM samples ORDER BY name")
        assert (names["kind"] == "mixture").sum() == 8 and (names["kind"] == "cell-line").sum() == 4
        n = s.scalar("SELECT count(*) FROM nuclei")
        assert n == report["n_nuclei"] > 0
        assert s.scalar("SELECT count(*) FROM predictions") == 4 * n
        for m in report["models"]:
            pts = umap_store.umap_points(s, m)
            assert len(pts) == n and pts["fitted_on"].any() and (pts.loc[pts["fitted_on"], "split"] == "train").all()
        assert check_store(s) == []
        assert len(summary.sample_summaries(s)) == 4 * len(names)
        assert s.scalar("SELECT count(*) FROM nuclei WHERE true_label IS NOT NULL") > 0.8 * n
        review.review_queue(s, limit=5)
    with pytest.raises(InputError, match="exists"):
        build_demo(out, cfg, model_dirs=[models], progress=False)


def test_the_refusal_to_rebuild_names_the_curation_work_force_would_delete(tmp_path, capsys):
    from genuine_core.cli import main
    from store import samples
    from store.db import Store

    out = tmp_path / "demo.duckdb"
    with Store(out) as s:
        samples.ensure_sample(s, "plain", "case")
    assert main(["demo", "--out", str(out), "--quiet"]) == 2
    assert f"{out} exists; use --force to rebuild it" in capsys.readouterr().err  # nothing of a curator's in it
    with Store(out) as s:
        s.execute("INSERT INTO label_events (nucleus_id, value, previous, reviewer, created_at) VALUES "
                  "(1, '1', 'unset', 'ann', now()), (2, '0', 'unset', 'bob', now())")
    (tmp_path / "demo_files" / "runs" / "run-a").mkdir(parents=True)
    assert main(["demo", "--out", str(out), "--quiet"]) == 2
    assert "(it holds 2 curators' label events and 1 retraining run, which --force deletes)" in \
        capsys.readouterr().err


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_rebuild_leaves_no_partial_store_and_keeps_the_old_one(tmp_path, monkeypatch, error):
    import store.demo as demo
    from store.db import Store

    out = tmp_path / "demo.duckdb"
    Store(out).close()
    old_store = out.read_bytes()
    partial = tmp_path / "demo.partial.duckdb"
    monkeypatch.setattr(demo, "demo_models", lambda *a, **kw: [])

    def half_built(path, *a, **kw):  # the store is half written when Ctrl-C (or an error) arrives
        Store(path).close()
        (path.with_name(path.stem + "_files")).mkdir()
        assert path.is_file()
        raise error("stop")

    monkeypatch.setattr(demo, "_fill_demo_store", half_built)
    with pytest.raises(error):
        demo.build_demo(out, benchmark=tmp_path, force=True, progress=False)
    assert not partial.exists() and not (tmp_path / "demo.partial_files").exists()
    assert out.read_bytes() == old_store


def test_a_file_that_is_no_genuine_store_is_never_rebuilt_even_with_force(tmp_path, capsys):
    import duckdb

    from genuine_core.cli import main

    theirs = tmp_path / "lims.duckdb"
    with duckdb.connect(str(theirs)) as conn:
        conn.execute("CREATE TABLE patients (id INTEGER)")
    table = tmp_path / "calls.duckdb"
    table.write_text("nucleus_id,call\n1,1\n")
    for path, what in ((theirs, "another program's DuckDB database, with tables patients"),
                       (table, "not a DuckDB database")):
        before = path.read_bytes()
        for force in ([], ["--force"]):
            assert main(["demo", "--out", str(path), "--quiet", *force]) == 2
            assert f"{path} exists and is not a GENUINE store ({what}); give another --out" in capsys.readouterr().err
        assert path.read_bytes() == before


def test_an_empty_file_is_built_in_like_a_missing_store_and_left_untouched_until_then(tmp_path):
    from store.demo import build_demo

    out = tmp_path / "demo.duckdb"
    out.touch()  # e.g. `touch`: no store yet, so no --force needed (and never opened by the refusal)
    with pytest.raises(InputError, match="no model folder found"):  # past the refusal: the models come first
        build_demo(out, model_dirs=[tmp_path / "no_models"], progress=False)
    assert out.stat().st_size == 0


@pytest.mark.parametrize("argv, line", [
    # the settings' own names (max_fields_per_sample) or none at all ("need >= 3 nuclei per line ...")
    (["--max-fields", "0"], "--max-fields must be >= 1, got 0"),
    (["--nuclei-per-line", "-1"], "--nuclei-per-line must be in [3, 5000], got -1"),
    (["--mixture-nuclei", "0"], "--mixture-nuclei must be in [1, 5000], got 0"),
    # a benchmark that is none was found only once a store was being built (and its migrations logged)
    (["--benchmark", "."], "--benchmark .: not a benchmark folder (needs nuclei.parquet and fields/)"),
])
def test_demo_options_are_refused_by_the_name_typed_before_any_work(argv, line, tmp_path, capsys, monkeypatch):
    from genuine_core.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", "d.duckdb", "--quiet", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"error: {line}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["x.txt", "store"])
def test_demo_out_not_ending_in_duckdb_is_refused_before_any_work(name, tmp_path, capsys, monkeypatch):
    from genuine_core.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", name, "--quiet"]) == 2
    expected = str(Path(name).with_suffix(".duckdb"))
    assert capsys.readouterr().err.strip() == (f"error: --out {name}: a store file's name ends in .duckdb "
                                               f"(or .db, .ddb), e.g. {expected}")
    assert list(tmp_path.iterdir()) == []


def test_demo_out_naming_a_folder_is_refused(tmp_path, capsys):
    from genuine_core.cli import main

    assert main(["demo", "--out", str(tmp_path), "--force", "--quiet"]) == 2
    assert "is a folder; give the store file" in capsys.readouterr().err


def test_a_folder_named_like_the_demo_benchmark_that_is_no_demo_benchmark_is_left_alone(tmp_path, capsys):
    from genuine_core.cli import main

    theirs = tmp_path / "d_benchmark"
    theirs.mkdir()
    (theirs / "config.json").write_text('{"mine": true}')
    assert main(["demo", "--out", str(tmp_path / "d.duckdb"), "--quiet"]) == 2
    assert "holds files that are not a demo benchmark; pass --force" in capsys.readouterr().err
    assert (theirs / "config.json").read_text() == '{"mine": true}' and not (tmp_path / "d.duckdb").exists()


def test_each_demo_store_has_its_own_benchmark(tmp_path, monkeypatch):
    """A second demo store built in the same folder never regenerates the first one's benchmark."""
    from store import demo

    made = []
    monkeypatch.setattr("genuine_core.synth.benchmark.make_benchmark", lambda out, **kw: made.append(out))
    monkeypatch.setattr(demo, "_fill_demo_store", lambda *a: (_ for _ in ()).throw(RuntimeError("stop")))
    for name in ("first.duckdb", "second.duckdb"):
        with pytest.raises(RuntimeError, match="stop"):
            demo.build_demo(tmp_path / name, demo.DemoConfig(), model_dirs=[], progress=False)
    assert made == [tmp_path / "first_benchmark", tmp_path / "second_benchmark"]


def test_a_store_of_the_same_stem_never_takes_over_anothers_files_or_benchmark(tmp_path, capsys):
    """case.db beside case.duckdb would share case_files/ and case_benchmark/: refused, nothing touched."""
    from genuine_core.cli import main
    from store.db import Store

    theirs = tmp_path / "d_files"
    theirs.mkdir()
    (theirs / "umap_model1_fit1.npz").write_bytes(b"their map")
    with pytest.raises(StoreError, match="already holds files of another store named d"):
        Store(tmp_path / "d.db")
    assert main(["demo", "--out", str(tmp_path / "d.db"), "--quiet"]) == 2
    assert "d_files already holds files of another store" in capsys.readouterr().err
    assert (theirs / "umap_model1_fit1.npz").read_bytes() == b"their map" and not (tmp_path / "d.db").exists()
    bench = tmp_path / "e_benchmark"  # a complete demo benchmark of other settings: another store's
    bench.mkdir()
    (bench / "config.json").write_text('{"seed": 7, "size": {"name": "demo", "nuclei_per_line": 10}}')
    assert main(["demo", "--out", str(tmp_path / "e.duckdb"), "--quiet"]) == 2
    assert "holds a demo benchmark of other settings; pass --force" in capsys.readouterr().err
    assert (bench / "config.json").read_text().startswith('{"seed": 7')
    (tmp_path / "f_benchmark").write_text("a file")
    assert main(["demo", "--out", str(tmp_path / "f.duckdb"), "--quiet"]) == 2
    assert "f_benchmark is a file" in capsys.readouterr().err


def test_a_store_another_process_has_open_is_not_replaced_even_with_force(tmp_path, capsys):
    import subprocess
    import sys

    from genuine_core.cli import main
    from store.db import Store

    out = tmp_path / "demo.duckdb"
    Store(out).close()
    before = out.read_bytes()
    code = "import sys, time; from store.db import Store; s = Store(sys.argv[1]); print('open', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "open"
        assert main(["demo", "--out", str(out), "--force", "--quiet"]) == 2
        assert f"store busy: {out} is open for writing by process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert out.read_bytes() == before
