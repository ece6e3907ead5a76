"""EventLog: the bounded ring every stream reads at its own offset."""

from __future__ import annotations

import random
import threading
import time

from helpers import wait_until
from hud_server import EventLog


def names(chunks):
    """The event names in a list of SSE chunks."""
    return [chunk.decode().split("\n")[1].removeprefix("event: ") for chunk in chunks]


def test_readers_get_events_after_their_offset():
    """read_after returns the events after an offset and the new offset."""
    log = EventLog("boot", max_events=10, max_bytes=10_000)
    for index in range(5):
        log.append("training_update", str(index))
    chunks, offset = log.read_after(2)
    assert [chunk.decode().split("data: ")[1].strip() for chunk in chunks] == ["2", "3", "4"]
    assert offset == 5
    assert log.read_after(5) == ([], 5)


def test_ring_is_bounded_by_count_and_bytes():
    """The log never holds more than its event count or byte budget; a reader behind it gets None."""
    log = EventLog("boot", max_events=4, max_bytes=10_000)
    for index in range(10):
        log.append("training_update", str(index))
    assert log.read_after(6)[1] == 10
    assert log.read_after(2) is None
    small = EventLog("boot", max_events=100, max_bytes=200)
    for _ in range(50):
        small.append("training_update", "x" * 40)
    assert small._bytes <= 200
    assert small.dropped > 0


def test_newer_frame_supersedes_older_one():
    """A reader that is behind gets only the newest frame, and old frames free their bytes."""
    log = EventLog("boot", max_events=100, max_bytes=100_000)
    log.append("vision_update", "A" * 1000, supersedes=True)
    log.append("training_update", "{}")
    log.append("vision_update", "B" * 1000, supersedes=True)
    chunks, _ = log.read_after(0)
    assert names(chunks) == ["training_update", "vision_update"]
    assert b"B" * 1000 in chunks[1]
    assert log._bytes < 1200


def test_event_ids_carry_boot_and_sequence():
    """Each event's id names the boot and its sequence number."""
    log = EventLog("abc", max_events=10, max_bytes=10_000)
    log.append("training_update", "{}")
    chunk = log.read_after(0)[0][0].decode()
    assert chunk.startswith("id: abc-1\nevent: training_update\ndata: {}\n\n")


def test_append_sets_news_for_the_stream_writer():
    """Every append sets the log's news flag, which the stream writer waits on."""
    log = EventLog("boot", max_events=10, max_bytes=10_000)
    assert not log.news.is_set()
    log.append("training_update", "1")
    assert log.news.is_set()
    log.news.clear()
    log.append("vision_update", "2", supersedes=True)
    assert log.news.is_set()


def test_waiting_reader_is_woken_by_notify_readers():
    """A reader waiting for events wakes when the writer notifies, and gets what came."""
    log = EventLog("boot", max_events=10, max_bytes=10_000)
    got = []

    def reader():
        got.append(log.wait_after(0, timeout=60))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    wait_until(lambda: log._changed._waiters, 10, message="the reader waiting")
    log.append("training_update", "1")
    log.notify_readers()
    thread.join(10)
    assert got and got[0][1] == 1 and names(got[0][0]) == ["training_update"]


def test_wait_after_returns_at_once_when_something_is_new():
    """A reader behind the log does not wait: it gets the events at once, even with a long timeout."""
    log = EventLog("boot", max_events=10, max_bytes=10_000)
    log.append("training_update", "1")
    log.append("training_update", "2")
    started = time.monotonic()
    chunks, cursor = log.wait_after(0, timeout=60)
    assert cursor == 2 and len(chunks) == 2
    assert time.monotonic() - started < 30  # far below the timeout: it did not wait


def read_all(log: EventLog, events: int, seen: dict, number: int, errors: list) -> None:
    """A reader thread: wait for events until it has ``events`` of them."""
    cursor, got = 0, 0
    try:
        while cursor < events:
            chunks, cursor = log.wait_after(cursor, timeout=60)
            got += len(chunks)
    except BaseException as exc:  # reported by the caller's assertion
        errors.append(exc)
    seen[number] = got


def test_every_waiting_reader_gets_every_event():
    """Forty readers notified after each event, some while still busy, each end with all of them."""
    log = EventLog("boot", max_events=10_000, max_bytes=10_000_000)
    readers, events, seen, errors = 40, 200, {}, []
    threads = [
        threading.Thread(target=read_all, args=(log, events, seen, n, errors), daemon=True) for n in range(readers)
    ]
    for thread in threads:
        thread.start()
    pace = random.Random(7)
    for number in range(events):
        log.append("training_update", str(number))
        if pace.random() < 0.2:  # now and then let the readers catch up and wait again
            log.notify_readers()
            wait_until(lambda: log._changed._waiters, 10, message="a reader waiting")
    deadline = time.monotonic() + 30
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        log.notify_readers()  # as the stream writer does on every pass
        threading.Event().wait(0.01)  # the writer's pace, not a wait for the result
    assert not errors
    assert [thread.is_alive() for thread in threads] == [False] * readers
    assert seen == dict.fromkeys(range(readers), events)


def test_the_latest_frame_does_not_count_against_the_byte_budget():
    """A frame bigger than the whole budget does not push training events out; older frames are emptied."""
    log = EventLog("boot", max_events=100, max_bytes=2_000)
    log.append("vision_update", "F" * 5_000, supersedes=True)
    for index in range(3):
        log.append("training_update", str(index) * 100)
    assert names(log.read_after(0)[0]) == ["vision_update"] + ["training_update"] * 3
    log.append("vision_update", "G" * 5_000, supersedes=True)  # the older frame is emptied in place
    chunks = log.read_after(0)[0]
    assert names(chunks) == ["training_update"] * 3 + ["vision_update"]
    for _ in range(30):  # training events past the budget evict the oldest events (the frame too, in turn)
        log.append("training_update", "t" * 100)
    training = [chunk for chunk in log.read_after(log.last_seq - len(log._events))[0] if b"training" in chunk]
    assert sum(map(len, training)) <= 2_000 < sum(map(len, training)) + len(training[0])
