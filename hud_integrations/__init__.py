"""Two-line HUD integrations for the libraries training code lives in.

Each integration is its own module and imports its library only when it is used, so importing
``hud_integrations`` never imports gymnasium, Ray, Stable-Baselines3 or torch::

    from hud_integrations.gymnasium import HUDWrapper        # Gymnasium env or vector env
    from hud_integrations.sb3 import HUDCallback             # Stable-Baselines3
    from hud_integrations.rllib import HUDCallbacks          # Ray RLlib (new API stack)

The same names can be imported from ``hud_integrations`` itself; the module behind a name is
imported on first access. With no client given, each integration builds ``HUDClient()``, which
reads ``HUD_URL`` and ``HUD_RUN_ID`` from the environment (and does nothing when ``HUD_URL`` is unset).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["HUDWrapper", "HUDVectorWrapper", "HUDCallback", "HUDCallbacks"]

_MODULE_OF = {
    "HUDWrapper": "gymnasium",
    "HUDVectorWrapper": "gymnasium",
    "HUDCallback": "sb3",
    "HUDCallbacks": "rllib",
}


def __getattr__(name: str) -> Any:
    """Import the integration module behind ``name`` on first access (PEP 562)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    """The module's attributes, including the lazily imported integrations."""
    return sorted(set(globals()) | set(__all__))
