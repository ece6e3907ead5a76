"""Ray RLlib (new API stack): callbacks that report training iterations and one env runner's game to the HUD.

Two lines::

    from hud_integrations.rllib import HUDCallbacks
    config = PPOConfig().environment("CartPole-v1").callbacks(HUDCallbacks)

What reaches the HUD:

- from the driver, after every training iteration (``on_train_result``): ``global_step``
  (env steps sampled so far), ``training_iteration``, ``episode_reward`` and ``episode_length``
  (the iteration's mean episode return and length, when an episode has finished), the
  ``env_runners`` statistics (``episode_return_mean/min/max``, ``num_episodes``...), each
  learner module's statistics (``learners.<module>.total_loss``, ``policy_loss``, ``vf_loss``,
  ``entropy``, ``mean_kl_loss``, ``default_optimizer_learning_rate``...) and ``time_this_iter_s``;
- from one designated env runner only, for one sub-env, every ``report_every`` env steps:
  ``running_episode_reward`` and ``running_episode_length`` of its episode in progress, the
  ``info_keys`` you name from the env's last info dict (your game state), and every
  ``frame_every`` steps ``render()`` of that sub-env as the HUD's frame (create the env with
  ``render_mode="rgb_array"``, e.g. ``.environment("CartPole-v1", env_config={"render_mode": "rgb_array"})``).

Settings are class attributes; ``HUDCallbacks.configure(...)`` returns a subclass with yours,
to pass to ``config.callbacks(...)``. Every process makes one ``HUDClient`` on first use,
with the URL, run id and token captured when the class was configured (else ``HUD_URL`` /
``HUD_RUN_ID`` / ``HUD_TOKEN`` of that process), so the driver and the env runner report as one run.
Subclass and override ``game_state`` to send more of the game.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from ray.rllib.callbacks.callbacks import RLlibCallback

from hud_client import HUDClient
from hud_integrations._common import OnceLogger, as_number

__all__ = ["HUDCallbacks", "close_clients"]

logger = logging.getLogger(__name__)

_ENV_RUNNER_STATS = (
    "episode_return_mean",
    "episode_return_min",
    "episode_return_max",
    "episode_len_mean",
    "episode_len_min",
    "episode_len_max",
    "episode_duration_sec_mean",
    "num_episodes",
    "num_episodes_lifetime",
    "num_env_steps_sampled",
    "num_env_steps_sampled_lifetime",
)
# Learner results also hold timers, throughputs and bookkeeping; the HUD keeps a bounded number of
# metrics (HUD_HISTORY_METRICS), so only each module's own statistics are sent.
_LEARNER_SKIP = ("timer", "throughput", "weights_seq_no", "num_trainable_parameters", "num_non_trainable_parameters")
_ALL_MODULES = "__all_modules__"


def _learner_stats(learners: Any) -> dict:
    """``{module_id: {stat: number}}``: the numbers directly under each module (losses, entropy, KL, rates...)."""
    if not isinstance(learners, Mapping):
        return {}
    stats: dict = {}
    for module_id, values in learners.items():
        if module_id == _ALL_MODULES or not isinstance(values, Mapping):
            continue
        numbers = {}
        for key, value in values.items():
            number = as_number(value)
            if number is not None and not any(part in str(key) for part in _LEARNER_SKIP):
                numbers[str(key)] = number
        if numbers:
            stats[str(module_id)] = numbers
    return stats


_clients: dict[tuple[str | None, str | None, str | None], HUDClient] = {}
_clients_lock = threading.Lock()


def _process_client(hud_url: str | None, run_id: str | None, token: str | None) -> HUDClient:
    """One ``HUDClient`` per process and (URL, run): the driver's and the local env runner's callbacks share it."""
    key = (hud_url, run_id, token)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = HUDClient(hud_url, run_id=run_id, token=token)
        return client


def close_clients(timeout: float = 5.0) -> bool:
    """Close this process's HUD clients (sending what they buffered); True when all was sent in ``timeout`` each.

    Clients also close at interpreter exit; call this to wait for the last results at the end of a script.
    """
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    return all([client.close(timeout) for client in clients])


class HUDCallbacks(RLlibCallback):
    """RLlib callbacks that send each training iteration (driver) and one env runner's episodes and frames.

    Class attributes (set them with ``HUDCallbacks.configure(...)``):
        hud_url: The HUD's URL; None uses ``HUD_URL`` of each process.
        run_id: The run's name; None uses ``HUD_RUN_ID`` of each process, else "default".
        token: The HUD's write token; None uses ``HUD_TOKEN`` of each process.
        env_runner_index: ``worker_index`` of the env runner that reports its game: None picks
            1 when there are remote env runners, else 0 (the local one that samples).
        env_index: The sub-env (of that runner's vector env) that reports.
        report_every: Env steps between running-episode updates (0: none).
        frame_every: Env steps between frames (0: none).
        info_keys: Keys of the env's info dict sent along with the running episode.
    """

    hud_url: ClassVar[str | None] = None
    run_id: ClassVar[str | None] = None
    token: ClassVar[str | None] = None
    env_runner_index: ClassVar[int | None] = None
    env_index: ClassVar[int] = 0
    report_every: ClassVar[int] = 10
    frame_every: ClassVar[int] = 10
    info_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def configure(
        cls,
        *,
        hud_url: str | None = None,
        run_id: str | None = None,
        token: str | None = None,
        env_runner_index: int | None = None,
        env_index: int = 0,
        report_every: int = 10,
        frame_every: int = 10,
        info_keys: tuple[str, ...] | list[str] = (),
    ) -> type[HUDCallbacks]:
        """A subclass with these settings, for ``config.callbacks(...)``.

        ``hud_url``, ``run_id`` and ``token`` default to the ``HUD_URL``, ``HUD_RUN_ID`` and
        ``HUD_TOKEN`` of this (the driver's) process, so env runners on other machines report to
        the same HUD as one run.
        """
        if report_every < 0 or frame_every < 0 or env_index < 0:
            raise ValueError("report_every, frame_every and env_index must be >= 0")
        settings = {
            "hud_url": hud_url if hud_url is not None else os.environ.get("HUD_URL") or None,
            "run_id": run_id if run_id is not None else os.environ.get("HUD_RUN_ID") or None,
            "token": token if token is not None else os.environ.get("HUD_TOKEN") or None,
            "env_runner_index": env_runner_index,
            "env_index": env_index,
            "report_every": report_every,
            "frame_every": frame_every,
            "info_keys": tuple(info_keys),
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        }
        return type(cls.__name__, (cls,), settings)

    def __init__(self) -> None:
        super().__init__()
        self._client: HUDClient | None = None
        self._steps = 0  # env steps of the reporting sub-env seen by this process
        self._once = OnceLogger(logger)
        self._frames_on = self.frame_every > 0

    @property
    def client(self) -> HUDClient:
        """This process's HUD client for this URL and run, made on first use (shared by every callbacks object)."""
        if self._client is None:
            self._client = _process_client(self.hud_url, self.run_id, self.token)
        return self._client

    # ---- driver

    def on_train_result(self, *, algorithm: Any, metrics_logger: Any = None, result: dict, **kwargs: Any) -> None:
        """Send the iteration's results: steps, mean return and length, env runner and learner stats."""
        try:
            self.client.update_training_data(self.train_update(result))
        except Exception:
            self._once.warning(
                "train", "HUD: reporting an RLlib training result failed; training goes on", exc_info=True
            )

    @staticmethod
    def train_update(result: Mapping[str, Any]) -> dict:
        """The HUD update for one RLlib training result dict (new API stack keys, old ones as fallback)."""
        runners = result.get("env_runners") or {}
        update: dict = {}
        step = as_number(runners.get("num_env_steps_sampled_lifetime", result.get("num_env_steps_sampled_lifetime")))
        if step is None:
            step = as_number(result.get("timesteps_total"))
        if step is not None:
            update["global_step"] = step
        iteration = as_number(result.get("training_iteration"))
        if iteration is not None:
            update["training_iteration"] = iteration
            update["epoch"] = iteration
        mean_return = as_number(runners.get("episode_return_mean", result.get("episode_reward_mean")))
        mean_length = as_number(runners.get("episode_len_mean", result.get("episode_len_mean")))
        if mean_return is not None and math.isfinite(mean_return):
            update["episode_reward"] = mean_return  # the HUD lists it as this iteration's episode
            if mean_length is not None and math.isfinite(mean_length):
                update["episode_length"] = mean_length
        stats = {key: as_number(runners.get(key)) for key in _ENV_RUNNER_STATS}
        stats = {key: value for key, value in stats.items() if value is not None}
        if stats:
            update["env_runners"] = stats
        learners = _learner_stats(result.get("learners"))
        if learners:
            update["learners"] = learners
        seconds = as_number(result.get("time_this_iter_s"))
        if seconds is not None:
            update["time_this_iter_s"] = seconds
        return update

    # ---- the designated env runner

    def reports(self, worker_index: int, num_env_runners: int, env_index: int) -> bool:
        """True for the designated env runner's designated sub-env (runner 1 by default, 0 with no remote runners)."""
        wanted = self.env_runner_index
        if wanted is None:
            wanted = 1 if num_env_runners > 0 else 0
        return worker_index == wanted and env_index == self.env_index

    def _reporting(self, env_runner: Any, env_index: int) -> bool:
        """``reports`` for the env runner RLlib passed in."""
        config = getattr(env_runner, "config", None)
        if getattr(config, "in_evaluation", False):  # evaluation runners share worker indices; they never report
            return False
        remote = getattr(config, "num_env_runners", 0) or 0
        return self.reports(getattr(env_runner, "worker_index", 0), remote, env_index)

    def on_episode_step(
        self,
        *,
        episode: Any,
        env_runner: Any = None,
        metrics_logger: Any = None,
        env: Any = None,
        env_index: int = 0,
        rl_module: Any = None,
        **kwargs: Any,
    ) -> None:
        """In the designated env runner: the running episode every ``report_every`` steps, a frame every ``frame_every``."""
        if not self._reporting(env_runner, env_index):
            return
        self._steps += 1
        try:
            if self.report_every and self._steps % self.report_every == 0:
                self.client.update_training_data(self.game_state(episode=episode, env=env, env_index=env_index))
        except Exception:
            self._once.warning("step", "HUD: reporting an RLlib episode step failed; training goes on", exc_info=True)
        if self._frames_on and self._steps % self.frame_every == 0:
            try:
                self._send_frame(env, env_index)
            except Exception:
                self._frames_on = False
                self._once.warning(
                    "frame", "HUD frames switched off: rendering or sending a frame failed", exc_info=True
                )

    def on_episode_end(
        self,
        *,
        episode: Any,
        env_runner: Any = None,
        metrics_logger: Any = None,
        env: Any = None,
        env_index: int = 0,
        rl_module: Any = None,
        **kwargs: Any,
    ) -> None:
        """In the designated env runner: the finished episode's return and length."""
        if not self._reporting(env_runner, env_index):
            return
        try:
            self.client.update_training_data(self.game_state(episode=episode, env=env, env_index=env_index))
        except Exception:
            self._once.warning("end", "HUD: reporting an RLlib episode end failed; training goes on", exc_info=True)

    def game_state(self, *, episode: Any, env: Any, env_index: int) -> dict:
        """What the designated env runner sends about its episode; override to send more of the game."""
        state: dict = {"running_episode_reward": float(episode.get_return()), "running_episode_length": len(episode)}
        if self.info_keys:
            infos = episode.get_infos(-1) if hasattr(episode, "get_infos") else {}
            for key in self.info_keys:
                if isinstance(infos, Mapping) and key in infos:
                    value = infos[key]
                    number = as_number(value)
                    state[key] = number if number is not None else value
        return state

    def _send_frame(self, env: Any, env_index: int) -> None:
        """Render the designated sub-env and send it; frames go off for good if it cannot render."""
        sub_envs = getattr(getattr(env, "unwrapped", env), "envs", None)
        target = sub_envs[env_index] if sub_envs is not None else env
        if getattr(target, "render_mode", None) != "rgb_array":
            self._frames_on = False
            logger.info(
                "HUD frames off: the env's render_mode is %r, not 'rgb_array'", getattr(target, "render_mode", None)
            )
            return
        image = target.render()
        if image is not None:
            self.client.update_vision_data(image)
