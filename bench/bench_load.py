"""Load test: N concurrent browser sessions paging the Review queue of the served dashboard.

Builds a small synthetic store in a temporary folder (``tests/test_app_store.build_small_store``:
three samples, two deterministic models; never the demo store), serves ``app.py`` with
``streamlit run`` on a free localhost port, and drives N headless-Chromium sessions
(Playwright browser contexts, one Streamlit session each) for a fixed time. Each session
sets a reviewer name, turns on "Include reviewed" (so every session keeps working on the
same most-informative nuclei instead of draining the queue) and then loops: record a
decision (MNA / non-MNA / exclude, by mouse) or skip to the next nucleus (paging).

Per action it records the response time: click -> the Streamlit rerun it triggered has
finished (the app's ``data-test-script-state`` went to running and back to notRunning,
caught with a MutationObserver so short runs are not missed). Every acknowledged
decision's event id is parsed from the page ("... recorded (event N, reviewer)").
After the run the server is stopped and the store is compared with what the sessions
saw: ``events_lost`` = acknowledged ids missing from ``label_events``, ``events_extra``
= rows no session acknowledged, plus ``genuine store check``.

Usage:
    python bench/bench_load.py --sessions 4 8 --seconds 60 --out bench/results/load.json

Writes ``{"runs": [{sessions, seconds, actions: {open|decide|skip: {n, p50_ms, p95_ms,
max_ms}}, decisions, events_lost, ...}], "machine": {...}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-dev-shm-usage"]
MAX_FAILURES = 5  # a session stops after this many failed actions in a row
DECISION_BUTTONS = {"MNA": "decide_mna", "non-MNA": "decide_non", "Exclude": "decide_exclude"}
#: the visible button itself (Streamlit also renders a hidden copy, and the tooltip wraps it)
_BUTTON = "button[data-testid^='stBaseButton'] >> visible=true"
_RECORDED = re.compile(r"Nucleus (\d+): (MNA|non-MNA|Exclude) recorded \(event (\d+),")
_RUN_WATCH = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  window.__genuineRan = false;
  if (window.__genuineObs) window.__genuineObs.disconnect();
  window.__genuineObs = new MutationObserver(() => {
    if (app.getAttribute('data-test-script-state') !== 'notRunning') window.__genuineRan = true;
  });
  window.__genuineObs.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
_IDLE = """() => document.querySelector('[data-testid="stApp"]')?.getAttribute('data-test-script-state') === 'notRunning'"""
_RUN_DONE = """() => window.__genuineRan &&
  document.querySelector('[data-testid="stApp"]').getAttribute('data-test-script-state') === 'notRunning'"""


# ----------------------------------------------------------------------------- the server
def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll Streamlit's health endpoint until it answers ``ok``.

    Raises:
        RuntimeError: the server exited. TimeoutError: not healthy within ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        time.sleep(0.5)
    raise TimeoutError("streamlit did not become healthy")


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the server (it closes the store on exit), SIGKILL when it does not stop."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@contextlib.contextmanager
def serve_app(db: Path, log_path: Path):
    """Serve ``app.py`` on a free localhost port against ``db``; yields (base url, process); stops it after."""
    port = free_port()
    env = {**os.environ, "GENUINE_DB": str(db), "PYTHONPATH": str(REPO)}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(port, proc)
            yield f"http://127.0.0.1:{port}", proc
        finally:
            stop(proc)


def build_store(path: Path, n_nuclei: int = 40, seed: int = 0) -> dict:
    """The tests' small store (3 samples x ``n_nuclei`` per field, 2 models) at ``path``."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_app_store import build_small_store

    return build_small_store(path, seed=seed, n_nuclei=n_nuclei)


# ----------------------------------------------------------------------------- one session
@dataclass
class SessionLog:
    """What one browser session did: response times per action (s), acknowledged events, errors."""

    reviewer: str
    times: dict[str, list[float]] = field(default_factory=lambda: {"open": [], "decide": [], "skip": []})
    events: list[int] = field(default_factory=list)     # event ids the page acknowledged
    nuclei: list[int] = field(default_factory=list)     # nucleus of each acknowledged event
    attempts: int = 0                                    # decision clicks
    not_saved: list[str] = field(default_factory=list)  # "Not saved: ..." messages (visible failures)
    errors: list[str] = field(default_factory=list)     # driver-side failures (timeouts, exceptions)


async def _act(page, click, timeout_ms: float) -> float:
    """Click and wait until the rerun it triggers has finished; return seconds taken."""
    await page.evaluate(_RUN_WATCH)
    t0 = time.perf_counter()
    await click()
    await page.wait_for_function(_RUN_DONE, timeout=timeout_ms, polling=25)
    return time.perf_counter() - t0


