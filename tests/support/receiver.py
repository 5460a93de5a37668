"""A real webhook receiver on 127.0.0.1 whose answers a test scripts, and which records every
request it gets so the test can await them."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tests.support.uvicorn_thread import UvicornThread


@dataclass(frozen=True)
class Answer:
    """How to answer one request: a status, optional headers, and a delay before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int
    client: tuple[str, int] | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """`plan` answers requests in turn; when it runs out, requests get `default`."""

    def __init__(self, port: int = 0, default: Answer | None = None) -> None:
        self.plan: deque[Answer] = deque()
        self.default = default or Answer()
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._changed = threading.Condition()
        self._thread = UvicornThread(self._app, port)
        self.port = self._thread.port
        self.url = self._thread.url + "/hook"

    async def _app(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        with self._changed:
            answer = self.plan.popleft() if self.plan else self.default
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        with self._changed:
            self.in_flight -= 1
            self.requests.append(
                Received(
                    {k.lower(): v for k, v in request.headers.items()},
                    body,
                    answer.status,
                    tuple(scope["client"]) if scope.get("client") else None,
                )
            )
            self._changed.notify_all()
        await Response(status_code=answer.status, headers=answer.headers)(scope, receive, send)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._thread.stop()

    @property
    def delivered(self) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        with self._changed:
            return [r for r in self.requests if 200 <= r.answered < 300]

    def wait_for(
        self, count: int, timeout_s: float = 30, *, delivered: bool = True
    ) -> list[Received]:
        """Block until `count` requests (2xx-answered ones by default) arrived, or fail."""

        def seen() -> list[Received]:
            if delivered:
                return [r for r in self.requests if 200 <= r.answered < 300]
            return list(self.requests)

        with self._changed:
            if not self._changed.wait_for(lambda: len(seen()) >= count, timeout_s):
                raise AssertionError(
                    f"waited {timeout_s} s for {count} requests, got {len(seen())}: "
                    f"{[r.answered for r in self.requests]}"
                )
            return seen()

    def wait_until(
        self, predicate: Callable[[list[Received]], bool], timeout_s: float = 30
    ) -> None:
        """Block until `predicate(requests answered 2xx)` holds, or fail after the timeout."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: predicate([r for r in self.requests if 200 <= r.answered < 300]),
                timeout_s,
            ):
                raise AssertionError(f"waited {timeout_s} s; got {len(self.requests)} requests")
