"""HUD_DATA_DIR: the state, history, frame and session survive kill -9, SIGTERM and a corrupt file."""

from __future__ import annotations

import base64
import signal
import sqlite3
import time

import requests
from test_trust import png

import hud_server
from helpers import start_server_process, wait_until
from hud_client import HUDClient

FRAME = base64.b64encode(png(4, 3)).decode()


def stored_updates(data_dir) -> int:
    """How many updates the store file says it holds (0 before its first write)."""
    path = data_dir / hud_server.Store.FILENAME
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'updates'").fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def post_run(url: str, steps: range, run_id: str = "exp-1") -> None:
    """Post one update per step (reward and a nested loss) and a frame, in batches of 100."""
    for start in range(steps.start, steps.stop, 100):
        updates = [
            {
                "global_step": step,
                "episode_reward": step / 10,
                "loss": {"policy": 1 / (step + 1)},
                "llm_suggestion": f"advice {step // 100}",
            }
            for step in range(start, min(start + 100, steps.stop))
        ]
        response = requests.post(
            url + "/api/batch",
            json={"run_id": run_id, "updates": updates, "frame": {"image_base64": FRAME, "response_time": 0.5}},
            timeout=10,
        )
        response.raise_for_status()


def test_kill_9_then_restart_shows_the_same_dashboard(tmp_path):
    """After kill -9 and a restart on the same data dir: state, history, frame and session are back."""
    env = {"HUD_DATA_DIR": str(tmp_path)}
    server = start_server_process(env=env)
    try:
        post_run(server.url, range(300))
        before = requests.get(server.url + "/api/state", timeout=5).json()
        history_before = requests.get(server.url + "/api/history", timeout=5).json()
        wait_until(lambda: stored_updates(tmp_path) == 300, timeout=10, message="the store to hold 300 updates")
    finally:
        server.kill()
    restarted = start_server_process(port=server.port, env=env)
    try:
        after = requests.get(restarted.url + "/api/state", timeout=5).json()
        assert after["boot_id"] != before["boot_id"]
        for key in ("data", "updates", "frames", "run_id", "session_id", "last_update"):
            assert after[key] == before[key], key
        assert after["frame"] == before["frame"]
        assert requests.get(restarted.url + "/api/frame", timeout=5).content == base64.b64decode(FRAME)
        history_after = requests.get(restarted.url + "/api/history", timeout=5).json()
        assert history_after["metrics"] == history_before["metrics"]
        assert history_after["metrics"]["episode_reward"]["steps"] == list(range(300))
        assert history_after["suggestions"] == history_before["suggestions"]
        # The run that owned the HUD still does: another run is refused, the owner carries on.
        other = requests.post(restarted.url + "/api/register_session", json={"run_id": "exp-2"}, timeout=5)
        assert other.status_code == 409
        post_run(restarted.url, range(300, 310))
        assert requests.get(restarted.url + "/api/state", timeout=5).json()["updates"] == 310
    finally:
        restarted.stop()


def test_sigterm_writes_the_store_and_exits_promptly(tmp_path):
    """SIGTERM writes the last changes to the store and exits within a few seconds."""
    env = {"HUD_DATA_DIR": str(tmp_path), "HUD_STORE_INTERVAL": "60"}  # only the exit can write in time
    server = start_server_process(env=env)
    post_run(server.url, range(50))
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(10) == 0
    assert time.monotonic() - started < 5
    assert stored_updates(tmp_path) == 50
    restarted = start_server_process(env=env)
    try:
        assert requests.get(restarted.url + "/api/state", timeout=5).json()["updates"] == 50
    finally:
        restarted.stop()


