"""The served dashboard in a real headless Chromium (Playwright driving Debian's chromium).

Serves ``app.py`` with ``streamlit run`` on a free localhost port against a fresh small
store, opens every page and waits for its heading (and its main chart or table), makes
one review decision with the mouse and one with the keyboard (plus an undo by key), then
stops the server and checks that exactly those events reached the store. Screenshots go
to ``test-output/browser/``.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

import pytest

from test_app_store import build_small_store

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from served_app import CHROMIUM, LAUNCH_ARGS, serve_app  # noqa: E402

OUT = REPO / "test-output" / "browser"
#: url path -> (heading, selector that shows the page's main content has rendered)
PAGES = {
    "": ("Cases", "[data-testid='stDataFrame']"),
    "review": ("Review", "[data-testid='stImage']"),
    "embeddings": ("Embeddings", ".js-plotly-plot .main-svg"),
    "probe": ("Probe", "[data-testid='stForm']"),
    "ingest": ("Ingest", "[data-testid='stFileUploader']"),
    "models": ("Models", "[data-testid='stDataFrame']"),
}


def register_tiny_model(db: Path, folder: Path) -> None:
    """Save a tiny random GENUINE model folder and register it in the store."""
    from genuine_core.models import GenuineClassifier, preset_config
    from genuine_core.pipeline import load_model
    from store.db import open_store
    from store.registry import register_model

    GenuineClassifier.from_config(preset_config("tiny", kind="genuine")).save(folder, metrics={})
    with open_store(db) as s:
        register_model(s, load_model(folder))


@pytest.fixture()
def served_app(tmp_path):
    """(base url, store path) of the app served against a fresh small store; stops the server after."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    db = tmp_path / "browser.duckdb"
    build_small_store(db, with_umap=True)
    register_tiny_model(db, tmp_path / "tiny-genuine")  # a model folder, so the Probe page has a model
    with serve_app(db, tmp_path / "streamlit.log") as (base, proc):
        yield base, db, proc


