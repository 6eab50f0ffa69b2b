"""The Ingest page under ``streamlit.testing.v1.AppTest``: scan preview format, per-file channel maps,
pixel-content duplicates (the helpers and store of ``test_app.py``)."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")

from test_app import _tiff_bytes, _upload, open_page  # noqa: E402


def test_ingest_preview_is_sent_as_png(store_copy):
    at = _upload(open_page("ingest"), ("scan.tif", _tiff_bytes()))
    urls = [img.url for e in at.get("image") for img in e.proto.imgs]
    assert len(urls) == 4  # composite and the three channels
    assert all(u.endswith(".png") for u in urls), urls  # not re-encoded as JPEG (blurs small coloured signals)
