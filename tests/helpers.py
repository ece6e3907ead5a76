"""Helpers for tests that need a real HUD server: in a thread or in its own process."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 20.0  # seconds a server may take to answer /health
# Debian's Chromium, as the browser tests and bench/browser_charts.py launch it (no sandbox as root,
# and no background traffic: this machine reaches no host but its package registries).
CHROMIUM = os.environ.get("HUD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        threading.Event().wait(interval)  # a poll interval, not a wait for the thing itself


@dataclass
class LiveServer:
    """A waitress server running the HUD app in a background thread."""

    app: object
    server: object
    thread: threading.Thread
    url: str = ""

    @property
    def hud(self):
        """The app's HUD state object."""
        return self.app.extensions["hud"]

    def stop(self) -> None:
        """End waitress's loop, then close its sockets, and wait for the streams to end."""
        self.hud.end_streams()
        server = self.server
        if self.thread.is_alive():
            # The loop runs while its map has channels: empty the map from inside the loop, so that
            # no socket is closed under its select() (which then fails with EBADF), and close the
            # sockets once the loop has ended.
            channels: list = []

            def end_loop() -> None:
                channels.extend(server._map.values())
                server._map.clear()

            server.trigger.pull_trigger(end_loop)
            self.thread.join(timeout=10)
            for channel in channels:
                channel.close()


