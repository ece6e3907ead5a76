"""HUDCallback in real Stable-Baselines3 PPO training on CartPole (CPU), reporting to a real HUD server."""

from __future__ import annotations

import pytest
import requests

pytest.importorskip("torch")
pytest.importorskip("gymnasium")
sb3 = pytest.importorskip("stable_baselines3")

from hud_client import HUDClient  # noqa: E402
from hud_integrations.sb3 import HUDCallback  # noqa: E402


def test_ppo_reports_episodes_rollout_means_and_losses(live_server):
    """PPO on CartPole sends each episode, rollout/ep_rew_mean and ep_len_mean per rollout, and train/* losses."""
    client = HUDClient(live_server.url, run_id="sb3-ppo")
    model = sb3.PPO("MlpPolicy", "CartPole-v1", n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    callback = HUDCallback(client)
    model.learn(total_timesteps=384, callback=callback)  # three rollouts of 128 steps
    assert client.flush(20)

    history = requests.get(
        live_server.url + "/api/history",
        params={"metrics": "rollout.ep_rew_mean,rollout.ep_len_mean,train.loss,train.entropy_loss,episode_reward"},
        timeout=5,
    ).json()
    episodes = history["episodes"]
    buffered = list(model.ep_info_buffer)
    assert len(episodes) == len(buffered) and episodes  # fewer than 100 episodes: the buffer holds them all
    assert [episode["reward"] for episode in episodes] == [info["r"] for info in buffered]
    assert [episode["length"] for episode in episodes] == [info["l"] for info in buffered]
    metrics = history["metrics"]
    assert metrics["rollout.ep_rew_mean"]["steps"] == [128, 256, 384, 384]  # each rollout, and training's end
    assert metrics["rollout.ep_rew_mean"]["values"][-1] == pytest.approx(
        sum(info["r"] for info in buffered) / len(buffered)
    )
    assert metrics["rollout.ep_len_mean"]["values"]
    # train/* are recorded by each update and sent at the next rollout's end, the last at training's end.
    assert metrics["train.loss"]["steps"] == [256, 384, 384]
    assert metrics["train.loss"]["values"][-1] == pytest.approx(model.logger.name_to_value["train/loss"])
    assert metrics["train.entropy_loss"]["values"]
    state = requests.get(live_server.url + "/api/state", timeout=5).json()
    assert state["data"]["global_step"] == model.num_timesteps == 384
    client.close()


def test_callback_without_client_reads_hud_url_and_closes_at_training_end(live_server, monkeypatch):
    """HUDCallback() sends to HUD_URL as HUD_RUN_ID and closes the client it made when training ends."""
    monkeypatch.setenv("HUD_URL", live_server.url)
    monkeypatch.setenv("HUD_RUN_ID", "sb3-from-env")
    model = sb3.PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=1, seed=1, device="cpu")
    callback = HUDCallback(rollout_every=2)
    model.learn(total_timesteps=128, callback=callback)
    assert callback.client.stats.pending == 0  # closed after sending everything
    state = requests.get(live_server.url + "/api/state", timeout=5).json()
    assert state["run_id"] == "sb3-from-env" and state["data"]["global_step"] == 128
    assert "train" in state["data"]
