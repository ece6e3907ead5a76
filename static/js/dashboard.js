// HUD dashboard: listens to /stream (SSE) and renders the merged training
// state, live charts (charts.js) seeded from /api/history (history-sync.js),
// recent episodes and the LLM suggestion log. Data is only ever written with
// textContent (never innerHTML), and DOM work is coalesced into at most one
// render per animation frame.
import {
  BoundedLog, EMPTY, applyTrainingEvent, computeHearts, formatAge, formatClock, formatHealth,
  formatId, formatMilestone, formatNumber, formatPosition, formatRate, formatSeconds, formatValue,
  getPath, milestoneReached, numericLeaves, otherMetrics, parseEventId, rateFraction,
} from "./hud-logic.js";
import { ChartBoard } from "./charts.js";
import { HistorySync, fetchJson, historyUrl } from "./history-sync.js";

// ---- constants -----------------------------------------------------------
const STREAM_URL = "/stream";
const TRAINING_EVENT = "training_update";
const VISION_EVENT = "vision_update";
const RECENT_ITEMS = 50;               // episodes and suggestions listed (the server keeps as many)
const STALE_TICK_MS = 1000;            // how often the "no data for N s" badge is refreshed
const RECONNECT_MIN_MS = 1000;         // backoff when the browser gave up on the stream (e.g. 503)
const RECONNECT_MAX_MS = 30000;
const DEFAULT_STALE_AFTER_S = 30;
// Each rendered frame costs the browser a style, layout, paint and commit pass over
// the whole page (several ms on a small machine), whatever changed; at 100 updates a
// second that, not the data, is the cost. Numbers that change 4 times a second and
// charts twice still read as live; measured with 8 charts at 100 updates/s
// (bench/browser_charts.py): 2.9 ms of main thread per update when drawn every
// 100/200 ms, 1.6 ms every 250/500 ms. So data is rendered at most this often
// (user actions at once).
const MIN_RENDER_INTERVAL_MS = 250;
// Views that cost more to draw (8 canvases; tables that lay out whole) wait longer between draws.
const VIEW_INTERVALS_MS = { charts: 500, episodes: 1000, suggestionLog: 1000 };
const FRAME_MIME_TYPES = new Set(["image/jpeg", "image/png"]);

// ---- selectors -----------------------------------------------------------
const SELECTORS = {
  waiting: "#waiting",
  panels: "#panels",
  badge: "#connection-badge",
  badgeText: "#connection-text",
  sessionLabel: "#session-label",
  updateCount: "#update-count",
  fields: "[data-field]",
  meters: "[data-meter]",
  milestones: "[data-milestone]",
  hearts: "#hearts",
  suggestion: '[data-field="llm_suggestion"]',
  suggestionLog: "#suggestion-log",
  suggestionEmpty: "#suggestion-empty",
  suggestionCount: "#suggestion-count",
  episodesTable: "#episodes-table",
  episodesBody: "#episodes-body",
  episodesEmpty: "#episodes-empty",
  episodesCount: "#episodes-count",
  staleBanner: "#stale-banner",
  staleText: "#stale-text",
  charts: "#charts",
  chartsEmpty: "#charts-empty",
  smoothing: "#smoothing",
  smoothingValue: "#smoothing-value",
  metricsHint: "#metrics-hint",
  frame: "#vision-frame",
  frameEmpty: "#vision-empty",
  responseTime: "#vision-response-time",
  frameTime: "#vision-time",
  metricsTable: "#metrics-table",
  metricsBody: "#metrics-body",
  metricsEmpty: "#metrics-empty",
  metricsCount: "#metrics-count",
};

// Known card fields that are numbers, so a chart button sits beside them.
const CHARTABLE_FIELDS = new Set([
  "episode_reward", "global_step", "episode_length", "epoch", "episode",
  "llm_calls", "llm_success_rate", "llm_alignment",
  "entities.npcs", "entities.enemies", "entities.items",
  "exploration.rooms_discovered", "exploration.grid_areas", "exploration.buildings_entered",
]);

/** Set an element's text only when it changed (saves layout work at high rates). */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

