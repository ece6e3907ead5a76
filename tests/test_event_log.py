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


def read_all(log: EventLog, events: int, timeouts: list[float], seed: int, seen: dict, errors: list) -> None:
    """A reader thread: wait for events until it has ``events`` of them, each wait with a timeout from ``timeouts``."""
    cursor, got, pick = 0, 0, random.Random(seed)
    try:
        while cursor < events:
            chunks, cursor = log.wait_after(cursor, timeout=pick.choice(timeouts))
            got += len(chunks)
    except BaseException as exc:  # reported by the caller's assertion
        errors.append(exc)
    seen[seed] = got


def test_every_waiting_reader_is_woken_by_each_announcement():
    """Announcements reach all waiting readers (relayed from one to the next), every time.

    Each event is appended only once all forty readers are waiting again, so every
    reader must be woken by every announcement; a reader the relay missed would
    sleep out its minute and the next wait would not see forty.
    """
    log = EventLog("boot", max_events=10_000, max_bytes=10_000_000)
    readers, events, seen, errors = 40, 20, {}, []
    threads = [
        threading.Thread(target=read_all, args=(log, events, [60.0], n, seen, errors), daemon=True)
        for n in range(readers)
    ]
    for thread in threads:
        thread.start()
    for number in range(events):
        wait_until(lambda: len(log._waiting) == readers, 10, message=f"all readers waiting before event {number}")
        log.append("training_update", str(number))
        log.announce()
    for thread in threads:
        thread.join(10)
    assert not errors
    assert seen == dict.fromkeys(range(readers), events)


def test_readers_timing_out_never_strand_the_others():
    """Readers whose waits time out while the relay runs neither break it nor miss events."""
    log = EventLog("boot", max_events=10_000, max_bytes=10_000_000)
    readers, events, seen, errors = 40, 200, {}, []
    threads = [
        threading.Thread(target=read_all, args=(log, events, [0.0005, 0.002, 60.0], n, seen, errors), daemon=True)
        for n in range(readers)
    ]
    for thread in threads:
        thread.start()
    pace = random.Random(7)
    for number in range(events):
        log.append("training_update", str(number))
        log.announce()
        if pace.random() < 0.2:  # now and then let the readers catch up and wait again
            wait_until(lambda: len(log._waiting) + len(log._relay) > 0, 10, message="a reader waiting")
    deadline = time.monotonic() + 30  # a stranded reader would wait its full minute
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not errors
    assert [thread.is_alive() for thread in threads] == [False] * readers
    assert seen == dict.fromkeys(range(readers), events)


def test_wake_all_releases_readers_waiting_without_news():
    """At shutdown every waiting reader returns at once, with nothing new."""
    log = EventLog("boot", max_events=10, max_bytes=10_000)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(log.wait_after(0, 60.0)), daemon=True) for _ in range(5)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(log._waiting) == 5, 10, message="five readers waiting")
    log.wake_all()
    for thread in threads:
        thread.join(10)
    assert results == [([], 0)] * 5


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
