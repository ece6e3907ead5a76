"""Settings: one table, read from HUD_* variables and flags, refused with the setting's name."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hud_server
from helpers import ROOT


def test_defaults_match_the_documented_table():
    """With nothing set, the server listens on 0.0.0.0:8086 and allows 32 dashboards."""
    settings = hud_server.load_settings(environ={})
    assert settings["host"] == "0.0.0.0"
    assert settings["port"] == 8086
    assert settings["max_streams"] == 32
    assert settings["threads"] >= settings["max_streams"] + hud_server.MIN_SPARE_THREADS


def test_every_setting_has_env_flag_and_help():
    """Every setting has a HUD_* variable, a --flag and a help text."""
    for setting in hud_server.SETTINGS:
        assert setting.env == "HUD_" + setting.name.upper()
        assert setting.flag.startswith("--") and "_" not in setting.flag
        assert setting.help


def test_environment_variables_are_read():
    """HUD_* variables override the defaults, converted to the setting's type."""
    settings = hud_server.load_settings(
        environ={"HUD_PORT": "9000", "HUD_SESSION_TIMEOUT": "2.5", "HUD_TITLE": "Pong HUD"}
    )
    assert settings["port"] == 9000
    assert settings["session_timeout"] == 2.5
    assert settings["title"] == "Pong HUD"


def test_overrides_win_over_environment():
    """create_app's config dict wins over the environment."""
    settings = hud_server.load_settings({"port": 1234}, environ={"HUD_PORT": "9000"})
    assert settings["port"] == 1234


def test_settings_allow_256_streams():
    """256 open dashboards (and more) can be configured."""
    settings = hud_server.load_settings({"max_streams": 256, "threads": 270}, environ={})
    assert settings["max_streams"] == 256


@pytest.mark.parametrize(
    "env,named",
    [
        ({"HUD_PORT": "eighty"}, "HUD_PORT"),
        ({"HUD_PORT": "70000"}, "HUD_PORT"),
        ({"HUD_THREADS": "0"}, "HUD_THREADS"),
        ({"HUD_SESSION_TIMEOUT": "nan"}, "HUD_SESSION_TIMEOUT"),
        ({"HUD_MAX_STREAMS": "64", "HUD_THREADS": "40"}, "HUD_THREADS"),
        ({"HUD_LOG_LEVEL": "LOUD"}, "HUD_LOG_LEVEL"),
        ({"HUD_EVENT_LOG_BYTES": "1000"}, "HUD_EVENT_LOG_BYTES"),
    ],
)
def test_bad_values_name_the_setting(env, named):
    """A bad value raises ConfigError whose message names the setting."""
    with pytest.raises(hud_server.ConfigError, match=named):
        hud_server.load_settings(environ=env)


def test_unknown_config_key_is_refused():
    """create_app refuses a config key it does not know, naming it."""
    with pytest.raises(hud_server.ConfigError, match="no_such_thing"):
        hud_server.create_app({"no_such_thing": 1})


def test_flags_parse_into_settings():
    """Each setting has a flag; flags come back as overrides."""
    overrides = hud_server.parse_args(["--port", "9999", "--max-streams", "8", "--host", "127.0.0.1"])
    assert overrides == {"port": "9999", "max_streams": "8", "host": "127.0.0.1"}
    assert hud_server.load_settings(overrides, environ={})["max_streams"] == 8


def test_bad_flag_stops_startup_with_a_message():
    """`python hud_server.py --port abc` exits non-zero and says which setting is wrong."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "hud_server.py"), "--port", "abc"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "HUD_PORT" in result.stderr and "--port" in result.stderr


def test_bad_env_stops_startup_with_a_message():
    """A bad HUD_* variable stops start-up with a message naming it."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "hud_server.py")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"HUD_MAX_STREAMS": "-3", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "HUD_MAX_STREAMS" in result.stderr


def test_waitress_serve_call_builds_the_app():
    """`waitress-serve --call hud_server:create_app` can build the app with no arguments."""
    app = hud_server.create_app()
    assert app.extensions["hud"].settings["port"] in range(0, 65536)


def test_readme_documents_every_setting():
    """The README's settings table names every setting's variable, flag and default."""
    readme = (ROOT / "README.md").read_text()
    for setting in hud_server.SETTINGS:
        default = setting.default
        if isinstance(default, float) and default.is_integer():
            default = int(default)
        row = f"| `{setting.env}` | `{setting.flag}` | `{default}` |"
        assert row in readme, f"README lacks the row for {setting.env}: {row}"


def test_demo_serves_and_feeds_a_simulated_run():
    """`python hud_server.py --demo` serves the HUD and feeds it a simulated run in the same command."""
    import requests

    from helpers import start_server_process, wait_until

    server = start_server_process(args=["--demo"])
    try:
        state = wait_until(
            lambda: (lambda s: s if s["updates"] >= 3 and s["frames"] >= 1 else None)(
                requests.get(server.url + "/api/state", timeout=5).json()
            ),
            timeout=30,
            message="demo updates",
        )
        assert state["run_id"] == "demo"
        assert "global_step" in state["data"] and "llm_suggestion" in state["data"]
    finally:
        server.stop()
