"""Ingest: one transaction per scan, idempotent re-ingest, bad files skipped, benchmark ground truth."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _store_fakes import fake_model, threshold_segmenter, write_toy_scans
from conftest import make_toy_scan
from genuine_core.io import write_masks_tiff, write_scan_tiff
from store import ingest, registry, scans
from store.db import Store

TABLES = ("samples", "scans", "nuclei", "labels", "synthetic_truth", "models", "scan_models", "predictions",
          "detections", "embeddings")


def _counts(store: Store) -> dict[str, int]:
    return {t: int(store.scalar("SELECT count(*) FROM " + t)) for t in TABLES}


@pytest.fixture()
def models():
    return [fake_model("gen", patch_size=64), fake_model("base", bias=1.0, patch_size=48, kind="resnet")]


def _ingest(store, paths, models, **kw):
    kw.setdefault("segmenter", threshold_segmenter)
    return ingest.ingest_files(store, paths, kw.pop("sample", "case1"), models=models, progress=False, **kw)


def test_ingest_writes_all_tables_and_reingest_is_a_noop(store, models, tmp_path):
    paths = write_toy_scans(tmp_path / "scans", 2, make_toy_scan)
    report = _ingest(store, paths, models, kind="cell-line", genotype="MNA")
    assert [o.status for o in report.outcomes] == ["stored", "stored"] and report.exit_code == 0
    c = _counts(store)
    n = c["nuclei"]
    assert n == report.n_nuclei > 0
    assert c["predictions"] == c["embeddings"] == 2 * n
    assert c["detections"] == 2 * n and c["scan_models"] == 4 and c["labels"] == n  # auto label per nucleus
    assert store.scalar("SELECT count(DISTINCT label) FROM labels WHERE kind = 'auto'") == 1
    assert store.scalar("SELECT min(label) FROM labels") == 1
    # each model saw its own patch size, the store keeps the largest
    assert set(store.query("SELECT patch_size FROM scans")["patch_size"]) == {64}
    again = _ingest(store, paths, models)
    assert [o.status for o in again.outcomes] == ["duplicate", "duplicate"]
    assert "already stored" in again.outcomes[0].message and again.exit_code == 0
    assert _counts(store) == c


def test_failure_mid_scan_leaves_store_unchanged(store, models, tmp_path, monkeypatch):
    paths = write_toy_scans(tmp_path / "scans", 2, make_toy_scan)
    _ingest(store, paths[:1], models)
    before = _counts(store)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full (injected)")

    # nuclei, predictions and detections are already inserted when embeddings fail
    monkeypatch.setattr(scans, "_insert_embeddings", boom)
    report = _ingest(store, paths[1:], models)
    assert report.outcomes[0].status == "failed" and "injected" in report.outcomes[0].message
    assert report.exit_code == 2
    assert _counts(store) == before
    monkeypatch.undo()
    # the same file goes in cleanly afterwards
    report = _ingest(store, paths[1:], models)
    assert report.outcomes[0].status == "stored"
    assert _counts(store)["nuclei"] > before["nuclei"]


def test_unreadable_file_is_skipped_rest_stored(store, models, tmp_path):
    paths = write_toy_scans(tmp_path / "scans", 2, make_toy_scan)
    bad = tmp_path / "scans" / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 10)  # TIFF magic, then nothing
    text = tmp_path / "scans" / "notes.tif"
    text.write_text("not an image")
    report = _ingest(store, [paths[0], bad, text, paths[1], tmp_path / "missing.tif"], models)
    assert [o.status for o in report.outcomes] == ["stored", "failed", "failed", "stored", "failed"]
    assert report.exit_code == 1
    assert all(o.message for o in report.outcomes if o.status == "failed")
    assert store.scalar("SELECT count(*) FROM scans") == 2
    assert "2 stored" in report.lines()[-1]
    all_bad = _ingest(store, [bad, text], models)
    assert all_bad.exit_code == 2


def test_an_upload_that_cannot_be_saved_fails_with_the_reason_and_a_store_folder_that_cannot_be_made_too(
        store, models, tmp_path):
    data = write_toy_scans(tmp_path / "scans", 1, make_toy_scan)[0].read_bytes()
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a folder cannot be made under a file (permissions do not stop root)
    report = ingest.ingest_upload(store, blocker / "uploads", "scan.tif", data, "case1", models=models,
                                  segmenter=threshold_segmenter)
    assert report.outcomes[0].status == "failed"
    assert report.outcomes[0].message.startswith(f"cannot save the upload under {blocker / 'uploads'}: ")
    assert store.scalar("SELECT count(*) FROM scans") == 0
    from genuine_core.errors import StoreError

    with pytest.raises(StoreError, match="new.duckdb: cannot create its folder: "):
        Store(blocker / "lab" / "new.duckdb")


def test_ingest_with_default_segmenter_and_real_patches(store, models, tmp_path):
    """The real watershed segmenter and patch extractor on the toy scan."""
    paths = write_toy_scans(tmp_path / "scans", 1, make_toy_scan)
    report = ingest.ingest_files(store, paths, "case1", models=models, progress=False)
    assert report.outcomes[0].status == "stored", report.outcomes[0].message
    n = report.n_nuclei
    assert 3 <= n <= 5  # 5 toy nuclei, one cut by the border
    seg = json.loads(store.scalar("SELECT segmentation FROM scans"))
    assert seg["backend"] == "watershed"
    img, masks = scans.scan_images(store, int(store.scalar("SELECT id FROM scans")))
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8 and masks.max() >= n


def test_resolve_models_prefers_given_then_registered(store, tmp_path):
    folder = tmp_path / "m"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        (folder / name / "config.json").write_text('{"kind": "genuine"}')
        (folder / name / "weights.safetensors").write_bytes(b"")
    loaded = ingest.resolve_models(store, [folder], loader=lambda p: fake_model(p.name))
    assert [m.name for m in loaded] == ["a", "b"]
    with pytest.raises(Exception, match="no model folder"):
        ingest.resolve_models(store, [tmp_path / "empty"], loader=lambda p: fake_model(p.name))


def _write_benchmark(root: Path) -> Path:
    """A two-field benchmark folder in the documented layout (ground truth = the toy masks)."""
    (root / "fields").mkdir(parents=True)
    rows = []
    for k, (field_id, split, sample, auto) in enumerate([("f000", "train", "LINE-A", 1), ("f001", "mixture", "mix25", None)]):
        toy = make_toy_scan(seed=k)
        write_scan_tiff(root / "fields" / f"{field_id}.tif", toy.image)
        write_masks_tiff(root / "fields" / f"{field_id}_masks.tif", toy.masks)
        for nid in range(1, toy.masks.max() + 1):
            true = int(nid % 2) if auto is None else (0 if nid == 2 else 1)  # nucleus 2 of the line is not amplified
            rows.append({"field_id": field_id, "split": split, "sample": sample, "nucleus_id": nid,
                         "cell_line": "LINE-A" if auto else ("LINE-A" if nid % 2 else "LINE-B"),
                         "auto_label": 1 if auto else nid % 2, "true_label": true, "n_nmi": 2, "n_mycn": 8 * true,
                         "n_cluster": 0, "noise": "natural" if auto and not true else "none"})
    pd.DataFrame(rows).to_parquet(root / "nuclei.parquet")
    (root / "summary.json").write_text(json.dumps({"mixtures": {"mix25": {"target": 0.25}}}))
    (root / "config.json").write_text(json.dumps({"seed": 7}))
    return root


def test_benchmark_ingest_matches_ground_truth(store, models, tmp_path):
    bench = _write_benchmark(tmp_path / "bench")
    fields = ingest.benchmark_fields(bench)
    assert fields[["sample", "kind", "split"]].values.tolist() == [["LINE-A", "cell-line", "train"],
                                                                   ["mix25", "mixture", "mixture"]]
    assert fields["expected_mna"].tolist() == [1.0, 0.25]
    report = ingest.ingest_benchmark(store, bench, models, segmenter=lambda img: _gt_segmenter(bench, img),
                                     progress=False)
    assert report.exit_code == 0 and report.count("stored") == 2
    truth = store.query(
        "SELECT s.name, n.mask_label, t.gt_id, t.match_iou, la.label AS auto, lt.label AS truth, c.split "
        "FROM synthetic_truth t JOIN nuclei n ON n.id = t.nucleus_id JOIN scans c ON c.id = n.scan_id "
        "JOIN samples s ON s.id = c.sample_id "
        "JOIN labels la ON la.nucleus_id = n.id AND la.kind = 'auto' "
        "JOIN labels lt ON lt.nucleus_id = n.id AND lt.kind = 'truth' ORDER BY s.name, n.mask_label")
    # segmentation = ground truth here, so every kept nucleus matches itself with IoU 1
    assert (truth["mask_label"] == truth["gt_id"]).all() and np.allclose(truth["match_iou"], 1.0)
    line = truth[truth["name"] == "LINE-A"].set_index("mask_label")
    assert line.loc[2, "auto"] == 1 and line.loc[2, "truth"] == 0 and line.loc[1, "truth"] == 1
    assert set(line["split"]) == {"train"}
    mix = truth[truth["name"] == "mix25"]
    assert (mix["truth"] == mix["mask_label"] % 2).all()
    s = store.query("SELECT name, kind, expected_mna, genotype FROM samples ORDER BY name")
    assert s[["name", "kind", "expected_mna"]].values.tolist() == [["LINE-A", "cell-line", 1.0],
                                                                   ["mix25", "mixture", 0.25]]
    assert s.at[0, "genotype"] == "MNA" and pd.isna(s.at[1, "genotype"])
    assert ingest.ingest_benchmark(store, bench, models, progress=False,
                                   segmenter=lambda img: _gt_segmenter(bench, img)).count("duplicate") == 2


def _gt_segmenter(bench: Path, image: np.ndarray) -> np.ndarray:
    """Returns the ground-truth masks of whichever benchmark field ``image`` is."""
    from genuine_core.io import read_scan

    for f in sorted((bench / "fields").glob("f???.tif")):
        if np.array_equal(read_scan(f).image, image):
            return ingest._read_gt_masks(f.with_name(f.stem + "_masks.tif"))
    raise AssertionError("unknown field")


def test_not_a_benchmark_folder(tmp_path):
    with pytest.raises(Exception, match="not a benchmark folder"):
        ingest.benchmark_fields(tmp_path)



def test_prefetch_keeps_input_order_and_same_file_twice_is_a_duplicate(store, models, tmp_path):
    """Files are prepared ahead in a worker thread; outcomes stay in input order, the
    worker's cursor is closed, and a file listed twice is stored once."""
    paths = write_toy_scans(tmp_path / "scans", 4, make_toy_scan)
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not an image")
    batch = [paths[0], bad, paths[1], paths[0], paths[2], paths[3]]
    store.cursor()  # this thread's cursor exists before; the worker's must be gone after
    cursors = len(store._cursors)
    report = _ingest(store, batch, models)
    assert [o.status for o in report.outcomes] == ["stored", "failed", "stored", "duplicate", "stored", "stored"]
    assert [o.path for o in report.outcomes] == [str(p) for p in batch]
    assert "earlier file of this batch" in report.outcomes[3].message
    assert store.scalar("SELECT count(*) FROM scans") == 4
    assert len(store._cursors) == cursors


