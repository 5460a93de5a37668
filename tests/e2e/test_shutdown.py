"""How `wagate serve` ends: a SIGTERM answers the long polls waiting on it at once instead of
waiting out their receiveTimeout; an address it cannot listen on stops it before it does
anything."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import WagateProcess, cli_json, free_port, run_cli

pytestmark = pytest.mark.slow


def test_sigterm_answers_waiting_long_polls_at_once(wagate_server: WagateProcess) -> None:
    wagate_server.start()
    process = wagate_server.process
    assert process is not None
    created = cli_json(wagate_server.data_dir, "instance", "create", "--json")
    poll_url = (
        f"{wagate_server.url}/waInstance{created['idInstance']}/receiveNotification"
        f"/{created['apiTokenInstance']}"
    )
    answers: list[httpx.Response] = []

    def poll() -> None:
        answers.append(httpx.get(poll_url, params={"receiveTimeout": 60}, timeout=70))

    pollers = [threading.Thread(target=poll) for _ in range(3)]
    for poller in pollers:
        poller.start()
    # Another process: no event to wait on, so read its gauge until the three polls wait.
    deadline = time.monotonic() + 20
    while "wagate_long_polls_waiting 3.0" not in httpx.get(f"{wagate_server.url}/metrics").text:
        assert time.monotonic() < deadline, "the polls never waited"
        time.sleep(0.05)

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == -signal.SIGTERM
    wagate_server.process = None
    for poller in pollers:
        poller.join(10)
    # Answered as on a timeout (the client polls again), long before their 60 s.
    assert time.monotonic() - signalled < 10
    assert [(a.status_code, a.content) for a in answers] == [(200, b"null")] * 3


def test_a_port_in_use_stops_serve_before_it_does_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(tmp_path / "data", "serve", "--port", str(port), check=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; choose another"
        " --port (WAGATE_PORT) or --host (WAGATE_HOST)"
    )
    # Before migrating, making the demo instance or printing its credentials for that port.
    assert result.stdout == ""
    assert not (tmp_path / "data" / "wagate.sqlite3").exists()


def test_a_host_that_is_not_this_machines_stops_serve(tmp_path: Path) -> None:
    port = free_port()
    result = run_cli(
        tmp_path / "data", "serve", "--host", "192.0.2.1", "--port", str(port), check=False
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 192.0.2.1:{port}: Cannot assign requested address; choose"
        " another --port (WAGATE_PORT) or --host (WAGATE_HOST)"
    )
