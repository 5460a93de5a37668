"""Helpers that run `wagate` as a subprocess: the console script, a server process, CLI calls.

`wagate_server` gives a `WagateProcess` bound to a tmp data directory and a free port. Start it
(with extra environment) as often as needed; teardown always kills it and prints its log, which
pytest shows only when the test failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

PARTNER_TOKEN = "e" * 50
# What `wagate instance show --json` prints: the keys, never more (no secrets beyond these).
SHOW_KEYS = {
    "idInstance",
    "apiTokenInstance",
    "apiUrl",
    "mediaUrl",
    "engine",
    "phone",
    "stateInstance",
    "webhookSigningSecret",
}


def wagate_executable() -> str:
    """The `wagate` console script of the running interpreter's environment."""
    found = shutil.which("wagate", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.fail(f"no `wagate` console script next to {sys.executable}")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def base_env(**extra: str) -> dict[str, str]:
    """The test process's environment minus WAGATE_*, with the partner token and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAGATE_")}
    env.update({"WAGATE_PARTNER_TOKEN": PARTNER_TOKEN, "WAGATE_LOG_LEVEL": "INFO"})
    env.update(extra)
    return env


def run_cli(
    data_dir: Path, *args: str, env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `wagate ARGS --data-dir DATA_DIR` to completion."""
    completed = subprocess.run(
        [wagate_executable(), *args, "--data-dir", str(data_dir)],
        env=dict(env) if env is not None else base_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and completed.returncode != 0:
        pytest.fail(
            f"`wagate {' '.join(args)}` exited {completed.returncode}\n"
            f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
        )
    return completed


def cli_json(data_dir: Path, *args: str) -> Any:
    return json.loads(run_cli(data_dir, *args).stdout)


class WagateProcess:
    """`wagate serve --no-demo` on 127.0.0.1:`port` with `data_dir`, output in `log_path`."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, ready_timeout_s: float = 30, /, **env: str) -> None:
        assert self.process is None, "already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts}: {sorted(env.items())} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [
                    wagate_executable(),
                    "serve",
                    "--no-demo",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=base_env(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready(ready_timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        # Another process: there is no event to wait on, so poll /health with a deadline.
        deadline = time.monotonic() + timeout_s
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"wagate serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"wagate serve was not ready within {timeout_s} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def wagate_server(tmp_path: Path) -> Iterator[WagateProcess]:
    server = WagateProcess(tmp_path / "data", tmp_path / "wagate-serve.log")
    try:
        yield server
    finally:
        server.kill()
        # Captured teardown output is shown only for a failed test.
        print(f"----- wagate serve output ({server.log_path}) -----\n{server.log()}")
