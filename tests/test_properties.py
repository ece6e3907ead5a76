"""Hypothesis properties: whatever JSON is posted, the server answers, its state stays an object
and everything it streams is strict JSON (NaN/Infinity never reach a browser's JSON.parse);
and the batch-at-a-time history and validation do what doing it one update at a time would."""

from __future__ import annotations

import itertools
import json
import logging
import sys
from array import array

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import hud_server
from helpers import SSEReader, live_updates, start_live_server

#: Answers a post may get; anything else (above all a 5xx) is a bug.
POST_STATUSES = {200, 400, 409, 413}
WRITE_PATHS = (
    "/api/register_session",
    "/api/update_training",
    "/api/update_vision",
    "/api/batch",
    "/api/reset_session",
)

#: Bounded and derandomised, so the file takes seconds and every CI run tries the same examples.
FAST = settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIVE = settings(FAST, max_examples=25)


# --------------------------------------------------------------------------- strategies

LONE_SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
TEXT = st.text(st.characters() | LONE_SURROGATES, max_size=12)
BIG_TEXT = st.builds(
    lambda char, count: char * count, st.characters() | LONE_SURROGATES, st.integers(5_000, 30_000)
)  # past HUD_MAX_STRING_LENGTH: cut, not refused
INTEGERS = st.one_of(
    st.integers(),
    st.integers(-(10**400), 10**400),  # past a float's range: not chartable, still JSON
    st.sampled_from([2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**308, 10**309, -(10**4000)]),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [float("nan"), float("inf"), float("-inf"), 0.5, -0.0, 1e308, 5e-324]
)
#: An update that records a metric at some step: mixed steps (fractions, huge ints) meet in /api/history.
STEPPED = st.fixed_dictionaries({"global_step": INTEGERS | FLOATS, "metric": INTEGERS | FLOATS})
SCALARS = st.none() | st.booleans() | INTEGERS | FLOATS | TEXT | BIG_TEXT
KEYS = TEXT | st.sampled_from(sorted(hud_server.KNOWN_FIELDS)) | st.just("global_step")


def _containers(children):
    return st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4)


JSON_VALUES = st.recursive(SCALARS, _containers, max_leaves=12)
JSON_OBJECTS = st.dictionaries(KEYS, JSON_VALUES, max_size=5)


def dumps(value) -> str:
    """JSON text as Python writes it: NaN/Infinity allowed, lone surrogates as \\u escapes."""
    return json.dumps(value, allow_nan=True)


def _nest(text: str, depth: int, kind: str) -> str:
    """``text`` wrapped ``depth`` levels deep in arrays or objects (built as text: json.dumps would recurse)."""
    if kind == "array":
        return "[" * depth + text + "]" * depth
    return '{"d":' * depth + text + "}" * depth


#: Nesting depths: none, around HUD_MAX_DEPTH (32), deep enough to hit Python's recursion limit in the
#: server's own walks (~500) and past the JSON parser's limit (~1000).
DEPTHS = st.just(0) | st.integers(1, 40) | st.sampled_from([480, 500, 700, 900, 960, 1100]) | st.integers(400, 1100)
#: JSON text of any value, sometimes nested very deeply.
JSON_TEXTS = st.builds(_nest, JSON_VALUES.map(dumps) | st.just("NaN"), DEPTHS, st.sampled_from(["array", "object"]))
#: JSON text of an object (an update the server may accept), sometimes with one deeply nested field.
OBJECT_TEXTS = st.builds(
    lambda obj, nested: (
        dumps(obj) if nested is None else dumps(obj)[:-1] + ("," if obj else "") + '"deep":' + nested + "}"
    ),
    JSON_OBJECTS,
    st.none() | JSON_TEXTS,
)
UPDATE_TEXTS = OBJECT_TEXTS | JSON_TEXTS | STEPPED.map(dumps)


# --------------------------------------------------------------------------- checks


