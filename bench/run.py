"""The HUD benchmark suite: one command, its own servers, a table and the figures as JSON.

Run: python bench/run.py [--quick] [--cases ingest,fanout] [--json PATH] [--profile]

Every case starts ``python hud_server.py`` in its own process on a free port and
stops it at the end. Producers (``HUDClient`` or raw batch posters) and /stream
readers are processes of their own (``bench/workers.py``); readers take whole
chunks off their sockets, parse them outside the server's and the timer's
processes, and report the CPU they used. Latencies are from the producer's
``time.time_ns()`` just before ``update_training_data`` to the event parsed by
the reader (one machine clock). Cases:

  client_cost  update_training_data per call: server up, refusing, accepting but never answering
  ingest       updates/s the server applies from 1, 8, 64 HUDClient processes; server CPU per update
  fanout       N /stream readers, a producer at 100 updates/s for 10 s: share delivered, latency
  frames       10 frames/s of 20 KB JPEGs, 16 readers: share delivered, latency
  health       /health latency with the stream cap reached and producers running
  memory       server RSS over 1,000,000 updates and 10,000 frames, no reader / 16 readers;
               /api/history latency afterwards

``--profile`` also runs py-spy on the server in an extra ingest and fan-out run
and lists where its time goes. The JSON goes to bench/results/bench.json unless
``--json`` says otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import select
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import requests

from common import (  # bench/ is on sys.path: this file runs as a script
    ROOT,
    Profiler,
    Worker,
    calibrate,
    cpu_seconds,
    latency_summary,
    machine,
    rss_mb,
    start_server_process,
    stop_all,
    wait_until,
)

CASES = ("client_cost", "ingest", "fanout", "frames", "health", "memory")
READERS_PER_PROCESS = 64  # /stream connections one reader process holds

FULL = {
    "client_calls": 10_000,
    "ingest_producers": [1, 8, 64],
    "ingest_updates": {1: 50_000, 8: 20_000, 64: 2_500},
    "fanout_readers": [1, 32, 128, 256],
    "fanout_rate": 100,
    "fanout_seconds": 10,
    "frames_readers": 16,
    "frames_rate": 10,
    "frames_seconds": 10,
    "frame_bytes": 20_000,
    "health_streams": 32,
    "health_producers": 8,
    "health_rate": 4_000,
    "health_samples": 500,
    "memory_updates": 1_000_000,
    "memory_frames": 10_000,
    "memory_batch": 100,
    "memory_readers": [0, 16],
    "history_samples": 20,
}
QUICK = {
    "client_calls": 1_000,
    "ingest_producers": [1, 4],
    "ingest_updates": {1: 1_000, 4: 250},
    "fanout_readers": [1, 8],
    "fanout_rate": 100,
    "fanout_seconds": 1,
    "frames_readers": 16,
    "frames_rate": 10,
    "frames_seconds": 1,
    "frame_bytes": 20_000,
    "health_streams": 32,
    "health_producers": 2,
    "health_rate": 1_000,
    "health_samples": 30,
    "memory_updates": 5_000,
    "memory_frames": 50,
    "memory_batch": 100,
    "memory_readers": [0, 16],
    "history_samples": 5,
}
QUIET = {"HUD_LOG_LEVEL": "WARNING"}


def get_json(url: str) -> dict:
    """GET ``url`` and decode its JSON."""
    return requests.get(url, timeout=10).json()


def applied(url: str) -> int:
    """Training updates the server has applied (from /api/state)."""
    return get_json(url + "/api/state")["updates"]


def open_streams(url: str) -> int:
    """Open /stream connections (from /health)."""
    return get_json(url + "/health")["open_streams"]


def start_readers(url: str, n: int, mode: str, last: int = -1, deadline: float = 120.0) -> list[Worker]:
    """``n`` /stream readers in ceil(n / 64) processes, all connected and past their snapshot."""
    workers = []
    left = n
    while left > 0:
        take = min(READERS_PER_PROCESS, left)
        workers.append(
            Worker("readers", url, "--n", str(take), "--mode", mode, "--last", str(last), "--deadline", str(deadline))
        )
        left -= take
    for worker in workers:
        statuses = json.loads(worker.ready() or "{}").get("statuses", [])
        if mode == "parse" and statuses != [200]:
            raise RuntimeError(f"/stream answered {statuses}")
    return workers


def finish_readers(workers: list[Worker], grace: float) -> list[dict]:
    """Give readers ``grace`` seconds to see the last event, then stop them and collect results."""
    deadline = time.monotonic() + grace
    results = []
    for worker in workers:
        # A reader that saw the last event prints its result at once (read it, or its pipe fills).
        waiting = select.select([worker.process.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]
        if not waiting:
            worker.send("stop")
        results.append(worker.result(30))
    return results


def wait_streams_closed(url: str) -> None:
    """Wait until the server has noticed every reader left (it frees a slot within about a second)."""
    wait_until(lambda: open_streams(url) == 0, timeout=20, message="the server to close its streams")


# --------------------------------------------------------------------------- cases


def case_client_cost(plan: dict) -> dict:
    """Per-call cost of update_training_data against a server that is up, refusing, or hung."""
    from client_cost import measure

    logging.getLogger("hud_client").setLevel(logging.ERROR)  # the refused/hung warnings are expected here
    calls = plan["client_calls"]
    results = {}
    server = start_server_process(env=QUIET)
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

    def accept_and_hold() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_hold, daemon=True).start()
    try:
        results["hung"] = measure(f"http://127.0.0.1:{listener.getsockname()[1]}", calls, wait_for_sends=False)
    finally:
        listener.close()
        for sock in held:
            sock.close()
    return {"settings": {"calls": calls, "clock": "perf_counter_ns in the calling process"}, **results}


def run_ingest(url: str, pid: int, producers: int, count: int, profile: Path | None = None) -> dict:
    """One ingest run: ``producers`` HUDClient processes push ``count`` updates each at once."""
    workers = [Worker("ingest", url, "--count", str(count)) for _ in range(producers)]
    profiler = None
    try:
        for worker in workers:
            worker.ready()
        before = applied(url)
        if profile:
            profiler = Profiler(pid, profile, duration=600)
            time.sleep(0.5)  # let py-spy attach before the load starts
        cpu0 = cpu_seconds(pid)
        started = time.time_ns()
        for worker in workers:
            worker.send("go")
        results = [worker.result(300) for worker in workers]
        cpu1 = cpu_seconds(pid)
        if profiler is not None and profiler.process is not None:
            profiler.process.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
    finally:
        stop_all(workers)
    done = applied(url) - before
    elapsed = (max(r["done_ns"] for r in results) - started) / 1e9
    push = statistics.median((r["pushed_ns"] - r["started_ns"]) / 1e9 for r in results)
    figures = {
        "producers": producers,
        "updates_per_producer": count,
        "sent": producers * count,
        "applied": done,
        "dropped": sum(r["dropped"] for r in results),
        "all_flushed": all(r["flushed"] for r in results),
        "elapsed_s": round(elapsed, 3),
        "updates_per_s": round(done / elapsed),
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "server_cpu_us_per_update": round((cpu1 - cpu0) / done * 1e6, 2),
        "server_cpu_share_of_machine": round((cpu1 - cpu0) / elapsed / os.cpu_count(), 3),
        "producers_cpu_s": round(sum(r["cpu_s"] for r in results), 2),
        "producer_push_s_median": round(push, 3),
    }
    if profiler is not None:
        figures["profile"] = profiler.summary()
    return figures


def case_ingest(plan: dict, profile_dir: Path | None) -> dict:
    """Updates/s applied from 1, 8 and 64 HUDClient producer processes, and server CPU per update."""
    server = start_server_process(env=QUIET)
    try:
        runs = [
            run_ingest(server.url, server.process.pid, n, plan["ingest_updates"][n]) for n in plan["ingest_producers"]
        ]
        result = {
            "settings": {
                "client": "HUDClient defaults (max_batch 1000, NDJSON batches), max_pending = updates + 10",
                "update": "8 keys, 2 nested dicts",
                "server": "defaults",
            },
            "runs": runs,
        }
        if profile_dir:
            n = 8 if 8 in plan["ingest_producers"] else plan["ingest_producers"][-1]
            result["profiled_run"] = run_ingest(
                server.url, server.process.pid, n, plan["ingest_updates"][n], profile=profile_dir / "ingest.txt"
            )
        return result
    finally:
        server.stop()


def run_fanout(url: str, pid: int, readers: int, rate: int, seconds: float, profile: Path | None = None) -> dict:
    """N parsing readers while one HUDClient producer sends ``rate`` updates/s for ``seconds``."""
    count = int(rate * seconds)
    producer = Worker("paced", url, "--count", str(count), "--rate", str(rate))
    workers = []
    profiler = None
    try:
        producer.ready()
        workers = start_readers(url, readers, "parse", last=count - 1, deadline=seconds + 60)
        streams = open_streams(url)
        if profile:
            profiler = Profiler(pid, profile, duration=seconds)
        cpu0 = cpu_seconds(pid)
        producer.send("go")
        sent = producer.result(seconds + 60)
        cpu1 = cpu_seconds(pid)
        results = finish_readers(workers, grace=5.0)
    finally:
        stop_all([producer, *workers])
    delivered = [steps / count for r in results for steps in r["steps"]]
    latencies = [v for r in results for v in r["latencies_us"]]
    events = sum(len(r["latencies_us"]) for r in results)
    reader_cpu = sum(r["cpu_s"] for r in results)
    figures = {
        "readers": readers,
        "reader_processes": len(results),
        "open_streams_seen": streams,
        "sent": count,
        "producer_sent": sent["sent"] - 1,
        "producer_late": sent["late"],
        "delivered_min_pct": round(100 * min(delivered), 2),
        "delivered_mean_pct": round(100 * statistics.fmean(delivered), 2),
        "duplicates": sum(r["duplicates"] for r in results),
        "latency": latency_summary(latencies),
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "server_cpu_pct_of_one_core": round(100 * (cpu1 - cpu0) / sent["elapsed_s"], 1),
        "readers_cpu_s": round(reader_cpu, 2),
        "readers_cpu_us_per_event": round(reader_cpu / max(1, events) * 1e6, 1),
        "readers_timed_out": any(r["timed_out"] for r in results),
    }
    if profiler is not None:
        figures["profile"] = profiler.summary()
    return figures


def fanout_server(max_readers: int):
    """A server whose stream cap and thread pool fit ``max_readers`` streams."""
    streams = max(32, max_readers)
    return start_server_process(env={**QUIET, "HUD_MAX_STREAMS": str(streams), "HUD_THREADS": str(streams + 16)})


def case_fanout(plan: dict, profile_dir: Path | None) -> dict:
    """Share delivered and call-to-parse latency for N = 1, 32, 128, 256 readers at 100 updates/s."""
    top = max(plan["fanout_readers"])
    server = fanout_server(top)
    try:
        runs = []
        for n in plan["fanout_readers"]:
            runs.append(run_fanout(server.url, server.process.pid, n, plan["fanout_rate"], plan["fanout_seconds"]))
            wait_streams_closed(server.url)
        result = {
            "settings": {
                "rate_per_s": plan["fanout_rate"],
                "seconds": plan["fanout_seconds"],
                "max_streams": max(32, top),
                "threads": max(32, top) + 16,
                "readers_per_process": READERS_PER_PROCESS,
                "read_size": 65536,
                "latency": "time.time_ns() before update_training_data -> event parsed",
            },
            "runs": runs,
        }
        if profile_dir:
            result["profiled_run"] = run_fanout(
                server.url,
                server.process.pid,
                top,
                plan["fanout_rate"],
                plan["fanout_seconds"],
                profile=profile_dir / "fanout.txt",
            )
        return result
    finally:
        server.stop()


def case_frames(plan: dict) -> dict:
    """10 frames/s of 20 KB JPEGs through HUDClient.update_vision_data with 16 readers."""
    rate, seconds, n = plan["frames_rate"], plan["frames_seconds"], plan["frames_readers"]
    count = int(rate * seconds)
    server = start_server_process(env=QUIET)
    producer = Worker(
        "paced",
        server.url,
        "--frames",
        "--count",
        str(count),
        "--rate",
        str(rate),
        "--frame-bytes",
        str(plan["frame_bytes"]),
    )
    workers = []
    try:
        producer.ready()
        workers = start_readers(server.url, n, "parse", last=count - 1, deadline=seconds + 60)
        cpu0 = cpu_seconds(server.process.pid)
        producer.send("go")
        sent = producer.result(seconds + 60)
        cpu1 = cpu_seconds(server.process.pid)
        results = finish_readers(workers, grace=5.0)
    finally:
        stop_all([producer, *workers])
        server.stop()
    delivered = [frames / count for r in results for frames in r["frames"]]
    latencies = [v for r in results for v in r["frame_latencies_us"]]
    reader_cpu = sum(r["cpu_s"] for r in results)
    return {
        "settings": {
            "rate_per_s": rate,
            "seconds": seconds,
            "frame_bytes": plan["frame_bytes"],
            "readers": n,
            "producer": "HUDClient.update_vision_data(bytes)",
            "server": "defaults",
        },
        "sent": count,
        "producer_frames_sent": sent["frames_sent"],
        "producer_frames_dropped": sent["frames_dropped"],
        "delivered_min_pct": round(100 * min(delivered), 2),
        "delivered_mean_pct": round(100 * statistics.fmean(delivered), 2),
        "latency": latency_summary(latencies),
        "server_cpu_pct_of_one_core": round(100 * (cpu1 - cpu0) / sent["elapsed_s"], 1),
        "readers_cpu_s": round(reader_cpu, 2),
        "readers_cpu_us_per_event": round(reader_cpu / max(1, len(latencies)) * 1e6, 1),
    }


def health_once(port: int) -> float:
    """One GET /health on a fresh connection (as a probe makes it), in ms."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"/health answered {response.status}")
    finally:
        conn.close()
    return (time.perf_counter() - start) * 1000


