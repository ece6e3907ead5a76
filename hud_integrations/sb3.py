"""Stable-Baselines3: a callback that reports episodes, rollout statistics and logger values to the HUD.

Two lines::

    from hud_integrations.sb3 import HUDCallback
    model.learn(total_timesteps=100_000, callback=HUDCallback())

What reaches the HUD:

- every finished episode (from the ``Monitor`` wrapper SB3 puts on its envs):
  ``episode_reward``, ``episode_length``, ``episode`` and ``global_step``;
- at the end of every ``rollout_every``-th rollout: ``global_step`` (``model.num_timesteps``),
  ``rollout.ep_rew_mean`` and ``rollout.ep_len_mean`` over ``model.ep_info_buffer`` (what SB3
  prints), and every number the model's logger holds at that moment, nested at its ``/``
  (``train.loss``, ``train.entropy_loss``, ``train.approx_kl``...; for on-policy algorithms
  these are the previous update's values, as SB3 logs them one iteration later);
- when training ends, the logger's last values (the final update's ``train.*``).

For frames, wrap the env SB3 trains on in ``hud_integrations.gymnasium.HUDWrapper`` (which
then reports the episodes too: pass ``episodes=False`` here so they are not sent twice).
"""

from __future__ import annotations

import logging

from stable_baselines3.common.callbacks import BaseCallback

from hud_client import HUDClient
from hud_integrations._common import OnceLogger, as_number, finite, nest_metrics, resolve_client

__all__ = ["HUDCallback"]

logger = logging.getLogger(__name__)


class HUDCallback(BaseCallback):
    """Sends a Stable-Baselines3 run's episodes, rollout statistics and logger values to the HUD.

    Args:
        client: The ``HUDClient`` to send with. None builds ``HUDClient()`` from ``HUD_URL`` /
            ``HUD_RUN_ID`` (disabled when ``HUD_URL`` is unset), closed when training ends.
        rollout_every: Report rollout statistics every this many rollouts (off-policy
            algorithms end a rollout every ``train_freq`` steps, so raise it for them).
        episodes: Also send every finished episode (``episode_reward`` / ``episode_length``).
        verbose: SB3's verbosity for the callback.
    """

    def __init__(
        self, client: HUDClient | None = None, *, rollout_every: int = 1, episodes: bool = True, verbose: int = 0
    ) -> None:
        super().__init__(verbose)
        if rollout_every < 1:
            raise ValueError("rollout_every must be >= 1")
        self.client, self._owns_client = resolve_client(client)
        self.rollout_every = rollout_every
        self.episodes = episodes
        self._episode_count = 0
        self._rollouts = 0
        self._once = OnceLogger(logger)

    def _on_step(self) -> bool:
        """Send the episodes that ended in this step; never stops training."""
        if not self.episodes:
            return True
        try:
            for info in self.locals.get("infos") or ():
                episode = info.get("episode") if isinstance(info, dict) else None
                if not isinstance(episode, dict):
                    continue
                self._episode_count += 1
                update = {"global_step": self.num_timesteps, "episode": self._episode_count}
                reward, length = as_number(episode.get("r")), as_number(episode.get("l"))
                if reward is not None:
                    update["episode_reward"] = reward
                if length is not None:
                    update["episode_length"] = length
                self.client.update_training_data(update)
        except Exception:
            self._once.warning("step", "HUD: reporting an SB3 episode failed; training goes on", exc_info=True)
        return True

    def _on_rollout_end(self) -> None:
        """Send the rollout statistics and logger values every ``rollout_every`` rollouts."""
        self._rollouts += 1
        if self._rollouts % self.rollout_every == 0:
            self._report("rollout")

    def _on_training_end(self) -> None:
        """Send the last logger values (the final update's), then close a client we made."""
        self._report("training end")
        if self._owns_client:
            self.client.close()

    def _report(self, when: str) -> None:
        """One update: timesteps, rollout means from ``ep_info_buffer``, logger values."""
        try:
            update = nest_metrics(getattr(self.logger, "name_to_value", {}) or {})
            rollout = update.setdefault("rollout", {})
            buffer = list(getattr(self.model, "ep_info_buffer", None) or ())
            rewards = [as_number(info.get("r")) for info in buffer]
            lengths = [as_number(info.get("l")) for info in buffer]
            rewards = [value for value in rewards if finite(value)]
            lengths = [value for value in lengths if finite(value)]
            if rewards:
                rollout["ep_rew_mean"] = sum(rewards) / len(rewards)
            if lengths:
                rollout["ep_len_mean"] = sum(lengths) / len(lengths)
            if not rollout:
                del update["rollout"]
            update["global_step"] = self.num_timesteps
            self.client.update_training_data(update)
        except Exception:
            self._once.warning(
                when, "HUD: reporting SB3 statistics at %s failed; training goes on", when, exc_info=True
            )
