"""The same image in another file (format, compression, metadata) is a duplicate: pixel fingerprints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from _store_fakes import fake_model, store_at_version, threshold_segmenter
from conftest import make_toy_scan
from genuine_core.io import ChannelMap, fingerprint_file, read_scan
from store import check, ingest, migrations
from store.db import Store


def _rgb8(seed: int = 100) -> np.ndarray:
    """A toy scan as (H, W, 3) uint8, the pixels every file below stores."""
    return np.rint(np.clip(make_toy_scan(seed=seed).image, 0, 1) * 255).astype(np.uint8)


def _saves(folder: Path, pixels: np.ndarray) -> dict[str, Path]:
    """The same pixels as a plain TIFF, a zlib TIFF with a description, a channel-first TIFF and a PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {k: folder / f"scan_{k}.{'png' if k == 'png' else 'tif'}" for k in ("tiff", "zlib", "planar", "png")}
    tifffile.imwrite(paths["tiff"], pixels, photometric="rgb", metadata=None)
    tifffile.imwrite(paths["zlib"], pixels, photometric="rgb", compression="zlib", description="re-saved")
    tifffile.imwrite(paths["planar"], np.moveaxis(pixels, -1, 0), photometric="rgb", planarconfig="separate",
                     metadata=None)
    Image.fromarray(pixels).save(paths["png"])
    return paths


def test_the_fingerprint_follows_the_pixels_not_the_file(tmp_path):
    pixels = _rgb8()
    paths = _saves(tmp_path, pixels)
    read = {k: read_scan(p) for k, p in paths.items()}
    assert len({s.sha256 for s in read.values()}) == 4  # four different files
    assert len({s.pixel_sha256 for s in read.values()}) == 1  # one image
    assert read_scan(paths["png"], ChannelMap.parse("BGR")).pixel_sha256 == read["tiff"].pixel_sha256  # before mapping
    assert fingerprint_file(paths["zlib"]) == (read["zlib"].sha256, read["tiff"].pixel_sha256)
    other = pixels.copy()
    other[0, 0, 0] ^= 1  # one value differs
    tifffile.imwrite(tmp_path / "other.tif", other, photometric="rgb")
    wide = tmp_path / "wide.tif"  # the same values in 16 bits: another pixel type, another image
    tifffile.imwrite(wide, pixels.astype(np.uint16), photometric="rgb")
    assert read_scan(tmp_path / "other.tif").pixel_sha256 != read["tiff"].pixel_sha256
    assert read_scan(wide).pixel_sha256 != read["tiff"].pixel_sha256


@pytest.fixture()
def models():
    return [fake_model("gen", patch_size=64)]


def _ingest(store, paths, models, **kw):
    return ingest.ingest_files(store, paths, kw.pop("sample", "case1"), models=models, progress=False,
                               segmenter=threshold_segmenter, **kw)


def test_the_same_image_in_another_file_is_a_duplicate_naming_the_stored_scan(store, models, tmp_path):
    paths = _saves(tmp_path / "scans", _rgb8())
    first = _ingest(store, [paths["tiff"]], models)
    assert first.outcomes[0].status == "stored"
    again = _ingest(store, [paths["png"], paths["zlib"]], models, sample="other",
                    channel_map=ChannelMap.parse("BGR"))
    assert [o.status for o in again.outcomes] == ["duplicate", "duplicate"]
    msg = again.outcomes[0].message
    assert msg.startswith("already stored as scan 1 in sample 'case1' from file 'scan_tiff.tif' with channel map "
                          "nmi=0,mycn=1,dapi=2 (RGB) (same pixels in another file")
    assert "this ingest asked for nmi=2,mycn=1,dapi=0 (BGR)" in msg and "store remove-scan 1" in msg
    assert again.outcomes[0].scan_id == 1 and again.outcomes[0].holder == "case1"
    assert store.scalar("SELECT count(*) FROM scans") == 1 and store.scalar("SELECT count(*) FROM samples") == 1
    # the file sha256 stays the file's; the pixels' fingerprint is stored beside it
    row = store.query("SELECT sha256, pixel_sha256 FROM scans").iloc[0]
    assert row["sha256"] == read_scan(paths["tiff"]).sha256 and row["pixel_sha256"] == read_scan(paths["png"]).pixel_sha256


def test_two_saves_of_one_image_in_a_batch_store_it_once(store, models, tmp_path):
    paths = _saves(tmp_path / "scans", _rgb8())
    report = _ingest(store, [paths["planar"], paths["png"]], models)
    assert [o.status for o in report.outcomes] == ["stored", "duplicate"]
    assert report.outcomes[1].message == "already stored as an earlier file of this batch (same pixels); nothing written"