# -- the `genuine ingest` command line ---------------------------------------------------------


def _cli_models(tmp_path, monkeypatch) -> Path:
    """A model folder the CLI resolves to a fake model (everything else real)."""
    from _store_fakes import fake_model as fake

    mdir = tmp_path / "models" / "fake1"
    mdir.mkdir(parents=True)
    (mdir / "config.json").write_text('{"kind": "resnet"}')
    (mdir / "weights.safetensors").write_bytes(b"")
    real_resolve = ingest.resolve_models
    monkeypatch.setattr(ingest, "resolve_models",
                        lambda store, folders, loader=None: real_resolve(store, folders, lambda p: fake(p.name)))
    return tmp_path / "models"


@pytest.mark.parametrize("extra, fragment", [
    (["--diameter", "0"], "--diameter must be in [4, 2000]"),
    (["--genotype", "maybe"], "--genotype must be MNA or non-MNA"),
    (["--expected", "1.5"], "--expected must be"),
    (["--backend", "cellpose", "--cellpose-model", "nope"], "pass --cellpose-model PATH"),
    (["--cellpose-model", "nope"], "--cellpose-model applies to --backend cellpose"),
    (["--max-fields", "2"], "apply to --benchmark DIR only"),
    (["--models", "/nonexistent/model"], "no model folder found"),
])
def test_cli_ingest_refuses_bad_options_up_front(tmp_path, capsys, extra, fragment):
    from genuine_core.cli import main

    scan = write_toy_scans(tmp_path / "scans", 1, make_toy_scan)[0]
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(scan), "--sample", "S", "--db", str(db), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and "\n" not in err and "Traceback" not in err
    assert not db.exists()  # refused before the store was created or a file read


