// Live metric charts (uPlot, vendored in static/vendor/uplot/, loaded as the
// global `uPlot`). Each chart is built once and updated in place with setData,
// at most once per animation frame (the page's render loop calls draw()).
// Points are kept in capped SeriesBuffers, so a tab open for days stays bounded.
//
// Test hook (read-only, for tests/browser and bench/): window.hudCharts
//   names()       -> metric names charted, in order
//   points(name)  -> points the chart of `name` has drawn (null when not charted)
//   data(name)    -> {x, raw, smoothed}: copies of the drawn arrays (null when not charted)
//   smoothing()   -> the EMA weight in use
import {
  EMPTY, SMOOTHING_MAX, SeriesBuffer, clampSmoothing, emaSmooth, formatNumber, formatTick,
} from "./hud-logic.js";

export const DEFAULT_CHARTS = ["episode_reward", "episode_length"];
export const DEFAULT_SMOOTHING = 0.6;      // TensorBoard's default weight
export const DEFAULT_BUDGET = 2000;        // the server's history_points until /api/history says
export const POINTS_PER_BUDGET = 4;        // a chart keeps at most this many times the server's budget
export const MAX_CHARTS = 24;              // more would make the page slow to draw, not more useful
const STORAGE_CHARTS = "hud.charts";       // localStorage: JSON list of charted metric names
const STORAGE_SMOOTHING = "hud.smoothing"; // localStorage: the EMA weight
const CHART_HEIGHT = 200;                  // px of plot (uPlot's canvas), legend below it
const CHART_HEIGHT_NARROW = 170;           // for plots narrower than NARROW_PLOT_PX
const NARROW_PLOT_PX = 480;

// Friendlier titles for the known fields; any other metric is titled by its key.
const TITLES = {
  episode_reward: "Episode reward", episode_length: "Episode length", global_step: "Global step",
  epoch: "Epoch", episode: "Episode", llm_calls: "LLM calls", llm_success_rate: "LLM success rate",
  llm_alignment: "LLM alignment", room_id: "Room", "health.current": "Health",
  "entities.npcs": "NPCs", "entities.enemies": "Enemies", "entities.items": "Items",
  "exploration.rooms_discovered": "Rooms discovered", "exploration.grid_areas": "Grid areas",
  "exploration.buildings_entered": "Buildings entered", "milestones.sword_usage": "Sword used",
};

/** localStorage, tolerating browsers that refuse it (private modes, quotas). */
const Prefs = {
  load(key, fallback) {
    try {
      const text = window.localStorage.getItem(key);
      return text === null ? fallback : JSON.parse(text);
    } catch (err) {
      return fallback;
    }
  },
  save(key, value) {
    try {
      window.localStorage.setItem(key, JSON.stringify(value));
    } catch (err) {
      // Not persisted; the page keeps working.
    }
  },
};

/** The chart colours, read from the stylesheet's custom properties. */
function palette() {
  const css = getComputedStyle(document.documentElement);
  const read = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  return {
    line: read("--chart-line", "#d9a6ff"),
    raw: read("--chart-raw", "rgba(177, 94, 255, 0.35)"),
    fillTop: read("--chart-fill-top", "rgba(177, 94, 255, 0.28)"),
    fillBottom: read("--chart-fill-bottom", "rgba(177, 94, 255, 0)"),
    axis: read("--muted", "#9a8cb3"),
    grid: read("--chart-grid", "rgba(177, 94, 255, 0.1)"),
    font: `11px ${read("--body", "sans-serif")}`,
  };
}

/** uPlot's value formatter for the legend: empty while the cursor is off the plot (a key, then). */
function legendValue(u, value) {
  return value === null || value === undefined ? "" : formatNumber(value);
}

/** One chart card: header, uPlot instance, capped data. */
class MetricChart {
  constructor(name, cap, colors, onRemove) {
    this.name = name;
    this.series = new SeriesBuffer(cap);
    this.smoothed = [];
    this.ready = false;        // seeded from the history (live points wait until then)
    this.boot = null;          // the history's boot and seq: live events up to it are in it
    this.through = -1;
    this.width = 0;
    this.height = CHART_HEIGHT;
    this.buildCard(onRemove);
    this.plot = new window.uPlot(this.options(colors), [[], [], []], this.plotEl);
  }

