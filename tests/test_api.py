"""The HTTP API through Flask's test client: every endpoint, every refusal, sessions."""

from __future__ import annotations

import base64
import json

import pytest

import hud_server

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
# A JPEG as far as the server reads one: start of image, a baseline frame header (2x3 px), end.
JPEG_MAGIC = b"\xff\xd8\xff\xc0\x00\x0b\x08\x00\x03\x00\x02\x01\x01\x11\x00\xff\xd9"


def post(client, path, body=None, raw=None):
    """POST JSON (or raw text) and return the response."""
    if raw is not None:
        return client.post(path, data=raw, content_type="application/json")
    return client.post(path, json=body)


def assert_error(response, status, code=None):
    """The response is the one JSON error shape with ``status`` (and ``code``)."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == "error"
    assert isinstance(body["message"], str) and body["message"]
    if code:
        assert body["error"] == code
    return body


def test_health_is_cheap_json(client, hud):
    """/health answers healthy with the boot id and open stream count."""
    body = client.get("/health").get_json()
    assert body["status"] == "healthy"
    assert body["boot_id"] == hud.boot_id
    assert body["open_streams"] == 0


def test_register_then_update_merges_top_level_keys(client):
    """Training updates merge into the state: a top-level key replaces its old value."""
    session_id = post(client, "/api/register_session").get_json()["session_id"]
    post(
        client,
        "/api/update_training",
        {"session_id": session_id, "data": {"global_step": 1, "health": {"current": 3, "max": 12}}},
    )
    response = post(
        client, "/api/update_training", {"session_id": session_id, "data": {"health": {"current": 2}, "epoch": 4}}
    )
    assert response.status_code == 200
    assert response.get_json()["status"] == "updated"
    state = client.get("/api/state").get_json()
    assert state["data"] == {"global_step": 1, "health": {"current": 2}, "epoch": 4}
    assert state["updates"] == 2
    assert state["session_id"] == session_id


def test_state_is_empty_before_any_update(client):
    """GET /api/state works before anything was posted."""
    state = client.get("/api/state").get_json()
    assert state["data"] == {} and state["updates"] == 0 and state["frame"] is None


def test_nan_and_infinity_are_stored_as_null(client):
    """NaN and ±Infinity in a posted update are kept as null and the state stays strict JSON."""
    raw = '{"session_id": null, "data": {"episode_reward": NaN, "loss": {"a": Infinity, "b": [-Infinity, 1]}}}'
    assert post(client, "/api/update_training", raw=raw).status_code == 200
    text = client.get("/api/state").get_data(as_text=True)
    state = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in /api/state"))
    assert state["data"] == {"episode_reward": None, "loss": {"a": None, "b": [None, 1]}}


def test_batch_applies_updates_in_order_with_frame(client):
    """A batch applies every update in order and then its frame."""
    updates = [{"global_step": step, "episode_reward": step * 0.5} for step in range(50)]
    frame = {"image_base64": base64.b64encode(PNG_1PX).decode(), "response_time": 0.25}
    response = post(client, "/api/batch", {"session_id": None, "run_id": "r1", "updates": updates, "frame": frame})
    assert response.status_code == 200
    assert response.get_json()["applied"] == 50
    state = client.get("/api/state").get_json()
    assert state["data"] == {"global_step": 49, "episode_reward": 24.5}
    assert state["updates"] == 50
    assert state["frame"]["mime"] == "image/png"
    assert state["frame"]["response_time"] == 0.25
    assert state["run_id"] == "r1"


def test_update_vision_accepts_png_jpeg_and_data_urls(client):
    """A frame may be base64 PNG, JPEG, or a data: URL, and /api/frame serves it back."""
    png = base64.b64encode(PNG_1PX).decode()
    assert post(client, "/api/update_vision", {"session_id": None, "image_base64": png}).status_code == 200
    assert client.get("/api/frame").data == PNG_1PX
    assert client.get("/api/frame").mimetype == "image/png"
    jpeg_url = "data:image/jpeg;base64," + base64.b64encode(JPEG_MAGIC).decode()
    assert post(client, "/api/update_vision", {"image_base64": jpeg_url, "response_time": 1.5}).status_code == 200
    assert client.get("/api/frame").mimetype == "image/jpeg"
    assert client.get("/api/state").get_json()["frame"]["response_time"] == 1.5


def test_frame_404_before_any_frame(client):
    """/api/frame is a JSON 404 until a frame arrives."""
    assert_error(client.get("/api/frame"), 404, "no_frame")


@pytest.mark.parametrize("path", ["/api/update_training", "/api/update_vision", "/api/batch"])
@pytest.mark.parametrize(
    "raw,code",
    [
        ("{not json", "invalid_json"),
        ("[1, 2, 3]", "invalid_body"),
        ('"text"', "invalid_body"),
        ("null", "invalid_body"),
        ("", "invalid_body"),
        ("17", "invalid_body"),
    ],
)
def test_bodies_that_are_not_objects_are_400(client, path, raw, code):
    """Malformed JSON and bodies that are not objects get a 400 JSON error, never a 500."""
    assert_error(post(client, path, raw=raw), 400, code)


@pytest.mark.parametrize("data", [[1, 2], "text", 5, None, True])
def test_update_data_must_be_an_object(client, data):
    """`data` that is not an object is a 400 naming it."""
    body = assert_error(post(client, "/api/update_training", {"session_id": None, "data": data}), 400)
    assert "data" in body["message"]


def test_update_without_data_is_400(client):
    """An update body with no `data` is a 400."""
    assert_error(post(client, "/api/update_training", {"session_id": None}), 400, "invalid_body")


@pytest.mark.parametrize(
    "data,field",
    [
        ({"global_step": "ten"}, "global_step"),
        ({"episode_reward": [1]}, "episode_reward"),
        ({"health": 3}, "health"),
        ({"health": {"current": "full"}}, "health.current"),
        ({"position": {"x": {}}}, "position.x"),
        ({"llm_suggestion": 42}, "llm_suggestion"),
        ({"epoch": True}, "epoch"),
        ({"milestones": {"dungeon_entered": "yes"}}, "milestones.dungeon_entered"),
    ],
)
def test_known_fields_with_wrong_types_are_400(client, data, field):
    """A known field of the wrong type is refused with a message naming the field."""
    body = assert_error(post(client, "/api/update_training", {"session_id": None, "data": data}), 400, "invalid_field")
    assert field in body["message"]
    assert client.get("/api/state").get_json()["updates"] == 0


def test_known_fields_accept_null_and_unknown_fields_anything(client):
    """Null is fine for every known field, and unknown fields may hold any JSON."""
    data = {key: None for key in hud_server.KNOWN_FIELDS}
    data.update({"custom": {"deep": [1, {"x": "y"}]}, "flag": True})
    assert post(client, "/api/update_training", {"session_id": None, "data": data}).status_code == 200


def test_bad_batch_changes_nothing(client):
    """A batch with one bad update is refused whole: no update of it is applied."""
    updates = [{"global_step": 1}, {"global_step": "two"}]
    body = assert_error(post(client, "/api/batch", {"updates": updates}), 400, "invalid_field")
    assert "updates[1]" in body["message"]
    assert client.get("/api/state").get_json()["updates"] == 0


@pytest.mark.parametrize(
    "body,code",
    [
        ({"updates": {"a": 1}}, "invalid_body"),
        ({"updates": [1]}, "invalid_update"),
        ({"updates": [], "frame": "x"}, "invalid_body"),
        ({"updates": [], "run_id": 5}, "invalid_field"),
        ({"updates": [], "session_id": ["x"]}, "invalid_field"),
    ],
)
def test_malformed_batches_are_400(client, body, code):
    """Batches of the wrong shape are 400 with a code saying what is wrong."""
    assert_error(post(client, "/api/batch", body), 400, code)


@pytest.mark.parametrize("image", [None, "", "!!!not base64!!!", base64.b64encode(b"GIF89a....").decode(), 17])
def test_images_that_are_not_base64_jpeg_or_png_are_400(client, image):
    """An image that is missing, not base64, or not a JPEG/PNG is a 400."""
    assert_error(post(client, "/api/update_vision", {"session_id": None, "image_base64": image}), 400, "invalid_image")
    assert client.get("/api/state").get_json()["frame"] is None


def test_response_time_must_be_a_number(client):
    """A non-numeric response_time is a 400."""
    image = base64.b64encode(PNG_1PX).decode()
    assert_error(
        post(client, "/api/update_vision", {"image_base64": image, "response_time": "slow"}), 400, "invalid_field"
    )


def test_oversized_body_is_413_json():
    """A body over HUD_MAX_BODY_BYTES is a 413 with the JSON error shape."""
    app = hud_server.create_app({"max_body_bytes": 2048, "max_frame_bytes": 1024, "event_log_bytes": 65536})
    response = app.test_client().post("/api/update_training", json={"data": {"x": "y" * 5000}})
    assert_error(response, 413)


def test_oversized_frame_is_413():
    """A frame over HUD_MAX_FRAME_BYTES is a 413."""
    app = hud_server.create_app({"max_frame_bytes": 1024, "event_log_bytes": 65536})
    image = base64.b64encode(JPEG_MAGIC + b"\x00" * 2000).decode()
    assert_error(app.test_client().post("/api/update_vision", json={"image_base64": image}), 413, "frame_too_large")


def test_batch_over_max_batch_is_413():
    """More updates in one batch than HUD_MAX_BATCH is a 413."""
    app = hud_server.create_app({"max_batch": 3})
    response = app.test_client().post("/api/batch", json={"updates": [{}] * 4})
    assert_error(response, 413, "batch_too_large")


def test_state_key_budget_is_enforced():
    """The merged state never holds more than HUD_MAX_STATE_KEYS top-level keys."""
    app = hud_server.create_app({"max_state_keys": 5})
    client = app.test_client()
    assert post(client, "/api/update_training", {"data": {f"k{i}": i for i in range(5)}}).status_code == 200
    assert post(client, "/api/update_training", {"data": {"k0": 9}}).status_code == 200
    assert_error(post(client, "/api/update_training", {"data": {"k5": 1}}), 413, "too_many_keys")
    assert len(client.get("/api/state").get_json()["data"]) == 5


def test_state_byte_budget_is_enforced():
    """Large values may not take the state past HUD_MAX_STATE_BYTES; replacing them frees room."""
    app = hud_server.create_app({"max_state_bytes": 100_000, "max_string_length": 100_000})
    client = app.test_client()
    big = "x" * 60_000
    assert post(client, "/api/update_training", {"data": {"a": big}}).status_code == 200
    assert_error(post(client, "/api/update_training", {"data": {"b": big}}), 413, "state_too_large")
    assert post(client, "/api/update_training", {"data": {"a": 1}}).status_code == 200
    assert post(client, "/api/update_training", {"data": {"b": big}}).status_code == 200


def test_unknown_route_and_wrong_method_are_json(client):
    """404 and 405 use the same JSON error shape."""
    assert_error(client.get("/nope"), 404)
    assert_error(client.get("/api/update_training"), 405)


def test_security_headers_on_every_response(client):
    """Every response carries the CSP and nosniff headers."""
    for response in (client.get("/health"), client.get("/api/state"), client.get("/nope")):
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"


# ---------------------------------------------------------------- sessions and runs


def test_workers_of_one_run_share_the_session(client):
    """Every worker of the owning run registers into the same session and never sees 409."""
    first = post(client, "/api/register_session", {"run_id": "exp-1"}).get_json()
    for _ in range(5):
        again = post(client, "/api/register_session", {"run_id": "exp-1"})
        assert again.status_code == 200
        assert again.get_json()["session_id"] == first["session_id"]
    # The RLlib driver posts with session_id null and its run id; workers post with theirs.
    assert (
        post(client, "/api/update_training", {"session_id": None, "run_id": "exp-1", "data": {"a": 1}}).status_code
        == 200
    )
    assert (
        post(client, "/api/update_training", {"session_id": first["session_id"], "data": {"b": 2}}).status_code == 200
    )


def test_unnamed_clients_are_one_run(client):
    """Clients that name no run (the original HUD's) all belong to the run called 'default'."""
    first = post(client, "/api/register_session").get_json()
    second = post(client, "/api/register_session").get_json()
    assert first["session_id"] == second["session_id"]
    assert first["run_id"] == "default"


def test_a_different_run_gets_409_while_the_owner_is_live(client):
    """A second run is refused with 409, Retry-After and the owner's name."""
    post(client, "/api/register_session", {"run_id": "exp-1"})
    response = post(client, "/api/register_session", {"run_id": "exp-2"})
    body = assert_error(response, 409, "session_conflict")
    assert body["owner_run_id"] == "exp-1"
    assert int(response.headers["Retry-After"]) >= 1
    assert_error(post(client, "/api/batch", {"run_id": "exp-2", "updates": [{"x": 1}]}), 409)
    assert client.get("/api/state").get_json()["data"] == {}


def test_takeover_after_session_timeout_starts_afresh():
    """After HUD_SESSION_TIMEOUT of silence another run takes over and the dashboard starts afresh."""
    app = hud_server.create_app({"session_timeout": 0})
    client = app.test_client()
    post(client, "/api/batch", {"run_id": "exp-1", "updates": [{"episode_reward": 1.0}]})
    response = post(client, "/api/batch", {"run_id": "exp-2", "updates": [{"global_step": 7}]})
    assert response.status_code == 200
    state = client.get("/api/state").get_json()
    assert state["run_id"] == "exp-2"
    assert state["data"] == {"global_step": 7}


def test_same_run_returning_after_timeout_keeps_its_state():
    """A run that falls silent past the timeout and comes back keeps its dashboard."""
    app = hud_server.create_app({"session_timeout": 0})
    client = app.test_client()
    post(client, "/api/batch", {"run_id": "exp-1", "updates": [{"episode_reward": 1.0}]})
    post(client, "/api/batch", {"run_id": "exp-1", "updates": [{"global_step": 2}]})
    assert client.get("/api/state").get_json()["data"] == {"episode_reward": 1.0, "global_step": 2}


def test_reset_session_lets_another_run_take_over_afresh(client):
    """/api/reset_session frees the HUD; the next run gets a fresh dashboard."""
    post(client, "/api/batch", {"run_id": "exp-1", "updates": [{"episode_reward": 1.0}]})
    assert client.post("/api/reset_session").get_json()["status"] == "reset"
    # What was shown stays visible until the next run's data arrives.
    assert client.get("/api/state").get_json()["data"] == {"episode_reward": 1.0}
    response = post(client, "/api/register_session", {"run_id": "exp-2"})
    assert response.status_code == 200
    assert client.get("/api/state").get_json()["data"] == {}


def test_unknown_session_id_is_adopted(client):
    """An update naming a session the server does not know (it restarted) is adopted, not refused."""
    response = post(client, "/api/update_training", {"session_id": "abc123", "data": {"x": 1}})
    assert response.status_code == 200
    assert response.get_json()["session_id"] == "abc123"
    assert client.get("/api/state").get_json()["session_id"] == "abc123"


def test_reset_with_bad_json_is_400(client):
    """/api/reset_session refuses a malformed body but needs none."""
    assert_error(post(client, "/api/reset_session", raw="{bad"), 400, "invalid_json")
    assert client.post("/api/reset_session").status_code == 200


# ---------------------------------------------------------------- the original HUD's client


def test_original_client_requests_work_unchanged(client):
    """The original client's exact requests: empty-body register, {session_id, data}, session_id null."""
    register = client.post("/api/register_session")  # no body, no content type
    assert register.status_code == 200
    body = register.get_json()
    assert body["status"] == "registered" and body["session_id"]
    session_id = body["session_id"]
    response = client.post(
        "/api/update_training", json={"session_id": session_id, "data": {"episode": 3, "episode_reward": 1.5}}
    )
    assert response.get_json()["status"] == "updated"
    response = client.post("/api/update_training", json={"session_id": None, "data": {"global_step": 10}})
    assert response.status_code == 200
    image = base64.b64encode(JPEG_MAGIC).decode()
    response = client.post(
        "/api/update_vision", json={"session_id": session_id, "image_base64": image, "response_time": 0.8}
    )
    assert response.status_code == 200
    assert client.post("/api/reset_session").status_code == 200
    assert client.get("/api/state").get_json()["data"] == {"episode": 3, "episode_reward": 1.5, "global_step": 10}


def test_index_is_served_with_settings(client):
    """The dashboard page renders with the title and game name from settings."""
    app = hud_server.create_app({"title": "My <HUD>", "game_name": "Pong"})
    page = app.test_client().get("/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "My &lt;HUD&gt;" in text and "Pong" in text
    assert "<script>" not in text.replace(" ", "")  # no inline scripts
