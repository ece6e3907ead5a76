"""HUD server: keeps a training run's latest state in memory and streams it to browsers.

A training process posts updates (``/api/batch``, or the original HUD's
``/api/update_training`` and ``/api/update_vision``); every update is merged
into one state, serialised once into a bounded event log, and every open
``/stream`` reads that log at its own offset (Server-Sent Events).

Run it with ``python hud_server.py`` (waitress on 0.0.0.0:8086), or
``waitress-serve --call hud_server:create_app``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import contextlib
import ctypes
import dataclasses
import gc
import hmac
import itertools
import json
import logging
import math
import operator
import os
import signal
import sqlite3
import sys
import threading
import time
import uuid
import weakref
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson
from flask import Flask, Response, jsonify, render_template, request
from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_CONTENT_TYPE
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import WSGITask
from werkzeug.exceptions import HTTPException

log = logging.getLogger("hud_server")

#: The run a client belongs to when it does not name one (the original HUD's clients).
DEFAULT_RUN_ID = "default"
#: Waitress threads kept free for /health and the POST endpoints beyond the stream cap.
MIN_SPARE_THREADS = 4
#: Seconds between checks whether a stream's browser has gone (a closed tab frees its slot within ~3 s).
DISCONNECT_POLL_INTERVAL = 1.0
#: Bounds of the interval between the stream writer's passes over the open streams (see StreamWriter).
MIN_WRITE_INTERVAL = 0.005
MAX_WRITE_INTERVAL = 0.05
#: Seconds a stream's thread sleeps between checks that the stream writer is still running.
WRITER_CHECK_INTERVAL = 5.0
#: The SSE comment sent to a quiet stream so proxies and browsers keep it open.
HEARTBEAT = b": ping\n\n"
#: The WSGI environ key under which build_server's waitress gives the app (a weak reference to) its task.
WAITRESS_TASK_KEY = "hud.waitress_task"
#: Requests waitress reads ahead on a connection; above 0 lets a stream notice a closed browser.
CHANNEL_REQUEST_LOOKAHEAD = 5
#: Bytes waitress reads from a socket at a time (its default, 8 KiB, takes a batch in a dozen reads).
RECV_BYTES = 256 * 1024
#: The cyclic collector's thresholds (generation 0 allocations, then collections of 0 and 1).
GC_THRESHOLD = (10_000, 10, 10)
#: Bytes waitress accepts in a body beyond max_body_bytes, so Flask (not waitress) answers 413 in JSON.
WAITRESS_BODY_MARGIN = 1024 * 1024
#: glibc malloc arenas the server process may use (see limit_malloc_arenas); mallopt's M_ARENA_MAX.
MALLOC_ARENAS = 2
M_ARENA_MAX = -8
#: Updates whose JSON is at most this many bytes are not size-accounted per key:
#: the key cap already bounds them (max_state_keys x this).
SMALL_UPDATE_BYTES = 4096


# --------------------------------------------------------------------------- settings


class ConfigError(ValueError):
    """A setting has a value the server cannot run with; the message names the setting."""


def _parse_bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One server setting: its name, default, type and meaning (with unit)."""

    name: str
    default: Any
    type: type
    help: str
    minimum: float | None = None
    maximum: float | None = None

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return "HUD_" + self.name.upper()

    @property
    def flag(self) -> str:
        """The command-line flag that sets it."""
        return "--" + self.name.replace("_", "-")

    def parse(self, value: Any) -> Any:
        """Convert a raw value (string from env/flag, or a Python value) and check its range."""
        where = f"{self.env} ({self.flag})"
        try:
            if self.type is bool:
                parsed = value if isinstance(value, bool) else _parse_bool(value)
            elif self.type is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(f"expected a whole number, got {value!r}")
                parsed = int(value)
            elif self.type is float:
                if isinstance(value, bool):
                    raise ValueError(f"expected a number, got {value!r}")
                parsed = float(value)
                if not math.isfinite(parsed):
                    raise ValueError(f"expected a finite number, got {value!r}")
            else:
                parsed = str(value)
        except (TypeError, ValueError) as exc:
            kind = {int: "a whole number", float: "a number", bool: "true or false"}.get(self.type, "text")
            raise ConfigError(f"{where}: expected {kind}, got {value!r}") from exc
        if self.minimum is not None and parsed < self.minimum:
            raise ConfigError(f"{where}: must be at least {self.minimum:g}, got {parsed!r}")
        if self.maximum is not None and parsed > self.maximum:
            raise ConfigError(f"{where}: must be at most {self.maximum:g}, got {parsed!r}")
        return parsed


MiB = 1024 * 1024

SETTINGS: tuple[Setting, ...] = (
    Setting("host", "0.0.0.0", str, "address to listen on"),
    Setting("port", 8086, int, "TCP port to listen on (0 picks a free one)", 0, 65535),
    Setting(
        "threads",
        40,
        int,
        f"waitress worker threads; one per open stream, so at least max_streams + {MIN_SPARE_THREADS}",
        1,
        4096,
    ),
    Setting("max_streams", 32, int, "open /stream connections; past it 503 with Retry-After", 1, 4000),
    Setting("session_timeout", 300.0, float, "seconds of silence after which another run may take over", 0),
    Setting("heartbeat_interval", 15.0, float, "seconds between SSE comment heartbeats", 0.05, 3600),
    Setting("stream_retry", 2000, int, "milliseconds a browser waits before reconnecting (SSE retry:)", 0),
    Setting(
        "stream_buffer_bytes",
        256 * 1024,
        int,
        "bytes waitress buffers per connection before a write "
        "waits for the browser (and before it starts a new buffer: sent bytes are kept until then)",
        16 * 1024,
    ),
    Setting(
        "stream_writes",
        10_000,
        int,
        "writes to open streams per second, across all of them: new events go out at most "
        f"every open streams / this seconds ({MIN_WRITE_INTERVAL * 1000:g} to {MAX_WRITE_INTERVAL * 1000:g} ms)",
        1,
    ),
    Setting("event_log_size", 2048, int, "events kept for Last-Event-ID resume", 16),
    Setting(
        "event_log_bytes",
        2 * MiB,
        int,
        "bytes of training events the log keeps for Last-Event-ID resume (the latest frame comes on top)",
        64 * 1024,
    ),
    Setting("max_body_bytes", 8 * MiB, int, "largest request body in bytes; over it 413", 1024),
    Setting("max_frame_bytes", 4 * MiB, int, "largest decoded frame image in bytes; over it 413", 1024),
    Setting("max_batch", 1000, int, "training updates in one /api/batch request", 1),
    Setting("max_state_keys", 1024, int, "top-level keys the merged state may hold", 1),
    Setting("max_state_bytes", 32 * MiB, int, "bytes of large values the merged state may hold", 64 * 1024),
    Setting(
        "history_points",
        2000,
        int,
        "points kept per metric: half spread evenly over the whole run, half the most recent",
        16,
        1_000_000,
    ),
    Setting("history_metrics", 256, int, "metrics whose history is kept; later new ones are not recorded", 1),
    Setting("recent_items", 50, int, "recent episodes and LLM suggestions kept for the dashboard's lists", 1, 10_000),
    Setting("max_update_keys", 1000, int, "keys in one update, nested ones included; over it 413", 1),
    Setting("max_depth", 32, int, "nesting depth of objects and arrays in one update; over it 400", 1, 500),
    Setting("max_string_length", 10_000, int, "characters a text value keeps; longer text is cut with a marker", 16),
    Setting("max_frame_side", 4096, int, "largest frame width or height in pixels; over it 413", 16),
    Setting("token", "", str, "bearer token every write endpoint requires when set (empty: writes are open)"),
    Setting(
        "cors_origins",
        "",
        str,
        "comma-separated origins allowed to call the API from other sites (empty: same-origin only)",
    ),
    Setting("data_dir", "", str, "directory for the SQLite store that survives restarts (empty: memory only)"),
    Setting("store_interval", 0.5, float, "seconds between writes to the store (a crash loses at most this)", 0.05, 60),
    Setting("stale_after", 30.0, float, "seconds without an update before the dashboard says so", 1),
    Setting("title", "Zelda RL-LLM HUD", str, "page title"),
    Setting("game_name", "The Legend of Zelda: Oracle of Seasons", str, "game shown under the title"),
    Setting("log_level", "INFO", str, "logging level (DEBUG, INFO, WARNING, ERROR)"),
)
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Build the settings: defaults, then HUD_* environment variables, then ``overrides``.

    Unknown override keys and bad values raise :class:`ConfigError` naming the setting.
    """
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(SETTINGS_BY_NAME))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = overrides.get(setting.name, environ.get(setting.env, setting.default))
        values[setting.name] = setting.parse(raw)
    _check_together(values)
    return values


def _check_together(values: dict[str, Any]) -> None:
    """Check the rules that tie settings to each other."""
    if values["threads"] < values["max_streams"] + MIN_SPARE_THREADS:
        raise ConfigError(
            f"HUD_THREADS (--threads) must be at least HUD_MAX_STREAMS + {MIN_SPARE_THREADS} "
            f"= {values['max_streams'] + MIN_SPARE_THREADS} so /health and posts always have a "
            f"thread; got {values['threads']}"
        )
    if values["log_level"].upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"HUD_LOG_LEVEL (--log-level): unknown level {values['log_level']!r}")
    if values["max_body_bytes"] < values["max_frame_bytes"]:
        raise ConfigError("HUD_MAX_BODY_BYTES (--max-body-bytes) must be at least HUD_MAX_FRAME_BYTES")


# --------------------------------------------------------------------------- errors and JSON


class APIError(Exception):
    """A request the server refuses; becomes one JSON error of the standard shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_response(status: int, code: str, message: str, headers: dict | None = None, **extra: Any) -> Response:
    """The one JSON error shape every endpoint uses."""
    body = {"status": "error", "error": code, "message": message}
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def sanitize(value: Any) -> Any:
    """Return ``value`` with every NaN and infinity replaced by None (the browser can parse it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: sanitize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [sanitize(item) for item in value]
    return value


def cut_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with a visible marker saying how much was cut."""
    return f"{text[:limit]}… [cut {len(text) - limit} characters]"


