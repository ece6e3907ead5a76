"""What the integrations share: building the client, picking out metrics, logging a failure once."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from typing import Any

from hud_client import HUDClient


def resolve_client(client: HUDClient | None) -> tuple[HUDClient, bool]:
    """Return (client, owned): the given client, or a new ``HUDClient()`` from HUD_URL / HUD_RUN_ID that we own."""
    if client is not None:
        return client, False
    return HUDClient(), True


def as_number(value: Any) -> float | int | None:
    """A plain int or float for a Python/numpy/torch real scalar, else None (bools and arrays included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)  # numpy and torch scalars, 0-d arrays and 1-element tensors
    if item is not None and getattr(value, "ndim", 0) == 0 and getattr(value, "dtype", None) is not None:
        try:
            return as_number(item())
        except (TypeError, ValueError):
            return None
    return None


def finite(value: float | int | None) -> bool:
    """True for a number that is not NaN or infinite."""
    return value is not None and math.isfinite(value)


def nest_metrics(flat: Mapping[str, Any], separator: str = "/") -> dict:
    """``{"train/loss": 0.5}`` -> ``{"train": {"loss": 0.5}}``, numeric values only.

    The HUD charts nested numbers as ``train.loss``. A key that is both a value and a prefix
    keeps the value under ``"value"``.
    """
    nested: dict = {}
    for key, raw in flat.items():
        if not isinstance(key, str):
            continue
        number = as_number(raw)
        if number is None:
            continue
        parts = [part for part in key.split(separator) if part]
        if not parts:
            continue
        node = nested
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else {"value": child}
                node[part] = child
            node = child
        leaf = parts[-1]
        if isinstance(node.get(leaf), dict):
            node[leaf]["value"] = number
        else:
            node[leaf] = number
    return nested


class OnceLogger:
    """Logs each kind of failure once per integration object, so a broken hook never floods the log."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[str] = set()

    def warning(self, kind: str, message: str, *args: Any, exc_info: bool = False) -> None:
        """Log ``message`` at WARNING the first time ``kind`` is seen."""
        if kind not in self._seen:
            self._seen.add(kind)
            self._logger.warning(message, *args, exc_info=exc_info)
