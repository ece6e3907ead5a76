"""Live charts in a real browser: history + live without gaps or doubles, smoothing, chart choice, lists, layout.

The page exposes a small read-only hook, ``window.hudCharts`` (static/js/charts.js):
``names()``, ``points(name)`` (points the chart has drawn), ``data(name)`` ({x, raw,
smoothed} copies of the drawn arrays) and ``smoothing()``. Waits poll it through
``page.evaluate`` with a deadline (the CSP forbids ``wait_for_function`` strings).
"""

from __future__ import annotations

import json
import math
import random
import re
import threading

import pytest
import requests
from playwright.sync_api import expect
from test_browser_dashboard import XSS, field, metric_row, png_bytes, post, post_frame, post_training

from helpers import SSEReader, start_server_process, wait_until

TIMEOUT_MS = 10_000  # how long a UI expectation may take to come true
TIMEOUT_S = TIMEOUT_MS / 1000
WIDTHS = (1920, 1366, 768)


def post_batch(server, updates: list[dict], run_id: str | None = None) -> dict:
    """Send updates in one /api/batch POST."""
    return post(server, "/api/batch", {"session_id": None, "run_id": run_id, "updates": updates})


def post_ndjson(server, updates: list[dict], run_id: str | None = None) -> dict:
    """Send updates in one /api/batch POST in its NDJSON form: a header line, then one update a line."""
    lines = [json.dumps({"run_id": run_id, "session_id": None}), *map(json.dumps, updates)]
    response = requests.post(
        server.url + "/api/batch",
        data="\n".join(lines) + "\n",
        headers={"Content-Type": "application/x-ndjson"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def reward_updates(start: int, stop: int) -> list[dict]:
    """Updates with global_step start..stop-1 and an episode_reward each."""
    return [{"global_step": step, "episode_reward": step / 10} for step in range(start, stop)]


def plausible_run(count: int, seed: int = 7) -> list[dict]:
    """A run that looks real: a noisy reward that rises, episodes that get shorter, a falling loss."""
    rng = random.Random(seed)
    updates = []
    for i in range(count):
        progress = 1 - math.exp(-i / 160)
        updates.append(
            {
                "global_step": (i + 1) * 2048,
                "epoch": i // 100,
                "episode": i + 1,
                "episode_id": f"ep-{i + 1}",
                "episode_reward": round(-4 + 46 * progress + rng.gauss(0, 4.5), 3),
                "episode_length": int(1800 - 1050 * progress + rng.gauss(0, 90)),
                "llm_success_rate": round(min(1.0, 0.55 + 0.4 * progress + rng.gauss(0, 0.03)), 4),
                "llm_alignment": round(min(1.0, 0.4 + 0.45 * progress + rng.gauss(0, 0.05)), 4),
                "llm_calls": 12 * (i + 1),
                "loss": {
                    "policy": round(0.9 * math.exp(-i / 220) + abs(rng.gauss(0, 0.04)), 5),
                    "value": round(2.5 * math.exp(-i / 300) + abs(rng.gauss(0, 0.1)), 5),
                },
                "entropy": round(1.6 - 0.8 * progress + rng.gauss(0, 0.03), 4),
                "fps": int(rng.gauss(930, 25)),
                "llm_suggestion": [
                    "Explore the eastern path toward the Maku Tree",
                    "Enemies ahead: use the sword, then go north",
                    "Enter the building to the west for an item",
                    "Head north past the pond to reach the dungeon",
                    "Backtrack to Horon Village and talk to the NPC",
                ][(i // 45) % 5],
                "location": "Horon Village",
                "room_id": 42,
                "position": {"x": 7, "y": 9},
                "health": {"current": 10 + (i % 3) * 4, "max": 24},
                "entities": {"npcs": 1, "enemies": 3, "items": 2},
                "milestones": {"maku_tree_entered": i > 150, "dungeon_entered": i > 320, "sword_usage": i // 7},
                "exploration": {
                    "rooms_discovered": 3 + i // 12,
                    "grid_areas": 10 + i // 5,
                    "buildings_entered": i // 60,
                },
            }
        )
    return updates


def charts(page, method: str, *args):
    """Call ``window.hudCharts[method](*args)`` in the page."""
    return page.evaluate("([method, args]) => window.hudCharts[method](...args)", [method, list(args)])


def wait_points(page, name: str, count: int, timeout: float = TIMEOUT_S) -> None:
    """Wait until the chart of ``name`` has drawn exactly ``count`` points."""
    seen = []

    def done():
        seen.append(charts(page, "points", name))
        return seen[-1] == count

    try:
        wait_until(done, timeout, message=f"{count} points in the {name} chart")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {seen[-1] if seen else None}") from None


def wait_connected(page) -> None:
    """Wait until the stream is open."""
    expect(page.locator("#connection-text")).to_have_text("connected", timeout=TIMEOUT_MS)


def reload(page, problems) -> None:
    """Reload the page; the old page's stream (or a history fetch) being aborted by it is expected."""
    problems.assert_none()
    page.reload()
    wait_connected(page)
    problems.failed_requests[:] = [
        failure for failure in problems.failed_requests if not failure.endswith("net::ERR_ABORTED")
    ]


def chart_card(page, name: str):
    """The chart card of metric ``name``."""
    return page.locator(f'#charts .chart[data-metric="{name}"]')


def test_reward_chart_holds_500_updates(page, page_problems, live_server):
    """500 updates posted to an open page all land in the reward chart, once each, in step order."""
    wait_connected(page)
    post_batch(live_server, reward_updates(0, 500))
    wait_points(page, "episode_reward", 500)
    data = charts(page, "data", "episode_reward")
    assert data["x"] == list(range(500))
    assert data["raw"] == pytest.approx([step / 10 for step in range(500)])
    assert charts(page, "names") == ["episode_reward", "episode_length"]  # the defaults
    assert page.locator("style").count() == 0, "a <style> element was injected (the CSP forbids it)"
    assert page.evaluate("[...document.styleSheets].some(s => (s.href || '').endsWith('/uplot/uPlot.min.css'))")
    page_problems.assert_none()


# One run of six updates: two episodes end inside it, the suggestion changes twice.
NDJSON_RUN = [
    {"global_step": 100, "episode": 1, "episode_length": 10, "custom": {"loss": 1.0}},
    {"global_step": 110, "episode_length": 20, "episode_reward": 2.5, "llm_suggestion": "Go north"},
    {"global_step": 120, "episode": 2, "episode_length": 5, "llm_suggestion": "Go north"},
    {"global_step": 130, "episode_length": 15, "episode_reward": 4.25},
    {"global_step": 140, "episode": 3, "episode_length": 1, "custom": {"loss": 0.5}},
    {"global_step": 150, "episode_length": 8, "llm_suggestion": "Use the sword", "custom": {"loss": 0.25}},
]


def test_ndjson_batch_shows_every_update(page, page_problems, live_server):
    """Six updates in one NDJSON POST (one stream event) reach an open page as six updates, in order."""
    wait_connected(page)
    reader = SSEReader(live_server.url + "/stream")
    try:
        post_ndjson(live_server, NDJSON_RUN, run_id="ndjson-run")
        event = json.loads(reader.next_named()["data"])
        while event.get("snapshot"):
            event = json.loads(reader.next_named()["data"])
    finally:
        reader.close()
    assert len(event["batch"]) == len(NDJSON_RUN), "the server sent the batch as more than one event"

    # The cards show the state merged through the last update; the counter counts every update.
    expect(field(page, "global_step")).to_have_text("150", timeout=TIMEOUT_MS)
    expect(field(page, "episode")).to_have_text("3")
    expect(field(page, "episode_length")).to_have_text("8")
    expect(field(page, "episode_reward")).to_have_text("4.25")
    expect(field(page, "llm_suggestion")).to_have_text("Use the sword")
    expect(metric_row(page, "custom.loss").locator("td")).to_have_text("0.25")
    expect(page.locator("#update-count")).to_have_text("6 updates")
    expect(page.locator("#session-label")).to_have_text("run ndjson-run")

    # One chart point per update that carries the metric, each at its own step.
    wait_points(page, "episode_length", 6)
    data = charts(page, "data", "episode_length")
    assert data["x"] == [100, 110, 120, 130, 140, 150]
    assert data["raw"] == [10, 20, 5, 15, 1, 8]
    wait_points(page, "episode_reward", 2)
    assert charts(page, "data", "episode_reward")["x"] == [110, 130]

    # Each episode_reward ended an episode: number and length as merged up to that update.
    rows = page.locator("#episodes-body tr")
    expect(rows).to_have_count(2, timeout=TIMEOUT_MS)
    clock = re.compile(r"\d\d:\d\d:\d\d")
    expect(rows.nth(0).locator("th, td")).to_have_text(["2", "4.25", "15", "130", clock])
    expect(rows.nth(1).locator("th, td")).to_have_text(["1", "2.5", "20", "110", clock])
    log_items = page.locator("#suggestion-log .log__item")
    expect(log_items).to_have_count(2, timeout=TIMEOUT_MS)  # "Go north" repeated is one entry
    expect(log_items.nth(0).locator(".log__step")).to_have_text("step 150")
    expect(log_items.nth(1).locator(".log__text")).to_have_text("Go north")

    # The next batch (JSON form) counts on from there.
    post_batch(live_server, [{"global_step": 160, "episode_length": 9}], run_id="ndjson-run")
    expect(page.locator("#update-count")).to_have_text("7 updates", timeout=TIMEOUT_MS)
    wait_points(page, "episode_length", 7)
    page_problems.assert_none()


def test_late_page_shows_history_then_live(open_page, page_problems, live_server):
    """A page opened after 300 updates shows all 300 from /api/history, then live ones without doubles."""
    post_batch(live_server, reward_updates(0, 300))
    page = open_page()
    wait_points(page, "episode_reward", 300)
    post_batch(live_server, reward_updates(300, 350))
    wait_points(page, "episode_reward", 350)
    assert charts(page, "data", "episode_reward")["x"] == list(range(350))
    page_problems.assert_none()


def test_page_opened_during_a_stream_misses_and_doubles_nothing(open_page, page_problems, live_server):
    """Updates posted while the page connects and loads its history each end up in the chart exactly once."""
    post_batch(live_server, reward_updates(0, 100))
    stop = threading.Event()
    sent = [100]

    def feed():
        while sent[0] < 1000 and not stop.is_set():
            post_batch(live_server, reward_updates(sent[0], sent[0] + 10))
            sent[0] += 10

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        page = open_page()
    finally:
        feeder.join(timeout=60)
        stop.set()
    assert sent[0] == 1000
    wait_points(page, "episode_reward", 1000)
    assert charts(page, "data", "episode_reward")["x"] == list(range(1000))
    page_problems.assert_none()


def ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard's debiased EMA, written out in Python to check the page's."""
    out, last = [], 0.0
    for n, value in enumerate(values, start=1):
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**n))
    return out


def test_smoothing_changes_the_drawn_line(page, page_problems, live_server):
    """The slider sets TensorBoard's debiased EMA on every chart; 0 draws the raw values; the weight survives reload."""
    wait_connected(page)
    rng = random.Random(3)
    values = [round(step / 20 + rng.gauss(0, 3), 3) for step in range(200)]
    post_batch(live_server, [{"global_step": s, "episode_reward": v} for s, v in enumerate(values)])
    wait_points(page, "episode_reward", 200)

    page.locator("#smoothing").fill("0.9")
    expect(page.locator("#smoothing-value")).to_have_text("0.90")
    wait_until(lambda: charts(page, "smoothing") == 0.9, TIMEOUT_S, message="the new weight")
    wait_until(
        lambda: charts(page, "data", "episode_reward")["smoothed"] == pytest.approx(ema(values, 0.9)),
        TIMEOUT_S,
        message="the smoothed line at 0.9",
    )
    data = charts(page, "data", "episode_reward")
    assert data["raw"] == pytest.approx(values), "the raw line stays as it was"
    assert data["smoothed"] != pytest.approx(values)

    page.locator("#smoothing").fill("0")
    expect(page.locator("#smoothing-value")).to_have_text("0.00")
    wait_until(
        lambda: charts(page, "data", "episode_reward")["smoothed"] == values,
        TIMEOUT_S,
        message="the smoothed line to equal the raw one at 0",
    )

    page.locator("#smoothing").fill("0.75")
    reload(page, page_problems)
    expect(page.locator("#smoothing-value")).to_have_text("0.75", timeout=TIMEOUT_MS)
    assert charts(page, "smoothing") == 0.75
    page_problems.assert_none()


def test_add_and_remove_charts_survive_reload(page, page_problems, live_server):
    """A metric row click (or Enter on it, or a card's chart button) adds a chart; × removes it; both survive reload."""
    wait_connected(page)
    post_batch(
        live_server,
        [{"global_step": s, "custom": {"loss": 1 / (s + 1), "kl": s / 100}, "note": "text"} for s in range(40)],
    )
    row = metric_row(page, "custom.loss")
    expect(row.locator("td")).to_have_text("0.025", timeout=TIMEOUT_MS)
    expect(row).to_have_class(re.compile("is-chartable"))
    expect(metric_row(page, "note")).not_to_have_class(re.compile("is-chartable"))  # text is no metric
    expect(metric_row(page, "note").locator("button")).to_be_disabled()

    row.locator("td").click()  # anywhere on the row
    expect(chart_card(page, "custom.loss")).to_be_visible(timeout=TIMEOUT_MS)
    wait_points(page, "custom.loss", 40)  # seeded from /api/history
    expect(row).to_have_class(re.compile("is-charted"))
    expect(row.locator("button")).to_have_attribute("aria-pressed", "true")

    kl_button = metric_row(page, "custom.kl").locator("button")
    kl_button.focus()
    page.keyboard.press("Enter")  # keyboard-accessible
    expect(chart_card(page, "custom.kl")).to_be_visible(timeout=TIMEOUT_MS)
    page.locator('.chart-toggle[data-chart="global_step"]').click()  # beside a card's number
    expect(chart_card(page, "global_step")).to_be_visible(timeout=TIMEOUT_MS)
    wait_points(page, "global_step", 40)

    post_batch(live_server, [{"global_step": 40, "custom": {"loss": 0.01, "kl": 0.4}}])
    wait_points(page, "custom.loss", 41)  # live points reach the added chart
    expected = ["episode_reward", "episode_length", "custom.loss", "custom.kl", "global_step"]
    assert charts(page, "names") == expected

    reload(page, page_problems)
    expect(chart_card(page, "custom.loss")).to_be_visible(timeout=TIMEOUT_MS)
    assert charts(page, "names") == expected
    wait_points(page, "custom.loss", 41)

    chart_card(page, "custom.loss").get_by_role("button", name="Remove the custom.loss chart").click()
    expect(chart_card(page, "custom.loss")).to_have_count(0)
    expect(metric_row(page, "custom.loss")).not_to_have_class(re.compile("is-charted"))
    chart_card(page, "episode_length").locator(".chart__remove").click()
    reload(page, page_problems)
    expect(chart_card(page, "custom.kl")).to_be_visible(timeout=TIMEOUT_MS)
    assert charts(page, "names") == ["episode_reward", "custom.kl", "global_step"]
    assert charts(page, "points", "custom.loss") is None
    page_problems.assert_none()


def test_a_chart_of_a_metric_with_a_comma_in_its_name_gets_its_history(page, page_problems, live_server):
    """A metric named with a comma, charted after 30 updates, starts from all 30 of them (its name is not split)."""
    wait_connected(page)
    name = "reward (a,b)"
    post_batch(live_server, [{"global_step": s, name: s / 2} for s in range(30)])
    row = metric_row(page, name)
    expect(row.locator("td")).to_have_text("14.5", timeout=TIMEOUT_MS)
    row.locator("td").click()
    expect(chart_card(page, name)).to_be_visible(timeout=TIMEOUT_MS)
    wait_points(page, name, 30)  # seeded from /api/history
    assert charts(page, "data", name)["raw"] == [s / 2 for s in range(30)]
    page_problems.assert_none()


def test_a_resumed_run_replaces_the_steps_it_redoes(page, page_problems, live_server):
    """Training resumed from an earlier checkpoint: the chart drops the old points from there, live and after reload."""
    wait_connected(page)
    post_batch(live_server, [{"global_step": s, "episode_reward": 1.0} for s in range(50)])
    wait_points(page, "episode_reward", 50)
    post_batch(live_server, [{"global_step": s, "episode_reward": 2.0} for s in range(30, 40)])
    wait_points(page, "episode_reward", 40)
    expected = {"x": list(range(40)), "raw": [1.0] * 30 + [2.0] * 10}

    def drawn():
        data = charts(page, "data", "episode_reward")
        return {"x": data["x"], "raw": data["raw"]}

    assert drawn() == expected
    reload(page, page_problems)
    wait_points(page, "episode_reward", 40)  # from /api/history, which leaves out the same points
    assert drawn() == expected
    page_problems.assert_none()


def test_suggestion_log_and_episodes_fill_from_history_and_live(open_page, page_problems, live_server):
    """The suggestion log and episodes table start from /api/history and grow with live updates, newest first."""
    post_batch(
        live_server,
        [
            {
                "global_step": 10,
                "episode": 1,
                "episode_length": 100,
                "episode_reward": 1.5,
                "llm_suggestion": "Go north",
            },
            {"global_step": 20, "llm_suggestion": "Go north"},  # the same text: no new entry
            {"global_step": 30, "episode": 2, "episode_length": 90, "episode_reward": 2.5, "llm_suggestion": XSS},
        ],
    )
    page = open_page()
    log_items = page.locator("#suggestion-log .log__item")
    episode_rows = page.locator("#episodes-body tr")
    expect(log_items).to_have_count(2, timeout=TIMEOUT_MS)
    expect(log_items.nth(0).locator(".log__text")).to_have_text(XSS)  # literal text, newest first
    expect(log_items.nth(0).locator(".log__step")).to_have_text("step 30")
    expect(log_items.nth(1).locator(".log__text")).to_have_text("Go north")
    expect(episode_rows).to_have_count(2)
    expect(episode_rows.nth(0).locator("th, td")).to_have_text(["2", "2.5", "90", "30", re.compile(r"\d\d:\d\d:\d\d")])
    expect(page.locator("#episodes-count")).to_have_text("2")

    post_batch(
        live_server,
        [
            {"global_step": 40, "episode": 3, "episode_length": 80, "episode_reward": 3.25},
            {"global_step": 50, "llm_suggestion": "Use the sword"},
        ],
    )
    expect(episode_rows).to_have_count(3, timeout=TIMEOUT_MS)
    expect(episode_rows.nth(0).locator("th, td").nth(1)).to_have_text("3.25")
    expect(episode_rows.nth(0).locator("th")).to_have_text("3")
    expect(log_items).to_have_count(3)
    expect(log_items.nth(0).locator(".log__text")).to_have_text("Use the sword")
    expect(page.locator("#suggestion-count")).to_have_text("3")
    assert page.evaluate("window.__pwned") is None
    page_problems.assert_none()


def test_reset_clears_charts_and_lists(page, page_problems, live_server):
    """A new run taking over empties the charts, episodes and suggestions, then shows only its own points."""
    wait_connected(page)
    post_batch(live_server, [{**u, "llm_suggestion": "old"} for u in reward_updates(0, 20)])
    wait_points(page, "episode_reward", 20)
    expect(page.locator("#episodes-body tr")).to_have_count(20, timeout=TIMEOUT_MS)
    post(live_server, "/api/reset_session", {})
    post(live_server, "/api/register_session", {"run_id": "second-run"})
    wait_points(page, "episode_reward", 0)
    expect(page.locator("#episodes-body tr")).to_have_count(0, timeout=TIMEOUT_MS)
    expect(page.locator("#suggestion-log .log__item")).to_have_count(0)
    post_batch(live_server, reward_updates(100, 105), run_id="second-run")
    wait_points(page, "episode_reward", 5)
    assert charts(page, "data", "episode_reward")["x"] == list(range(100, 105))
    page_problems.assert_none()


def test_server_restart_reloads_the_history(browser):
    """After the server restarts (new boot id) the charts hold the new server's history, not the old points."""
    server = start_server_process()
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        post_batch(server, reward_updates(0, 30))
        wait_points(page, "episode_reward", 30)
        server.stop()
        expect(page.locator("#connection-text")).to_have_text("reconnecting", timeout=TIMEOUT_MS)
        server = start_server_process(port=server.port)
        post_batch(server, reward_updates(500, 510))
        wait_points(page, "episode_reward", 10)
        assert charts(page, "data", "episode_reward")["x"] == list(range(500, 510))
    finally:
        context.close()
        server.stop()


@pytest.mark.hud_settings(stale_after=1)
def test_stale_banner_shows_and_hides(page, page_problems, live_server):
    """With no update for stale_after seconds a banner says so; the next update hides it."""
    wait_connected(page)
    banner = page.locator("#stale-banner")
    expect(banner).to_be_hidden()
    post_training(live_server, {"episode": 1})
    expect(banner).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#stale-text")).to_have_text(re.compile(r"^No training update for \d+ s\.$"))
    post_training(live_server, {"episode": 2})
    expect(banner).to_be_hidden(timeout=TIMEOUT_MS)
    page_problems.assert_none()


@pytest.mark.parametrize("width", WIDTHS)
def test_charts_layout_fits_the_width(open_page, page_problems, live_server, artifacts_dir, width):
    """At 1920, 1366 and 768 px the dashboard with charts has no horizontal overflow; charts fill their cards."""
    post_batch(live_server, plausible_run(400))
    post_frame(live_server, png_bytes(160, 144, (104, 176, 72)), response_time=1.284)
    page = open_page(width=width, height=1000)
    wait_points(page, "episode_reward", 400)
    page.locator('.chart-toggle[data-chart="llm_success_rate"]').click()
    metric_row(page, "loss.policy").click()
    wait_points(page, "loss.policy", 400)
    page.evaluate("async () => { await document.fonts.ready; }")
    page.screenshot(path=str(artifacts_dir / f"charts-{width}.png"), full_page=True)
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll_width <= inner_width, f"horizontal overflow at {width}px: {scroll_width} > {inner_width}"
    widths = page.evaluate("""() => [...document.querySelectorAll('#charts .chart')].map(card => [
        card.querySelector('.chart__plot').clientWidth, card.querySelector('canvas').getBoundingClientRect().width])""")
    assert len(widths) == 4
    for plot_width, canvas_width in widths:
        assert abs(plot_width - canvas_width) <= 2, f"a chart does not fill its card: {widths}"
    page_problems.assert_none()


def test_charts_follow_the_window_size(open_page, page_problems, live_server):
    """Narrowing the window narrows the charts (ResizeObserver), with no horizontal overflow."""
    post_batch(live_server, reward_updates(0, 50))
    page = open_page(width=1366, height=900)
    wait_points(page, "episode_reward", 50)
    canvas = "() => document.querySelector('#charts .chart canvas').getBoundingClientRect().width"
    wide = page.evaluate(canvas)
    page.set_viewport_size({"width": 700, "height": 900})
    wait_until(lambda: page.evaluate(canvas) < min(wide, 700) - 20, TIMEOUT_S, message="a narrower chart")
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll_width <= inner_width
    page_problems.assert_none()


CHART_LOGIC = """async () => {
  const m = await import('/static/js/hud-logic.js');
  const buffer = new m.SeriesBuffer(8);
  for (let i = 0; i < 100; i += 1) buffer.push(i, i * 2);
  const resumed = new m.SeriesBuffer(100);
  for (const [x, y] of [[0, 0], [1, 1], [2, 2], [2, 2.5], [3, 3], [4, 4], [2, 20], [3, 30]]) {
    resumed.push(x, y);
  }
  const same = new m.SeriesBuffer(10);
  for (const y of [1, 2, 3]) same.push(5, y);
  return {
    resumed: [resumed.xs, resumed.ys],
    same: [same.xs, same.ys],
    ema: m.emaSmooth([1, 2, 3], 0.5),
    raw: m.emaSmooth([1, 5, 2], 0),
    constant: m.emaSmooth([0.1, 0.1, 0.1], 0.9),
    gaps: m.emaSmooth([1, null, 3], 0.5),
    clamp: [m.clampSmoothing(2), m.clampSmoothing(-1), m.clampSmoothing("0.5"), m.clampSmoothing("x")],
    bufferLength: buffer.length, bufferFirst: buffer.xs[0], bufferLast: buffer.xs[buffer.length - 1],
    bufferYs: buffer.ys.every((y, i) => y === buffer.xs[i] * 2),
    leaves: m.numericLeaves({a: 1, b: {c: 2.5, d: true, e: "x", f: [1]}, g: null}),
    ids: [m.parseEventId("ab-cd-12"), m.parseEventId("nodash"), m.parseEventId("b-x")],
    ticks: [m.formatTick(1500), m.formatTick(0.25), m.formatTick(0)],
  };
}"""


def test_chart_logic_module(page):
    """hud-logic.js smooths like TensorBoard, caps series keeping first and latest points, rewinds, reads event ids."""
    result = page.evaluate(CHART_LOGIC)
    assert result["ema"] == pytest.approx([1.0, 5 / 3, 2.125 / 0.875])
    assert result["raw"] == [1, 5, 2]
    assert result["constant"] == [0.1, 0.1, 0.1]
    assert result["gaps"][1] is None and result["gaps"][2] == pytest.approx(1.75 / 0.75)
    assert result["clamp"] == [0.99, 0, 0.5, 0]
    assert result["bufferLength"] <= 8
    assert (result["bufferFirst"], result["bufferLast"]) == (0, 99)
    assert result["bufferYs"]
    # A step going back (a resumed checkpoint) drops the points at or past it; equal steps in a row stay.
    assert result["resumed"] == [[0, 1, 2, 3], [0, 1, 20, 30]]
    assert result["same"] == [[5, 5, 5], [1, 2, 3]]
    assert result["leaves"] == [["a", 1], ["b.c", 2.5]]
    assert result["ids"] == [{"boot": "ab-cd", "seq": 12}, None, None]
    assert result["ticks"] == ["1.5K", "0.25", "0"]
