"""Every benchmark script's `--smoke` mode (and the profiling aid `costs.py`'s) runs to
completion and prints its figures.

The scripts run as subprocesses, exactly as `make bench` runs them; targets are not judged here
(they live in the benchmarks, not the tests), and docs/benchmarks.md is never written.
P6 needs the PostgreSQL at WAGATE_TEST_DATABASE_URL; every script needs wrk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
# Read at import: the autouse fixture of tests/conftest.py clears WAGATE_* before tests run.
POSTGRES_URL = os.environ.get("WAGATE_TEST_DATABASE_URL", "")
REQUIRE_POSTGRES = os.environ.get("WAGATE_REQUIRE_POSTGRES", "") == "1"

SCRIPTS = [
    ("P1", "p1_accept_rate.py"),
    ("P2", "p2_latency.py"),
    ("P3", "p3_push.py"),
    ("P4", "p4_polling.py"),
    ("P5", "p5_scale.py"),
    ("P6", "p6_two_nodes.py"),
    # Not a benchmark but a profiling aid (bench/costs.py); smoke-run so that it never rots.
    ("COSTS", "costs.py"),
]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("name", "script"), SCRIPTS, ids=[name for name, _ in SCRIPTS])
def test_smoke(name: str, script: str, tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed: apt-get install wrk")
    args = [sys.executable, str(BENCH / script), "--smoke", "--json", str(tmp_path / "out.json")]
    if name == "P6":
        if not POSTGRES_URL:
            if REQUIRE_POSTGRES:
                pytest.fail("WAGATE_REQUIRE_POSTGRES=1 but WAGATE_TEST_DATABASE_URL is not set")
            pytest.skip("P6 needs WAGATE_TEST_DATABASE_URL")
        args += ["--database-url", POSTGRES_URL]
    docs = REPO / "docs" / "benchmarks.md"
    docs_before = docs.read_bytes() if docs.exists() else None

    done = subprocess.run(
        args,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("WAGATE_")},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )

    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert f"{name}: " in done.stdout and "[SMOKE" in done.stdout
    assert "target:" in done.stdout and "baseline:" in done.stdout
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["benchmark"] == name and result["smoke"] is True
    assert result["figures"], result
    for figure in result["figures"]:
        assert figure["runs"] and figure["passed"] is None, figure
    if name == "P2":
        # The context rows at lower fractions of the maximum accept rate are there too.
        keys = {figure["key"] for figure in result["figures"]}
        assert {"P2.e2e_p99_at_0.25", "P2.e2e_p99_at_0.125"} <= keys, keys
    if name == "COSTS":
        # Every request was followed through its stages (sent, queued, push began, received).
        stages = {
            f["key"]: f["value"] for f in result["figures"] if f["key"].startswith("costs.stage")
        }
        assert len(stages) == 4 and all(value > 0 for value in stages.values()), stages
    assert (docs.read_bytes() if docs.exists() else None) == docs_before
