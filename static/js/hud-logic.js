// Pure dashboard logic: state merging, flattening, formatting, hearts.
// No DOM access here, so every function can be tested on its own
// (tests/browser/test_logic.py imports this module in a blank page).

// Fields that have a card of their own; every other flattened key goes to
// the "Other metrics" table. Nested fields are named with dots, as flatten() does.
export const CARD_FIELDS = new Set([
  "epoch", "episode", "episode_id", "global_step", "episode_reward", "episode_length",
  "location", "room_id", "position.x", "position.y", "health.current", "health.max",
  "entities.npcs", "entities.enemies", "entities.items",
  "llm_suggestion", "llm_calls", "llm_success_rate", "llm_alignment",
  "milestones.maku_tree_entered", "milestones.dungeon_entered", "milestones.sword_usage",
  "exploration.rooms_discovered", "exploration.grid_areas", "exploration.buildings_entered",
]);

export const EMPTY = "—";                 // what a missing or null value shows
export const MAX_FLATTEN_DEPTH = 6;        // deeper objects are shown as JSON text
export const MAX_TEXT_LENGTH = 200;        // longest JSON text shown for arrays/deep objects
export const MAX_HEART_ICONS = 40;         // past this the hearts row is not drawn, only the text
// Hearts rule. Zelda games keep health in quarter-hearts (3 hearts = 12 units),
// but a feed may also send whole hearts. No Zelda game has more than 20 heart
// containers, so a max above QUARTER_HEART_THRESHOLD is read as quarter-hearts
// (4 units = 1 heart); a max of 20 or less is read as whole hearts (1 unit = 1
// heart; fractions such as 2.5 give a half heart). The raw "current / max" is
// always shown beside the hearts, so nothing is lost when the guess is wrong.
export const QUARTER_HEART_THRESHOLD = 20;
export const UNITS_PER_HEART_QUARTERS = 4;

/** True for a plain JSON object (not an array, not null). */
export function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * Apply one training_update payload to `state`; returns {state, updates}.
 *
 * A snapshot (`snapshot: true`, also a `reset`) carries the whole merged state
 * in `data`: it replaces ours, and `updates` is empty.
 *
 * A live event carries every update of one POST, in order: `batch[i]` is the
 * i-th update's data, `steps[i]` its step, and `updates` the running count
 * after the last one. The updates are merged one at a time (a top-level key
 * replaces the old value), and `updates` gets one record per update (see
 * updateRecord), so each can be charted and listed as if it had come alone.
 */
export function applyTrainingEvent(state, payload) {
  if (!isPlainObject(payload)) return { state, updates: [] };
  if (payload.snapshot || payload.reset) {
    return { state: isPlainObject(payload.data) ? { ...payload.data } : {}, updates: [] };
  }
  const batch = Array.isArray(payload.batch) ? payload.batch : [];
  const steps = Array.isArray(payload.steps) ? payload.steps : [];
  const lastCount = typeof payload.updates === "number" ? payload.updates : batch.length;
  let merged = state;
  const updates = batch.map((item, i) => {
    const data = isPlainObject(item) ? item : {};
    // A spread, not Object.assign: a "__proto__" key stays a plain key.
    merged = { ...merged, ...data };
    return updateRecord(data, merged, steps[i], lastCount - batch.length + 1 + i);
  });
  return { state: merged, updates };
}

/**
 * One update of a live batch: {data, step, count, episode, suggestion}.
 * `merged` is the state merged up to and including this update; `count` its
 * running count. `step` is the server's step for it, else its global_step,
 * else the run's latest global_step, else its count. `episode` is set when the
 * update has an episode_reward (it ends an episode): {episode, reward, length},
 * the number and length read from `merged`, as the server's list does.
 * `suggestion` is its llm_suggestion when that is non-empty text.
 */
