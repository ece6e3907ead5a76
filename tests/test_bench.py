"""The benchmark suite keeps working: `bench/run.py --quick` runs every case and writes its figures.

Never asserts on speed: the figures on a busy machine say nothing; only their presence is checked.
"""

from __future__ import annotations

import json
import numbers
import subprocess
import sys

from helpers import ROOT

QUICK_TIMEOUT = 150  # seconds; the quick run takes about 30 s on 2 busy cores


def number(value) -> bool:
    """True for an int or float that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def test_quick_run_reports_every_case_with_numbers(tmp_path):
    """`python bench/run.py --quick` exits 0 and its JSON has every case, each with numeric figures."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    figures = json.loads(out.read_text())
    assert figures["mode"] == "quick"
    assert {"cores", "python", "versions"} <= figures["machine"].keys()
    cases = figures["cases"]
    assert set(cases) == {"client_cost", "ingest", "fanout", "frames", "health", "memory"}

    for name in ("up", "refusing", "hung"):
        assert number(cases["client_cost"][name]["median_us"]) and number(cases["client_cost"][name]["p99_us"])
    for run in cases["ingest"]["runs"]:
        assert run["applied"] == run["sent"]
        assert number(run["updates_per_s"]) and number(run["server_cpu_us_per_update"])
    for run in cases["fanout"]["runs"] + [cases["frames"]]:
        assert number(run["delivered_min_pct"]) and number(run["readers_cpu_s"])
        assert number(run["latency"]["median_ms"]) and number(run["latency"]["p99_ms"])
    assert cases["frames"]["producer_frames_sent"] == cases["frames"]["sent"]  # the server took every frame
    assert cases["health"]["extra_stream_status"] == 503
    assert number(cases["health"]["latency"]["median_ms"]) and number(cases["health"]["latency"]["p99_ms"])
    assert [run["readers"] for run in cases["memory"]["runs"]] == [0, 16]
    for run in cases["memory"]["runs"]:
        assert run["updates"] == cases["memory"]["settings"]["updates"]
        assert run["frames"] == cases["memory"]["settings"]["frames"]
        assert number(run["rss_end_mb"]) and number(run["growth_after_warmup_mb"])
    assert figures["table"] and all(number(case["wall_s"]) for case in cases.values())


def test_health_floor_reports_each_setup(tmp_path):
    """`python bench/health_floor.py` probes /health in its four set-ups and writes their figures."""
    out = tmp_path / "health_floor.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "health_floor.py"), "--samples", "10", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"hud", "hud-no-streams", "minimal", "elsewhere"}
    for summary in results.values():
        assert summary["samples"] == 10
        assert number(summary["median_ms"]) and number(summary["p99_ms"])
