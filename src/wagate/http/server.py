"""`wagate serve`'s HTTP server: uvicorn, told to end waiting long polls when shutdown begins.

uvicorn's graceful shutdown stops accepting connections, then waits for every request in
flight to finish before the application hears of it (the lifespan's shutdown comes last). A
long poll is a request that waits up to its receiveTimeout, so without this a SIGTERM took up
to a minute to stop a server that any bot polled.
"""

from __future__ import annotations

import contextlib
import socket
import sys

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE

from wagate.bootstrap import Runtime
from wagate.config import Settings


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        runtime: Runtime | None = getattr(self._app.state, "runtime", None)
        if runtime is not None:  # None if start-up failed before the runtime opened
            runtime.notifications.end_long_polls()
        await super().shutdown(sockets)


def listen_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on `host`:`port` now (the port taken, a privileged
    port, a host that is not this machine's), or None. Binds a socket the way asyncio's server
    will (SO_REUSEADDR) and closes it: `serve` asks before it migrates, makes the demo
    instance or prints its credentials, rather than after, as uvicorn alone would."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve --host {host!r}: {exc.strerror}"
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def run_server(app: FastAPI, settings: Settings) -> None:
    """Serve `app` on `settings.host`:`settings.port` until SIGINT or SIGTERM, as `uvicorn.run`
    would; exits with uvicorn's status 3 if it could not start."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # wagate.access logs requests with the token redacted
        server_header=False,
    )
    server = _Server(config, app)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