  buildCard(onRemove) {
    const card = document.createElement("article");
    card.className = "chart";
    card.dataset.metric = this.name;
    const head = document.createElement("header");
    head.className = "chart__head";
    const title = document.createElement("h3");
    title.className = "chart__title";
    title.textContent = TITLES[this.name] || this.name;
    title.title = this.name;
    const latest = document.createElement("span");
    latest.className = "chart__latest";
    latest.title = "latest value";
    latest.textContent = EMPTY;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "chart__remove";
    remove.textContent = "×";
    remove.title = "Remove this chart";
    remove.setAttribute("aria-label", `Remove the ${this.name} chart`);
    remove.addEventListener("click", () => onRemove(this.name));
    head.append(title, latest, remove);
    const plot = document.createElement("div");
    plot.className = "chart__plot";
    const empty = document.createElement("p");
    empty.className = "chart__empty";
    empty.textContent = "No points yet";
    card.append(head, plot, empty);
    this.card = card;
    this.plotEl = plot;
    this.latestEl = latest;
    this.emptyEl = empty;
  }

  options(colors) {
    const axis = {
      stroke: colors.axis,
      font: colors.font,
      grid: { stroke: colors.grid, width: 1 },
      ticks: { stroke: colors.grid, width: 1, size: 4 },
      values: (u, splits) => splits.map(formatTick),
    };
    return {
      width: 400,
      height: this.height,
      class: "chart__uplot",
      scales: { x: { time: false } },
      cursor: { drag: { x: false, y: false }, points: { size: 7 } },
      legend: { live: true },   // values while hovering; the header shows the latest
      series: [
        { label: "step", value: legendValue },
        { label: "raw", stroke: colors.raw, width: 1, value: legendValue, points: { show: false } },
        {
          label: "smoothed", stroke: colors.line, width: 2, value: legendValue, points: { show: false },
          fill: (u) => {
            if (!Number.isFinite(u.bbox.top) || !Number.isFinite(u.bbox.height)) return colors.fillBottom;
            const gradient = u.ctx.createLinearGradient(0, u.bbox.top, 0, u.bbox.top + u.bbox.height);
            gradient.addColorStop(0, colors.fillTop);
            gradient.addColorStop(1, colors.fillBottom);
            return gradient;
          },
        },
      ],
      axes: [{ ...axis, size: 34 }, { ...axis, size: 52 }],
    };
  }

  /** Redraw with the current points and smoothing weight. */
  draw(weight) {
    const { xs, ys } = this.series;
    emaSmooth(ys, weight, this.smoothed);
    this.plot.setData([xs, ys, this.smoothed]);
    const n = ys.length;
    this.emptyEl.hidden = n > 0;
    const text = n ? formatNumber(ys[n - 1]) : EMPTY;
    if (this.latestEl.textContent !== text) this.latestEl.textContent = text;
  }

  /** Fit the plot to its container's width. */
  resize(width) {
    const height = width < NARROW_PLOT_PX ? CHART_HEIGHT_NARROW : CHART_HEIGHT;
    if (width === this.width && height === this.height) return;
    this.width = width;
    this.height = height;
    this.plot.setSize({ width, height });
  }

  destroy() {
    this.plot.destroy();
    this.card.remove();
  }
}