def strict_json(text: str):
    """Parse as a browser's JSON.parse would: NaN and Infinity are errors."""

    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def sse_payloads(chunk: bytes) -> list[str]:
    """The data of each event in a chunk of SSE bytes (which must be UTF-8)."""
    payloads = []
    for block in chunk.decode("utf-8").split("\n\n"):
        lines = [line[len("data: ") :] for line in block.split("\n") if line.startswith("data: ")]
        if lines:
            payloads.append("\n".join(lines))
    return payloads


def post_text(client, path: str, text: str, content_type: str = "application/json"):
    """POST raw JSON text (requests and json= refuse NaN)."""
    return client.post(path, data=text.encode("utf-8", "surrogatepass"), content_type=content_type)


def check_server_sane(app) -> None:
    """State, history and every event a browser would receive are strict JSON; state data is an object."""
    client = app.test_client()
    state = client.get("/api/state")
    assert state.status_code == 200
    assert isinstance(strict_json(state.get_data(as_text=True))["data"], dict)
    history = client.get("/api/history?times=1")
    assert history.status_code == 200, history.get_data(as_text=True)
    strict_json(history.get_data(as_text=True))
    hud = app.extensions["hud"]
    snapshot, _ = hud.snapshot_events()
    logged = hud.log.read_after(0)
    chunks = [snapshot] + (logged[0] if logged else [])
    for chunk in chunks:
        for payload in sse_payloads(chunk):
            strict_json(payload)


@pytest.fixture(scope="module", autouse=True)
def quiet_server_log():
    """Each example builds an app, which warns that HUD_TOKEN is unset; keep the output readable."""
    logger = logging.getLogger("hud_server")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def fresh_app():
    """A new app for each example, so examples do not depend on each other."""
    return hud_server.create_app({"session_timeout": 60.0})


# --------------------------------------------------------------------------- properties (test client)


@FAST
@given(st.lists(UPDATE_TEXTS, min_size=1, max_size=3))
@example(['{"x": ' + "[" * 500 + "NaN" + "]" * 500 + "}"])  # NaN deep inside: the server's NaN scrub recursed
@example(['{"global_step": 0.5, "metric": 1}', '{"global_step": 1' + "0" * 400 + ', "metric": 2}'])  # history steps
def test_any_json_as_update_data_is_answered_and_streams_strict_json(texts):
    """Any JSON as `data` of /api/update_training gets 200/400/413, never 5xx; the stream stays strict JSON."""
    app = fresh_app()
    client = app.test_client()
    for text in texts:
        response = post_text(client, "/api/update_training", '{"data": ' + text + "}")
        assert response.status_code in POST_STATUSES, response.get_data(as_text=True)
        strict_json(response.get_data(as_text=True))
    check_server_sane(app)


@FAST
@given(st.lists(st.lists(UPDATE_TEXTS, max_size=3), min_size=1, max_size=3))
def test_any_json_in_batch_updates_is_answered_and_streams_strict_json(batches):
    """Any JSON as elements of /api/batch `updates` gets 200/400/413, never 5xx; the stream stays strict JSON."""
    app = fresh_app()
    client = app.test_client()
    for updates in batches:
        response = post_text(client, "/api/batch", '{"run_id": "props", "updates": [' + ",".join(updates) + "]}")
        assert response.status_code in POST_STATUSES, response.get_data(as_text=True)
        strict_json(response.get_data(as_text=True))
    check_server_sane(app)


@FAST
@given(st.lists(st.lists(UPDATE_TEXTS, max_size=3), min_size=1, max_size=3), st.sampled_from(["\n", "\r\n"]))
@example([['{"a": NaN}', '{"b": 1}']], "\n")
def test_any_json_lines_in_an_ndjson_batch_are_answered_and_stream_strict_json(batches, line_end):
    """Any JSON text as the update lines of an NDJSON /api/batch gets 200/400/413, never 5xx; the stream stays strict JSON."""
    app = fresh_app()
    client = app.test_client()
    for updates in batches:
        body = line_end.join(['{"run_id": "props"}', *updates])
        response = post_text(client, "/api/batch", body, "application/x-ndjson")
        assert response.status_code in POST_STATUSES, response.get_data(as_text=True)
        strict_json(response.get_data(as_text=True))
    check_server_sane(app)


