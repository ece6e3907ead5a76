"""The examples feed a live HUD: the simulated Zelda run and the Gymnasium CartPole loop."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import threading

import pytest
import requests

from helpers import ROOT, wait_until
from hud_client import HUDClient

EXAMPLES = ROOT / "examples"
KNOWN_FIELDS = {
    "global_step",
    "episode",
    "epoch",
    "location",
    "room_id",
    "position",
    "health",
    "entities",
    "milestones",
    "exploration",
    "llm_suggestion",
    "llm_calls",
    "llm_success_rate",
    "llm_alignment",
}


def _load(name: str):
    """Import an example file as a module."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _state(url: str) -> dict:
    return requests.get(url + "/api/state", timeout=5).json()


def _run_example(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUD_")}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_simulated_run_script_fills_every_card(live_server):
    """`python examples/simulated_run.py --steps N` sends N updates with every card's field, episodes, losses and PNG frames."""
    _run_example("simulated_run", "--url", live_server.url, "--steps", "600", "--rate", "0", "--seed", "3")
    state = _state(live_server.url)
    assert state["updates"] == 600
    data = state["data"]
    assert KNOWN_FIELDS <= set(data)
    assert data["global_step"] == 600
    assert set(data["health"]) == {"current", "max"} and set(data["position"]) == {"x", "y"}
    assert set(data["entities"]) == {"npcs", "enemies", "items"}
    assert set(data["exploration"]) == {"rooms_discovered", "grid_areas", "buildings_entered"}
    assert set(data["loss"]) == {"policy", "value", "entropy"}
    assert state["frame"]["mime"] == "image/png"
    frame = requests.get(live_server.url + "/api/frame", timeout=5)
    assert frame.content.startswith(b"\x89PNG\r\n\x1a\n")
    history = requests.get(live_server.url + "/api/history", params={"metrics": "loss.policy"}, timeout=5).json()
    assert history["episodes"], "episodes of 40-160 steps end within 600 steps"
    assert all(episode["length"] >= 1 for episode in history["episodes"])
    assert history["suggestions"]
    assert len(history["metrics"]["loss.policy"]["values"]) == 600


def test_simulated_run_frames_are_valid_pngs():
    """A drawn room encodes as a 160x144 RGB PNG that an image library reads back pixel for pixel."""
    image_module = pytest.importorskip("PIL.Image")
    simulated = _load("simulated_run")
    rgb = simulated.draw_room(5, (64, 64), [("enemy", 20, 30), ("item", 100, 90)], tick=2)
    png = simulated.encode_png(rgb)
    picture = image_module.open(io.BytesIO(png))
    assert picture.size == (160, 144) and picture.mode == "RGB"
    assert picture.tobytes() == rgb


def test_simulated_run_stops_when_asked_from_another_thread(live_server):
    """run(client, rate=..., stop_event=...) runs in a thread until the event is set, then returns the updates sent."""
    simulated = _load("simulated_run")
    client = HUDClient(live_server.url, run_id="demo")
    stop = threading.Event()
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("sent", simulated.run(client, rate=200.0, stop_event=stop, seed=1))
    )
    thread.start()
    wait_until(lambda: _state(live_server.url)["updates"] >= 20, timeout=20, message="simulated updates")
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert client.flush(10)
    client.close()
    assert outcome["sent"] == _state(live_server.url)["updates"] >= 20


def test_gymnasium_cartpole_example_reports_episodes_and_frames(live_server):
    """`python examples/gymnasium_cartpole.py` runs real CartPole through HUDWrapper: episodes, steps and frames arrive."""
    pytest.importorskip("gymnasium")
    pytest.importorskip("pygame")
    pytest.importorskip("PIL")
    _run_example("gymnasium_cartpole", "--url", live_server.url, "--steps", "400", "--frame-every", "20")
    state = _state(live_server.url)
    assert state["data"]["global_step"] >= 390  # the last running update is within report_every of the end
    assert state["frame"] is not None
    frame = requests.get(live_server.url + "/api/frame", timeout=5)
    assert frame.status_code == 200 and frame.content.startswith(b"\xff\xd8\xff")  # arrays go as JPEG
    assert requests.get(live_server.url + "/api/history", timeout=5).json()["episodes"]


def test_gymnasium_cartpole_example_with_a_vector_env(live_server):
    """The CartPole example with --num-envs 3 reports every sub-env's episodes through the vector wrapper."""
    pytest.importorskip("gymnasium")
    _run_example(
        "gymnasium_cartpole", "--url", live_server.url, "--steps", "200", "--num-envs", "3", "--frame-every", "0"
    )
    history = requests.get(live_server.url + "/api/history", params={"metrics": "env_index"}, timeout=5).json()
    assert set(history["metrics"]["env_index"]["values"]) == {0, 1, 2}
