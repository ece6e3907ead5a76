"""/stream against a real waitress server: fan-out, snapshot, resume, caps, /health under load."""

from __future__ import annotations

import base64
import json
import socket
import statistics
import threading
import time

import pytest
import requests

import hud_server
from helpers import SSEReader, live_updates, start_server_process, wait_until

PNG_1PX = base64.b64encode(
    base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
).decode()


def strict_json(text: str):
    """Parse as the browser would: NaN/Infinity are errors."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict JSON constant {name}"))


def post_batch(url, updates, **extra):
    """Post a batch and check it was applied."""
    response = requests.post(url + "/api/batch", json={"updates": updates, **extra}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_stream_sends_retry_and_snapshot_first(live_server):
    """A new stream gets retry:, then the whole merged state and the latest frame."""
    post_batch(
        live_server.url,
        [{"global_step": 1, "a": 1}, {"global_step": 2}],
        frame={"image_base64": PNG_1PX, "response_time": 0.5},
    )
    reader = SSEReader(live_server.url + "/stream")
    try:
        first = reader.next_named()
        assert reader.retry == 2000
        assert first["event"] == "training_update"
        payload = strict_json(first["data"])
        assert payload["snapshot"] is True
        assert payload["data"] == {"global_step": 2, "a": 1}
        vision = reader.next_named()
        assert vision["event"] == "vision_update"
        frame = strict_json(vision["data"])
        assert frame["image_base64"] == PNG_1PX and frame["response_time"] == 0.5
        assert first["id"] and vision["id"]
    finally:
        reader.close()


def test_every_reader_receives_every_event_in_order(live_server):
    """Three open streams each receive all 100 updates, in order (the original gave each only a share)."""
    readers = [SSEReader(live_server.url + "/stream") for _ in range(3)]
    try:
        for reader in readers:
            assert strict_json(reader.next_named()["data"])["snapshot"] is True
        for start in range(0, 100, 10):
            post_batch(live_server.url, [{"global_step": step} for step in range(start, start + 10)])
        for reader in readers:
            events = [live_updates(strict_json(reader.next_named()["data"])) for _ in range(10)]  # one per POST
            assert [len(records) for records in events] == [10] * 10
            records = [record for records in events for record in records]
            assert [record["data"]["global_step"] for record in records] == list(range(100))
            assert [record["step"] for record in records] == list(range(100))
            assert [record["updates"] for record in records] == list(range(1, 101))
    finally:
        for reader in readers:
            reader.close()


def test_nan_never_reaches_the_stream(live_server):
    """A NaN reward is sent to browsers as null, so JSON.parse cannot fail."""
    reader = SSEReader(live_server.url + "/stream")
    try:
        reader.next_named()
        raw = '{"session_id": null, "data": {"episode_reward": NaN, "x": [Infinity]}}'
        requests.post(live_server.url + "/api/update_training", data=raw, timeout=10).raise_for_status()
        [record] = live_updates(strict_json(reader.next_named()["data"]))
        assert record["data"] == {"episode_reward": None, "x": [None]}
    finally:
        reader.close()


def test_last_event_id_resumes_without_gaps(live_server):
    """A reconnect with Last-Event-ID gets exactly the events it missed, no snapshot."""
    reader = SSEReader(live_server.url + "/stream")
    reader.next_named()
    post_batch(live_server.url, [{"global_step": 1}])
    last = reader.next_named()
    reader.close()
    post_batch(live_server.url, [{"global_step": 2}])
    post_batch(live_server.url, [{"global_step": step} for step in (3, 4)])
    post_batch(live_server.url, [{"global_step": 5}])
    resumed = SSEReader(live_server.url + "/stream", headers={"Last-Event-ID": last["id"]})
    try:
        events = [strict_json(resumed.next_named()["data"]) for _ in range(3)]
        assert not any(event["snapshot"] for event in events)
        records = [record for event in events for record in live_updates(event)]
        assert [record["data"]["global_step"] for record in records] == [2, 3, 4, 5]
        assert [record["updates"] for record in records] == [2, 3, 4, 5]
    finally:
        resumed.close()


@pytest.mark.hud_settings(event_log_size=16)
def test_resume_past_the_log_gets_a_fresh_snapshot(live_server):
    """A reconnect whose missed events were evicted from the log gets a snapshot instead."""
    reader = SSEReader(live_server.url + "/stream")
    first = reader.next_named()
    reader.close()
    for step in range(40):  # one event each: more than the log keeps
        post_batch(live_server.url, [{"global_step": step}])
    resumed = SSEReader(live_server.url + "/stream", headers={"Last-Event-ID": first["id"]})
    try:
        payload = strict_json(resumed.next_named()["data"])
        assert payload["snapshot"] is True and payload["data"] == {"global_step": 39}
    finally:
        resumed.close()


def test_last_event_id_from_another_boot_gets_a_snapshot(live_server):
    """An id from before a server restart is not trusted: the reader gets a snapshot."""
    post_batch(live_server.url, [{"global_step": 5}])
    reader = SSEReader(live_server.url + "/stream", headers={"Last-Event-ID": "0123456789ab-3"})
    try:
        payload = strict_json(reader.next_named()["data"])
        assert payload["snapshot"] is True and payload["data"] == {"global_step": 5}
    finally:
        reader.close()


def test_takeover_tells_open_streams_to_start_afresh(live_server):
    """When a new run takes over, open dashboards are told to clear state and frame."""
    post_batch(live_server.url, [{"episode_reward": 3.0}], run_id="exp-1", frame={"image_base64": PNG_1PX})
    reader = SSEReader(live_server.url + "/stream")
    try:
        reader.next_named(), reader.next_named()  # snapshot: state and frame
        requests.post(live_server.url + "/api/reset_session", timeout=10).raise_for_status()
        post_batch(live_server.url, [{"global_step": 1}], run_id="exp-2")
        reset = strict_json(reader.next_named()["data"])
        assert reset["reset"] is True and reset["data"] == {} and reset["run_id"] == "exp-2"
        cleared = strict_json(reader.next_named()["data"])
        assert cleared["image_base64"] is None
        [record] = live_updates(strict_json(reader.next_named()["data"]))
        assert record["data"] == {"global_step": 1} and record["run_id"] == "exp-2"
    finally:
        reader.close()


@pytest.mark.hud_settings(heartbeat_interval=0.2)
def test_heartbeat_comments_keep_idle_streams_alive(live_server):
    """An idle stream receives a comment heartbeat at the configured interval."""
    reader = SSEReader(live_server.url + "/stream", timeout=5)
    try:
        reader.next_named()  # the snapshot
        started = time.monotonic()
        line = next(line for line in reader._lines if line)  # nothing was posted: only a heartbeat can come
        assert line.startswith(":")
        assert 0.1 < time.monotonic() - started < 5
    finally:
        reader.close()


@pytest.mark.hud_settings(max_streams=3, threads=7)
def test_streams_past_the_cap_get_503_and_health_stays_fast(live_server):
    """With every stream slot taken, a new stream gets 503 + Retry-After and /health answers fast."""
    readers = [SSEReader(live_server.url + "/stream") for _ in range(3)]
    try:
        for reader in readers:
            reader.next_named()
        refused = requests.get(live_server.url + "/stream", timeout=5)
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"] == "too_many_streams"
        timings = []
        for _ in range(20):
            start = time.perf_counter()
            assert requests.get(live_server.url + "/health", timeout=5).json()["open_streams"] == 3
            timings.append(time.perf_counter() - start)
        # Loose bound: the original HUD did not answer at all here; the 50 ms target is a benchmark's.
        assert statistics.median(timings) < 1.0
        post_batch(live_server.url, [{"global_step": 1}])
    finally:
        for reader in readers:
            reader.close()


@pytest.mark.hud_settings(max_streams=2, threads=6)
def test_closed_dashboard_frees_its_slot_within_3_s(live_server):
    """Closing a stream frees its slot within 3 s, so a new dashboard can connect."""
    readers = [SSEReader(live_server.url + "/stream") for _ in range(2)]
    for reader in readers:
        reader.next_named()
    assert requests.get(live_server.url + "/stream", timeout=5).status_code == 503
    readers[0].close()
    closed_at = time.monotonic()
    wait_until(lambda: live_server.hud.open_streams == 1, timeout=3.0, message="the slot to be freed")
    assert time.monotonic() - closed_at < 3.0
    replacement = SSEReader(live_server.url + "/stream")
    try:
        assert strict_json(replacement.next_named()["data"])["snapshot"] is True
    finally:
        replacement.close()
        readers[1].close()


def read_until_snapshot_of(sock: socket.socket, step: int, timeout: float) -> dict:
    """Read a raw /stream response until a snapshot whose state has ``global_step == step`` arrives."""
    sock.settimeout(1.0)
    deadline = time.monotonic() + timeout
    partial, received = b"", 0
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not chunk:
            break
        received += len(chunk)
        *lines, partial = (partial + chunk).split(b"\n")
        for line in lines:  # chunked framing sits between whole events, never inside a data line
            if line.startswith(b"data: "):
                payload = json.loads(line[6:])
                if payload.get("snapshot") and payload["data"].get("global_step") == step:
                    return payload
    raise AssertionError(f"no snapshot at step {step} in {received} bytes")


@pytest.mark.hud_settings(stream_buffer_bytes=16 * 1024, event_log_size=16)
def test_a_stalled_dashboard_holds_back_no_one_and_then_gets_the_present(live_server):
    """A browser that stops reading delays neither the other dashboards nor the posts; reading again, it gets the present."""
    host, port = live_server.url.removeprefix("http://").split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, int(port)))
    stalled.sendall(b"GET /stream HTTP/1.1\r\nHost: hud\r\n\r\n")
    wait_until(lambda: live_server.hud.open_streams == 1, 10, message="the stalled stream to open")
    reader = SSEReader(live_server.url + "/stream")
    try:
        assert strict_json(reader.next_named()["data"])["snapshot"] is True
        note = "x" * 10_000
        notes = {f"note{n}": note for n in range(10)}
        for step in range(100):  # 10 MB: more than the kernel (4 MiB at most) and waitress (16 KiB) buffer
            post_batch(live_server.url, [{"global_step": step, **notes}])
            [record] = reader.next_live_updates()  # the reading dashboard gets each at once
            assert record["data"]["global_step"] == step
        # The stalled one fell off the 16-event log: once it reads again it is sent the present.
        caught_up = read_until_snapshot_of(stalled, 99, timeout=30)
        assert caught_up["data"]["note9"] == note
    finally:
        reader.close()
        stalled.close()


def test_a_failing_write_pass_is_logged_and_the_streams_go_on(live_server, monkeypatch, caplog):
    """Should one pass of the stream writer fail, it is logged and the next pass still delivers every event."""
    real_chunk, failed = hud_server._chunk_or_present, threading.Event()

    def chunk_failing_once(hud, got):
        if not failed.is_set():
            failed.set()
            raise RuntimeError("injected failure")
        return real_chunk(hud, got)

    monkeypatch.setattr(hud_server, "_chunk_or_present", chunk_failing_once)
    reader = SSEReader(live_server.url + "/stream")
    try:
        assert strict_json(reader.next_named()["data"])["snapshot"] is True
        post_batch(live_server.url, [{"global_step": 1}])
        [record] = reader.next_live_updates()  # the failed pass left the event pending; the next one sent it
        assert record["data"]["global_step"] == 1 and failed.is_set()
        post_batch(live_server.url, [{"global_step": 2}])
        [record] = reader.next_live_updates()
        assert record["data"]["global_step"] == 2
    finally:
        reader.close()
    assert any("writing the open streams failed" in message for message in caplog.messages)


def test_streams_also_work_under_another_wsgi_server():
    """Under a WSGI server other than waitress (werkzeug's), each stream writes itself and gets every event."""
    from werkzeug.serving import make_server

    app = hud_server.create_app({"session_timeout": 60.0})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    reader = SSEReader(url + "/stream")
    try:
        assert strict_json(reader.next_named()["data"])["snapshot"] is True
        for step in range(5):
            post_batch(url, [{"global_step": step}])
            [record] = reader.next_live_updates()
            assert record["data"]["global_step"] == step
    finally:
        reader.close()
        app.extensions["hud"].end_streams()
        server.shutdown()
        thread.join(10)


def test_python_hud_server_serves_stream_and_posts():
    """`python hud_server.py` in its own process serves /, /health, /stream and posts."""
    server = start_server_process()
    try:
        assert requests.get(server.url + "/", timeout=5).status_code == 200
        post_batch(server.url, [{"global_step": 42}])
        reader = SSEReader(server.url + "/stream")
        try:
            assert strict_json(reader.next_named()["data"])["data"] == {"global_step": 42}
        finally:
            reader.close()
    finally:
        server.stop()


def test_sigterm_stops_the_server_promptly():
    """SIGTERM (what Kubernetes sends) stops `python hud_server.py` with exit code 0 within seconds."""
    import signal as signals

    server = start_server_process()
    reader = SSEReader(server.url + "/stream")
    try:
        reader.next_named()
        started = time.monotonic()
        server.process.send_signal(signals.SIGTERM)
        assert server.process.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        reader.close()
        server.kill()
