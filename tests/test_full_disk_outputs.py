"""A disk that fills up while a command writes its set of files (segment, probe, evaluate, export sample).

Before, a full disk left half a set behind: probe kept ``probe_curve.csv`` and ``probe.json`` without the
PNG, evaluate a cut ``evaluation.json`` beside a figure, export sample ``nuclei.csv`` with an empty
``nuclei.parquet`` (and the next run was refused, "pass --overwrite"); segment ended in a traceback on
numpy's short write, which carries no errno. Now each set lands whole or not at all
(``genuine_core.atomic.staged_into``) and the command ends with one line naming the file, exit code 2.
"""

from __future__ import annotations

import errno
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from genuine_core import atomic
from genuine_core.cli import main
from genuine_core.io import write_scan_tiff

FULL = "No space left on device"


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, FULL)


def _files(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, hidden ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_staged_files_land_together_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("earlier")
    with pytest.raises(OSError) as info:
        with atomic.staged_into(out) as stage:
            (stage / "a.txt").write_text("new")
            raise OSError("1741824 requested and 935872 written")  # numpy's short write: no errno
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(out)
    assert _files(out) == ["a.txt"] and (out / "a.txt").read_text() == "earlier"
    with atomic.staged_into(out) as stage:
        (stage / "a.txt").write_text("new")
        (stage / "b.txt").write_text("b")
    assert _files(out) == ["a.txt", "b.txt"] and (out / "a.txt").read_text() == "new"


def test_a_staged_file_the_disk_refused_is_named_by_its_place_in_the_folder(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OSError) as info:
        with atomic.staged_into(out) as stage:
            raise OSError(errno.ENOSPC, FULL, str(stage / "x.csv"))
    assert info.value.filename == str(out / "x.csv")
    with pytest.raises(ValueError):  # anything else passes through as it was
        with atomic.staged_into(out):
            raise ValueError("not a write")


def test_segment_on_a_full_disk_ends_with_one_line_and_no_files(tmp_path, toy_scan, capsys, monkeypatch):
    scan = tmp_path / "in" / "toy.tif"
    write_scan_tiff(scan, toy_scan.image)
    out = tmp_path / "out"

    def short_write(*args, **kwargs):
        raise OSError("1741824 requested and 935872 written")

    monkeypatch.setattr(np, "save", short_write)
    assert main(["segment", str(scan), "--out", str(out), "--backend", "watershed", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"error: cannot access {out}: {FULL}"
    assert [f for f in _files(out) if not f.startswith(".")] == []


def test_probe_on_a_full_disk_writes_none_of_its_three_files(tmp_path, capsys, monkeypatch):
    import training.cli_probe as cli_probe

    curve = pd.DataFrame({"n_mycn": [0, 1], "mean_pred": [0.1, 0.2]})
    monkeypatch.setattr(cli_probe, "load", lambda model, db: SimpleNamespace(name="m", checksum="c" * 64,
                                                                            patch_size=32))
    monkeypatch.setattr(cli_probe, "compute", lambda model, s, progress=None, backgrounds=None: {
        "curve": curve, "crossings": [], "truth_crossings": [], "x": "n_mycn"})
    monkeypatch.setattr(cli_probe, "plot", _disk_full)  # the PNG, written last
    out = tmp_path / "probe"
    argv = ["probe", "--model", "m", "--vary", "count", "--out", str(out)]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"error: cannot access {out}: {FULL}"
    assert _files(out) == []
    monkeypatch.setattr(cli_probe, "plot", lambda res, title, path: Path(path).write_bytes(b"\x89PNG"))
    assert main(argv) == 0  # not refused as "already holds probe_curve.csv"
    assert _files(out) == ["probe.json", "probe.png", "probe_curve.csv"]


def test_evaluation_report_on_a_full_disk_keeps_the_earlier_report(tmp_path, monkeypatch):
    import training.report as report

    res = {"meta": {}, "models": []}
    out = tmp_path / "r"
    report.write_report(res, out)
    before = {f: (out / f).read_bytes() for f in _files(out)}
    monkeypatch.setattr(report, "render_markdown", _disk_full)  # after evaluation.json was written
    with pytest.raises(OSError, match=FULL):
        report.write_report({"meta": {"note": "new"}, "models": []}, out)
    assert {f: (out / f).read_bytes() for f in _files(out)} == before


def _short_write(*args, **kwargs):
    raise OSError("786432 requested and 524176 written")  # numpy's tofile on a full disk: no errno


def test_a_benchmark_cut_short_by_a_full_disk_is_removed_and_named(tmp_path, capsys, monkeypatch):
    # the fields written so far stayed, without nuclei.parquet: a folder every later command refused
    out = tmp_path / "bench"
    monkeypatch.setattr(pd.DataFrame, "to_parquet", _short_write)  # nuclei.parquet, after every field
    assert main(["synth", "benchmark", "--size", "tiny", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"error: cannot access {out}: {FULL}"
    assert _files(out) == []
    monkeypatch.undo()
    assert main(["synth", "benchmark", "--size", "tiny", "--out", str(out), "--quiet"]) == 0  # not refused


def test_a_short_write_anywhere_ends_with_one_line_not_a_traceback(capsys, monkeypatch):
    import genuine_core.commands.segment as segment

    monkeypatch.setattr(segment, "run", _short_write)
    assert main(["segment", "x.tif", "--out", "o"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: cannot write an output file: {FULL} "
                                               "(786432 requested and 524176 written)")


def test_a_single_file_the_disk_refused_is_named_not_its_temporary_copy(tmp_path, capsys):
    # genuine export audit said 'cannot access an output file: Error writing bytes to file. Detail: [errno 28] ...'
    out = tmp_path / "audit.csv"
    with pytest.raises(OSError) as info:
        with atomic.replacing(out):
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert (info.value.filename, info.value.strerror) == (str(out), FULL)
    with pytest.raises(OSError) as info:
        with atomic.replacing(out) as tmp:
            raise OSError(errno.ENOSPC, FULL, str(tmp))
    assert info.value.filename == str(out) and list(tmp_path.iterdir()) == []


def test_a_checkpoint_the_disk_refused_is_named_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    # safetensors' own error ('... No space left on device (os error 28)') ended genuine train in a traceback
    import torch

    import training.checkpoint as checkpoint

    class SafetensorError(Exception):
        pass

    def refused(tensors, path):
        Path(path).write_bytes(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", refused)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(OSError) as info:
        checkpoint.save_checkpoint(tmp_path, model, None, opt, {"epoch": 1})
    ck = tmp_path / checkpoint.CHECKPOINT_DIR
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(ck / checkpoint.TENSORS))
    assert list(ck.iterdir()) == []