class UpdateLimits:
    """The size limits of one update: keys, nesting depth, text length (cut, not refused)."""

    def __init__(self, max_keys: int, max_depth: int, max_string: int):
        self.max_keys = max_keys
        self.max_depth = max_depth
        self.max_string = max_string

    def within(self, text: bytes) -> bool:
        """Cheap proof from the update's JSON text (UTF-8) that no limit can be reached (the usual case).

        Each key takes at least 5 bytes (`"":0,`), each level of depth a bracket, and a
        string no more characters than the text has bytes.
        """
        return (
            len(text) <= self.max_string
            and len(text) < 5 * self.max_keys
            and text.count(b"{") + text.count(b"[") <= self.max_depth
        )

    def outside(self, texts: list[bytes]) -> list[int]:
        """Indexes of the texts :meth:`within` cannot vouch for (none, usually: one pass over all)."""
        if not texts:
            return []
        longest = max(map(len, texts))
        if longest <= self.max_string and longest < 5 * self.max_keys:
            if longest <= self.max_depth:
                return []  # too short to hold more brackets than that
            opening = map(bytes.count, texts, itertools.repeat(b"{"))
            brackets = map(operator.add, opening, map(bytes.count, texts, itertools.repeat(b"[")))
            if max(brackets) <= self.max_depth:
                return []
        return [index for index, text in enumerate(texts) if not self.within(text)]

    def apply(self, data: dict, where: str) -> dict:
        """``data`` with long text cut; raises APIError past the key or depth limit."""
        return self._walk(data, 1, where, [0])

    def _walk(self, value: Any, depth: int, where: str, keys: list[int]) -> Any:
        if isinstance(value, str):
            return value if len(value) <= self.max_string else cut_text(value, self.max_string)
        if isinstance(value, (dict, list)):
            if depth > self.max_depth:
                raise APIError(400, "too_deep", f"{where} is nested deeper than HUD_MAX_DEPTH ({self.max_depth})")
            if isinstance(value, list):
                return [self._walk(item, depth + 1, where, keys) for item in value]
            keys[0] += len(value)
            if keys[0] > self.max_keys:
                raise APIError(
                    413, "too_many_keys", f"{where} has more than HUD_MAX_UPDATE_KEYS ({self.max_keys}) keys"
                )
            out = {}
            for key, item in value.items():
                if len(key) > self.max_string:
                    raise APIError(
                        400, "key_too_long", f"{where} has a key longer than HUD_MAX_STRING_LENGTH ({self.max_string})"
                    )
                out[key] = self._walk(item, depth + 1, where, keys)
            return out
        return value


def _no_default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


#: json's C encoder, made once (json.dumps builds an encoder object per call): compact, ASCII,
#: refusing NaN and infinity. No cycle check: what it encodes came from JSON text.
_c_encoder = json.encoder.c_make_encoder(
    None, _no_default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
)


def _strict_encode(value: Any) -> str:
    """Compact strict JSON text of ``value`` (ValueError on NaN or infinity)."""
    return "".join(_c_encoder(value, 0))


def strict_dumps(value: Any) -> tuple[Any, str]:
    """Serialise to strict JSON, replacing non-finite floats by null; returns (clean value, text)."""
    try:
        return value, _strict_encode(value)
    except ValueError:
        clean = sanitize(value)
        return clean, _strict_encode(clean)


def parse_json(text: str | bytes, what: str) -> tuple[Any, bool]:
    """Parse JSON text; returns (value, strict), or raises a 400 APIError naming ``what``.

    orjson parses strict JSON, several times faster than the standard library. Text it
    refuses is tried again with the standard library, which also takes NaN and
    Infinity (Python's json.dumps writes them), integers past 64 bits and lone
    surrogates: ``strict`` is False then, and the value may hold non-finite floats.
    """
    try:
        return orjson.loads(text), True
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text), False
    except ValueError as exc:
        raise APIError(400, "invalid_json", f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise APIError(400, "too_deep", f"{what} is nested too deep to parse") from None


def parse_lines(lines: list[bytes], label: str) -> tuple[list[Any], bool]:
    """Parse each line as one JSON value: (values, strict) as :func:`parse_json`, for all lines.

    ``label`` names line ``i`` in errors as ``label.format(i)``.
    """
    try:
        return list(map(orjson.loads, lines)), True
    except orjson.JSONDecodeError:
        pass  # some line needs the standard library, or is not JSON: find which, below
    values, strict = [], True
    for index, line in enumerate(lines):
        value, line_strict = parse_json(line, label.format(index))
        values.append(value)
        strict = strict and line_strict
    return values, strict


def encode_strict_value(value: Any) -> bytes:
    """JSON text (UTF-8) of a value known to hold no NaN or infinity: orjson, or json for what it refuses."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # nested past orjson's 255 levels
        return _strict_encode(value).encode()


# --------------------------------------------------------------------------- validation

_NUMBER = "number"
_STRING = "string"
_OBJECT = "object"
_ID = "string or number"
_COUNT = "number or array"
_FLAG = "boolean or number"

#: Types of the fields the dashboard knows; null is always allowed (NaN arrives as null).
KNOWN_FIELDS: dict[str, str] = {
    "epoch": _NUMBER,
    "episode": _NUMBER,
    "episode_id": _ID,
    "global_step": _NUMBER,
    "episode_reward": _NUMBER,
    "episode_length": _NUMBER,
    "location": _STRING,
    "room_id": _ID,
    "position": _OBJECT,
    "health": _OBJECT,
    "entities": _OBJECT,
    "llm_suggestion": _STRING,
    "llm_calls": _NUMBER,
    "llm_success_rate": _NUMBER,
    "llm_alignment": _NUMBER,
    "milestones": _OBJECT,
    "exploration": _OBJECT,
}
KNOWN_SUBFIELDS: dict[str, dict[str, str]] = {
    "position": {"x": _NUMBER, "y": _NUMBER},
    "health": {"current": _NUMBER, "max": _NUMBER},
    "entities": {"npcs": _COUNT, "enemies": _COUNT, "items": _COUNT},
    "milestones": {"maku_tree_entered": _FLAG, "dungeon_entered": _FLAG, "sword_usage": _FLAG},
    "exploration": {"rooms_discovered": _COUNT, "grid_areas": _COUNT, "buildings_entered": _COUNT},
}


_NONE = type(None)
#: The exact Python types each kind allows (updates come from json.loads: no subclasses); null always.
_KIND_TYPES: dict[str, frozenset] = {
    _NUMBER: frozenset({int, float, _NONE}),
    _STRING: frozenset({str, _NONE}),
    _OBJECT: frozenset({dict, _NONE}),
    _ID: frozenset({int, float, str, _NONE}),
    _COUNT: frozenset({int, float, list, _NONE}),
    _FLAG: frozenset({int, float, bool, _NONE}),
}
_FIELD_TYPES = {key: _KIND_TYPES[kind] for key, kind in KNOWN_FIELDS.items()}
_SUBFIELD_TYPES = {
    key: {name: _KIND_TYPES[kind] for name, kind in fields.items()} for key, fields in KNOWN_SUBFIELDS.items()
}


def check_update(data: Any, where: str) -> None:
    """Refuse an update that is not an object or whose known fields have the wrong type."""
    if not isinstance(data, dict):
        raise APIError(400, "invalid_update", f"{where} must be a JSON object, got {_json_type(data)}")
    for key in data.keys() & _FIELD_TYPES.keys():
        if type(data[key]) not in _FIELD_TYPES[key]:
            kind = KNOWN_FIELDS[key]
            raise APIError(400, "invalid_field", f"{where}.{key} must be a {kind} or null, got {_json_type(data[key])}")
        sub = data[key]
        if type(sub) is dict and key in _SUBFIELD_TYPES:
            types = _SUBFIELD_TYPES[key]
            for name in sub.keys() & types.keys():
                if type(sub[name]) not in types[name]:
                    kind = KNOWN_SUBFIELDS[key][name]
                    raise APIError(
                        400,
                        "invalid_field",
                        f"{where}.{key}.{name} must be a {kind} or null, got {_json_type(sub[name])}",
                    )


class Column(NamedTuple):
    """One field across the updates of a batch: its values and their types, one pass each."""

    name: str  # the metric name: nested fields as "a.b"
    parent: str | None  # None at the top level; the top-level key for a field one level down; "" deeper
    key: str
    values: list  # one per update it covers; None where an update lacks the field
    kinds: set  # the types of ``values``
    rows: list[int] | None  # the updates it covers (those whose parent is an object); None: all of them
    every: bool  # every update it covers has the field (else ``values`` holds None where one lacks it)


def batch_columns(updates: list[dict]) -> list[Column]:
    """Every field of the updates (objects, all of them), nested ones included, in order of first appearance.

    A batch is taken a field at a time with a few C-level passes over all its
    updates, instead of walking each update in Python: validation, the state's
    limits, the steps and the history all read these columns.
    """
    columns: list[Column] = []
    if updates:
        _collect_columns(updates, None, "", None, columns)
    return columns


def _collect_columns(rows: list[dict], index: list[int] | None, prefix: str, parent: str | None, out: list) -> None:
    keys = set().union(*rows)
    every = sum(map(len, rows)) == len(keys) * len(rows)  # every row has every key: the usual case
    if every:
        order, column_of = rows[0].keys(), _every_row
    else:
        order, column_of = dict.fromkeys(itertools.chain.from_iterable(rows)), _some_rows
    for key in order:
        values = column_of(rows, key)
        kinds = set(map(type, values))
        out.append(Column(prefix + key, parent, key, values, kinds, index, every))
        if dict in kinds:
            if kinds == _DICT_TYPE:
                sub, sub_index = values, index
            else:
                taken = [i for i, value in enumerate(values) if type(value) is dict]
                sub = [values[i] for i in taken]
                sub_index = taken if index is None else [index[i] for i in taken]
            _collect_columns(sub, sub_index, prefix + key + ".", key if parent is None else "", out)


def _having(batch: Batch, key: str) -> Sequence[int]:
    """Indexes of the updates of ``batch`` that have top-level ``key``."""
    column = batch.top.get(key)
    if column is None:
        return ()
    if column.every:
        return range(len(batch.updates))
    return [index for index, update in enumerate(batch.updates) if key in update]


def _every_row(rows: list[dict], key: str) -> list:
    return list(map(operator.itemgetter(key), rows))


def _some_rows(rows: list[dict], key: str) -> list:
    return list(map(dict.get, rows, itertools.repeat(key)))  # None where a row lacks the key


def columns_valid(columns: list[Column]) -> bool:
    """True when the known fields of a batch's columns have allowed types (see :func:`check_update`)."""
    for column in columns:
        if column.parent is None:
            allowed = _FIELD_TYPES.get(column.key)
        elif column.parent:
            allowed = _SUBFIELD_TYPES.get(column.parent, _NO_FIELDS).get(column.key)
        else:
            continue
        if allowed is not None and not column.kinds <= allowed:
            return False
    return True


_NO_FIELDS: dict[str, frozenset] = {}
_DICT_TYPE = {dict}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_IMAGE_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))


