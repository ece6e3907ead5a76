"""Server figures for issue 2: /health latency with the stream cap reached, RSS after 10,000 frames.

Run: python bench/server_figures.py [--frames 10000] [--quick]
Starts `python hud_server.py` in its own process on a free port; readers are
separate processes (raw sockets, large reads); prints a table and JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import start_server_process  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def fake_jpeg(size: int, seed: int) -> bytes:
    """A JPEG-signed blob of ``size`` bytes (the server checks the signature, not the pixels)."""
    body = (seed.to_bytes(4, "big") * (size // 4 + 1))[: size - 4]
    return b"\xff\xd8\xff\xe0" + body


READER = r"""
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for _ in range(n):
    s = socket.create_connection((host, port))
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    socks.append(s)
for s in socks:
    s.recv(65536)
print("ready", flush=True)
sys.stdin.read()  # hold the streams open until told to stop
"""


def percentile(values, q):
    """The q-th percentile (0-100) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def health_with_cap(max_streams: int, samples: int) -> dict:
    """Open max_streams streams from another process, then time /health."""
    server = start_server_process(env={"HUD_MAX_STREAMS": str(max_streams),
                                       "HUD_THREADS": str(max_streams + 8), "HUD_LOG_LEVEL": "WARNING"})
    try:
        reader = subprocess.Popen([sys.executable, "-c", READER, "127.0.0.1", str(server.port), str(max_streams)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert reader.stdout.readline().strip() == "ready"
        assert requests.get(server.url + "/health", timeout=5).json()["open_streams"] == max_streams
        refused = requests.get(server.url + "/stream", timeout=5).status_code
        session = requests.Session()
        timings = []
        for index in range(samples):
            if index % 10 == 0:
                session.post(server.url + "/api/batch", json={"updates": [{"global_step": index}]}, timeout=5)
            start = time.perf_counter()
            session.get(server.url + "/health", timeout=5)
            timings.append((time.perf_counter() - start) * 1000)
        reader.stdin.close()
        reader.wait(10)
        return {"open_streams": max_streams, "extra_stream_status": refused,
                "health_median_ms": statistics.median(timings), "health_p99_ms": percentile(timings, 99)}
    finally:
        server.stop()


def frames_memory(frames: int, frame_bytes: int) -> dict:
    """Post frames with no dashboard open and report the server's RSS growth."""
    server = start_server_process(env={"HUD_LOG_LEVEL": "WARNING"})
    try:
        session = requests.Session()
        session.get(server.url + "/health", timeout=5)
        start = rss_mb(server.process.pid)
        samples = []
        for index in range(frames):
            image = base64.b64encode(fake_jpeg(frame_bytes, index)).decode()
            response = session.post(server.url + "/api/update_vision",
                                    json={"session_id": None, "image_base64": image, "response_time": 0.1},
                                    timeout=10)
            response.raise_for_status()
            if (index + 1) % max(1, frames // 5) == 0:
                samples.append(round(rss_mb(server.process.pid) - start, 1))
        end = rss_mb(server.process.pid)
        return {"frames": frames, "frame_bytes": frame_bytes, "rss_start_mb": round(start, 1),
                "rss_end_mb": round(end, 1), "growth_mb": round(end - start, 1), "growth_samples_mb": samples}
    finally:
        server.stop()


def main() -> int:
    """Run the cases and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run that only checks the cases work")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    frames = 200 if args.quick else args.frames
    results = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "health_with_cap": health_with_cap(32, 50 if args.quick else 500),
        "frames_memory": frames_memory(frames, 20_000),
    }
    health = results["health_with_cap"]
    memory = results["frames_memory"]
    print(f"{'case':<44} {'figure':>22}  target")
    print(f"{'/health, 32 streams open (cap), median':<44} {health['health_median_ms']:>19.2f} ms")
    print(f"{'/health, 32 streams open (cap), p99':<44} {health['health_p99_ms']:>19.2f} ms  < 50 ms")
    print(f"{'33rd stream':<44} {health['extra_stream_status']:>22}  503")
    print(f"{'RSS growth after %d frames of %d B' % (memory['frames'], memory['frame_bytes']):<44} "
          f"{memory['growth_mb']:>19.1f} MB  < 20 MB")
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
