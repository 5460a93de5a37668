"""ASGI middleware that checks what routing cannot, in SPEC.md's order, before any route runs.

1. The body is over the limit (413): read here, chunked or not, so no route ever sees it.
2. A malformed GREEN-API path: non-numeric idInstance, missing token (400).
3. An unknown method (404); a known one is rewritten to its canonical spelling so that
   routes match case-insensitively (`GetAvatarAsync` and `getavatarasync` are one route).
It also logs each request with the token redacted and feeds the request metrics, and serves the
routes of `direct` itself (instance methods, `/ping`), handing everything else to FastAPI.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wagate.core.errors import WagateError
from wagate.http import direct
from wagate.http.errors import wagate_error_response
from wagate.http.metrics import Metrics
from wagate.wire.envelope import error_envelope, redact_path
from wagate.wire.methods import BY_LOWER_NAME, PARTNER_METHODS

logger = logging.getLogger("wagate.access")

_INSTANCE_PATH = re.compile(r"^/wainstance([^/]*)(?:/([^/]*))?(/.*)?$", re.IGNORECASE)
_PARTNER_PATH = re.compile(r"^/partner/([^/]*)(/.*)?$", re.IGNORECASE)


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    """The client closed the connection before its request body was complete."""


# Logged and counted for a request whose client left before it was read (nginx's convention):
# no answer was sent, and nothing of it was done.
CLIENT_CLOSED_REQUEST = 499


class GreenApiGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder = {"status": 500}
        label = "other"

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        try:
            label, failure, endpoint = self._check_path(scope)
            if failure is None:
                body = await self._read_body(scope, receive)
                # Routes take it from here: Starlette's Request.body() would read it again,
                # chunk by chunk through the replay, at a cost a small request notices.
                scope[direct.BODY_SCOPE_KEY] = body
                replay = _Replay(body, receive)
                if endpoint is None:
                    await self.app(scope, replay, send_wrapper)
                else:
                    await self._serve(endpoint, scope, replay, send_wrapper)
            else:
                status, message = failure
                await self._answer(scope, receive, send_wrapper, status, message)
        except _BodyTooLarge:
            await self._answer(scope, receive, send_wrapper, 413, "Request body is too large")
        except _ClientGone:
            status_holder["status"] = CLIENT_CLOSED_REQUEST
        finally:
            elapsed = time.perf_counter() - started
            status = status_holder["status"]
            self.metrics.observe_request(label, status, elapsed)
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "%s %s %s %.1fms",
                    scope["method"],
                    redact_path(scope["path"]),
                    status,
                    elapsed * 1000,
                    extra={"action": "http_request", "method": label, "status": status},
                )

    def _check_path(
        self, scope: Scope
    ) -> tuple[str, tuple[int, str] | None, direct.Endpoint | None]:
        """Canonicalise the path in place; return the metrics label, an early answer if any,
        and the endpoint to call directly if the route is one of `direct`'s."""
        path: str = scope["path"]
        verb: str = scope["method"]
        match = _INSTANCE_PATH.match(path)
        if match:
            id_text, method, rest = match.group(1), match.group(2) or "", match.group(3) or ""
            if not (id_text.isascii() and id_text.isdigit()):
                # A malformed id is reported before anything else about the path.
                spec = BY_LOWER_NAME.get(method.lower())
                return (
                    (spec.name if spec else "other"),
                    (
                        400,
                        "Parameter idInstance not an integer",
                    ),
                    None,
                )
            spec = BY_LOWER_NAME.get(method.lower())
            if spec is None:
                return "other", (404, "Not Found"), None
            if rest in ("", "/"):
                return spec.name, (400, "Parameter apiTokenInstance not define"), None
            self._rewrite(scope, f"/waInstance{id_text}/{spec.name}{rest}")
            found = direct.find_instance_method(verb, spec.name, id_text, rest)
            if found is None:
                return spec.name, None, None
            endpoint, params = found
            scope["path_params"] = params
            return spec.name, None, endpoint
        match = _PARTNER_PATH.match(path)
        if match:
            name = PARTNER_METHODS.get(match.group(1).lower())
            if name is None:
                return "other", (404, "Not Found"), None
            self._rewrite(scope, f"/partner/{name}{match.group(2) or ''}")
            return f"partner.{name}", None, None
        return "other", None, direct.find_plain(verb, path)

    @staticmethod
    async def _serve(endpoint: direct.Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        """Call a direct route as FastAPI would, its errors answered as FastAPI's handlers do
        (anything unexpected goes on to the server-error handler)."""
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except WagateError as exc:
            response = wagate_error_response(request, exc)
        await response(scope, receive, send)

    @staticmethod
    def _rewrite(scope: Scope, path: str) -> None:
        if path != scope["path"]:
            scope["path"] = path
            scope["raw_path"] = path.encode()

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body_bytes:
                        raise _BodyTooLarge
                except ValueError:
                    pass
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # A body cut short is not a request: a prefix that parses (JSON sent with a
                # trailing newline, the newline lost) would be acted on, and the client, which
                # never saw an answer, would send it again.
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, send: Send, status: int, text: str) -> None:
        response = JSONResponse(error_envelope(status, scope["path"], text), status_code=status)
        await response(scope, receive, send)


class _Replay:
    """Hands the buffered body to the app once, then passes through (disconnects)."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive

    async def __call__(self) -> dict[str, Any]:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await self._receive())