// ---- model ---------------------------------------------------------------
/** What the page knows: merged state, latest frame, connection facts. */
const Model = {
  state: {},
  frame: null,              // {src, responseTime, ts} or null
  runId: null,
  updates: 0,
  connection: "connecting", // connecting | open | reconnecting
  lastDataAt: null,         // ms since epoch of the latest data, null before any

  /**
   * Apply a training_update payload (a snapshot, or a live batch merged update
   * by update); returns the batch's per-update records (none for a snapshot).
   */
  applyTraining(payload) {
    if (payload.reset) this.frame = null;
    const { state, updates } = applyTrainingEvent(this.state, payload);
    this.state = state;
    this.runId = payload.run_id ?? this.runId;
    if (typeof payload.updates === "number") this.updates = payload.updates;
    this.noteData(payload);
    return updates;
  },

  /** Apply a vision_update payload (image_base64 null clears the frame). */
  applyVision(payload) {
    const image = payload.image_base64;
    if (typeof image !== "string" || image === "") {
      this.frame = null;
      return;
    }
    const mime = FRAME_MIME_TYPES.has(payload.mime) ? payload.mime : "image/jpeg";
    const src = image.startsWith("data:image/") ? image : `data:${mime};base64,${image}`;
    this.frame = { src, responseTime: payload.response_time, ts: payload.ts };
    this.noteData(payload);
  },

  /** Track when data last arrived; a snapshot tells us via its server ts. */
  noteData(payload) {
    const now = Date.now();
    if (payload.snapshot) {
      const ts = typeof payload.ts === "number" ? payload.ts * 1000 : null;
      if (ts !== null) this.lastDataAt = Math.max(this.lastDataAt ?? 0, Math.min(now, ts));
      else if (payload.reset) this.lastDataAt = null;
    } else {
      this.lastDataAt = now;
    }
  },

  /** True once there is anything to show. */
  hasData() {
    return Object.keys(this.state).length > 0 || this.frame !== null;
  },
};

/** Recent episodes and LLM suggestions: seeded from /api/history, extended by live events. */
const Logs = {
  episodes: new BoundedLog(RECENT_ITEMS),
  suggestions: new BoundedLog(RECENT_ITEMS),
  ready: false,            // seeded (live events wait in the history load until then)
  boot: null,              // the history's event cursor: live events up to it are in it
  through: -1,

  /** Forget both lists until the next history arrives. */
  clear() {
    this.episodes.clear();
    this.suggestions.clear();
    this.ready = false;
    this.boot = null;
    this.through = -1;
    RenderLoop.mark("episodes", "suggestionLog");
  },

  /** Replace both lists with the history's. */
  seed(history, cursor) {
    this.episodes.clear();
    this.suggestions.clear();
    for (const item of Array.isArray(history.episodes) ? history.episodes : []) this.episodes.push(item);
    for (const item of Array.isArray(history.suggestions) ? history.suggestions : []) {
      if (item && typeof item.text === "string") this.suggestions.push(item);
    }
    this.ready = true;
    this.boot = cursor.boot;
    this.through = cursor.seq;
    RenderLoop.mark("episodes", "suggestionLog");
  },

  /** Apply one live update's event record: it may end an episode and carry a new suggestion. */
  applyLive(event) {
    if (!this.ready || (event.boot === this.boot && event.seq <= this.through)) return;
    if (event.episode) {
      this.episodes.push(event.episode);
      RenderLoop.mark("episodes");
    }
    const text = event.suggestion;
    if (text && (!this.suggestions.last() || this.suggestions.last().text !== text)) {
      this.suggestions.push({ text, step: event.step, ts: event.ts });
      RenderLoop.mark("suggestionLog");
    }
  },
};

/**
 * Charts and lists over time: on every snapshot (connect, reset, new boot, a
 * resume the server could not serve) everything is emptied and fetched again
 * from /api/history; live events in between are buffered and replayed.
 */