@FAST
@given(st.sampled_from(WRITE_PATHS), UPDATE_TEXTS)
def test_any_json_as_whole_body_is_answered(path, text):
    """Any JSON as the whole body of any write endpoint gets 200/400/409/413 with a JSON answer."""
    app = fresh_app()
    client = app.test_client()
    response = post_text(client, path, text)
    assert response.status_code in POST_STATUSES, response.get_data(as_text=True)
    body = strict_json(response.get_data(as_text=True))
    if response.status_code != 200:
        assert body["status"] == "error" and isinstance(body["error"], str) and isinstance(body["message"], str)
    check_server_sane(app)


@FAST
@given(JSON_OBJECTS, st.sampled_from(["a", "b"]), st.sampled_from(["a", "b"]))
def test_any_update_from_two_runs_keeps_one_owner(data, first_run, second_run):
    """A second run's update is 409 with owner_run_id while the first owns the HUD; the state stays an object."""
    app = fresh_app()
    client = app.test_client()
    first = post_text(client, "/api/update_training", json.dumps({"run_id": first_run, "data": {}}))
    assert first.status_code == 200
    second = post_text(client, "/api/update_training", json.dumps({"run_id": second_run, "data": data}))
    assert second.status_code in POST_STATUSES
    if first_run != second_run:
        assert second.status_code != 200  # 409, or 400/413 when the update itself is refused first
        if second.status_code == 409:
            assert strict_json(second.get_data(as_text=True))["owner_run_id"] == first_run
    check_server_sane(app)


@FAST
@given(st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=20), st.booleans())
@example("\xb2", True)  # "²" is a digit to str.isdigit but not to int()
def test_any_last_event_id_starts_the_stream(suffix, with_boot_id):
    """/stream answers 200 with a strict-JSON start whatever Last-Event-ID a browser sends."""
    app = fresh_app()
    hud = app.extensions["hud"]
    post_text(app.test_client(), "/api/update_training", '{"data": {"a": 1}}')
    header = (f"{hud.boot_id}-" if with_boot_id else "") + suffix
    response = app.test_client().get("/stream", headers={"Last-Event-ID": header}, buffered=False)
    try:
        assert response.status_code == 200
        first = next(iter(response.response))
        for payload in sse_payloads(first):
            strict_json(payload)
    finally:
        response.close()
    assert hud.open_streams == 0


# --------------------------------------------------------------------------- property (real /stream)


@pytest.fixture(scope="module")
def streamed():
    """A real server and one open /stream on it, shared by the live examples."""
    server = start_live_server({"session_timeout": 60.0})
    reader = SSEReader(server.url + "/stream")
    first = reader.next_named()
    assert strict_json(first["data"])["snapshot"] is True
    yield server, reader
    reader.close()
    server.stop()


PROBES = itertools.count(1)  # marker numbers, one per live example


def _read_until_probe(reader: SSEReader, probe: int) -> list[dict]:
    """Events up to and including the one carrying ``{"_probe": probe}``."""
    events = []
    while True:
        event = reader.next_named()
        events.append(event)
        payload = strict_json(event["data"])
        if event["event"] == "training_update" and payload.get("batch") == [{"_probe": probe}]:
            return events


