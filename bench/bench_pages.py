"""Page render time of the dashboard on a store (target: every page interactive < 2 s after first load).

Two views of the same question:

- **script** (always): each page's Streamlit script run in-process with
  ``streamlit.testing.v1.AppTest``: the first run (cold caches: store queries, images,
  figures) and then ``--repeats`` reruns (what a user waits for after any click).
- **browser** (``--browser``): the app served with ``streamlit run`` and opened in headless
  Chromium; time until the page's heading and its main content (chart, image, table) are
  visible: on the first visit (``goto``, a new session per page) and on later visits by
  clicking the sidebar link (the app already open, as a user works). The case view
  (``?case=<sample>``) is opened by its address on every visit. Also recorded: the server
  process's peak resident memory (``VmHWM``) and every browser page error or exception box a page showed.

``--scale N`` measures a large store instead: a copy of ``--db`` plus ``N`` synthetic nuclei in
``--scale-samples`` samples (``store.scale.populate_synthetic``), scored by the store's own models, each
with UMAP coordinates, a stored patch and scan images; built in a temporary folder, deleted after.

Writes ``bench/results/pages.json``. Examples::

    python bench/bench_pages.py --db demo/genuine_demo.duckdb --browser
    python bench/bench_pages.py --scale 1000000 --browser --skip-script --out /tmp/pages_1m.json
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
    # a case opened by its address (?case=): its scan figure, histogram and nucleus gallery
    "case view": ("Cases", "[data-testid='stImage']"),
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
    p.add_argument("--scale", type=int, default=0, metavar="N",
                   help="measure a copy of --db with N synthetic nuclei added (store.scale), not --db itself")
    p.add_argument("--scale-samples", type=int, default=200, help="with --scale: samples the nuclei are spread over")
    p.add_argument("--port", type=int, default=None, help="with --browser: serve on this port (default a free one)")
    p.add_argument("--server-log", default=None, help="with --browser: write the server's output here")
    p.add_argument("--skip-script", action="store_true", help="skip the in-process (AppTest) timing")
    return p


def build_scaled(db: Path, n_nuclei: int, n_samples: int) -> dict:
    """Add ``n_nuclei`` synthetic nuclei to the store ``db`` (a copy), scored by its models, with UMAP coordinates,
    a stored patch and the images of its first scan; returns what was added and the seconds it took."""
    sys.path.insert(0, str(REPO))
    from store.db import Store
    from store.scale import first_images, populate_synthetic

    t = time.perf_counter()
    with Store(db) as s:
        patch, images = first_images(s)
        added = populate_synthetic(s, n_nuclei=n_nuclei, n_samples=n_samples, scans_per_sample=5, seed=1,
                                   use_registered=True, umap=True, patch_png=patch, scan_images=images)
    added["seconds"] = round(time.perf_counter() - t, 1)
    added["file_mb"] = round(db.stat().st_size / 1e6, 1)
    print(f"scaled store: {added}", flush=True)
    return added


def peak_rss_mib(pid: int) -> float | None:
    """Peak resident memory of a running process so far (``VmHWM`` of ``/proc/<pid>/status``), MiB; None off Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


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


def case_to_open(db: Path) -> str:
    """The sample the case view opens: the one with the most nuclei."""
    sys.path.insert(0, str(REPO))
    from store.db import open_store
    from store.samples import list_samples

    with open_store(db, read_only=True) as s:
        smp = list_samples(s).sort_values(["n_nuclei", "name"], ascending=[False, True])
        return str(smp["name"].iloc[0])


