// HUD dashboard: listens to /stream (SSE) and renders the merged training
// state. Data is only ever written with textContent (never innerHTML), and
// DOM work is coalesced into at most one render per animation frame.
import {
  EMPTY, applyTrainingUpdate, computeHearts, formatAge, formatClock, formatHealth,
  formatId, formatMilestone, formatPosition, formatRate, formatSeconds, formatValue,
  getPath, milestoneReached, otherMetrics, rateFraction,
} from "./hud-logic.js";

// ---- constants -----------------------------------------------------------
const STREAM_URL = "/stream";
const TRAINING_EVENT = "training_update";
const VISION_EVENT = "vision_update";
const SUGGESTION_HISTORY = 5;          // suggestions kept, the latest included
const STALE_TICK_MS = 1000;            // how often the "no data for N s" badge is refreshed
const RECONNECT_MIN_MS = 1000;         // backoff when the browser gave up on the stream (e.g. 503)
const RECONNECT_MAX_MS = 30000;
const DEFAULT_STALE_AFTER_S = 30;
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
  suggestionHistory: "#suggestion-history",
  frame: "#vision-frame",
  frameEmpty: "#vision-empty",
  responseTime: "#vision-response-time",
  frameTime: "#vision-time",
  metricsTable: "#metrics-table",
  metricsBody: "#metrics-body",
  metricsEmpty: "#metrics-empty",
  metricsCount: "#metrics-count",
};

/** Set an element's text only when it changed (saves layout work at high rates). */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

// ---- model ---------------------------------------------------------------
/** What the page knows: merged state, latest frame, connection facts. */
const Model = {
  state: {},
  frame: null,              // {src, responseTime, ts} or null
  suggestions: [],          // latest last
  runId: null,
  updates: 0,
  connection: "connecting", // connecting | open | reconnecting
  lastDataAt: null,         // ms since epoch of the latest data, null before any

  /** Apply a training_update payload. */
  applyTraining(payload) {
    if (payload.reset) {
      this.frame = null;
      this.suggestions = [];
    }
    this.state = applyTrainingUpdate(this.state, payload);
    this.noteSuggestion(this.state.llm_suggestion);
    this.runId = payload.run_id ?? this.runId;
    if (typeof payload.updates === "number") this.updates = payload.updates;
    this.noteData(payload);
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

  /** Remember a new LLM suggestion in the short history. */
  noteSuggestion(suggestion) {
    if (suggestion === undefined || suggestion === null) return;
    const text = formatValue(suggestion);
    if (this.suggestions[this.suggestions.length - 1] === text) return;
    this.suggestions.push(text);
    if (this.suggestions.length > SUGGESTION_HISTORY) this.suggestions.shift();
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

// ---- render scheduling ---------------------------------------------------
/** Coalesces any number of changes into one render per animation frame. */
const RenderLoop = {
  dirty: new Set(),
  pending: false,
  views: {},

  /** Mark parts of the page as changed and schedule a render. */
  mark(...parts) {
    for (const part of parts) this.dirty.add(part);
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => this.flush());
  },

  /** Render every dirty part once. */
  flush() {
    this.pending = false;
    const dirty = new Set(this.dirty);
    this.dirty.clear();
    for (const part of dirty) this.views[part]();
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
  },

  render() {
    const state = Model.state;
    for (const { el, format } of this.fields) setText(el, format(state));
    for (const el of this.meters) {
      const fraction = rateFraction(getPath(state, el.dataset.meter));
      el.style.width = fraction === null ? "0%" : `${(fraction * 100).toFixed(1)}%`;
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

/** The LLM suggestion: latest highlighted, a few earlier ones below. */
const Suggestions = {
  init() {
    this.latest = document.querySelector(SELECTORS.suggestion);
    this.history = document.querySelector(SELECTORS.suggestionHistory);
    this.shownKey = null;
  },
  render() {
    const earlier = Model.suggestions.slice(0, -1).reverse();
    const key = JSON.stringify(Model.suggestions);
    if (key === this.shownKey) return;
    const isNew = this.shownKey !== null && Model.suggestions.length > 0;
    this.shownKey = key;
    this.history.replaceChildren(...earlier.map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    }));
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
    this.rows = new Map();   // key -> {row, valueCell}
    this.keys = [];          // sorted keys, parallel to the rows in the table body
  },

  render() {
    const metrics = otherMetrics(Model.state);
    for (const key of [...this.rows.keys()]) {
      if (!metrics.has(key)) this.removeRow(key);
    }
    for (const [key, value] of metrics) {
      const entry = this.rows.get(key) || this.addRow(key);
      setText(entry.valueCell, formatValue(value));
    }
    const n = this.rows.size;
    this.table.hidden = n === 0;
    this.empty.hidden = n > 0;
    setText(this.count, n ? String(n) : "");
  },

  /** Insert a row for key at its sorted position. */
  addRow(key) {
    const row = document.createElement("tr");
    row.dataset.key = key;
    const keyCell = document.createElement("th");
    keyCell.scope = "row";
    keyCell.textContent = key;
    const valueCell = document.createElement("td");
    row.append(keyCell, valueCell);
    const index = this.sortedIndex(key);
    const before = index < this.keys.length ? this.rows.get(this.keys[index]).row : null;
    this.body.insertBefore(row, before);
    this.keys.splice(index, 0, key);
    const entry = { row, valueCell };
    this.rows.set(key, entry);
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
        }
      }
    }
    const className = `badge badge--${kind}`;
    if (this.badge.className !== className) this.badge.className = className;
    setText(this.text, text);
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
      Model.applyTraining(p);
      RenderLoop.mark("layout", "cards", "suggestions", "metrics", "connection");
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
    RenderLoop.mark("connection");
  },
};

// ---- start ---------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  const staleAfter = Number.parseFloat(document.body.dataset.staleAfter);
  Layout.init();
  Cards.init();
  Suggestions.init();
  MetricsTable.init();
  Vision.init();
  ConnectionBadge.init(Number.isFinite(staleAfter) && staleAfter > 0 ? staleAfter : DEFAULT_STALE_AFTER_S);
  RenderLoop.views = {
    layout: () => Layout.render(),
    cards: () => Cards.render(),
    suggestions: () => Suggestions.render(),
    metrics: () => MetricsTable.render(),
    vision: () => Vision.render(),
    connection: () => ConnectionBadge.render(),
  };
  RenderLoop.mark("layout", "cards", "metrics", "vision", "connection");
  Stream.connect();
});
