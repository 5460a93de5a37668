"""The real app under uvicorn in a thread, on a socket bound to 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import uvicorn

from wagate.bootstrap import Runtime
from wagate.config import Settings
from wagate.http import create_app

T = TypeVar("T")


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)
        self.ready.set()

    def install_signal_handlers(self) -> None:  # the test process owns its signals
        pass


class LiveServer:
    """Start with `start()`, stop with `stop()`; `url` is the base URL clients use."""

    def __init__(self, settings: Settings) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings.with_overrides(
            host="127.0.0.1", port=self.port, public_url=self.url
        )
        self.app = create_app(self.settings)
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5
        )
        self._server = _Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self) -> LiveServer:
        self._thread.start()
        if not self._server.ready.wait(30) or not self._server.started:
            raise RuntimeError("the server did not start")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._socket.close()

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def call(self, action: Callable[[Runtime], Awaitable[T]], timeout_s: float = 30) -> T:
        """Run `action(runtime)` on the server's event loop and return its result."""
        assert self._server.loop is not None

        async def run() -> T:
            return await action(self.runtime)

        future = asyncio.run_coroutine_threadsafe(run(), self._server.loop)
        return future.result(timeout_s)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
