"""POST /api/batch in its NDJSON form: a header line, then one update a line, streamed as one event."""

from __future__ import annotations

import base64
import json

import pytest
import requests

import hud_server
from helpers import NDJSON, SSEReader, live_updates, ndjson_batch, strict_json

PNG_1PX = base64.b64encode(
    base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
).decode()
#: Strict JSON lines as a client may write them: raw non-ASCII (a line separator and an emoji
#: among them), escapes, spaces, number spellings that re-encoding would change.
VERBATIM_LINES = [
    '{"global_step":1,"location":"Hyrule Castle — café 🗡","note":"a\u2028b\u0085c"}',
    '{ "global_step" : 2 , "escaped" : "caf\\u00e9" , "reward" : 1.50 , "big" : 1E3 }',
    '{"global_step":3,"nested":{"list":[1, 2.0, -0.0],"flag":true,"none":null}}',
]


def post_ndjson(client, body: str | bytes, content_type: str = NDJSON):
    """POST an NDJSON body through Flask's test client."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    return client.post("/api/batch", data=data, content_type=content_type)


def assert_error(response, status: int, code: str) -> dict:
    """The response is the one JSON error shape with ``status`` and ``code``."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == "error" and body["error"] == code and body["message"]
    return body


def live_events(hud, after: int = 0) -> list[dict]:
    """The live training_update events the HUD has streamed since event ``after``, parsed strictly."""
    logged = hud.log.read_after(after)
    events = []
    for chunk in logged[0] if logged else []:
        text = chunk.decode("utf-8")
        assert "\r" not in text, "a carriage return would end an SSE line in a browser"
        if "event: training_update" in text:
            [data] = [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]
            events.append(strict_json(data))
    return events


def assert_nothing_applied(client, hud) -> None:
    """No update of a refused batch reached the state or the stream."""
    state = client.get("/api/state").get_json()
    assert state["updates"] == 0 and state["data"] == {}
    assert live_events(hud) == []


# --------------------------------------------------------------------------- accepted (test client)


@pytest.mark.parametrize("content_type", [NDJSON, "application/jsonl", "application/x-ndjson; charset=utf-8"])
def test_header_and_updates_are_applied_in_order(client, hud, content_type):
    """The header's run and frame are taken and the update lines merge in order, as one streamed event."""
    updates = [
        {"global_step": 10, "episode": 1, "health": {"current": 3, "max": 12}},
        {"global_step": 20, "episode_reward": 2.5},
        {"global_step": 30, "health": {"current": 2}},
    ]
    body = ndjson_batch(
        updates, run_id="nd-run", session_id=None, frame={"image_base64": PNG_1PX, "response_time": 0.5}
    )
    response = post_ndjson(client, body, content_type)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["applied"] == 3
    state = client.get("/api/state").get_json()
    assert state["data"] == {"global_step": 30, "episode": 1, "health": {"current": 2}, "episode_reward": 2.5}
    assert state["updates"] == 3 and state["run_id"] == "nd-run"
    assert state["frame"]["mime"] == "image/png" and state["frame"]["response_time"] == 0.5
    [event] = live_events(hud)
    assert event["steps"] == [10, 20, 30] and event["batch"] == updates and event["updates"] == 3
    history = client.get("/api/history").get_json()
    assert history["metrics"]["health.current"] == {"steps": [10, 30], "values": [3, 2]}
    assert [(e["episode"], e["reward"], e["step"]) for e in history["episodes"]] == [(1, 2.5, 20)]


def test_each_post_is_one_event_whose_steps_follow_the_run(client, hud):
    """Every POST is one live event; updates without global_step take the run's latest step."""
    assert post_ndjson(client, ndjson_batch([{"x": 1}, {"x": 2}])).status_code == 200
    assert post_ndjson(client, ndjson_batch([{"global_step": 50, "x": 3}, {"x": 4}])).status_code == 200
    assert post_ndjson(client, ndjson_batch([{"x": 5}])).status_code == 200
    events = live_events(hud)
    assert [event["steps"] for event in events] == [[1, 2], [50, 50], [50]]
    assert [event["updates"] for event in events] == [2, 4, 5]
    records = [record for event in events for record in live_updates(event)]
    assert [record["data"]["x"] for record in records] == [1, 2, 3, 4, 5]
    assert [record["updates"] for record in records] == [1, 2, 3, 4, 5]


