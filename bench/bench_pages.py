"""Page render time of the dashboard on a store (target: every page interactive < 2 s after first load).

Two views of the same question:

- **script** (always): each page's Streamlit script run in-process with
  ``streamlit.testing.v1.AppTest``: the first run (cold caches: store queries, images,
  figures) and then ``--repeats`` reruns (what a user waits for after any click).
- **browser** (``--browser``): the app served with ``streamlit run`` and opened in headless
  Chromium; time until the page's heading and its main content (chart, image, table) are
  visible: on the first visit (``goto``, a new session per page) and on later visits by
  clicking the sidebar link (the app already open, as a user works).

Writes ``bench/results/pages.json``. Example::

    python bench/bench_pages.py --db demo/genuine_demo.duckdb --browser
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from served_app import CHROMIUM, LAUNCH_ARGS, serve_app

REPO = Path(__file__).resolve().parents[1]
PAGES = ["cases", "review", "embeddings", "probe", "ingest", "models"]
#: page -> (h1 text, CSS selector of the page's main content)
BROWSER_TARGETS = {
    "cases": ("Cases", ".js-plotly-plot"),
    "review": ("Review", "[data-testid='stImage']"),
    "embeddings": ("Embeddings", ".js-plotly-plot, [data-testid='stAlert']"),
    "probe": ("Probe", "[data-testid='stForm'], [data-testid='stAlert']"),
    "ingest": ("Ingest", "[data-testid='stFileUploader']"),
    "models": ("Models", "[data-testid='stDataFrame']"),
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default="demo/genuine_demo.duckdb", help="store to measure (copied; never modified)")
    p.add_argument("--repeats", type=int, default=5, help="warm reruns per page")
    p.add_argument("--browser", action="store_true", help="also measure in headless Chromium")
    p.add_argument("--visits", type=int, default=3, help="browser visits per page")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "pages.json"))
    p.add_argument("--screenshots", default=None, metavar="DIR",
                   help="with --browser: save a full-height screenshot of every page (dashboard_<page>.png)")
    return p


def store_facts(db: Path) -> dict:
    """Samples, nuclei and models of the measured store."""
    sys.path.insert(0, str(REPO))
    from store.db import open_store
    from store.registry import list_models
    from store.samples import list_samples

    with open_store(db, read_only=True) as s:
        smp = list_samples(s)
        return {"samples": int(len(smp)), "nuclei": int(smp["n_nuclei"].sum()), "models": int(len(list_models(s)))}


def bench_scripts(db: Path, repeats: int) -> dict:
    """Cold and warm AppTest run times per page (seconds)."""
    from streamlit.testing.v1 import AppTest

    os.environ["GENUINE_DB"] = str(db)
    out = {}
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    for page in PAGES:
        if page != "cases":  # the app opens on Cases; its first run includes importing the app's modules
            at.switch_page(f"pages/{page}.py")
        t = time.perf_counter()
        at.run()
        cold = time.perf_counter() - t
        if at.exception:
            raise RuntimeError(f"{page}: {at.exception[0].value}")
        warm = []
        for _ in range(repeats):
            t = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - t)
        out[page] = {"cold_s": round(cold, 3), "warm_median_s": round(statistics.median(warm), 3),
                     "warm_max_s": round(max(warm), 3)}
        print(f"script {page:11s} cold {cold:6.2f} s   warm median {statistics.median(warm):6.3f} s   "
              f"max {max(warm):6.3f} s", flush=True)
    return out


def bench_browser(db: Path, visits: int, shots: Path | None = None) -> dict:
    """Navigation-to-content times per page in headless Chromium (seconds)."""
    from playwright.sync_api import sync_playwright

    out: dict = {}
    with serve_app(db) as (base, _proc):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1200})
            for visit in range(visits):
                for name in PAGES:
                    heading, target = BROWSER_TARGETS[name]
                    t = time.perf_counter()
                    if visit == 0:  # first load: a fresh browser session per page
                        page.goto(f"{base}/{'' if name == 'cases' else name}")
                    else:  # in-app navigation, as a user clicks through the sidebar
                        page.get_by_role("navigation").get_by_role("link", name=heading, exact=True).click()
                    page.get_by_role("heading", name=heading, level=1).wait_for(timeout=180_000)
                    t_head = time.perf_counter() - t
                    page.locator(target).first.wait_for(state="visible", timeout=180_000)
                    t_body = time.perf_counter() - t
                    if shots is not None and visit == visits - 1:
                        page.wait_for_timeout(4000)  # let images and charts finish drawing
                        shots.mkdir(parents=True, exist_ok=True)
                        page.set_viewport_size({"width": 1440, "height": 1800})
                        page.screenshot(path=str(shots / f"dashboard_{name}.png"))
                        page.set_viewport_size({"width": 1440, "height": 1200})
                    rec = out.setdefault(name, {"heading_s": [], "content_s": []})
                    rec["heading_s"].append(round(t_head, 3))
                    rec["content_s"].append(round(t_body, 3))
                    print(f"browser visit {visit + 1} {name:11s} heading {t_head:6.2f} s  content {t_body:6.2f} s",
                          flush=True)
            browser.close()
    for rec in out.values():
        rec["first_visit_content_s"] = rec["content_s"][0]
        rec["sidebar_click_content_median_s"] = round(statistics.median(rec["content_s"][1:] or rec["content_s"]), 3)
    return out


def copy_store(src: Path, folder: Path) -> Path:
    """Copy a store file and its side folder (UMAP maps) into ``folder``; return the copy's path."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / src.name
    shutil.copy(src, db)
    side = src.with_name(src.stem + "_files")
    if side.is_dir():
        shutil.copytree(side, db.with_name(db.stem + "_files"), ignore=shutil.ignore_patterns("uploads", "runs"))
    return db


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    src = Path(args.db).resolve()
    if not src.is_file():
        print(f"no store at {src}; build it with `genuine demo --out {args.db}`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:  # measure copies: page visits must not change the store
        db = copy_store(src, Path(tmp) / "script")
        result = {
            "store": str(src), **store_facts(db),
            "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
                        "python": platform.python_version()},
            "target_s": 2.0,
            "script": bench_scripts(db, args.repeats),
        }
        if args.browser:
            if not Path(CHROMIUM).is_file():
                print(f"{CHROMIUM} absent: browser timing skipped", file=sys.stderr)
            else:
                # its own copy: the in-process AppTest above still holds the first one open for writing
                result["browser"] = bench_browser(copy_store(src, Path(tmp) / "browser"), args.visits,
                                                  Path(args.screenshots) if args.screenshots else None)
        result["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    warm = {k: v["warm_median_s"] for k, v in result["script"].items() if isinstance(v, dict)}
    result["all_pages_warm_under_target"] = all(v < result["target_s"] for v in warm.values())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}; slowest warm page {max(warm, key=warm.get)} {max(warm.values()):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
