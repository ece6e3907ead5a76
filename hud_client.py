"""HUDClient: send training metrics and game frames to a HUD server without ever slowing training.

Usage::

    from hud_client import HUDClient

    hud = HUDClient("http://hud:8086", run_id="zelda-ppo-7")   # or set HUD_URL / HUD_RUN_ID
    for step in range(steps):
        ...
        hud.update_training_data({"global_step": step, "episode_reward": reward})
        hud.update_vision_data(frame_jpeg_bytes, response_time=0.8)
    hud.close()

``update_training_data`` and ``update_vision_data`` only put the data in a bounded
in-memory buffer and return (about a microsecond); a daemon thread sends what is
buffered to ``POST /api/batch``, in order, in batches. When the server is down,
slow, hung or restarted, the training loop does not notice: the buffer keeps the
newest updates (the oldest are dropped and counted), failures are retried with
capped exponential backoff and logged once per kind on the ``hud_client`` logger,
and a restarted server gets the latest merged state and frame again.

This module imports ``requests`` and the standard library only. numpy and Pillow
are used when a numpy array or PIL image is given as a frame; torch tensors are
converted when torch is already imported by the caller.
"""

from __future__ import annotations

import atexit
import base64
import collections
import collections.abc
import dataclasses
import datetime
import importlib.util
import io
import itertools
import json
import logging
import math
import os
import random
import sys
import threading
import time
from typing import Any

import requests

__all__ = ["HUDClient", "HUDClientStats", "to_json_value"]

logger = logging.getLogger("hud_client")

DEFAULT_RUN_ID = "default"
ENV_URL = "HUD_URL"
ENV_RUN_ID = "HUD_RUN_ID"
ENV_TOKEN = "HUD_TOKEN"

# Answers that mean "this request can never succeed as it is": split the batch or drop the item.
_REJECTED_STATUSES = frozenset({400, 413, 422})
# Answers after which the server asks to be left alone for a while (Retry-After).
_BUSY_STATUSES = frozenset({409, 429, 503})
# A batch goes as NDJSON: a header line, then each update's own JSON text on a line of its own,
# which the server can stream to dashboards without encoding it again.
_NDJSON_TYPE = "application/x-ndjson"
_JPEG_B64_PREFIX = "/9j/"  # base64 of FF D8 FF
_PNG_B64_PREFIX = "iVBORw0KGgo"  # base64 of 89 50 4E 47 0D 0A 1A 0A
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")

# Error codes of a 413 that mean "fewer updates per POST": the client lowers its batch size for good.
_SIZE_ERRORS = frozenset({"batch_too_large", "request_entity_too_large", "HTTP 413"})

_SENT, _FAILED, _RETRY_NOW = "sent", "failed", "retry_now"

_pillow_available: bool | None = None  # looked up (not imported) on the first array or PIL frame


# --------------------------------------------------------------------------- value conversion


def _no_default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


if json.encoder.c_make_encoder is not None:
    # json's C encoder made once: json.dumps with options builds an encoder per call, which is most
    # of the cost of a small update. Compact, ASCII, refusing NaN and infinity. No cycle check (its
    # table is per call in json.dumps): a cycle ends in RecursionError, which makes an update unsendable.
    _c_encoder = json.encoder.c_make_encoder(
        None, _no_default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )

    def _dumps(value: Any) -> str:
        """Strict, compact JSON (what the server and browsers accept)."""
        return "".join(_c_encoder(value, 0))

else:  # an interpreter without json's C speedups

    def _dumps(value: Any) -> str:
        """Strict, compact JSON (what the server and browsers accept)."""
        return json.dumps(value, allow_nan=False, separators=(",", ":"))