const Timeline = {
  started: false,

  init() {
    this.sync = new HistorySync({
      fetchHistory: (load) => fetchJson(historyUrl(load.names)),
      seed: (load, history, cursor) => this.seed(load, history, cursor),
      replay: (load, event) => {
        ChartBoard.applyLive(event, new Set(load.names));
        if (load.logs) Logs.applyLive(event);
      },
    });
  },

  /** A snapshot arrived: start over from the server's history. */
  restart() {
    this.started = true;
    this.sync.restart();
    ChartBoard.clearAll();
    Logs.clear();
    this.sync.load(ChartBoard.names(), true);
  },

  /** A chart was added: fetch its history (before the first snapshot, restart() will). */
  chartAdded(name) {
    if (this.started) this.sync.load([name]);
  },

  /**
   * A live training_update: each of its updates (records from applyTrainingEvent)
   * becomes an event record, applied wherever it is due. All of them share the
   * event's id, so the history cursor takes or leaves the whole batch at once,
   * as the server records it.
   */
  live(payload, updates, lastEventId) {
    const id = parseEventId(lastEventId);
    const boot = id ? id.boot : null;
    const seq = id ? id.seq : -1;
    const ts = typeof payload.ts === "number" ? payload.ts : Date.now() / 1000;
    for (const update of updates) {
      const event = {
        boot, seq, ts,
        step: update.step,
        leaves: numericLeaves(update.data),
        episode: update.episode && { ...update.episode, step: update.step, ts },
        suggestion: update.suggestion,
      };
      this.sync.live(event);
      ChartBoard.applyLive(event);
      Logs.applyLive(event);
    }
  },

  seed(load, history, cursor) {
    ChartBoard.setBudget(history.budget);
    const metrics = history.metrics && typeof history.metrics === "object" ? history.metrics : {};
    for (const name of load.names) ChartBoard.seed(name, metrics[name], cursor);
    if (load.logs) Logs.seed(history, cursor);
  },
};

// ---- render scheduling ---------------------------------------------------
/** Coalesces any number of changes into one render per animation frame. */
const RenderLoop = {
  dirty: new Set(),
  urgent: new Set(),       // parts marked by the user: drawn at the next frame whatever their interval
  views: {},
  intervals: {},           // part -> ms: data parts drawn less often than every render
  lastRun: new Map(),      // part -> performance.now() of its last render
  frame: null,             // requestAnimationFrame id while a render is due at the next frame
  timer: null,             // setTimeout id while a data render waits for MIN_RENDER_INTERVAL_MS
  lastRender: -Infinity,   // performance.now() of the last render

  /** Mark parts as changed by data: rendered at a frame at least MIN_RENDER_INTERVAL_MS after the last. */
  mark(...parts) {
    for (const part of parts) this.dirty.add(part);
    if (this.frame !== null || this.timer !== null) return;
    const wait = this.lastRender + MIN_RENDER_INTERVAL_MS - performance.now();
    if (wait <= 0) this.requestFrame();
    else this.timer = setTimeout(() => {
      this.timer = null;
      this.requestFrame();
    }, wait);
  },

  /** Mark parts as changed by the user (a click, the slider, a resize): rendered at the next frame. */
  markNow(...parts) {
    for (const part of parts) {
      this.dirty.add(part);
      this.urgent.add(part);
    }
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.requestFrame();
  },

  requestFrame() {
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.flush());
  },

  /** Render every dirty part once; a part within its own interval waits for a later render. */
  flush() {
    this.frame = null;
    const now = performance.now();
    this.lastRender = now;
    const dirty = [...this.dirty];
    this.dirty.clear();
    let heldBack = false;
    for (const part of dirty) {
      const interval = this.intervals[part] || 0;
      if (!this.urgent.has(part) && now - (this.lastRun.get(part) ?? -Infinity) < interval) {
        this.dirty.add(part);
        heldBack = true;
        continue;
      }
      this.lastRun.set(part, now);
      this.views[part]();
    }
    this.urgent.clear();
    if (heldBack) this.mark();
  },
};

// ---- views ---------------------------------------------------------------
/** Shows either the waiting message or the panels. */
const Layout = {
  init() {
    this.waiting = document.querySelector(SELECTORS.waiting);
    this.panels = document.querySelector(SELECTORS.panels);
  },
  render() {
    const has = Model.hasData();
    this.waiting.hidden = has;
    this.panels.hidden = !has;
  },
};

