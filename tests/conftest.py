"""Shared fixtures: the app, Flask's test client, and a real waitress server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hud_server  # noqa: E402
from helpers import start_live_server  # noqa: E402

TEST_SETTINGS = {"session_timeout": 60.0}


@pytest.fixture
def app():
    """A fresh HUD app with test settings."""
    return hud_server.create_app(dict(TEST_SETTINGS))


@pytest.fixture
def client(app):
    """Flask's test client for ``app``."""
    return app.test_client()


@pytest.fixture
def hud(app):
    """The HUD state behind ``app``."""
    return app.extensions["hud"]


@pytest.fixture
def live_server(request):
    """A real waitress server on a free port; settings may come from ``@pytest.mark.hud_settings``."""
    marker = request.node.get_closest_marker("hud_settings")
    config = dict(TEST_SETTINGS)
    if marker:
        config.update(marker.kwargs)
    server = start_live_server(config)
    yield server
    server.stop()
