"""Gymnasium: a wrapper that reports steps, episode reward and length, and frames to the HUD.

Two lines::

    from hud_integrations.gymnasium import HUDWrapper
    env = HUDWrapper(gymnasium.make("CartPole-v1", render_mode="rgb_array"))

``HUDWrapper`` wraps a single env or a vector env (``gymnasium.make_vec``, ``SyncVectorEnv``,
``AsyncVectorEnv``; it then returns a ``HUDVectorWrapper``). What reaches the HUD:

- every ``report_every`` steps: ``global_step``, ``episode`` (episodes finished so far),
  ``running_episode_reward`` and ``running_episode_length`` of the episode in progress (of the
  designated sub-env for a vector env), and the ``info_keys`` you name;
- at the end of every episode (of every sub-env): ``episode_reward`` and ``episode_length``
  (the HUD lists such an update as a finished episode), with ``global_step`` and ``episode``;
- every ``frame_every`` steps, when the env renders ``rgb_array``: ``env.render()`` (of the
  designated sub-env) as the HUD's frame. Frames as numpy arrays need Pillow.

``global_step`` counts environment transitions: a vector step of N sub-envs counts N (a step
that only resets a sub-env, in Gymnasium's default next-step autoreset mode, counts nothing).
The HUD never slows or breaks the env: updates are buffered by ``HUDClient`` and a failing
render is logged once and frames are switched off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from hud_client import HUDClient
from hud_integrations._common import OnceLogger, as_number, resolve_client

__all__ = ["HUDWrapper", "HUDVectorWrapper"]

logger = logging.getLogger(__name__)


def _info_values(info: dict, keys: tuple[str, ...], index: int | None) -> dict:
    """The named info entries (of sub-env ``index`` for a vector env's dict of arrays) that are present."""
    picked = {}
    for key in keys:
        if key not in info:
            continue
        value = info[key]
        if index is not None:
            mask = info.get("_" + key)
            if mask is not None and not mask[index]:
                continue
            try:
                value = value[index]
            except (TypeError, IndexError, KeyError):
                continue
        number = as_number(value)
        if number is not None:
            picked[key] = number
        elif isinstance(value, (str, dict, list)):
            picked[key] = value
    return picked


class _Reporter:
    """Counts steps and episodes and turns them into HUD updates (shared by both wrappers)."""

    def __init__(self, client: HUDClient | None, report_every: int, frame_every: int, info_keys: Iterable[str]) -> None:
        if report_every < 0 or frame_every < 0:
            raise ValueError("report_every and frame_every must be >= 0 (0 turns them off)")
        self.client, self.owns_client = resolve_client(client)
        self.report_every = report_every
        self.frame_every = frame_every
        self.info_keys = tuple(info_keys)
        self.global_step = 0
        self.episodes = 0
        self.calls = 0  # step() calls, for report_every / frame_every
        self.once = OnceLogger(logger)

    def tick(self) -> tuple[bool, bool]:
        """Count one step() call; return (report the running episode now, send a frame now)."""
        self.calls += 1
        report = self.report_every > 0 and self.calls % self.report_every == 0
        frame = self.frame_every > 0 and self.calls % self.frame_every == 0
        return report, frame

    def running(self, reward: float, length: int, extra: dict) -> None:
        """Send the episode in progress."""
        self.client.update_training_data(
            {
                "global_step": self.global_step,
                "episode": self.episodes,
                "running_episode_reward": reward,
                "running_episode_length": length,
                **extra,
            }
        )

    def finished(self, reward: float, length: int, extra: dict) -> None:
        """Count and send a finished episode."""
        self.episodes += 1
        self.client.update_training_data(
            {
                "global_step": self.global_step,
                "episode": self.episodes,
                "episode_reward": reward,
                "episode_length": length,
                "running_episode_reward": reward,
                "running_episode_length": length,
                **extra,
            }
        )

    def frame(self, render) -> None:
        """Send ``render()`` as the HUD's frame; on any failure log once and stop sending frames."""
        try:
            image = render()
            if image is None:
                return
            self.client.update_vision_data(np.ascontiguousarray(image, dtype=np.uint8))
        except Exception:
            self.frame_every = 0
            self.once.warning("frame", "HUD frames switched off: rendering or sending a frame failed", exc_info=True)

    def close(self) -> None:
        """Close the client if this wrapper made it (sending what is buffered, briefly)."""
        if self.owns_client:
            self.client.close()


class HUDWrapper(gymnasium.Wrapper):
    """Reports a Gymnasium env's steps, episodes and frames to the HUD.

    Args:
        env: The env to wrap. A ``gymnasium.vector.VectorEnv`` gets a ``HUDVectorWrapper``.
        client: The ``HUDClient`` to send with. None builds ``HUDClient()`` from ``HUD_URL`` /
            ``HUD_RUN_ID`` (disabled when ``HUD_URL`` is unset), closed when the env is closed.
        frame_every: Send ``env.render()`` every this many steps when the env's render mode is
            ``"rgb_array"``; 0 sends no frames.
        report_every: Send the running episode every this many steps; 0 sends only finished
            episodes.
        info_keys: Keys of the step ``info`` dict to send along (e.g. ``("health", "room_id")``).
        env_index: For a vector env, the sub-env whose running episode, info and frames are sent.
    """

    def __new__(cls, env: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Give a vector env the vector wrapper, so one name serves both."""
        if cls is HUDWrapper and isinstance(env, VectorEnv):
            return HUDVectorWrapper(env, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        env: gymnasium.Env,
        client: HUDClient | None = None,
        frame_every: int = 10,
        *,
        report_every: int = 10,
        info_keys: Iterable[str] = (),
    ) -> None:
        super().__init__(env)
        self.hud = _Reporter(client, report_every, frame_every, info_keys)
        self._reward = 0.0
        self._length = 0
        self._frames = env.render_mode == "rgb_array"
        if frame_every and not self._frames:
            logger.info("HUD frames off: the env's render_mode is %r, not 'rgb_array'", env.render_mode)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        """Reset the env and start counting a new episode."""
        self._reward, self._length = 0.0, 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        """Step the env and report to the HUD."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        hud = self.hud
        hud.global_step += 1
        self._reward += float(reward)
        self._length += 1
        report, frame = hud.tick()
        extra = _info_values(info, hud.info_keys, None) if hud.info_keys else {}
        if terminated or truncated:
            hud.finished(self._reward, self._length, extra)
            self._reward, self._length = 0.0, 0
        elif report:
            hud.running(self._reward, self._length, extra)
        if frame and self._frames:
            hud.frame(self.env.render)
        return observation, reward, terminated, truncated, info

    def close(self) -> None:
        """Close the env, and the HUD client if the wrapper made it."""
        try:
            super().close()
        finally:
            self.hud.close()


class HUDVectorWrapper(VectorWrapper):
    """Reports a Gymnasium vector env's steps, every sub-env's episodes, and one sub-env's frames.

    Arguments as ``HUDWrapper``. Handles each autoreset mode of Gymnasium 1.x: next-step (the
    default: the step after an episode ends only resets that sub-env and is not counted),
    same-step, and disabled (episodes restart on ``reset(options={"reset_mask": ...})``).
    """

    def __init__(
        self,
        env: VectorEnv,
        client: HUDClient | None = None,
        frame_every: int = 10,
        *,
        report_every: int = 10,
        info_keys: Iterable[str] = (),
        env_index: int = 0,
    ) -> None:
        super().__init__(env)
        if not 0 <= env_index < env.num_envs:
            raise ValueError(f"env_index must be in [0, {env.num_envs}), got {env_index}")
        self.hud = _Reporter(client, report_every, frame_every, info_keys)
        self.env_index = env_index
        self._rewards = np.zeros(env.num_envs, dtype=np.float64)
        self._lengths = np.zeros(env.num_envs, dtype=np.int64)
        self._resetting = np.zeros(env.num_envs, dtype=bool)  # next step only resets (next-step mode)
        self._next_step = _autoreset_mode(env) is AutoresetMode.NEXT_STEP
        self._frames = env.render_mode == "rgb_array"
        if frame_every and not self._frames:
            logger.info("HUD frames off: the vector env's render_mode is %r, not 'rgb_array'", env.render_mode)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None) -> tuple[Any, dict]:
        """Reset the sub-envs (all, or those in ``options["reset_mask"]``) and their episode counts."""
        mask = (options or {}).get("reset_mask")
        chosen = slice(None) if mask is None else np.asarray(mask, dtype=bool)
        self._rewards[chosen] = 0.0
        self._lengths[chosen] = 0
        self._resetting[chosen] = False
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict]:
        """Step every sub-env and report to the HUD."""
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        hud = self.hud
        live = ~self._resetting  # sub-envs that made a real transition this step
        self._rewards[live] += np.asarray(rewards, dtype=np.float64)[live]
        self._lengths[live] += 1
        hud.global_step += int(live.sum())
        done = np.logical_or(terminations, truncations) & live
        report, frame = hud.tick()
        index = self.env_index
        extra = _info_values(infos, hud.info_keys, index) if hud.info_keys else {}
        for i in np.flatnonzero(done):
            i = int(i)
            hud.finished(
                float(self._rewards[i]), int(self._lengths[i]), {"env_index": i, **(extra if i == index else {})}
            )
            self._rewards[i], self._lengths[i] = 0.0, 0
        if report and not done[index]:
            hud.running(float(self._rewards[index]), int(self._lengths[index]), extra)
        if self._next_step:
            self._resetting = done
        if frame and self._frames:
            hud.frame(self._render_one)
        return observations, rewards, terminations, truncations, infos

    def _render_one(self) -> Any:
        """The designated sub-env's frame: rendered alone when the sub-envs are in this process."""
        envs = getattr(self.env.unwrapped, "envs", None)
        if envs is not None:
            return envs[self.env_index].render()
        return self.env.call("render")[self.env_index]

    def close(self, **kwargs: Any) -> None:
        """Close the vector env, and the HUD client if the wrapper made it."""
        try:
            super().close(**kwargs)
        finally:
            self.hud.close()


def _autoreset_mode(env: VectorEnv) -> AutoresetMode:
    """The vector env's autoreset mode (Gymnasium's default, next-step, when the env does not say)."""
    mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    return mode if isinstance(mode, AutoresetMode) else AutoresetMode(mode)
