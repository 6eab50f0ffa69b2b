"""Hostile and broken inputs (issue 6, point 1) through every entry point.

Each case of ``hostile_cases.py`` goes through ``genuine ingest`` and ``genuine segment``
(``genuine_core.cli.main``, in process) and through the upload page's code path
(``store.ingest.ingest_upload``: header check, save, ingest). A refused file gets one
line naming the problem and leaves the store byte-for-byte unchanged (row counts of
every table, the file's sha256, the files beside it); an accepted file is stored and
the store passes ``genuine store check``.

Decisions asserted here:

* 16-bit integer TIFFs are accepted and scaled by 65535 (not by their maximum), so a
  12-bit camera's data in a 16-bit file stays dim but exact; segmentation and patches
  normalise per scan, so it gives the same nuclei as the full-range file. 32/64-bit
  integers: by 65535 when their values fit in 16 bits, else by their maximum.
* Float TIFFs are accepted: values in [0, 1] are kept, a larger range is divided by its
  maximum, negative values are clipped to 0. NaN or +/-inf anywhere: refused.
* Images with 1, 2, 4 or 5 channels need a channel map (refused with the channel count
  without one); channel-first and channel-last files give the identical scan.
* An image with no nuclei is refused by the ingest ("no nuclei found"): it is an empty
  field or a wrong channel map, and storing it would block the corrected re-ingest (the
  same bytes count as already stored). ``genuine segment`` writes its empty outputs and
  reports 0 nuclei. Nuclei tiling the whole field (no background) are accepted; one
  region covering the field touches every border and is refused like an empty field.
* Decompression bombs are refused from the header, above ``GENUINE_MAX_PIXELS`` (default
  64 million), before any decoder runs.
"""

from __future__ import annotations

import re
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import make_bomb_tiff, make_toy_scan
from hostile_cases import SMALL_LIMIT, Case, hostile_cases, png_bomb, tiff_bytes
from hostile_cases import store_snapshot as snapshot

from genuine_core.cli import main
from genuine_core.errors import InputError
from genuine_core.io import (
    ChannelMap,
    decode_scan,
    inspect_scan,
    read_scan,
    write_scan_tiff,
)

CASES = {c.name: c for c in hostile_cases()}
SAMPLE = "HOSTILE"
#: accepted cases run in the fast suite (the rest, a full ingest of ~0.5 s each, with -m slow; their
#: decoding is checked fast by test_bit_depths_are_scaled_sensibly and test_channel_first_and_last_...)
FAST_ACCEPTED = {"16-bit TIFF", "float64 TIFF in [0, 1000]", "5 channels last (H, W, C), mapped",
                 "all nuclei (tiled, no background)", "no nuclei (background and noise)"}