@pytest.mark.parametrize("extra, fragment", [
    (["--splits", "train", "bogus"], "unknown split(s) 'bogus'"),
    (["--max-fields", "0"], "--max-fields must be >= 1"),
    (["--sample", "S"], "a benchmark folder names its own samples"),
])
def test_cli_ingest_benchmark_refuses_options_that_would_ingest_nothing(tmp_path, capsys, extra, fragment):
    from genuine_core.cli import main

    db = tmp_path / "s.duckdb"
    assert main(["ingest", "--benchmark", str(tmp_path), "--db", str(db), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and not db.exists()


def test_cli_ingest_splits_match_the_benchmark_generator():
    from genuine_core.synth.benchmark import SPLITS
    from store.cli_ingest import BENCHMARK_SPLITS

    assert tuple(BENCHMARK_SPLITS) == tuple(SPLITS)


def test_cli_ingest_prints_each_file_once_as_it_is_done(tmp_path, capsys, monkeypatch):
    """Each file's line appears when it is done (before the next file is written); a failure's reason once."""
    from genuine_core.cli import main

    models = _cli_models(tmp_path, monkeypatch)
    scans_ = write_toy_scans(tmp_path / "scans", 2, make_toy_scan)
    one = tmp_path / "one.tif"
    import tifffile

    tifffile.imwrite(one, np.zeros((64, 64), np.uint8))
    printed_before_write: list[str] = []
    real_write = ingest.write_scan_result

    def spy(*a, **kw):  # what was on stdout when the next scan is written
        printed_before_write.append(capsys.readouterr().out)
        return real_write(*a, **kw)

    monkeypatch.setattr(ingest, "write_scan_result", spy)
    db = tmp_path / "s.duckdb"
    code = main(["ingest", str(one), *map(str, scans_), "--sample", "S", "--models", str(models), "--db", str(db),
                 "--quiet"])
    captured = capsys.readouterr()
    out = "".join(printed_before_write) + captured.out
    assert code == 1  # some failed, the others stored (README: exit 1)
    assert "stored    " + str(scans_[0]) in printed_before_write[1]  # first scan's line before the second's write
    lines = out.strip().splitlines()
    assert len(lines) == 5 and lines[-1].startswith("2 stored, 0 already stored, 1 failed")
    assert lines[-2] == f"created new store {db.resolve()}"  # a typo in --db is seen, even with --quiet
    reason = "a MYCN FISH scan needs 3"
    assert (out + captured.err).count(reason) == 1  # said once: no WARNING log line beside the failed line
    assert f"failed    {one}: image has 1 channel(s)" in out  # the file named once too
    assert main(["ingest", str(scans_[0]), "--sample", "S", "--models", str(models), "--db", str(db)]) == 0
    assert "created" not in capsys.readouterr().out  # the store was there


def test_cli_ingest_that_stores_nothing_leaves_no_new_store_and_names_none(tmp_path, capsys, monkeypatch):
    from genuine_core.cli import main

    models = _cli_models(tmp_path, monkeypatch)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not an image")
    db = tmp_path / "typo.duckdb"
    assert main(["ingest", str(bad), "--sample", "S", "--models", str(models), "--db", str(db), "--quiet"]) == 2
    assert "created" not in capsys.readouterr().out and not db.exists()


def test_cli_ingest_into_a_new_store_named_like_no_store_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """`--db x.txt` used to create a DuckDB store called x.txt; a new store's name now ends as a store's does
    (as `genuine demo --out`), while an existing store opens whatever its name."""
    from genuine_core.cli import main

    models = _cli_models(tmp_path, monkeypatch)
    scans_ = write_toy_scans(tmp_path / "scans", 1, make_toy_scan)
    db = tmp_path / "x.txt"
    assert main(["ingest", str(scans_[0]), "--sample", "S", "--models", str(models), "--db", str(db), "--quiet"]) == 2
    assert f"--db {db}: a store file's name ends in .duckdb (or .db, .ddb), e.g. {tmp_path / 'x.duckdb'}" in \
        capsys.readouterr().err
    assert not db.exists()
    monkeypatch.setenv("GENUINE_DB", str(tmp_path / "store"))
    assert main(["ingest", str(scans_[0]), "--sample", "S", "--models", str(models), "--quiet"]) == 2
    assert "$GENUINE_DB" in capsys.readouterr().err and not (tmp_path / "store").exists()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, lambda: RuntimeError("Query interrupted")],
                         ids=["python", "duckdb"])  # Ctrl-C during a DuckDB query reaches Python as the latter