export function updateRecord(data, merged, step, count) {
  let x = step;
  if (typeof x !== "number") x = typeof data.global_step === "number" ? data.global_step : merged.global_step;
  if (typeof x !== "number") x = count;
  const episode = "episode_reward" in data
    ? { episode: merged.episode ?? null, reward: data.episode_reward, length: merged.episode_length ?? null }
    : null;
  const text = data.llm_suggestion;
  return { data, step: x, count, episode, suggestion: typeof text === "string" && text !== "" ? text : null };
}

/** Flatten nested objects into [["a.b", value], ...] in key order. */
export function flatten(value, prefix = "", depth = 0, out = []) {
  if (isPlainObject(value) && depth < MAX_FLATTEN_DEPTH && Object.keys(value).length > 0) {
    for (const key of Object.keys(value)) {
      flatten(value[key], prefix ? `${prefix}.${key}` : key, depth + 1, out);
    }
  } else if (prefix) {
    out.push([prefix, value]);
  }
  return out;
}

/** The flattened entries of state that no card shows, as a Map key -> value. */
export function otherMetrics(state) {
  const result = new Map();
  for (const [key, value] of flatten(state)) {
    if (!CARD_FIELDS.has(key)) result.set(key, value);
  }
  return result;
}

/** Read a dotted path ("a.b") from a nested object; undefined when absent. */
export function getPath(obj, path) {
  let current = obj;
  for (const part of path.split(".")) {
    if (!isPlainObject(current) || !(part in current)) return undefined;
    current = current[part];
  }
  return current;
}

const intFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const bigFloatFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const smallFloatFormat = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 4 });

/** Format a number: ints with separators, floats to 4 significant digits. */
export function formatNumber(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return EMPTY;
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return intFormat.format(value);
  const magnitude = Math.abs(value);
  if (magnitude >= 1e15 || magnitude < 1e-3) return value.toExponential(2);
  if (magnitude >= 1000) return bigFloatFormat.format(value);
  return smallFloatFormat.format(value);
}

/** Format any JSON value for display as text (null/undefined -> "—"). */
export function formatValue(value) {
  if (value === null || value === undefined) return EMPTY;
  if (typeof value === "number") return formatNumber(value);
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "string") return value === "" ? EMPTY : value;
  let text;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    text = String(value);
  }
  return text.length > MAX_TEXT_LENGTH ? `${text.slice(0, MAX_TEXT_LENGTH - 1)}…` : text;
}

/** Format an identifier (room, episode id) as-is, without thousands separators. */
export function formatId(value) {
  if (value === null || value === undefined || value === "") return EMPTY;
  if (typeof value === "number" || typeof value === "string") return String(value);
  return formatValue(value);
}

/**
 * Read a rate as a fraction 0..1: values in [0, 1] are fractions, values in
 * (1, 100] are taken as percentages. Anything else gives null (shown raw).
 */
export function rateFraction(value) {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) return null;
  if (value <= 1) return value;
  if (value <= 100) return value / 100;
  return null;
}

/** Format a rate as a percentage ("87.5%"), or the raw number when it is no rate. */
export function formatRate(value) {
  const fraction = rateFraction(value);
  if (fraction === null) return formatValue(value);
  return `${smallFloatFormat.format(Math.round(fraction * 1000) / 10)}%`;
}

/** Format an LLM response time given in seconds ("850 ms", "1.23 s"). */
export function formatSeconds(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return EMPTY;
  if (Math.abs(seconds) < 1) return `${Math.round(seconds * 1000)} ms`;
  return `${smallFloatFormat.format(seconds)} s`;
}

// One formatter for every clock time: toLocaleTimeString builds a new one per call.
const clockFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

/** Format a unix timestamp (seconds) as local wall-clock time. */
export function formatClock(unixSeconds) {
  if (typeof unixSeconds !== "number" || !Number.isFinite(unixSeconds)) return EMPTY;
  return clockFormat.format(new Date(unixSeconds * 1000));
}

/** Format a position object {x, y} as "x, y". */
export function formatPosition(position) {
  if (!isPlainObject(position)) return formatValue(position);
  if (position.x === undefined && position.y === undefined) return EMPTY;
  return `${formatValue(position.x)}, ${formatValue(position.y)}`;
}

