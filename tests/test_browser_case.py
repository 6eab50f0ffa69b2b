"""The Cases page's case view at 1280 px in a real headless Chromium: every option of the nucleus gallery's
Show control is in view, the 'excluded' one included (it appears once a curator excluded a nucleus)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from test_app_store import build_small_store

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from served_app import CHROMIUM, LAUNCH_ARGS, serve_app  # noqa: E402


def test_the_gallery_filter_fits_its_column_at_1280_px(tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import expect, sync_playwright

    from store.db import open_store
    from store.labels import record_label_event
    from store.nuclei import sample_nuclei

    db = tmp_path / "case.duckdb"
    build_small_store(db)
    with open_store(db) as s:
        record_label_event(s, int(sample_nuclei(s, "MIX-50")["nucleus_id"].iloc[0]), "exclude", "qa")
    with serve_app(db, tmp_path / "streamlit.log") as (base, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{base}/?case=MIX-50")
            control = page.locator(".st-key-case_gallery_filter")
            expect(control.locator("button", has_text="excluded")).to_be_visible(timeout=90_000)
            for key in ("case_gallery_filter", "case_gallery_order"):  # the Order control beside it too
                control = page.locator(f".st-key-{key}")
                column = control.bounding_box()
                for button in control.locator("button").all():
                    box = button.bounding_box()
                    assert box["x"] + box["width"] <= column["x"] + column["width"] + 0.5, button.inner_text()
        finally:
            browser.close()
