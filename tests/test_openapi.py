"""docs/openapi.yaml describes the live server: schemathesis finds no 5xx and no answer the description lacks.

Schemathesis generates requests from the description and runs them against a real
waitress server twice: once with writes open (no HUD_TOKEN) and once with HUD_TOKEN
set, where it sends the right bearer token and the `ignored_auth` check also sends
each write without a token and with a wrong one, which must get 401. The server's
limits are set low so generated bodies reach the 400 and 413 answers too.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import requests
import yaml
from hypothesis import HealthCheck, settings

from helpers import NDJSON, ROOT, SSEReader, start_live_server

schemathesis = pytest.importorskip("schemathesis", reason="pip install -r requirements-dev.txt")
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

#: The NDJSON form of /api/batch is text: generated strings for it are sent as they are, UTF-8.
schemathesis.serializer.alias(["application/x-ndjson", "application/jsonl"], "text/plain")

SPEC_PATH = Path(ROOT) / "docs" / "openapi.yaml"
TOKEN = "s3cret-openapi-token"

#: Low limits, so that generated bodies reach the size refusals (400/413) as well as the 200s.
#: A short session timeout lets another generated run id take over soon (200) while one
#: posting right after the owner still gets 409.
SERVER_SETTINGS = {
    "session_timeout": 0.2,
    "max_body_bytes": 16384,
    "max_frame_bytes": 4096,
    "event_log_bytes": 1 << 20,
    "max_frame_side": 64,
    "max_batch": 4,
    "max_update_keys": 24,
    "max_depth": 4,
    "max_string_length": 64,
    "max_state_keys": 48,
    "max_state_bytes": 65536,
    "history_metrics": 32,
    "history_points": 16,
}

#: The checks every answer must pass. Left out: negative_data_rejection and
#: positive_data_acceptance (the server is lenient by design: unknown fields are kept, and a
#: valid body may still meet a 409 or a size limit), use_after_free /
#: ensure_resource_availability / object_level_authorization (no resources by id),
#: unsupported_method / missing_required_header / allow_header_conformance (the coverage
#: phase is off: it would send undeclared methods, which get Flask's empty text/html OPTIONS
#: answer), max_response_time (timing is not the point here).
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

#: Bounded and deterministic: the same cases every run.
HYPOTHESIS = settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

#: The `/stream` answer never ends, so it is described but not generated against.
STREAM = "/stream"


def _config(token: str | None) -> SchemathesisConfig:
    """Schemathesis settings: examples and fuzzing phases, positive and negative data."""
    data: dict = {
        "generation": {"mode": "all", "max-examples": 30, "deterministic": True},
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
    if token:
        data["auth"] = {"openapi": {"bearerAuth": {"bearer": token}}}
    return SchemathesisConfig.from_dict(data)


def _load_spec() -> dict:
    with open(SPEC_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _token_required(spec: dict) -> dict:
    """The description as a server with HUD_TOKEN set serves it: the bearer token is required."""
    spec = copy.deepcopy(spec)
    for item in spec["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and "security" in operation:
                operation["security"] = [entry for entry in operation["security"] if entry]
    return spec


SPEC = _load_spec()
#: Every operation, /stream included, for the hand-made requests below.
FULL_SCHEMA = schemathesis.openapi.from_dict(SPEC, config=_config(None))
FULL_TOKEN_SCHEMA = schemathesis.openapi.from_dict(_token_required(SPEC), config=_config(TOKEN))
OPEN_SCHEMA = schemathesis.openapi.from_dict(SPEC, config=_config(None)).exclude(path=STREAM)
TOKEN_SCHEMA = schemathesis.openapi.from_dict(_token_required(SPEC), config=_config(TOKEN)).exclude(path=STREAM)


@pytest.fixture(scope="module")
def open_server():
    """A live HUD without HUD_TOKEN (writes are open)."""
    server = start_live_server(dict(SERVER_SETTINGS))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_server():
    """A live HUD with HUD_TOKEN set."""
    server = start_live_server({**SERVER_SETTINGS, "token": TOKEN})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_http(open_server):
    """One keep-alive HTTP session to ``open_server`` (closed before the server stops)."""
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def token_http(token_server):
    """One keep-alive HTTP session to ``token_server`` (closed before the server stops)."""
    with requests.Session() as session:
        yield session


@OPEN_SCHEMA.parametrize()
@HYPOTHESIS
def test_open_server_matches_the_description(case, open_server, open_http):
    """Without HUD_TOKEN every generated request gets a documented, non-5xx answer of the documented shape."""
    case.call_and_validate(base_url=open_server.url, session=open_http, checks=CHECKS)


@TOKEN_SCHEMA.parametrize()
@HYPOTHESIS
def test_token_server_matches_the_description(case, token_server, token_http):
    """With HUD_TOKEN set, requests with the token get documented answers, and writes without it get 401."""
    response = case.call_and_validate(base_url=token_server.url, session=token_http, checks=[*CHECKS, ignored_auth])
    if case.method == "POST" and case.meta.generation.mode.is_positive:
        # Schemathesis sent the configured token, so its 200 (not 401) answers were checked too.
        assert response.request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert response.status_code != 401


PNG_2X2 = SPEC["paths"]["/api/update_vision"]["post"]["requestBody"]["content"]["application/json"]["example"][
    "image_base64"
]
WRITES = [path for path, item in SPEC["paths"].items() if "post" in item]


def _component(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one of the description's component schemas."""
    root = {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}
    return jsonschema.Draft202012Validator(root)


@pytest.fixture
def fresh_server():
    """A live HUD that has seen nothing yet, with room for one stream only."""
    server = start_live_server({**SERVER_SETTINGS, "max_streams": 1})
    yield server
    server.stop()


