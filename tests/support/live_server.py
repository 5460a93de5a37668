"""The real wagate app under uvicorn in a thread, on 127.0.0.1 with a free port."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tests.support.uvicorn_thread import UvicornThread
from wagate.bootstrap import Runtime
from wagate.config import Settings
from wagate.http import create_app
from wagate.workers.webhook_sender import Resolver, resolve_host

T = TypeVar("T")


class LiveServer:
    """Start with `start()`, stop with `stop()`; `url` is the base URL clients use."""

    def __init__(self, settings: Settings, resolver: Resolver = resolve_host) -> None:
        # The port must be known before the app is built: it is part of the public URL.
        self._thread = UvicornThread(_Deferred(self))
        self.port = self._thread.port
        self.url = self._thread.url
        self.settings = settings.with_overrides(
            host="127.0.0.1", port=self.port, public_url=self.url
        )
        self.app = create_app(self.settings, resolver=resolver)

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._thread.stop()

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def call(self, action: Callable[[Runtime], Awaitable[T]], timeout_s: float = 30) -> T:
        """Run `action(runtime)` on the server's event loop and return its result."""

        async def run() -> T:
            return await action(self.runtime)

        return asyncio.run_coroutine_threadsafe(run(), self._thread.loop).result(timeout_s)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _Deferred:
    """An ASGI app that forwards to the server's app, built once the port is known."""

    def __init__(self, server: LiveServer) -> None:
        self._server = server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._server.app(scope, receive, send)
