"""HUDWrapper on real Gymnasium CartPole, single and vector envs, reporting to a real HUD server."""

from __future__ import annotations

import numpy as np
import pytest
import requests

gymnasium = pytest.importorskip("gymnasium")
pytest.importorskip("pygame", reason="CartPole renders rgb_array frames with pygame")
pytest.importorskip("PIL", reason="frames given as arrays are JPEG-encoded with Pillow")

from helpers import posted_body  # noqa: E402
from hud_client import HUDClient  # noqa: E402
from hud_integrations.gymnasium import HUDVectorWrapper, HUDWrapper  # noqa: E402


def _history(url: str, *metrics: str) -> dict:
    reply = requests.get(f"{url}/api/history", params={"metrics": ",".join(metrics)}, timeout=5)
    reply.raise_for_status()
    return reply.json()


def _state(url: str) -> dict:
    reply = requests.get(f"{url}/api/state", timeout=5)
    reply.raise_for_status()
    return reply.json()


def _run_single(env, steps: int, seed: int = 0) -> tuple[list[float], list[int]]:
    """Random actions for ``steps`` steps; return each finished episode's (reward, length)."""
    rewards, lengths = [], []
    env.reset(seed=seed)
    env.action_space.seed(seed)
    total, length = 0.0, 0
    for _ in range(steps):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        total += reward
        length += 1
        if terminated or truncated:
            rewards.append(total)
            lengths.append(length)
            total, length = 0.0, 0
            env.reset()
    return rewards, lengths


def test_single_env_reports_episodes_steps_and_frames(live_server):
    """A wrapped CartPole sends every finished episode's reward and length, the step count, and rendered frames."""
    client = HUDClient(live_server.url, run_id="gym-single")
    env = HUDWrapper(gymnasium.make("CartPole-v1", render_mode="rgb_array"), client, frame_every=5, report_every=3)
    assert type(env) is HUDWrapper
    rewards, lengths = _run_single(env, 201)
    assert rewards, "random CartPole episodes end within 201 steps"
    assert client.flush(10)
    env.close()
    client.close()

    history = _history(live_server.url, "episode_reward", "running_episode_length")
    episodes = history["episodes"]
    assert [episode["reward"] for episode in episodes] == rewards
    assert [episode["length"] for episode in episodes] == lengths
    assert [episode["episode"] for episode in episodes] == list(range(1, len(rewards) + 1))
    assert history["metrics"]["running_episode_length"]["values"]  # running updates arrived too
    state = _state(live_server.url)
    assert state["data"]["global_step"] == 201  # a multiple of report_every: the last step was reported
    assert state["frame"] is not None and client.stats.frames_sent >= 1
    frame = requests.get(live_server.url + "/api/frame", timeout=5)
    assert frame.status_code == 200 and frame.headers["Content-Type"].startswith("image/")


def test_single_env_sends_chosen_info_keys_and_no_frames_without_rgb_array(live_server):
    """Named info keys are sent with running updates; an env that does not render rgb_array sends no frames."""

    class Lives(gymnasium.Wrapper):
        def step(self, action):
            observation, reward, terminated, truncated, info = self.env.step(action)
            return observation, reward, terminated, truncated, {**info, "lives": 3, "room_id": "A1"}

    client = HUDClient(live_server.url, run_id="gym-info")
    env = HUDWrapper(
        Lives(gymnasium.make("CartPole-v1")),
        client,
        frame_every=1,
        report_every=1,
        info_keys=("lives", "room_id", "missing"),
    )
    _run_single(env, 20)
    assert client.flush(10)
    env.close()
    client.close()
    data = _state(live_server.url)["data"]
    assert data["lives"] == 3 and data["room_id"] == "A1" and "missing" not in data
    assert client.stats.frames_sent == 0


