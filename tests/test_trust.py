"""Who may write, and what is refused: the token, CORS, security headers, input limits."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest
import requests

import hud_server
from helpers import wait_until
from hud_client import HUDClient

TOKEN = "s3cret-token"


def png(width: int, height: int) -> bytes:
    """A real PNG of the given size (black, 8-bit greyscale)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def secured():
    """A test client for a HUD that requires a token."""
    return hud_server.create_app({"token": TOKEN}).test_client()


WRITES = [
    ("/api/register_session", {}),
    ("/api/update_training", {"session_id": None, "data": {"x": 1}}),
    ("/api/update_vision", {"image_base64": base64.b64encode(png(2, 2)).decode()}),
    ("/api/batch", {"updates": [{"x": 1}]}),
    ("/api/reset_session", {}),
]


@pytest.mark.parametrize("path,body", WRITES)
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic " + TOKEN, TOKEN, "Bearer "])
def test_writes_without_the_right_token_are_401(secured, path, body, header):
    """With HUD_TOKEN set, every write without 'Bearer <token>' is a 401 JSON error and changes nothing."""
    headers = {"Authorization": header} if header else {}
    response = secured.post(path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert secured.get("/api/state").get_json()["updates"] == 0


@pytest.mark.parametrize("path,body", WRITES)
def test_writes_with_the_token_succeed(secured, path, body):
    """The right bearer token is accepted on every write endpoint."""
    response = secured.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.get_data(as_text=True)


def test_reads_stay_open_with_a_token(secured):
    """Viewing needs no token: the page, health, state and history answer."""
    for path in ("/", "/health", "/api/state", "/api/history"):
        assert secured.get(path).status_code == 200


def test_no_token_means_open_and_says_so(caplog):
    """Without HUD_TOKEN writes are open, and the server warns once at start."""
    with caplog.at_level("WARNING", logger="hud_server"):
        app = hud_server.create_app({})
    assert any("HUD_TOKEN is not set" in record.message for record in caplog.records)
    assert app.test_client().post("/api/batch", json={"updates": [{"x": 1}]}).status_code == 200


@pytest.mark.hud_settings(token=TOKEN)
def test_client_sends_the_token(live_server, monkeypatch):
    """HUDClient sends the token from its argument or from HUD_TOKEN."""
    with HUDClient(live_server.url, token=TOKEN) as client:
        client.update_training_data({"global_step": 1})
        assert client.flush(10)
    monkeypatch.setenv("HUD_TOKEN", TOKEN)
    with HUDClient(live_server.url) as client:
        client.update_training_data({"global_step": 2})
        assert client.flush(10)
    assert requests.get(live_server.url + "/api/state", timeout=5).json()["data"] == {"global_step": 2}


@pytest.mark.hud_settings(token=TOKEN)
def test_client_with_a_wrong_token_keeps_its_updates(live_server):
    """A wrong token is a failure the client retries (and keeps buffering), not a reason to drop data."""
    client = HUDClient(live_server.url, token="wrong", backoff_initial=0.05, backoff_max=0.1)
    try:
        client.update_training_data({"global_step": 1})
        wait_until(lambda: client.stats.failed > 0, message="a failed attempt")
        assert client.stats.dropped == 0 and client.stats.pending == 1
        assert "401" in (client.stats.last_error or "")
    finally:
        client.close(0.2)


def test_cors_is_same_origin_by_default(client):
    """Without HUD_CORS_ORIGINS no Access-Control-Allow-Origin is ever sent."""
    response = client.get("/api/state", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options(
        "/api/batch", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_allows_exactly_the_listed_origins():
    """With HUD_CORS_ORIGINS the listed origins, and only those, are allowed."""
    client = hud_server.create_app({"cors_origins": "https://a.example, https://b.example"}).test_client()
    allowed = client.get("/api/state", headers={"Origin": "https://b.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://b.example"
    other = client.get("/api/state", headers={"Origin": "https://c.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_security_headers_on_the_page(client):
    """The dashboard is served with CSP (same-origin scripts, data: images), nosniff and no framing."""
    response = client.get("/")
    csp = response.headers["Content-Security-Policy"]
    for directive in (
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


# ---------------------------------------------------------------- limits


def post_update(client, data):
    """Post one update, returning the response."""
    return client.post("/api/update_training", json={"session_id": None, "data": data})


def test_long_text_is_cut_with_a_marker():
    """Text over HUD_MAX_STRING_LENGTH is kept, cut, with a visible marker — not refused."""
    client = hud_server.create_app({"max_string_length": 100}).test_client()
    response = post_update(client, {"llm_suggestion": "a" * 250, "nested": {"t": ["b" * 101]}})
    assert response.status_code == 200
    data = client.get("/api/state").get_json()["data"]
    assert data["llm_suggestion"] == "a" * 100 + "… [cut 150 characters]"
    assert data["nested"]["t"][0] == "b" * 100 + "… [cut 1 characters]"


def test_too_many_keys_is_413():
    """An update with more keys (nested included) than HUD_MAX_UPDATE_KEYS is a 413."""
    client = hud_server.create_app({"max_update_keys": 10}).test_client()
    assert post_update(client, {f"k{i}": i for i in range(10)}).status_code == 200
    response = post_update(client, {"a": {f"k{i}": i for i in range(10)}})
    assert response.status_code == 413 and response.get_json()["error"] == "too_many_keys"


def test_too_deep_is_400():
    """An update nested deeper than HUD_MAX_DEPTH is a 400 that says so."""
    client = hud_server.create_app({"max_depth": 5}).test_client()
    assert post_update(client, {"a": {"b": {"c": {"d": [1]}}}}).status_code == 200
    response = post_update(client, {"a": {"b": {"c": {"d": [[1]]}}}})
    assert response.status_code == 400 and response.get_json()["error"] == "too_deep"


def test_very_deep_json_is_a_clear_400(client):
    """JSON nested thousands deep is refused with a 400, never a 500 or a crash."""
    body = '{"session_id": null, "data": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    response = client.post("/api/update_training", data=body, content_type="application/json")
    assert response.status_code == 400


def test_frame_pixel_dimensions_are_limited():
    """A frame wider or taller than HUD_MAX_FRAME_SIDE is a 413; one within it is kept."""
    client = hud_server.create_app({"max_frame_side": 64}).test_client()
    ok = client.post("/api/update_vision", json={"image_base64": base64.b64encode(png(64, 10)).decode()})
    assert ok.status_code == 200
    big = client.post("/api/update_vision", json={"image_base64": base64.b64encode(png(10, 65)).decode()})
    assert big.status_code == 413 and "10x65" in big.get_json()["message"]


def test_image_without_a_readable_header_is_400(client):
    """Bytes that start like a JPEG/PNG but have no readable size header are a 400."""
    for raw in (b"\xff\xd8\xff\xe0" + b"\x00" * 60, b"\x89PNG\r\n\x1a\n" + b"\x00" * 30):
        response = client.post("/api/update_vision", json={"image_base64": base64.b64encode(raw).decode()})
        assert response.status_code == 400 and response.get_json()["error"] == "invalid_image"


def test_limit_errors_are_the_one_json_shape():
    """Every limit breach answers with the standard JSON error body."""
    client = hud_server.create_app({"max_update_keys": 1, "max_depth": 2}).test_client()
    for data in ({"a": 1, "b": 2}, {"a": [[1]]}):
        body = json.loads(post_update(client, data).get_data(as_text=True))
        assert body["status"] == "error" and body["error"] and body["message"]
