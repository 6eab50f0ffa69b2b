"""``genuine segment``: outputs on a good scan, exit code 2 and nothing written on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from genuine_core.cli import main
from genuine_core.io import read_masks, write_scan_tiff


@pytest.fixture()
def toy_tif(tmp_path, toy_scan):
    p = tmp_path / "in" / "toy.tif"
    write_scan_tiff(p, toy_scan.image)
    return p


def test_segment_writes_masks_overlay_patches_table_summary(tmp_path, toy_tif, toy_scan, capsys):
    out = tmp_path / "out"
    code = main(["segment", str(toy_tif), "--out", str(out), "--backend", "watershed", "--patch-size", "64"])
    assert code == 0
    masks = read_masks(out / "toy_masks.tif")
    assert masks.shape == (256, 256) and masks.max() == 5
    patches = np.load(out / "toy_patches.npy")
    assert patches.shape == (4, 3, 64, 64) and patches.dtype == np.float16
    assert 0 <= float(patches.min()) and float(patches.max()) <= 1
    table = pd.read_parquet(out / "toy_nuclei.parquet")
    assert len(table) == 4 and (table.scan_id == "toy").all()
    from PIL import Image

    assert Image.open(out / "toy_overlay.png").size == (256, 256)
    summary = json.loads((out / "summary.json").read_text())
    img = summary["images"][0]
    assert (img["nuclei_found"], img["patches"], img["border_skipped"]) == (5, 4, 1)
    assert img["backend"] == "watershed" and img["channel_map"] == "nmi=0,mycn=1,dapi=2"
    assert img["command"] == summary["command"] == f"genuine segment {toy_tif} --out {out} --backend watershed --patch-size 64"
    assert set(img["seconds"]) == {"read", "segment", "patches", "write"}
    assert "5 nuclei" in capsys.readouterr().out


def test_segment_two_images_with_same_name_and_channel_map(tmp_path, toy_scan):
    a = tmp_path / "a" / "scan.tif"
    b = tmp_path / "b" / "scan.tif"
    for p in (a, b):
        p.parent.mkdir()
        # channel-first 4-channel stack with DAPI in channel 3
        stack = np.zeros((4, 256, 256), np.uint16)
        stack[0] = toy_scan.image[..., 1] * 65535
        stack[1] = toy_scan.image[..., 0] * 65535
        stack[3] = toy_scan.image[..., 2] * 65535
        tifffile.imwrite(p, stack, photometric="minisblack")
    out = tmp_path / "out"
    code = main(["segment", str(a), str(b), "--out", str(out), "--backend", "watershed",
                 "--channels", "nmi=1,mycn=0,dapi=3"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [i["name"] for i in summary["images"]] == ["scan", "scan-2"]
    assert summary["totals"]["nuclei_found"] == 10
    assert (out / "scan-2_masks.tif").is_file()


def _bad_inputs(tmp_path, bomb_tiff):
    """name -> (path, extra args, expected fragment of the message)."""
    text = tmp_path / "notes.tif"
    text.write_text("hello, not an image")
    two = tmp_path / "two.tif"
    tifffile.imwrite(two, np.ones((2, 64, 64), np.uint8), photometric="minisblack")
    black = tmp_path / "black.tif"
    write_scan_tiff(black, np.zeros((64, 64, 3), np.float32))
    good = tmp_path / "good.tif"
    rng = np.random.default_rng(0)
    write_scan_tiff(good, rng.random((64, 64, 3)).astype(np.float32))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[:4000])
    bomb = tmp_path / "bomb.tif"
    bomb.write_bytes(bomb_tiff(60_000, 60_000))
    return {
        "text": (text, [], "not an image"),
        "two-channel": (two, [], "2 channel"),
        "black": (black, [], "DAPI"),
        "truncated": (cut, [], "truncated"),
        "bomb": (bomb, [], "refusing to decode"),
        "bad channel map": (good, ["--channels", "nmi=0,dapi=0"], "channel map"),
        "missing cellpose model": (good, ["--backend", "cellpose", "--model", str(tmp_path / "none")], "not found"),
        "missing file": (tmp_path / "absent.tif", [], "no such file"),
    }


@pytest.mark.parametrize("case", ["text", "two-channel", "black", "truncated", "bomb", "bad channel map",
                                  "missing cellpose model", "missing file"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, toy_tif, bomb_tiff, case, capsys):
    path, extra, fragment = _bad_inputs(tmp_path, bomb_tiff)[case]
    out = tmp_path / "out"
    # the good scan first: it must not be processed either when a later input is bad
    code = main(["segment", str(toy_tif), str(path), "--out", str(out), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and "\n" not in err
    assert not out.exists()


def test_segment_reports_each_image_on_stderr_unless_quiet(tmp_path, toy_tif, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(toy_tif), "--out", str(out), "--backend", "watershed"]) == 0
    err = capsys.readouterr().err
    assert "[1/1] toy.tif: 256 x 256 px, segmenting (watershed) ..." in err  # before the slow part
    assert "[1/1] toy.tif: 5 nuclei, 4 patches, 1 skipped at the border" in err
    assert main(["segment", str(toy_tif), "--out", str(tmp_path / "q"), "--backend", "watershed", "--quiet"]) == 0
    assert "[1/1]" not in capsys.readouterr().err


def test_one_channel_image_says_three_channels_are_needed(tmp_path, capsys):
    one = tmp_path / "one.tif"
    tifffile.imwrite(one, np.ones((64, 64), np.uint8))
    assert main(["segment", str(one), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "needs 3 (NMI reference, MYCN, DAPI)" in err and "such as 'nmi=0" not in err


def test_out_naming_a_file_is_refused_before_any_image_is_read(tmp_path, capsys):
    target = tmp_path / "FILE"
    target.write_text("keep")
    absent = tmp_path / "absent.tif"  # would fail the image check: the --out check comes first
    assert main(["segment", str(absent), "--out", str(target)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {target} is not a folder (a file of that name exists)"
    assert target.read_text() == "keep"


def test_an_out_that_cannot_be_written_is_refused_before_any_image_is_read(tmp_path, toy_tif, capsys,
                                                                          monkeypatch):
    import genuine_core.commands.checks as checks

    locked = tmp_path / "locked"  # a read-only mount or a folder without write permission (root ignores chmod)
    locked.mkdir()
    real_access = checks.os.access
    monkeypatch.setattr(checks.os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    assert main(["segment", str(toy_tif), "--out", str(locked / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --out {locked / 'out'}: cannot write in {locked} (read-only or no permission)"
    assert list(locked.iterdir()) == []


def test_a_write_the_disk_refuses_mid_run_ends_with_one_line(tmp_path, toy_tif, capsys, monkeypatch):
    import errno

    import genuine_core.commands.segment as segment

    def refused(args):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out" / "toy_masks.tif"))

    monkeypatch.setattr(segment, "run", refused)
    assert main(["segment", str(toy_tif), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: cannot access {tmp_path / 'out' / 'toy_masks.tif'}: "
                                               "Read-only file system")


SEGMENT = ["--backend", "watershed", "--quiet"]


def test_segment_refuses_to_write_over_earlier_outputs_unless_overwrite(tmp_path, toy_tif, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(toy_tif), "--out", str(out), *SEGMENT]) == 0
    (out / "toy_overlay.png").write_bytes(b"keep")  # a marker: the refused run must not touch it
    summary = (out / "summary.json").read_bytes()
    capsys.readouterr()
    assert main(["segment", str(toy_tif), "--out", str(out), *SEGMENT]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --out {out} already holds toy_masks.tif, toy_overlay.png, toy_patches.npy and 1 more; "
                   "pass --overwrite to replace them")
    assert (out / "toy_overlay.png").read_bytes() == b"keep" and (out / "summary.json").read_bytes() == summary
    assert main(["segment", str(toy_tif), "--out", str(out), *SEGMENT, "--overwrite"]) == 0
    from PIL import Image

    assert Image.open(out / "toy_overlay.png").size == (256, 256)  # replaced by the real overlay
    assert [i["name"] for i in json.loads((out / "summary.json").read_text())["images"]] == ["toy"]


def test_segment_refusal_comes_before_any_image_is_read(tmp_path, toy_tif, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "toy_nuclei.parquet").write_text("keep")
    absent = tmp_path / "absent.tif"  # would fail the image check
    assert main(["segment", str(toy_tif), str(absent), "--out", str(out), *SEGMENT]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --out {out} already holds toy_nuclei.parquet; "
                                               "pass --overwrite to replace it")
    assert sorted(p.name for p in out.iterdir()) == ["toy_nuclei.parquet"]


def test_segment_summary_keeps_earlier_images_and_replaces_same_named_ones(tmp_path, toy_tif, capsys):
    out = tmp_path / "out"
    out.mkdir()
    # a summary written before images carried their settings, listing an image whose files are elsewhere
    old = {"backend": "cellpose", "model": "m.pt", "patch_size": 128, "diameter": 60.0,
           "patch_normalisation": "percentile", "totals": {"nuclei_found": 7, "patches": 6, "border_skipped": 1},
           "images": [{"image": "x/old.tif", "name": "old", "nuclei_found": 7, "patches": 6, "border_skipped": 1}]}
    (out / "summary.json").write_text(json.dumps(old))
    other = tmp_path / "in" / "other.tif"
    other.write_bytes(toy_tif.read_bytes())
    assert main(["segment", str(toy_tif), "--out", str(out), *SEGMENT]) == 0
    assert main(["segment", str(other), "--out", str(out), *SEGMENT]) == 0
    assert "(summary.json lists 3 images)" in capsys.readouterr().out
    assert main(["segment", str(toy_tif), "--out", str(out), *SEGMENT, "--overwrite", "--patch-size", "64"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    images = {i["name"]: i for i in summary["images"]}
    assert [i["name"] for i in summary["images"]] == ["old", "other", "toy"]  # toy's entry replaced, not doubled
    assert images["old"]["patch_size"] == 128 and images["old"]["backend"] == "cellpose"  # its run's settings
    assert images["other"]["patch_size"] == 96 and images["toy"]["patch_size"] == 64
    assert summary["patch_size"] == 64  # the top-level settings are the latest run's
    assert summary["totals"] == {"nuclei_found": 7 + 5 + 5, "patches": 6 + 4 + 4, "border_skipped": 1 + 1 + 1}
    assert not (out / "summary.json.tmp").exists()


@pytest.mark.parametrize("content, fragment", [
    (b"{not json", "is not valid JSON (Expecting property name"),
    (b"\xff\xfe{", "is not valid JSON"),  # not UTF-8
    (b"[1, 2]", "is not a genuine segment summary"),
    (b'{"images": {"toy": 1}}', "is not a genuine segment summary"),
    (b'{"images": [{"name": "a"}]}', "is not a genuine segment summary"),  # no counts to total
    (None, "cannot be read"),  # a folder of that name
], ids=["json", "utf8", "list", "images-not-a-list", "no-counts", "folder"])
def test_segment_refuses_an_unreadable_summary_and_writes_nothing(tmp_path, toy_tif, content, fragment, capsys):
    out = tmp_path / "out"
    out.mkdir()
    summary = out / "summary.json"
    if content is None:
        summary.mkdir()
    else:
        summary.write_bytes(content)
    # --overwrite replaces image files, not the list of every image in --out
    assert main(["segment", str(toy_tif), "--out", str(out), *SEGMENT, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {summary} {fragment}") and err.endswith("move it away (or repair it) and run again")
    assert "\n" not in err
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert content is None or summary.read_bytes() == content


def test_output_names_never_clash():
    from pathlib import Path

    from genuine_core.commands.segment import _output_names

    paths = [Path("a/scan.tif"), Path("b/scan.tif"), Path("c/scan-2.tif"), Path("d/scan.png")]
    assert _output_names(paths) == ["scan", "scan-2", "scan-2-2", "scan-3"]


def test_refuse_existing_names_three_files_then_counts(tmp_path):
    from genuine_core.commands.checks import refuse_existing
    from genuine_core.errors import InputError

    files = [tmp_path / f"f{i}.txt" for i in range(5)]
    refuse_existing(files, overwrite=False, folder=tmp_path)  # none exists: no error
    for f in files:
        f.write_text("x")
    with pytest.raises(InputError, match=r"^--out \S+ already holds f0.txt, f1.txt, f2.txt and 2 more; "
                                         r"pass --overwrite to replace them$"):
        refuse_existing(files, overwrite=False, folder=tmp_path)
    refuse_existing(files, overwrite=True, folder=tmp_path)
    with pytest.raises(InputError, match=r"f0.txt already exists; pass --overwrite to replace it$"):
        refuse_existing(files[:1], overwrite=False, option="--report")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="is a folder, not a file to replace"):
        refuse_existing([tmp_path / "d"], overwrite=True)


def test_an_image_interrupted_while_written_leaves_none_of_its_files(tmp_path, toy_tif, monkeypatch):
    import genuine_core.commands.segment as segment

    real = segment._write_outputs

    def interrupted(out, name, *args):
        real(out, name, *args)
        raise KeyboardInterrupt  # as if Ctrl-C came before the last file was complete

    monkeypatch.setattr(segment, "_write_outputs", interrupted)
    out = tmp_path / "out"
    assert main(["segment", str(toy_tif), "--out", str(out), *SEGMENT]) == 130
    assert list(out.iterdir()) == []  # the same command runs again without --overwrite


def test_model_without_the_cellpose_backend_and_an_empty_channel_map_are_refused(tmp_path, toy_tif, capsys):
    assert main(["segment", str(toy_tif), "--out", str(tmp_path / "o"), "--backend", "watershed",
                 "--model", "m.pt"]) == 2
    assert "--model applies to --backend cellpose only" in capsys.readouterr().err
    assert main(["segment", str(toy_tif), "--out", str(tmp_path / "o"), "--channels", ""]) == 2
    assert "dapi=<index> is required" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_second_command_writing_into_the_same_folder_is_refused(tmp_path, toy_tif, capsys):
    """Two runs into one --out (two terminals, or the Retrain page and a terminal) would mix their files."""
    import os

    from genuine_core.commands.checks import writing_into
    from genuine_core.errors import InputError

    out = tmp_path / "new" / "out"
    with writing_into(out):
        with pytest.raises(InputError, match=f"is being written by another genuine command \\(pid {os.getpid()}\\)"):
            with writing_into(out):
                pass
        assert main(["segment", str(toy_tif), "--out", str(out), "--backend", "watershed"]) == 2
        assert "is being written by another genuine command" in capsys.readouterr().err
        (tmp_path / "bench").mkdir()
        (tmp_path / "bench" / "nuclei.parquet").write_bytes(b"")  # enough for the up-front checks
        assert main(["train", "--kind", "resnet", "--preset", "tiny", "--data", str(tmp_path / "bench"),
                     "--out", str(out)]) == 2
        assert "is being written by another genuine command" in capsys.readouterr().err
        assert main(["synth", "benchmark", "--size", "tiny", "--seed", "0", "--out", str(out), "--quiet"]) == 2
        assert "is being written by another genuine command" in capsys.readouterr().err
        for extra in ([], ["--calibrate-only"]):
            assert main(["train-cellpose", "--out", str(out), "--epochs", "1", "--fields", "2", "--val-fields", "1",
                         *extra]) == 2
            assert "is being written by another genuine command" in capsys.readouterr().err
        link = tmp_path / "link"
        link.symlink_to(out.parent, target_is_directory=True)
        assert main(["segment", str(toy_tif), "--out", str(link / "out"), "--backend", "watershed"]) == 2
        assert "is being written by another genuine command" in capsys.readouterr().err  # one lock per folder
        assert not out.exists()
        (out / "fields").mkdir(parents=True)  # what the writer has made so far: not 'someone else's folder'
        for command in (["synth", "benchmark", "--size", "tiny", "--seed", "0", "--quiet", "--overwrite"],
                        ["train-cellpose", "--epochs", "1", "--fields", "2", "--val-fields", "1"]):
            assert main([*command, "--out", str(out)]) == 2
            assert "is being written by another genuine command" in capsys.readouterr().err
    assert main(["segment", str(toy_tif), "--out", str(out), "--backend", "watershed"]) == 0  # released