@dataclasses.dataclass
class Batch:
    """Training updates checked and ready to apply: the values, their JSON texts, their columns."""

    updates: list[dict]
    texts: list[bytes]  # each update's JSON text, UTF-8
    columns: list[Column]
    top: dict[str, Column] = dataclasses.field(init=False)  # the top-level columns by key

    def __post_init__(self) -> None:
        self.top = {column.key: column for column in self.columns if column.parent is None}


@dataclasses.dataclass
class Frame:
    """The latest screenshot: its base64 text, type, and when it came."""

    image_base64: str
    mime: str
    size: int
    response_time: float | None
    ts: float


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT/JPG/DAC)


def image_size(raw: bytes, mime: str) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame segment; None if unreadable."""
    if mime == "image/png":
        if len(raw) < 24 or raw[12:16] != b"IHDR":
            return None
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    index = 2
    while index + 4 <= len(raw):
        if raw[index] != 0xFF:
            return None
        marker = raw[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            index += 2
            continue
        length = int.from_bytes(raw[index + 2 : index + 4], "big")
        if marker in _JPEG_SOF:
            if index + 9 > len(raw):
                return None
            return int.from_bytes(raw[index + 7 : index + 9], "big"), int.from_bytes(raw[index + 5 : index + 7], "big")
        if length < 2:
            return None
        index += 2 + length
    return None


def decode_frame(image: Any, response_time: Any, max_bytes: int, max_side: int, where: str) -> Frame:
    """Check a posted image (base64 JPEG or PNG, optional data: URL prefix) and return a Frame."""
    if not isinstance(image, str) or not image:
        raise APIError(400, "invalid_image", f"{where}image_base64 must be a non-empty base64 string")
    if image.startswith("data:"):
        head, _, image = image.partition(",")
        if not head.endswith(";base64"):
            raise APIError(400, "invalid_image", f"{where}image_base64 data: URL must be base64")
    image = image.strip()
    if len(image) * 3 // 4 > max_bytes + 3:
        raise APIError(413, "frame_too_large", f"{where}image is larger than HUD_MAX_FRAME_BYTES ({max_bytes} bytes)")
    try:
        raw = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "invalid_image", f"{where}image_base64 is not valid base64") from None
    if len(raw) > max_bytes:
        raise APIError(413, "frame_too_large", f"{where}image is larger than HUD_MAX_FRAME_BYTES ({max_bytes} bytes)")
    mime = next((kind for magic, kind in _IMAGE_MAGIC if raw.startswith(magic)), None)
    if mime is None:
        raise APIError(400, "invalid_image", f"{where}image_base64 is not a JPEG or PNG image")
    size = image_size(raw, mime)
    if size is None:
        raise APIError(400, "invalid_image", f"{where}image_base64 has no readable {mime} header")
    if max(size) > max_side:
        raise APIError(
            413, "frame_too_large", f"{where}image is {size[0]}x{size[1]} pixels; HUD_MAX_FRAME_SIDE is {max_side}"
        )
    if response_time is not None and (isinstance(response_time, bool) or not isinstance(response_time, (int, float))):
        raise APIError(400, "invalid_field", f"{where}response_time must be a number or null")
    if isinstance(response_time, float) and not math.isfinite(response_time):
        response_time = None
    return Frame(image, mime, len(raw), response_time, time.time())


# --------------------------------------------------------------------------- event log


class EventLog:
    """A bounded ring of serialised SSE events; each reader keeps its own offset (a sequence number)."""

    def __init__(self, boot_id: str, max_events: int, max_bytes: int):
        self.boot_id = boot_id
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._events: collections.deque[tuple[int, bytes]] = collections.deque()
        self._bytes = 0
        self._last_seq = 0
        self._superseding: dict[str, int] = {}  # event name -> seq of its latest superseding event
        self._latest: dict[str, int] = {}  # event name -> bytes of that event while the log holds it
        self.dropped = 0
        self._lock = threading.Lock()
        #: Set by every append: the stream writer waits on it (see StreamWriter).
        self.news = threading.Event()
        #: Readers that write their own stream (not under our waitress server) wait on this.
        self._changed = threading.Condition(self._lock)

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest event (0 before the first)."""
        return self._last_seq

    def event_id(self, seq: int) -> str:
        """The SSE id of event ``seq``: boot id and sequence, so a restarted server is noticed."""
        return f"{self.boot_id}-{seq}"

    def append(self, name: str, payload: str | bytes, supersedes: bool = False) -> int:
        """Add one event (its data one line of JSON, as text or UTF-8), evicting the oldest past the bounds.

        With ``supersedes``, the previous event of the same name that did so is emptied
        in place: only the newest frame matters, so a reader that is behind skips the
        older ones, and frames cost the log the bytes of one. That one is not counted
        against ``max_bytes``: a frame of any allowed size fits beside the training
        events, and the budget is theirs.
        """
        with self._lock:
            seq = self._last_seq + 1
            if isinstance(payload, str):
                payload = payload.encode()
            chunk = b"".join((f"id: {self.boot_id}-{seq}\nevent: {name}\ndata: ".encode(), payload, b"\n\n"))
            if supersedes:
                self._empty(self._superseding.get(name))
                self._superseding[name] = seq
                self._latest[name] = len(chunk)
            self._events.append((seq, chunk))
            self._bytes += len(chunk)
            self._last_seq = seq
            while len(self._events) > 1 and (
                len(self._events) > self.max_events or self._bytes - sum(self._latest.values()) > self.max_bytes
            ):
                old_seq, old = self._events.popleft()
                self._bytes -= len(old)
                self.dropped += 1
                for kind, latest in self._superseding.items():
                    if latest == old_seq:
                        self._latest[kind] = 0
        if not self.news.is_set():
            self.news.set()
        return seq  # readers learn of it from the stream writer, at its pace

    def notify_readers(self) -> None:
        """Wake the readers waiting in :meth:`wait_after` (the stream writer calls this at its pace, not per event)."""
        with self._lock:
            self._changed.notify_all()

    def _empty(self, seq: int | None) -> None:
        """Drop the bytes of event ``seq`` if it is still in the log (its place stays)."""
        if seq is None or not self._events or seq < self._events[0][0]:
            return
        index = seq - self._events[0][0]
        self._bytes -= len(self._events[index][1])
        self._events[index] = (seq, b"")

    def read_after(self, seq: int) -> tuple[list[bytes], int] | None:
        """Events after ``seq`` and the new offset; None when some were already evicted."""
        with self._lock:
            return self._read_after(seq)

    def _read_after(self, seq: int) -> tuple[list[bytes], int] | None:
        if seq >= self._last_seq:
            return [], seq
        first = self._events[0][0] if self._events else self._last_seq + 1
        if seq + 1 < first:
            return None
        start = seq + 1 - first
        return [chunk for _, chunk in itertools.islice(self._events, start, None) if chunk], self._last_seq

    def wait_after(self, seq: int, timeout: float) -> tuple[list[bytes], int] | None:
        """Like :meth:`read_after`, but wait up to ``timeout`` seconds for a notification if nothing is new."""
        with self._lock:
            if self._last_seq <= seq:
                self._changed.wait(timeout)
            return self._read_after(seq)


# --------------------------------------------------------------------------- metric history


#: Integers beyond a float's range cannot be charted (nor formatted as one).
FLOAT_MAX = sys.float_info.max


_NUMBER_TYPES = {int, float}
#: Runs an iterator to its end, keeping nothing (``map`` for its effects, at C speed).
_consume = collections.deque(maxlen=0).extend


def _chartable(value: Any) -> bool:
    """A number a chart can draw: a float (finite once sanitised) or an int within a float's range."""
    kind = type(value)
    return kind is float or (kind is int and -FLOAT_MAX <= value <= FLOAT_MAX)