/** Every chart, the smoothing control and the saved choice of metrics. */
export const ChartBoard = {
  charts: new Map(),     // name -> MetricChart, in display order
  dirty: new Set(),      // names to redraw on the next frame
  sizes: new Map(),      // name -> width waiting for the next frame
  weight: DEFAULT_SMOOTHING,
  budget: DEFAULT_BUDGET,
  listeners: { added: () => {}, changed: () => {}, schedule: () => {} },

  /** Build the saved (or default) charts inside `grid`; `slider`/`readout` control smoothing. */
  init({ grid, slider, readout, listeners }) {
    this.grid = grid;
    this.slider = slider;
    this.readout = readout;
    this.listeners = { ...this.listeners, ...listeners };
    this.colors = palette();
    this.resizer = new ResizeObserver((entries) => this.onResize(entries));
    this.weight = clampSmoothing(Prefs.load(STORAGE_SMOOTHING, DEFAULT_SMOOTHING));
    slider.min = "0";
    slider.max = String(SMOOTHING_MAX);
    slider.step = "0.01";
    slider.value = String(this.weight);
    this.showWeight();
    slider.addEventListener("input", () => this.setSmoothing(slider.value));
    const saved = Prefs.load(STORAGE_CHARTS, DEFAULT_CHARTS);
    const names = Array.isArray(saved) ? saved.filter((n) => typeof n === "string") : DEFAULT_CHARTS;
    for (const name of names.slice(0, MAX_CHARTS)) this.create(name);
    this.exposeTestHook();
  },

  /** Names of the charted metrics, in display order. */
  names() {
    return [...this.charts.keys()];
  },

  has(name) {
    return this.charts.has(name);
  },

  get(name) {
    return this.charts.get(name);
  },

  /** Add a chart for `name` (saved; its history is asked for by the `added` listener). */
  add(name) {
    if (this.charts.has(name) || this.charts.size >= MAX_CHARTS) return false;
    this.create(name);
    this.save();
    this.listeners.added(name);
    this.listeners.changed();
    return true;
  },

  /** Remove the chart of `name` (saved). */
  remove(name) {
    const chart = this.charts.get(name);
    if (!chart) return;
    this.resizer.unobserve(chart.plotEl);
    chart.destroy();
    this.charts.delete(name);
    this.dirty.delete(name);
    this.sizes.delete(name);
    this.save();
    this.listeners.changed();
  },

  /** Add the chart of `name`, or remove it when it is there. */
  toggle(name) {
    if (this.charts.has(name)) this.remove(name);
    else this.add(name);
  },

  create(name) {
    const chart = new MetricChart(name, this.cap(), this.colors, (n) => this.remove(n));
    this.charts.set(name, chart);
    this.grid.append(chart.card);
    this.resizer.observe(chart.plotEl);
    this.markDirty(name, true);
  },

  save() {
    Prefs.save(STORAGE_CHARTS, this.names());
  },

  /** Points a chart keeps: POINTS_PER_BUDGET times the server's budget. */
  cap() {
    return this.budget * POINTS_PER_BUDGET;
  },

  /** Take the server's point budget (from /api/history) for new and emptied series. */
  setBudget(budget) {
    if (typeof budget !== "number" || !Number.isFinite(budget) || budget <= 0) return;
    this.budget = budget;
    for (const chart of this.charts.values()) chart.series.cap = Math.max(8, this.cap());
  },

  /** Empty every chart and mark it as waiting for its history. */
  clearAll() {
    for (const [name, chart] of this.charts) {
      chart.series.clear();
      chart.ready = false;
      chart.boot = null;
      chart.through = -1;
      this.markDirty(name);
    }
  },

  /** Replace a chart's points with the history's; live events up to `cursor` are in it. */
  seed(name, points, cursor) {
    const chart = this.charts.get(name);
    if (!chart) return;
    const steps = points && Array.isArray(points.steps) ? points.steps : [];
    const values = points && Array.isArray(points.values) ? points.values : [];
    chart.series.replace(steps, values);
    chart.ready = true;
    chart.boot = cursor.boot;
    chart.through = cursor.seq;
    this.markDirty(name);
  },

  /** Add a live event's points ({boot, seq, step, leaves}) to the charts that are ready for it. */
  applyLive(event, only = null) {
    for (const [name, value] of event.leaves) {
      const chart = this.charts.get(name);
      if (!chart || !chart.ready || (only && !only.has(name))) continue;
      if (event.boot === chart.boot && event.seq <= chart.through) continue;  // already in the history
      chart.series.push(event.step, value);
      this.markDirty(name);
    }
  },

  setSmoothing(value) {
    this.weight = clampSmoothing(value);
    this.showWeight();
    Prefs.save(STORAGE_SMOOTHING, this.weight);
    for (const name of this.charts.keys()) this.markDirty(name, true);
  },

  showWeight() {
    const text = this.weight.toFixed(2);
    if (this.readout.textContent !== text) this.readout.textContent = text;
    this.slider.setAttribute("aria-valuetext", text);
  },

  /** Redraw `name` soon: at the next frame when `urgent` (a user action), else with the next data render. */
  markDirty(name, urgent = false) {
    this.dirty.add(name);
    this.listeners.schedule(urgent);
  },

  /** ResizeObserver callback: note new widths; the next frame applies them (no layout loop). */
  onResize(entries) {
    for (const entry of entries) {
      const card = entry.target.closest(".chart");
      const name = card && card.dataset.metric;
      if (!name || !this.charts.has(name)) continue;
      const width = Math.floor(entry.contentRect.width);
      if (width > 0) {
        this.sizes.set(name, width);
        this.listeners.schedule(true);
      }
    }
  },

  /** Draw what changed since the last frame: new sizes, then new points. */
  draw() {
    for (const [name, width] of this.sizes) {
      const chart = this.charts.get(name);
      if (chart) chart.resize(width);
    }
    this.sizes.clear();
    for (const name of this.dirty) {
      const chart = this.charts.get(name);
      if (chart) chart.draw(this.weight);
    }
    this.dirty.clear();
  },

  /** window.hudCharts: a small read-only view for tests and the benchmark. */
  exposeTestHook() {
    const board = this;
    const drawn = (name) => {
      const chart = board.charts.get(name);
      return chart ? chart.plot.data : null;
    };
    window.hudCharts = Object.freeze({
      names: () => board.names(),
      points: (name) => {
        const data = drawn(name);
        return data ? data[0].length : null;
      },
      data: (name) => {
        const data = drawn(name);
        return data ? { x: Array.from(data[0]), raw: Array.from(data[1]), smoothed: Array.from(data[2]) } : null;
      },
      smoothing: () => board.weight,
    });
  },
};
