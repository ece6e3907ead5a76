"""History figures for issue 4: server memory after 10 metrics x 1,000,000 updates,
and GET /api/history latency for 10 metrics at the full point budget.

Run: python bench/history_figures.py [--updates 1000000] [--quick]
The server runs as `python hud_server.py` in its own process on a free port.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from helpers import start_server_process  # noqa: E402
from server_figures import percentile, rss_mb  # noqa: E402

METRICS = ["episode_reward", "episode_length", "loss.policy", "loss.value", "entropy", "kl",
           "llm_success_rate", "llm_alignment", "explained_variance", "fps"]


def make_batch(start: int, size: int, rng: random.Random) -> str:
    """A /api/batch body of ``size`` updates, each with global_step and 10 metrics."""
    updates = []
    for step in range(start, start + size):
        update = {"global_step": step}
        for name in METRICS:
            head, _, tail = name.partition(".")
            if tail:
                update.setdefault(head, {})[tail] = rng.random()
            else:
                update[name] = rng.random() * step
        updates.append(update)
    return json.dumps({"run_id": "bench", "updates": updates})


def main() -> int:
    """Post the updates, then report RSS and /api/history latency."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    total = 20_000 if args.quick else args.updates
    server = start_server_process(env={"HUD_LOG_LEVEL": "WARNING"})
    try:
        session = requests.Session()
        session.get(server.url + "/health", timeout=5)
        rss_start = rss_mb(server.process.pid)
        rng = random.Random(7)
        batch = 1000
        started = time.perf_counter()
        for start in range(0, total, batch):
            response = session.post(server.url + "/api/batch", data=make_batch(start, batch, rng),
                                    headers={"Content-Type": "application/json"}, timeout=30)
            response.raise_for_status()
        elapsed = time.perf_counter() - started
        rss_end = rss_mb(server.process.pid)
        timings = []
        size = 0
        for _ in range(5 if args.quick else 50):
            t0 = time.perf_counter()
            response = session.get(server.url + "/api/history", timeout=30)
            timings.append((time.perf_counter() - t0) * 1000)
            size = len(response.content)
        body = response.json()
        points = {name: len(series["steps"]) for name, series in body["metrics"].items()}
        results = {
            "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
            "updates": total, "metrics_recorded": len(points), "points_per_metric": max(points.values()),
            "budget": body["budget"], "post_rate_per_s": round(total / elapsed),
            "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1),
            "history_ms_median": round(statistics.median(timings), 2),
            "history_ms_p99": round(percentile(timings, 99), 2), "history_bytes": size,
        }
    finally:
        server.stop()
    print(f"server RSS after {total:,} updates x {len(METRICS)} metrics: {results['rss_end_mb']} MB "
          f"(start {results['rss_start_mb']} MB)  target < 50 MB")
    print(f"GET /api/history ({results['metrics_recorded']} series x {results['points_per_metric']} points, "
          f"{size:,} B): median {results['history_ms_median']} ms, p99 {results['history_ms_p99']} ms  "
          "target < 50 ms")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
