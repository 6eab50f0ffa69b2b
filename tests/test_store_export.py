"""Exports, integrity check, probe runs, UMAP in the store, and the store CLIs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _store_fakes import fake_model, synthetic_result, write_toy_scans
from conftest import make_toy_scan
from genuine_core.cli import main
from genuine_core.embedding import UmapConfig, UmapMap
from genuine_core.errors import InputError, StoreError
from store import check, export, labels, probes, registry, samples
from store import umap as umap_store
from store.db import Store
from store.scans import write_scan_result


@pytest.fixture()
def filled(tmp_path):
    """A store with two samples (hand-made predictions, 2 models) and a few curated labels."""
    path = tmp_path / "s.duckdb"
    s = Store(path)
    rng = np.random.default_rng(0)
    for k, (name, kind) in enumerate([("lineA", "cell-line"), ("mix", "mixture")]):
        sid = samples.ensure_sample(s, name, kind, 0.5 if kind == "mixture" else 1.0)
        probs = rng.uniform(0, 1, 30)
        mids = {m: registry.register_model(s, fake_model(m)) for m in ("m1", "m2")}
        res = synthetic_result(str(k) * 64, {"m1": probs, "m2": 1 - probs}, emb_dim=6, seed=k)
        truth = pd.DataFrame({"mask_label": np.arange(1, 31), "kind": "truth", "label": (probs > 0.4).astype(int),
                              "source": "t"})
        write_scan_result(s, sid, res, mids, labels=truth, split="train" if kind == "cell-line" else "mixture")
    ids = s.query("SELECT id FROM nuclei ORDER BY id")["id"].tolist()
    labels.record_label_event(s, ids[0], 1, "ann")
    labels.record_label_event(s, ids[1], 0, "ann")
    labels.record_label_event(s, ids[2], "exclude", "bob")
    labels.record_label_event(s, ids[31], 1, "bob")
    yield s, path, ids
    s.close()


def test_export_sample_on_a_full_disk_writes_no_half_report(filled, tmp_path, monkeypatch):
    # a full disk left nuclei.csv and an empty nuclei.parquet, and the next run was refused ("pass --overwrite")
    import errno

    from store import report_format

    s, _, _ = filled
    out = tmp_path / "rep"

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report_format, "html_page", disk_full)  # the last of the five files
    with pytest.raises(OSError, match="No space left on device"):
        export.export_sample(s, "lineA", out)
    assert list(out.iterdir()) == []
    monkeypatch.undo()
    assert [f.name for f in export.export_sample(s, "lineA", out)] == list(export.SAMPLE_FILES)


def test_export_sample_report(filled, tmp_path):
    s, _, ids = filled
    files = export.export_sample(s, "lineA", tmp_path / "rep")
    assert [f.name for f in files] == ["nuclei.csv", "nuclei.parquet", "summary.csv", "summary.md", "summary.html"]
    nuc = pd.read_parquet(tmp_path / "rep" / "nuclei.parquet")
    assert len(nuc) == 30 and {"prob__m1", "prob__m2", "call__m1", "true_label", "curated_label"} <= set(nuc.columns)
    assert np.allclose(nuc["prob__m1"] + nuc["prob__m2"], 1.0, atol=1e-6)
    assert nuc.set_index("nucleus_id").loc[ids[0], "curated_label"] == 1
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "# Sample report: lineA" in md and "| m1 |" in md and "curated nuclei**: 3" in md
    assert "<table>" in (tmp_path / "rep" / "summary.html").read_text()
    with pytest.raises(StoreError):
        export.export_sample(s, "nope", tmp_path / "x")
    export.export_sample(s, "lineA", tmp_path / "signed", model="m2", prepared_by="Dr. Export")
    md = (tmp_path / "signed" / "summary.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("- **")]
    assert lines[0].startswith("- **call (m2)**: ") and lines[1].startswith("- **MNA % (m2)**: ")
    assert "95 % CI" in lines[1] and "- **prepared by**: Dr. Export" in lines
    page = (tmp_path / "signed" / "summary.html").read_text()
    assert "Dr. Export" in page
    # every QC flag of the table is explained in the report itself
    assert "<h2>QC flags</h2>" in page  # each flag names the models that raised it
    assert "<b>no validation metrics (m1, m2)</b>: the model has no validation" in page
    assert "- **nuclei**: 30 (1 excluded by a curator, 29 scored)" in lines  # the per-model rows count 29
    assert "## QC flags" in md and "corrected CI low" in md
    # the report names the exact weights behind every column
    models = registry.list_models(s).set_index("name")
    for name in ("m1", "m2"):
        assert f"| {name} | {models.loc[name, 'kind']} |" in md and models.loc[name, "checksum"] in md
        assert models.loc[name, "checksum"] in page
    assert "**prepared by**: not signed" in (tmp_path / "rep" / "summary.md").read_text()  # no name: said so
    # how each scan was read: a wrong channel map must be visible on the report a pathologist signs
    scan = s.query("SELECT id, file_name, sha256 FROM scans c WHERE sample_id = "
                   "(SELECT id FROM samples WHERE name = 'lineA')").iloc[0]
    assert "## Scans (how each was read)" in md and "<h2>Scans (how each was read)</h2>" in page
    assert f"| {scan['id']} | {scan['file_name']} | nmi=0,mycn=1,dapi=2 (RGB) |" in md and scan["sha256"] in md
    with pytest.raises(StoreError, match="no model named 'nope'; registered: m1, m2"):
        export.export_sample(s, "lineA", tmp_path / "y", model="nope")
    registry.register_model(s, fake_model("m3"))  # registered, never run on lineA
    with pytest.raises(StoreError, match="model 'm3' has no call for sample 'lineA': it has scored none of its nuclei"):
        export.export_sample(s, "lineA", tmp_path / "y", model="m3")
    assert not (tmp_path / "y").exists()  # refused before anything is written


def test_export_sample_whose_nuclei_a_curator_all_excluded_says_why_there_is_no_call(filled, tmp_path):
    """Every nucleus excluded: the report states there is no call (an empty table said nothing), and a
    report for one model names the exclusion instead of 'no predictions' (the model had scored them)."""
    s, _, _ = filled
    for nid in s.query("SELECT n.id FROM nuclei n JOIN scans c ON c.id = n.scan_id JOIN samples x "
                       "ON x.id = c.sample_id WHERE x.name = 'mix'")["id"]:
        labels.record_label_event(s, int(nid), "exclude", "qa")
    with pytest.raises(StoreError, match="model 'm1' has no call for sample 'mix': a curator excluded all 30 of "
                                         "its nuclei, so none is scored"):
        export.export_sample(s, "mix", tmp_path / "one", model="m1")
    export.export_sample(s, "mix", tmp_path / "all")
    md = (tmp_path / "all" / "summary.md").read_text()
    assert md.splitlines()[2] == ("- **call**: none: a curator excluded all 30 of its nuclei, so none is scored")
    assert "<b>call</b>: none: a curator excluded all 30" in (tmp_path / "all" / "summary.html").read_text()


def test_export_labels_is_a_training_set(filled, tmp_path):
    from training.labelled import LabelledPatches

    s, _, ids = filled
    for suffix in (".npz", ".parquet"):
        out = export.export_labels(s, tmp_path / f"cur{suffix}")
        data = LabelledPatches.load(out)
        assert len(data) == 3  # the excluded nucleus is left out
        assert data.labels.tolist() == [1, 0, 1]
        assert data.patches.shape == (3, 3, 8, 8)
        stored = s.query("SELECT patch_png FROM nuclei WHERE id = ?", [ids[0]])
        assert stored.shape == (1, 1)
        assert set(data.label_kind) == {"curated"} and data.nucleus_key[0].endswith(":1")
        assert data.true_label.tolist() == s.query(
            "SELECT label FROM labels WHERE kind = 'truth' AND nucleus_id IN (?, ?, ?) ORDER BY nucleus_id",
            [ids[0], ids[1], ids[31]])["label"].tolist()
    assert len(export.curated_training_set(s, sample="mix")) == 1


@pytest.mark.parametrize("suffix", [".npz", ".parquet", ".csv"])
def test_an_export_that_fails_half_way_leaves_the_earlier_file_whole(filled, tmp_path, monkeypatch, suffix):
    """A file-size limit, a full disk or Ctrl-C while writing: the earlier export stays, no temporary file."""
    import pyarrow.parquet as pq

    from training.labelled import LabelledPatches

    s, _, _ = filled
    write = (lambda: export.export_audit(s, out)) if suffix == ".csv" else (lambda: export.export_labels(s, out))
    out = tmp_path / "exports" / f"cur{suffix}"
    out.parent.mkdir()
    write()
    before = out.read_bytes()

    def cut_off(target) -> None:  # some bytes reach the file, then the disk says no
        if hasattr(target, "write"):
            target.write(b"PK half")
        else:
            Path(target).write_bytes(b"half")
        raise OSError(27, "File too large")

    owner, name, writer = {".npz": (np, "savez", lambda fh, **arrays: cut_off(fh)),
                           ".parquet": (pq, "write_table", lambda table, path, **kw: cut_off(path)),
                           ".csv": (pd.DataFrame, "to_csv", lambda frame, path, **kw: cut_off(path))}[suffix]
    monkeypatch.setattr(owner, name, writer)
    with pytest.raises(OSError, match="File too large"):
        write()
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == [out.name]
    if suffix == ".npz":  # a file cut short elsewhere is refused with one line, not a traceback
        out.write_bytes(before[: len(before) // 3])
        with pytest.raises(InputError, match="cannot read training set cur.npz"):
            LabelledPatches.load(out)
        out.write_bytes(b"")
        with pytest.raises(InputError, match="cannot read training set cur.npz"):
            LabelledPatches.load(out)


def test_export_audit_formats(filled, tmp_path):
    s, _, _ = filled
    csv = pd.read_csv(export.export_audit(s, tmp_path / "audit.csv"))
    assert len(csv) == 4 and csv["reviewer"].tolist() == ["ann", "ann", "bob", "bob"]
    lines = export.export_audit(s, tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 4 and '"reviewer": "ann"' in lines[0]


def test_store_check_finds_orphans_and_tampering(filled):
    s, _, ids = filled
    assert check.check_store(s) == []
    s.execute("INSERT INTO predictions (model_id, nucleus_id, prob, prob_calibrated, call) VALUES (1, 999999, .5, .5, 1)")
    s.execute("DELETE FROM embeddings WHERE nucleus_id = ?", [ids[5]])
    problems = check.check_store(s)
    assert any("predictions of unknown nuclei" in p for p in problems)
    assert any("embedding count differs" in p for p in problems)
    info = check.store_info(s)
    assert info["counts"]["nuclei"] == 60 and info["schema_version"] == 10 and info["curated_nuclei"] == 4


def test_umap_in_store_with_saved_map(filled, monkeypatch):
    s, _, ids = filled

    def fake_fit(x, config):  # the real fit is covered by a slow test; here only the store plumbing
        return UmapMap(x.astype(np.float32), x[:, :2].astype(np.float32) * 10, config)

    monkeypatch.setattr(umap_store, "_fit", fake_fit)
    r = umap_store.fit_umap(s, "m1", UmapConfig(n_neighbors=5, max_reference=20))
    assert r["reference"] == "training split" and r["n_reference"] == 30 and r["n_fitted"] == 20
    assert r["n_placed"] == 40
    pts = umap_store.umap_points(s, "m1")
    assert len(pts) == 60 and pts["fitted_on"].sum() == 20
    assert set(pts.loc[pts["sample"] == "mix", "source"]) == {"mixture"}
    assert set(pts.loc[pts["sample"] == "lineA", "source"]) == {"training"}
    # a new scan is placed on the saved map without refitting
    sid = samples.sample_id(s, "mix")
    write_scan_result(s, sid, synthetic_result("9" * 64, {"m1": [0.2, 0.7]}, emb_dim=6, seed=5),
                      {"m1": registry.model_id(s, "m1")})
    assert umap_store.place_missing(s, "m1") == 2
    assert len(umap_store.umap_points(s, "m1")) == 62
    xy = umap_store.transform_embeddings(s, "m1", np.zeros((3, 6), np.float32))
    assert xy.shape == (3, 2)
    assert umap_store.transform_embeddings(s, "m2", np.zeros((1, 6))) is None
    assert check.check_store(s) == []
    s.execute("UPDATE scans SET split = 'val' WHERE sample_id = ?", [samples.sample_id(s, "lineA")])
    assert set(umap_store.umap_points(s, "m1", "lineA")["source"]) == {"validation"}  # not 'training'
    # a tampered map file is refused
    fit = umap_store.latest_fit(s, "m1")
    path = s.folder / fit["reducer_path"]
    path.write_bytes(path.read_bytes() + b"x")
    umap_store._cache.clear()
    with pytest.raises(StoreError, match="checksum"):
        umap_store.load_map(s, "m1")
    assert any("checksum" in p for p in check.check_store(s))


def test_probe_runs_roundtrip(filled):
    s, _, _ = filled
    res = pd.DataFrame({"n_nmi": [2, 2, 2], "n_mycn": [2, 8, 20], "prob": [0.1, 0.6, 0.95], "signal_size": 3.0})
    run = probes.record_probe_run(s, "m1", {"n_per_condition": 1, "seed": 0}, res,
                                  patches=np.zeros((3, 3, 8, 8), np.float32), created_by="ann")
    runs = probes.list_probe_runs(s)
    assert runs.at[0, "id"] == run and runs.at[0, "params"]["n_per_condition"] == 1 and runs.at[0, "n_results"] == 3
    back = probes.probe_results(s, run)
    assert back["n_mycn"].tolist() == [2, 8, 20] and back["n_cluster"].tolist() == [0, 0, 0]
    with pytest.raises(Exception):
        probes.record_probe_run(s, "m1", {}, res.drop(columns=["prob"]))


def test_cli_ingest_store_export(tmp_path, capsys, monkeypatch):
    """The CLI path end to end with fake models (the loader is replaced; everything else is real)."""
    import store.ingest as ingest_mod

    scans = write_toy_scans(tmp_path / "scans", 2, make_toy_scan)
    (tmp_path / "bad.tif").write_text("nope")
    mdir = tmp_path / "models" / "fake1"
    mdir.mkdir(parents=True)
    (mdir / "config.json").write_text('{"kind": "resnet"}')
    (mdir / "weights.safetensors").write_bytes(b"")
    monkeypatch.setattr("genuine_core.pipeline.load_model", lambda p, **kw: fake_model(p.name))
    real_resolve = ingest_mod.resolve_models
    monkeypatch.setattr(ingest_mod, "resolve_models",
                        lambda store, folders, loader=None: real_resolve(store, folders, lambda p: fake_model(p.name)))
    db = tmp_path / "cli.duckdb"
    code = main(["ingest", *map(str, scans), str(tmp_path / "bad.tif"), "--sample", "S1", "--kind", "case",
                 "--models", str(tmp_path / "models"), "--db", str(db), "--quiet"])
    out = capsys.readouterr().out
    assert code == 1 and "2 stored" in out and "failed" in out
    assert main(["ingest", str(scans[0]), "--sample", "S1", "--db", str(db), "--quiet",
                 "--models", str(tmp_path / "models")]) == 0
    assert "already stored" in capsys.readouterr().out
    assert main(["store", "check", "--db", str(db)]) == 0
    assert "consistent" in capsys.readouterr().out
    assert main(["store", "info", "--db", str(db)]) == 0
    assert '"nuclei"' in capsys.readouterr().out
    assert main(["export", "sample", "S1", "--out", str(tmp_path / "rep"), "--db", str(db)]) == 0
    assert (tmp_path / "rep" / "summary.md").is_file()
    # nothing curated yet: a clear one-line error, exit 2
    assert main(["export", "audit", "--out", str(tmp_path / "audit.csv"), "--db", str(db)]) == 2
    assert "no label events to export" in capsys.readouterr().err
    assert main(["export", "labels", "--out", str(tmp_path / "l.npz"), "--db", str(db)]) == 2
    assert "no curated labels" in capsys.readouterr().err
    assert main(["ingest", "--db", str(db)]) == 2
    assert main(["store", "check", "--db", str(tmp_path / "absent.duckdb")]) == 2


def test_cli_export_refuses_bad_out_and_unknown_names_with_one_line(filled, tmp_path, capsys):
    _, path, _ = filled
    target = tmp_path / "FILE"
    target.write_text("keep")
    db = ["--db", str(path)]
    cases = [
        (["export", "sample", "lineA", "--out", str(target)], f"--out {target} is not a folder"),
        (["export", "labels", "--out", str(tmp_path)], "is a folder; give a file name"),
        (["export", "audit", "--out", str(target / "a.csv")], "is a file, not a folder"),
        (["export", "sample", "lineA", "--out", str(tmp_path / "rep"), "--model", "nope"],
         "no model named 'nope'; registered: m1, m2"),
        (["export", "labels", "--out", str(tmp_path / "l.npz"), "--sample", "NOPE"], "no sample named 'NOPE'"),
    ]
    filled[0].close()  # the CLI opens the store itself
    for argv, fragment in cases:
        assert main([*argv, *db]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and fragment in err and "\n" not in err, (argv, err)
    assert target.read_text() == "keep" and not (tmp_path / "rep").exists()


def test_export_sample_refuses_a_prepared_by_name_with_control_characters(tmp_path, capsys):
    # 'prepared by: x' and a forged line 'y' went into the report (reviewer names on the page were refused)
    with pytest.raises(SystemExit) as exit_:
        main(["export", "sample", "lineA", "--out", str(tmp_path / "rep"), "--by", "x\ny"])
    assert exit_.value.code == 2
    assert "argument --by: a name without control characters" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists()


def test_an_unknown_sample_is_refused_with_the_samples_there_are(filled, tmp_path, capsys):
    s, path, _ = filled
    with pytest.raises(StoreError, match=r"^no sample named 'nosuch'; samples: lineA, mix$"):
        export.export_sample(s, "nosuch", tmp_path / "rep")
    for i in range(12):  # a long list is cut after ten names
        samples.ensure_sample(s, f"case{i:02d}", "case")
    with pytest.raises(StoreError, match=r"^no sample named 'nosuch'; samples: case00, case01, .*, case09, \.\.\.$"):
        export.curated_rows(s, "nosuch")
    s.close()  # the CLI opens the store itself
    assert main(["export", "sample", "nosuch", "--out", str(tmp_path / "rep"), "--db", str(path)]) == 2
    assert capsys.readouterr().err.strip() == ("error: no sample named 'nosuch'; samples: "
                                               + ", ".join(f"case{i:02d}" for i in range(10)) + ", ...")
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("what", ["sample", "labels-npz", "labels-parquet", "audit-csv", "audit-jsonl"])
def test_cli_export_refuses_to_write_over_a_file_unless_overwrite(filled, tmp_path, capsys, what):
    _, path, _ = filled
    filled[0].close()  # the CLI opens the store itself
    if what == "sample":
        folder = tmp_path / "rep"
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")  # not a report file: no reason to refuse
        assert main(["export", "sample", "lineA", "--out", str(folder), "--db", str(path)]) == 0
        kept, argv = folder / "summary.md", ["export", "sample", "lineA", "--out", str(folder)]
        kept.write_text("keep")
        message = (f"--out {folder} already holds nuclei.csv, nuclei.parquet, summary.csv and 2 more; "
                   "pass --overwrite to replace them")
    else:
        kind, suffix = what.split("-")
        kept = tmp_path / f"out.{suffix}"
        kept.write_text("keep")
        argv = ["export", kind, "--out", str(kept)]
        message = f"--out {kept} already exists; pass --overwrite to replace it"
    assert main([*argv, "--db", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert kept.read_text() == "keep"
    assert main([*argv, "--db", str(path), "--overwrite"]) == 0
    assert kept.read_bytes() != b"keep" and kept.stat().st_size > 0
    if what == "sample":
        assert "# Sample report: lineA" in kept.read_text() and (tmp_path / "rep" / "notes.txt").read_text() == "mine"
    elif what == "labels-npz":
        from training.labelled import LabelledPatches

        assert len(LabelledPatches.load(kept)) == 3


def test_cli_umap_does_not_create_a_store_for_a_typo(tmp_path, capsys):
    typo = tmp_path / "no" / "such" / "TYPO.duckdb"
    assert main(["umap", "--db", str(typo)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {typo}: no such store"
    assert not (tmp_path / "no").exists()


def test_cli_umap_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["umap", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # as one line, whatever argparse's wrapping
    assert exc.value.code == 0
    for shown in ("UMAP n_neighbors (default: 15)", "UMAP min_dist (default: 0.1)",
                  "UMAP optimisation epochs (default: 200)", "the rest are placed (default: 5000)",
                  "distance between embeddings (default: euclidean)", "deterministic for a seed; default: 0)"):
        assert shown in text


def test_an_export_over_a_private_file_stays_private(filled, tmp_path):
    s, _, _ = filled
    out = tmp_path / "audit.csv"
    export.export_audit(s, out)
    out.chmod(0o600)
    export.export_audit(s, out)  # --overwrite: the new file takes the old one's permissions
    assert out.stat().st_mode & 0o777 == 0o600
    import os

    old = os.umask(0o077)
    try:  # a new file follows the umask, as an ordinary write would
        export.export_audit(s, tmp_path / "new.csv")
    finally:
        os.umask(old)
    assert (tmp_path / "new.csv").stat().st_mode & 0o777 == 0o600


def test_cli_umap_place_only_without_a_map_says_so_with_a_command_that_runs(tmp_path, capsys):
    import shlex

    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        m = fake_model("cur ü")  # model names come from folder names: spaces happen
        sid = samples.ensure_sample(s, "case", "case")
        write_scan_result(s, sid, synthetic_result("1" * 64, {m.name: [0.2, 0.7]}, emb_dim=6),
                          {m.name: registry.register_model(s, m)})
    assert main(["umap", "--place-only", "--db", str(db)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("cur ü: no map fitted yet, nothing placed; fit one with `genuine umap --model 'cur ü'")
    command = out.split("`")[1]
    assert shlex.split(command)[1:4] == ["umap", "--model", "cur ü"]  # pastes as one argument
    assert main(["store", "remove-model", "cur ü", "--db", str(db)]) == 2  # stdin is no terminal: needs --yes
    assert "genuine store remove-model 'cur ü' --db" in capsys.readouterr().err


def test_a_sample_report_without_a_chosen_model_still_states_the_call(tmp_path):
    """`genuine export sample` without --model opened with 'signed out' and stated no call at all: it now gives
    every model's call first (with --model, that model's call, as before)."""
    db = tmp_path / "s.duckdb"
    probs = np.r_[np.full(20, 0.95), np.full(40, 0.05)]
    with Store(db) as s:
        mids = {m: registry.register_model(s, fake_model(m)) for m in ("m1", "m2")}
        write_scan_result(s, samples.ensure_sample(s, "CASE-1", "case"),
                          synthetic_result("a" * 64, {"m1": probs, "m2": np.full(60, 0.05)}, seed=0), mids)
        registry.retire_model(s, "m2", by="admin")
    assert main(["export", "sample", "CASE-1", "--out", str(tmp_path / "r"), "--db", str(db)]) == 0
    facts = [ln for ln in (tmp_path / "r" / "summary.md").read_text().splitlines() if ln.startswith("- **")]
    assert facts[0] == "- **call (each model)**: m1: MNA; m2 (retired): non-MNA"
    assert facts[1] == "- **signed out**: not signed out"
    assert "call (each model)" in (tmp_path / "r" / "summary.html").read_text()
