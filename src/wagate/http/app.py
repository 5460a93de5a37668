"""`create_app(settings)`: the ASGI application, with the runtime and workers in its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from wagate import __version__
from wagate.bootstrap import open_runtime, run_workers
from wagate.config import Settings
from wagate.http.errors import install_error_handlers
from wagate.http.guard import GreenApiGuard
from wagate.http.metrics import Metrics
from wagate.http.routes import account, admin, avatars, notifications, ops, partner
from wagate.workers.webhook_sender import Resolver, resolve_host

DESCRIPTION = """GREEN-API-compatible WhatsApp gateway. Every GREEN-API route has the shape
`/waInstance{idInstance}/{method}/{apiTokenInstance}`; method names match case-insensitively.
Errors use the envelope `{statusCode, timestamp, path, message}` with the token redacted."""


def create_app(settings: Settings, *, resolver: Resolver = resolve_host) -> FastAPI:
    """Build the app. Nothing is opened until its lifespan starts (under uvicorn or a test).

    `resolver` resolves webhook hosts; tests pass a fake DNS.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings, resolver=resolver) as runtime:
            runtime.public_url = settings.effective_public_url
            # The CLI prints apiUrl from here, so both agree on how clients reach this server.
            await runtime.store.set_meta("public_url", runtime.public_url)
            app.state.runtime = runtime
            async with run_workers(runtime, events=app.state.metrics):
                yield

    app = FastAPI(
        title="wagate",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.metrics = Metrics()
    install_error_handlers(app)
    for module in (avatars, notifications, account, partner, admin, ops):
        app.include_router(module.router)
    app.add_middleware(
        GreenApiGuard,
        max_body_bytes=settings.max_body_bytes,
        metrics=app.state.metrics,
    )
    return app
