#!/usr/bin/env python3
"""A real Gymnasium loop (CartPole) reporting to a HUD through ``HUDWrapper``.

    pip install "gymnasium[classic-control]" pillow    # pygame renders the frames, Pillow encodes them
    python hud_server.py &
    python examples/gymnasium_cartpole.py --steps 5000  # --num-envs 4 for a vector env

The policy is a simple hand-written controller that gets better as it "learns" (it starts
random and leans more on the pole's angle each episode), so the HUD shows episode rewards rising.
The two HUD lines are marked below.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: find hud_client and hud_integrations
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gymnasium
import numpy as np

from hud_client import HUDClient
from hud_integrations.gymnasium import HUDWrapper  # HUD line 1

logger = logging.getLogger("examples.gymnasium_cartpole")


def policy(observation: np.ndarray, skill: float, rng: np.random.Generator) -> np.ndarray:
    """Push the cart toward the side the pole leans to with probability ``skill``, else act at random."""
    observation = np.atleast_2d(observation)
    lean = observation[:, 2] + 0.5 * observation[:, 3]  # angle plus a little angular velocity
    informed = (lean > 0).astype(np.int64)
    random_actions = rng.integers(0, 2, size=len(observation))
    return np.where(rng.random(len(observation)) < skill, informed, random_actions)


def run(client: HUDClient, steps: int = 2000, num_envs: int = 1, frame_every: int = 10, seed: int = 0) -> int:
    """Run CartPole for ``steps`` env steps (vector steps when ``num_envs`` > 1); return the episodes finished."""
    render_mode = "rgb_array" if importlib.util.find_spec("pygame") and importlib.util.find_spec("PIL") else None
    if num_envs > 1:
        env = gymnasium.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="sync", render_mode=render_mode)
    else:
        env = gymnasium.make("CartPole-v1", render_mode=render_mode)
    env = HUDWrapper(env, client, frame_every=frame_every)  # HUD line 2
    rng = np.random.default_rng(seed)
    observation, _ = env.reset(seed=seed)
    for _ in range(steps):
        skill = min(0.98, 0.2 + env.hud.episodes / 50)
        actions = policy(observation, skill, rng)
        action = actions if num_envs > 1 else int(actions[0])
        observation, _, terminated, truncated, _ = env.step(action)
        if num_envs == 1 and (terminated or truncated):
            observation, _ = env.reset()
    episodes = env.hud.episodes
    env.close()
    return episodes


def main(argv: list[str] | None = None) -> int:
    """Command line: run CartPole against a HUD."""
    parser = argparse.ArgumentParser(description="CartPole with a HUD.")
    parser.add_argument(
        "--url",
        default=os.environ.get("HUD_URL") or "http://localhost:8086",
        help="the HUD's base URL (default: $HUD_URL or http://localhost:8086)",
    )
    parser.add_argument("--run-id", default=None, help="the run's name (default: $HUD_RUN_ID or 'default')")
    parser.add_argument("--token", default=None, help="the HUD's write token (default: $HUD_TOKEN)")
    parser.add_argument("--steps", type=int, default=5000, help="env steps to run (default: %(default)s)")
    parser.add_argument("--num-envs", type=int, default=1, help="sub-envs of a vector env (default: %(default)s)")
    parser.add_argument("--frame-every", type=int, default=10, help="steps between frames (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    client = HUDClient(args.url, run_id=args.run_id, token=args.token)
    episodes = run(client, steps=args.steps, num_envs=args.num_envs, frame_every=args.frame_every)
    delivered = client.flush(timeout=10.0)
    client.close(timeout=1.0)
    logger.info("%d episodes; %s", episodes, "all sent" if delivered else f"not all sent: {client.stats.last_error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