def test_empty_lines_are_skipped(client, hud):
    """Blank lines (between updates, and trailing ones) carry nothing and are not counted."""
    body = '{"run_id": "blank"}\n\n{"global_step": 1}\n\n\n{"global_step": 2}\n\n'
    response = post_ndjson(client, body)
    assert response.status_code == 200 and response.get_json()["applied"] == 2
    [event] = live_events(hud)
    assert event["batch"] == [{"global_step": 1}, {"global_step": 2}]


def test_a_header_alone_applies_its_frame_and_no_update(client, hud):
    """A batch of just a header line sets its frame; no update is counted or streamed."""
    response = post_ndjson(client, json.dumps({"frame": {"image_base64": PNG_1PX}}))
    assert response.status_code == 200 and response.get_json()["applied"] == 0
    state = client.get("/api/state").get_json()
    assert state["updates"] == 0 and state["frame"]["mime"] == "image/png"
    assert live_events(hud) == []


def test_crlf_line_ends_are_accepted_and_lines_streamed_as_sent(client, hud):
    """A CRLF-separated batch is applied, and its strict lines still stream as sent (without the CR)."""
    lines = ['{"global_step": 1, "a": 1}', '{"global_step": 2, "a": 2}']
    response = post_ndjson(client, "\r\n".join(['{"run_id": "crlf"}', *lines, ""]))
    assert response.status_code == 200 and response.get_json()["applied"] == 2
    assert client.get("/api/state").get_json()["data"] == {"global_step": 2, "a": 2}
    logged, _ = hud.log.read_after(0)
    assert b'"batch":[' + ",".join(lines).encode() + b"]}" in b"".join(logged)


def test_a_stray_carriage_return_is_encoded_again(client, hud):
    """A CR inside a line (JSON whitespace, but an SSE line end) is accepted; the event is re-encoded without it."""
    response = post_ndjson(client, '{"run_id": "cr"}\n{"global_step": 1,\r"r": 2}\n{"global_step": 2, "r": 3}\n')
    assert response.status_code == 200 and response.get_json()["applied"] == 2
    [event] = live_events(hud)  # asserts no CR reached the stream
    assert event["batch"] == [{"global_step": 1, "r": 2}, {"global_step": 2, "r": 3}]
    assert client.get("/api/history").get_json()["metrics"]["r"] == {"steps": [1, 2], "values": [2, 3]}


def test_nan_and_infinity_lines_become_null_in_state_stream_and_history(client, hud):
    """Lines with NaN or ±Infinity are accepted; the values are null in the state and the stream, and no point."""
    body = '{"run_id": "nan"}\n{"global_step": 1, "r": 1.5, "ok": "é"}\n{"global_step": 2, "r": NaN, "q": [Infinity, -Infinity]}\n'
    assert post_ndjson(client, body).status_code == 200
    text = client.get("/api/state").get_data(as_text=True)
    assert strict_json(text)["data"] == {"global_step": 2, "r": None, "ok": "é", "q": [None, None]}
    [event] = live_events(hud)
    assert event["batch"] == [{"global_step": 1, "r": 1.5, "ok": "é"}, {"global_step": 2, "r": None, "q": [None, None]}]
    assert client.get("/api/history").get_json()["metrics"]["r"] == {"steps": [1], "values": [1.5]}


def test_a_long_text_is_cut_while_the_other_lines_stream_as_sent():
    """A line with text past HUD_MAX_STRING_LENGTH is cut (and encoded again); the other lines go out as sent."""
    app = hud_server.create_app({"max_string_length": 40})
    client, hud = app.test_client(), app.extensions["hud"]
    lines = ['{"global_step":1, "a":"short"}', json.dumps({"global_step": 2, "a": "x" * 50})]
    assert post_ndjson(client, "\n".join(['{"run_id": "cut"}', *lines])).status_code == 200
    [event] = live_events(hud)
    assert event["batch"][1]["a"] == "x" * 40 + "… [cut 10 characters]"
    logged, _ = hud.log.read_after(0)
    assert b'"batch":[' + lines[0].encode() + b"," in b"".join(logged)
    assert client.get("/api/state").get_json()["data"]["a"] == event["batch"][1]["a"]


def test_the_json_form_still_works_beside_it(client, hud):
    """The JSON form {run_id, updates: [...]} is still applied and streamed as one event."""
    response = client.post("/api/batch", json={"run_id": "json", "updates": [{"global_step": 1}, {"global_step": 2}]})
    assert response.status_code == 200 and response.get_json()["applied"] == 2
    [event] = live_events(hud)
    assert event["steps"] == [1, 2] and event["batch"] == [{"global_step": 1}, {"global_step": 2}]


# --------------------------------------------------------------------------- refused (test client)