// How each card field turns state into text; anything unlisted uses formatValue.
const FIELD_FORMATTERS = {
  episode_id: (s) => formatId(s.episode_id),
  room_id: (s) => formatId(s.room_id),
  location: (s) => formatId(s.location),
  position: (s) => formatPosition(s.position),
  health: (s) => formatHealth(s.health),
  llm_success_rate: (s) => formatRate(s.llm_success_rate),
  llm_alignment: (s) => formatRate(s.llm_alignment),
  "milestones.maku_tree_entered": (s) => formatMilestone(getPath(s, "milestones.maku_tree_entered")),
  "milestones.dungeon_entered": (s) => formatMilestone(getPath(s, "milestones.dungeon_entered")),
  "milestones.sword_usage": (s) => formatMilestone(getPath(s, "milestones.sword_usage")),
};

/** The known-field cards: text fields, rate meters, milestones, hearts. */
const Cards = {
  init() {
    this.fields = [...document.querySelectorAll(SELECTORS.fields)].map((el) => {
      const path = el.dataset.field;
      return { el, format: FIELD_FORMATTERS[path] || ((s) => formatValue(getPath(s, path))) };
    });
    this.meters = [...document.querySelectorAll(SELECTORS.meters)];
    this.milestones = [...document.querySelectorAll(SELECTORS.milestones)];
    this.hearts = document.querySelector(SELECTORS.hearts);
    this.heartsKey = null;
    this.sessionLabel = document.querySelector(SELECTORS.sessionLabel);
    this.updateCount = document.querySelector(SELECTORS.updateCount);
    this.chartButtons = [];
    for (const { el } of this.fields) {
      const name = el.dataset.field;
      const label = el.parentElement && el.parentElement.querySelector("dt");
      if (!CHARTABLE_FIELDS.has(name) || !label) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "chart-toggle";
      button.dataset.chart = name;
      button.title = `Chart ${name}`;
      button.setAttribute("aria-label", `Chart ${name}`);
      button.addEventListener("click", () => ChartBoard.toggle(name));
      label.append(button);
      this.chartButtons.push(button);
    }
  },

  /** Show on each chart button whether its metric is charted. */
  renderChartButtons() {
    for (const button of this.chartButtons) {
      const on = ChartBoard.has(button.dataset.chart);
      button.setAttribute("aria-pressed", String(on));
      button.title = on ? `Remove the ${button.dataset.chart} chart` : `Chart ${button.dataset.chart}`;
    }
  },

  render() {
    const state = Model.state;
    for (const { el, format } of this.fields) setText(el, format(state));
    for (const el of this.meters) {
      const fraction = rateFraction(getPath(state, el.dataset.meter));
      // A transform, not a width: its transition runs on the compositor, with no layout per frame.
      el.style.transform = `scaleX(${fraction === null ? 0 : fraction.toFixed(3)})`;
    }
    for (const el of this.milestones) {
      el.classList.toggle("is-reached", milestoneReached(getPath(state, el.dataset.milestone)));
    }
    this.renderHearts(computeHearts(state.health));
    setText(this.sessionLabel, Model.runId ? `run ${Model.runId}` : "");
    setText(this.updateCount, `${formatValue(Model.updates)} ${Model.updates === 1 ? "update" : "updates"}`);
  },

  /** Rebuild the hearts row only when the heart counts change. */
  renderHearts(hearts) {
    const key = hearts ? `${hearts.full}/${hearts.half}/${hearts.empty}` : "none";
    if (key === this.heartsKey) return;
    this.heartsKey = key;
    const icons = [];
    if (hearts) {
      const add = (kind, count) => {
        for (let i = 0; i < count; i += 1) {
          const icon = document.createElement("span");
          icon.className = `heart heart--${kind}`;
          icons.push(icon);
        }
      };
      add("full", hearts.full);
      add("half", hearts.half);
      add("empty", hearts.empty);
    }
    this.hearts.replaceChildren(...icons);
    const label = hearts
      ? `${hearts.full + hearts.half / 2} of ${hearts.full + hearts.half + hearts.empty} hearts`
      : "no health data";
    this.hearts.setAttribute("aria-label", label);
  },
};

/**
 * A list that shows a BoundedLog newest first and only ever adds the entries
 * it has not shown yet (and drops those the log let go), so a burst of events
 * costs a few DOM inserts, not a rebuild.
 */
class RecentList {
  constructor({ log, container, table, empty, count, build }) {
    Object.assign(this, { log, container, table, empty, count, build });
    this.shown = [];        // [{serial, el}], oldest first
  }

