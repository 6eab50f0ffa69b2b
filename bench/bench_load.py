"""Load test: N concurrent browser sessions paging the Review queue of the served dashboard.

Builds a small synthetic store in a temporary folder (``tests/test_app_store.build_small_store``:
three samples, two deterministic models; never the demo store), serves ``app.py`` with
``streamlit run`` on a free localhost port, and drives N headless-Chromium sessions
(Playwright browser contexts, one Streamlit session each) for a fixed time. Each session
sets a reviewer name, turns on "Include reviewed" (so every session keeps working on the
same most-informative nuclei instead of draining the queue) and then loops: record a
decision (MNA / non-MNA / exclude, by mouse) or skip to the next nucleus (paging).

Per action it records the response time: click -> the Streamlit rerun it triggered has
finished. Before each click the driver waits until the app is quiet (no run and no
websocket frame for 300 ms). The action is done once the page shows its answer (a
decision: a new acknowledgement; a skip: the next nucleus's card), the app's
``data-test-script-state`` is ``notRunning`` and the websocket has been quiet for 300 ms;
its time ends at the answer's last websocket frame. Every acknowledged decision's event id
is parsed from the page ("... recorded (event N, reviewer)"), also after a timed-out action.
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
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from served_app import CHROMIUM, LAUNCH_ARGS, serve_app

REPO = Path(__file__).resolve().parents[1]
MAX_FAILURES = 5  # a session stops after this many failed actions in a row
#: the decision buttons' CSS selectors (their keys name the card: decide_<which>_<nucleus>_<shown decision>)
DECISION_BUTTONS = {label: f'[class*="st-key-decide_{which}_"]'
                    for label, which in (("MNA", "mna"), ("non-MNA", "non"), ("Exclude", "exclude"))}
#: the state each button's acknowledgement names ("Nucleus 4: excluded recorded ...")
RECORDED_AS = {"MNA": "MNA", "non-MNA": "non-MNA", "Exclude": "excluded"}
#: the visible button itself (Streamlit also renders a hidden copy, and the tooltip wraps it)
_BUTTON = "button[data-testid^='stBaseButton'] >> visible=true"
_RECORDED = re.compile(r"Nucleus (\d+): (MNA|non-MNA|excluded) recorded \(event (\d+),")
#: JS: count every change of the app's run state (running / notRunning / ...) on the page
_WATCH = """() => {
  if (window.__genuineObs) return;
  window.__genuineSeq = 0;
  window.__genuineLast = performance.now();
  window.__genuineObs = new MutationObserver((records) => {
    window.__genuineSeq += records.length;
    window.__genuineLast = performance.now();
  });
  window.__genuineObs.observe(document.body,
    {attributes: true, subtree: true, attributeFilter: ['data-test-script-state']});
}"""
_STATE = "document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state')"
#: JS: no run in progress and none started for 300 ms (so the next click's run is the next change)
_QUIET = f"() => {_STATE} === 'notRunning' && performance.now() - window.__genuineLast > 300"


# ----------------------------------------------------------------------------- the server
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
    stale: list[str] = field(default_factory=list)      # refused: another session decided the card meanwhile
    errors: list[str] = field(default_factory=list)     # driver-side failures (timeouts, exceptions)


class Wire:
    """Counts the frames of a page's Streamlit websocket (``sent``: browser to server).

    Frames tell that the server answered a click whatever the DOM drew (a short rerun may
    never show the intermediate "running" state), and when the answer ended. Attach it
    before the page opens the app.
    """

    def __init__(self, page) -> None:
        self.sent = self.received = 0
        self.last = time.monotonic()
        page.on("websocket", self._attach)

    def _attach(self, ws) -> None:
        if "_stcore/stream" in ws.url:
            ws.on("framesent", self._on_sent)
            ws.on("framereceived", self._on_received)

    def _on_sent(self, _frame) -> None:
        self.sent += 1
        self.last = time.monotonic()

    def _on_received(self, _frame) -> None:
        self.received += 1
        self.last = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds since the last frame either way."""
        return time.monotonic() - self.last


