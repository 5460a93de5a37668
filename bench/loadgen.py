"""Load-generating helper processes for the benchmarks: never inside the server process.

Each mode talks to the server over keep-alive connections with `common.HttpConnection` (a few
dozen lines of asyncio on uvloop, so the client costs far less than the server) and prints one
JSON object on its last line of output.

  cycles   --port P --instance ID:TOKEN --seconds S [--ping]
           receive+delete cycles (GET receiveNotification, DELETE deleteNotification) on one
           connection; with --ping the same loop does GET /ping + POST /ping instead (baseline).
  waiter   --port P --instance ID:TOKEN --db PATH --samples N --seconds S
           long-polls receiveNotification?receiveTimeout=60; for each answer it records when the
           poll was sent and answered and, from the SQLite file, when the notification was
           created (read after the answer, outside the timed window), then deletes it.
  openloop --port P --instances FILE --rate R --count N --out FILE
           sends getAvatarAsync at a fixed rate, open loop (send times do not wait for answers),
           to instances round-robin, each request with its own chatId; records intended send
           times by chatId in FILE.
  latency  --port P --instances FILE --requests N [--ping]
           sequential receiveNotification calls, each on a random instance; latency of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop  # uvicorn[standard], a wagate dependency, brings it
from common import HttpConnection, percentile


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _instance(text: str) -> tuple[int, str]:
    number, _, token = text.partition(":")
    return int(number), token


def _summary(values_ms: list[float]) -> dict[str, float]:
    return {f"p{p}": percentile(values_ms, p) for p in (50, 90, 99)} | {
        "max": max(values_ms, default=float("nan"))
    }


async def cycles(args: argparse.Namespace) -> dict[str, Any]:
    number, token = _instance(args.instance)
    conn = await HttpConnection(args.port).connect()
    receive = f"/waInstance{number}/receiveNotification/{token}"
    delete = f"/waInstance{number}/deleteNotification/{token}/"
    times: list[float] = []
    empty = 0
    cpu0, start = _own_cpu(), time.perf_counter()
    deadline = start + args.seconds
    while (now := time.perf_counter()) < deadline:
        if args.ping:
            await conn.request("GET", "/ping")
            await conn.request("POST", "/ping", b"{}")
        else:
            status, body = await conn.request("GET", receive)
            note = json.loads(body)
            if status != 200 or note is None:
                empty += 1
                continue
            status, body = await conn.request("DELETE", delete + str(note["receiptId"]))
            if status != 200 or json.loads(body) != {"result": True}:
                raise SystemExit(f"deleteNotification answered {status} {body!r}")
        times.append((time.perf_counter() - now) * 1000)
    elapsed = time.perf_counter() - start
    conn.close()
    return {
        "cycles": len(times),
        "seconds": elapsed,
        "rate": len(times) / elapsed,
        "empty": empty,
        "cycle_ms": _summary(times),
        "cpu_s": _own_cpu() - cpu0,
    }


def _created_at(db: str, receipt_id: int) -> float | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute(
            "SELECT created_at FROM notifications WHERE receipt_id = ?", (receipt_id,)
        ).fetchone()
    if row is None:
        return None
    return datetime.fromisoformat(row[0]).replace(tzinfo=UTC).timestamp()


async def waiter(args: argparse.Namespace) -> dict[str, Any]:
    number, token = _instance(args.instance)
    conn = await HttpConnection(args.port).connect()
    receive = f"/waInstance{number}/receiveNotification/{token}?receiveTimeout=60"
    delete = f"/waInstance{number}/deleteNotification/{token}/"
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.seconds
    print(json.dumps({"ready": True}), flush=True)
    while len(samples) < args.samples and time.monotonic() < deadline:
        sent = time.time()
        status, body = await conn.request("GET", receive)
        answered = time.time()
        note = json.loads(body) if status == 200 else None
        if note is None:
            continue
        receipt_id = int(note["receiptId"])
        created = _created_at(args.db, receipt_id)
        samples.append(
            {
                "receiptId": receipt_id,
                "chatId": note["body"].get("avatarInfo", {}).get("chatId"),
                "sent": sent,
                "answered": answered,
                "created": created,
            }
        )
        await conn.request("DELETE", delete + str(receipt_id))
    conn.close()
    return {"samples": samples}


async def openloop(args: argparse.Namespace) -> dict[str, Any]:
    instances = [tuple(pair) for pair in json.loads(Path(args.instances).read_text())]
    idle = [await HttpConnection(args.port).connect() for _ in range(args.connections)]
    intended: dict[str, float] = {}
    acks: list[float] = []
    statuses: dict[int, int] = {}
    lag: list[float] = []

    async def one(i: int, at: float) -> None:
        number, token = instances[i % len(instances)]
        chat = f"{args.first_chat + i}@c.us"
        conn = idle.pop() if idle else await HttpConnection(args.port).connect()
        sent = time.time()
        status, _ = await conn.request(
            "POST",
            f"/waInstance{number}/getAvatarAsync/{token}",
            json.dumps({"chatId": chat}).encode(),
        )
        acks.append((time.time() - at) * 1000)
        idle.append(conn)
        statuses[status] = statuses.get(status, 0) + 1
        intended[chat] = at
        lag.append((sent - at) * 1000)

    cpu0 = _own_cpu()
    start = time.time() + 0.1
    tasks = []
    for i in range(args.count):
        at = start + i / args.rate
        delay = at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, at)))
    await asyncio.gather(*tasks)
    elapsed = time.time() - start
    for conn in idle:
        conn.close()
    Path(args.out).write_text(json.dumps(intended))
    return {
        "sent": args.count,
        "seconds": elapsed,
        "statuses": statuses,
        "ack_ms": _summary(acks),
        "send_lag_ms": _summary(lag),
        "cpu_s": _own_cpu() - cpu0,
    }


async def latency(args: argparse.Namespace) -> dict[str, Any]:
    instances = [tuple(pair) for pair in json.loads(Path(args.instances).read_text())]
    conn = await HttpConnection(args.port).connect()
    rng = random.Random(1)
    times: list[float] = []
    statuses: dict[int, int] = {}
    for _ in range(args.requests):
        number, token = rng.choice(instances)
        path = "/ping" if args.ping else f"/waInstance{number}/receiveNotification/{token}"
        started = time.perf_counter()
        status, _ = await conn.request("GET", path)
        times.append((time.perf_counter() - started) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
    conn.close()
    return {"requests": len(times), "statuses": statuses, "latency_ms": _summary(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["cycles", "waiter", "openloop", "latency"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance", default="")
    parser.add_argument("--instances", default="")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--ping", action="store_true")
    parser.add_argument("--db", default="")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--first-chat", type=int, default=11_000_000_000)
    parser.add_argument("--out", default="")
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    mode = {"cycles": cycles, "waiter": waiter, "openloop": openloop, "latency": latency}
    result = uvloop.run(mode[args.mode](args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