async def _open_review(page, base: str, reviewer: str, log: SessionLog, timeout_ms: float) -> None:
    """Open the Review page, enter the reviewer name, switch "Include reviewed" on."""
    t0 = time.perf_counter()
    await page.goto(f"{base}/review", timeout=timeout_ms)
    await page.get_by_role("heading", name="Nucleus", level=4).first.wait_for(timeout=timeout_ms)
    await page.wait_for_function(_IDLE, timeout=timeout_ms, polling=25)  # the first run has finished
    log.times["open"].append(time.perf_counter() - t0)
    box = page.get_by_role("textbox", name="Reviewer")
    await box.fill(reviewer)
    await _act(page, lambda: box.press("Enter"), timeout_ms)
    include = page.locator(".st-key-review_include input[type='checkbox']")
    await include.wait_for(state="attached", timeout=timeout_ms)  # the toggle renders lazily
    if not await include.is_checked():
        await _act(page, lambda: page.locator(".st-key-review_include label").first.click(), timeout_ms)
    if not await include.is_checked():
        raise RuntimeError("could not switch 'Include reviewed' on")


async def review_session(browser, base: str, reviewer: str, *, seconds: float | None = None,
                         actions: int | None = None, p_skip: float = 0.3, seed: int = 0,
                         timeout_ms: float = 90_000) -> SessionLog:
    """Drive one Streamlit session on the Review page until ``seconds`` pass or ``actions`` are done.

    Args:
        browser: a Playwright (async) Browser; the session gets its own context (cookies, websocket).
        base: server url. reviewer: name typed into the sidebar.
        seconds / actions: stop criterion (at least one of them).
        p_skip: probability that an action is Skip (paging) instead of a decision.
        seed: seeds the choice of actions.
    """
    if seconds is None and actions is None:
        raise ValueError("give seconds or actions")
    rng = random.Random(seed)
    log = SessionLog(reviewer)
    ctx = await browser.new_context(viewport={"width": 1280, "height": 1200})
    try:
        page = await ctx.new_page()
        try:
            await _open_review(page, base, reviewer, log, timeout_ms)
        except Exception as exc:  # noqa: BLE001  (reported; the session does nothing more)
            log.errors.append(f"setup: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            return log
        end = time.monotonic() + seconds if seconds is not None else float("inf")
        done = failures = 0
        while time.monotonic() < end and (actions is None or done < actions) and failures < MAX_FAILURES:
            done += 1
            failures += 1  # reset below when the action completes
            try:
                if rng.random() < p_skip:
                    log.times["skip"].append(await _act(page, page.locator(f".st-key-review_skip {_BUTTON}").first.click,
                                                        timeout_ms))
                    failures = 0
                    continue
                label = rng.choice(list(DECISION_BUTTONS))
                button = page.locator(f".st-key-{DECISION_BUTTONS[label]} {_BUTTON}").first
                log.attempts += 1
                log.times["decide"].append(await _act(page, button.click, timeout_ms))
                failures = 0
                text = " ".join(await page.locator("[data-testid='stAlert']").all_inner_texts())
                m = _RECORDED.search(text)
                if m and m.group(2) == label:
                    log.events.append(int(m.group(3)))
                    log.nuclei.append(int(m.group(1)))
                elif "Not saved" in text:
                    log.not_saved.append(text.strip())
                else:
                    log.errors.append(f"no acknowledgement after {label}: {text.strip()[:200]!r}")
            except Exception as exc:  # noqa: BLE001  (recorded, the session carries on)
                log.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        if failures >= MAX_FAILURES:
            log.errors.append(f"gave up after {MAX_FAILURES} failed actions in a row")
    finally:
        await ctx.close()
    return log


async def run_sessions(base: str, n: int, *, seconds: float | None = None, actions: int | None = None,
                       p_skip: float = 0.3, seed: int = 0) -> list[SessionLog]:
    """``n`` concurrent sessions (reviewers ``reviewer-1`` ...) in one headless Chromium."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            return list(await asyncio.gather(*[
                review_session(browser, base, f"reviewer-{i + 1}", seconds=seconds, actions=actions,
                               p_skip=p_skip, seed=seed + i) for i in range(n)]))
        finally:
            await browser.close()


# ----------------------------------------------------------------------------- results
def percentiles(seconds: list[float]) -> dict:
    """``{n, p50_ms, p95_ms, max_ms}`` of response times given in seconds (None when empty)."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    a = np.asarray(seconds) * 1000.0
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "max_ms": round(float(a.max()), 1)}


