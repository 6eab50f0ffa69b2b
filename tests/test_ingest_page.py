"""The Ingest page under ``streamlit.testing.v1.AppTest``: scan preview format, per-file channel maps,
pixel-content duplicates (the helpers and store of ``test_app.py``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("streamlit")

from test_app import _tiff_bytes, _upload, open_page  # noqa: E402


def test_ingest_preview_is_sent_as_png(store_copy):
    at = _upload(open_page("ingest"), ("scan.tif", _tiff_bytes()))
    urls = [img.url for e in at.get("image") for img in e.proto.imgs]
    assert len(urls) == 4  # composite and the three channels
    assert all(u.endswith(".png") for u in urls), urls  # not re-encoded as JPEG (blurs small coloured signals)


def test_an_upload_holding_a_stored_scans_pixels_is_a_duplicate_naming_it(store_copy):
    import io

    import tifffile
    from PIL import Image

    from test_app import _ingest

    data = _tiff_bytes()
    rgb8 = np.rint(tifffile.imread(io.BytesIO(data)) / 257).astype(np.uint8)  # 8 bits: a PNG holds them exactly
    tiff8, png = io.BytesIO(), io.BytesIO()
    tifffile.imwrite(tiff8, rgb8, photometric="rgb")
    Image.fromarray(rgb8).save(png, format="PNG")
    at = _ingest(_upload(open_page("ingest"), ("first.tif", tiff8.getvalue())), "FIRST")
    _ingest(_upload(at, ("first_again.png", png.getvalue())), "QA-DUP")
    dup = [i.value for i in at.info if "already stored" in i.value]
    assert len(dup) == 1 and dup[0].startswith("**first_again.png**: already stored as scan 4 in sample 'FIRST' from "
                                               "file 'first.tif' with channel map nmi=0,mycn=1,dapi=2 (RGB) (same "
                                               "pixels in another file")
    assert [lk.proto.label for lk in at.get("page_link")] == ["Open case FIRST"]


def _row_boxes(at, role: str) -> list:
    """The per-scan mapping boxes of ``role``, in upload order (the batch mapping's box left out)."""
    return [s for s in at.selectbox if s.key and s.key.startswith("ingest_map_") and s.key.endswith(f"_{role}")
            and s.key != f"ingest_map_{role}"]


def _four_channel_tiff(seed: int) -> bytes:
    """A scan stored as four channels (DAPI, NMI, MYCN, empty), as some microscopes export."""
    import io

    import tifffile

    rgb = tifffile.imread(io.BytesIO(_tiff_bytes(seed)))
    out = io.BytesIO()
    four = np.stack([rgb[..., 2], rgb[..., 0], rgb[..., 1], np.zeros_like(rgb[..., 0])], axis=-1)
    tifffile.imwrite(out, four, photometric="minisblack", planarconfig="contig")
    return out.getvalue()


def test_scans_of_different_channel_layouts_are_ingested_each_with_its_own_map(store_copy):
    from store.db import open_store

    from test_app import _ingest

    path, _ = store_copy
    at = _upload(open_page("ingest"), ("rgb.tif", _tiff_bytes(5)), ("four.tif", _four_channel_tiff(6)))
    assert not at.error and not at.get("toggle")  # no error: the layouts differ, so each scan has its map
    assert [b.value for b in _row_boxes(at, "dapi")] == [2, 2]  # the batch mapping preselected where it fits
    for role, channel in (("nmi", 1), ("mycn", 2), ("dapi", 0)):
        _row_boxes(at, role)[1].set_value(channel)
    at.selectbox(key="ingest_preview").set_value(1).run()
    assert not at.error and "four.tif" in at.get("image")[0].proto.imgs[0].caption
    assert not at.button(key="ingest_go").disabled
    _ingest(at, "MIXED-LAYOUTS")
    assert [s.value.split("**")[1] for s in at.success] == ["rgb.tif", "four.tif"], [e.value for e in at.error]
    with open_store(path) as s:
        maps = s.query("SELECT c.file_name, c.channel_map FROM scans c JOIN samples p ON p.id = c.sample_id "
                       "WHERE p.name = 'MIXED-LAYOUTS' ORDER BY c.id")
    assert maps["file_name"].tolist() == ["rgb.tif", "four.tif"]
    assert [json.loads(m) for m in maps["channel_map"]] == [{"nmi": 0, "mycn": 1, "dapi": 2},
                                                            {"nmi": 1, "mycn": 2, "dapi": 0}]


def test_a_map_per_scan_follows_the_batch_map_until_changed_and_names_a_bad_one(store_copy):
    at = _upload(open_page("ingest"), ("a.tif", _tiff_bytes(3)), ("b.tif", _tiff_bytes(4)))
    assert not _row_boxes(at, "nmi")  # one mapping for all, until asked
    at.toggle(key="ingest_per_scan").set_value(True).run()
    assert [b.value for b in _row_boxes(at, "mycn")] == [1, 1]
    at.selectbox(key="ingest_map_nmi").set_value(2)
    at.selectbox(key="ingest_map_dapi").set_value(0).run()
    assert [b.value for b in _row_boxes(at, "nmi")] == [2, 2]  # both follow the batch mapping
    _row_boxes(at, "nmi")[1].set_value(0)
    _row_boxes(at, "dapi")[1].set_value(2)
    at.run()
    at.selectbox(key="ingest_map_mycn").set_value("none").run()  # the first scan follows, the second keeps its own
    assert [b.value for b in _row_boxes(at, "mycn")] == ["none", 1]
    assert [b.value for b in _row_boxes(at, "nmi")] == [2, 0]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("`a.tif`: Choose the probe channels: channel map nmi=2,dapi=0 "
                                                     "has no MYCN channel")
    assert at.button(key="ingest_go").disabled