def bench_browser(db: Path, visits: int, shots: Path | None = None, port: int | None = None,
                  log: Path | None = None) -> dict:
    """Navigation-to-content times per page in headless Chromium (seconds), the server's peak memory, page errors."""
    from urllib.parse import quote

    from playwright.sync_api import sync_playwright

    out: dict = {}
    errors: list[str] = []
    case = case_to_open(db)
    with serve_app(db, log_path=log, port=port) as (base, proc):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1200})
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            for visit in range(visits):
                for name in [*PAGES[:1], "case view", *PAGES[1:]]:
                    heading, target = BROWSER_TARGETS[name]
                    t = time.perf_counter()
                    if name == "case view":  # opened by its address, as from a link
                        page.goto(f"{base}/?case={quote(case)}")
                    elif visit == 0:  # first load: a fresh browser session per page
                        page.goto(f"{base}/{'' if name == 'cases' else name}")
                    else:  # in-app navigation, as a user clicks through the sidebar
                        page.get_by_role("navigation").get_by_role("link", name=heading, exact=True).click()
                    page.get_by_role("heading", name=heading, level=1).wait_for(timeout=180_000)
                    t_head = time.perf_counter() - t
                    try:
                        page.locator(target).first.wait_for(state="visible", timeout=180_000)
                    except Exception as exc:  # record it and go on: one broken page must not hide the others
                        errors.append(f"{name} visit {visit + 1}: no content: {str(exc).splitlines()[0]}")
                    t_body = time.perf_counter() - t
                    for box in page.locator("[data-testid='stException']").all():
                        errors.append(f"{name} visit {visit + 1}: exception: {box.inner_text()[:300]}")
                    if shots is not None and visit == visits - 1:
                        page.wait_for_timeout(4000)  # let images and charts finish drawing
                        shots.mkdir(parents=True, exist_ok=True)
                        page.set_viewport_size({"width": 1440, "height": 1800})
                        page.screenshot(path=str(shots / f"dashboard_{name}.png"))
                        page.set_viewport_size({"width": 1440, "height": 1200})
                    rec = out.setdefault(name, {"heading_s": [], "content_s": [], "server_peak_rss_mib_after": []})
                    rec["server_peak_rss_mib_after"].append(peak_rss_mib(proc.pid))
                    rec["heading_s"].append(round(t_head, 3))
                    rec["content_s"].append(round(t_body, 3))
                    print(f"browser visit {visit + 1} {name:11s} heading {t_head:6.2f} s  content {t_body:6.2f} s  "
                          f"server peak RSS {rec['server_peak_rss_mib_after'][-1]} MiB", flush=True)
            browser.close()
        peak = peak_rss_mib(proc.pid)
    for rec in out.values():
        rec["first_visit_content_s"] = rec["content_s"][0]
        rec["sidebar_click_content_median_s"] = round(statistics.median(rec["content_s"][1:] or rec["content_s"]), 3)
    print(f"server peak RSS {peak} MiB; {len(errors)} errors", *errors, sep="\n", flush=True)
    return {"pages": out, "case": case, "server_peak_rss_mib": peak, "errors": errors}


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
        load_start = round(os.getloadavg()[0], 2)
        scaled = None
        if args.scale:
            src = copy_store(src, Path(tmp) / "scaled")
            scaled = build_scaled(src, args.scale, args.scale_samples)
        result = {
            "store": str(Path(args.db).resolve()), **store_facts(src),
            "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": load_start,
                        "python": platform.python_version()},
            "target_s": 2.0,
        }
        if scaled:
            result["scaled"] = scaled
        if not args.skip_script:
            result["script"] = bench_scripts(copy_store(src, Path(tmp) / "script"), args.repeats)
        if args.browser:
            if not Path(CHROMIUM).is_file():
                print(f"{CHROMIUM} absent: browser timing skipped", file=sys.stderr)
            else:
                # its own copy: the in-process AppTest above still holds the first one open for writing
                # a scaled store is a scratch copy already; the script run holds its own copy open
                fresh = args.scale and args.skip_script
                result["browser"] = bench_browser(src if fresh else copy_store(src, Path(tmp) / "browser"), args.visits,
                                                  Path(args.screenshots) if args.screenshots else None,
                                                  args.port, Path(args.server_log) if args.server_log else None)
        result["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if "script" in result:
        warm = {k: v["warm_median_s"] for k, v in result["script"].items() if isinstance(v, dict)}
        result["all_pages_warm_under_target"] = all(v < result["target_s"] for v in warm.values())
        print(f"slowest warm page {max(warm, key=warm.get)} {max(warm.values()):.3f} s")
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
