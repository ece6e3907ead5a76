"""The benchmark's worker processes: producers that feed the server and readers that parse /stream.

Each role runs in a process of its own (never in the server's, never in the
runner's), started by ``bench/run.py`` as ``python bench/workers.py ROLE ...``.
Workers talk to the runner over their standard streams: a worker prints
``ready`` once it is set up, waits for a line on stdin (``go``) where the case
needs a common start, and prints one JSON line with its figures at the end.
Every loop is bounded by a count or a deadline.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import selectors
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUN_ID = "bench"
READ_SIZE = 65536  # bytes per recv: readers take whole chunks, never a byte at a time


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def say(line: str) -> None:
    """One line to the runner."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_for_go() -> None:
    """Block until the runner writes a line (the common start of a case)."""
    if not sys.stdin.readline():
        raise SystemExit("runner went away")


def bench_frame(seq: int, size: int) -> bytes:
    """A ``size``-byte JPEG (160x144 header, no pixel data) carrying its sequence number and send time.

    The server reads a JPEG's segments up to its start-of-frame, not the pixels, so a
    comment segment right after the start-of-image can carry what the reader needs to
    count the frame and time its delivery; a second comment pads it to ``size`` bytes.
    """
    stamp = b"\xff\xfe" + (2 + 16).to_bytes(2, "big") + seq.to_bytes(8, "big") + time.time_ns().to_bytes(8, "big")
    start_of_frame = (
        b"\xff\xc0"
        + (17).to_bytes(2, "big")
        + b"\x08"
        + (144).to_bytes(2, "big")
        + (160).to_bytes(2, "big")
        + b"\x03\x01\x11\x00\x02\x11\x01\x03\x11\x01"
    )
    head = b"\xff\xd8" + stamp + start_of_frame
    padding = []
    left = size - len(head) - 2  # the end-of-image marker
    while left > 4:
        take = min(left - 4, 65533)
        padding.append(b"\xff\xfe" + (take + 2).to_bytes(2, "big") + bytes(take))
        left -= take + 4
    return head + b"".join(padding) + b"\xff\xd9"


def read_frame_header(image_base64: str) -> tuple[int, int]:
    """(sequence, send time in ns) from the first bytes of a bench frame's base64."""
    head = base64.b64decode(image_base64[:32])  # 32 base64 chars = 24 bytes, the stamp ends at 22
    return int.from_bytes(head[6:14], "big"), int.from_bytes(head[14:22], "big")


def make_client(url: str, max_pending: int):
    """A HUDClient for the bench run, warmed up: registered and its connection open."""
    from hud_client import HUDClient

    client = HUDClient(url, run_id=RUN_ID, max_pending=max_pending, connect_timeout=5.0, read_timeout=30.0)
    client.update_training_data({"bench_warmup": 1})
    if not client.flush(30):
        raise SystemExit(f"warm-up update was not sent: {client.stats}")
    return client


# --------------------------------------------------------------------------- producers


def ingest_producer(args: argparse.Namespace) -> None:
    """Push ``count`` updates through HUDClient as fast as possible, then flush."""
    client = make_client(args.url, max_pending=args.count + 10)
    say("ready")
    wait_for_go()
    cpu0 = cpu_seconds()
    started = time.time_ns()
    update = client.update_training_data
    for step in range(args.count):
        update(
            {
                "global_step": step,
                "episode_reward": step * 0.5,
                "episode_length": 400,
                "location": "Horon Village",
                "position": {"x": step % 160, "y": 72},
                "health": {"current": 9, "max": 12},
                "loss": {"policy": 0.25, "value": 1.5},
            }
        )
    pushed = time.time_ns()
    flushed = client.flush(args.timeout)
    done = time.time_ns()
    stats = client.stats
    client.close(1)
    say(
        json.dumps(
            {
                "started_ns": started,
                "pushed_ns": pushed,
                "done_ns": done,
                "flushed": flushed,
                "sent": stats.sent,
                "dropped": stats.dropped,
                "failed": stats.failed,
                "cpu_s": cpu_seconds() - cpu0,
            }
        )
    )