@pytest.mark.parametrize(
    "lines, index",
    [
        (['{"a": 1}', "{not json"], 1),
        (['{"a": 1}', '{"a": 2}', '{"a": '], 2),
        (["{} {}"], 0),
        (['{"a": 1}', "   "], 1),
    ],
)
def test_a_line_that_is_not_json_is_400_naming_it_and_nothing_is_applied(client, hud, lines, index):
    """An update line that does not parse is refused as updates[i] (i from 0 after the header); nothing is applied."""
    body = assert_error(post_ndjson(client, "\n".join(['{"run_id": "bad"}', *lines])), 400, "invalid_json")
    assert f"updates[{index}]" in body["message"]
    assert_nothing_applied(client, hud)


def test_the_index_in_an_error_counts_updates_not_blank_lines(client, hud):
    """With blank lines before it, a bad line is still named by its position among the updates."""
    body = assert_error(post_ndjson(client, '{}\n\n{"a": 1}\n\n[1]\n'), 400, "invalid_update")
    assert "updates[1]" in body["message"]
    assert_nothing_applied(client, hud)


@pytest.mark.parametrize("line", ["[1, 2]", '"text"', "17", "null", "true"])
def test_a_line_that_is_not_an_object_is_400(client, hud, line):
    """An update line holding JSON that is not an object is refused, naming it."""
    body = assert_error(post_ndjson(client, f'{{"run_id": "x"}}\n{{"a": 1}}\n{line}\n'), 400, "invalid_update")
    assert "updates[1]" in body["message"]
    assert_nothing_applied(client, hud)


@pytest.mark.parametrize(
    "bad, field",
    [
        ('{"global_step": "ten"}', "updates[2].global_step"),
        ('{"health": {"current": "full"}}', "updates[2].health.current"),
        ('{"position": [1, 2]}', "updates[2].position"),
        ('{"milestones": {"sword_usage": "yes"}}', "updates[2].milestones.sword_usage"),
        ('{"llm_suggestion": 42, "note": NaN}', "updates[2].llm_suggestion"),  # a lenient line too
    ],
)
def test_a_wrong_typed_known_field_is_400_naming_it_and_nothing_is_applied(client, hud, bad, field):
    """A known field of the wrong type is refused as updates[i].field, the first bad update named; nothing applied."""
    lines = ['{"global_step": 1, "health": {"current": 3}}', '{"episode_reward": 1.5}', bad, '{"global_step": "later"}']
    body = assert_error(post_ndjson(client, "\n".join(['{"run_id": "typed"}', *lines])), 400, "invalid_field")
    assert field in body["message"] and "updates[3]" not in body["message"]
    assert_nothing_applied(client, hud)


@pytest.mark.parametrize(
    "header, code",
    [
        ("[1, 2]", "invalid_body"),
        ('"run"', "invalid_body"),
        ("17", "invalid_body"),
        ("null", "invalid_body"),
        ("", "invalid_body"),
        ("{run_id: x}", "invalid_json"),
        ('{"run_id": "x", "updates": [{"a": 1}]}', "invalid_body"),
        ('{"run_id": "x", "updates": []}', "invalid_body"),
        ('{"run_id": 5}', "invalid_field"),
        ('{"frame": "x"}', "invalid_body"),
        ('{"frame": {"image_base64": "!!"}}', "invalid_image"),
    ],
)
def test_a_header_line_that_is_not_a_header_object_is_400(client, hud, header, code):
    """Line 1 must be an object of run_id, session_id and frame, never updates; else 400 and nothing applied."""
    assert_error(post_ndjson(client, header + '\n{"a": 1}\n'), 400, code)
    assert_nothing_applied(client, hud)


def test_more_lines_than_max_batch_is_413():
    """More update lines than HUD_MAX_BATCH is 413 batch_too_large; as many is fine, blank lines not counted."""
    app = hud_server.create_app({"max_batch": 3})
    client, hud = app.test_client(), app.extensions["hud"]
    assert_error(post_ndjson(client, ndjson_batch([{"i": i} for i in range(4)])), 413, "batch_too_large")
    assert_nothing_applied(client, hud)
    response = post_ndjson(client, ndjson_batch([{"i": i} for i in range(3)]) + "\n\n\n")
    assert response.status_code == 200 and response.get_json()["applied"] == 3


@pytest.mark.parametrize(
    "body",
    [
        b'{"run_id": "x"}\n{"a": "\xff"}\n',
        b'\xfe{"run_id": "x"}\n{"a": 1}\n',
        b'{"run_id": "x"}\n{"a": "caf\xe9"}\n',  # Latin-1, not UTF-8
    ],
)
def test_a_body_that_is_not_utf8_is_400(client, hud, body):
    """Bytes that are not UTF-8, in the header or an update line, are a 400 JSON error; nothing is applied."""
    assert_error(post_ndjson(client, body), 400, "invalid_json")
    assert_nothing_applied(client, hud)