@LIVE
@given(UPDATE_TEXTS)
def test_real_stream_stays_strict_json_for_any_update(streamed, text):
    """Over a real /stream, every event after any posted update parses as strict JSON, and an accepted one arrives."""
    server, reader = streamed
    response = requests.post(
        server.url + "/api/update_training",
        data=('{"data": ' + text + "}").encode("utf-8", "surrogatepass"),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code in POST_STATUSES, response.text
    # A marker update after each example: reading up to it sees every event the example caused.
    streamed_probe = next(PROBES)
    marker = requests.post(server.url + "/api/update_training", json={"data": {"_probe": streamed_probe}}, timeout=10)
    assert marker.status_code == 200, marker.text
    events = _read_until_probe(reader, streamed_probe)
    updates = [strict_json(event["data"]) for event in events if event["event"] == "training_update"]
    assert len(updates) == (2 if response.status_code == 200 else 1)
    for update in updates:
        [record] = live_updates(update)  # one update posted: one in the event
        assert isinstance(record["data"], dict)


# --------------------------------------------------------------------------- batch-at-a-time = one at a time


class ReferenceSeries:
    """What SeriesHistory keeps, as its plain model: points offered one at a time, each with its arrival number.

    The overview takes every ``stride``-th arrival; when it holds ``half`` points every
    second one is dropped and the stride doubles. The recent part is the last ``half``
    points. The points shown are the overview's older than the recent part, then the recent.
    """

    def __init__(self, budget: int):
        self.half = max(2, budget // 2)
        self.count = 0
        self.stride = 1
        self.overview: list[tuple[int, tuple]] = []
        self.recent: list[tuple[int, tuple]] = []

    def add(self, point: tuple) -> None:
        """Offer one (step, wall, value) point."""
        if self.count % self.stride == 0:
            self.overview.append((self.count, point))
            if len(self.overview) == self.half:
                self.overview = self.overview[::2]
                self.stride *= 2
        self.recent = [*self.recent, (self.count, point)][-self.half :]
        self.count += 1

    def points(self, since: float | None = None) -> tuple[list, list, list]:
        """Steps, walls and values shown, oldest first, less what a resumed run redid (only steps >= ``since``)."""
        first_recent = self.recent[0][0] if self.recent else self.count
        kept = [point for arrival, point in self.overview if arrival < first_recent]
        kept += [point for _, point in self.recent]
        shown, previous = [], None
        for point in kept:  # a step below the one kept before it supersedes those at or past it (a resumed run)
            if previous is not None and point[0] < previous:
                shown = [old for old in shown if old[0] < point[0]]
            shown.append(point)
            previous = point[0]
        if since is not None:
            shown = [point for point in shown if point[0] >= since]
        return [p[0] for p in shown], [p[1] for p in shown], [p[2] for p in shown]


FINITE = st.floats(allow_nan=False, allow_infinity=False)
POINTS = st.tuples(FINITE, FINITE, FINITE)


@FAST
@given(st.integers(1, 64), st.lists(st.lists(POINTS, max_size=300), max_size=12), st.none() | FINITE)
@example(4, [[(float(i), 0.0, float(i)) for i in range(300)]], None)  # one chunk fills the overview many times
def test_series_extend_in_any_chunks_keeps_what_adding_one_at_a_time_keeps(budget, chunks, since):
    """SeriesHistory.extend over any chunking shows the same points as its model fed one point at a time."""
    series, reference = hud_server.SeriesHistory(budget), ReferenceSeries(budget)
    for chunk in chunks:
        series.extend(*(array("d", [point[i] for point in chunk]) for i in range(3)))
        for point in chunk:
            reference.add(point)
        assert (series.count, series.stride) == (reference.count, reference.stride)
        assert series.points() == reference.points()
    assert series.points(since) == reference.points(since)
    restored = hud_server.SeriesHistory.restored(budget, *series.parts())
    assert restored.points() == reference.points()  # what a restart brings back


FLOAT_MAX = sys.float_info.max
METRIC_KEYS = st.sampled_from(["a", "b", "c", "a.b", "global_step", "x"])  # "a.b": also the name of a→b
METRIC_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([10**400, -(10**400), 2**63, 0])
    | FINITE
    | st.text(max_size=3)
    | st.lists(st.integers(), max_size=2)
)
METRIC_UPDATES = st.dictionaries(
    METRIC_KEYS,
    st.recursive(METRIC_LEAVES, lambda inner: st.dictionaries(METRIC_KEYS, inner, max_size=3), max_leaves=6),
)
STEPS = st.integers(-(2**60), 2**60) | FINITE


def reference_record(series: dict, max_metrics: int, data: dict, step, wall: float, prefix: str = "") -> None:
    """One update recorded as the HUD did before batches: a point per chartable number, nested as a.b, in order."""
    for key, value in data.items():
        name = prefix + key
        if type(value) is float or (type(value) is int and -FLOAT_MAX <= value <= FLOAT_MAX):
            if name not in series:
                if len(series) >= max_metrics:
                    continue
                series[name] = ([], [], [])
            for column, item in zip(series[name], (step, wall, value), strict=True):
                column.append(float(item))
        elif type(value) is dict:
            reference_record(series, max_metrics, value, step, wall, name + ".")


@FAST
@given(
    st.integers(1, 8),
    st.lists(st.lists(st.tuples(METRIC_UPDATES, STEPS), min_size=1, max_size=6), min_size=1, max_size=4),
)
def test_recording_a_batch_gives_the_series_of_recording_each_update(max_metrics, batches):
    """MetricHistory.record(updates, batch_columns(updates), steps, wall) keeps what one update at a time would."""
    history = hud_server.MetricHistory(10_000, max_metrics)
    expected: dict = {}
    for wall, batch in enumerate(batches):
        updates, steps = [update for update, _ in batch], [step for _, step in batch]
        history.record(updates, hud_server.batch_columns(updates), steps, float(wall))
        for update, step in batch:
            reference_record(expected, max_metrics, update, step, float(wall))
    assert list(history.series) == list(expected)
    recorded = {name: tuple(column.tolist() for column in series.columns()) for name, series in history.series.items()}
    assert recorded == expected


#: Small values of every JSON type (the types check_update tells apart); NaN and infinity too.
ANY_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.just(2**70)
    | st.floats()
    | st.text(max_size=3)
    | st.lists(st.integers(0, 9), max_size=2)
    | st.dictionaries(st.text(max_size=2), st.integers(0, 9), max_size=2)
)
SUBFIELD_NAMES = sorted({name for fields in hud_server.KNOWN_SUBFIELDS.values() for name in fields})
#: An update: known fields (and objects of known subfields) holding values of any type, the wrong one often.
CHECKED_UPDATES = st.dictionaries(
    st.sampled_from(sorted(hud_server.KNOWN_FIELDS)) | st.sampled_from(["other", "x"]),
    ANY_VALUES | st.dictionaries(st.sampled_from([*SUBFIELD_NAMES, "other"]), ANY_VALUES, max_size=3),
    max_size=4,
)


def first_refusal(values: list) -> hud_server.APIError | None:
    """check_update's refusal of the first update it refuses, if any."""
    for index, value in enumerate(values):
        try:
            hud_server.check_update(value, f"updates[{index}]")
        except hud_server.APIError as exc:
            return exc
    return None


@FAST
@given(st.lists(CHECKED_UPDATES | ANY_VALUES, max_size=6), st.booleans())
def test_prepare_refuses_a_batch_iff_an_update_fails_check_update_naming_the_first(values, strict):
    """HUD.prepare raises iff some update fails check_update, with that check's answer for the first failing update."""
    try:
        json.dumps(values, allow_nan=False)
    except ValueError:
        strict = False  # NaN or infinity: the values came from the lenient parser
    expected = first_refusal(values)
    hud = fresh_app().extensions["hud"]
    if expected is None:
        batch = hud.prepare(list(values), "updates[{}]", strict)
        assert len(batch.updates) == len(batch.texts) == len(values)
    else:
        with pytest.raises(hud_server.APIError) as refused:
            hud.prepare(list(values), "updates[{}]", strict)
        assert (refused.value.status, refused.value.code, refused.value.message) == (
            expected.status,
            expected.code,
            expected.message,
        )
