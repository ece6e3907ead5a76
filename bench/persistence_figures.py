"""Persistence figures for issue 6: updates lost across kill -9 at 100 updates/s, SIGTERM-to-exit time.

Run: python bench/persistence_figures.py [--trials 5] [--quick]
The server runs as `python hud_server.py` with HUD_DATA_DIR in a temporary
directory; a feeder posts one update every 10 ms (each acknowledged by the
server), the server is killed with SIGKILL mid-feed, restarted on the same
directory, and the restored count is compared with the acknowledged count.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import start_server_process  # noqa: E402

RATE = 100  # updates per second


def kill_trial(seconds: float) -> dict:
    """Feed at RATE for ``seconds``, kill -9, restart, and count what came back."""
    with tempfile.TemporaryDirectory() as data_dir:
        env = {"HUD_DATA_DIR": data_dir, "HUD_LOG_LEVEL": "WARNING"}
        server = start_server_process(env=env)
        session = requests.Session()
        acknowledged = 0
        start = time.monotonic()
        try:
            while time.monotonic() - start < seconds:
                due = start + acknowledged / RATE
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing the feed at RATE, not waiting for a result
                response = session.post(
                    server.url + "/api/update_training",
                    json={"session_id": None, "data": {"global_step": acknowledged}},
                    timeout=5,
                )
                response.raise_for_status()
                acknowledged += 1
        finally:
            server.kill()
        restarted = start_server_process(port=server.port, env=env)
        try:
            restored = requests.get(restarted.url + "/api/state", timeout=5).json()["updates"]
        finally:
            restarted.stop()
    return {
        "acknowledged": acknowledged,
        "restored": restored,
        "lost": acknowledged - restored,
        "lost_seconds": round((acknowledged - restored) / RATE, 3),
    }


def sigterm_trial() -> float:
    """Seconds from SIGTERM to exit with a stream open and a store to write."""
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server_process(env={"HUD_DATA_DIR": data_dir, "HUD_LOG_LEVEL": "WARNING"})
        stream = requests.get(server.url + "/stream", stream=True, timeout=5)
        requests.post(
            server.url + "/api/batch", json={"updates": [{"global_step": i} for i in range(1000)]}, timeout=10
        ).raise_for_status()
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(30)
        elapsed = time.monotonic() - started
        stream.close()
        return elapsed


def main() -> int:
    """Run the trials and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    trials = 1 if args.quick else args.trials
    kills = [kill_trial(1.0 if args.quick else 3.0) for _ in range(trials)]
    exits = [sigterm_trial() for _ in range(trials)]
    worst = max(trial["lost_seconds"] for trial in kills)
    print(
        f"updates lost across kill -9 at {RATE}/s: {[t['lost'] for t in kills]} (worst {worst} s worth; target <= 1 s)"
    )
    print(f"SIGTERM to exit: median {statistics.median(exits):.2f} s, max {max(exits):.2f} s")
    print(json.dumps({"kill_trials": kills, "sigterm_exit_s": exits}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