def test_cli_ingest_interrupt_says_how_many_were_stored(tmp_path, capsys, monkeypatch, interrupt):
    from genuine_core.cli import main

    models = _cli_models(tmp_path, monkeypatch)
    scans_ = write_toy_scans(tmp_path / "scans", 3, make_toy_scan)
    real_write = ingest.write_scan_result
    calls = []

    def interrupt_second(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise interrupt()
        return real_write(*a, **kw)

    monkeypatch.setattr(ingest, "write_scan_result", interrupt_second)
    db = tmp_path / "s.duckdb"
    code = main(["ingest", *map(str, scans_), "--sample", "S", "--models", str(models), "--db", str(db), "--quiet"])
    captured = capsys.readouterr()
    assert code == 130
    assert captured.out.count("stored    ") == 1 and str(scans_[0]) in captured.out
    assert "1 file(s) stored before the interrupt" in captured.err
    with Store(db, read_only=True) as s:
        assert s.scalar("SELECT count(*) FROM scans") == 1


def test_cli_ingest_with_models_names_the_registered_models_it_does_not_run(tmp_path, capsys, monkeypatch):
    from genuine_core.cli import main

    models = _cli_models(tmp_path, monkeypatch)
    (models / "fake2").mkdir()
    for f in ("config.json", "weights.safetensors"):
        (models / "fake2" / f).write_bytes((models / "fake1" / f).read_bytes())
    scans_ = write_toy_scans(tmp_path / "scans", 2, make_toy_scan)
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(scans_[0]), "--sample", "S", "--models", str(models), "--db", str(db), "--quiet"]) == 0
    assert "note:" not in capsys.readouterr().out  # every registered model ran
    assert main(["ingest", str(scans_[1]), "--sample", "S", "--models", str(models / "fake1"), "--db", str(db),
                 "--quiet"]) == 0
    note = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note:"))
    assert note == (f"note: registered model(s) 'fake2' do not score these scans (--models); score them afterwards, "
                    f"e.g. genuine store score fake2 --db {db}")


