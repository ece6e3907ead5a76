"""ruff (pinned in requirements-dev.txt) finds nothing to fix or reformat, as configured in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from helpers import ROOT


def _ruff() -> list[str]:
    """The ruff command: this interpreter's ruff (the pinned one), else the one on PATH."""
    probe = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return [sys.executable, "-m", "ruff"]
    executable = shutil.which("ruff")
    if executable is None:
        pytest.fail("ruff is not installed: pip install -r requirements-dev.txt")
    return [executable]


def test_ruff_check_finds_nothing():
    """`ruff check .` reports no lint findings."""
    result = subprocess.run(
        [*_ruff(), "check", "--no-cache", "--output-format", "concise", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    """`ruff format --check .` would reformat no file."""
    result = subprocess.run(
        [*_ruff(), "format", "--no-cache", "--check", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
