"""hud_integrations: lazy access to each integration, and the helpers they share."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hud_integrations
from helpers import ROOT
from hud_integrations._common import as_number, nest_metrics


def test_names_import_their_module_only_when_used():
    """`hud_integrations.HUDWrapper` imports the gymnasium module on access; the package alone imports no library."""
    check = (
        "import sys, hud_integrations\n"
        "assert 'gymnasium' not in sys.modules\n"
        "from hud_integrations import HUDWrapper\n"
        "assert 'gymnasium' in sys.modules and 'ray' not in sys.modules and 'stable_baselines3' not in sys.modules\n"
        "assert HUDWrapper.__module__ == 'hud_integrations.gymnasium'\n"
    )
    pytest.importorskip("gymnasium")
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_name_raises_attribute_error():
    """An unknown attribute of the package raises AttributeError, and dir() lists the integrations."""
    with pytest.raises(AttributeError):
        hud_integrations.NoSuchThing  # noqa: B018
    assert {"HUDWrapper", "HUDCallback", "HUDCallbacks"} <= set(dir(hud_integrations))


def test_nest_metrics_splits_keys_and_keeps_numbers():
    """`a/b` keys become nested dicts of numbers; strings and bools are dropped; a value that is also a prefix is kept."""
    flat = {
        "train/loss": 0.5,
        "train/n_updates": 3,
        "rollout/ep_rew_mean": 20.0,
        "time/name": "ppo",
        "flag": True,
        "x": 1,
        "x/y": 2,
    }
    assert nest_metrics(flat) == {
        "train": {"loss": 0.5, "n_updates": 3},
        "rollout": {"ep_rew_mean": 20.0},
        "x": {"value": 1, "y": 2},
    }


def test_as_number_accepts_numpy_scalars_and_refuses_arrays():
    """numpy scalars become Python numbers; bools, strings and arrays are not numbers."""
    numpy = pytest.importorskip("numpy")
    assert as_number(numpy.float32(1.5)) == 1.5 and type(as_number(numpy.int64(3))) is int
    assert as_number(numpy.array(2.0)) == 2.0
    assert as_number(True) is None and as_number("1") is None and as_number(numpy.zeros(2)) is None
