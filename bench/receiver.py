"""A minimal, fast webhook receiver for the benchmarks: a bare ASGI app under uvicorn (httptools,
uvloop), in its own process.

`POST <any path>` answers 200 with no body and records `time.time()` at which the whole request
had arrived, keyed by the notification's `avatarInfo.chatId` (or a counter when the body has
none). `GET /_count` answers `{"count", "first", "last"}`, `GET /_dump` the arrival times by
chatId, `POST /_reset` forgets everything. Usage: `receiver.py PORT`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import uvicorn

arrivals: dict[str, float] = {}
_EMPTY = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}


async def _answer(send: Any, payload: Any) -> None:
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    arrived = time.time()
    path = scope["path"]
    if scope["method"] == "GET" and path == "/_count":
        times = arrivals.values()
        await _answer(
            send,
            {
                "count": len(arrivals),
                "first": min(times, default=None),
                "last": max(times, default=None),
            },
        )
        return
    if scope["method"] == "GET" and path == "/_dump":
        await _answer(send, arrivals)
        return
    if path == "/_reset":
        arrivals.clear()
        await _answer(send, {"reset": True})
        return
    try:
        key = str(json.loads(b"".join(chunks))["avatarInfo"]["chatId"])
    except (ValueError, KeyError, TypeError):
        key = f"#{len(arrivals)}"
    # A duplicate (at-least-once retry) keeps its first arrival.
    arrivals.setdefault(key, arrived)
    await send(_EMPTY)
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="off",
    )
