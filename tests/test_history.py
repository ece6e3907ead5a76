"""Metric history: every numeric field recorded against its step, within a bounded budget."""

from __future__ import annotations

import json
from array import array

import pytest

import hud_server
from hud_server import MetricHistory, SeriesHistory, batch_columns


def fill(series: SeriesHistory, count: int, chunk: int = 1000) -> None:
    """Offer ``count`` points with step i and value 2i, ``chunk`` points per extend()."""
    for start in range(0, count, chunk):
        steps = range(start, min(start + chunk, count))
        series.extend(array("d", steps), array("d", [1000.0 + i for i in steps]), array("d", [2.0 * i for i in steps]))


@pytest.mark.parametrize("chunk", [1, 7, 1000])
@pytest.mark.parametrize("budget,count", [(16, 10), (16, 1000), (100, 12345), (2000, 200_000)])
def test_budget_respected_first_and_latest_kept_order_kept(budget, count, chunk):
    """However many points arrive, in whatever chunks, at most the budget are kept, with the first and latest, in order."""
    series = SeriesHistory(budget)
    fill(series, count, chunk)
    steps, walls, values = series.points()
    assert len(steps) <= budget
    assert steps[0] == 0 and steps[-1] == count - 1
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert values == [2.0 * step for step in steps]
    assert walls == [1000.0 + step for step in steps]


def test_recent_points_kept_at_full_resolution():
    """The most recent half of the budget is every point, with no gap."""
    series = SeriesHistory(100)
    fill(series, 10_000)
    steps = series.points()[0]
    assert steps[-50:] == list(range(9950, 10_000))


def test_older_part_spans_the_whole_run_evenly():
    """The reduced older part still covers the whole run at an even stride (the run's shape)."""
    series = SeriesHistory(100)
    fill(series, 100_000)
    older = series.points()[0][:-50]
    gaps = {b - a for a, b in zip(older, older[1:], strict=False)}
    assert len(gaps) == 1  # one stride
    assert older[-1] > 100_000 - 2 * gaps.pop()  # reaches up to the recent part


def test_small_series_is_exact():
    """Below the budget every point is kept exactly once."""
    series = SeriesHistory(100)
    fill(series, 30)
    assert series.points()[0] == list(range(30))


def test_since_filters_by_step():
    """points(since) returns only points at or after that step."""
    series = SeriesHistory(100)
    fill(series, 40)
    assert series.points(since=35)[0] == [35, 36, 37, 38, 39]


def test_values_keep_seven_significant_digits(client):
    """History values are exact to 7 significant digits, and fractional steps stay fractional."""
    post_batch(client, [{"global_step": 0.5, "v": 123.456789123}, {"global_step": 1.25, "v": -1e-12}])
    series = client.get("/api/history").get_json()["metrics"]["v"]
    assert series["steps"] == [0.5, 1.25]
    assert series["values"] == [123.4568, -1e-12]


def test_nested_numbers_flattened_and_non_numbers_skipped():
    """Nested numeric fields become a.b metrics; booleans, strings, lists and null are not metrics."""
    history = MetricHistory(100, 50)
    update = {"loss": {"policy": 0.5, "value": 1}, "done": True, "name": "x", "xs": [1, 2], "r": None, "big": 10**20}
    history.record([update], batch_columns([update]), [3], 0.0)
    assert sorted(history.series) == ["big", "loss.policy", "loss.value"]
    assert json.loads(history.export_json(["loss.policy"]))["loss.policy"] == {"steps": [3], "values": [0.5]}


def test_metric_count_is_bounded():
    """No more than HUD_HISTORY_METRICS metrics are recorded."""
    history = MetricHistory(100, 3)
    history.record([{f"m{i}": i for i in range(10)}], batch_columns([{f"m{i}": i for i in range(10)}]), [0], 0.0)
    assert list(history.series) == ["m0", "m1", "m2"]
    history.record([{"m9": 9, "m1": 1}], batch_columns([{"m9": 9, "m1": 1}]), [1], 1.0)
    assert list(history.series) == ["m0", "m1", "m2"] and history.series["m1"].points()[0] == [0, 1]


def post_batch(client, updates, run_id=None):
    """Post a batch through the test client."""
    response = client.post("/api/batch", json={"run_id": run_id, "updates": updates})
    assert response.status_code == 200, response.get_data(as_text=True)