def test_corrupt_store_is_moved_aside_and_the_server_starts_empty(tmp_path):
    """An unreadable store is moved aside with a clear log line; the server starts empty, no crash loop."""
    (tmp_path / hud_server.Store.FILENAME).write_bytes(b"this is not a database" * 100)
    server = start_server_process(env={"HUD_DATA_DIR": str(tmp_path)})
    try:
        state = requests.get(server.url + "/api/state", timeout=5).json()
        assert state["data"] == {} and state["updates"] == 0
        assert any("cannot be read" in line for line in server.output)
        assert list(tmp_path.glob(hud_server.Store.FILENAME + ".unreadable-*"))
        post_run(server.url, range(10))
        wait_until(lambda: stored_updates(tmp_path) == 10, message="the new store to be written")
    finally:
        server.stop()


def test_takeover_replaces_the_stored_history(tmp_path):
    """When a new run takes over, the store forgets the old run's metrics."""
    app = hud_server.create_app({"data_dir": str(tmp_path), "session_timeout": 0})
    client = app.test_client()
    client.post("/api/batch", json={"run_id": "exp-1", "updates": [{"global_step": 1, "old_metric": 1}]})
    hud = app.extensions["hud"]
    hud.store.write(hud)
    client.post("/api/batch", json={"run_id": "exp-2", "updates": [{"global_step": 1, "loss": 1}]})
    hud.store.close(hud)
    again = hud_server.create_app({"data_dir": str(tmp_path)})
    history = again.test_client().get("/api/history").get_json()
    assert sorted(history["metrics"]) == ["global_step", "loss"]
    assert history["run_id"] == "exp-2"
    again.extensions["hud"].store.close(again.extensions["hud"])


def test_restored_history_keeps_its_budget_and_shape(tmp_path):
    """A long history is restored with the same points, and keeps reducing correctly afterwards."""
    app = hud_server.create_app({"data_dir": str(tmp_path), "history_points": 64})
    client = app.test_client()
    client.post("/api/batch", json={"updates": [{"global_step": step, "r": step} for step in range(1000)]})
    hud = app.extensions["hud"]
    before = client.get("/api/history?metrics=r").get_json()["metrics"]["r"]
    hud.store.close(hud)
    again = hud_server.create_app({"data_dir": str(tmp_path), "history_points": 64})
    client = again.test_client()
    assert client.get("/api/history?metrics=r").get_json()["metrics"]["r"] == before
    for start in (1000, 2000):
        response = client.post(
            "/api/batch", json={"updates": [{"global_step": step, "r": step} for step in range(start, start + 1000)]}
        )
        assert response.status_code == 200
    steps = client.get("/api/history?metrics=r").get_json()["metrics"]["r"]["steps"]
    assert len(steps) <= 64 and steps[0] == 0 and steps[-1] == 2999 and steps == sorted(steps)
    again.extensions["hud"].store.close(again.extensions["hud"])


def test_client_survives_a_restart_with_a_data_dir(tmp_path):
    """A client mid-run keeps its buffered updates across a server restart that restores from disk."""
    env = {"HUD_DATA_DIR": str(tmp_path)}
    server = start_server_process(env=env)
    client = HUDClient(server.url, run_id="exp-1", backoff_initial=0.05, backoff_max=0.2)
    try:
        for step in range(100):
            client.update_training_data({"global_step": step, "episode_reward": float(step)})
        assert client.flush(10)
        wait_until(lambda: stored_updates(tmp_path) == 100, message="the store to hold 100 updates")
        server.kill()
        for step in range(100, 150):  # buffered while the server is down
            client.update_training_data({"global_step": step, "episode_reward": float(step)})
        restarted = start_server_process(port=server.port, env=env)
        try:
            assert client.flush(20)
            history = requests.get(restarted.url + "/api/history?metrics=episode_reward", timeout=5).json()
            steps = history["metrics"]["episode_reward"]["steps"]
            assert set(range(150)) <= set(steps)
            assert requests.get(restarted.url + "/api/state", timeout=5).json()["data"]["global_step"] == 149
        finally:
            restarted.stop()
    finally:
        client.close(1)
        server.kill()
