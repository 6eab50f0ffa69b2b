"""The Ingest page under ``streamlit.testing.v1.AppTest``: scan preview format, per-file channel maps,
pixel-content duplicates (the helpers and store of ``test_app.py``)."""

from __future__ import annotations

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
