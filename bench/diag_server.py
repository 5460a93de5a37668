"""`wagate` with three diagnostic hooks, for `costs.py` only: never for the figures of the
results table, which measure the server exactly as shipped.

- `DIAG_WORKER_GATE=PATH`: the avatar worker starts only once PATH exists, so acknowledgements
  can be measured alone and the backlog they leave drained on its own.
- `DIAG_OPSTATS=PATH`: every store operation (one transaction in the store thread) adds its
  thread CPU time and wall time to a total per operation; the totals are written to PATH as
  JSON on SIGUSR1 and at exit.
- `DIAG_STAGES=PATH`: when each avatarInfo notification was queued (by the avatar worker's
  completion transaction, just before its COMMIT) and when its first push began, by receipt
  id, with the chatId it answers; written to PATH as JSON on SIGUSR1 and at exit.

Run as `python diag_server.py serve ...`: the same arguments as `wagate`.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wagate.cli import main
from wagate.stores import _threads, queues
from wagate.workers import avatar_jobs, delivery

# What SIGUSR1 (and exit) writes: one function per enabled hook.
_DUMPS: list[Callable[[], None]] = []


def write_json(path: Path, data: object) -> None:
    # Renamed into place, so that a reader never sees a half-written file.
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data))
    partial.replace(path)


def dump_all(*_: object) -> None:
    for dump in _DUMPS:
        dump()


def hold_back_the_worker(gate: Path) -> None:
    run = avatar_jobs.AvatarJobWorker.run

    async def gated_run(self: avatar_jobs.AvatarJobWorker) -> None:
        while not gate.exists():
            await asyncio.sleep(0.05)
        await run(self)

    avatar_jobs.AvatarJobWorker.run = gated_run  # type: ignore[method-assign]


def add_up_store_operations(path: Path) -> None:
    # name -> [operations, thread CPU seconds, wall seconds]
    totals: defaultdict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    call_once = _threads.SqlRunner._call_once

    def timed(self: _threads.SqlRunner, fn: Any) -> Any:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return call_once(self, fn)
        finally:
            total = totals[getattr(fn, "__qualname__", repr(fn))]
            total[0] += 1
            total[1] += time.thread_time() - cpu
            total[2] += time.perf_counter() - wall

    _threads.SqlRunner._call_once = timed  # type: ignore[method-assign]
    _DUMPS.append(lambda: write_json(path, dict(totals)))


def time_stages(path: Path) -> None:
    queued: dict[int, tuple[str, float]] = {}  # receipt id -> (chatId, when)
    pushed: dict[int, float] = {}  # receipt id -> when its first push began
    complete_jobs = queues.complete_jobs
    deliver_one = delivery.PushDispatcher._deliver_one

    def timed_completion(conn: Any, completions: Any, *, postgres: bool) -> Any:
        done = complete_jobs(conn, completions, postgres=postgres)
        now = time.time()
        for (_, body), notification in zip(completions, done, strict=True):
            if notification is not None:
                queued[notification.receipt_id] = (str(body["avatarInfo"]["chatId"]), now)
        return done

    async def timed_push(self: delivery.PushDispatcher, instance: Any, notification: Any) -> bool:
        pushed.setdefault(notification.receipt_id, time.time())
        return await deliver_one(self, instance, notification)

    queues.complete_jobs = timed_completion
    delivery.PushDispatcher._deliver_one = timed_push  # type: ignore[method-assign]
    _DUMPS.append(lambda: write_json(path, {"queued": queued, "pushed": pushed}))


if __name__ == "__main__":
    if os.environ.get("DIAG_WORKER_GATE"):
        hold_back_the_worker(Path(os.environ["DIAG_WORKER_GATE"]))
    if os.environ.get("DIAG_OPSTATS"):
        add_up_store_operations(Path(os.environ["DIAG_OPSTATS"]))
    if os.environ.get("DIAG_STAGES"):
        time_stages(Path(os.environ["DIAG_STAGES"]))
    signal.signal(signal.SIGUSR1, dump_all)
    atexit.register(dump_all)
    sys.argv[0] = "wagate"
    sys.exit(main())