class SeriesHistory:
    """One metric's points within a fixed budget, keeping the shape of the whole run.

    Half the budget is an *overview*: every ``stride``-th point since the start;
    when it fills up every second point is dropped and the stride doubles, so it
    always spans the whole run evenly and keeps the very first point. The other
    half is the most recent points at full resolution, so the latest point and
    the recent detail are never lost. Points are kept as three float64 columns
    (step, wall time, value): 24 bytes a point and no object per point, so a
    batch of points is added with a few C-level slices.
    """

    __slots__ = ("half", "count", "stride", "overview", "recent")

    def __init__(self, budget: int):
        self.half = max(2, budget // 2)
        self.count = 0  # points offered so far
        self.stride = 1  # a power of two
        self.overview = _columns()
        self.recent = _columns()  # the newest points: ``half`` of them, up to twice that between trims

    def extend(self, steps: array, walls: array, values: array) -> None:
        """Record points in arrival order (three equally long float64 columns).

        The same as offering the points one at a time: point ``count + i`` joins the
        overview when the stride divides it, and a full overview is thinned at once.
        """
        count, overview, columns = self.count, self.overview, (steps, walls, values)
        index = -count % self.stride  # the first point whose arrival number is a multiple of the stride
        while index < len(values):
            room = self.half - len(overview[0])  # at least 1: a full overview is thinned at once
            before = len(overview[0])
            taken = slice(index, index + room * self.stride, self.stride)
            for kept, column in zip(overview, columns, strict=True):
                kept.extend(column[taken])
            if len(overview[0]) < self.half:
                break
            after = index + (len(overview[0]) - before - 1) * self.stride + 1  # just past the point that filled it
            for kept in overview:
                del kept[1::2]
            self.stride *= 2
            index = after + (-(count + after) % self.stride)
        for kept, column in zip(self.recent, columns, strict=True):
            kept.extend(column[-self.half :])
            if len(kept) >= 2 * self.half:
                del kept[: -self.half]
        self.count = count + len(values)

    @classmethod
    def restored(
        cls, budget: int, count: int, stride: int, overview: tuple[array, ...], recent: tuple[array, ...]
    ) -> SeriesHistory:
        """A series as a store kept it (the budget may have changed since)."""
        series = cls(budget)
        series.count = count
        series.stride = stride
        while len(overview[0]) >= series.half:
            overview = tuple(column[::2] for column in overview)
            series.stride *= 2
        series.overview = overview
        series.recent = tuple(column[-series.half :] for column in recent)
        return series

    def parts(self) -> tuple[int, int, tuple[array, ...], tuple[array, ...]]:
        """Count, stride, and copies of the overview and recent columns: what the store keeps."""
        recent = min(len(self.recent[0]), self.half)
        return (
            self.count,
            self.stride,
            tuple(column[:] for column in self.overview),
            tuple(column[len(column) - recent :] for column in self.recent),
        )

    def columns(self) -> tuple[array, array, array]:
        """Steps, wall times and values in arrival order, as float64 columns."""
        recent = min(len(self.recent[0]), self.half)
        first_recent = self.count - recent  # arrival number of the oldest recent point
        # Overview point k arrived as point k * stride; keep those older than the recent points.
        older = min(len(self.overview[0]), -(-first_recent // self.stride))
        steps, walls, values = (
            kept[:older] + latest[len(latest) - recent :]
            for kept, latest in zip(self.overview, self.recent, strict=True)
        )
        return steps, walls, values

    def points(self, since: float | None = None) -> tuple[list, list, list]:
        """Steps, wall times and values in arrival order as lists (only steps >= ``since`` if given).

        Where the steps went back (training resumed from a checkpoint), the points
        the resumed run redoes are left out (see :func:`_not_rewound`).
        """
        columns = self.columns()
        keep = _not_rewound(columns[0])
        if since is not None:
            at_since = [step >= since for step in columns[0]]
            keep = at_since if keep is None else list(map(operator.and_, keep, at_since))
        if keep is None:
            return columns[0].tolist(), columns[1].tolist(), columns[2].tolist()
        steps, walls, values = (list(itertools.compress(column, keep)) for column in columns)
        return steps, walls, values


def _not_rewound(steps: array) -> list[bool] | None:
    """Which points survive the rewinds after them; None when the steps never go back.

    A point whose step is below the one before it is a rewind (training resumed
    from a checkpoint), and it supersedes every earlier point at its step or past
    it, as TensorBoard purges them. Equal steps in a row are no rewind: updates
    without a step of their own share the latest one.
    """
    if all(map(operator.le, steps, itertools.islice(steps, 1, None))):  # the usual case, at C speed
        return None
    keep = [True] * len(steps)
    cut = math.inf  # the lowest step of a rewind after the current point
    for index in range(len(steps) - 1, -1, -1):
        step = steps[index]
        if step >= cut:
            keep[index] = False
        if index and step < steps[index - 1]:
            cut = min(cut, step)
    return keep


def _metric_names(data: dict, prefix: str = "") -> Iterable[str]:
    """The metric names of one update's chartable numbers, depth first."""
    for key, value in data.items():
        if _chartable(value):
            yield prefix + key
        elif type(value) is dict:
            yield from _metric_names(value, prefix + key + ".")


def _columns() -> tuple[array, array, array]:
    return array("d"), array("d"), array("d")


class MetricHistory:
    """The history of every numeric field of a run, each metric within its point budget."""

    def __init__(self, budget: int, max_metrics: int):
        self.budget = budget
        self.max_metrics = max_metrics
        self.series: dict[str, SeriesHistory] = {}
        self.refused: set[str] = set()

    def record(self, updates: list[dict], columns: list[Column], steps: list, wall: float) -> None:
        """Add a point to every number of a batch (see :func:`batch_columns`); ``steps[i]`` is update i's.

        The same as recording the updates one at a time, a field at a time: each
        metric's points are added to its series at once. The updates are
        sanitised (their floats are finite); booleans, text and lists are not
        metrics.
        """
        found: dict[str, list[tuple[list[int] | None, list, array | None]]] = {}  # name -> (rows, values, column)
        for column in columns:
            if not column.kinds & _NUMBER_TYPES:
                continue
            if column.kinds <= _NUMBER_TYPES:  # a number in every update it covers: the usual case
                try:
                    values = array("d", column.values)
                except OverflowError:  # an integer past a float's range is not chartable
                    pass
                else:
                    found.setdefault(column.name, []).append((column.rows, column.values, values))
                    continue
            taken = [i for i, value in enumerate(column.values) if _chartable(value)]
            if taken:
                rows = taken if column.rows is None else [column.rows[i] for i in taken]
                found.setdefault(column.name, []).append((rows, [column.values[i] for i in taken], None))
        self._start_new(found, updates)
        walls = array("d", [wall]) * len(steps)
        every = array("d", steps)
        for name, pieces in found.items():
            history = self.series.get(name)
            if history is None:  # past HUD_HISTORY_METRICS
                continue
            if len(pieces) == 1:
                rows, values, column = pieces[0]
            else:  # a dotted key and a nested field of the same name: their points in arrival order
                merged = sorted(
                    (row, value)
                    for rows, values, _ in pieces
                    for row, value in zip(range(len(steps)) if rows is None else rows, values, strict=True)
                )
                rows, values, column = [row for row, _ in merged], [value for _, value in merged], None
            history.extend(
                every if rows is None else array("d", [steps[i] for i in rows]),
                walls if rows is None else walls[: len(rows)],
                array("d", values) if column is None else column,
            )

    def _start_new(self, found: dict[str, list], updates: list[dict]) -> None:
        """Start the series of metrics new in this batch, in the order their first points arrived."""
        new = [name for name in found if name not in self.series]
        if not new:
            return
        first = {name: min(0 if rows is None else rows[0] for rows, _, _ in found[name]) for name in new}
        order: dict[int, list[str]] = {}  # row -> its metric names, depth first (as it would be recorded alone)
        for row in set(first.values()):
            order[row] = list(_metric_names(updates[row]))
        for name in sorted(new, key=lambda name: (first[name], order[first[name]].index(name))):
            self._start(name)

    def _start(self, name: str) -> SeriesHistory | None:
        """A new metric's history, or None when HUD_HISTORY_METRICS are already kept."""
        if len(self.series) >= self.max_metrics:
            if name not in self.refused and len(self.refused) < self.max_metrics:
                self.refused.add(name)
                log.warning("metric %r not recorded: HUD_HISTORY_METRICS (%d) reached", name, self.max_metrics)
            return None
        history = self.series[name] = SeriesHistory(self.budget)
        return history

    def export_json(self, names: Iterable[str] | None = None, since: float | None = None, times: bool = False) -> str:
        """The asked-for metrics (all by default) as JSON text: {name: {steps, values[, times]}}.

        Written by hand rather than by json.dumps: a float's repr is most of the
        cost of a full history, so values go out with 7 significant digits (a
        float32's precision, more than a chart can show) and whole steps as integers.
        """
        chosen = self.series if names is None else {n: self.series[n] for n in names if n in self.series}
        parts = []
        for name, history in chosen.items():
            steps, walls, values = history.points(since)
            fields = [f'"steps":[{_join_steps(steps)}]', f'"values":[{_join_values(values)}]']
            if times:
                fields.append(f'"times":[{_join_times(walls)}]')
            parts.append(f"{json.dumps(name)}:{{{','.join(fields)}}}")
        return "{" + ",".join(parts) + "}"


def _join_values(values: list[float]) -> str:
    """Values as JSON numbers with 7 significant digits (one % call: cheaper than a join of reprs)."""
    return (("%.7g," * len(values)) % tuple(values))[:-1]


def _join_steps(steps: list[float]) -> str:
    """Steps as JSON numbers: integers when they are whole (the usual case, and cheaper)."""
    if all(step == int(step) for step in steps):
        return (("%d," * len(steps)) % tuple(steps))[:-1]
    return ",".join(map(repr, map(float, steps)))


def _join_times(walls: list[float]) -> str:
    """Wall times in seconds with millisecond precision."""
    return (("%.3f," * len(walls)) % tuple(walls))[:-1]


# --------------------------------------------------------------------------- state and sessions


@dataclasses.dataclass
class Session:
    """The run that owns the HUD now."""

    session_id: str
    run_id: str
    last_seen: float  # time.monotonic()


class HUD:
    """The server's state: merged training data, latest frame, session, event log."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self.boot_id = uuid.uuid4().hex[:12]
        self.started = time.time()
        self.lock = threading.RLock()
        self.log = EventLog(self.boot_id, settings["event_log_size"], settings["event_log_bytes"])
        self.state: dict[str, Any] = {}
        self._large_values: dict[str, int] = {}  # key -> JSON bytes, for values set by big updates
        self.frame: Frame | None = None
        self.session: Session | None = None
        self.shown_run_id: str | None = None  # whose data the dashboard shows
        self.start_fresh = False  # set by /api/reset_session: next session clears the dashboard
        self.updates = 0
        self.frames = 0
        self.last_update: float | None = None
        self.limits = UpdateLimits(settings["max_update_keys"], settings["max_depth"], settings["max_string_length"])
        self.history = MetricHistory(settings["history_points"], settings["history_metrics"])
        self.episodes: collections.deque[dict] = collections.deque(maxlen=settings["recent_items"])
        self.suggestions: collections.deque[dict] = collections.deque(maxlen=settings["recent_items"])
        self.last_step: float | None = None  # the latest global_step the run sent
        self._snapshot_cache: tuple[int, str] | None = None
        self.open_streams = 0
        self._streams_lock = threading.Lock()
        self.closing = False  # set at shutdown: every stream ends
        self.writer = StreamWriter(self)  # writes the open streams, from one thread
        self.changes = 0  # counts every change: the store writes, and the snapshot is rebuilt, when it moves
        self.counts: collections.Counter = collections.Counter()  # since start, for /metrics
        self.store: Store | None = None
        self._history_reset = False  # the store must drop the old run's series

    # ---- sessions

    def claim(self, run_id: str | None, session_id: str | None) -> Session:
        """Make the caller's run the owner (joining, adopting or taking over) or raise 409.

        Must be called with ``self.lock`` held.
        """
        run_id = run_id or DEFAULT_RUN_ID
        now = time.monotonic()
        active = self.session
        if active is not None and (active.run_id == run_id or (session_id and session_id == active.session_id)):
            active.last_seen = now
            return active
        if active is not None:
            idle = now - active.last_seen
            timeout = self.settings["session_timeout"]
            if idle < timeout:
                retry_after = max(1, math.ceil(timeout - idle))
                raise APIError(
                    409,
                    "session_conflict",
                    f"run {active.run_id!r} owns the HUD (last heard {idle:.0f} s ago); run {run_id!r} "
                    f"may take over after {timeout:g} s of silence or POST /api/reset_session",
                    headers={"Retry-After": str(retry_after)},
                    owner_run_id=active.run_id,
                    retry_after=retry_after,
                )
        if self.start_fresh or (self.shown_run_id is not None and self.shown_run_id != run_id):
            self._clear(run_id)
        self.start_fresh = False
        self.shown_run_id = run_id
        self.session = Session(session_id or uuid.uuid4().hex, run_id, now)
        self.changes += 1
        log.info("run %r owns the HUD now (session %s)", run_id, self.session.session_id)
        return self.session

    def reset_session(self) -> None:
        """Release the HUD: any run may register next, and its data starts a fresh dashboard."""
        with self.lock:
            if self.session is not None:
                log.info("session of run %r reset", self.session.run_id)
            self.session = None
            self.start_fresh = True
            self.changes += 1

    def _clear(self, run_id: str) -> None:
        """Start the dashboard afresh for a new run, telling open streams to clear."""
        self.counts["takeovers"] += 1
        self.state = {}
        self._large_values = {}
        self.frame = None
        self.updates = 0
        self.frames = 0
        self.last_update = None
        self.history = MetricHistory(self.settings["history_points"], self.settings["history_metrics"])
        self._history_reset = True
        self.episodes.clear()
        self.suggestions.clear()
        self.last_step = None
        meta = {
            "snapshot": True,
            "reset": True,
            "data": {},
            "ts": None,
            "session_id": None,
            "run_id": run_id,
            "updates": 0,
        }
        self.log.append("training_update", json.dumps(meta, separators=(",", ":")))
        self.log.append(
            "vision_update",
            json.dumps({"snapshot": True, "image_base64": None, "mime": None, "response_time": None, "ts": None}),
            supersedes=True,
        )

    # ---- updates

    def prepare(self, values: list, label: str, strict: bool = False, texts: list[bytes] | None = None) -> Batch:
        """Check a batch's updates and bring them to the form kept and streamed.

        ``strict`` says the values hold no NaN or infinity (see :func:`parse_json`).
        ``texts``, when given, are the updates' own strict JSON texts in UTF-8 (NDJSON
        lines without a carriage return): they are streamed as they came, which spares
        encoding each update again. Otherwise each update is encoded here, with NaN
        and infinities as null. Text past HUD_MAX_STRING_LENGTH is cut; a wrong
        type on a known field, too many keys or too deep a nesting raises APIError.
        ``label`` names update ``i`` in errors as ``label.format(i)``.
        """
        objects = not values or set(map(type, values)) == _DICT_TYPE
        if not (strict and objects):
            for index, data in enumerate(values):  # NaN and friends are checked as sent, before they are null
                check_update(data, label.format(index))
        if texts is None and strict:
            texts = list(map(encode_strict_value, values))
        elif texts is None:
            texts = []
            for index, data in enumerate(values):
                try:
                    values[index], text = strict_dumps(data)
                except RecursionError:
                    raise APIError(
                        400, "too_deep", f"{label.format(index)} is nested deeper than HUD_MAX_DEPTH"
                    ) from None
                texts.append(text.encode())
        limits = self.limits
        for index in limits.outside(texts):
            values[index] = limits.apply(values[index], label.format(index))
            texts[index] = _strict_encode(values[index]).encode()
        columns = batch_columns(values)
        if not columns_valid(columns):
            for index, data in enumerate(values):  # find the first wrong field and name it
                check_update(data, label.format(index))
        return Batch(values, texts, columns)

    def apply(self, run_id: str | None, session_id: str | None, batch: Batch, frame: Frame | None = None) -> Session:
        """Merge a prepared batch (see :meth:`prepare`) in order as one event, then set ``frame``.

        All or nothing: a batch past the state's limits, or from a run that does
        not own the HUD, changes nothing. The event carries the updates' texts
        and the step of each (``batch`` and ``steps``); ``updates`` is the count
        after the last of them.
        """
        updates = batch.updates
        with self.lock:
            self._check_limits(batch)
            session = self.claim(run_id, session_id)
            if updates:
                now = time.time()
                steps = self._steps_of(batch)
                self._merge(batch, steps, now)
                self.history.record(updates, batch.columns, steps, now)
                self.updates += len(updates)
                sid, rid = json.dumps(session.session_id), json.dumps(session.run_id)
                head = (
                    f'{{"snapshot":false,"ts":{now!r},"session_id":{sid},"run_id":{rid},"updates":{self.updates},'
                    f'"steps":[{",".join(map(repr, steps))}],"batch":['
                )
                self.log.append("training_update", b"".join((head.encode(), b",".join(batch.texts), b"]}")))
                self.last_update = now
                self.changes += 1
                self.counts["updates"] += len(updates)
            if frame is not None:
                self._set_frame(frame)
            return session

    def _steps_of(self, batch: Batch) -> list:
        """The x of each update's points: its global_step, else the run's latest one, else arrival order."""
        given, count = batch.top.get("global_step"), len(batch.updates)
        if given is None:
            steps = [None] * count
        elif given.kinds <= _NUMBER_TYPES and -FLOAT_MAX <= min(given.values) and max(given.values) <= FLOAT_MAX:
            self.last_step = given.values[-1]  # every update has a global_step: the usual case
            return list(given.values)
        else:
            steps = list(given.values)
        for index, step in enumerate(steps):
            if _chartable(step):
                self.last_step = step
            else:
                steps[index] = self.last_step if self.last_step is not None else self.updates + index + 1
        return steps

    def _merge(self, batch: Batch, steps: list, now: float) -> None:
        """Merge the updates into the state in order, noting ended episodes and new LLM advice on the way.

        An update with episode_reward ends an episode; its number and length come
        from the state as merged up to that update. Only the episodes the list can
        keep are looked at.
        """
        updates, texts = batch.updates, batch.texts
        if self._large_values or max(map(len, texts)) > SMALL_UPDATE_BYTES:
            for update, text in zip(updates, texts, strict=True):
                self._account(update, text)
        merge = self.state.update
        done = 0
        for index in _having(batch, "episode_reward")[-self.episodes.maxlen :]:
            _consume(map(merge, updates[done : index + 1]))
            done = index + 1
            state = self.state
            self.episodes.append(
                {
                    "episode": state.get("episode"),
                    "reward": updates[index]["episode_reward"],
                    "length": state.get("episode_length"),
                    "step": steps[index],
                    "ts": now,
                }
            )
        _consume(map(merge, updates[done:]))
        for index in _having(batch, "llm_suggestion"):
            text = updates[index]["llm_suggestion"]
            if isinstance(text, str) and text and (not self.suggestions or self.suggestions[-1]["text"] != text):
                self.suggestions.append({"text": text, "step": steps[index], "ts": now})

    def _check_limits(self, batch: Batch) -> None:
        """Refuse a batch that would take the state past its key or byte budget."""
        state = self.state
        new_keys = len(batch.top.keys() - state.keys())
        if len(state) + new_keys > self.settings["max_state_keys"]:
            raise APIError(
                413,
                "too_many_keys",
                f"the state would hold {len(state) + new_keys} top-level keys; "
                f"HUD_MAX_STATE_KEYS is {self.settings['max_state_keys']}",
            )
        texts = batch.texts
        if not texts or max(map(len, texts)) <= SMALL_UPDATE_BYTES:
            return  # small updates only ever release large values
        large = dict(self._large_values)
        for update, text in zip(batch.updates, texts, strict=True):
            self._account(update, text, large)
        total = sum(large.values())
        if total > self.settings["max_state_bytes"]:
            raise APIError(
                413,
                "state_too_large",
                f"the state's large values would take {total} bytes; "
                f"HUD_MAX_STATE_BYTES is {self.settings['max_state_bytes']}",
            )

    def _account(self, clean: dict, text: str, large: dict[str, int] | None = None) -> None:
        """Track JSON sizes of values set by big updates (small ones are bounded by the key cap)."""
        large = self._large_values if large is None else large
        if len(text) <= SMALL_UPDATE_BYTES:
            if large:
                for key in clean:
                    large.pop(key, None)
        else:
            for key, value in clean.items():
                large[key] = len(key) + len(json.dumps(value, allow_nan=False))

    def set_frame(self, run_id: str | None, session_id: str | None, frame: Frame) -> Session:
        """Make ``frame`` the latest and publish it."""
        with self.lock:
            session = self.claim(run_id, session_id)
            self._set_frame(frame)
            return session

    def _set_frame(self, frame: Frame) -> None:
        self.frame = frame
        self.frames += 1
        self.changes += 1
        self.counts["frames"] += 1
        self.log.append("vision_update", self._frame_payload(frame, snapshot=False), supersedes=True)

    @staticmethod
    def _frame_payload(frame: Frame, snapshot: bool) -> str:
        return json.dumps(
            {
                "snapshot": snapshot,
                "image_base64": frame.image_base64,
                "mime": frame.mime,
                "response_time": frame.response_time,
                "ts": frame.ts,
            },
            separators=(",", ":"),
        )

    # ---- reads

    def snapshot_events(self) -> tuple[bytes, int]:
        """The present as SSE events (whole state, then latest frame) and the log offset it matches."""
        with self.lock:
            seq = self.log.last_seq
            if self._snapshot_cache is None or self._snapshot_cache[0] != self.changes:
                session = self.session
                body = json.dumps(
                    {
                        "snapshot": True,
                        "reset": False,
                        "data": self.state,
                        "ts": self.last_update,
                        "session_id": session.session_id if session else None,
                        "run_id": self.shown_run_id,
                        "updates": self.updates,
                    },
                    allow_nan=False,
                    separators=(",", ":"),
                )
                self._snapshot_cache = (self.changes, body)
            event_id = self.log.event_id(seq)
            out = f"id: {event_id}\nevent: training_update\ndata: {self._snapshot_cache[1]}\n\n"
            if self.frame is not None:
                out += (
                    f"id: {event_id}\nevent: vision_update\ndata: {self._frame_payload(self.frame, snapshot=True)}\n\n"
                )
            return out.encode(), seq

    def describe(self) -> dict[str, Any]:
        """The current snapshot for GET /api/state."""
        with self.lock:
            frame = self.frame
            return {
                "session_id": self.session.session_id if self.session else None,
                "run_id": self.shown_run_id,
                "boot_id": self.boot_id,
                "data": self.state,
                "updates": self.updates,
                "frames": self.frames,
                "last_update": self.last_update,
                "frame": None
                if frame is None
                else {"ts": frame.ts, "response_time": frame.response_time, "mime": frame.mime, "bytes": frame.size},
            }

    def history_json(self, names: Iterable[str] | None, since: float | None, times: bool) -> str:
        """Metric history for GET /api/history as JSON text, with the event id it is current to."""
        with self.lock:
            head = json.dumps(
                {
                    "run_id": self.shown_run_id,
                    "boot_id": self.boot_id,
                    "updates": self.updates,
                    "last_event_id": self.log.event_id(self.log.last_seq),
                    "budget": self.settings["history_points"],
                    "episodes": list(self.episodes),
                    "suggestions": list(self.suggestions),
                },
                allow_nan=False,
                separators=(",", ":"),
            )
            return head[:-1] + ',"metrics":' + self.history.export_json(names, since, times) + "}"

    # ---- persistence

    def persistent_meta(self) -> dict[str, Any]:
        """What the store keeps besides the history (call with the lock held)."""
        frame = self.frame
        session = self.session
        meta = {
            "state": self.state,
            "run_id": self.shown_run_id,
            "start_fresh": self.start_fresh,
            "session": None if session is None else {"session_id": session.session_id, "run_id": session.run_id},
            "updates": self.updates,
            "frames": self.frames,
            "last_update": self.last_update,
            "last_step": self.last_step,
            "episodes": list(self.episodes),
            "suggestions": list(self.suggestions),
            "frame": None if frame is None else dataclasses.asdict(frame),
        }
        self._history_reset = False
        return meta

    def restore(self, loaded: dict[str, Any]) -> None:
        """Take up what a store held (at start, before serving)."""
        meta = loaded["meta"]
        if not meta and not loaded["series"]:
            return
        with self.lock:
            self.state = meta.get("state") or {}
            self.shown_run_id = meta.get("run_id")
            self.start_fresh = bool(meta.get("start_fresh"))
            session = meta.get("session")
            if session:
                self.session = Session(session["session_id"], session["run_id"], time.monotonic())
            self.updates = int(meta.get("updates") or 0)
            self.frames = int(meta.get("frames") or 0)
            self.last_update = meta.get("last_update")
            self.last_step = meta.get("last_step")
            self.episodes.extend(meta.get("episodes") or [])
            self.suggestions.extend(meta.get("suggestions") or [])
            if meta.get("frame"):
                self.frame = Frame(**meta["frame"])
            for name, count, stride, overview, recent in loaded["series"]:
                if len(self.history.series) >= self.history.max_metrics:
                    break
                self.history.series[name] = SeriesHistory.restored(
                    self.history.budget, count, stride, _points_from_blob(overview), _points_from_blob(recent)
                )
        log.info(
            "restored %d updates, %d metrics and %s from the store",
            self.updates,
            len(self.history.series),
            "a frame" if self.frame else "no frame",
        )

    # ---- stream slots

    def acquire_stream(self) -> bool:
        """Take one of the max_streams slots; False when all are taken."""
        with self._streams_lock:
            if self.open_streams >= self.settings["max_streams"]:
                return False
            self.open_streams += 1
            self.writer.ensure_running()
            return True

    def end_streams(self) -> None:
        """End every open stream (at shutdown, so waitress's threads can finish)."""
        self.closing = True
        self.log.news.set()  # the writer ends the streams it writes
        self.log.notify_readers()  # and those that write themselves see ``closing``

    def release_stream(self) -> None:
        """Give a stream slot back."""
        with self._streams_lock:
            self.open_streams -= 1


# --------------------------------------------------------------------------- the store


class Store:
    """The HUD's state kept in SQLite (WAL) under HUD_DATA_DIR, so a restart loses nothing.

    A background thread writes what changed every ``store_interval`` seconds in one
    transaction: the merged state, session, counters, recent lists, the latest frame
    and each metric's history (as float64 blobs), never on the request path. A file
    that cannot be read is moved aside and the server starts empty.
    """

    FILENAME = "hud.sqlite3"
    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
        "CREATE TABLE IF NOT EXISTS series (name TEXT PRIMARY KEY, count INTEGER NOT NULL, "
        "stride INTEGER NOT NULL, overview BLOB NOT NULL, recent BLOB NOT NULL)",
    )

    def __init__(self, directory: str, interval: float):
        self.path = os.path.join(directory, self.FILENAME)
        self.interval = interval
        os.makedirs(directory, exist_ok=True)
        self.db, self.loaded = self._open_and_load()
        self._written_changes = -1
        self._written_counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for statement in self.SCHEMA:
            db.execute(statement)
        return db

    def _open_and_load(self) -> tuple[sqlite3.Connection, dict[str, Any]]:
        """Open the store and read what it holds; a corrupt store is moved aside, not fatal."""
        try:
            db = self._connect()
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            meta = {key: json.loads(value) for key, value in db.execute("SELECT key, value FROM meta")}
            series = db.execute("SELECT name, count, stride, overview, recent FROM series").fetchall()
            return db, {"meta": meta, "series": series}
        except (sqlite3.DatabaseError, ValueError, OSError) as exc:
            aside = f"{self.path}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
            log.error("the store %s cannot be read (%s); moved it to %s and starting empty", self.path, exc, aside)
            with contextlib.suppress(Exception):
                db.close()
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
            return self._connect(), {"meta": {}, "series": []}

    def start(self, hud: HUD) -> None:
        """Write ``hud``'s changes every interval from a daemon thread."""
        self._thread = threading.Thread(target=self._run, args=(hud,), name="hud-store", daemon=True)
        self._thread.start()

    def _run(self, hud: HUD) -> None:
        while not self._stop.wait(self.interval):
            self.write(hud)

    def write(self, hud: HUD) -> None:
        """Write what changed since the last write (one transaction); errors are logged once."""
        with hud.lock:
            if hud.changes == self._written_changes:
                return
            changes = hud.changes
            reset = hud._history_reset
            if reset:  # a new run: its series replace all the old ones
                self._written_counts = {}
            meta = hud.persistent_meta()
            series = [
                (name, *history.parts())
                for name, history in hud.history.series.items()
                if self._written_counts.get(name) != history.count
            ]
            names = set(hud.history.series)
        try:
            rows = [(key, _strict_encode(value)) for key, value in meta.items()]
            blobs = [
                (name, count, stride, _points_blob(overview), _points_blob(recent))
                for name, count, stride, overview, recent in series
            ]
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)
                gone = set(self._written_counts) - names
                if reset:
                    self.db.execute("DELETE FROM series")
                self.db.executemany("DELETE FROM series WHERE name = ?", [(name,) for name in gone])
                self.db.executemany(
                    "INSERT OR REPLACE INTO series (name, count, stride, overview, recent) VALUES (?, ?, ?, ?, ?)",
                    blobs,
                )
            self._written_changes = changes
            for name, count, *_ in series:
                self._written_counts[name] = count
            for name in gone:
                self._written_counts.pop(name, None)
            self._failed = False
        except (sqlite3.Error, OSError, ValueError) as exc:
            if not self._failed:
                log.error("writing the store %s failed (%s); the HUD goes on in memory and retries", self.path, exc)
            self._failed = True

    def close(self, hud: HUD) -> None:
        """Stop the writer and write the last changes (at shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.write(hud)
        self.db.close()


def _points_blob(columns: tuple[array, ...]) -> bytes:
    """(step, time, value) columns as one float64 blob of rows."""
    flat = array("d", bytes(8 * 3 * len(columns[0])))
    for offset, column in enumerate(columns):
        flat[offset::3] = column
    return flat.tobytes()


def _points_from_blob(blob: bytes) -> tuple[array, array, array]:
    """The columns of :func:`_points_blob`."""
    flat = array("d")
    flat.frombytes(blob)
    return flat[0::3], flat[1::3], flat[2::3]


# --------------------------------------------------------------------------- SSE stream


def _chunk_or_present(hud: HUD, got: tuple[list[bytes], int] | None) -> tuple[bytes, int]:
    """Events read from the log as one chunk and the offset after them; the present if the log no longer had them."""
    if got is None:  # the reader fell behind the log: start again from the present
        return hud.snapshot_events()
    chunks, after = got
    return b"".join(chunks), after


class StreamWriter:
    """Writes every open stream from one thread: new events, heartbeats, and the end of those whose browser left.

    Waitress holds a thread for each open stream. Were those threads to write their
    own streams, each event would wake every one of them, and on 2 cores those
    wake-ups, all wanting the GIL at once, were the cost that grew with the number
    of dashboards and kept /health and the posts waiting. So a stream's thread writes
    only the preamble and then sleeps until the stream ends, and this thread writes
    through each stream's waitress task: at most every open streams / stream_writes
    seconds (MIN_WRITE_INTERVAL to MAX_WRITE_INTERVAL), at once when events come after
    a quiet spell, the pending events read and joined once for all the streams at the
    same offset. A browser whose buffer is full is skipped until it drains (if the
    log moves past it meanwhile, it gets a fresh snapshot): no stream waits for
    another, and the writer never waits for a browser.
    """

    def __init__(self, hud: HUD):
        self.hud = hud
        self._lock = threading.Lock()
        self._streams: list[EventStream] = []  # the streams this thread writes
        self._thread: threading.Thread | None = None  # runs while any stream is open

    def ensure_running(self) -> None:
        """Start the writing thread unless it runs (called when a stream opens)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="hud-stream-writer", daemon=True)
                self._thread.start()

    def serve(self, stream: EventStream) -> None:
        """Write ``stream`` from now on, blocking the calling (waitress) thread until the stream ends."""
        with self._lock:
            if self.hud.closing:
                return
            stream.done.acquire()  # released when this thread is done with the stream
            self._streams.append(stream)
        while not stream.done.acquire(timeout=WRITER_CHECK_INTERVAL):
            self.ensure_running()  # should the writing thread ever have died, start another

    def interval(self) -> float:
        """Seconds between two passes over the open streams."""
        per_stream = 1.0 / self.hud.settings["stream_writes"]
        return min(MAX_WRITE_INTERVAL, max(MIN_WRITE_INTERVAL, self.hud.open_streams * per_stream))

    def _run(self) -> None:
        news = self.hud.log.news
        housekeeping = min(DISCONNECT_POLL_INTERVAL, self.hud.settings["heartbeat_interval"])
        while True:
            with self._lock:
                if self.hud.closing or (not self._streams and self.hud.open_streams == 0):
                    self._thread = None
                    self._end(list(self._streams))
                    break
            news.wait(housekeeping)  # heartbeats and closed browsers are looked at even when nothing comes
            news.clear()  # before reading the log: an event appended from now on sets it again
            try:
                self._write_pass()
            except Exception:  # never leave the streams unwritten: log it and go on with the next pass
                log.exception("writing the open streams failed")
                news.set()  # what this pass did not send, the next one (after the interval) sends
            self.hud.log.notify_readers()  # streams not under our waitress server write themselves
            time.sleep(self.interval())
        self.hud.log.notify_readers()

    def _write_pass(self) -> None:
        """Write to every stream what it has not had yet, or a heartbeat when it has been quiet."""
        settings = self.hud.settings
        heartbeat, buffer_limit = settings["heartbeat_interval"], settings["stream_buffer_bytes"]
        last = self.hud.log.last_seq
        now = time.monotonic()
        pending: dict[int, tuple[bytes, int]] = {}  # offset -> (bytes to write, offset after them)
        with self._lock:
            streams = list(self._streams)
        ended = []
        for stream in streams:
            channel = stream.task.channel
            if not channel.connected:
                ended.append(stream)
                continue
            if stream.cursor < last:
                if channel.total_outbufs_len > buffer_limit:
                    continue  # the browser is behind: let its buffer drain first
                if stream.cursor not in pending:
                    pending[stream.cursor] = _chunk_or_present(self.hud, self.hud.log.read_after(stream.cursor))
                data, cursor = pending[stream.cursor]
            elif now - stream.last_write >= heartbeat:
                data, cursor = HEARTBEAT, stream.cursor
            else:
                continue
            try:
                stream.task.write(data)
            except Exception as exc:  # the browser went (waitress's ClientDisconnected) or its socket failed
                log.debug("stream ended while writing: %r", exc)
                ended.append(stream)
                continue
            stream.cursor, stream.last_write = cursor, now
        if ended:
            with self._lock:
                self._end(ended)

    def _end(self, streams: list[EventStream]) -> None:
        """Stop writing ``streams`` and let their threads finish them (with the lock held)."""
        for stream in streams:
            self._streams.remove(stream)
            stream.done.release()