def _version_7_store(path: Path, scans: list[Path], models) -> None:
    """A store written before pixel fingerprints were recorded (schema step 7), holding ``scans``."""
    with Store(path) as s:
        _ingest(s, scans, models)
    conn = store_at_version(path.with_name("empty.duckdb"), 7)  # proof that step 8 is the column's only source
    assert "pixel_sha256" not in {r[0] for r in conn.execute("DESCRIBE scans").fetchall()}
    conn.close()
    import duckdb

    conn = duckdb.connect(str(path))
    conn.execute("ALTER TABLE scans DROP COLUMN pixel_sha256")
    conn.execute("DELETE FROM schema_version WHERE version > 7")
    conn.close()


def test_an_older_store_learns_its_scans_fingerprints_when_needed(tmp_path, models):
    paths = _saves(tmp_path / "scans", _rgb8())
    gone = tmp_path / "scans" / "gone.tif"
    tifffile.imwrite(gone, _rgb8(seed=101), photometric="rgb")
    db = tmp_path / "old.duckdb"
    _version_7_store(db, [paths["tiff"], gone], models)
    gone_png = tmp_path / "gone.png"
    Image.open(gone).save(gone_png)
    gone.unlink()  # its file is no longer found: its fingerprint stays unknown
    with Store(db) as s:  # migrated on opening for writing
        assert s.scalar("SELECT max(version) FROM schema_version") == migrations.LATEST
        assert s.scalar("SELECT count(*) FROM scans WHERE pixel_sha256 IS NULL") == 2
        assert check.check_store(s) == []  # an unknown fingerprint is no problem
        report = _ingest(s, [paths["png"], gone_png], models, sample="later")
        assert [o.status for o in report.outcomes] == ["duplicate", "stored"]
        assert "from file 'scan_tiff.tif'" in report.outcomes[0].message
        known = s.query("SELECT id, pixel_sha256 FROM scans ORDER BY id")
        assert known["pixel_sha256"].tolist()[0] == read_scan(paths["tiff"]).pixel_sha256
        assert known["pixel_sha256"].isna().tolist() == [False, True, False]
        assert check.check_store(s) == []


def test_an_older_scan_whose_file_changed_is_read_once_not_at_every_ingest(tmp_path, models, monkeypatch):
    """A stored scan's file that now holds other bytes cannot give its fingerprint: it was read again at every
    ingest of a scan of its size; now it is recorded as unknowable and read once."""
    from store import fingerprints

    old = tmp_path / "scans" / "old.tif"
    old.parent.mkdir()
    tifffile.imwrite(old, _rgb8(seed=102), photometric="rgb")
    db = tmp_path / "old.duckdb"
    _version_7_store(db, [old], models)
    tifffile.imwrite(old, _rgb8(seed=103), photometric="rgb")  # the same name, other pixels now
    reads = []
    real = fingerprints.fingerprint_file
    monkeypatch.setattr(fingerprints, "fingerprint_file", lambda path: reads.append(path) or real(path))
    news = [tmp_path / f"new{k}.tif" for k in range(2)]
    for k, path in enumerate(news):
        tifffile.imwrite(path, _rgb8(seed=104 + k), photometric="rgb")
    with Store(db) as s:
        for path in news:
            assert [o.status for o in _ingest(s, [path], models).outcomes] == ["stored"]
        assert reads == [old]
        assert s.scalar("SELECT pixel_sha256 FROM scans ORDER BY id LIMIT 1") == fingerprints.UNKNOWABLE
        assert check.check_store(s) == []


def test_cli_ingest_names_the_scan_holding_the_same_pixels(tmp_path, capsys, monkeypatch):
    from genuine_core.cli import main
    from test_ingest import _cli_models

    models = _cli_models(tmp_path, monkeypatch)
    paths = _saves(tmp_path / "scans", _rgb8())
    db = tmp_path / "s.duckdb"
    common = ["--models", str(models), "--db", str(db), "--quiet"]
    assert main(["ingest", str(paths["tiff"]), "--sample", "S", *common]) == 0
    capsys.readouterr()
    assert main(["ingest", str(paths["png"]), "--sample", "T", *common]) == 0  # already stored: not a failure
    out = capsys.readouterr().out
    assert (f"duplicate {paths['png']}: already stored as scan 1 in sample 'S' from file 'scan_tiff.tif' with "
            "channel map nmi=0,mycn=1,dapi=2 (RGB) (same pixels in another file") in out
    assert "0 stored, 1 already stored, 0 failed" in out