/** Format a health object {current, max} as "current / max". */
export function formatHealth(health) {
  if (!isPlainObject(health)) return formatValue(health);
  if (health.current === undefined && health.max === undefined) return EMPTY;
  return `${formatValue(health.current)} / ${formatValue(health.max)}`;
}

/**
 * Hearts to draw for health {current, max}: {full, half, empty, unitsPerHeart}
 * or null when there is nothing sensible to draw. See QUARTER_HEART_THRESHOLD
 * for the unit rule; a partly filled heart (e.g. 3 of 4 quarters) is drawn as
 * a half heart, so any health left is visible.
 */
export function computeHearts(health) {
  if (!isPlainObject(health)) return null;
  const { current, max } = health;
  if (typeof max !== "number" || !Number.isFinite(max) || max <= 0) return null;
  if (typeof current !== "number" || !Number.isFinite(current)) return null;
  const unitsPerHeart = max > QUARTER_HEART_THRESHOLD ? UNITS_PER_HEART_QUARTERS : 1;
  const totalHearts = Math.ceil(max / unitsPerHeart - 1e-9);
  if (totalHearts > MAX_HEART_ICONS) return null;
  const clamped = Math.min(Math.max(current, 0), max);
  const halves = Math.ceil((clamped / unitsPerHeart) * 2 - 1e-9);  // rounded up to half hearts
  const full = Math.floor(halves / 2);
  const half = halves % 2;
  return { full, half, empty: totalHearts - full - half, unitsPerHeart };
}

/** Whether a milestone value counts as reached (true, or a positive count). */
export function milestoneReached(value) {
  if (typeof value === "number") return value > 0;
  return value === true;
}

/** Text for a milestone: counts as numbers, flags as "yes"/"not yet". */
export function formatMilestone(value) {
  if (value === null || value === undefined) return EMPTY;
  if (typeof value === "boolean") return value ? "yes" : "not yet";
  if (typeof value === "number") return `${formatNumber(value)}×`;
  return formatValue(value);
}

