"""The dashboard in a real browser: waiting state, live updates, snapshot, safety, layout.

The page runs under the server's CSP (no eval), so waits use ``expect`` and
``page.evaluate`` (run by the browser's debugger protocol), never a
``wait_for_function`` string, which Playwright would have to eval in the page.
"""

from __future__ import annotations

import base64
import re
import struct
import zlib

import pytest
import requests
from playwright.sync_api import expect

from helpers import start_server_process

TIMEOUT_MS = 10_000  # how long a UI expectation may take to come true
XSS = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
WIDTHS = (1920, 1366, 768)


def png_bytes(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (177, 94, 255)) -> bytes:
    """A small valid PNG, built by hand so the tests need no imaging library."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def post(server, path: str, body: dict) -> dict:
    """POST JSON to the server and return its JSON answer (failing on any error status)."""
    response = requests.post(server.url + path, json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def post_training(server, data: dict, run_id: str | None = None) -> dict:
    """Send one training update (from the default run unless ``run_id`` is given)."""
    return post(server, "/api/update_training", {"session_id": None, "run_id": run_id, "data": data})


def post_frame(server, image: bytes, response_time: float | None = 0.25) -> dict:
    """Send one frame."""
    return post(
        server,
        "/api/update_vision",
        {"session_id": None, "image_base64": base64.b64encode(image).decode(), "response_time": response_time},
    )


def field(page, name: str):
    """The element that shows the known field ``name`` (dotted for nested fields)."""
    return page.locator(f'[data-field="{name}"]')


def metric_row(page, key: str):
    """The Other-metrics row for ``key``."""
    return page.locator("#metrics-body tr").filter(has=page.locator("th", has_text=re.compile(f"^{re.escape(key)}$")))


SAMPLE = {
    "epoch": 2,
    "episode": 17,
    "episode_id": "ep-17",
    "global_step": 123456,
    "episode_reward": 12.3456,
    "episode_length": 987,
    "location": "Horon Village",
    "room_id": 42,
    "position": {"x": 7, "y": 9},
    "health": {"current": 10, "max": 24},  # quarter-hearts: 2.5 of 6 hearts
    "entities": {"npcs": 1, "enemies": 4, "items": 2},
    "llm_suggestion": "Go north",
    "llm_calls": 1500,
    "llm_success_rate": 0.875,
    "llm_alignment": 0.5,
    "milestones": {"maku_tree_entered": True, "dungeon_entered": False, "sword_usage": 12},
    "exploration": {"rooms_discovered": 30, "grid_areas": 55, "buildings_entered": 3},
}


def test_waiting_page_loads_cleanly(page, page_problems, live_server):
    """The page loads with no console error and no request outside its origin, and waits for a session."""
    expect(page.locator("#waiting")).to_have_text(re.compile("Waiting for training session..."), timeout=TIMEOUT_MS)
    expect(page.locator("#waiting")).to_be_visible()
    expect(page.locator("#panels")).to_be_hidden()
    expect(page.locator("#connection-text")).to_have_text("connected", timeout=TIMEOUT_MS)
    expect(page).to_have_title("Zelda RL-LLM HUD")
    faces = page.evaluate("async () => (await document.fonts.load('700 16px Orbitron')).length")
    assert faces == 1, "the self-hosted Orbitron font did not load"
    page_problems.assert_none()


def test_shows_training_update_and_frame(page, page_problems, live_server):
    """A posted training update fills the cards (numbers, hearts, milestones) and a posted frame shows."""
    expect(page.locator("#connection-text")).to_have_text("connected", timeout=TIMEOUT_MS)
    post_training(live_server, SAMPLE)
    expect(page.locator("#waiting")).to_be_hidden(timeout=TIMEOUT_MS)
    expect(field(page, "global_step")).to_have_text("123,456", timeout=TIMEOUT_MS)
    expect(field(page, "episode_reward")).to_have_text("12.35")
    expect(field(page, "room_id")).to_have_text("42")
    expect(field(page, "position")).to_have_text("7, 9")
    expect(field(page, "health")).to_have_text("10 / 24")
    expect(field(page, "llm_success_rate")).to_have_text("87.5%")
    expect(field(page, "entities.enemies")).to_have_text("4")
    expect(field(page, "exploration.grid_areas")).to_have_text("55")
    expect(page.locator("#hearts .heart--full")).to_have_count(2)
    expect(page.locator("#hearts .heart--half")).to_have_count(1)
    expect(page.locator("#hearts .heart--empty")).to_have_count(3)
    expect(page.locator('[data-milestone="milestones.maku_tree_entered"]')).to_have_class(re.compile("is-reached"))
    expect(page.locator('[data-milestone="milestones.dungeon_entered"]')).not_to_have_class(re.compile("is-reached"))

    post_frame(live_server, png_bytes(), response_time=0.25)
    frame = page.locator("#vision-frame")
    expect(frame).to_have_attribute("src", re.compile(r"^data:image/png;base64,"), timeout=TIMEOUT_MS)
    expect(frame).to_be_visible()
    expect(page.locator("#vision-response-time")).to_have_text("250 ms")
    assert page.evaluate("getComputedStyle(document.querySelector('#vision-frame')).imageRendering") == "pixelated"
    expect(frame).to_have_js_property("naturalWidth", 2)  # the image decoded

    post_training(live_server, {"global_step": 123457})  # a live update merges into the state
    expect(field(page, "global_step")).to_have_text("123,457", timeout=TIMEOUT_MS)
    expect(field(page, "episode")).to_have_text("17")
    page_problems.assert_none()


def test_untrusted_text_is_shown_literally(page, page_problems, live_server):
    """An LLM suggestion (or metric) carrying HTML is shown as literal text and runs nothing."""
    post_training(live_server, {"llm_suggestion": XSS, "notes": XSS, "<b>key</b>": 1})
    expect(field(page, "llm_suggestion")).to_have_text(XSS, timeout=TIMEOUT_MS)
    expect(metric_row(page, "notes").locator("td")).to_have_text(XSS)
    expect(metric_row(page, "<b>key</b>")).to_have_count(1)
    assert page.evaluate("window.__pwned") is None
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator("#panels script, #panels b").count() == 0
    page_problems.assert_none()


def test_unknown_metric_goes_to_other_metrics(page, page_problems, live_server):
    """A field with no card appears in Other metrics flattened as a.b, and its row updates in place."""
    post_training(live_server, {"episode": 1, "custom": {"loss": 0.5}})
    row = metric_row(page, "custom.loss")
    expect(row.locator("td")).to_have_text("0.5", timeout=TIMEOUT_MS)
    expect(metric_row(page, "episode")).to_have_count(0)  # known fields stay in their cards
    row.evaluate("r => { r.dataset.marker = 'same-row'; }")

    post_training(live_server, {"custom": {"loss": 0.25, "kl": None}})
    expect(row.locator("td")).to_have_text("0.25", timeout=TIMEOUT_MS)
    expect(metric_row(page, "custom.kl").locator("td")).to_have_text("—")
    assert row.get_attribute("data-marker") == "same-row", "the row was rebuilt, not updated"
    keys = page.locator("#metrics-body th").all_text_contents()
    assert keys == sorted(keys)
    page_problems.assert_none()


def test_new_page_shows_the_present_at_once(open_page, page_problems, live_server):
    """A page opened after updates shows the merged state and the latest frame from the snapshot."""
    post_training(live_server, {"global_step": 10, "episode_reward": 1.5})
    post_training(live_server, {"global_step": 20, "custom": {"loss": 0.125}})
    post_frame(live_server, png_bytes(3, 3), response_time=1.5)
    page = open_page()
    expect(field(page, "global_step")).to_have_text("20", timeout=TIMEOUT_MS)
    expect(field(page, "episode_reward")).to_have_text("1.5")
    expect(metric_row(page, "custom.loss").locator("td")).to_have_text("0.125")
    expect(page.locator("#vision-frame")).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    expect(page.locator("#vision-response-time")).to_have_text("1.5 s")
    expect(page.locator("#update-count")).to_have_text("2 updates")
    page_problems.assert_none()


def test_reset_clears_the_dashboard(page, page_problems, live_server):
    """After a reset the next session clears the page back to "Waiting for training session..."."""
    post_training(live_server, {"global_step": 5, "custom": {"loss": 1.0}})
    post_frame(live_server, png_bytes())
    expect(page.locator("#vision-frame")).to_be_visible(timeout=TIMEOUT_MS)
    post(live_server, "/api/reset_session", {})
    post(live_server, "/api/register_session", {"run_id": "second-run"})
    expect(page.locator("#waiting")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#panels")).to_be_hidden()
    post_training(live_server, {"episode": 1}, run_id="second-run")
    expect(field(page, "episode")).to_have_text("1", timeout=TIMEOUT_MS)
    expect(field(page, "global_step")).to_have_text("—")
    expect(page.locator("#metrics-body tr")).to_have_count(0)
    expect(page.locator("#vision-frame")).to_be_hidden()
    page_problems.assert_none()


@pytest.mark.hud_settings(stale_after=1)
def test_badge_says_when_data_is_stale(page, page_problems, live_server):
    """With no update for stale_after seconds the badge says "no data for N s"."""
    expect(page.locator("#connection-text")).to_have_text("connected", timeout=TIMEOUT_MS)
    post_training(live_server, {"episode": 1})
    expect(page.locator("#connection-text")).to_have_text(re.compile(r"^no data for \d+ s$"), timeout=TIMEOUT_MS)
    expect(page.locator("#connection-badge")).to_have_class(re.compile("badge--stale"))
    post_training(live_server, {"episode": 2})
    expect(page.locator("#connection-text")).to_have_text("connected", timeout=TIMEOUT_MS)
    page_problems.assert_none()


def test_burst_of_updates_is_coalesced(page, page_problems, live_server):
    """A burst of 500 updates ends on the last value and renders far fewer times than it has events."""
    expect(page.locator("#connection-text")).to_have_text("connected", timeout=TIMEOUT_MS)
    post_training(live_server, {"global_step": 0})
    expect(field(page, "global_step")).to_have_text("0", timeout=TIMEOUT_MS)
    page.evaluate("""() => {
        window.__renders = 0;
        const el = document.querySelector('[data-field="global_step"]');
        new MutationObserver((records) => { window.__renders += records.length; })
            .observe(el, {childList: true, characterData: true, subtree: true});
    }""")
    updates = [{"global_step": step, "episode_reward": step / 10} for step in range(1, 501)]
    post(live_server, "/api/batch", {"session_id": None, "run_id": None, "updates": updates})
    expect(field(page, "global_step")).to_have_text("500", timeout=TIMEOUT_MS)
    renders = page.evaluate("window.__renders")
    assert 1 <= renders < 100, f"{renders} renders for 500 events"
    page_problems.assert_none()


@pytest.mark.parametrize("width", WIDTHS)
def test_layout_fits_the_width(open_page, page_problems, live_server, artifacts_dir, width):
    """At 1920, 1366 and 768 px the populated dashboard has no horizontal overflow (screenshot saved)."""
    post_training(
        live_server,
        {
            **SAMPLE,
            "llm_suggestion": "Head north past the pond " * 6,
            "custom": {"loss": 0.5, "a_rather_long_metric_name_for_layout": "x" * 150},
        },
    )
    post_frame(live_server, png_bytes(160, 144, (104, 176, 72)), response_time=1.284)
    page = open_page(width=width, height=1000)
    expect(field(page, "global_step")).to_have_text("123,456", timeout=TIMEOUT_MS)
    expect(page.locator("#vision-frame")).to_have_js_property("naturalWidth", 160, timeout=TIMEOUT_MS)
    page.evaluate("async () => { await document.fonts.ready; }")
    page.screenshot(path=str(artifacts_dir / f"dashboard-{width}.png"), full_page=True)
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll_width <= inner_width, f"horizontal overflow at {width}px: {scroll_width} > {inner_width}"
    page_problems.assert_none()


def test_reconnects_after_server_restart(browser):
    """While the server is down the badge says reconnecting; after a restart the page shows the new present."""
    server = start_server_process()
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        post_training(server, {"global_step": 1, "custom": {"loss": 0.5}})
        expect(field(page, "global_step")).to_have_text("1", timeout=TIMEOUT_MS)
        server.stop()
        expect(page.locator("#connection-text")).to_have_text("reconnecting", timeout=TIMEOUT_MS)
        server = start_server_process(port=server.port)
        post_training(server, {"global_step": 2})
        expect(page.locator("#connection-text")).to_have_text("connected", timeout=TIMEOUT_MS)
        expect(field(page, "global_step")).to_have_text("2", timeout=TIMEOUT_MS)
        expect(metric_row(page, "custom.loss")).to_have_count(0)  # the new server's snapshot replaced the state
    finally:
        context.close()
        server.stop()


LOGIC_CHECKS = """async () => {
  const m = await import('/static/js/hud-logic.js');
  return {
    flat: m.flatten({a: {b: 1, c: {d: null}}, e: [1, 2], f: {}}),
    other: [...m.otherMetrics({episode: 1, position: {x: 1, y: 2, z: 3}, custom: {loss: 0.5}})],
    ints: [m.formatNumber(1234567), m.formatNumber(-42), m.formatNumber(0)],
    floats: [m.formatNumber(3.14159), m.formatNumber(1234.5678), m.formatNumber(0.000012345),
             m.formatNumber(0.1 + 0.2)],
    nulls: [m.formatValue(null), m.formatValue(undefined), m.formatValue("")],
    hearts: [m.computeHearts({current: 10, max: 24}), m.computeHearts({current: 2.5, max: 3}),
             m.computeHearts({current: 1, max: 12}), m.computeHearts({current: -5, max: 6}),
             m.computeHearts({current: 1, max: 0}), m.computeHearts(null)],
    merged: m.applyTrainingEvent({a: 1, b: {x: 1}},
      {snapshot: false, updates: 1, steps: [5], batch: [{b: {y: 2}, c: 3}]}).state,
    batch: m.applyTrainingEvent({episode: 1, global_step: 7}, {
      snapshot: false, updates: 12, steps: [30, 31, 32],
      batch: [{episode: 2, episode_length: 9}, {episode_reward: 1.5, llm_suggestion: "Go"}, {llm_suggestion: ""}],
    }),
    noSteps: m.applyTrainingEvent({global_step: 7}, {snapshot: false, updates: 2, batch: [{a: 1}, {global_step: 9}]})
      .updates.map((u) => [u.step, u.count]),
    snapshot: m.applyTrainingEvent({a: 1}, {snapshot: true, reset: false, data: {z: 1}}),
    reset: m.applyTrainingEvent({a: 1}, {snapshot: true, reset: true, data: {}}),
    rates: [m.formatRate(0.875), m.formatRate(87.5), m.formatRate(250), m.formatRate(null)],
    seconds: [m.formatSeconds(0.25), m.formatSeconds(1.5), m.formatSeconds(null)],
  };
}"""


def test_pure_logic_module(page):
    """hud-logic.js flattens, formats, computes hearts and merges state as documented."""
    result = page.evaluate(LOGIC_CHECKS)
    assert result["flat"] == [["a.b", 1], ["a.c.d", None], ["e", [1, 2]], ["f", {}]]
    assert result["other"] == [["position.z", 3], ["custom.loss", 0.5]]
    assert result["ints"] == ["1,234,567", "-42", "0"]
    assert result["floats"] == ["3.142", "1,234.6", "1.23e-5", "0.3"]
    assert result["nulls"] == ["—", "—", "—"]
    assert result["hearts"] == [
        {"full": 2, "half": 1, "empty": 3, "unitsPerHeart": 4},  # quarter-hearts (max > 20)
        {"full": 2, "half": 1, "empty": 0, "unitsPerHeart": 1},  # whole hearts
        {"full": 1, "half": 0, "empty": 11, "unitsPerHeart": 1},
        {"full": 0, "half": 0, "empty": 6, "unitsPerHeart": 1},  # clamped at 0
        None,
        None,
    ]
    assert result["merged"] == {"a": 1, "b": {"y": 2}, "c": 3}  # a top-level key replaces the old value
    # A live batch is merged update by update, one record each: counts end at `updates`,
    # an episode_reward ends an episode read from the state merged up to that update.
    batch = result["batch"]
    assert batch["state"] == {
        "episode": 2,
        "global_step": 7,
        "episode_length": 9,
        "episode_reward": 1.5,
        "llm_suggestion": "",
    }
    assert [(u["step"], u["count"]) for u in batch["updates"]] == [(30, 10), (31, 11), (32, 12)]
    assert [u["episode"] for u in batch["updates"]] == [None, {"episode": 2, "reward": 1.5, "length": 9}, None]
    assert [u["suggestion"] for u in batch["updates"]] == [None, "Go", None]
    assert batch["updates"][0]["data"] == {"episode": 2, "episode_length": 9}
    assert result["noSteps"] == [[7, 1], [9, 2]]  # no steps: global_step, else the state's, else the count
    assert result["snapshot"] == {"state": {"z": 1}, "updates": []}
    assert result["reset"] == {"state": {}, "updates": []}
    assert result["rates"] == ["87.5%", "87.5%", "250", "—"]
    assert result["seconds"] == ["250 ms", "1.5 s", "—"]
