"""Shared pieces of the benchmark suite: the machine, /proc figures, quantiles, worker processes, py-spy."""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from helpers import start_server_process, wait_until  # noqa: E402,F401  (re-exported for the cases)

WORKERS = Path(__file__).resolve().parent / "workers.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine() -> dict:
    """Cores, CPU model, Python, the pinned packages' versions and the code's revision."""
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    versions = {}
    for name in ("flask", "waitress", "werkzeug", "requests"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    revision = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "hud_server.py", "hud_client.py"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    sources = {
        name: hashlib.sha1((ROOT / name).read_bytes()).hexdigest()[:12] for name in ("hud_server.py", "hud_client.py")
    }
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
        "revision": revision + ("+uncommitted" if dirty else ""),
        "source_sha1": sources,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def calibrate(seconds: float = 0.5) -> dict:
    """How fast and how contended this machine is right now, to read the other figures against.

    ``json_loads_mb_per_cpu_s``: a 100 KB /api/batch-like body decoded per CPU second (a
    quiet modern core does several hundred MB/s). ``cpu_share``: CPU time this process got
    while spinning, over wall time (1.0 = a core of its own; less = other load).
    """
    update = {
        "global_step": 1,
        "episode_reward": 0.5,
        "location": "Horon Village",
        "position": {"x": 1, "y": 72},
        "health": {"current": 9, "max": 12},
    }
    body = json.dumps({"updates": [dict(update, global_step=i) for i in range(500)]})
    cpu0, wall0 = time.process_time(), time.perf_counter()
    loops = 0
    while time.perf_counter() - wall0 < seconds:
        json.loads(body)
        loops += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "json_loads_mb_per_cpu_s": round(loops * len(body) / 1e6 / max(cpu, 1e-9), 1),
        "cpu_share": round(cpu / wall, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MB, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def quantile(values, q: float) -> float | None:
    """The q-quantile (0..1) of ``values`` by nearest rank; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def latency_summary(values_us: list, unit: str = "ms") -> dict:
    """Median, p99 and max of latencies given in µs, in ``unit``."""
    scale = 1000.0 if unit == "ms" else 1.0
    if not values_us:
        return {"samples": 0, f"median_{unit}": None, f"p99_{unit}": None, f"max_{unit}": None}
    ordered = sorted(values_us)
    return {
        "samples": len(ordered),
        f"median_{unit}": round(quantile(ordered, 0.5) / scale, 3),
        f"p99_{unit}": round(quantile(ordered, 0.99) / scale, 3),
        f"max_{unit}": round(ordered[-1] / scale, 3),
    }


class Worker:
    """A ``bench/workers.py`` process: lines out on stdout, a line in on stdin to start or stop."""

    def __init__(self, role: str, url: str, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, str(WORKERS), role, url, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def line(self) -> str:
        """The worker's next line (raises if it exited instead)."""
        text = self.process.stdout.readline()
        if not text:
            raise RuntimeError(f"worker exited with {self.process.wait()} before answering")
        return text.strip()

    def ready(self) -> str:
        """Wait for the worker's ``ready`` line; return what follows it."""
        text = self.line()
        if not text.startswith("ready"):
            raise RuntimeError(f"worker said {text!r} instead of ready")
        return text[5:].strip()

    def send(self, text: str = "go") -> None:
        """Write one line to the worker (go / stop)."""
        try:
            self.process.stdin.write(text + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def result(self, timeout: float = 120.0) -> dict:
        """The worker's final JSON line; waits for it to exit."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.line()
            if text.startswith("{"):
                self.process.wait(max(1.0, deadline - time.monotonic()))
                return json.loads(text)
            if time.monotonic() > deadline:
                raise RuntimeError("worker gave no result in time")

    def stop(self) -> None:
        """End the worker if it is still running."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except (BrokenPipeError, OSError):
                pass


def stop_all(workers: list) -> None:
    """Stop every worker in ``workers``."""
    for worker in workers:
        worker.stop()


class Profiler:
    """``py-spy record`` attached to a process for a while, summarised as the top functions."""

    def __init__(self, pid: int, out: Path, duration: float, rate: int = 100):
        self.out = out
        self.process = None
        if shutil.which("py-spy") is None:
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--gil",
                "--rate",
                str(rate),
                "--duration",
                str(max(1, int(duration))),
                "--nonblocking",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def summary(self, top: int = 12) -> dict:
        """Wait for py-spy and return the top functions by own and by total share of samples."""
        if self.process is None:
            return {"error": "py-spy not installed (pip install py-spy)"}
        try:
            _, err = self.process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return {"error": "py-spy did not finish"}
        if not self.out.exists():
            return {"error": (err or "no output").strip()[-500:]}
        own: collections.Counter = collections.Counter()
        total: collections.Counter = collections.Counter()
        samples = 0
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            count = int(count)
            samples += count
            frames = [_short(frame) for frame in stack.split(";")]
            own[frames[-1]] += count
            for frame in set(frames):
                total[frame] += count
        if not samples:
            return {"error": "no samples"}

        def share(counter, keep=lambda name: True):
            rows = [[name, round(100 * n / samples, 1)] for name, n in counter.most_common() if keep(name)]
            return rows[:top]

        return {
            "samples": samples,
            "file": str(self.out),
            "mode": "--gil: samples of the thread holding the GIL",
            "own_pct": share(own),
            "hud_server_total_pct": share(total, lambda name: name.endswith("(hud_server.py)")),
            "total_pct": share(total, lambda name: total[name] < 0.9 * samples),
        }

    def stop(self) -> None:
        """End py-spy if it is still running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``: one name per function, not per line."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({Path(path).name})" if path else name