def test_api_history_returns_every_metric_against_global_step(client):
    """GET /api/history returns each numeric field's steps and values in one request."""
    post_batch(
        client,
        [{"global_step": step, "episode_reward": step / 10, "stats": {"len": step * 2}} for step in range(0, 500, 5)],
    )
    body = client.get("/api/history?times=1").get_json()
    assert set(body["metrics"]) == {"global_step", "episode_reward", "stats.len"}
    reward = body["metrics"]["episode_reward"]
    assert reward["steps"] == list(range(0, 500, 5))
    assert reward["values"] == [step / 10 for step in range(0, 500, 5)]
    assert len(reward["times"]) == 100
    assert "times" not in client.get("/api/history").get_json()["metrics"]["episode_reward"]
    assert body["updates"] == 100


def test_api_history_chooses_metrics_and_since(client):
    """?metrics= and ?since= narrow the answer."""
    post_batch(client, [{"global_step": step, "a": step, "b": -step} for step in range(10)])
    body = client.get("/api/history?metrics=a,missing&since=7").get_json()
    assert list(body["metrics"]) == ["a"]
    assert body["metrics"]["a"]["steps"] == [7, 8, 9]


def test_api_history_metric_names_one_metric_whole(client):
    """?metric= takes a name whole, commas and all, and may repeat; ?metrics=, asks for no metric at all."""
    post_batch(client, [{"global_step": step, "reward (a,b)": step, "a": 1, "b": 2, "c": 3} for step in range(5)])
    body = client.get("/api/history", query_string=[("metric", "reward (a,b)"), ("metric", "c")]).get_json()
    assert list(body["metrics"]) == ["reward (a,b)", "c"]
    assert body["metrics"]["reward (a,b)"]["values"] == [0, 1, 2, 3, 4]
    both = client.get("/api/history", query_string=[("metric", "c"), ("metrics", "a")]).get_json()
    assert sorted(both["metrics"]) == ["a", "c"]
    assert client.get("/api/history?metrics=,").get_json()["metrics"] == {}


def test_history_leaves_out_what_a_resumed_run_redid(client):
    """Steps going back (training resumed from a checkpoint) supersede the old run's points from there on."""
    post_batch(client, [{"global_step": step, "loss": 1.0} for step in range(10)])
    post_batch(client, [{"global_step": step, "loss": 2.0} for step in range(6, 12)])
    loss = client.get("/api/history?metrics=loss").get_json()["metrics"]["loss"]
    assert loss["steps"] == list(range(12))
    assert loss["values"] == [1.0] * 6 + [2.0] * 6
    since = client.get("/api/history?metrics=loss&since=5").get_json()["metrics"]["loss"]
    assert since["steps"] == list(range(5, 12)) and since["values"] == [1.0] + [2.0] * 6
    post_batch(client, [{"global_step": 3, "loss": 3.0}, {"loss": 4.0}])  # no step: the latest one, 3 again
    loss = client.get("/api/history?metrics=loss").get_json()["metrics"]["loss"]
    assert loss["steps"] == [0, 1, 2, 3, 3] and loss["values"] == [1.0, 1.0, 1.0, 3.0, 4.0]


def test_api_history_bad_since_is_400(client):
    """A non-numeric since is a 400 JSON error."""
    response = client.get("/api/history?since=yesterday")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_query"


def test_updates_without_step_use_latest_step_or_arrival_order(client):
    """An update with no global_step is recorded at the run's latest step, or arrival order if none."""
    post_batch(client, [{"x": 1}, {"x": 2}])
    assert client.get("/api/history").get_json()["metrics"]["x"]["steps"] == [1, 2]
    post_batch(client, [{"global_step": 100, "y": 1}, {"y": 2}])
    assert client.get("/api/history").get_json()["metrics"]["y"]["steps"] == [100, 100]


def test_non_finite_values_are_not_points(client):
    """NaN and infinity are stored as null in the state and leave no point in the history."""
    raw = '{"updates": [{"global_step": 1, "r": 1.0}, {"global_step": 2, "r": NaN}, {"global_step": 3, "r": Infinity}]}'
    client.post("/api/batch", data=raw, content_type="application/json")
    text = client.get("/api/history").get_data(as_text=True)
    body = json.loads(text, parse_constant=lambda c: pytest.fail(c))
    assert body["metrics"]["r"]["steps"] == [1]