@pytest.mark.parametrize("autoreset", ["NEXT_STEP", "SAME_STEP"])
def test_vector_env_reports_every_sub_env_episode(live_server, autoreset):
    """make_vec CartPole (2 sub-envs) reports each sub-env's episodes exactly, in both autoreset modes, and frames of one."""
    mode = gymnasium.vector.AutoresetMode[autoreset]
    vector = gymnasium.make_vec(
        "CartPole-v1",
        num_envs=2,
        vectorization_mode="sync",
        render_mode="rgb_array",
        vector_kwargs={"autoreset_mode": mode},
    )
    client = HUDClient(live_server.url, run_id=f"gym-vec-{autoreset.lower()}")
    env = HUDWrapper(vector, client, frame_every=7, env_index=1)
    assert isinstance(env, HUDVectorWrapper)

    # Our own bookkeeping, from what the vector env returns, to compare with what the HUD got.
    expected = {0: [], 1: []}
    totals, lengths = np.zeros(2), np.zeros(2, dtype=int)
    resetting = np.zeros(2, dtype=bool)
    env.reset(seed=1)
    env.action_space.seed(1)
    transitions = 0
    for _ in range(150):
        _, rewards, terminations, truncations, _ = env.step(env.action_space.sample())
        live = ~resetting
        totals[live] += rewards[live]
        lengths[live] += 1
        transitions += int(live.sum())
        done = (terminations | truncations) & live
        for i in np.flatnonzero(done):
            expected[int(i)].append((float(totals[i]), int(lengths[i])))
            totals[i], lengths[i] = 0, 0
        resetting = done if autoreset == "NEXT_STEP" else np.zeros(2, dtype=bool)
    assert client.flush(10)
    env.close()
    client.close()

    # Each finished-episode update carries env_index; the HUD's history keeps both in arrival order.
    metrics = _history(live_server.url, "episode_reward", "episode_length", "env_index")["metrics"]
    got = {0: [], 1: []}
    for index, reward, length in zip(
        metrics["env_index"]["values"],
        metrics["episode_reward"]["values"],
        metrics["episode_length"]["values"],
        strict=True,
    ):
        got[index].append((reward, length))
    assert got == expected
    assert all(expected.values()), "both sub-envs finish episodes in 150 random steps"
    assert _state(live_server.url)["data"]["global_step"] == transitions
    assert client.stats.frames_sent >= 1


def test_vector_env_with_autoreset_disabled_restarts_episodes_on_masked_reset(live_server):
    """With autoreset disabled, a sub-env's episode restarts when reset(options={"reset_mask": ...}) names it."""
    mode = gymnasium.vector.AutoresetMode.DISABLED
    vector = gymnasium.make_vec(
        "CartPole-v1", num_envs=2, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}
    )
    client = HUDClient(live_server.url, run_id="gym-vec-disabled")
    env = HUDWrapper(vector, client, frame_every=0, report_every=0)
    env.reset(seed=2)
    env.action_space.seed(2)
    finished = 0
    while finished < 4:
        _, _, terminations, truncations, _ = env.step(env.action_space.sample())
        done = terminations | truncations
        if done.any():
            finished += int(done.sum())
            env.reset(options={"reset_mask": done})
    assert client.flush(10)
    env.close()
    client.close()
    episodes = _history(live_server.url, "episode_reward")["episodes"]
    assert len(episodes) == finished
    assert all(episode["length"] >= 8 for episode in episodes)  # CartPole never falls in fewer steps


def test_wrapper_without_client_uses_hud_url_and_closes_its_client(live_server, monkeypatch):
    """client=None builds HUDClient() from HUD_URL / HUD_RUN_ID, and env.close() sends what is buffered."""
    monkeypatch.setenv("HUD_URL", live_server.url)
    monkeypatch.setenv("HUD_RUN_ID", "gym-from-env")
    env = HUDWrapper(gymnasium.make("CartPole-v1"), frame_every=0)
    assert env.hud.client.enabled and env.hud.client.run_id == "gym-from-env"
    _run_single(env, 60)
    env.close()  # closes the client it made, which flushes first
    state = _state(live_server.url)
    assert state["run_id"] == "gym-from-env" and state["data"]["global_step"] == 60


class RecordingTransport:
    """A requests-like transport that records each POST body and answers as the HUD does."""

    def __init__(self):
        self.bodies = []

    def post(self, url, data=None, headers=None, timeout=None):
        """Record the body (an NDJSON batch as its header plus ``updates``) and answer 200."""
        self.bodies.append(posted_body(data, headers))
        return RecordedReply()


class RecordedReply:
    """The HUD's answer to an accepted POST."""

    status_code = 200
    headers = {}

    def json(self):
        """The body of an accepted batch."""
        return {"status": "updated", "session_id": "s-1", "boot_id": "boot-1", "applied": 1}


def test_async_vector_env_sends_the_designated_sub_env_frames():
    """An AsyncVectorEnv (sub-envs in worker processes) reports its episodes and renders the chosen sub-env's frames."""
    transport = RecordingTransport()
    client = HUDClient("http://hud.invalid", run_id="gym-async", session=transport)
    vector = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="async", render_mode="rgb_array")
    env = HUDWrapper(vector, client, frame_every=5, report_every=5, env_index=1)
    env.reset(seed=3)
    env.action_space.seed(3)
    for _ in range(60):
        env.step(env.action_space.sample())
    assert client.flush(10)
    env.close()
    client.close()
    updates = [update for body in transport.bodies for update in body.get("updates", [])]
    frames = [body["frame"] for body in transport.bodies if body.get("frame")]
    assert {update["env_index"] for update in updates if "episode_reward" in update} == {0, 1}
    assert max(update["global_step"] for update in updates) <= 120
    assert frames and all(frame["image_base64"].startswith("/9j/") for frame in frames)  # JPEG
    assert client.stats.frames_sent + client.stats.frames_dropped == 60 // 5