def test_every_page_renders_and_a_review_decision_reaches_the_store(served_app):
    from playwright.sync_api import expect, sync_playwright

    base, db, proc = served_app
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1600}, accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # a deep link is the fresh server's first request: it must still get the app's navigation
            # and sidebar (Streamlit would otherwise run pages/probe.py alone, see common.require_entrypoint)
            page.goto(f"{base}/probe")
            expect(page.get_by_role("heading", name="Probe", level=1)).to_be_visible(timeout=90_000)
            expect(page.get_by_role("textbox", name="Reviewer")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("Curation", exact=True)).to_be_visible()
            for path, (heading, body) in PAGES.items():
                page.goto(f"{base}/{path}")
                expect(page.get_by_role("heading", name=heading, level=1)).to_be_visible(timeout=90_000)
                page.locator(body).first.wait_for(state="visible", timeout=90_000)
                assert page.locator("[data-testid='stException']").count() == 0, f"exception on {heading}"
                page.screenshot(path=str(OUT / f"{path or 'cases'}.png"))
            # a row picked in the case table, then a filter that leaves fewer rows: the same case stays open
            page.goto(f"{base}/")
            table = page.locator("[data-testid='stDataFrame']").first
            table.wait_for(state="visible", timeout=90_000)
            box = table.bounding_box()
            page.mouse.click(box["x"] + 16, box["y"] + 36 + 35 * 1 + 17)  # row 2 (LINE-NON), its tick column
            expect(page.get_by_text("Case LINE-NON")).to_be_visible(timeout=60_000)
            search = page.get_by_placeholder("name contains ...")
            search.fill("NON")
            search.press("Enter")
            expect(page.get_by_text("1 of 3 samples", exact=False)).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Case LINE-NON")).to_be_visible(timeout=60_000)
            assert page.locator("[data-testid='stException']").count() == 0, "exception after filtering"
            # the open case's report downloads as HTML and as a zip of the report folder
            page.goto(f"{base}/?case=MIX-50")
            expect(page.get_by_text("Case MIX-50")).to_be_visible(timeout=90_000)
            with page.expect_download(timeout=60_000) as html_download:
                page.get_by_role("button", name="Report (HTML)").click()
            report = Path(html_download.value.path()).read_text()
            assert "Sample report: MIX-50" in report and "<b>call (ratio-test)</b>" in report  # the model for calls
            with page.expect_download(timeout=60_000) as zip_download:
                page.get_by_role("button", name="All files (.zip)").click()
            with zipfile.ZipFile(zip_download.value.path()) as z:
                assert sorted(z.namelist()) == [f"MIX-50/{f}" for f in ("nuclei.csv", "nuclei.parquet", "summary.csv",
                                                                        "summary.html", "summary.md")]
            # a lasso around the left UMAP selects nuclei and shows them as a gallery
            page.goto(f"{base}/embeddings")
            plot = page.locator(".js-plotly-plot").first
            plot.locator(".main-svg").first.wait_for(state="visible", timeout=90_000)
            expect(page.get_by_text("Selected nuclei (0)")).to_be_visible(timeout=30_000)
            area = plot.locator(".nsewdrag").first.bounding_box()
            page.mouse.move(area["x"] + 2, area["y"] + 2)
            page.mouse.down()
            for fx, fy in ((0.99, 0.0), (0.99, 0.99), (0.0, 0.99), (0.0, 0.0)):  # whole plot area
                page.mouse.move(area["x"] + 2 + fx * (area["width"] - 4), area["y"] + 2 + fy * (area["height"] - 4),
                                steps=6)
            page.mouse.up()
            expect(page.get_by_text(re.compile(r"Selected nuclei \([1-9]\d*\)"))).to_be_visible(timeout=60_000)
            page.screenshot(path=str(OUT / "embeddings_selection.png"))
            # one decision through the UI: reviewer name in the sidebar, then the MNA button
            page.goto(f"{base}/review")
            expect(page.get_by_role("heading", name="Review", level=1)).to_be_visible(timeout=90_000)
            nucleus = page.get_by_role("heading", name="Nucleus", level=4).first
            expect(nucleus).to_be_visible(timeout=90_000)
            nid = int(nucleus.inner_text().split()[-1])
            box = page.get_by_role("textbox", name="Reviewer")
            box.fill("Dr. Browser")
            box.press("Enter")
            mna = page.get_by_role("button", name=re.compile(r"^MNA Shortcut M"))
            expect(mna).to_be_enabled(timeout=60_000)
            mna.click()
            expect(page.get_by_text("recorded").first).to_be_visible(timeout=60_000)
            page.screenshot(path=str(OUT / "review_after_decision.png"))
            # keyboard: N records non-MNA for the next nucleus, U undoes it
            expect(nucleus).not_to_have_text(f"Nucleus {nid}", timeout=60_000)
            page.get_by_role("heading", name="Review", level=1).click()  # focus away from the text inputs
            second = nucleus.inner_text()
            page.keyboard.press("n")
            expect(page.get_by_text("non-MNA recorded")).to_be_visible(timeout=60_000)
            page.get_by_role("heading", name="Review", level=1).click()
            page.keyboard.press("u")
            expect(page.get_by_text("Undone").first).to_be_visible(timeout=60_000)
            # keyboard only with a note (README): letters type into the note, Tab moves to MNA, Enter presses it;
            # first wait for the undone nucleus' card (a key on the card still showing is ignored, by design)
            expect(nucleus).to_have_text(second, timeout=60_000)
            page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(timeout=60_000)
            noted = nucleus.inner_text()
            note = page.get_by_role("textbox", name="Note (optional)")
            note.focus()
            page.keyboard.type("mn")
            page.keyboard.press("Tab")
            # Tab sends the note (a rerun): the card keeps its place, so the MNA button keeps the focus for Enter
            expect(page.get_by_role("button", name=re.compile(r"^MNA Shortcut M"))).to_be_focused(timeout=60_000)
            page.keyboard.press("Enter")
            expect(nucleus).not_to_have_text(noted, timeout=60_000)
            expect(page.get_by_text(re.compile(r"\d: MNA recorded")).first).to_be_visible(timeout=60_000)
            assert not errors, errors
        finally:
            browser.close()
    proc.terminate()  # release the store's write lock, then read what the UI wrote
    proc.wait(timeout=30)
    from store.db import open_store
    from store.labels import audit_trail

    with open_store(db, read_only=True) as s:
        ev = audit_trail(s)
    assert ev["value"].tolist() == ["1", "0", "unset", "1"]  # click MNA, key N, key U, Tab + Enter from the note
    assert ev.iloc[3]["note"] == "mn"  # the letters went into the note, not to the shortcuts
    assert set(ev["reviewer"]) == {"Dr. Browser"}
    assert int(ev.iloc[0]["nucleus_id"]) == nid and ev.iloc[1]["nucleus_id"] != nid
    assert ev.iloc[2]["undoes"] == ev.iloc[1]["event_id"]