def case_health(plan: dict) -> dict:
    """/health latency with max_streams readers open and producers sending."""
    cap, producers, rate = plan["health_streams"], plan["health_producers"], plan["health_rate"]
    server = start_server_process(env={**QUIET, "HUD_MAX_STREAMS": str(cap)})
    pid = server.process.pid
    workers = []
    try:
        workers += start_readers(server.url, cap, "drain", deadline=600)
        streams = open_streams(server.url)
        extra = requests.get(server.url + "/stream", timeout=10).status_code
        feeders = [
            Worker("steady", server.url, "--rate", str(rate // producers), "--duration", "600")
            for _ in range(producers)
        ]
        workers += feeders
        for feeder in feeders:
            feeder.ready()
        before = applied(server.url)
        for feeder in feeders:
            feeder.send("go")
        time.sleep(0.5)  # let the producers reach their pace before sampling
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        timings = []
        for _ in range(plan["health_samples"]):
            timings.append(health_once(server.port))
            time.sleep(0.01)  # a probe's pace, not a wait for a result
        cpu1, elapsed = cpu_seconds(pid), time.monotonic() - t0
        during = applied(server.url) - before
        for worker in workers:
            worker.send("stop")
        for feeder in feeders:
            feeder.result(30)
    finally:
        stop_all(workers)
        server.stop()
    summary = latency_summary([t * 1000 for t in timings])
    return {
        "settings": {
            "max_streams": cap,
            "threads": "default (40)",
            "readers": "draining, 1 process",
            "producers": producers,
            "producer_rate_total_per_s": rate,
            "request": "fresh connection per GET (http.client)",
            "samples": plan["health_samples"],
        },
        "open_streams": streams,
        "extra_stream_status": extra,
        "latency": summary,
        "updates_applied_per_s": round(during / (elapsed + 0.5)),
        "server_cpu_pct_of_one_core": round(100 * (cpu1 - cpu0) / elapsed, 1),
    }


def run_memory(plan: dict, readers: int) -> dict:
    """Post the updates and frames (batches of 100 with a frame each) and follow the server's RSS."""
    updates, frames, size = plan["memory_updates"], plan["memory_frames"], plan["memory_batch"]
    batches = updates // size
    server = start_server_process(env=QUIET)
    pid = server.process.pid
    workers = []
    try:
        get_json(server.url + "/health")
        rss_start = rss_mb(pid)
        if readers:
            workers += start_readers(server.url, readers, "drain", deadline=1800)
        poster = Worker(
            "poster",
            server.url,
            "--batches",
            str(batches),
            "--size",
            str(size),
            "--frame-bytes",
            str(plan["frame_bytes"] if frames else 0),
            "--frame-every",
            str(max(1, batches // max(1, frames))),
        )
        workers.append(poster)
        poster.ready()
        poster.send("go")
        samples = []
        while True:
            line = poster.line()
            if line.startswith("progress"):
                samples.append([int(line.split()[1]), round(rss_mb(pid), 1)])
                continue
            posted = json.loads(line)
            break
        rss_end = rss_mb(pid)
        state = get_json(server.url + "/api/state")
        history = []
        if not readers:
            for _ in range(plan["history_samples"]):
                t0 = time.perf_counter()
                body = requests.get(server.url + "/api/history", timeout=60).content
                history.append((time.perf_counter() - t0) * 1e6)
        for worker in workers[:-1]:
            worker.send("stop")
        read = [worker.result(60) for worker in workers[:-1]]
    finally:
        stop_all(workers)
        server.stop()
    warm = samples[1][1] if len(samples) > 2 else samples[0][1]  # RSS after the first 20 %
    figures = {
        "readers": readers,
        "updates": state["updates"],
        "frames": state.get("frames"),
        "post_rate_updates_per_s": round(posted["updates"] / posted["elapsed_s"]),
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_max_mb": max(rss for _, rss in samples),
        "rss_after_warmup_mb": warm,
        "growth_after_warmup_mb": round(rss_end - warm, 1),
        "rss_samples_mb": samples,
    }
    if read:
        events = [count for r in read for count in r["events"]]
        figures["reader_events_min"] = min(events)
        figures["readers_cpu_s"] = round(sum(r["cpu_s"] for r in read), 2)
    if history:
        figures["history"] = {**latency_summary(history), "bytes": len(body)}
    return figures


def case_memory(plan: dict) -> dict:
    """Server RSS after 1,000,000 updates and 10,000 frames, with no reader and with 16."""
    runs = [run_memory(plan, n) for n in plan["memory_readers"]]
    return {
        "settings": {
            "updates": plan["memory_updates"],
            "frames": plan["memory_frames"],
            "batch": f"{plan['memory_batch']} updates (10 metrics each) + 1 frame per POST /api/batch",
            "frame_bytes": plan["frame_bytes"],
            "readers": "draining, 1 process",
            "warm_up": "the first 20 % of the updates",
            "server": "defaults",
        },
        "runs": runs,
    }


# --------------------------------------------------------------------------- report


def check(value, limit, below: bool = True) -> str:
    """'yes' / 'NO' for value against limit ('-' when there is no value)."""
    if value is None:
        return "-"
    return "yes" if (value <= limit if below else value >= limit) else "NO"


def table(results: dict) -> list[list]:
    """Rows of [case, figure, value, target, met]."""
    rows = []
    cases = results["cases"]
    if "client_cost" in cases:
        for name in ("up", "refusing", "hung"):
            row = cases["client_cost"][name]
            rows.append(
                [
                    "client cost",
                    f"server {name}: median / p99 µs",
                    f"{row['median_us']} / {row['p99_us']}",
                    "≤ 2 / ≤ 50",
                    "yes" if row["median_us"] <= 2 and row["p99_us"] <= 50 else "NO",
                ]
            )
    if "ingest" in cases:
        for run in cases["ingest"]["runs"]:
            n = run["producers"]
            rows.append(
                [
                    "ingest",
                    f"{n} producers: updates/s",
                    f"{run['updates_per_s']:,}",
                    "≥ 50,000" if n == 8 else "",
                    check(run["updates_per_s"], 50_000, below=False) if n == 8 else "",
                ]
            )
            rows.append(
                [
                    "ingest",
                    f"{n} producers: server CPU µs/update",
                    run["server_cpu_us_per_update"],
                    "≤ 10",
                    check(run["server_cpu_us_per_update"], 10),
                ]
            )
    if "fanout" in cases:
        limits = {32: 25, 256: 100}
        for run in cases["fanout"]["runs"]:
            n, lat = run["readers"], run["latency"]
            rows.append(
                [
                    "fan-out",
                    f"N={n}: delivered min / mean %",
                    f"{run['delivered_min_pct']} / {run['delivered_mean_pct']}",
                    "100",
                    "yes" if run["delivered_min_pct"] == 100 else "NO",
                ]
            )
            rows.append(
                [
                    "fan-out",
                    f"N={n}: latency median / p99 ms",
                    f"{lat['median_ms']} / {lat['p99_ms']}",
                    f"p99 < {limits[n]}" if n in limits else "",
                    ("yes" if lat["p99_ms"] is not None and lat["p99_ms"] < limits[n] else "NO") if n in limits else "",
                ]
            )
            rows.append(
                [
                    "fan-out",
                    f"N={n}: readers CPU s (µs/event); server CPU % of a core",
                    f"{run['readers_cpu_s']} ({run['readers_cpu_us_per_event']}); {run['server_cpu_pct_of_one_core']}",
                    "",
                    "",
                ]
            )
    if "frames" in cases:
        run = cases["frames"]
        lat = run["latency"]
        rows.append(
            [
                "frames",
                f"{run['settings']['readers']} readers: delivered min %",
                run["delivered_min_pct"],
                "100",
                "yes" if run["delivered_min_pct"] == 100 else "NO",
            ]
        )
        rows.append(
            [
                "frames",
                "latency median / p99 ms",
                f"{lat['median_ms']} / {lat['p99_ms']}",
                "p99 < 100",
                "yes" if lat["p99_ms"] is not None and lat["p99_ms"] < 100 else "NO",
            ]
        )
    if "health" in cases:
        run = cases["health"]
        lat = run["latency"]
        rows.append(
            [
                "health",
                f"{run['open_streams']} streams (cap) + producers: median / p99 ms",
                f"{lat['median_ms']} / {lat['p99_ms']}",
                "p99 < 50",
                "yes" if lat["p99_ms"] is not None and lat["p99_ms"] < 50 else "NO",
            ]
        )
        rows.append(
            [
                "health",
                "stream past the cap",
                run["extra_stream_status"],
                "503",
                "yes" if run["extra_stream_status"] == 503 else "NO",
            ]
        )
    if "memory" in cases:
        for run in cases["memory"]["runs"]:
            rows.append(
                [
                    "memory",
                    f"{run['readers']} readers: RSS end (max) MB",
                    f"{run['rss_end_mb']} ({run['rss_max_mb']})",
                    "< 150",
                    check(run["rss_max_mb"], 150),
                ]
            )
            rows.append(
                [
                    "memory",
                    f"{run['readers']} readers: growth after warm-up MB",
                    run["growth_after_warmup_mb"],
                    "flat",
                    "",
                ]
            )
            if "history" in run:
                rows.append(
                    [
                        "memory",
                        "GET /api/history after the run: median / p99 ms",
                        f"{run['history']['median_ms']} / {run['history']['p99_ms']}",
                        "",
                        "",
                    ]
                )
    return rows


def print_table(rows: list[list]) -> None:
    """The rows as a fixed-width table on stdout."""
    headers = ["case", "figure", "value", "target", "met"]
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(5)]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> int:
    """Run the chosen cases, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run that checks every case works (~30 s)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench" / "results" / "bench.json",
        help="where to write the figures (default: bench/results/bench.json)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also run py-spy on the server in an extra ingest and fan-out run"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = set(chosen) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    profile_dir = args.json.parent / "profiles" if args.profile else None
    started = time.monotonic()
    results = {
        "command": " ".join(["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "plan": {k: (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()}) for k, v in plan.items()},
        "cases": {},
    }
    runners = {
        "client_cost": lambda: case_client_cost(plan),
        "ingest": lambda: case_ingest(plan, profile_dir),
        "fanout": lambda: case_fanout(plan, profile_dir),
        "frames": lambda: case_frames(plan),
        "health": lambda: case_health(plan),
        "memory": lambda: case_memory(plan),
    }
    for name in CASES:
        if name not in chosen:
            continue
        case_start = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        before = calibrate(0.1 if args.quick else 0.5)
        results["cases"][name] = runners[name]()
        results["cases"][name]["machine_before"] = before
        results["cases"][name]["wall_s"] = round(time.monotonic() - case_start, 1)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_s"] = round(time.monotonic() - started, 1)
    rows = table(results)
    results["table"] = [dict(zip(["case", "figure", "value", "target", "met"], row, strict=True)) for row in rows]
    print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(
        f"\nfigures: {args.json}  ({results['wall_s']} s, {results['machine']['cores']} cores, "
        f"Python {results['machine']['python']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
