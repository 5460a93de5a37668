"""`wagate serve` keeps every thread to the CPUs WAGATE_CPU_AFFINITY chooses (Linux)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import WagateProcess, base_env, wagate_executable
from wagate.cpu_affinity import format_cpus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only"),
]


def thread_cpus(pid: int) -> dict[int, str]:
    """Each thread's Cpus_allowed_list, as /proc shows it."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                found[int(task.name)] = line.split(":", 1)[1].strip()
    return found


def test_a_sqlite_server_keeps_to_one_cpu_by_default(wagate_server: WagateProcess) -> None:
    available = os.sched_getaffinity(0)
    if len(available) < 2:
        pytest.skip("needs two CPUs to tell pinned from not")
    wagate_server.start()
    assert wagate_server.process is not None
    threads = thread_cpus(wagate_server.process.pid)
    # The event loop's and the store's at least; all of them on the highest CPU.
    assert len(threads) >= 2
    assert set(threads.values()) == {str(max(available))}
    assert f"pinned to CPU {max(available)}" in wagate_server.log()


def test_off_leaves_the_server_where_it_was(wagate_server: WagateProcess) -> None:
    wagate_server.start(WAGATE_CPU_AFFINITY="off")
    assert wagate_server.process is not None
    threads = thread_cpus(wagate_server.process.pid)
    assert set(threads.values()) == {format_cpus(os.sched_getaffinity(0))}
    assert "not pinned to CPUs: WAGATE_CPU_AFFINITY=off" in wagate_server.log()


@pytest.mark.parametrize(
    ("value", "message"),
    [("most", "expected auto, off or a CPU list"), ("4096", "CPU 4096 not available")],
)
def test_a_bad_value_stops_serve_before_it_starts(tmp_path: Path, value: str, message: str) -> None:
    done = subprocess.run(
        [wagate_executable(), "serve", "--data-dir", str(tmp_path / "data")],
        env=base_env(WAGATE_CPU_AFFINITY=value),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "WAGATE_CPU_AFFINITY" in done.stderr and message in done.stderr
    assert not (tmp_path / "data").exists()  # nothing was created