async def _wait_quiet(page, wire: Wire, timeout_ms: float) -> None:
    """Until no run is in progress and neither the DOM state nor the websocket changed for 300 ms."""
    end = time.monotonic() + timeout_ms / 1000
    while True:
        await page.wait_for_function(_QUIET, timeout=max(1.0, (end - time.monotonic()) * 1000), polling=50)
        if wire.quiet_for() > 0.3:
            return
        if time.monotonic() > end:
            raise RuntimeError("the app did not settle")
        await asyncio.sleep(0.05)


async def _act(page, wire: Wire, click, timeout_ms: float, rerun_ms: float | None = None,
               answered=None) -> float:
    """Wait until the app is quiet, click, and wait until the rerun the click started has finished.

    Done when the click was answered, the app is back to ``notRunning`` and the websocket has
    been quiet for 300 ms; the time is taken at the answer's last frame. "Answered" is
    ``answered()`` when given (what the click must change on the page, e.g. a new
    acknowledgement), else a frame received after the click or a change of the app's run state.

    Args:
        wire: the page's websocket frame counter.
        click: async callable doing the click (or key press).
        timeout_ms: longest wait for quiet and for the rerun. rerun_ms: shorter limit for the rerun.
        answered: optional async predicate: the page shows the click's effect.

    Returns:
        Seconds from the click to the end of its rerun.

    Raises:
        RuntimeError: no rerun finished in time (with the run state and the frames sent/received).
    """
    await _wait_quiet(page, wire, timeout_ms)
    seq = await page.evaluate("window.__genuineSeq")
    sent, received = wire.sent, wire.received

    async def default_answered() -> bool:
        return wire.received > received or await page.evaluate(f"window.__genuineSeq > {seq}")

    answered = answered or default_answered
    t0 = time.monotonic()  # the clock of ``wire.last``
    await click()
    end = t0 + (rerun_ms or timeout_ms) / 1000
    while time.monotonic() < end:
        if (wire.quiet_for() > 0.3 and await page.evaluate(f"() => {_STATE} === 'notRunning'")
                and await answered()):
            return max((wire.last if wire.received > received else time.monotonic()) - t0, 0.0)
        await asyncio.sleep(0.025)
    state = await page.evaluate(f"() => [{_STATE}, window.__genuineSeq]")
    raise RuntimeError(f"no rerun seen after the click (state, changes: {state}; changes before the click: {seq}; "
                       f"websocket frames since the click: {wire.sent - sent} sent, {wire.received - received} "
                       "received)")


async def _changed(read):
    """An ``answered`` predicate: ``read()`` (async, page text) differs from its value now."""
    before = await read()

    async def answered() -> bool:
        return await read() != before

    return answered


async def _nucleus_heading(page) -> str:
    """The current review card's heading ("Nucleus N ...")."""
    return " ".join(await page.get_by_role("heading", name="Nucleus", level=4).all_inner_texts())


async def _acknowledgement(page) -> str:
    """The text of the page's alerts (decision acknowledgements and errors)."""
    return " ".join(await page.locator("[data-testid='stAlert']").all_inner_texts())


async def _setup_step(page, wire: Wire, done, do, timeout_ms: float, attempts: int = 4,
                      per_attempt_ms: float = 15_000) -> None:
    """Run the idempotent action ``do`` until ``done()`` holds (a rerun must follow each try).

    Raises:
        RuntimeError: still not done after ``attempts`` tries.
    """
    for _ in range(attempts):
        if await done():
            return
        with contextlib.suppress(RuntimeError):
            await _act(page, wire, do, timeout_ms, rerun_ms=per_attempt_ms)
    if not await done():
        raise RuntimeError(f"not done after {attempts} attempts")


