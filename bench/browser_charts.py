"""Browser figures for the live charts: main-thread time per update at 100 updates/s with 8 charts open.

Starts `python hud_server.py` on a free port, opens the dashboard in Debian's headless
Chromium (Playwright), opens charts until 8 are shown, then posts 100 updates a second
(one per /api/batch POST) for --seconds from a separate thread. Chrome's own counters
(CDP `Performance.getMetrics`: TaskDuration, ScriptDuration, LayoutDuration,
RecalcStyleDuration) are read before and after; their deltas divided by the updates the
page received give the main-thread cost per update. An idle stretch of the same page is
measured first, for reference.

Run: python bench/browser_charts.py [--seconds 10] [--rate 100] [--quick] [--json PATH]
Never part of the test run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import CHROMIUM, CHROMIUM_ARGS, start_server_process, wait_until  # noqa: E402

# Charted besides the two defaults (episode_reward, episode_length): 6 more makes 8.
EXTRA_CHARTS = ["loss.policy", "loss.value", "entropy", "kl", "fps", "explained_variance"]
COUNTERS = [
    "TaskDuration",
    "ThreadTime",
    "ScriptDuration",
    "LayoutDuration",
    "RecalcStyleDuration",
    "TaskOtherDuration",
]


def update(step: int, rng: random.Random) -> dict:
    """One training update: global_step, the 8 charted metrics and a few card fields."""
    progress = 1 - math.exp(-step / 400)
    return {
        "global_step": step,
        "episode": step,
        "episode_reward": 40 * progress + rng.gauss(0, 4),
        "episode_length": int(900 - 400 * progress + rng.gauss(0, 40)),
        "loss": {"policy": rng.random(), "value": rng.random() * 2},
        "entropy": 1.5 - progress,
        "kl": rng.random() / 100,
        "fps": 900 + rng.gauss(0, 20),
        "explained_variance": progress,
        "llm_success_rate": 0.5 + progress / 2,
        "health": {"current": 10, "max": 24},
    }


def metrics(cdp) -> dict[str, float]:
    """Chrome's performance counters for the page, by name."""
    return {item["name"]: item["value"] for item in cdp.send("Performance.getMetrics")["metrics"]}


def points(page, name: str = "episode_reward") -> int:
    """Points the chart of ``name`` has drawn (the page's test hook)."""
    return page.evaluate("(name) => window.hudCharts.points(name)", name)


def feed(url: str, start: int, count: int, rate: float, rng: random.Random, sent: list) -> None:
    """Post ``count`` updates, one per POST, paced at ``rate`` a second."""
    session = requests.Session()
    began = time.perf_counter()
    for i in range(count):
        due = began + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            threading.Event().wait(delay)  # pacing the producer, not waiting for a result
        body = {"session_id": None, "run_id": "bench", "updates": [update(start + i, rng)]}
        response = session.post(url + "/api/batch", json=body, timeout=10)
        response.raise_for_status()
        sent[0] += 1
    sent.append(time.perf_counter() - began)


def measure(args) -> dict:
    """Run the scenario and return the figures."""
    from playwright.sync_api import sync_playwright

    server = start_server_process(env={"HUD_LOG_LEVEL": "WARNING"})
    rng = random.Random(11)
    try:
        requests.post(
            server.url + "/api/batch", json={"run_id": "bench", "updates": [update(0, rng)]}, timeout=10
        ).raise_for_status()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            errors = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url + "/")
            wait_until(lambda: points(page) == 1, 20, message="the first point")
            for name in EXTRA_CHARTS:
                page.locator(f'#metrics-body tr[data-key="{name}"]').click()
                wait_until(lambda name=name: points(page, name) == 1, 20, message=f"the {name} chart")
            charts = page.evaluate("window.hudCharts.names()")
            assert len(charts) == 8, charts

            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            idle_seconds = min(2.0, args.seconds)
            idle_before = metrics(cdp)
            threading.Event().wait(idle_seconds)  # an idle stretch of fixed length, for reference
            idle_after = metrics(cdp)

            count = int(args.seconds * args.rate)
            sent = [0]
            before_points = points(page)
            before = metrics(cdp)
            feeder = threading.Thread(target=feed, args=(server.url, 1, count, args.rate, rng, sent))
            wall_start = time.perf_counter()
            feeder.start()
            feeder.join()
            wait_until(lambda: points(page) == before_points + count, 30, message="every update in the page")
            after = metrics(cdp)
            wall = time.perf_counter() - wall_start
            received = points(page) - before_points
            browser.close()
    finally:
        server.stop()

    deltas = {name: (after.get(name, 0) - before.get(name, 0)) * 1000 for name in COUNTERS}
    idle = {name: (idle_after.get(name, 0) - idle_before.get(name, 0)) * 1000 / idle_seconds for name in COUNTERS}
    return {
        "charts": len(charts),
        "updates_sent": sent[0],
        "updates_received": received,
        "feed_seconds": round(sent[1], 3),
        "measured_seconds": round(wall, 3),
        "rate_target": args.rate,
        "rate_achieved": round(sent[0] / sent[1], 1),
        "ms_per_update": {
            name.replace("Duration", "").lower(): round(value / received, 4) for name, value in deltas.items()
        },
        "main_thread_busy_fraction": round(deltas["TaskDuration"] / 1000 / wall, 4),
        "idle_ms_per_second": {name.replace("Duration", "").lower(): round(value, 3) for name, value in idle.items()},
        "raw_deltas_ms": {name: round(value, 2) for name, value in deltas.items()},
        "console_errors": errors,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
    }


def main() -> int:
    """Measure and print the figures (and write them as JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to feed updates")
    parser.add_argument("--rate", type=float, default=100.0, help="updates per second")
    parser.add_argument("--quick", action="store_true", help="feed for 2 s only")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 2.0
    figures = measure(args)
    per = figures["ms_per_update"]
    print(
        f"{figures['charts']} charts, {figures['updates_received']} updates received at "
        f"{figures['rate_achieved']}/s over {figures['feed_seconds']} s"
    )
    print(
        f"main-thread time per update: {per['task']:.3f} ms (target < 2 ms); CPU time {per['threadtime']:.3f} ms  "
        f"[script {per['script']:.3f}, layout {per['layout']:.3f}, style {per['recalcstyle']:.3f}, "
        f"other {per['taskother']:.3f}]"
    )
    print(
        f"main thread busy: {figures['main_thread_busy_fraction'] * 100:.1f}% of wall time; "
        f"idle page: {figures['idle_ms_per_second']['task']:.2f} ms/s"
    )
    print("raw CDP deltas (ms):", json.dumps(figures["raw_deltas_ms"]))
    if figures["console_errors"]:
        print("console errors:", figures["console_errors"])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
