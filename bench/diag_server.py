"""`wagate` with two diagnostic hooks, for `costs.py` only: never for the figures of the
results table, which measure the server exactly as shipped.

- `DIAG_WORKER_GATE=PATH`: the avatar worker starts only once PATH exists, so acknowledgements
  can be measured alone and the backlog they leave drained on its own.
- `DIAG_OPSTATS=PATH`: every store operation (one transaction in the store thread) adds its
  thread CPU time and wall time to a total per operation; the totals are written to PATH as
  JSON on SIGUSR1 and at exit.

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
from pathlib import Path
from typing import Any

from wagate.cli import main
from wagate.stores import _threads
from wagate.workers import avatar_jobs


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

    def dump(*_: object) -> None:
        # Renamed into place, so that a reader never sees a half-written file.
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(dict(totals)))
        partial.replace(path)

    _threads.SqlRunner._call_once = timed  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, dump)
    atexit.register(dump)


if __name__ == "__main__":
    if os.environ.get("DIAG_WORKER_GATE"):
        hold_back_the_worker(Path(os.environ["DIAG_WORKER_GATE"]))
    if os.environ.get("DIAG_OPSTATS"):
        add_up_store_operations(Path(os.environ["DIAG_OPSTATS"]))
    sys.argv[0] = "wagate"
    sys.exit(main())
