"""EventLog: the bounded ring every stream reads at its own offset."""

from __future__ import annotations

import threading

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


def test_waiting_reader_is_woken_by_announce():
    """A reader waiting for events wakes when new ones are announced."""
    log = EventLog("boot", max_events=10, max_bytes=10_000)
    got = []
    started = threading.Event()

    def reader():
        started.set()
        got.append(log.wait_after(0, timeout=10))

    thread = threading.Thread(target=reader)
    thread.start()
    started.wait(5)
    log.append("training_update", "1")
    log.announce()
    thread.join(10)
    assert got and got[0][1] == 1
