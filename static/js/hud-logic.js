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

/** Apply one training_update payload to a state object; returns the new state. */
export function applyTrainingUpdate(state, payload) {
  const data = isPlainObject(payload && payload.data) ? payload.data : {};
  if (payload && (payload.snapshot || payload.reset)) {
    // A snapshot carries the whole merged state: it replaces ours.
    return { ...data };
  }
  // A live update carries only its own keys; a top-level key replaces the old value.
  return { ...state, ...data };
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

/** Format a unix timestamp (seconds) as local wall-clock time. */
export function formatClock(unixSeconds) {
  if (typeof unixSeconds !== "number" || !Number.isFinite(unixSeconds)) return EMPTY;
  return new Date(unixSeconds * 1000).toLocaleTimeString(undefined, { hour12: false });
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