def test_cli_ingest_with_models_says_which_left_out_models_cannot_score_the_new_scans(tmp_path, capsys, monkeypatch):
    """After an upgrade a store holds models of the older release, which read 'percentile' patches: an ingest with
    the new 'spot_flux' models names them apart instead of suggesting a `store score` that skips every scan."""
    from genuine_core.cli import main

    models = _cli_models(tmp_path, monkeypatch)
    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        for name, cut in (("old_release", "percentile"), ("same_cut", "spot_flux")):
            m = fake_model(name)
            registry.register_model(s, replace(m, config={**m.config, "patch_normalisation": cut}))
    monkeypatch.setattr(ingest, "resolve_models", lambda store, folders, loader=None: [
        replace(fake_model("fake1"), config={"kind": "resnet", "patch_size": 64, "patch_normalisation": "spot_flux"})])
    scan = write_toy_scans(tmp_path / "scans", 1, make_toy_scan)[0]
    assert main(["ingest", str(scan), "--sample", "S", "--models", str(models / "fake1"), "--db", str(db),
                 "--quiet"]) == 0
    notes = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note:")]
    assert notes == [
        f"note: registered model(s) 'same_cut' do not score these scans (--models); score them afterwards, "
        f"e.g. genuine store score same_cut --db {db}",
        "note: registered model(s) 'old_release' (percentile) read patches normalised otherwise than these scans "
        "(spot_flux), so they cannot score them"]
