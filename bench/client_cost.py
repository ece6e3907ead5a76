"""Per-call cost of HUDClient.update_training_data: the measurement bench/run.py's client case uses.

Run: python bench/run.py --cases client_cost
"up" is `python hud_server.py` in its own process; "refusing" is a port nobody
listens on; "hung" is a socket that accepts connections and never answers.
Reports median, p99, p99.9 and max per call in microseconds.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from hud_client import HUDClient  # noqa: E402


def measure(url: str, calls: int, wait_for_sends: bool) -> dict:
    """Time ``calls`` update_training_data calls against ``url``."""
    client = HUDClient(url, max_pending=max(calls, 10_000), connect_timeout=3.0, read_timeout=3.0)
    data = {
        "global_step": 0,
        "episode_reward": 1.5,
        "location": "Horon Village",
        "position": {"x": 1, "y": 2},
        "health": {"current": 3, "max": 3},
    }
    clock = time.perf_counter_ns
    times = []
    for step in range(calls):
        data["global_step"] = step
        start = clock()
        client.update_training_data(data)
        times.append(clock() - start)
    flushed = client.close(30 if wait_for_sends else 0.2)
    times.sort()

    def quantile(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))] / 1000

    return {
        "calls": calls,
        "median_us": round(quantile(0.5), 2),
        "p99_us": round(quantile(0.99), 2),
        "p999_us": round(quantile(0.999), 1),
        "max_us": round(times[-1] / 1000, 1),
        "mean_us": round(statistics.fmean(times) / 1000, 2),
        "all_sent": flushed,
        "sent": client.stats.sent,
    }