class EventStream:
    """One browser's /stream: preamble, then the log from its own offset, with heartbeats.

    A WSGI iterable (not a generator) so that ``close()`` frees the slot even if
    the server never started iterating it. Under the server ``build_server`` makes,
    the stream's thread writes the preamble and hands the rest to the StreamWriter;
    under another WSGI server, it writes the stream itself.
    """

    def __init__(
        self,
        hud: HUD,
        last_event_id: str | None,
        client_disconnected: Callable[[], bool] | None,
        task: Any = None,
    ):
        self.hud = hud
        self.last_event_id = last_event_id
        self.client_disconnected = client_disconnected or (lambda: False)
        self.task = task  # waitress's task for this request, when the StreamWriter may write through it
        self.done = threading.Lock()  # held while the StreamWriter writes this stream
        self.cursor = 0
        self.started = False
        self.closed = False
        self.last_write = time.monotonic()

    def __iter__(self) -> EventStream:
        return self

    def _resume_cursor(self) -> int | None:
        """The offset a Last-Event-ID resumes from, if this server can still serve it."""
        if not self.last_event_id:
            return None
        boot, _, seq_text = self.last_event_id.strip().rpartition("-")
        if boot != self.hud.boot_id or not (seq_text.isascii() and seq_text.isdigit()):
            return None
        seq = int(seq_text)
        if seq > self.hud.log.last_seq:
            return None
        return seq

    def _preamble(self) -> bytes:
        retry = f"retry: {self.hud.settings['stream_retry']}\n\n".encode()
        resume = self._resume_cursor()
        if resume is not None:
            pending = self.hud.log.read_after(resume)
            if pending is not None:
                chunks, self.cursor = pending
                return retry + b"".join(chunks)
        snapshot, self.cursor = self.hud.snapshot_events()
        return retry + snapshot

    def __next__(self) -> bytes:
        if self.closed:
            raise StopIteration
        if not self.started:
            self.started = True
            self.last_write = time.monotonic()
            return self._preamble()
        if self.task is not None:  # waitress has written the preamble: the writer takes over
            self.hud.writer.serve(self)
            self.close()
            raise StopIteration
        return self._next_written_here()

    def _next_written_here(self) -> bytes:
        """The next chunk for a server that iterates the stream itself: wait for news, a heartbeat or the end."""
        heartbeat = self.hud.settings["heartbeat_interval"]
        while True:
            if self.closed or self.hud.closing or self.client_disconnected():
                self.close()
                raise StopIteration
            now = time.monotonic()
            until_heartbeat = self.last_write + heartbeat - now
            if until_heartbeat <= 0:
                self.last_write = now
                return HEARTBEAT
            pending = self.hud.log.wait_after(self.cursor, min(DISCONNECT_POLL_INTERVAL, until_heartbeat))
            if pending is None or pending[0]:
                data, self.cursor = _chunk_or_present(self.hud, pending)
                self.last_write = time.monotonic()
                return data

    def close(self) -> None:
        """Free this stream's slot (called by the WSGI server when the browser goes)."""
        if not self.closed:
            self.closed = True
            self.hud.release_stream()