  render() {
    const entries = this.log.entries;
    const firstSerial = entries.length ? entries[0].serial : Infinity;
    while (this.shown.length && this.shown[0].serial < firstSerial) this.shown.shift().el.remove();
    const lastShown = this.shown.length ? this.shown[this.shown.length - 1].serial : 0;
    let added = 0;
    for (const entry of entries) {
      if (entry.serial <= lastShown) continue;
      const el = this.build(entry);
      this.container.prepend(el);
      this.shown.push({ serial: entry.serial, el });
      added += 1;
    }
    const n = this.shown.length;
    if (this.table) this.table.hidden = n === 0;
    else this.container.hidden = n === 0;
    this.empty.hidden = n > 0;
    setText(this.count, n ? String(n) : "");
    return added;
  }
}

/** A table cell (or row header) holding `text`. */
function cell(text, tag = "td") {
  const el = document.createElement(tag);
  el.textContent = text;
  return el;
}

/** A <time> element for a unix timestamp: clock time, the full date on hover. */
function timeElement(unixSeconds, className) {
  const el = document.createElement("time");
  el.className = className;
  el.textContent = formatClock(unixSeconds);
  if (typeof unixSeconds === "number" && Number.isFinite(unixSeconds)) {
    const date = new Date(unixSeconds * 1000);
    el.dateTime = date.toISOString();
    el.title = date.toLocaleString();
  }
  return el;
}

/** Recent episodes, newest first. */
const EpisodesTable = {
  init() {
    this.list = new RecentList({
      log: Logs.episodes,
      container: document.querySelector(SELECTORS.episodesBody),
      table: document.querySelector(SELECTORS.episodesTable),
      empty: document.querySelector(SELECTORS.episodesEmpty),
      count: document.querySelector(SELECTORS.episodesCount),
      build: (entry) => {
        const row = document.createElement("tr");
        const ended = document.createElement("td");
        ended.append(timeElement(entry.ts, "episodes__time"));
        row.append(cell(formatId(entry.episode), "th"), cell(formatValue(entry.reward)),
          cell(formatValue(entry.length)), cell(formatNumber(entry.step)), ended);
        row.firstChild.scope = "row";
        return row;
      },
    });
  },
  render() {
    this.list.render();
  },
};

/** The LLM suggestion: the latest highlighted when it changes, and a log (time, step, text). */
const SuggestionLog = {
  init() {
    this.latest = document.querySelector(SELECTORS.suggestion);
    this.shownText = undefined;
    this.list = new RecentList({
      log: Logs.suggestions,
      container: document.querySelector(SELECTORS.suggestionLog),
      table: null,
      empty: document.querySelector(SELECTORS.suggestionEmpty),
      count: document.querySelector(SELECTORS.suggestionCount),
      build: (entry) => {
        const item = document.createElement("li");
        item.className = "log__item";
        const meta = document.createElement("div");
        meta.className = "log__meta";
        const step = document.createElement("span");
        step.className = "log__step";
        step.textContent = `step ${formatNumber(entry.step)}`;
        meta.append(timeElement(entry.ts, "log__time"), step);
        const text = document.createElement("p");
        text.className = "log__text";
        text.textContent = entry.text;
        item.append(meta, text);
        return item;
      },
    });
  },
  render() {
    this.list.render();
    const text = Model.state.llm_suggestion;
    if (text === this.shownText) return;
    const isNew = this.shownText !== undefined && text !== undefined && text !== null;
    this.shownText = text;
    if (isNew) {
      // Restart the highlight animation for the new suggestion.
      this.latest.classList.remove("is-fresh");
      void this.latest.offsetWidth;
      this.latest.classList.add("is-fresh");
    }
  },
};