def test_takeover_starts_a_new_history():
    """A new run owning the HUD starts with an empty history."""
    app = hud_server.create_app({"session_timeout": 0})
    client = app.test_client()
    post_batch(client, [{"global_step": 1, "episode_reward": 5}], run_id="exp-1")
    post_batch(client, [{"global_step": 1, "loss": 0.1}], run_id="exp-2")
    assert list(client.get("/api/history").get_json()["metrics"]) == ["global_step", "loss"]


def test_metrics_kept_under_the_cap_do_not_depend_on_batching():
    """Past HUD_HISTORY_METRICS the metrics kept are those that had a number first, however the updates were batched."""
    updates = [{"a": None, "b": 1}, {"a": 2, "c": 3}]
    kept = []
    for batches in ([updates], [[update] for update in updates]):
        client = hud_server.create_app({"history_metrics": 1}).test_client()
        for batch in batches:
            post_batch(client, batch)
        kept.append(list(client.get("/api/history").get_json()["metrics"]))
    assert kept == [["b"], ["b"]]


def test_a_dotted_key_and_a_nested_field_of_one_name_keep_arrival_order(client):
    """A metric sent both as key "a.b" and as a→b gets its points in the order they arrived."""
    post_batch(client, [{"global_step": 1, "a.b": 1}, {"global_step": 2, "a": {"b": 2}}, {"global_step": 3, "a.b": 3}])
    assert client.get("/api/history").get_json()["metrics"]["a.b"] == {"steps": [1, 2, 3], "values": [1, 2, 3]}


def test_live_events_carry_the_step_of_their_points(live_server):
    """Each live training_update says which step its points belong to (the chart's x)."""
    import requests

    from helpers import SSEReader

    reader = SSEReader(live_server.url + "/stream")
    try:
        reader.next_named()
        requests.post(
            live_server.url + "/api/batch", json={"updates": [{"global_step": 9, "r": 1}, {"r": 2}]}, timeout=10
        ).raise_for_status()
        event = json.loads(reader.next_named()["data"])  # one event for the POST
        assert event["steps"] == [9, 9] and event["batch"] == [{"global_step": 9, "r": 1}, {"r": 2}]
        requests.post(live_server.url + "/api/batch", json={"updates": [{"r": 3}]}, timeout=10).raise_for_status()
        assert json.loads(reader.next_named()["data"])["steps"] == [9]  # the run's latest step
    finally:
        reader.close()


def test_recent_episodes_and_suggestions_are_listed(client):
    """/api/history lists ended episodes (updates with episode_reward) and distinct LLM suggestions."""
    post_batch(
        client,
        [
            {"global_step": 10, "episode": 1, "episode_length": 50, "llm_suggestion": "go north"},
            {"global_step": 20, "episode_reward": 3.5},
            {"global_step": 30, "llm_suggestion": "go north"},
            {
                "global_step": 40,
                "llm_suggestion": "<b>open the chest</b>",
                "episode": 2,
                "episode_length": 70,
                "episode_reward": -1.0,
            },
        ],
    )
    body = client.get("/api/history").get_json()
    assert [(e["episode"], e["reward"], e["length"], e["step"]) for e in body["episodes"]] == [
        (1, 3.5, 50, 20),
        (2, -1.0, 70, 40),
    ]
    assert [(s["text"], s["step"]) for s in body["suggestions"]] == [("go north", 10), ("<b>open the chest</b>", 40)]
    assert all(isinstance(item["ts"], float) for item in body["episodes"] + body["suggestions"])


def test_recent_lists_are_bounded():
    """At most HUD_RECENT_ITEMS episodes and suggestions are kept."""
    app = hud_server.create_app({"recent_items": 3})
    client = app.test_client()
    post_batch(client, [{"episode_reward": i, "llm_suggestion": f"s{i}"} for i in range(10)])
    body = client.get("/api/history").get_json()
    assert [e["reward"] for e in body["episodes"]] == [7, 8, 9]
    assert [s["text"] for s in body["suggestions"]] == ["s7", "s8", "s9"]


def test_integers_beyond_float_range_are_not_points(client):
    """A huge integer is kept in the state but is no chart point, and /api/history still answers."""
    client.post(
        "/api/batch", data='{"updates": [{"big": ' + "9" * 400 + ', "ok": 1}]}', content_type="application/json"
    )
    response = client.get("/api/history")
    assert response.status_code == 200
    assert list(response.get_json()["metrics"]) == ["ok"]