def audit_store(db: Path, logs: list[SessionLog]) -> dict:
    """Compare what the sessions were told with ``label_events`` (the server must be stopped).

    Returns:
        ``decisions`` (acknowledged), ``db_events``, ``events_lost`` (acknowledged, not stored),
        ``events_extra`` (stored, never acknowledged), ``duplicate_acks``, ``store_problems``
        (``store.check.check_store``), ``reviewer_mismatch`` (stored under another name).
    """
    from store.check import check_store
    from store.db import open_store

    acked = {e: log.reviewer for log in logs for e in log.events}
    n_acks = sum(len(log.events) for log in logs)
    with open_store(db, read_only=True) as s:
        rows = s.query("SELECT id, reviewer FROM label_events ORDER BY id")
        problems = check_store(s)
    stored = dict(zip(rows["id"].astype(int), rows["reviewer"]))
    return {
        "decisions": n_acks,
        "db_events": len(stored),
        "events_lost": len(set(acked) - set(stored)),
        "events_extra": len(set(stored) - set(acked)),
        "duplicate_acks": n_acks - len(acked),
        "reviewer_mismatch": sum(1 for e, who in acked.items() if e in stored and stored[e] != who),
        "store_problems": problems,
    }


def summarise(logs: list[SessionLog], seconds: float | None) -> dict:
    """Percentiles per action over all sessions, counts and errors."""
    return {
        "sessions": len(logs),
        "seconds": seconds,
        "actions": {k: percentiles([t for log in logs for t in log.times[k]]) for k in ("open", "decide", "skip")},
        "decision_clicks": sum(log.attempts for log in logs),
        "not_saved": sum(len(log.not_saved) for log in logs),
        "driver_errors": [e for log in logs for e in log.errors][:20],
        "n_driver_errors": sum(len(log.errors) for log in logs),
        "distinct_nuclei_decided": len({n for log in logs for n in log.nuclei}),
    }


def load_average() -> list[float]:
    """1/5/15-minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def run_load(n: int, seconds: float, work: Path, template: Path, seed: int = 0, p_skip: float = 0.3) -> dict:
    """One load run on a fresh copy of ``template``: serve, drive ``n`` sessions, stop, audit."""
    db = work / f"load_{n}.duckdb"
    shutil.copy(template, db)
    load_before = load_average()
    with serve_app(db, work / f"streamlit_{n}.log") as (base, _proc):
        warm = asyncio.run(run_sessions(base, 1, actions=0, seed=seed))  # first render compiles/caches
        t0 = time.monotonic()
        logs = asyncio.run(run_sessions(base, n, seconds=seconds, p_skip=p_skip, seed=seed))
        wall = time.monotonic() - t0
    out = summarise(logs, seconds)
    out.update(audit_store(db, logs))
    out["wall_seconds"] = round(wall, 1)
    out["warmup_open_ms"] = percentiles(warm[0].times["open"])["max_ms"]
    out["decisions_per_second"] = round(out["decisions"] / wall, 2) if wall else None
    out["load_avg_before"], out["load_avg_after"] = load_before, load_average()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[4, 8], help="concurrent sessions per run")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of each run")
    parser.add_argument("--nuclei", type=int, default=40, help="nuclei per synthetic field (3 fields)")
    parser.add_argument("--p-skip", type=float, default=0.3, help="share of actions that page (Skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        print(f"error: {CHROMIUM} is absent (apt-get install -y chromium)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    runs = []
    with tempfile.TemporaryDirectory(prefix="genuine_load_") as tmp:
        work = Path(tmp)
        template = work / "template.duckdb"
        t0 = time.monotonic()
        counts = build_store(template, n_nuclei=args.nuclei, seed=args.seed)
        print(f"store: {counts} nuclei per sample, built in {time.monotonic() - t0:.1f} s", flush=True)
        for n in args.sessions:
            res = run_load(n, args.seconds, work, template, seed=args.seed, p_skip=args.p_skip)
            runs.append(res)
            a = res["actions"]
            print(f"N={n}: decide p50 {a['decide']['p50_ms']} ms p95 {a['decide']['p95_ms']} ms max "
                  f"{a['decide']['max_ms']} ms; skip p95 {a['skip']['p95_ms']} ms; decisions {res['decisions']} "
                  f"({res['decisions_per_second']}/s); events lost {res['events_lost']}, extra {res['events_extra']}; "
                  f"driver errors {res['n_driver_errors']}; load {res['load_avg_before']} -> {res['load_avg_after']}",
                  flush=True)
    result = {
        "benchmark": "dashboard load: concurrent Review sessions (headless Chromium via Playwright)",
        "command": "python bench/bench_load.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "store": {"nuclei_per_sample": counts, "models": 2},
        "p_skip": args.p_skip,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "load_avg_end": load_average(),
                    "note": "2 shared cores; other jobs (model training, other agents) ran at the same time"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    lost = sum(r["events_lost"] + r["events_extra"] for r in runs)
    return 1 if lost or any(r["store_problems"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