/** The "Other metrics" table: one row per flattened key, updated in place. */
const MetricsTable = {
  init() {
    this.table = document.querySelector(SELECTORS.metricsTable);
    this.body = document.querySelector(SELECTORS.metricsBody);
    this.empty = document.querySelector(SELECTORS.metricsEmpty);
    this.count = document.querySelector(SELECTORS.metricsCount);
    this.hint = document.querySelector(SELECTORS.metricsHint);
    this.rows = new Map();   // key -> {row, button, valueCell, chartable}
    this.keys = [];          // sorted keys, parallel to the rows in the table body
    // One listener for every row: a click anywhere on a number's row toggles its chart;
    // the key is a <button>, so Tab + Enter/Space do the same.
    this.body.addEventListener("click", (event) => {
      const row = event.target.closest("tr");
      const entry = row && this.rows.get(row.dataset.key);
      if (entry && (entry.chartable || ChartBoard.has(row.dataset.key))) ChartBoard.toggle(row.dataset.key);
    });
  },

  /** Mark which rows are charted. */
  renderChartState() {
    for (const [key, entry] of this.rows) this.showChartState(key, entry);
  },

  showChartState(key, entry) {
    const charted = ChartBoard.has(key);
    const usable = entry.chartable || charted;
    entry.button.disabled = !usable;
    entry.button.setAttribute("aria-pressed", String(charted));
    entry.button.setAttribute("aria-label", `${key}: ${charted ? "remove its chart" : "add a chart"}`);
    entry.row.classList.toggle("is-chartable", usable);
    entry.row.classList.toggle("is-charted", charted);
  },

  render() {
    const metrics = otherMetrics(Model.state);
    for (const key of [...this.rows.keys()]) {
      if (!metrics.has(key)) this.removeRow(key);
    }
    let chartable = 0;
    for (const [key, value] of metrics) {
      const entry = this.rows.get(key) || this.addRow(key);
      setText(entry.valueCell, formatValue(value));
      const isNumber = typeof value === "number" && Number.isFinite(value);
      if (isNumber !== entry.chartable) {
        entry.chartable = isNumber;
        this.showChartState(key, entry);
      }
      if (isNumber) chartable += 1;
    }
    const n = this.rows.size;
    this.table.hidden = n === 0;
    this.empty.hidden = n > 0;
    this.hint.hidden = chartable === 0;
    setText(this.count, n ? String(n) : "");
  },

  /** Insert a row for key at its sorted position. */
  addRow(key) {
    const row = document.createElement("tr");
    row.dataset.key = key;
    const keyCell = document.createElement("th");
    keyCell.scope = "row";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "metric-key";
    button.textContent = key;
    keyCell.append(button);
    const valueCell = document.createElement("td");
    row.append(keyCell, valueCell);
    const index = this.sortedIndex(key);
    const before = index < this.keys.length ? this.rows.get(this.keys[index]).row : null;
    this.body.insertBefore(row, before);
    this.keys.splice(index, 0, key);
    const entry = { row, button, valueCell, chartable: false };
    this.rows.set(key, entry);
    this.showChartState(key, entry);
    return entry;
  },

  removeRow(key) {
    this.rows.get(key).row.remove();
    this.rows.delete(key);
    this.keys.splice(this.sortedIndex(key), 1);
  },

  /** Binary search for key's place in the sorted key list. */
  sortedIndex(key) {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.keys[mid] < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  },
};

/** The vision panel: latest frame, LLM response time, frame time. */
const Vision = {
  init() {
    this.img = document.querySelector(SELECTORS.frame);
    this.empty = document.querySelector(SELECTORS.frameEmpty);
    this.responseTime = document.querySelector(SELECTORS.responseTime);
    this.time = document.querySelector(SELECTORS.frameTime);
    this.shownSrc = null;
  },
  render() {
    const frame = Model.frame;
    const src = frame ? frame.src : null;
    if (src !== this.shownSrc) {
      this.shownSrc = src;
      if (src) this.img.src = src;
      else this.img.removeAttribute("src");
    }
    this.img.hidden = !src;
    this.empty.hidden = Boolean(src);
    setText(this.responseTime, frame ? formatSeconds(frame.responseTime) : EMPTY);
    setText(this.time, frame ? formatClock(frame.ts) : EMPTY);
  },
};