def _params() -> list:
    """Every case; accepted ones outside FAST_ACCEPTED marked slow (each is a full ingest, ~0.5 s)."""
    return [pytest.param(n, marks=pytest.mark.slow) if c.expect == "accepted" and n not in FAST_ACCEPTED else n
            for n, c in CASES.items()]


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A folder holding one tiny (untrained) ratio model folder."""
    from genuine_core.models import build_model, preset_config

    root = tmp_path_factory.mktemp("models")
    build_model(preset_config("tiny", "ratio")).save(root / "tiny-ratio")
    return root


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, model_dir) -> Path:
    """A store holding one good scan (sample BASE), written by ``genuine ingest``."""
    root = tmp_path_factory.mktemp("base")
    scan = root / "good.tif"
    write_scan_tiff(scan, make_toy_scan(seed=3).image)
    db = root / "store.duckdb"
    assert main(["ingest", str(scan), "--sample", "BASE", "--db", str(db), "--models", str(model_dir), "--quiet",
                 "--no-umap"]) == 0
    return db


@pytest.fixture(scope="module")
def base_snapshot(base_store) -> dict:
    return snapshot(base_store)


@pytest.fixture()
def db(base_store, base_snapshot, tmp_path) -> Path:
    """A private copy of the base store (its snapshot is ``base_snapshot``)."""
    dst = tmp_path / "store" / "store.duckdb"
    dst.parent.mkdir()
    shutil.copy(base_store, dst)
    return dst


def check(db: Path) -> list[str]:
    from store.check import check_store
    from store.db import Store

    with Store(db, read_only=True) as s:
        return check_store(s)


def _write(case: Case, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / case.filename
    path.write_bytes(case.data)
    return path


def _env(case: Case, monkeypatch) -> None:
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)


# ---------------------------------------------------------------------------------- the three paths
@pytest.mark.parametrize("name", _params())
def test_cli_ingest(name, db, base_snapshot, model_dir, tmp_path, capsys, monkeypatch):
    case = CASES[name]
    path = _write(case, tmp_path / "in")
    before = base_snapshot
    _env(case, monkeypatch)
    args = ["ingest", str(path), "--sample", SAMPLE, "--db", str(db), "--models", str(model_dir), "--quiet",
            "--no-umap"] + (["--channels", case.channels] if case.channels else [])
    code = main(args)
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    after = snapshot(db)
    if case.expect == "refused":
        assert code == 2, out
        # a file is refused on its own line; a channel map that cannot work for any file, before any is read
        failed = [line for line in out if line.startswith("failed")] or captured.err.strip().splitlines()
        assert len(failed) == 1 and re.search(case.fragment, failed[0]), (out, captured.err)
        assert after == before  # not a row, not a byte
    else:
        assert code == 0, out
        assert out[0].startswith("stored") and "nuclei" in out[0], out
        assert after["counts"]["scans"] == before["counts"]["scans"] + 1
        assert after["counts"]["nuclei"] > before["counts"]["nuclei"]
        assert check(db) == []


@pytest.mark.parametrize("name", _params())
def test_cli_segment(name, tmp_path, capsys, monkeypatch):
    case = CASES[name]
    expect, fragment = case.segment or (case.expect, case.fragment)
    path = _write(case, tmp_path / "in")
    _env(case, monkeypatch)
    out = tmp_path / "out"
    code = main(["segment", str(path), "--out", str(out), "--backend", "watershed"]
                + (["--channels", case.channels] if case.channels else []))
    captured = capsys.readouterr()
    if expect == "refused":
        err = captured.err.strip()
        assert code == 2 and err.startswith("error:") and "\n" not in err, err
        assert re.search(fragment, err), err
        assert not out.exists()
    else:
        assert code == 0, captured.err
        assert (out / "summary.json").is_file()
        assert re.search(r"\d+ nuclei", captured.out)


@pytest.mark.parametrize("name", _params())
def test_upload_page_path(name, db, base_snapshot, model_dir, monkeypatch):
    """What pages/ingest.py does with an uploaded file's bytes (store.ingest.ingest_upload)."""
    from genuine_core.pipeline import load_model
    from store.db import Store
    from store.ingest import ingest_upload, uploads_dir

    case = CASES[name]
    before = base_snapshot
    _env(case, monkeypatch)
    model = load_model(model_dir / "tiny-ratio")
    cmap = ChannelMap.parse(case.channels) if case.channels else ChannelMap(0, 1, 2)  # the page's default mapping
    with Store(db) as store:
        report = ingest_upload(store, uploads_dir(db), case.filename, case.data, SAMPLE, models=[model],
                               channel_map=cmap, place_umap=False)
    (outcome,) = report.outcomes
    after = snapshot(db)
    if case.expect == "refused":
        fragment = case.page_fragment or case.fragment
        if fragment == ".*":  # the page's RGB default makes this file readable
            assert outcome.status == "stored", outcome.message
            return
        assert outcome.status == "failed" and "\n" not in outcome.message
        assert re.search(fragment, outcome.message), outcome.message
        assert Path(outcome.path).name.endswith(Path(case.filename).name)
        assert after == before
        assert not uploads_dir(db).is_dir() or not any(uploads_dir(db).iterdir())
    else:
        assert outcome.status == "stored", outcome.message
        assert after["counts"]["scans"] == before["counts"]["scans"] + 1
        assert list(after["files"]) == [f"uploads/{Path(outcome.path).name}"]
        assert check(db) == []