def start_live_server(config: dict | None = None) -> LiveServer:
    """Start the HUD app under waitress on a free loopback port (as ``hud_server.serve`` does)."""
    import hud_server

    settings = {"host": "127.0.0.1", "port": 0}
    settings.update(config or {})
    app = hud_server.create_app(settings)
    server = hud_server.build_server(app, app.config["HUD_SETTINGS"])
    thread = threading.Thread(target=server.run, name="hud-test-server", daemon=True)
    thread.start()
    live = LiveServer(app, server, thread, f"http://127.0.0.1:{server.effective_port}")
    wait_until(lambda: _healthy(live.url), STARTUP_TIMEOUT, message="the test server")
    return live


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@dataclass
class ServerProcess:
    """``python hud_server.py`` in its own process."""

    process: subprocess.Popen
    port: int
    url: str
    output: list = field(default_factory=list)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server and wait for it to exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def kill(self) -> None:
        """Kill the server at once (as a crashed pod would die)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def start_server_process(
    port: int | None = None, env: dict | None = None, args: list[str] | None = None
) -> ServerProcess:
    """Start ``python hud_server.py`` on ``port`` (a free one by default) and wait until it answers."""
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HUD_")}
    full_env.update({"HUD_HOST": "127.0.0.1", "HUD_PORT": str(port), "PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "hud_server.py"), *(args or [])],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    handle = ServerProcess(process, port, f"http://127.0.0.1:{port}")
    threading.Thread(target=_drain, args=(process, handle.output), daemon=True).start()

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError("hud_server.py exited:\n" + "".join(handle.output))
        return _healthy(handle.url)

    try:
        wait_until(ready, STARTUP_TIMEOUT, message="hud_server.py to answer /health")
    except BaseException:
        handle.kill()
        raise
    return handle


def _drain(process: subprocess.Popen, sink: list) -> None:
    for line in process.stdout:
        sink.append(line)


SSE_FIELD = re.compile(r"^(\w+): ?(.*)$")
#: Where an event stream's lines end (the SSE spec): CRLF, LF or CR, and nothing else.
SSE_LINE_END = re.compile(rb"\r\n|\r|\n")
#: Media type of the NDJSON form of /api/batch, as HUDClient sends it.
NDJSON = "application/x-ndjson"


def sse_lines(chunks):
    """The lines of an event stream (bytes arriving in ``chunks``) split as a browser splits them, decoded as UTF-8.

    ``str.splitlines`` (what requests' iter_lines uses) would also split at U+2028, NEL and
    the like, which may stand raw in JSON text; an EventSource splits at CR and LF only.
    """
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        start = 0
        for match in SSE_LINE_END.finditer(buffer):
            if match.group() == b"\r" and match.end() == len(buffer):
                break  # perhaps the CR of a CRLF whose LF is in the next chunk
            yield buffer[start : match.start()].decode("utf-8")
            start = match.end()
        buffer = buffer[start:]


class SSEReader:
    """Reads Server-Sent Events from a streaming ``requests`` response, event by event."""

    def __init__(self, url: str, headers: dict | None = None, timeout: float = 10.0):
        self.response = requests.get(url, stream=True, headers=headers or {}, timeout=timeout)
        self._lines = sse_lines(self.response.iter_content(chunk_size=None))
        self.retry = None
        self.comments = 0

    def next_event(self) -> dict:
        """The next event as {id, event, data}; raises on timeout or end of stream."""
        event: dict = {}
        data_lines: list[str] = []
        for line in self._lines:
            if line == "":
                if data_lines or event:
                    if data_lines:
                        event["data"] = "\n".join(data_lines)
                    return event
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            match = SSE_FIELD.match(line)
            if not match:
                continue
            name, value = match.groups()
            if name == "data":
                data_lines.append(value)
            elif name == "retry":
                self.retry = int(value)
            else:
                event[name] = value
        raise EOFError("stream ended")

    def next_named(self) -> dict:
        """The next event that has a name (skips the bare retry: block)."""
        while True:
            event = self.next_event()
            if "event" in event:
                return event

    def next_live_updates(self, parse=None) -> list[dict]:
        """The updates of the next live (not snapshot) training_update event, one record each (see live_updates)."""
        parse = parse or strict_json
        while True:
            event = self.next_named()
            if event["event"] != "training_update":
                continue
            payload = parse(event["data"])
            if not payload["snapshot"]:
                return live_updates(payload)

    def read_live_updates(self, count: int, parse=None) -> list[dict]:
        """The records of the next ``count`` updates streamed live (from as many events as they came in)."""
        records: list[dict] = []
        while len(records) < count:
            records.extend(self.next_live_updates(parse))
        assert len(records) == count, f"an event carried updates past the {count} expected"
        return records

    def close(self) -> None:
        """Close the connection."""
        self.response.close()


def strict_json(text: str):
    """Parse as a browser's JSON.parse would: NaN and Infinity are errors."""

    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def live_updates(payload: dict) -> list[dict]:
    """A live training_update event's updates, one record each, as the event of one update looked before batching.

    A live event carries every update of one POST: ``batch[i]`` at step ``steps[i]``, and
    ``updates`` is the count after the last. Each record is {snapshot, ts, session_id,
    run_id, updates (the count after that update), step, data}.
    """
    assert payload["snapshot"] is False, payload
    assert "data" not in payload and "step" not in payload, "a live event carries batch and steps, not data and step"
    steps, batch = payload["steps"], payload["batch"]
    assert isinstance(batch, list) and len(steps) == len(batch) >= 1, payload
    before = payload["updates"] - len(batch)
    shared = {key: payload[key] for key in ("ts", "session_id", "run_id")}
    return [
        {"snapshot": False, **shared, "updates": before + index + 1, "step": step, "data": data}
        for index, (step, data) in enumerate(zip(steps, batch, strict=True))
    ]


def ndjson_batch(updates: list[dict], **header) -> str:
    """The NDJSON form of an /api/batch body: a header line (ids, frame), then one update a line."""
    return "\n".join([json.dumps(header), *map(json.dumps, updates)]) + "\n"


def posted_body(data, headers: dict | None) -> dict:
    """What a transport was asked to POST, as a JSON object; an NDJSON batch as its header plus ``updates``."""
    content_type = {key.lower(): value for key, value in (headers or {}).items()}.get("content-type", "")
    if content_type.split(";")[0].strip() != NDJSON:
        return json.loads(data)
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    header, *lines = text.split("\n")
    body = json.loads(header)
    assert isinstance(body, dict) and "updates" not in body, header
    body["updates"] = [json.loads(line) for line in lines if line]
    return body
