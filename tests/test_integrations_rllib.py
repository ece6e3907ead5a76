"""HUDCallbacks in a real RLlib PPO training iteration on CartPole (new API stack), reporting to a real HUD server."""

from __future__ import annotations

import pytest
import requests

from helpers import wait_until

pytest.importorskip("torch")
pytest.importorskip("PIL", reason="frames given as arrays are JPEG-encoded with Pillow")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.rllib")

from ray.rllib.algorithms.ppo import PPOConfig  # noqa: E402

from hud_integrations.rllib import HUDCallbacks, close_clients  # noqa: E402


@pytest.fixture
def ray_runtime():
    """A one-CPU local Ray, shut down after the test."""
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ppo_iteration_reports_results_game_state_and_frames(live_server, ray_runtime):
    """One PPO iteration sends the driver's results (steps, returns, losses) and the env runner's episodes and frames."""
    callbacks = HUDCallbacks.configure(hud_url=live_server.url, run_id="rllib-ppo", report_every=5, frame_every=20)
    config = (
        PPOConfig()
        .environment("CartPole-v1", env_config={"render_mode": "rgb_array"})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, rollout_fragment_length=64)
        .training(train_batch_size_per_learner=128, minibatch_size=64, num_epochs=1)
        .callbacks(callbacks)
    )
    algo = config.build_algo()
    try:
        result = algo.train()
        assert close_clients(timeout=20)  # the driver's and the local env runner's client, sent and closed
    finally:
        algo.stop()

    state = requests.get(live_server.url + "/api/state", timeout=5).json()
    assert state["run_id"] == "rllib-ppo"
    data = state["data"]
    assert data["global_step"] == result["num_env_steps_sampled_lifetime"] == 128
    assert data["training_iteration"] == 1
    assert data["episode_reward"] == pytest.approx(result["env_runners"]["episode_return_mean"])
    assert data["episode_length"] == pytest.approx(result["env_runners"]["episode_len_mean"])
    assert data["env_runners"]["num_episodes_lifetime"] >= 1
    stats = data["learners"]["default_policy"]
    assert stats["total_loss"] == pytest.approx(result["learners"]["default_policy"]["total_loss"])
    assert {"policy_loss", "vf_loss", "entropy"} <= set(stats)
    assert not any("timer" in key or "throughput" in key for key in stats)
    # The env runner (the local one: no remote runners) reported its running episode and frames.
    assert data["running_episode_length"] >= 1
    assert state["frame"] is not None
    history = requests.get(
        live_server.url + "/api/history",
        params={"metrics": "learners.default_policy.total_loss,running_episode_reward"},
        timeout=5,
    ).json()
    assert history["metrics"]["learners.default_policy.total_loss"]["values"]
    assert len(history["metrics"]["running_episode_reward"]["values"]) >= 128 // 5 - 1


def test_train_update_turns_a_result_dict_into_hud_fields():
    """A new-API-stack result maps to global_step, episode_reward/length, env_runners and learner stats; NaN returns are left out."""
    result = {
        "training_iteration": 3,
        "num_env_steps_sampled_lifetime": 12000.0,
        "time_this_iter_s": 1.5,
        "env_runners": {
            "episode_return_mean": 41.5,
            "episode_len_mean": 41.5,
            "num_episodes": 7,
            "module_to_env_connector": {"timers": {"x": 1.0}},
        },
        "learners": {
            "__all_modules__": {"num_env_steps_trained": 4000},
            "default_policy": {
                "total_loss": 0.5,
                "entropy": 0.6,
                "weights_seq_no": 3.0,
                "throughput": {"a": 1.0},
                "connector_pipeline_timer": 0.1,
            },
        },
    }
    update = HUDCallbacks.train_update(result)
    assert update == {
        "global_step": 12000,
        "training_iteration": 3,
        "epoch": 3,
        "episode_reward": 41.5,
        "episode_length": 41.5,
        "env_runners": {"episode_return_mean": 41.5, "episode_len_mean": 41.5, "num_episodes": 7},
        "learners": {"default_policy": {"total_loss": 0.5, "entropy": 0.6}},
        "time_this_iter_s": 1.5,
    }
    no_episode = HUDCallbacks.train_update({"env_runners": {"episode_return_mean": float("nan")}})
    assert "episode_reward" not in no_episode


def test_only_the_designated_env_runner_reports():
    """With remote env runners, runner 1 reports by default, else the local runner 0; another runner or sub-env can be chosen."""
    default = HUDCallbacks()
    assert default.reports(worker_index=1, num_env_runners=2, env_index=0)
    assert not default.reports(worker_index=2, num_env_runners=2, env_index=0)
    assert not default.reports(worker_index=0, num_env_runners=2, env_index=0)
    assert not default.reports(worker_index=1, num_env_runners=2, env_index=1)
    assert default.reports(worker_index=0, num_env_runners=0, env_index=0)
    chosen = HUDCallbacks.configure(env_runner_index=2, env_index=1)()
    assert chosen.reports(worker_index=2, num_env_runners=2, env_index=1)
    assert not chosen.reports(worker_index=1, num_env_runners=2, env_index=1)


def test_remote_env_runner_reports_game_state_and_frames(live_server, ray_runtime):
    """With a remote env runner (a Ray worker process), that runner sends the running episode and frames."""
    callbacks = HUDCallbacks.configure(hud_url=live_server.url, run_id="rllib-remote", report_every=1, frame_every=8)
    config = (
        PPOConfig()
        .environment("CartPole-v1", env_config={"render_mode": "rgb_array"})
        .env_runners(
            num_env_runners=1, num_envs_per_env_runner=1, rollout_fragment_length=64, num_cpus_per_env_runner=0
        )
        .training(train_batch_size_per_learner=64, minibatch_size=64, num_epochs=1)
        .callbacks(callbacks)
    )
    algo = config.build_algo()
    try:
        algo.train()
        assert close_clients(timeout=20)  # the driver's; the worker's client sends from its own process
        # Most of the runner's 64 steps, and a frame, arrive from the worker process while it lives.
        wait_until(
            lambda: _remote_report_arrived(live_server.url), timeout=30, message="the remote env runner's reports"
        )
    finally:
        algo.stop()


def _remote_report_arrived(url: str) -> bool:
    """True once the HUD holds a frame and at least 32 running-episode points."""
    state = requests.get(url + "/api/state", timeout=5).json()
    history = requests.get(url + "/api/history", params={"metrics": "running_episode_length"}, timeout=5).json()
    points = history["metrics"].get("running_episode_length", {}).get("values", [])
    return state["frame"] is not None and len(points) >= 32
