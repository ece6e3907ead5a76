#!/usr/bin/env python3
"""A simulated Zelda RL + LLM training run that feeds a HUD: see the dashboard live without training anything.

    python hud_server.py &                      # the HUD, on http://localhost:8086
    python examples/simulated_run.py            # until Ctrl-C; --steps N or --seconds S to stop sooner

Every update looks like the Zelda agent's: global step, episode, room and location, position,
health, entities on screen, milestones, exploration, the LLM's suggestions and its call
statistics, a noisy episode reward that rises as "training" goes on, episode lengths, and
policy/value/entropy losses. Frames are pixel-art rooms (tiles and sprites) drawn in pure
Python and encoded as PNG with zlib, so nothing beyond ``requests`` is needed.

``run(client, steps=None, rate=10.0, stop_event=None)`` is the feed itself, for use in a thread
(the HUD server's demo mode calls it).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: find hud_client next door
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hud_client import HUDClient

__all__ = ["run", "SimulatedRun", "draw_room", "encode_png"]

logger = logging.getLogger("examples.simulated_run")

DEFAULT_RATE = 10.0  # updates per second
FRAME_EVERY = 5  # updates between frames
TILE = 16  # pixels per tile side
ROOM_COLS, ROOM_ROWS = 10, 9  # a Game Boy screen: 160 x 144 pixels
WIDTH, HEIGHT = ROOM_COLS * TILE, ROOM_ROWS * TILE

LOCATIONS = (
    "Horon Village",
    "Western Coast",
    "Eastern Suburbs",
    "Woods of Winter",
    "Holodrum Plain",
    "Spool Swamp",
    "Sunken City",
    "Mt. Cucco",
    "Maku Tree",
    "Gnarled Root Dungeon",
)
SUGGESTIONS = (
    "Head north toward the Maku Tree; the gate is open now.",
    "Cut the bush to the east with the sword to reach the stairs.",
    "An Octorok is ahead: approach diagonally and strike between its shots.",
    "Health is low: collect the heart from the grass before the next room.",
    "Talk to the villager by the well; they mention the Gnarled Key.",
    "The rooms to the west are unexplored; go left along the coast.",
    "Push the block in the corner to open the shutter.",
    "Use the seed satchel on the torch to light the room.",
    "Avoid the water tiles; Link cannot swim yet.",
    "Enter the building at the top of the screen to find the shop.",
)

# --------------------------------------------------------------------------- pixel art

_PALETTE = {
    "grass": ((88, 168, 72), (64, 136, 56)),
    "path": ((216, 184, 120), (192, 160, 104)),
    "water": ((56, 112, 216), (96, 160, 240)),
    "tree": ((32, 96, 40), (16, 64, 24)),
    "wall": ((120, 112, 104), (88, 80, 72)),
}
_SPRITES = {  # 8x8 masks, drawn at 2x: "#" body, "o" detail, "." transparent
    "link": ("..####..", ".#oooo#.", ".#o##o#.", "..####..", ".######.", "#.####.#", "..#..#..", ".##..##."),
    "enemy": ("..####..", ".######.", "##o##o##", "########", ".######.", "#.#..#.#", "#......#", "........"),
    "npc": ("..oooo..", ".oooooo.", ".o#oo#o.", "..oooo..", ".######.", ".######.", "..#..#..", "..#..#.."),
    "item": ("...##...", "..#oo#..", ".#oooo#.", ".#oooo#.", ".#oooo#.", "..#oo#..", "...##...", "........"),
}
_SPRITE_COLOURS = {
    "link": ((40, 160, 56), (248, 208, 160)),
    "enemy": ((216, 40, 40), (248, 248, 248)),
    "npc": ((152, 72, 176), (248, 208, 160)),
    "item": ((24, 120, 232), (136, 224, 248)),
}


def _tile_rows(kind: str, variant: int) -> list[bytes]:
    """One 16x16 tile as 16 rows of RGB bytes, with a simple texture per kind."""
    base, accent = _PALETTE[kind]
    rows = []
    for y in range(TILE):
        row = bytearray()
        for x in range(TILE):
            if kind == "grass":
                use_accent = (x * 7 + y * 3 + variant) % 11 == 0
            elif kind == "water":
                use_accent = (y + variant) % 4 == 0 and (x // 3 + variant) % 2 == 0
            elif kind == "tree":
                use_accent = (x - 8) ** 2 + (y - 7) ** 2 > 40 or y > 12 and 6 <= x <= 9
            elif kind == "wall":
                use_accent = y % 8 == 0 or (x + (8 if y // 8 % 2 else 0)) % 16 == 0
            else:
                use_accent = (x + y * 5 + variant) % 13 == 0
            row += bytes(accent if use_accent else base)
        rows.append(bytes(row))
    return rows


_TILES = {(kind, variant): _tile_rows(kind, variant) for kind in _PALETTE for variant in range(4)}


def _room_layout(room_id: int) -> list[list[str]]:
    """A room's tile kinds, the same every time for the same room."""
    rng = random.Random(room_id)
    edge = "wall" if room_id % 5 == 4 else "tree"
    grid = [["grass"] * ROOM_COLS for _ in range(ROOM_ROWS)]
    for y in range(ROOM_ROWS):
        for x in range(ROOM_COLS):
            if x in (0, ROOM_COLS - 1) or y in (0, ROOM_ROWS - 1):
                grid[y][x] = edge
    exits = [(0, ROOM_COLS // 2), (ROOM_ROWS - 1, ROOM_COLS // 2), (ROOM_ROWS // 2, 0), (ROOM_ROWS // 2, ROOM_COLS - 1)]
    for y, x in rng.sample(exits, 2):
        grid[y][x] = "path"
    if rng.random() < 0.5:  # a pond
        px, py = rng.randrange(2, ROOM_COLS - 4), rng.randrange(2, ROOM_ROWS - 3)
        for y in range(py, py + 2):
            for x in range(px, px + 3):
                grid[y][x] = "water"
    for _ in range(rng.randrange(2, 6)):  # scattered trees
        grid[rng.randrange(2, ROOM_ROWS - 2)][rng.randrange(2, ROOM_COLS - 2)] = "tree"
    for x in range(1, ROOM_COLS - 1):  # a path across the middle
        if grid[ROOM_ROWS // 2][x] == "grass":
            grid[ROOM_ROWS // 2][x] = "path"
    return grid


def _blit_sprite(frame: bytearray, kind: str, px: int, py: int) -> None:
    """Draw an 8x8 sprite at 2x with its top-left corner at pixel (px, py), clipped to the frame."""
    body, detail = _SPRITE_COLOURS[kind]
    for sy, line in enumerate(_SPRITES[kind]):
        for sx, cell in enumerate(line):
            if cell == ".":
                continue
            colour = bytes(body if cell == "#" else detail)
            for dy in (0, 1):
                y = py + sy * 2 + dy
                if not 0 <= y < HEIGHT:
                    continue
                for dx in (0, 1):
                    x = px + sx * 2 + dx
                    if 0 <= x < WIDTH:
                        offset = (y * WIDTH + x) * 3
                        frame[offset : offset + 3] = colour


def draw_room(room_id: int, link: tuple[int, int], sprites: list[tuple[str, int, int]], tick: int = 0) -> bytes:
    """A 160x144 RGB frame (raw bytes, row by row) of room ``room_id`` with Link and other sprites in it."""
    layout = _room_layout(room_id)
    rows = []
    for ty, tile_kinds in enumerate(layout):
        tiles = [_TILES[(kind, (tx + ty + (tick if kind == "water" else 0)) % 4)] for tx, kind in enumerate(tile_kinds)]
        for y in range(TILE):
            rows.append(b"".join(tile[y] for tile in tiles))
    frame = bytearray(b"".join(rows))
    for kind, x, y in sprites:
        _blit_sprite(frame, kind, x, y)
    _blit_sprite(frame, "link", *link)
    return bytes(frame)


def encode_png(rgb: bytes, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """Encode raw 8-bit RGB rows as a PNG file (standard library only)."""
    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- the simulated run


class SimulatedRun:
    """The state of a make-believe Zelda agent, advanced one training step per ``step()``."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.global_step = 0
        self.episode = 1
        self.episode_step = 0
        self.episode_reward = 0.0
        self.episode_target = self._episode_length()
        self.room_id = 0
        self.rooms_seen = {0}
        self.grid_areas = 1
        self.buildings_entered = 0
        self.x, self.y = 72.0, 64.0
        self.heading = self.rng.uniform(0, 2 * math.pi)
        self.health_max = 12
        self.health = 12
        self.llm_calls = 0
        self.llm_successes = 0
        self.milestones = {"maku_tree_entered": False, "dungeon_entered": False, "sword_usage": 0}
        self.others: list[tuple[str, int, int]] = self._populate()

    def _skill(self) -> float:
        """How far "training" has got: 0 at the start, towards 1 after about a hundred episodes."""
        return 1.0 - math.exp(-self.episode / 25.0)

    def _episode_length(self) -> int:
        return self.rng.randrange(40, 160)  # short, so the first minute already charts several episodes

    def _populate(self) -> list[tuple[str, int, int]]:
        """Place the enemies, villagers and items of a newly entered room."""
        rng = random.Random(self.room_id * 7919 + self.episode)
        kinds = ["enemy"] * rng.randrange(0, 4) + ["npc"] * rng.randrange(0, 2) + ["item"] * rng.randrange(0, 3)
        return [(kind, rng.randrange(TILE, WIDTH - 2 * TILE), rng.randrange(TILE, HEIGHT - 2 * TILE)) for kind in kinds]

    def step(self) -> tuple[dict, bool]:
        """Advance one step; return the HUD update and whether this step ended the episode."""
        rng = self.rng
        self.global_step += 1
        self.episode_step += 1
        skill = self._skill()
        self.heading += rng.gauss(0, 0.5)
        self.x += 4 * math.cos(self.heading)
        self.y += 4 * math.sin(self.heading)
        if not (TILE <= self.x <= WIDTH - 2 * TILE and TILE <= self.y <= HEIGHT - 2 * TILE):
            self._change_room()
        reward = rng.gauss(0.05 + 0.45 * skill, 0.3)
        if rng.random() < 0.03:
            self.health = max(0, self.health - rng.choice((1, 2)))
        elif rng.random() < 0.02:
            self.health = min(self.health_max, self.health + 2)
        if rng.random() < 0.05:
            self.milestones["sword_usage"] += 1
            reward += 1.0
        self.episode_reward += reward
        update = {
            "global_step": self.global_step,
            "episode": self.episode,
            "epoch": self.global_step // 2048,
            "location": LOCATIONS[self.room_id % len(LOCATIONS)],
            "room_id": self.room_id,
            "position": {"x": round(self.x), "y": round(self.y)},
            "health": {"current": self.health, "max": self.health_max},
            "entities": {
                kind + "s" if kind != "enemy" else "enemies": sum(1 for k, _, _ in self.others if k == kind)
                for kind in ("npc", "enemy", "item")
            },
            "milestones": dict(self.milestones),
            "exploration": {
                "rooms_discovered": len(self.rooms_seen),
                "grid_areas": self.grid_areas,
                "buildings_entered": self.buildings_entered,
            },
            "loss": {
                "policy": max(0.001, 0.5 * (1 - skill) + rng.gauss(0, 0.05)),
                "value": max(0.001, 2.0 * (1 - skill) + abs(rng.gauss(0, 0.2))),
                "entropy": max(0.01, 1.4 - 0.9 * skill + rng.gauss(0, 0.03)),
            },
            "reward": round(reward, 4),
        }
        if self.global_step % 25 == 1:
            self.llm_calls += 1
            self.llm_successes += rng.random() < 0.7 + 0.25 * skill
            update["llm_suggestion"] = rng.choice(SUGGESTIONS)
            update["llm_calls"] = self.llm_calls
            update["llm_success_rate"] = round(self.llm_successes / self.llm_calls, 3)
            update["llm_alignment"] = round(min(1.0, 0.4 + 0.5 * skill + rng.gauss(0, 0.05)), 3)
        done = self.health == 0 or self.episode_step >= self.episode_target
        if done:
            update["episode_reward"] = round(self.episode_reward, 3)
            update["episode_length"] = self.episode_step
            self._new_episode()
        return update, done

    def _change_room(self) -> None:
        """Walk off the screen's edge into a neighbouring room."""
        rng = self.rng
        self.room_id = (self.room_id + rng.choice((1, 1, 2, 3))) % 96
        if self.room_id not in self.rooms_seen:
            self.rooms_seen.add(self.room_id)
            self.grid_areas += rng.choice((0, 1))
        if rng.random() < 0.1:
            self.buildings_entered += 1
        if self.room_id % len(LOCATIONS) == 8:
            self.milestones["maku_tree_entered"] = True
        if self.room_id % len(LOCATIONS) == 9:
            self.milestones["dungeon_entered"] = True
        self.x, self.y = WIDTH / 2 - 8, HEIGHT / 2 - 8
        self.others = self._populate()

    def _new_episode(self) -> None:
        """Start the next episode from the first room with full health."""
        self.episode += 1
        self.episode_step = 0
        self.episode_reward = 0.0
        self.episode_target = self._episode_length()
        self.health = self.health_max
        self.room_id = 0
        self.x, self.y = 72.0, 64.0
        self.others = self._populate()

    def frame(self) -> bytes:
        """The current screen as PNG bytes."""
        sprites = [(kind, x + self.rng.randrange(-2, 3), y) for kind, x, y in self.others]
        rgb = draw_room(self.room_id, (round(self.x), round(self.y)), sprites, tick=self.global_step)
        return encode_png(rgb)


def run(
    client: HUDClient,
    steps: int | None = None,
    rate: float = DEFAULT_RATE,
    stop_event: threading.Event | None = None,
    *,
    seconds: float | None = None,
    frame_every: int = FRAME_EVERY,
    seed: int | None = None,
) -> int:
    """Feed ``client`` a simulated run until ``steps`` updates, ``seconds``, or ``stop_event`` is set.

    Args:
        client: Where the updates and frames go.
        steps: Updates to send; None for no limit.
        rate: Updates per second; 0 or less sends as fast as possible.
        stop_event: Set it (from another thread) to stop at once.
        seconds: Stop after this many seconds; None for no limit.
        frame_every: Send a frame every this many updates (0 sends none).
        seed: Seed of the simulation, for the same run every time.

    Returns:
        The number of updates sent.
    """
    stop = stop_event or threading.Event()
    simulation = SimulatedRun(seed)
    interval = 1.0 / rate if rate > 0 else 0.0
    started = time.monotonic()
    next_at = started
    sent = 0
    while (steps is None or sent < steps) and not stop.is_set():
        if seconds is not None and time.monotonic() - started >= seconds:
            break
        update, done = simulation.step()
        client.update_training_data(update)
        sent += 1
        if frame_every and (sent % frame_every == 1 or frame_every == 1):
            client.update_vision_data(simulation.frame(), response_time=round(simulation.rng.uniform(0.4, 1.6), 3))
        if done:
            logger.info(
                "episode %d ended: reward %.1f over %d steps",
                simulation.episode - 1,
                update["episode_reward"],
                update["episode_length"],
            )
        if interval:
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)  # pacing, and wakes at once when asked to stop
            else:
                next_at = time.monotonic()
    return sent


def main(argv: list[str] | None = None) -> int:
    """Command line: feed a HUD until Ctrl-C (or --steps / --seconds)."""
    parser = argparse.ArgumentParser(description="Feed a HUD with a simulated Zelda RL + LLM training run.")
    parser.add_argument(
        "--url",
        default=os.environ.get("HUD_URL") or "http://localhost:8086",
        help="the HUD's base URL (default: $HUD_URL or http://localhost:8086)",
    )
    parser.add_argument("--run-id", default=None, help="the run's name (default: $HUD_RUN_ID or 'default')")
    parser.add_argument("--token", default=None, help="the HUD's write token (default: $HUD_TOKEN)")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="updates per second (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many updates")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--seed", type=int, default=None, help="seed, for the same run every time")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    client = HUDClient(args.url, run_id=args.run_id, token=args.token)
    logger.info("feeding %s at %.3g updates/s; open it in a browser (Ctrl-C stops)", args.url, args.rate)
    try:
        run(client, steps=args.steps, rate=args.rate, seconds=args.seconds, seed=args.seed)
    except KeyboardInterrupt:
        logger.info("stopped")
    finally:
        delivered = client.flush(timeout=5.0)
        stats = client.stats
        client.close(timeout=1.0)
    logger.info(
        "the HUD accepted %d updates (%d dropped)%s",
        stats.sent,
        stats.dropped,
        "" if delivered else f"; not all delivered: {stats.last_error}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
