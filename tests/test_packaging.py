"""pyproject.toml: the pins agree with requirements.txt, `pip install .` gives a Flask-free client, `hud-server` runs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import requests

from helpers import ROOT, free_port, wait_until

PIP_TIMEOUT = 300  # seconds one pip install may take (it fetches from the package index)
# What `pip install .` needs from a checkout, and the server's pages (installed as data files).
CLIENT_FILES = ("pyproject.toml", "README.md", "hud_client.py", "hud_server.py", "hud_integrations")
SERVER_FILES = ("templates", "static")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _canonical(requirement: str) -> str:
    """``"Flask == 3.1.3"`` -> ``"flask==3.1.3"`` (PEP 503 name, no spaces)."""
    name, rest = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower() + rest.replace(" ", "")


def _requirements_txt() -> set[str]:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return {_canonical(line.split("#")[0]) for line in lines if line.split("#")[0].strip()}


def _copy_project(dest: Path, names: tuple[str, ...]) -> Path:
    """Copy the files a build needs into ``dest`` (so building never writes into the checkout)."""
    dest.mkdir()
    for name in names:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def _venv(path: Path) -> Path:
    """A fresh virtual environment; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    return path / "bin" / "python"


def _pip_install(python: Path, *args: str) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _clean_env() -> dict:
    """The environment without anything that would let the checkout leak onto sys.path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("HUD_")}


def test_server_extra_pins_exactly_requirements_txt():
    """The `server` extra pins exactly the packages and versions requirements.txt pins."""
    extra = {_canonical(requirement) for requirement in _pyproject()["project"]["optional-dependencies"]["server"]}
    assert extra == _requirements_txt()
    assert all("==" in requirement for requirement in extra)


def test_client_needs_only_requests():
    """A plain install depends on requests alone; the server stack and frame libraries are extras."""
    project = _pyproject()["project"]
    assert [_canonical(requirement).split(">")[0] for requirement in project["dependencies"]] == ["requests"]
    assert {_canonical(r) for r in project["optional-dependencies"]["frames"]} == {"numpy", "pillow"}
    assert project["scripts"] == {"hud-server": "hud_server:main"}


def test_pip_install_gives_a_flask_free_client(tmp_path):
    """`pip install .` in a fresh venv installs hud_client and hud_integrations, and importing them never imports Flask."""
    source = _copy_project(tmp_path / "src", CLIENT_FILES + SERVER_FILES)
    python = _venv(tmp_path / "venv")
    _pip_install(python, str(source))
    check = (
        "import importlib.util, sys\n"
        "import hud_client, hud_integrations\n"
        "assert 'flask' not in sys.modules, 'importing the client imported flask'\n"
        "assert importlib.util.find_spec('flask') is None, 'a plain install pulled in flask'\n"
        "assert hud_client.__file__.startswith(sys.prefix), hud_client.__file__\n"
        "assert hud_integrations.__file__.startswith(sys.prefix), hud_integrations.__file__\n"
        "for name in ('gymnasium', 'ray', 'stable_baselines3', 'torch', 'numpy'):\n"
        "    assert name not in sys.modules, name\n"
        "hud_client.HUDClient('http://127.0.0.1:9').close(timeout=0.1)\n"
    )
    result = subprocess.run(
        [str(python), "-c", check],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("editable", [True, False], ids=["editable", "plain"])
def test_install_runs_hud_server(tmp_path, editable):
    """`pip install [-e] '.[server]'` gives a `hud-server` command that serves the dashboard and every static file."""
    source = _copy_project(tmp_path / "src", CLIENT_FILES + SERVER_FILES)
    python = _venv(tmp_path / "venv")
    _pip_install(python, *(["-e"] if editable else []), f"{source}[server]")
    command = python.parent / "hud-server"
    assert command.exists()
    port = free_port()
    process = subprocess.Popen(
        [str(command), "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _answers(url + "/health") or process.poll() is not None,
            timeout=30,
            message="hud-server to answer /health",
        )
        assert process.poll() is None, process.stdout.read()
        page = requests.get(url + "/", timeout=5)
        assert page.status_code == 200 and "<html" in page.text.lower()
        for path in sorted((ROOT / "static").rglob("*")):
            if path.is_file():
                asset = requests.get(f"{url}/static/{path.relative_to(ROOT / 'static').as_posix()}", timeout=5)
                assert asset.status_code == 200 and asset.content == path.read_bytes(), path
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        process.stdout.close()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.parametrize("module", ["hud_client", "hud_integrations"])
def test_importing_the_client_side_never_imports_flask(module):
    """Importing the client side in a fresh interpreter leaves Flask and the ML libraries unimported."""
    check = (
        f"import sys; import {module}\n"
        "for name in ('flask', 'waitress', 'gymnasium', 'ray', 'stable_baselines3', 'torch'):\n"
        "    assert name not in sys.modules, name\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