async def _open_review(page, wire: Wire, base: str, reviewer: str, log: SessionLog, timeout_ms: float) -> None:
    """Open the Review page, enter the reviewer name, switch "Include reviewed" on.

    Raises:
        RuntimeError: naming the step that failed.
    """
    step = "open the page"
    try:
        t0 = time.perf_counter()
        await page.goto(f"{base}/review", timeout=timeout_ms)
        await page.wait_for_selector("[data-testid='stApp']", state="attached", timeout=timeout_ms)
        await page.evaluate(_WATCH)
        await page.get_by_role("heading", name="Nucleus", level=4).first.wait_for(timeout=timeout_ms)
        await page.wait_for_function(_QUIET, timeout=timeout_ms, polling=50)  # the first run(s) have finished
        log.times["open"].append(time.perf_counter() - t0)
        # right after the first render an input is now and then lost (no rerun follows): these two
        # steps are idempotent, so they are retried with a short timeout per attempt
        step = "enter the reviewer name"
        box = page.get_by_role("textbox", name="Reviewer")

        async def name_entered() -> bool:
            return await page.locator(f"{DECISION_BUTTONS['MNA']} {_BUTTON}").first.is_enabled()

        async def enter_name() -> None:
            await box.fill(reviewer)
            await box.press("Enter")

        await _setup_step(page, wire, name_entered, enter_name, timeout_ms)
        step = "switch 'Include reviewed' on"
        include = page.locator(".st-key-review_include input[type='checkbox']")
        await include.wait_for(state="attached", timeout=timeout_ms)  # the toggle renders lazily
        await _setup_step(page, wire, include.is_checked, page.locator(".st-key-review_include label").first.click,
                          timeout_ms)
    except Exception as exc:
        raise RuntimeError(f"{step}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from exc


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
        wire = Wire(page)
        try:
            await _open_review(page, wire, base, reviewer, log, timeout_ms)
        except Exception as exc:  # noqa: BLE001  (reported; the session does nothing more)
            log.errors.append(f"setup: {exc}")
            return log
        end = time.monotonic() + seconds if seconds is not None else float("inf")
        done = failures = 0
        while time.monotonic() < end and (actions is None or done < actions) and failures < MAX_FAILURES:
            done += 1
            failures += 1  # reset below when the action completes
            try:
                if rng.random() < p_skip:
                    skip = page.locator(f".st-key-review_skip {_BUTTON}").first
                    log.times["skip"].append(await _act(page, wire, skip.click, timeout_ms,
                                                        answered=await _changed(lambda: _nucleus_heading(page))))
                    failures = 0
                    continue
                label = rng.choice(list(DECISION_BUTTONS))
                button = page.locator(f"{DECISION_BUTTONS[label]} {_BUTTON}").first
                log.attempts += 1
                try:
                    log.times["decide"].append(await _act(page, wire, button.click, timeout_ms,
                                                          answered=await _changed(lambda: _acknowledgement(page))))
                    failures = 0
                finally:  # even after a timeout, count a decision the page did acknowledge
                    if failures:
                        with contextlib.suppress(Exception):
                            await _wait_quiet(page, wire, timeout_ms)
                    text = await _acknowledgement(page)
                    m = _RECORDED.search(text)
                    if m and m.group(2) == RECORDED_AS[label] and int(m.group(3)) not in log.events:
                        log.events.append(int(m.group(3)))
                        log.nuclei.append(int(m.group(1)))
                    elif "decided meanwhile" in text:  # the store kept the other session's decision
                        log.stale.append(text.strip())
                    elif "Not saved" in text:
                        log.not_saved.append(text.strip())
                    elif not failures:
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
    from store.labels import audit_trail

    acked = {e: log.reviewer for log in logs for e in log.events}
    n_acks = sum(len(log.events) for log in logs)
    with open_store(db, read_only=True) as s:
        rows = audit_trail(s)
        problems = check_store(s)
    stored = dict(zip(rows["event_id"].astype(int), rows["reviewer"]))
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
        "refused_stale": sum(len(log.stale) for log in logs),
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
                    "note": "server, driver and every browser share these cores; each run records its load average"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    lost = sum(r["events_lost"] + r["events_extra"] for r in runs)
    return 1 if lost or any(r["store_problems"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