# --------------------------------------------------------------------------- Prometheus


class PrometheusCollector:
    """/metrics: the run's numeric fields as gauges, and the server's own figures."""

    def __init__(self, hud: HUD):
        self.hud = hud

    def collect(self) -> Iterable[Any]:
        """Read the HUD once per scrape (prometheus_client's collector protocol)."""
        hud = self.hud
        with hud.lock:
            values = []
            _numbers(hud.state, "", values)
            run_id = _label(hud.shown_run_id or "")
            counts = dict(hud.counts)
            dropped = hud.log.dropped
            last_update = hud.last_update
        run = GaugeMetricFamily(
            "hud_run_value",
            "Latest value of each numeric field of the run (a.b for nested)",
            labels=["run_id", "metric"],
        )
        for name, value in values:
            run.add_metric([run_id, name], value)
        yield run
        yield GaugeMetricFamily("hud_open_streams", "Open /stream connections (dashboards)", value=hud.open_streams)
        yield GaugeMetricFamily(
            "hud_max_streams", "Most /stream connections allowed (HUD_MAX_STREAMS)", value=hud.settings["max_streams"]
        )
        yield CounterMetricFamily(
            "hud_updates_received", "Training updates applied since start", value=counts.get("updates", 0)
        )
        yield CounterMetricFamily("hud_frames_received", "Frames received since start", value=counts.get("frames", 0))
        yield CounterMetricFamily(
            "hud_session_takeovers", "Times a new run took over the HUD", value=counts.get("takeovers", 0)
        )
        yield CounterMetricFamily("hud_dropped_events", "Events evicted from the bounded event log", value=dropped)
        rejected = CounterMetricFamily(
            "hud_rejected_requests", "Requests answered with an error, by status", labels=["status"]
        )
        for status, count in sorted((k, v) for k, v in counts.items() if isinstance(k, int)):
            rejected.add_metric([str(status)], count)
        yield rejected
        yield GaugeMetricFamily(
            "hud_last_update_timestamp_seconds", "Unix time of the last training update", value=last_update or 0
        )


