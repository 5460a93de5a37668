"""`wagate serve`'s log output: written in batches, yet nothing held back is lost when it ends."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.e2e.conftest import WagateProcess

pytestmark = pytest.mark.slow


def test_sigterm_ends_the_server_with_its_shutdown_logged(wagate_server: WagateProcess) -> None:
    wagate_server.start()
    process = wagate_server.process
    assert process is not None
    assert httpx.get(f"{wagate_server.url}/ping").status_code == 200
    process.send_signal(signal.SIGTERM)
    # uvicorn ends a graceful shutdown by raising the signal again: the exit status says so.
    assert process.wait(30) == -signal.SIGTERM
    wagate_server.process = None
    log = wagate_server.log()
    # The lines of the last moments, held by the batching log output until the signal.
    assert "GET /ping 200" in log
    assert "Application shutdown complete." in log
    assert "Finished server process" in log