/** Human text for how long ago something was ("12 s", "3 min", "2 h"). */
export function formatAge(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h`;
}

// ---- charts: smoothing, bounded series, event ids --------------------------

export const SMOOTHING_MAX = 0.99;         // the slider's top: TensorBoard's range is [0, 0.99]

/** A smoothing weight clamped to [0, SMOOTHING_MAX]; anything unreadable gives 0. */
export function clampSmoothing(value) {
  const weight = typeof value === "number" ? value : Number.parseFloat(value);
  if (!Number.isFinite(weight) || weight <= 0) return 0;
  return Math.min(weight, SMOOTHING_MAX);
}

/**
 * TensorBoard's debiased exponential moving average of `values` with weight
 * `weight` (0 = no smoothing). Like TensorBoard, the average starts at 0 and is
 * divided by 1 - weight^n, so early points are not pulled towards zero; a
 * non-finite value is passed through and skipped; a constant series stays
 * exactly constant. Writes into `out` (grown as needed) and returns it.
 */
export function emaSmooth(values, weight, out = []) {
  const n = values.length;
  out.length = n;
  let constant = true;
  for (let i = 1; i < n && constant; i += 1) constant = values[i] === values[0];
  if (weight <= 0 || constant) {
    for (let i = 0; i < n; i += 1) out[i] = values[i];
    return out;
  }
  let last = 0;
  let accumulated = 0;
  for (let i = 0; i < n; i += 1) {
    const value = values[i];
    if (typeof value !== "number" || !Number.isFinite(value)) {
      out[i] = value;
      continue;
    }
    last = last * weight + (1 - weight) * value;
    accumulated += 1;
    out[i] = last / (1 - weight ** accumulated);
  }
  return out;
}

/**
 * One metric's points in the browser, capped at `cap` points. When full, the
 * newest half is kept at full resolution and every second point of the older
 * part is dropped (the first point always stays), so a tab left open for days
 * keeps the shape of the whole run in bounded memory, as the server's history does.
 */
export class SeriesBuffer {
  constructor(cap) {
    this.cap = Math.max(8, Math.floor(cap));
    this.xs = [];
    this.ys = [];
  }

  get length() {
    return this.xs.length;
  }

  /** Append one point; a step below the last drops the points the resumed run redoes (see rewind). */
  push(x, y) {
    const n = this.xs.length;
    if (n && x < this.xs[n - 1]) this.rewind(x);
    this.xs.push(x);
    this.ys.push(y);
    if (this.xs.length > this.cap) this.thin();
  }

  /** Replace every point (e.g. with the server's history). */
  replace(xs, ys) {
    const n = Math.min(xs.length, ys.length);
    this.xs = Array.from(xs.slice(0, n));
    this.ys = Array.from(ys.slice(0, n));
    while (this.xs.length > this.cap) this.thin();
  }

  /**
   * Drop the points at step `x` and past it: training resumed from an earlier
   * checkpoint redoes them (TensorBoard purges them the same way; so does the
   * server's history). The steps in a buffer never decrease: the cut is bisected.
   */
  rewind(x) {
    let lo = 0;
    let hi = this.xs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.xs[mid] >= x) hi = mid;
      else lo = mid + 1;
    }
    this.xs.length = lo;
    this.ys.length = lo;
  }

  /** Drop every point. */
  clear() {
    this.xs = [];
    this.ys = [];
  }

  /** Halve the older part of the series (all but the newest cap/2 points). */
  thin() {
    const keepRecent = Math.floor(this.cap / 2);
    const older = this.xs.length - keepRecent;
    const xs = [];
    const ys = [];
    for (let i = 0; i < older; i += 2) {
      xs.push(this.xs[i]);
      ys.push(this.ys[i]);
    }
    for (let i = older; i < this.xs.length; i += 1) {
      xs.push(this.xs[i]);
      ys.push(this.ys[i]);
    }
    this.xs = xs;
    this.ys = ys;
  }
}

/**
 * Every chartable number in an update, as the server's history records it:
 * [["a.b", value], ...] for finite numbers (booleans, text and lists are no metrics).
 */
export function numericLeaves(data, prefix = "", out = []) {
  if (!isPlainObject(data)) return out;
  for (const key of Object.keys(data)) {
    const value = data[key];
    const name = prefix ? `${prefix}.${key}` : key;
    if (typeof value === "number") {
      if (Number.isFinite(value)) out.push([name, value]);
    } else if (isPlainObject(value)) {
      numericLeaves(value, name, out);
    }
  }
  return out;
}

/** Split an SSE event id "<boot>-<seq>" into {boot, seq}; null when it is not one. */
export function parseEventId(id) {
  if (typeof id !== "string") return null;
  const cut = id.lastIndexOf("-");
  if (cut <= 0) return null;
  const seqText = id.slice(cut + 1);
  if (!/^\d+$/.test(seqText)) return null;
  return { boot: id.slice(0, cut), seq: Number.parseInt(seqText, 10) };
}

const compactFormat = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

/** A short axis label: 1.2K, 3.4M, 0.25, 1e-4. */
export function formatTick(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "";
  const magnitude = Math.abs(value);
  if (magnitude >= 1000) return compactFormat.format(value);
  if (magnitude !== 0 && magnitude < 1e-3) return value.toExponential(0);
  return String(Number(value.toPrecision(4)));
}

/**
 * A bounded log, newest last: entries get an increasing `serial` so a view can
 * add only what it has not shown yet. `limit` entries are kept.
 */
export class BoundedLog {
  constructor(limit) {
    this.limit = limit;
    this.entries = [];
    this.serial = 0;
  }

  /** Append an entry (an object); returns it with its serial. */
  push(entry) {
    this.serial += 1;
    const item = { ...entry, serial: this.serial };
    this.entries.push(item);
    if (this.entries.length > this.limit) this.entries.splice(0, this.entries.length - this.limit);
    return item;
  }

  /** The newest entry, or undefined. */
  last() {
    return this.entries[this.entries.length - 1];
  }

  /** Drop every entry (serials keep increasing, so views see a change). */
  clear() {
    this.entries = [];
  }
}
