"""How much of /health's latency under load is the HUD's, and how much the machine's and waitress's.

Run: python bench/health_floor.py [--samples 500] [--json PATH]

The `health` case of bench/run.py asks for /health with the stream cap reached
while 8 HUDClient producers send 4,000 updates/s. This script measures the same
probe (a fresh connection per GET, every 10 ms) in four set-ups, each with the
same 8 producer processes:

  hud          the HUD with 32 open streams, the producers posting to it (the case itself)
  hud-no-streams  the same without the streams
  minimal      a minimal Flask app on waitress (the HUD's threads and lookahead) whose
               endpoints only read the body and answer, the producers posting to it
  elsewhere    an idle HUD, the producers posting to another server on this machine

`elsewhere` is the floor the machine sets: nothing runs in the probed server but
the probe. `minimal` adds waitress and Flask doing as many requests as the HUD does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import run  # bench/run.py: health_once, start_readers, QUIET

from common import ROOT, Worker, latency_summary, machine, start_server_process, stop_all, wait_until

PRODUCERS, RATE, STREAMS = 8, 4_000, 32


def serve_minimal(port: int) -> None:
    """The minimal server: /health, and posts that read their body and answer (the client's endpoints)."""
    from flask import Flask, jsonify, request
    from waitress.server import create_server

    app = Flask(__name__)

    @app.get("/health")
    def health():
        return jsonify(status="healthy")

    @app.post("/api/register_session")
    def register():
        return jsonify(session_id="s", status="registered", run_id="bench", boot_id="b")

    @app.post("/api/batch")
    def batch():
        request.get_data()
        return jsonify(status="updated", applied=0, session_id="s", boot_id="b")

    server = create_server(app, host="127.0.0.1", port=port, threads=40, channel_request_lookahead=5)
    server.run()


def minimal_server() -> tuple[subprocess.Popen, int]:
    from helpers import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve-minimal", str(port)])

    def answers() -> bool:
        try:
            return run.health_once(port) > 0
        except OSError:
            return False

    wait_until(answers, 30, message="the minimal server")
    return process, port


def probe(probed_port: int, target_url: str, samples: int) -> dict:
    """/health latency on ``probed_port`` while the producers post to ``target_url``."""
    feeders = [
        Worker("steady", target_url, "--rate", str(RATE // PRODUCERS), "--duration", "600") for _ in range(PRODUCERS)
    ]
    try:
        for feeder in feeders:
            feeder.ready()
        for feeder in feeders:
            feeder.send("go")
        time.sleep(0.5)  # let the producers reach their pace before sampling
        timings = []
        for _ in range(samples):
            timings.append(run.health_once(probed_port))
            time.sleep(0.01)  # a probe's pace, not a wait for a result
        for feeder in feeders:
            feeder.send("stop")
    finally:
        stop_all(feeders)
    return latency_summary([t * 1000 for t in timings])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "health_floor.json")
    parser.add_argument("--serve-minimal", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_minimal:
        serve_minimal(args.serve_minimal)
        return 0
    results = {}

    hud = start_server_process(env={**run.QUIET, "HUD_MAX_STREAMS": str(STREAMS)})
    readers = run.start_readers(hud.url, STREAMS, "drain", deadline=600)
    try:
        results["hud"] = probe(hud.port, hud.url, args.samples)
    finally:
        stop_all(readers)
        hud.stop()

    hud = start_server_process(env={**run.QUIET, "HUD_MAX_STREAMS": str(STREAMS)})
    try:
        results["hud-no-streams"] = probe(hud.port, hud.url, args.samples)
    finally:
        hud.stop()

    process, port = minimal_server()
    try:
        results["minimal"] = probe(port, f"http://127.0.0.1:{port}", args.samples)
    finally:
        process.kill()
        process.wait()

    idle, busy = start_server_process(env=run.QUIET), start_server_process(env=run.QUIET)
    try:
        results["elsewhere"] = probe(idle.port, busy.url, args.samples)
    finally:
        idle.stop()
        busy.stop()

    for name, summary in results.items():
        print(f"{name:15} /health median {summary['median_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "machine": machine(),
                "producers": PRODUCERS,
                "rate": RATE,
                "streams": STREAMS,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
