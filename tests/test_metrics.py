"""GET /metrics in the Prometheus text format, parsed with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def scrape(client) -> dict:
    """The /metrics families by name."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return {family.name: family for family in text_string_to_metric_families(response.get_data(as_text=True))}


def sample_value(family, **labels) -> float:
    """The value of the sample whose labels include ``labels``."""
    for sample in family.samples:
        if all(sample.labels.get(key) == value for key, value in labels.items()):
            return sample.value
    raise AssertionError(f"no sample {labels} in {family.name}")


def test_run_metrics_are_gauges(client):
    """Every numeric field of the run, nested as a.b, is a gauge labelled with the run id and name."""
    client.post(
        "/api/batch",
        json={
            "run_id": "exp-1",
            "updates": [
                {"global_step": 10, "episode_reward": 2.5, "loss": {"policy": 0.25}, "done": True, "location": "X"}
            ],
        },
    )
    families = scrape(client)
    run = families["hud_run_value"]
    assert sample_value(run, run_id="exp-1", metric="episode_reward") == 2.5
    assert sample_value(run, metric="loss.policy") == 0.25
    assert sample_value(run, metric="global_step") == 10
    assert sample_value(run, metric="done") == 1.0
    assert not any(sample.labels["metric"] == "location" for sample in run.samples)


def test_server_figures_are_exported(client):
    """Updates, frames, rejected requests, takeovers, dropped events and open streams are exported."""
    client.post("/api/batch", json={"updates": [{"x": 1}, {"x": 2}]})
    client.post("/api/update_training", data="{bad", content_type="application/json")
    client.post("/api/update_training", json={"data": [1]})
    families = scrape(client)
    assert sample_value(families["hud_updates_received"]) == 2
    assert sample_value(families["hud_rejected_requests"], status="400") == 2
    assert sample_value(families["hud_open_streams"]) == 0
    assert sample_value(families["hud_frames_received"]) == 0
    assert sample_value(families["hud_session_takeovers"]) == 0
    assert sample_value(families["hud_dropped_events"]) == 0
    assert sample_value(families["hud_last_update_timestamp_seconds"]) > 0