def _label(text: str) -> str:
    """A label value UTF-8 can encode: JSON may carry lone surrogates (\\ud800), which it cannot."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _numbers(data: dict, prefix: str, out: list) -> None:
    """Collect (a.b name, float) for every finite number in ``data``."""
    for key, value in data.items():
        kind = type(value)
        if kind is float or (kind is int and -FLOAT_MAX <= value <= FLOAT_MAX):
            out.append((_label(prefix + key), float(value)))
        elif kind is bool:
            out.append((_label(prefix + key), 1.0 if value else 0.0))
        elif kind is dict:
            _numbers(value, prefix + key + ".", out)


# --------------------------------------------------------------------------- the app


CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _json_body() -> tuple[Any, bool]:
    """The request body parsed as JSON (whatever the Content-Type) and whether it is strict (see parse_json).

    An empty body is None. Raises a 400 or 413 APIError.
    """
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if not raw.strip():
        return None, True
    return parse_json(raw, "the body")


def _body_object(allow_empty: bool = False) -> tuple[dict, bool]:
    """The body as a JSON object, and whether it is strict."""
    body, strict = _json_body()
    if body is None and allow_empty:
        return {}, True
    if not isinstance(body, dict):
        raise APIError(400, "invalid_body", f"the body must be a JSON object, got {_json_type(body)}")
    return body, strict


#: Media types of the NDJSON form of /api/batch.
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl"})


def _ndjson_body() -> tuple[dict, list[bytes], bool]:
    """The NDJSON form of a batch: a header object (run_id, session_id, frame), then one update per line.

    Returns the header, the update lines (empty ones skipped) and whether the lines
    can be streamed as they are: a carriage return other than in a CRLF line end
    would end an SSE data line, so such a batch is encoded again.
    """
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    head, _, rest = raw.partition(b"\n")
    body = parse_json(head, "line 1 of the batch")[0] if head.strip() else None
    if not isinstance(body, dict):
        raise APIError(
            400,
            "invalid_body",
            f"line 1 of an NDJSON batch must be an object (run_id, session_id, frame), got {_json_type(body)}",
        )
    if "updates" in body:
        raise APIError(400, "invalid_body", "an NDJSON batch carries its updates on the lines after the first")
    lines = rest.split(b"\n")
    if b"" in lines:  # blank lines (a trailing newline, say) carry nothing
        lines = [line for line in lines if line]
    return body, lines, b"\r" not in rest


def _check_batch_size(count: int, limit: int) -> None:
    if count > limit:
        raise APIError(413, "batch_too_large", f"{count} updates in one batch; HUD_MAX_BATCH is {limit}")


def _ids(body: dict) -> tuple[str | None, str | None]:
    """The run id and session id a post names (each optional)."""
    run_id = body.get("run_id")
    session_id = body.get("session_id")
    if run_id is not None and (not isinstance(run_id, str) or not 0 < len(run_id) <= 200):
        raise APIError(400, "invalid_field", "run_id must be a string of 1 to 200 characters or null")
    if session_id is not None and (not isinstance(session_id, str) or not 0 < len(session_id) <= 200):
        raise APIError(400, "invalid_field", "session_id must be a string of 1 to 200 characters or null")
    return run_id, session_id


def page_files() -> str:
    """The folder holding templates/ and static/: beside this file, else where `pip install` puts them."""
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(os.path.join(here, "templates")):
        return here
    return os.path.join(sys.prefix, "share", "zelda-hud")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the HUD app: settings from HUD_* environment variables, overridden by ``config``."""
    settings = load_settings(config)
    here = page_files()
    app = Flask(__name__, template_folder=os.path.join(here, "templates"), static_folder=os.path.join(here, "static"))
    app.config["MAX_CONTENT_LENGTH"] = settings["max_body_bytes"]
    app.config["HUD_SETTINGS"] = settings
    app.json.sort_keys = False
    hud = HUD(settings)
    app.extensions["hud"] = hud
    if settings["data_dir"]:
        hud.store = Store(settings["data_dir"], settings["store_interval"])
        hud.restore(hud.store.loaded)
        hud.store.start(hud)

    token = settings["token"].encode()
    if token:
        log.info("writes need the bearer token (HUD_TOKEN is set)")
    else:
        log.warning("HUD_TOKEN is not set: anyone who can reach this server may post to it")
    origins = [origin.strip() for origin in settings["cors_origins"].split(",") if origin.strip()]
    if origins:
        from flask_cors import CORS

        CORS(
            app,
            origins=origins,
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            methods=["GET", "POST"],
            max_age=600,
        )

    @app.before_request
    def require_token():
        if not token or request.method != "POST":
            return None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            return error_response(
                401,
                "unauthorized",
                "this HUD needs 'Authorization: Bearer <HUD_TOKEN>' to write",
                headers={"WWW-Authenticate": 'Bearer realm="hud"'},
            )
        return None

    @app.errorhandler(APIError)
    def api_error(exc: APIError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed; see its log")

    @app.after_request
    def security_headers(response: Response) -> Response:
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if response.status_code >= 400:
            hud.counts[response.status_code] += 1
        return response

    metrics_registry = CollectorRegistry(auto_describe=False)
    metrics_registry.register(PrometheusCollector(hud))

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(metrics_registry), content_type=PROMETHEUS_CONTENT_TYPE)

    @app.get("/")
    def index():
        return render_template(
            "index.html", title=settings["title"], game_name=settings["game_name"], stale_after=settings["stale_after"]
        )

    @app.get("/health")
    def health():
        return jsonify(
            status="healthy",
            boot_id=hud.boot_id,
            uptime_s=round(time.time() - hud.started, 3),
            open_streams=hud.open_streams,
        )

    @app.get("/stream")
    def stream():
        if not hud.acquire_stream():
            retry = max(1, round(settings["stream_retry"] / 1000))
            return error_response(
                503,
                "too_many_streams",
                f"{settings['max_streams']} dashboards are open, the most HUD_MAX_STREAMS allows; retry later",
                headers={"Retry-After": str(retry)},
            )
        try:
            task = request.environ.get(WAITRESS_TASK_KEY)
            events = EventStream(
                hud,
                request.headers.get("Last-Event-ID"),
                request.environ.get("waitress.client_disconnected"),
                task() if task is not None else None,
            )
            response = Response(events, mimetype="text/event-stream")
        except BaseException:
            hud.release_stream()
            raise
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        return response

    @app.post("/api/register_session")
    def register_session():
        run_id, session_id = _ids(_body_object(allow_empty=True)[0])
        with hud.lock:
            session = hud.claim(run_id, session_id)
        return jsonify(session_id=session.session_id, status="registered", run_id=session.run_id, boot_id=hud.boot_id)

    @app.post("/api/update_training")
    def update_training():
        body, strict = _body_object()
        run_id, session_id = _ids(body)
        if "data" not in body:
            raise APIError(400, "invalid_body", "the body needs a 'data' object")
        session = hud.apply(run_id, session_id, hud.prepare([body["data"]], "data", strict))
        return jsonify(status="updated", session_id=session.session_id, boot_id=hud.boot_id)

    @app.post("/api/update_vision")
    def update_vision():
        body, _ = _body_object()
        run_id, session_id = _ids(body)
        frame = decode_frame(
            body.get("image_base64"),
            body.get("response_time"),
            settings["max_frame_bytes"],
            settings["max_frame_side"],
            "",
        )
        session = hud.set_frame(run_id, session_id, frame)
        return jsonify(status="updated", session_id=session.session_id, boot_id=hud.boot_id)

    @app.post("/api/batch")
    def batch():
        texts = None
        if request.mimetype in NDJSON_TYPES:
            body, lines, verbatim = _ndjson_body()
            _check_batch_size(len(lines), settings["max_batch"])
            updates, strict = parse_lines(lines, "updates[{}]")
            if verbatim and strict:
                texts = lines  # streamed as they came: each line is one whole strict JSON value
        else:
            body, strict = _body_object()
            updates = body.get("updates", [])
            if not isinstance(updates, list):
                raise APIError(400, "invalid_body", f"updates must be an array, got {_json_type(updates)}")
            _check_batch_size(len(updates), settings["max_batch"])
        run_id, session_id = _ids(body)
        frame = None
        if body.get("frame") is not None:
            if not isinstance(body["frame"], dict):
                raise APIError(400, "invalid_body", "frame must be an object")
            frame = decode_frame(
                body["frame"].get("image_base64"),
                body["frame"].get("response_time"),
                settings["max_frame_bytes"],
                settings["max_frame_side"],
                "frame.",
            )
        session = hud.apply(run_id, session_id, hud.prepare(updates, "updates[{}]", strict, texts), frame)
        return jsonify(status="updated", applied=len(updates), session_id=session.session_id, boot_id=hud.boot_id)

    @app.post("/api/reset_session")
    def reset_session():
        _json_body()  # a body is allowed but not needed; malformed JSON is still refused
        hud.reset_session()
        return jsonify(status="reset", boot_id=hud.boot_id)

    @app.get("/api/state")
    def state():
        body = hud.describe()
        return Response(json.dumps(body, allow_nan=False, separators=(",", ":")), mimetype="application/json")

    @app.get("/api/history")
    def history():
        names = None
        exact, listed = request.args.getlist("metric"), request.args.get("metrics", "")
        if exact or listed:  # ?metric= names one metric whole (commas and all); ?metrics= is a comma list
            names = [*exact, *(name for name in listed.split(",") if name)]
        since = None
        if request.args.get("since") not in (None, ""):
            try:
                since = float(request.args["since"])
            except ValueError:
                raise APIError(400, "invalid_query", "since must be a number (a step)") from None
            if not math.isfinite(since):
                raise APIError(400, "invalid_query", "since must be a finite number")
        times = request.args.get("times", "").lower() in ("1", "true", "yes")
        return Response(hud.history_json(names, since, times), mimetype="application/json")

    @app.get("/api/frame")
    def frame():
        latest = hud.frame
        if latest is None:
            return error_response(404, "no_frame", "no frame has been posted yet")
        response = Response(base64.b64decode(latest.image_base64), mimetype=latest.mime)
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