/** The connection badge: connected / reconnecting / no data for N s. */
const ConnectionBadge = {
  init(staleAfterSeconds) {
    this.staleAfter = staleAfterSeconds;
    this.badge = document.querySelector(SELECTORS.badge);
    this.text = document.querySelector(SELECTORS.badgeText);
    this.banner = document.querySelector(SELECTORS.staleBanner);
    this.bannerText = document.querySelector(SELECTORS.staleText);
    setInterval(() => RenderLoop.mark("connection"), STALE_TICK_MS);
  },
  render() {
    let kind = Model.connection;
    let text = kind;
    if (kind === "open") {
      kind = "connected";
      text = "connected";
      if (Model.lastDataAt !== null) {
        const age = (Date.now() - Model.lastDataAt) / 1000;
        if (age >= this.staleAfter) {
          kind = "stale";
          text = `no data for ${formatAge(age)}`;
          setText(this.bannerText, `No training update for ${formatAge(age)}.`);
        }
      }
    }
    const className = `badge badge--${kind}`;
    if (this.badge.className !== className) this.badge.className = className;
    setText(this.text, text);
    this.banner.hidden = kind !== "stale";
  },
};

// ---- stream --------------------------------------------------------------
/** The SSE connection; reconnects with backoff if the browser gives up. */
const Stream = {
  source: null,
  backoff: RECONNECT_MIN_MS,

  connect() {
    const source = new EventSource(STREAM_URL);
    this.source = source;
    source.addEventListener("open", () => {
      this.backoff = RECONNECT_MIN_MS;
      this.setConnection("open");
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser will not retry (e.g. 503 past max_streams): we do.
        source.close();
        setTimeout(() => this.connect(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, RECONNECT_MAX_MS);
      }
      this.setConnection("reconnecting");
    });
    source.addEventListener(TRAINING_EVENT, (event) => this.handle(event, (p) => {
      const updates = Model.applyTraining(p);
      if (p.snapshot) Timeline.restart();   // a new present: charts and lists start over from history
      else Timeline.live(p, updates, event.lastEventId);
      RenderLoop.mark("layout", "cards", "suggestionLog", "metrics", "connection");
      if (p.reset) RenderLoop.mark("vision");
    }));
    source.addEventListener(VISION_EVENT, (event) => this.handle(event, (p) => {
      Model.applyVision(p);
      RenderLoop.mark("layout", "vision", "connection");
    }));
  },

  /** Parse one event's JSON and apply it; a bad payload is logged, not fatal. */
  handle(event, apply) {
    let payload;
    try {
      payload = JSON.parse(event.data);
    } catch (err) {
      console.warn("HUD: ignoring an event that is not JSON", err);
      return;
    }
    if (payload && typeof payload === "object") apply(payload);
  },

  setConnection(connection) {
    if (Model.connection === connection) return;
    Model.connection = connection;
    RenderLoop.markNow("connection");
  },
};

// ---- start ---------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  const staleAfter = Number.parseFloat(document.body.dataset.staleAfter);
  Layout.init();
  Cards.init();
  SuggestionLog.init();
  EpisodesTable.init();
  MetricsTable.init();
  Timeline.init();
  ChartBoard.init({
    grid: document.querySelector(SELECTORS.charts),
    slider: document.querySelector(SELECTORS.smoothing),
    readout: document.querySelector(SELECTORS.smoothingValue),
    listeners: {
      added: (name) => Timeline.chartAdded(name),
      changed: () => RenderLoop.markNow("chartState"),
      schedule: (urgent) => (urgent ? RenderLoop.markNow("charts") : RenderLoop.mark("charts")),
    },
  });
  const chartsEmpty = document.querySelector(SELECTORS.chartsEmpty);
  Vision.init();
  ConnectionBadge.init(Number.isFinite(staleAfter) && staleAfter > 0 ? staleAfter : DEFAULT_STALE_AFTER_S);
  RenderLoop.intervals = VIEW_INTERVALS_MS;
  RenderLoop.views = {
    layout: () => Layout.render(),
    cards: () => Cards.render(),
    suggestionLog: () => SuggestionLog.render(),
    episodes: () => EpisodesTable.render(),
    charts: () => ChartBoard.draw(),
    chartState: () => {
      Cards.renderChartButtons();
      MetricsTable.renderChartState();
      chartsEmpty.hidden = ChartBoard.names().length > 0;
    },
    metrics: () => MetricsTable.render(),
    vision: () => Vision.render(),
    connection: () => ConnectionBadge.render(),
  };
  RenderLoop.mark("layout", "cards", "metrics", "vision", "connection", "chartState", "episodes", "suggestionLog");
  Stream.connect();
});