# --------------------------------------------------------------------------- a real /stream


def post_live(url: str, body: str | bytes, content_type: str = NDJSON) -> dict:
    """POST an NDJSON batch to a live server and check it was applied."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    response = requests.post(url + "/api/batch", data=data, headers={"Content-Type": content_type}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def stream(live_server):
    """An open /stream on the live server, past its snapshot."""
    reader = SSEReader(live_server.url + "/stream")
    assert strict_json(reader.next_named()["data"])["snapshot"] is True
    yield reader
    reader.close()


def test_a_batch_reaches_an_open_dashboard_as_one_event(live_server, stream):
    """An NDJSON POST reaches /stream as one training_update with the updates in batch and their steps."""
    updates = [{"global_step": 5, "episode_reward": 1.0}, {"loss": 0.5}, {"global_step": 7, "loss": 0.25}]
    post_live(live_server.url, ndjson_batch(updates, run_id="live-nd"))
    post_live(live_server.url, ndjson_batch([{"loss": 0.125}], run_id="live-nd"))
    first = strict_json(stream.next_named()["data"])
    assert first["snapshot"] is False and "data" not in first and "step" not in first
    assert first["run_id"] == "live-nd" and first["updates"] == 3
    assert first["steps"] == [5, 5, 7] and first["batch"] == updates
    second = strict_json(stream.next_named()["data"])
    assert second["steps"] == [7] and second["batch"] == [{"loss": 0.125}] and second["updates"] == 4


def test_strict_lines_reach_the_stream_byte_for_byte(live_server, stream):
    """Strict JSON lines are streamed exactly as posted: non-ASCII, escapes, spacing and number spelling kept."""
    post_live(live_server.url, "\n".join(['{"run_id": "bytes"}', *VERBATIM_LINES]) + "\n")
    event = stream.next_named()
    assert event["event"] == "training_update"
    assert event["data"].encode("utf-8").endswith(('"batch":[' + ",".join(VERBATIM_LINES) + "]}").encode("utf-8"))
    payload = strict_json(event["data"])
    assert payload["batch"] == [json.loads(line) for line in VERBATIM_LINES]
    assert payload["steps"] == [1, 2, 3]


def test_lenient_lines_reach_the_stream_as_strict_json(live_server, stream):
    """A batch with NaN/Infinity reaches the stream re-encoded: strict JSON, the non-finite values null."""
    lines = ['{"global_step": 1, "where": "café", "r": 1}', '{"global_step": 2, "r": NaN, "s": -Infinity}']
    post_live(live_server.url, "\n".join(['{"run_id": "nan"}', *lines]))
    [first, second] = stream.next_live_updates()  # parsed as strictly as a browser's JSON.parse
    assert first["data"] == {"global_step": 1, "where": "café", "r": 1}
    assert second["data"] == {"global_step": 2, "r": None, "s": None} and second["step"] == 2
    state = requests.get(live_server.url + "/api/state", timeout=5).json()
    assert state["data"] == {"global_step": 2, "where": "café", "r": None, "s": None}


def test_a_stray_carriage_return_leaves_the_stream_valid(live_server, stream):
    """A CR inside a line does not split the event for a browser: this event and the next parse whole."""
    post_live(live_server.url, '{"run_id": "cr"}\r\n{"global_step": 1,\r"r": 2}\r\n')
    post_live(live_server.url, '{"run_id": "cr"}\n{"global_step": 2, "r": 3}\n')
    assert [record["data"] for record in stream.next_live_updates()] == [{"global_step": 1, "r": 2}]
    assert [record["data"] for record in stream.next_live_updates()] == [{"global_step": 2, "r": 3}]


def test_a_refused_batch_sends_nothing_to_the_stream(live_server, stream):
    """A batch refused for one bad line sends no event; the next good batch is the next event."""
    bad = requests.post(
        live_server.url + "/api/batch",
        data='{"run_id": "r"}\n{"global_step": 1}\n{"health": {"max": "lots"}}\n',
        headers={"Content-Type": NDJSON},
        timeout=10,
    )
    assert bad.status_code == 400 and "updates[1].health.max" in bad.json()["message"]
    post_live(live_server.url, ndjson_batch([{"global_step": 9}], run_id="r"))
    [record] = stream.next_live_updates()
    assert record["data"] == {"global_step": 9} and record["updates"] == 1
