"""Per-call cost of HUDClient.update_training_data with the server up, refusing, and hung.

Run: python bench/client_cost.py [--calls 10000] [--quick]
"up" is `python hud_server.py` in its own process; "refusing" is a port nobody
listens on; "hung" is a socket that accepts connections and never answers.
Prints median / p99 / p99.9 / max per call in microseconds, and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from helpers import start_server_process  # noqa: E402
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


def main() -> int:
    """Measure the three cases and print them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls = 1000 if args.quick else args.calls
    results = {"machine": {"cores": os.cpu_count(), "python": platform.python_version()}}
    server = start_server_process(env={"HUD_LOG_LEVEL": "WARNING"})
    try:
        results["up"] = measure(server.url, calls, wait_for_sends=True)
    finally:
        server.stop()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refusing_url = f"http://127.0.0.1:{unused.getsockname()[1]}"
    results["refusing"] = measure(refusing_url, calls, wait_for_sends=False)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    held = []

    def accept_forever() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_forever, daemon=True).start()
    results["hung"] = measure(f"http://127.0.0.1:{listener.getsockname()[1]}", calls, wait_for_sends=False)
    listener.close()
    print(
        f"{'server':<10} {'median':>8} {'p99':>8} {'p99.9':>8} {'max':>10}   (µs per update_training_data; "
        "target ≤ 5 µs median)"
    )
    for case in ("up", "refusing", "hung"):
        row = results[case]
        print(f"{case:<10} {row['median_us']:>8} {row['p99_us']:>8} {row['p999_us']:>8} {row['max_us']:>10}")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
