"""Route costs in-process, for `costs.py --only inproc`: the app `wagate serve` runs, its lifespan
started and its ASGI callable called directly (no HTTP server, no sockets), logging configured
as `serve` configures it (to a file here), on SQLite, with the process's threads on one CPU as
`serve` keeps them. What a route costs without the HTTP server's share, and without its noise:

- `POST /ping` and getAvatarAsync acknowledgements (the avatar worker held back), each from 32
  coroutines at once as wrk's 32 connections would send them;
- an avatar job, while the worker drains the backlog those acknowledgements left;
- a receiveNotification + deleteNotification cycle, one at a time (P4's client), against two
  `/ping`s one at a time;
- a pushed notification: queues filled over 100 instances, then their webhookUrl set to
  `receiver.py` (in its own process, off this CPU) and the lanes left to deliver them all (the
  webhook sockets are real, so the kernel's loopback send is in the figure).

Every figure is CPU of the whole process (the event loop and the store thread) per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from bulk import fill_notifications

from wagate.config import Settings
from wagate.core.model import Instance
from wagate.http import create_app
from wagate.log_output import server_log_output
from wagate.workers import avatar_jobs

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
CONCURRENCY = 32


class HeldWorker:
    """Holds every avatar worker of this process back until `release()`."""

    def __init__(self) -> None:
        self._released = asyncio.Event()
        self._run: Callable[[avatar_jobs.AvatarJobWorker], Coroutine[Any, Any, None]]
        self._run = avatar_jobs.AvatarJobWorker.run

    def __enter__(self) -> HeldWorker:
        run, released = self._run, self._released

        async def held_run(worker: avatar_jobs.AvatarJobWorker) -> None:
            await released.wait()
            await run(worker)

        avatar_jobs.AvatarJobWorker.run = held_run  # type: ignore[method-assign, assignment]
        return self

    def __exit__(self, *_: object) -> None:
        avatar_jobs.AvatarJobWorker.run = self._run  # type: ignore[method-assign, assignment]

    def release(self) -> None:
        self._released.set()


@asynccontextmanager
async def running_app(data_dir: Path, log_path: Path) -> AsyncIterator[Any]:
    """The app with its lifespan started (and ended on exit), logging as `serve` does."""
    stream = log_path.open("a")
    handler = server_log_output(stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    app = create_app(Settings(data_dir=data_dir, rate_limits_enabled=False))
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    try:
        await inbox.put({"type": "lifespan.startup"})
        started = await outbox.get()
        if started["type"] != "lifespan.startup.complete":
            raise SystemExit(f"the app did not start: {started}")
        yield app
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await lifespan
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
        stream.close()


async def call(app: Asgi, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request through the ASGI callable; its status and body."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status: list[int] = []
    answer: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            answer.append(message.get("body", b""))

    headers = [(b"host", b"127.0.0.1")]
    if body:
        headers += [(b"content-type", b"application/json")]
        headers += [(b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    await app(scope, receive, send)
    return status[0], b"".join(answer)


async def concurrent_cpu_us(app: Asgi, method: str, requests: list[tuple[str, bytes]]) -> float:
    """Process CPU per request, sending `requests` from `CONCURRENCY` coroutines at once."""

    async def sender(first: int) -> None:
        for path, body in requests[first::CONCURRENCY]:
            status, answer = await call(app, method, path, body)
            if status != 200:
                raise SystemExit(f"{method} {path} answered {status}: {answer[:200]!r}")

    began = time.process_time()
    await asyncio.gather(*(sender(first) for first in range(CONCURRENCY)))
    return 1e6 * (time.process_time() - began) / len(requests)


PUSH_INSTANCES = 100


async def measure(
    tmp: Path,
    requests: int,
    cycles: int,
    pushes: int,
    webhook_url: str,
    delivered: Callable[[], int],
) -> dict[str, float]:
    """One round of every figure, on a fresh data dir under `tmp`; pushes go to `webhook_url`,
    whose receiver says how many it got so far (`delivered`, a blocking call)."""
    data_dir = tmp / f"inproc-{time.monotonic_ns()}"
    with HeldWorker() as worker:
        async with running_app(data_dir, tmp / "inproc.log") as app:
            runtime = app.state.runtime
            instance: Instance = await runtime.instances.create()
            token = instance.api_token
            pings = [("/ping", b"{}")] * requests
            # Distinct chats, none in the sandbox world, as in P1.
            chats = [
                json.dumps({"chatId": f"{11_000_000_000 + n % 1000}@c.us"}).encode()
                for n in range(requests)
            ]
            acks = [(f"/waInstance{instance.id}/getAvatarAsync/{token}", chat) for chat in chats]
            await concurrent_cpu_us(app, "POST", pings[: requests // 10])  # warm-up
            ping_us = await concurrent_cpu_us(app, "POST", pings)
            ack_us = await concurrent_cpu_us(app, "POST", acks)
            began = time.process_time()
            worker.release()
            while await runtime.store.count_avatar_jobs() > 0:
                await asyncio.sleep(0.005)
            job_us = 1e6 * (time.process_time() - began) / requests
            ping_pair_us = await _sequential_cpu_us(cycles, lambda: _ping_pair(app))
            polled: Instance = await runtime.instances.create()
            fill_notifications(runtime.settings.effective_database_url, [polled.id], cycles)
            cycle_us = await _sequential_cpu_us(cycles, lambda: _receive_and_delete(app, polled))
            push_us = await _push_cpu_us(runtime, pushes, webhook_url, delivered)
    return {
        "ping": ping_us,
        "ack": ack_us,
        "job": job_us,
        "ping_pair": ping_pair_us,
        "cycle": cycle_us,
        "push": push_us,
    }


async def _push_cpu_us(
    runtime: Any, pushes: int, webhook_url: str, delivered: Callable[[], int]
) -> float:
    instances: list[Instance] = [await runtime.instances.create() for _ in range(PUSH_INSTANCES)]
    fill_notifications(runtime.settings.effective_database_url, [i.id for i in instances], pushes)
    expected = await asyncio.to_thread(delivered) + pushes
    began = time.process_time()
    for instance in instances:
        settings = replace(instance.settings, webhook_url=webhook_url)
        await runtime.settings_service.change(instance, settings)
    deadline = time.monotonic() + 300
    while await asyncio.to_thread(delivered) < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"pushes not all delivered to {webhook_url} within 300 s")
        await asyncio.sleep(0.05)
    return 1e6 * (time.process_time() - began) / pushes


async def _sequential_cpu_us(count: int, one: Callable[[], Awaitable[None]]) -> float:
    began = time.process_time()
    for _ in range(count):
        await one()
    return 1e6 * (time.process_time() - began) / count


async def _ping_pair(app: Asgi) -> None:
    await call(app, "GET", "/ping")
    await call(app, "POST", "/ping", b"{}")


async def _receive_and_delete(app: Asgi, instance: Instance) -> None:
    base = f"/waInstance{instance.id}"
    status, body = await call(app, "GET", f"{base}/receiveNotification/{instance.api_token}")
    note = json.loads(body)
    if status != 200 or note is None:
        raise SystemExit(f"receiveNotification answered {status} {body[:200]!r}")
    path = f"{base}/deleteNotification/{instance.api_token}/{note['receiptId']}"
    status, body = await call(app, "DELETE", path)
    if status != 200 or json.loads(body) != {"result": True}:
        raise SystemExit(f"deleteNotification answered {status} {body[:200]!r}")
