// Joins GET /api/history to the live SSE stream without gaps or double points.
//
// A load fetches the history of some metrics (and, for the main load, the
// episode and suggestion lists) after the stream is open. Live events that
// arrive while a load is in flight are buffered in it (one record per update:
// the updates of one batch event share its seq); when the history comes, it is
// seeded first and the buffered events replayed after it. Whoever applies
// events (seed/replay callbacks) drops those whose seq is <= the history's
// `last_event_id` seq (same boot): those points are already in the history
// (the server records a batch and sends its event at once, so a batch is
// either wholly in the history or wholly after it).
// A snapshot (first connect, a reset, a new server boot, a reader that fell
// off the server's ring) restarts everything: older loads are then ignored.
import { parseEventId } from "./hud-logic.js";

export const HISTORY_URL = "/api/history";
export const LOAD_RETRY_MS = 2000;       // wait before fetching a failed load again
export const MAX_BUFFERED_EVENTS = 20000; // live update records kept per load in flight (oldest dropped past it)

/** The history URL for exactly `names`, each whole (commas and all); none at all for an empty list. */
export function historyUrl(names) {
  if (!names.length) return `${HISTORY_URL}?metrics=,`; // "," names no metric
  return `${HISTORY_URL}?${names.map((name) => `metric=${encodeURIComponent(name)}`).join("&")}`;
}

/** Fetch JSON from `url`, failing on a non-2xx status. */
export async function fetchJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

export class HistorySync {
  /**
   * fetchHistory(load) -> Promise of the /api/history JSON;
   * seed(load, history, {boot, seq}) applies it; replay(load, event) applies a buffered live event.
   * A load is {names: string[], logs: bool}.
   */
  constructor({ fetchHistory, seed, replay, retryMs = LOAD_RETRY_MS }) {
    this.fetchHistory = fetchHistory;
    this.seed = seed;
    this.replay = replay;
    this.retryMs = retryMs;
    this.generation = 0;
    this.loads = new Set();
  }

  /** Forget every load in flight: their answers will be ignored. */
  restart() {
    this.generation += 1;
    this.loads.clear();
  }

  /** Start loading the history of `names` (and the lists when `logs`). */
  load(names, logs = false) {
    const load = { names: [...names], logs, buffer: [], generation: this.generation };
    if (load.names.length === 0 && !logs) return null;
    this.loads.add(load);
    this.run(load);
    return load;
  }

  /** True while a load for `name` is in flight. */
  pending(name) {
    for (const load of this.loads) if (load.names.includes(name)) return true;
    return false;
  }

  /** True while the lists' load is in flight. */
  logsPending() {
    for (const load of this.loads) if (load.logs) return true;
    return false;
  }

  /** Note a live event ({boot, seq, ...}): every load in flight keeps it for replay. */
  live(event) {
    for (const load of this.loads) {
      load.buffer.push(event);
      if (load.buffer.length > MAX_BUFFERED_EVENTS) load.buffer.shift();
    }
  }

  /** Fetch one load; seed and replay it unless a restart made it stale; retry on failure. */
  async run(load) {
    let history;
    try {
      history = await this.fetchHistory(load);
    } catch (err) {
      if (load.generation !== this.generation) return;
      console.warn("HUD: history not loaded, retrying", err);
      setTimeout(() => {
        if (load.generation === this.generation && this.loads.has(load)) this.run(load);
      }, this.retryMs);
      return;
    }
    if (load.generation !== this.generation || !this.loads.has(load)) return;
    this.loads.delete(load);
    const cursor = parseEventId(history && history.last_event_id) || { boot: null, seq: -1 };
    this.seed(load, history || {}, cursor);
    for (const event of load.buffer) this.replay(load, event);
    load.buffer = [];
  }
}