def paced_producer(args: argparse.Namespace) -> None:
    """Call update_training_data (or update_vision_data) ``rate`` times a second, ``count`` times.

    Each training update carries the caller's ``time.time_ns()`` just before the call;
    each frame carries it in its first bytes.
    """
    client = make_client(args.url, max_pending=max(10_000, args.count + 10))
    say("ready")
    wait_for_go()
    cpu0 = cpu_seconds()
    start = time.monotonic()
    interval = 1.0 / args.rate
    late = 0
    for seq in range(args.count):
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the feed, not waiting for a result
        elif delay < -interval:
            late += 1
        if args.frames:
            client.update_vision_data(bench_frame(seq, args.frame_bytes), response_time=0.1)
        else:
            client.update_training_data({"bench_sent_ns": time.time_ns(), "global_step": seq})
    flushed = client.flush(args.timeout)
    stats = client.stats
    client.close(1)
    say(
        json.dumps(
            {
                "sent": stats.sent,
                "frames_sent": stats.frames_sent,
                "dropped": stats.dropped,
                "frames_dropped": stats.frames_dropped,
                "failed": stats.failed,
                "flushed": flushed,
                "late": late,
                "elapsed_s": time.monotonic() - start,
                "cpu_s": cpu_seconds() - cpu0,
            }
        )
    )