# ---------------------------------------------------------------------------------- decompression bombs
@pytest.mark.parametrize("kind", ["tiff", "png"])
def test_bomb_refused_before_any_decoder_runs(kind, tmp_path, monkeypatch):
    """The header check refuses a 3.6-gigapixel bomb: no decoder is called and memory stays small."""
    import tifffile
    from PIL import ImageFile

    def never(*args, **kwargs):
        raise AssertionError("a decoder was called on a decompression bomb")

    for target, attr in [(tifffile.TiffPageSeries, "asarray"), (tifffile.TiffFile, "asarray"),
                         (tifffile.TiffPage, "asarray"), (tifffile.TiffPage, "decode"),
                         (ImageFile.ImageFile, "load")]:
        monkeypatch.setattr(target, attr, never)
    data = make_bomb_tiff(60_000, 60_000) if kind == "tiff" else png_bomb(60_000, 60_000)
    assert len(data) < 200_000  # a small file ...
    path = tmp_path / f"bomb.{kind}"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        for call in (lambda: read_scan(path), lambda: inspect_scan(data), lambda: decode_scan(data, "bomb")):
            with pytest.raises(InputError, match="refusing to decode"):
                call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6  # ... declaring 10.8 GB of pixels: never allocated


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    toy = make_toy_scan(seed=4).image  # 256 x 256 = 65 536 pixels
    data = tiff_bytes(np.rint(toy * 65535).astype(np.uint16), photometric="rgb")
    assert decode_scan(data, max_pixels=65_536).image.shape == (256, 256, 3)
    with pytest.raises(InputError, match="above the limit of 65535"):
        decode_scan(data, max_pixels=65_535)
    monkeypatch.setenv("GENUINE_MAX_PIXELS", str(SMALL_LIMIT))
    with pytest.raises(InputError, match=f"above the limit of {SMALL_LIMIT}"):
        decode_scan(data)
    assert decode_scan(data, max_pixels=10**6).image.shape == (256, 256, 3)  # an explicit limit wins
    monkeypatch.setenv("GENUINE_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="GENUINE_MAX_PIXELS"):
        decode_scan(data)
    for bad in ("0", "-1"):  # said 'pixel limit must be a positive integer, got -1': which limit, set where?
        monkeypatch.setenv("GENUINE_MAX_PIXELS", bad)
        with pytest.raises(InputError, match=rf"^\$GENUINE_MAX_PIXELS='{bad}' must be a positive number of pixels$"):
            decode_scan(data)


# ---------------------------------------------------------------------------------- what "accepted" means
def _nuclei(image: np.ndarray) -> int:
    from genuine_core.segmentation import segment

    return int(segment(image).max())


def test_bit_depths_are_scaled_sensibly():
    full = decode_scan(CASES["16-bit TIFF"].data).image
    twelve = decode_scan(CASES["12-bit data in a 16-bit TIFF"].data).image
    wide = decode_scan(CASES["32-bit integer TIFF"].data).image
    np.testing.assert_allclose(twelve * 65535 / 4095, full, atol=2e-4)  # by the type's maximum, not rescaled
    np.testing.assert_allclose(wide, twelve, atol=1e-7)  # 16-bit data in a 32-bit container
    f32 = decode_scan(CASES["float32 TIFF in [0, 1]"].data).image
    f64 = decode_scan(CASES["float64 TIFF in [0, 1000]"].data).image
    np.testing.assert_allclose(f64, f32 / f32.max(), atol=1e-6)  # a larger range is divided by its maximum
    assert 0.0 <= min(x.min() for x in (full, twelve, wide, f32, f64)) and max(x.max() for x in (f32, f64)) <= 1.0
    counts = {_nuclei(x) for x in (full, twelve, wide, f32, f64)}
    assert counts == {5}  # the same five toy nuclei whatever the depth


def test_channel_first_and_last_give_the_same_scan():
    last = decode_scan(CASES["3 channels last (H, W, 3) pages"].data).image
    for name in ("3 channels first (planar RGB)", "3 channels first, no photometric", "PNG named .tif"):
        np.testing.assert_array_equal(decode_scan(CASES[name].data).image, last)
    cmap = ChannelMap.parse("nmi=4,mycn=1,dapi=0")
    first5 = decode_scan(CASES["5 channels first (C, H, W), mapped"].data, channel_map=cmap)
    last5 = decode_scan(CASES["5 channels last (H, W, C), mapped"].data, channel_map=cmap)
    assert first5.source_shape == (5, 256, 256) and last5.source_shape == (256, 256, 5)
    np.testing.assert_array_equal(first5.image, last5.image)
    np.testing.assert_array_equal(first5.image, last)  # DAPI from channel 0, NMI from 4: the toy's RGB again


def test_empty_and_full_fields():
    from hostile_cases import noise_image, one_blob, tiled_nuclei

    from genuine_core.patches import extract_patches
    from genuine_core.segmentation import segment

    assert _nuclei(noise_image()) == 0  # Otsu alone would split noise into dozens of blobs
    # ... while the noisiest field the generator makes (lowest exposure, contrast ~4 noise SDs) keeps its nuclei
    from genuine_core.synth import make_field
    from genuine_core.synth.acquisition import Acquisition

    dim = make_field(np.random.default_rng(0), {"mna_dm": 1.0}, 8, shape=(256, 256),
                     acquisition=Acquisition(exposure=0.05, full_well=100))
    assert _nuclei(dim.image) == dim.masks.max() == 8
    tiled = tiled_nuclei()
    masks = segment(tiled)
    ps = extract_patches(tiled, masks, size=64)
    assert masks.max() >= 12 and len(ps.patches) >= 9
    assert np.isfinite(ps.patches).all() and ps.patches.max() == 1.0
    blob = segment(one_blob())  # a nucleus bigger than the field, cut by its corner
    assert blob.max() == 1 and extract_patches(one_blob(), blob, size=64).n_border_skipped == 1
    # masks covering every pixel: no background to subtract, still finite patches
    full = np.arange(1, 65, dtype=np.int32).reshape(8, 8).repeat(32, 0).repeat(32, 1)
    ps = extract_patches(tiled, full, size=48)
    assert len(ps.patches) == 36 and ps.n_border_skipped == 28 and (ps.background == 0).all()
    assert np.isfinite(ps.patches).all()


def test_a_failed_batch_creates_no_sample_and_registers_no_model(tmp_path, model_dir, capsys):
    """A fresh store: a batch whose files all fail writes nothing, not even the store file."""
    bad = _write(CASES["text named .tif"], tmp_path / "in")
    empty = _write(CASES["no nuclei (background and noise)"], tmp_path / "in")
    db = tmp_path / "fresh.duckdb"
    assert main(["ingest", str(bad), str(empty), "--sample", "NEW", "--db", str(db), "--models", str(model_dir),
                 "--quiet", "--no-umap"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no store, no WAL, no files folder
    good = tmp_path / "in" / "good.tif"
    write_scan_tiff(good, make_toy_scan(seed=8).image)
    assert main(["ingest", str(bad), str(good), "--sample", "NEW", "--db", str(db), "--models", str(model_dir),
                 "--quiet", "--no-umap"]) == 1
    counts = snapshot(db)["counts"]
    assert (counts["samples"], counts["models"], counts["scans"]) == (1, 1, 1)
    assert check(db) == []
    capsys.readouterr()


def test_sample_clash_is_refused_before_reading(db, model_dir, tmp_path, capsys):
    good = tmp_path / "g.tif"
    write_scan_tiff(good, make_toy_scan(seed=9).image)
    before = snapshot(db)
    code = main(["ingest", str(good), "--sample", "BASE", "--kind", "mixture", "--db", str(db), "--models",
                 str(model_dir), "--quiet", "--no-umap"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "already exists with kind 'case'" in err and "\n" not in err
    assert snapshot(db) == before


@pytest.mark.parametrize("name", ["CASE\n17", "CASE-\x1b[31m17", "tab\there"])
def test_a_sample_name_with_control_characters_is_refused(name, db, model_dir, tmp_path, capsys):
    # it was stored, and its newline or terminal escape then forged lines of `genuine store scans` and reports
    from store.db import Store
    from store.samples import ensure_sample

    good = tmp_path / "g.tif"
    write_scan_tiff(good, make_toy_scan(seed=9).image)
    before = snapshot(db)
    code = main(["ingest", str(good), "--sample", name, "--db", str(db), "--models", str(model_dir), "--quiet",
                 "--no-umap"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (f"error: sample name {name!r} holds control characters "
                                               "(newlines, escapes); choose another")
    assert snapshot(db) == before
    with Store(db) as s, pytest.raises(InputError, match="control characters"):  # the Ingest page's way in
        ensure_sample(s, name)