def to_json_value(value: Any) -> Any:
    """Return ``value`` as plain JSON-ready Python: numpy/torch values converted, NaN and ±inf as None.

    dicts become dicts with ``str`` keys, lists/tuples/sets become lists, numpy scalars and
    arrays become Python numbers and (nested) lists, torch tensors likewise (only when torch is
    already imported), datetimes become ISO strings. Anything else becomes ``str(value)``.
    """
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {(key if type(key) is str else _json_key(key)): to_json_value(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [to_json_value(item) for item in value]
    return _convert_other(value)


def _json_key(key: Any) -> str:
    """A nested dict key as a string (JSON objects only have string keys)."""
    plain = to_json_value(key)
    if isinstance(plain, str):
        return plain
    return _dumps(plain) if isinstance(plain, (bool, type(None))) else str(plain)


def _convert_other(value: Any) -> Any:
    """The slow path of ``to_json_value``: numpy, torch, subclasses, containers, odd objects."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            return to_json_value(value.tolist())
        if isinstance(value, numpy.generic):
            item = value.item()
            return str(item) if isinstance(item, numpy.generic) else to_json_value(item)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return to_json_value(value.detach().cpu().tolist())
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, collections.abc.Mapping):
        return {(key if type(key) is str else _json_key(key)): to_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, collections.deque)):
        return [to_json_value(item) for item in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    tolist = getattr(value, "tolist", None)  # jax, cupy and other array types
    if callable(tolist):
        return to_json_value(tolist())
    return str(value)


# --------------------------------------------------------------------------- frames


def _check_image(image: Any, copy: bool = True) -> tuple[str, Any]:
    """Validate a frame in the caller and return (kind, payload) to encode later in the sender.

    Arrays and PIL images are copied (when ``copy``) because the caller may reuse them.
    """
    kind = type(image)
    if kind is str:
        text = image
        if text.startswith("data:"):
            head, _, text = text.partition(",")
            if not head.endswith(";base64"):
                raise ValueError("a data: URL image must be base64 (data:image/jpeg;base64,...)")
        text = text.lstrip()
        if not (text.startswith(_JPEG_B64_PREFIX) or text.startswith(_PNG_B64_PREFIX)):
            raise ValueError("image string must be base64 of a JPEG or PNG image")
        return "base64", image
    if kind is bytes or kind is bytearray or kind is memoryview:
        data = bytes(image)  # bytes are immutable; a bytearray/memoryview is copied now
        if not data.startswith(_IMAGE_MAGIC):
            raise ValueError("image bytes must be a JPEG or PNG file (check the first bytes)")
        return "bytes", data
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(image, numpy.ndarray):
        if image.dtype != numpy.uint8:
            raise TypeError(f"image array must have dtype uint8, got {image.dtype}")
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))) or 0 in image.shape:
            raise ValueError(f"image array must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
        _require_pillow()
        return "array", image.copy() if copy else image
    pil_image = sys.modules.get("PIL.Image")
    if pil_image is not None and isinstance(image, pil_image.Image):
        return "pil", image.copy() if copy else image
    raise TypeError(
        f"image must be base64 str, JPEG/PNG bytes, a uint8 numpy array or a PIL image, not {kind.__name__}"
    )


def _require_pillow() -> None:
    """Raise at once (in the caller) when an array frame cannot be encoded for lack of Pillow."""
    global _pillow_available
    if _pillow_available is None:
        _pillow_available = importlib.util.find_spec("PIL") is not None
    if not _pillow_available:
        raise ImportError("sending numpy arrays as frames needs Pillow: pip install pillow")


def _encode_image(kind: str, payload: Any, jpeg_quality: int) -> str:
    """Turn a checked frame into base64 text (arrays and PIL images as JPEG)."""
    if kind == "base64":
        return payload
    if kind == "bytes":
        return base64.b64encode(payload).decode("ascii")
    from PIL import Image

    if kind == "array":
        array = payload[:, :, 0] if payload.ndim == 3 and payload.shape[2] == 1 else payload
        picture = Image.fromarray(array)
    else:
        picture = payload
    if picture.mode not in ("RGB", "L"):
        picture = picture.convert("RGB")
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=jpeg_quality)
    return base64.b64encode(out.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- public API


@dataclasses.dataclass(frozen=True)
class HUDClientStats:
    """Counters of a ``HUDClient`` (a snapshot; read ``HUDClient.stats`` again for new values).

    sent: training updates the server accepted.
    dropped: training updates dropped because the buffer was full (the oldest go first).
    rejected: training updates or frames the server refused as invalid (HTTP 400/413), dropped.
    failed: send attempts that failed (network error, timeout, 409/5xx...); they are retried.
    pending: training updates and frames still buffered.
    frames_sent: frames the server accepted.
    frames_dropped: frames replaced by a newer one before they could be sent, or refused.
    last_error: the latest failure, as text, or None.
    """

    sent: int = 0
    dropped: int = 0
    rejected: int = 0
    failed: int = 0
    pending: int = 0
    frames_sent: int = 0
    frames_dropped: int = 0
    last_error: str | None = None


@dataclasses.dataclass
class _Batch:
    """What one POST carries: updates (from buffer position ``first``) and maybe the pending frame."""

    first: int
    updates: list
    frame: tuple | None


@dataclasses.dataclass
class _Reply:
    """The outcome of one HTTP request: a status and JSON body, or the exception it raised."""

    status: int | None = None
    body: dict | None = None
    error: BaseException | None = None
    retry_header: str | None = None

    def error_code(self) -> str:
        """The server's error code (our JSON error shape) or the HTTP status."""
        code = (self.body or {}).get("error")
        return str(code) if code else f"HTTP {self.status}"

    def describe(self) -> str:
        """One line for the log."""
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error}"
        message = (self.body or {}).get("message")
        return f"HTTP {self.status} {self.error_code()}" + (f": {message}" if message else "")

    def retry_after(self) -> float:
        """Seconds the server asked us to wait (409 body or Retry-After header), else 0."""
        value = (self.body or {}).get("retry_after", self.retry_header)
        try:
            return max(0.0, float(value)) if value is not None else 0.0
        except (TypeError, ValueError):
            return 0.0


class HUDClient:
    """Buffers training updates and frames and sends them to a HUD server from a daemon thread.

    Calls never block on the network and never raise for network trouble; misuse (data that
    can never be sent) raises ``TypeError`` or ``ValueError`` at once, in the caller.

    Args:
        hud_url: Base URL of the HUD server, e.g. ``"http://hud:8086"``. ``None`` reads the
            ``HUD_URL`` environment variable; when neither is set (or it is ``""``) the client
            is disabled: every call is accepted and does nothing.
        run_id: Name of this training run. Default: ``HUD_RUN_ID`` env, else ``"default"``.
            While one run posts, another run's posts are refused (409) and kept buffered.
        max_pending: Training updates the buffer holds (count). When full, the oldest is
            dropped and counted in ``stats.dropped``. Only the newest frame is ever kept.
        max_batch: Most training updates sent in one POST (count). The server's own limit
            (``HUD_MAX_BATCH``) may be lower: on its 413 the client halves its batches for good.
        max_body_bytes: Largest POST body the client builds (bytes); bigger batches are split.
        connect_timeout: Seconds to wait for a TCP connection to the server.
        read_timeout: Seconds to wait for the server's answer to one POST. A hung server only
            holds the sender thread this long per attempt, never the caller.
        backoff_initial: Seconds to wait after the first failed attempt; doubles per failure.
        backoff_max: Most seconds to wait between attempts (also caps a server's Retry-After).
        exit_timeout: Seconds ``close`` may wait for the last sends at interpreter exit.
        jpeg_quality: JPEG quality (1-95) for frames given as numpy arrays or PIL images.
        token: The server's write token (its ``HUD_TOKEN``), sent as ``Authorization: Bearer``.
            Default: the ``HUD_TOKEN`` environment variable; none when unset or empty.
        session: The transport: a ``requests.Session`` or any object with the same
            ``post(url, data=..., headers=..., timeout=...)`` method (tests inject one). The
            client closes a session it created, never one it was given.

    Raises:
        ValueError: ``hud_url`` is not an http(s) URL, or a setting is out of range.
        TypeError: a setting has the wrong type.

    Data passed to ``update_training_data`` is copied shallowly at call time (its top-level
    keys are fixed then); nested dicts, lists and arrays are read and converted by the sender
    thread shortly after. Pass fresh nested objects (as ``{"position": {"x": x, "y": y}}``
    does), or copies of ones you mutate in place.

    Make one client per process: a child started with ``fork`` should build its own.
    """

    def __init__(
        self,
        hud_url: str | None = None,
        *,
        run_id: str | None = None,
        max_pending: int = 10_000,
        max_batch: int = 1000,
        max_body_bytes: int = 4 * 1024 * 1024,
        connect_timeout: float = 1.0,
        read_timeout: float = 5.0,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        exit_timeout: float = 1.0,
        jpeg_quality: int = 85,
        token: str | None = None,
        session: Any = None,
    ) -> None:
        if hud_url is None:
            hud_url = os.environ.get(ENV_URL, "")
        if not isinstance(hud_url, str):
            raise TypeError(f"hud_url must be a str or None, not {type(hud_url).__name__}")
        hud_url = hud_url.strip().rstrip("/")
        if hud_url and not hud_url.lower().startswith(("http://", "https://")):
            raise ValueError(f"hud_url must start with http:// or https://, got {hud_url!r}")
        if run_id is None:
            run_id = os.environ.get(ENV_RUN_ID) or DEFAULT_RUN_ID
        if not isinstance(run_id, str) or not 0 < len(run_id) <= 200:
            raise ValueError("run_id must be a string of 1 to 200 characters")
        self._max_pending = _positive("max_pending", max_pending, int)
        self._max_batch = _positive("max_batch", max_batch, int)
        self._max_body_bytes = _positive("max_body_bytes", max_body_bytes, int)
        self._connect_timeout = _positive("connect_timeout", connect_timeout, float)
        self._read_timeout = _positive("read_timeout", read_timeout, float)
        self._backoff_initial = _positive("backoff_initial", backoff_initial, float)
        self._backoff_max = max(_positive("backoff_max", backoff_max, float), self._backoff_initial)
        self._exit_timeout = _positive("exit_timeout", exit_timeout, float)
        self._jpeg_quality = _positive("jpeg_quality", jpeg_quality, int)
        if self._jpeg_quality > 95:
            raise ValueError("jpeg_quality must be between 1 and 95")

        if token is None:
            token = os.environ.get(ENV_TOKEN, "")
        if not isinstance(token, str):
            raise TypeError(f"token must be a str or None, not {type(token).__name__}")
        self._headers: dict[str, str] = {}
        if token.strip():
            self._headers["Authorization"] = f"Bearer {token.strip()}"

        self._url = hud_url
        self._run_id = run_id
        self._enabled = bool(hud_url)
        self._accepting = self._enabled  # False once closed

        # Shared state, guarded by _lock. Buffer positions count every update ever accepted:
        # _accepted = updates appended, _removed = updates gone from the buffer (sent, dropped
        # or rejected), so the buffer holds positions _removed+1 .. _accepted.
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the sender waits here for work
        self._progress = threading.Condition(self._lock)  # flush() waits here
        self._updates: collections.deque = collections.deque(maxlen=self._max_pending)
        self._accepted = 0
        self._removed = 0
        self._frame: tuple | None = None  # (frame number, kind, payload, response_time)
        self._frames_accepted = 0
        self._sender_idle = False
        self._flush_waiters = 0
        self._retry_requested = False
        self._stopping = False
        self._replay_pending = False
        self._counts = collections.Counter()
        self._last_error: str | None = None

        # Sender-thread state (only the sender touches these once it runs).
        self._session_id: str | None = None
        self._boot_id: str | None = None
        self._need_register = True
        self._lost_session = False
        self._merged: dict = {}  # top-level merge of every update sent
        self._last_frame: dict | None = None  # the last frame sent, as posted
        self._encoded_frame: tuple | None = None  # (frame number, base64) kept across retries
        self._batch_ceiling = self._max_batch  # lowered when the server says batches are too big
        self._batch_limit = self._max_batch  # lowered for a while to isolate a refused update
        self._frame_alone = False
        self._logged_kinds: set = set()
        self._owns_session = session is None
        self._session = session if session is not None else (requests.Session() if self._enabled else None)
        self._thread: threading.Thread | None = None

        if self._enabled:
            self._thread = threading.Thread(target=self._run, name="hud-client-sender", daemon=True)
            self._thread.start()
            atexit.register(self._close_at_exit)
            logger.debug("HUD client for run %r sending to %s", run_id, hud_url)

    # ---- properties

    @property
    def enabled(self) -> bool:
        """True when a server URL is configured (a disabled client does nothing)."""
        return self._enabled

    @property
    def url(self) -> str:
        """The server's base URL ("" when disabled)."""
        return self._url

    @property
    def run_id(self) -> str:
        """The run this client posts as."""
        return self._run_id

    @property
    def session_id(self) -> str | None:
        """The session id the server gave this client, or None before it answered."""
        return self._session_id

    @property
    def stats(self) -> HUDClientStats:
        """A snapshot of the client's counters (see ``HUDClientStats``)."""
        with self._lock:
            counts = self._counts
            return HUDClientStats(
                sent=counts["sent"],
                dropped=counts["dropped"],
                rejected=counts["rejected"],
                failed=counts["failed"],
                pending=len(self._updates) + (self._frame is not None),
                frames_sent=counts["frames_sent"],
                frames_dropped=counts["frames_dropped"],
                last_error=self._last_error,
            )

    # ---- the calls a training loop makes

    def update_training_data(self, data: dict) -> None:
        """Buffer one training update (a dict of metrics) and return at once.

        The update is merged into the dashboard's state (a top-level key replaces the old
        value) and becomes one point on its charts. Values may be Python or numpy scalars,
        numpy arrays, torch tensors (when torch is imported), nested dicts and lists; NaN and
        infinity arrive as null. They are converted by the sender thread.

        Args:
            data: A dict with ``str`` keys. It is copied shallowly, so later changes to its
                top-level keys are not seen; do not mutate nested values in place afterwards.

        Raises:
            TypeError: ``data`` is not a dict (or mapping), or a top-level key is not a str.
        """
        # Checked here, cheaply, so misuse fails in the caller; the deep conversion is left to
        # the sender thread (one pass over a shallow copy), keeping this call near 1 µs.
        if type(data) is not dict:
            data = _as_dict(data)
        try:
            "".join(data)  # the fastest way to check that every key is a str (C loop, no Python)
        except TypeError:
            raise TypeError(
                "training data keys must be str, got "
                + ", ".join(sorted({type(k).__name__ for k in data if not isinstance(k, str)}))
            ) from None
        if not self._accepting or not data:
            return
        update = data.copy()
        with self._lock:
            updates = self._updates
            if len(updates) == self._max_pending:  # the deque drops the oldest on append
                self._removed += 1
                self._counts["dropped"] += 1
                if self._flush_waiters:
                    self._progress.notify_all()
            updates.append(update)
            self._accepted += 1
            if self._sender_idle:
                self._sender_idle = False
                self._work.notify()

    def update_vision_data(self, image: Any, response_time: float | None = None) -> None:
        """Buffer the latest game frame and return at once; only the newest pending frame is sent.

        Args:
            image: A JPEG or PNG as ``bytes`` or as base64 ``str`` (a ``data:image/...;base64,``
                prefix is accepted), or — with numpy and Pillow installed — an HxWx3 (or HxW,
                HxWx4) ``uint8`` numpy array or a PIL image, which is copied now and JPEG-encoded
                by the sender thread.
            response_time: Seconds the model took for this frame, or None.

        Raises:
            TypeError: ``image`` is of another type, an array is not uint8, or
                ``response_time`` is not a number.
            ValueError: the bytes or base64 text are not a JPEG or PNG, or an array has
                another shape.
            ImportError: an array or PIL image was given and Pillow is not installed.
        """
        if response_time is not None and (
            isinstance(response_time, bool) or not isinstance(response_time, (int, float))
        ):
            raise TypeError(f"response_time must be a number or None, not {type(response_time).__name__}")
        kind, payload = _check_image(image, copy=self._accepting)
        if not self._accepting:
            return
        with self._lock:
            if self._frame is not None:
                self._counts["frames_dropped"] += 1
            self._frames_accepted += 1
            self._frame = (self._frames_accepted, kind, payload, response_time)
            if self._flush_waiters:
                self._progress.notify_all()
            if self._sender_idle:
                self._sender_idle = False
                self._work.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything buffered before this call was sent (or dropped).

        A sender waiting out a backoff retries at once. Never raises for network trouble.

        Args:
            timeout: Most seconds to wait.

        Returns:
            True when every update and frame buffered before the call has been sent to the
            server, dropped or rejected; False when ``timeout`` passed first (server down,
            hung or refusing this run).
        """
        if not self._enabled:
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            target = (self._accepted, self._frames_accepted)
            if self._done(target):
                return True
            if self._stopping:
                return False
            self._retry_requested = True
            self._work.notify_all()
            self._flush_waiters += 1
            try:
                while not self._done(target):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping:
                        return False
                    self._progress.wait(remaining)
                return True
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: float = 5.0) -> bool:
        """Send what is buffered (waiting at most ``timeout`` seconds), then stop the sender.

        Later calls are accepted and ignored. Called automatically at interpreter exit with
        ``exit_timeout``. Calling it again does nothing.

        Returns:
            True when everything buffered was sent (as ``flush``), else False.
        """
        if not self._enabled or self._stopping:
            return self._enabled is False or self._done((self._accepted, self._frames_accepted))
        deadline = time.monotonic() + max(0.0, timeout)
        self._accepting = False
        flushed = self.flush(timeout)
        with self._lock:
            self._stopping = True
            self._work.notify_all()
            self._progress.notify_all()
        atexit.unregister(self._close_at_exit)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if not self._thread.is_alive() and self._owns_session and self._session is not None:
                self._session.close()
        if not flushed:
            stats = self.stats
            logger.warning("HUD client closed with %d item(s) unsent (last error: %s)", stats.pending, stats.last_error)
        return flushed

    def __enter__(self) -> HUDClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"url={self._url!r}" if self._enabled else "disabled"
        return f"<HUDClient run_id={self._run_id!r} {state}>"

    def _close_at_exit(self) -> None:
        """atexit hook: a short close so a dead server never holds up interpreter exit."""
        self.close(self._exit_timeout)

    # ---- bookkeeping shared by both threads (call with _lock held)

    def _done(self, target: tuple[int, int]) -> bool:
        """True when the updates and frame numbered up to ``target`` are out of the buffer."""
        updates, frames = target
        frames_done = self._frames_accepted if self._frame is None else self._frame[0] - 1
        return self._removed >= updates and frames_done >= frames and not self._replay_pending

    def _has_work(self) -> bool:
        return bool(self._updates) or self._frame is not None or self._replay_pending or self._need_register

    # ---- the sender thread

    def _run(self) -> None:
        """Sender loop: wait for work, send it, back off after failures."""
        failures = 0
        while True:
            with self._lock:
                while not self._has_work() and not self._stopping:
                    self._sender_idle = True
                    self._work.wait()
                self._sender_idle = False
                if self._stopping:
                    return
                self._retry_requested = False
            try:
                outcome, wait_hint = self._step()
            except Exception as exc:  # a bug here must not end the sender
                self._note_failure("internal", f"{type(exc).__name__}: {exc}", exc_info=True)
                outcome, wait_hint = _FAILED, 0.0
            if outcome == _FAILED:
                failures += 1
                delay = min(self._backoff_max, self._backoff_initial * 2 ** min(failures - 1, 30))
                delay = max(delay * random.uniform(0.8, 1.0), min(wait_hint, self._backoff_max))
                with self._lock:
                    self._work.wait_for(lambda: self._retry_requested or self._stopping, delay)
            elif outcome == _SENT and failures:
                logger.info("HUD at %s reachable again after %d failed attempt(s)", self._url, failures)
                failures = 0
                self._logged_kinds.clear()

    def _step(self) -> tuple[str, float]:
        """One attempt: register if needed, re-send state after a restart, send one batch."""
        if self._need_register:
            outcome = self._register()
            if outcome is not None:
                return outcome
        if self._replay_pending:
            outcome = self._send_replay()
            if outcome is not None:
                return outcome
        batch = self._take_batch()
        if batch is None:
            return _SENT, 0.0
        return self._send_batch(batch)

    def _register(self) -> tuple[str, float] | None:
        """POST /api/register_session; None means carry on to sending (registration is optional)."""
        body = {"run_id": self._run_id}
        if self._session_id:
            body["session_id"] = self._session_id
        reply = self._post("/api/register_session", _dumps(body))
        if reply.error is not None or reply.status >= 500 or reply.status in _BUSY_STATUSES:
            return self._failed(reply)
        self._need_register = False
        if reply.status == 200 and reply.body is not None:
            self._observe(reply.body)
            logger.debug("registered run %r as session %s", self._run_id, self._session_id)
        else:  # an older server without the endpoint: posts adopt a session anyway
            self._log_once(
                f"register:{reply.status}",
                logging.INFO,
                "HUD registration answered %s; sending anyway",
                reply.describe(),
            )
        return None

    def _send_replay(self) -> tuple[str, float] | None:
        """After a server restart or a lost session: POST the latest merged state and frame."""
        updates = [to_json_value(self._merged)] if self._merged else []
        frame = self._last_frame
        with self._lock:
            if self._frame is not None:
                frame = None  # a newer frame is pending and goes out with the next batch
        if not updates and frame is None:
            self._finish_replay()
            return None
        reply = self._post("/api/batch", self._batch_body([_dumps(u) for u in updates], frame), _NDJSON_TYPE)
        if reply.error is None and reply.status == 200:
            if reply.body is not None:
                self._observe(reply.body, replaying=True)
            self._finish_replay()
            logger.info("HUD restarted or lost the session; re-sent the latest state (%d keys)", len(self._merged))
            return None
        if reply.error is None and reply.status in _REJECTED_STATUSES:
            self._log_once(
                f"replay:{reply.error_code()}",
                logging.WARNING,
                "HUD refused the re-sent state (%s); carrying on without it",
                reply.describe(),
            )
            self._finish_replay()
            return None
        return self._failed(reply)

    def _finish_replay(self) -> None:
        with self._lock:
            self._replay_pending = False
            if self._flush_waiters:
                self._progress.notify_all()

    def _take_batch(self) -> _Batch | None:
        """Copy (not remove) the oldest buffered updates and the pending frame for one POST."""
        with self._lock:
            frame = self._frame
            if self._frame_alone and frame is not None:
                updates = []
            else:
                updates = list(itertools.islice(self._updates, self._batch_limit))
            if not updates and frame is None:
                return None
            return _Batch(self._removed + 1, updates, frame)

    def _send_batch(self, batch: _Batch) -> tuple[str, float]:
        """POST one batch and settle the buffer according to the answer."""
        texts, plain, unsendable = [], [], 0
        for update in batch.updates:
            text, value = _encode_update(update)
            if text is None:
                unsendable += 1
                self._log_once(
                    "unsendable", logging.WARNING, "dropped a training update that cannot be made JSON: %s", value
                )
                continue
            texts.append(text)
            plain.append(value)
        frame_body = None
        if batch.frame is not None:
            frame_body = self._frame_body(batch.frame)
            if frame_body is None:  # cannot be encoded: drop it, send the updates without it
                self._settle(_Batch(batch.first, [], batch.frame), accepted=False)
                batch.frame = None
                if not batch.updates:
                    return _RETRY_NOW, 0.0
        body = self._batch_body(texts, frame_body)
        if len(body) > self._max_body_bytes:
            split = self._split(batch, too_big=True)
            if split is not None:
                return split
        reply = self._post("/api/batch", body, _NDJSON_TYPE)
        if reply.error is None and reply.status == 200:
            if reply.body is not None:
                self._observe(reply.body)
            for value in plain:
                self._merged.update(value)
            if frame_body is not None:
                self._last_frame = frame_body
            self._settle(batch, accepted=True, unsendable=unsendable)
            self._batch_limit = min(self._batch_ceiling, self._batch_limit * 2)
            self._frame_alone = False
            return _SENT, 0.0
        if reply.error is None and reply.status in _REJECTED_STATUSES:
            split = self._split(batch, too_big=reply.status == 413 and reply.error_code() in _SIZE_ERRORS)
            if split is not None:
                return split
            self._log_once(
                f"rejected:{reply.error_code()}",
                logging.WARNING,
                "HUD refused %s (%s); dropped it",
                "a frame" if not batch.updates else "a training update",
                reply.describe(),
            )
            with self._lock:
                self._last_error = reply.describe()
            self._settle(batch, accepted=False)
            self._frame_alone = False
            return _RETRY_NOW, 0.0
        return self._failed(reply)

    def _split(self, batch: _Batch, too_big: bool = False) -> tuple[str, float] | None:
        """Make the next batch smaller (halve it, or send the frame alone); None if it can't be.

        ``too_big`` (the server's batch or body limit) lowers the batch size for good; other
        refusals halve it only until the refused update is found and dropped.
        """
        if len(batch.updates) > 1:
            self._batch_limit = max(1, len(batch.updates) // 2)
            if too_big:
                self._batch_ceiling = self._batch_limit
            return _RETRY_NOW, 0.0
        if batch.updates and batch.frame is not None:
            self._frame_alone = True
            return _RETRY_NOW, 0.0
        return None

    def _frame_body(self, frame: tuple) -> dict | None:
        """The frame as posted ({image_base64, response_time}); None when it cannot be encoded."""
        number, kind, payload, response_time = frame
        cached = self._encoded_frame
        if cached is not None and cached[0] == number:
            image = cached[1]
        else:
            try:
                image = _encode_image(kind, payload, self._jpeg_quality)
            except Exception as exc:
                self._log_once(
                    "encode", logging.WARNING, "could not encode a frame (%s: %s); dropped it", type(exc).__name__, exc
                )
                return None
            self._encoded_frame = (number, image)
        if isinstance(response_time, float) and not math.isfinite(response_time):
            response_time = None
        return {"image_base64": image, "response_time": response_time}

    def _batch_body(self, update_texts: list[str], frame: dict | None) -> str:
        """The /api/batch NDJSON body: a header line (ids, frame), then one already-serialised update a line."""
        head = {"session_id": self._session_id, "run_id": self._run_id}
        if frame is not None:
            head["frame"] = frame
        return "\n".join([_dumps(head), *update_texts])

    def _settle(self, batch: _Batch, *, accepted: bool, unsendable: int = 0) -> None:
        """Remove a finished batch (sent, or refused for good) from the buffer and count it."""
        with self._lock:
            counts = self._counts
            # Updates the caller dropped while this batch was in flight are already gone.
            gone = min(len(batch.updates), max(0, batch.first + len(batch.updates) - 1 - self._removed))
            for _ in range(gone):
                self._updates.popleft()
            self._removed += gone
            refused = gone if not accepted else min(unsendable, gone)
            counts["rejected"] += refused
            counts["sent"] += gone - refused
            if batch.frame is not None:
                counts["frames_sent" if accepted else "frames_dropped"] += 1
                if self._frame is batch.frame:
                    self._frame = None
            if self._flush_waiters:
                self._progress.notify_all()

    def _observe(self, body: dict, replaying: bool = False) -> None:
        """Note the server's boot id and session id; a new boot or session means re-send state."""
        boot_id, session_id = body.get("boot_id"), body.get("session_id")
        changed = False
        if isinstance(boot_id, str):
            changed = self._boot_id is not None and boot_id != self._boot_id
            self._boot_id = boot_id
        if isinstance(session_id, str):
            changed = changed or (self._session_id is not None and session_id != self._session_id)
            self._session_id = session_id
        if self._lost_session:
            changed, self._lost_session = True, False
        if changed and not replaying and (self._merged or self._last_frame is not None):
            with self._lock:
                self._replay_pending = True

    def _failed(self, reply: _Reply) -> tuple[str, float]:
        """Count and log (once per kind) a failed attempt; the caller backs off."""
        if reply.error is not None:
            # The server may come back as a new process: register (and learn its boot id)
            # before sending, so the re-sent state goes out before the buffered updates.
            self._need_register = True
            kind = type(reply.error).__name__
        else:
            kind = reply.error_code()
            if reply.status == 409:  # another run owns the HUD: when we get it back it starts afresh
                self._need_register = True
                self._lost_session = True
        self._note_failure(kind, reply.describe())
        wait = reply.retry_after() if reply.status in _BUSY_STATUSES else 0.0
        return _FAILED, wait

    def _note_failure(self, kind: str, text: str, exc_info: bool = False) -> None:
        with self._lock:
            self._counts["failed"] += 1
            self._last_error = text
            pending = len(self._updates)
        level = logging.DEBUG if self._stopping else logging.WARNING  # a closed client stays quiet
        self._log_once(
            kind,
            level,
            "HUD at %s: %s; training goes on, %d update(s) buffered (up to %d) and retried",
            self._url,
            text,
            pending,
            self._max_pending,
            exc_info=exc_info,
        )

    def _log_once(self, kind: str, level: int, message: str, *args: Any, exc_info: bool = False) -> None:
        """Log at ``level`` the first time ``kind`` happens (until the server is reachable again)."""
        if kind in self._logged_kinds:
            logger.debug(message, *args)
            return
        self._logged_kinds.add(kind)
        logger.log(level, message, *args, exc_info=exc_info)

    def _post(self, path: str, body: str, content_type: str = "application/json") -> _Reply:
        """POST a body (JSON unless ``content_type`` says otherwise); never raises (the reply holds the exception)."""
        try:
            response = self._session.post(
                self._url + path,
                data=body.encode("utf-8"),
                headers={**self._headers, "Content-Type": content_type},
                timeout=(self._connect_timeout, self._read_timeout),
            )
        except (requests.RequestException, OSError, ValueError) as exc:
            return _Reply(error=exc)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        headers = getattr(response, "headers", None) or {}
        return _Reply(
            response.status_code,
            payload if isinstance(payload, dict) else None,
            retry_header=headers.get("Retry-After"),
        )


# --------------------------------------------------------------------------- helpers


def _as_dict(data: Any) -> dict:
    """Accept any mapping as training data; anything else is misuse."""
    if isinstance(data, dict):
        return data
    if isinstance(data, collections.abc.Mapping):
        return dict(data)
    raise TypeError(f"training data must be a dict, not {type(data).__name__}")


def _encode_update(update: dict) -> tuple[str | None, Any]:
    """Serialise one update: directly when it is already plain JSON, else after conversion."""
    try:
        return _dumps(update), update
    except RecursionError as exc:  # nested too deep: converting would recurse as deep
        return None, exc
    except (TypeError, ValueError, RuntimeError):
        pass  # numpy values, NaN, odd keys, or a nested dict changed under us: convert below
    try:
        plain = to_json_value(update)
        return _dumps(plain), plain
    except (TypeError, ValueError, RecursionError, RuntimeError) as exc:
        return None, exc


def _positive(name: str, value: Any, kind: type) -> Any:
    """Check a numeric setting: the right type and above zero."""
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise TypeError(f"{name} must be {'a number' if kind is float else 'an int'}, not {type(value).__name__}")
    if not value > 0 or (kind is float and not math.isfinite(value)):
        raise ValueError(f"{name} must be above 0, got {value!r}")
    return kind(value)