def steady_producer(args: argparse.Namespace) -> None:
    """Send training updates at ``rate`` a second until the runner says stop (or ``duration`` passes)."""
    client = make_client(args.url, max_pending=100_000)
    say("ready")
    wait_for_go()
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ)
    start = time.monotonic()
    burst = max(1, args.rate // 100)  # a training loop's updates arrive in small bursts
    step = 0
    while time.monotonic() - start < args.duration:
        for _ in range(burst):
            client.update_training_data(
                {"global_step": step, "episode_reward": step * 0.5, "position": {"x": step % 160, "y": 72}}
            )
            step += 1
        delay = start + step / args.rate - time.monotonic()
        if selector.select(max(0.0, delay)):  # a line from the runner: stop
            break
    client.close(5)
    say(json.dumps({"pushed": step, "sent": client.stats.sent}))


def batch_poster(args: argparse.Namespace) -> None:
    """POST ``batches`` /api/batch bodies of ``size`` updates (10 metrics each), a frame every ``frame_every``.

    Pre-serialised bodies over one keep-alive connection, so the poster costs little CPU
    and the server gets the whole machine; prints ``progress N`` ten times along the way.
    """
    import http.client

    host, port = args.url.rsplit("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    frames = [
        base64.b64encode(bench_frame(seed, args.frame_bytes)).decode() for seed in range(16 if args.frame_bytes else 0)
    ]
    say("ready")
    wait_for_go()
    started = time.monotonic()
    checkpoint = max(1, args.batches // 10)
    for index in range(args.batches):
        base = index * args.size
        updates = [
            {
                "global_step": base + k,
                "episode_reward": (base + k) * 0.01,
                "episode_length": 400 + k,
                "loss": {"policy": 0.25 + k * 1e-4, "value": 1.5 - k * 1e-4},
                "entropy": 0.9,
                "kl": 0.01,
                "llm_success_rate": 0.7,
                "llm_alignment": 0.8,
                "fps": 1200.0 + k,
            }
            for k in range(args.size)
        ]
        body = {"run_id": RUN_ID, "session_id": None, "updates": updates}
        if frames and index % args.frame_every == 0:
            body["frame"] = {"image_base64": frames[index % len(frames)], "response_time": 0.1}
        conn.request("POST", "/api/batch", body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"batch {index}: HTTP {response.status}")
        if (index + 1) % checkpoint == 0:
            say(f"progress {(index + 1) * args.size}")
    conn.close()
    say(
        json.dumps(
            {
                "updates": args.batches * args.size,
                "frames": len(range(0, args.batches, args.frame_every)) if frames else 0,
                "elapsed_s": time.monotonic() - started,
            }
        )
    )


# --------------------------------------------------------------------------- readers


class StreamReader:
    """One /stream connection: HTTP head, chunked body, SSE events; parsed in big chunks."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.sendall(
            b"GET /stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        )
        self.sock.setblocking(False)
        self.raw = b""  # bytes received but not yet de-chunked
        self.body = b""  # de-chunked bytes not yet split into events
        self.head_done = False
        self.chunked = False
        self.status = 0
        self.closed = False
        self.bytes = 0
        self.events = 0  # named events seen (snapshots included)
        self.steps: set[int] = set()
        self.duplicates = 0
        self.frames: set[int] = set()
        self.done = False  # saw the last step (or frame) of the case

    def receive(self, parse: bool = True) -> list[bytes]:
        """Read what the socket has (one recv) and return the complete SSE blocks in it.

        Without ``parse`` the bytes are only counted (events by their ``event:`` lines).
        """
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return []
        if not data:
            self.closed = True
            return []
        self.bytes += len(data)
        if not parse:
            self.events += data.count(b"\nevent: ")
            self.head_done = True
            return []
        self.raw += data
        if not self.head_done:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return []
            head, self.raw = self.raw[:end].decode("latin-1"), self.raw[end + 4 :]
            self.status = int(head.split(" ", 2)[1])
            self.chunked = "transfer-encoding: chunked" in head.lower()
            self.head_done = True
        if self.chunked:
            self._dechunk()
        else:
            self.body += self.raw
            self.raw = b""
        if b"\n\n" not in self.body:
            return []
        *blocks, self.body = self.body.split(b"\n\n")
        return blocks

    def _dechunk(self) -> None:
        raw = self.raw
        pos = 0
        pieces = [self.body]
        while True:
            line_end = raw.find(b"\r\n", pos)
            if line_end < 0:
                break
            size = int(raw[pos:line_end].split(b";", 1)[0], 16)
            if size == 0:
                self.closed = True
                pos = len(raw)
                break
            start = line_end + 2
            if len(raw) < start + size + 2:
                break
            pieces.append(raw[start : start + size])
            pos = start + size + 2
        self.body = b"".join(pieces)
        self.raw = raw[pos:]


def stream_readers(args: argparse.Namespace) -> None:
    """Hold ``n`` /stream connections in one process and parse (or just count) every event.

    In ``parse`` mode each live training_update is decoded and its latency recorded as
    ``time.time_ns() - bench_sent_ns``; each live vision_update's latency comes from the
    frame's first bytes. In ``drain`` mode the bytes are only counted. Stops on a line on
    stdin, when every connection has seen step ``last`` (parse mode), or at ``deadline``.
    """
    host, port = args.url.rsplit("//", 1)[1].split(":")
    readers = [StreamReader(host, int(port)) for _ in range(args.n)]
    selector = selectors.DefaultSelector()
    for reader in readers:
        selector.register(reader.sock, selectors.EVENT_READ, reader)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    parse = args.mode == "parse"
    latencies: list[int] = []
    frame_latencies: list[int] = []
    ready = False
    cpu0 = cpu_seconds()
    deadline = time.monotonic() + args.deadline
    finished = 0
    loads = json.loads
    now_ns = time.time_ns
    while time.monotonic() < deadline:
        stop = False
        for key, _ in selector.select(1.0):
            reader = key.data
            if reader is None:
                stop = True
                continue
            blocks = reader.receive(parse)
            if reader.closed:
                selector.unregister(reader.sock)
            for block in blocks:
                if not block.startswith(b"id: "):
                    continue  # retry:, : ping
                reader.events += 1
                at = block.find(b"\ndata: ")
                payload = loads(block[at + 7 :])
                if block.find(b"event: training_update", 0, at) >= 0:
                    if payload.get("snapshot"):
                        continue
                    for data in payload["batch"]:  # a live event carries the updates of one POST
                        sent = data.get("bench_sent_ns")
                        if sent is None:
                            continue
                        latencies.append(now_ns() - sent)
                        step = data["global_step"]
                        if step in reader.steps:
                            reader.duplicates += 1
                        reader.steps.add(step)
                        if step == args.last and not reader.done:
                            reader.done = True
                            finished += 1
                elif not payload.get("snapshot") and payload.get("image_base64"):
                    seq, sent = read_frame_header(payload["image_base64"])
                    frame_latencies.append(now_ns() - sent)
                    reader.frames.add(seq)
                    if seq == args.last and not reader.done:
                        reader.done = True
                        finished += 1
        if not ready and all(r.events or r.closed or (r.bytes and not parse) for r in readers):
            ready = True
            cpu0 = cpu_seconds()
            say("ready " + json.dumps({"statuses": sorted({r.status for r in readers})}))
        if stop or (parse and args.last >= 0 and finished >= len(readers)):
            break
    cpu = cpu_seconds() - cpu0
    for reader in readers:
        reader.sock.close()
    say(
        json.dumps(
            {
                "cpu_s": cpu,
                "bytes": sum(r.bytes for r in readers),
                "events": [r.events for r in readers],
                "steps": [len(r.steps) for r in readers],
                "frames": [len(r.frames) for r in readers],
                "duplicates": sum(r.duplicates for r in readers),
                "closed": sum(r.closed for r in readers),
                "latencies_us": [v // 1000 for v in latencies],
                "frame_latencies_us": [v // 1000 for v in frame_latencies],
                "timed_out": time.monotonic() >= deadline,
            }
        )
    )


def main() -> int:
    """Run one worker role."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["ingest", "paced", "steady", "poster", "readers"])
    parser.add_argument("url")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--frames", action="store_true")
    parser.add_argument("--frame-bytes", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--frame-every", type=int, default=1)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--mode", choices=["parse", "drain"], default="parse")
    parser.add_argument("--last", type=int, default=-1)
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    os.environ.pop("HUD_URL", None)
    {
        "ingest": ingest_producer,
        "paced": paced_producer,
        "steady": steady_producer,
        "poster": batch_poster,
        "readers": stream_readers,
    }[args.role](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