# --------------------------------------------------------------------------- command line


def parse_args(argv: Iterable[str] | None = None) -> dict[str, Any]:
    """Read the command-line flags (one per setting); only the flags given are returned."""
    parser = argparse.ArgumentParser(
        prog="hud_server.py",
        description="Serve the HUD: a live dashboard for RL training.",
        epilog="Every flag can also be set with its HUD_* environment variable; flags win.",
    )
    for setting in SETTINGS:
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            metavar=setting.type.__name__.upper(),
            help=f"{setting.help} [{setting.env}, default {setting.default!r}]",
        )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="also feed the HUD a simulated run (examples/simulated_run.py), to see it work",
    )
    namespace = parser.parse_args(list(argv) if argv is not None else None)
    return {key: value for key, value in vars(namespace).items() if value is not None and value is not False}


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas for this process (no-op elsewhere).

    Waitress runs one thread per open stream; glibc gives threads arenas of their
    own (up to 8 per core), each keeping freed request buffers. Measured: RSS
    after 200,000 batched updates grew 17.6 MB by default and 6.9 MB with 2 arenas.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return  # the operator chose
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        pass


def tune_gc() -> None:
    """Collect cyclic garbage less often: every batch allocates thousands of short-lived dicts.

    With the default threshold (700 allocations) the collector ran several times
    per batch and traversed the batches in flight each time: about 12 % of the
    server's CPU at full ingest. What the server keeps (state, history columns,
    event bytes) holds few objects, and it makes little cyclic garbage; 10,000
    keeps most of the gain (50,000 kept 4 MB more of Flask's cyclic garbage).
    """
    gc.freeze()  # what start-up made lives for good: never traverse it again
    gc.set_threshold(*GC_THRESHOLD)


class _StreamableTask(WSGITask):
    """Waitress's WSGI task, handed to the app in its environ so the StreamWriter can write a stream through it."""

    def get_environment(self) -> dict:
        environ = super().get_environment()
        environ[WAITRESS_TASK_KEY] = weakref.ref(self)  # weak: the task keeps its environ
        return environ


class _HUDChannel(HTTPChannel):
    """Waitress's HTTP channel, running requests as _StreamableTask."""

    task_class = _StreamableTask


def build_server(app: Flask, settings: dict[str, Any]):
    """A waitress server for ``app``, sized from ``settings`` (not yet running)."""
    sockets: dict = {}
    server = create_server(
        app,
        map=sockets,
        host=settings["host"],
        port=settings["port"],
        threads=settings["threads"],
        channel_request_lookahead=CHANNEL_REQUEST_LOOKAHEAD,
        recv_bytes=RECV_BYTES,
        max_request_body_size=settings["max_body_bytes"] + WAITRESS_BODY_MARGIN,
        connection_limit=max(100, settings["threads"] + 2 * settings["max_streams"]),
        # Waitress keeps a connection's sent bytes until its buffer reaches this size: with
        # the 16 MiB default, 32 open streams held over 500 MiB.
        outbuf_high_watermark=settings["stream_buffer_bytes"],
        outbuf_overflow=settings["stream_buffer_bytes"],
        ident="hud",
    )
    for listener in sockets.values():  # one per listening address
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = _HUDChannel
    return server


def serve(app: Flask, settings: dict[str, Any], ready: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` with waitress sized from ``settings`` until interrupted or sent SIGTERM."""
    limit_malloc_arenas()
    tune_gc()
    server = build_server(app, settings)
    url = f"http://{server.effective_host}:{server.effective_port}"
    log.info("HUD serving on %s (threads=%d, max_streams=%d)", url, settings["threads"], settings["max_streams"])
    if ready is not None:
        ready(url)
    try:
        server.run()
    finally:
        hud = app.extensions["hud"]
        hud.end_streams()
        server.close()
        if hud.store is not None:
            hud.store.close(hud)


def main(argv: Iterable[str] | None = None) -> int:
    """Entry point of ``python hud_server.py``."""
    try:
        overrides = parse_args(argv)
        demo = bool(overrides.pop("demo", False))
        settings = load_settings(overrides)
    except ConfigError as exc:
        sys.stderr.write(f"hud_server: {exc}\n")  # logging is not set up yet
        return 2
    logging.basicConfig(level=settings["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    hud = app.extensions["hud"]

    demo_stop = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        """End the streams first (waitress waits for its threads), then stop serving."""
        demo_stop.set()
        hud.end_streams()
        raise KeyboardInterrupt

    # SIGTERM is what Kubernetes sends; as PID 1 in a container it would otherwise be ignored.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ready = None
    if demo:
        try:
            feed = _load_demo()
        except (OSError, ImportError) as exc:
            sys.stderr.write(f"hud_server: --demo needs examples/simulated_run.py beside hud_server.py ({exc})\n")
            return 2

        def ready(url: str) -> None:
            threading.Thread(
                target=_run_demo, args=(feed, url, settings["token"], demo_stop), name="hud-demo", daemon=True
            ).start()

    try:
        serve(app, settings, ready)
    except KeyboardInterrupt:
        pass
    log.info("stopped")
    return 0


def _load_demo() -> Any:
    """The simulated run of examples/simulated_run.py (not part of the server's image)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples", "simulated_run.py")
    spec = importlib.util.spec_from_file_location("hud_demo_run", path)
    if spec is None or spec.loader is None:
        raise ImportError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_demo(feed: Any, url: str, token: str, stop: threading.Event) -> None:
    """Feed this server a simulated run until it stops."""
    from hud_client import HUDClient

    host, _, port = url.removeprefix("http://").rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", ""):  # listening everywhere: talk to it over loopback
        url = f"http://127.0.0.1:{port}"
    log.info("demo: feeding a simulated run to %s", url)
    with HUDClient(url, run_id="demo", token=token or None) as client:
        feed.run(client, stop_event=stop)


if __name__ == "__main__":
    sys.exit(main())