def test_description_is_valid_openapi():
    """docs/openapi.yaml is an OpenAPI 3.1 document that describes every route of the app."""
    assert SPEC["openapi"].startswith("3.1.")
    FULL_SCHEMA.validate()
    import hud_server

    app = hud_server.create_app({})
    routes = {
        (rule.rule, method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    described = {(path, method) for path, item in SPEC["paths"].items() for method in item}
    assert described == routes


def test_frame_before_the_first_one_is_the_documented_404(fresh_server):
    """GET /api/frame on a new server answers the documented 404 (no_frame), then the image once one is posted."""
    operation = FULL_SCHEMA["/api/frame"]["GET"]
    response = requests.get(fresh_server.url + "/api/frame", timeout=10)
    assert response.status_code == 404
    operation.validate_response(response)
    posted = requests.post(fresh_server.url + "/api/update_vision", json={"image_base64": PNG_2X2}, timeout=10)
    assert posted.status_code == 200
    response = requests.get(fresh_server.url + "/api/frame", timeout=10)
    assert (response.status_code, response.headers["Content-Type"]) == (200, "image/png")
    operation.validate_response(response)


def test_stream_matches_the_description(fresh_server):
    """/stream answers text/event-stream whose events match the documented data, and past the cap the 503."""
    url = fresh_server.url
    operation = FULL_SCHEMA["/stream"]["GET"]
    documented = SPEC["paths"]["/stream"]["get"]["responses"]
    reader = SSEReader(url + "/stream")
    try:
        assert reader.response.status_code == 200
        assert reader.response.headers["Content-Type"].split(";")[0] in documented["200"]["content"]
        assert reader.response.headers["Cache-Control"] == "no-cache"
        _component("TrainingSnapshot").validate(_json_data(reader.next_named(), "training_update"))
        update = {"global_step": 3, "episode_reward": float("nan"), "loss": {"policy": 0.5}}
        body = json.dumps({"updates": [update], "frame": {"image_base64": PNG_2X2}})  # NaN: not strict JSON
        posted = requests.post(url + "/api/batch", data=body, timeout=10)
        assert posted.status_code == 200
        _component("TrainingEvent").validate(_json_data(reader.next_named(), "training_update"))
        _component("FrameEvent").validate(_json_data(reader.next_named(), "vision_update"))

        batch = FULL_SCHEMA["/api/batch"]["POST"]
        example = SPEC["paths"]["/api/batch"]["post"]["requestBody"]["content"][NDJSON]["example"]
        posted = requests.post(url + "/api/batch", data=example, headers={"Content-Type": NDJSON}, timeout=10)
        assert posted.status_code == 200 and posted.json()["applied"] == 2
        batch.validate_response(posted)
        event = _json_data(reader.next_named(), "training_update")
        _component("TrainingEvent").validate(event)
        assert event["batch"] == [json.loads(line) for line in example.splitlines()[1:]]

        refused = requests.get(url + "/stream", timeout=10)
        assert refused.status_code == 503
        operation.validate_response(refused)
    finally:
        reader.close()


def _json_data(event: dict, name: str):
    assert event["event"] == name
    return json.loads(event["data"])


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic czNjcmV0"])
def test_writes_without_the_token_get_the_documented_401(token_server, authorization):
    """With HUD_TOKEN set, every POST without the right bearer token gets the documented 401 with WWW-Authenticate."""
    headers = {} if authorization is None else {"Authorization": authorization}
    for path in WRITES:
        response = requests.post(token_server.url + path, json={}, headers=headers, timeout=10)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="hud"'
        FULL_TOKEN_SCHEMA[path]["POST"].validate_response(response)


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/api/nothing", 404), ("PUT", "/api/state", 405)])
def test_unknown_paths_and_methods_answer_the_documented_error_shape(open_server, method, path, status):
    """A path the description lacks answers 404 and a method it lacks 405, in the documented error shape."""
    response = requests.request(method, open_server.url + path, timeout=10)
    assert response.status_code == status
    _component("Error").validate(response.json())


@pytest.fixture(scope="module")
def metrics_answers():
    """/metrics answers (status, Content-Type, text) before and after a key with a lone surrogate was posted.

    Taken on a server of its own, stopped before any assertion, so the poisoned /metrics
    reaches no other test.
    """
    server = start_live_server(dict(SERVER_SETTINGS))
    try:
        with requests.Session() as http:
            http.headers["Connection"] = "close"  # no idle keep-alive channel left for stop() to wait on
            before = http.get(server.url + "/metrics", timeout=10)
            posted = http.post(server.url + "/api/update_training", data='{"data": {"\\ud800": 1}}', timeout=10)
            after = http.get(server.url + "/metrics", timeout=10)
    finally:
        server.stop()
    return {
        name: (answer.status_code, answer.headers["Content-Type"], answer.text)
        for name, answer in {"before": before, "posted": posted, "after": after}.items()
    }


def test_metrics_survive_a_key_with_a_lone_surrogate(metrics_answers):
    """A posted key holding an escaped lone surrogate (valid JSON, accepted with 200) does not make /metrics answer 500."""
    assert metrics_answers["posted"][0] == 200
    assert metrics_answers["after"][0] == 200, metrics_answers["after"]


def test_metrics_content_type_has_each_parameter_once(metrics_answers):
    """/metrics names each Content-Type parameter once (Go's mime.ParseMediaType, used by Prometheus, refuses repeats)."""
    status, content_type, _ = metrics_answers["before"]
    assert status == 200
    names = [part.split("=")[0].strip().lower() for part in content_type.split(";")[1:]]
    assert len(names) == len(set(names)), content_type
