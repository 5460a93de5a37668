"""Store transactions in a loop, for `costs.py --only store`: the queue statements the avatar
pipeline runs on SQLite, called on this thread inside their transactions (no server, no event
loop, no hop to a store thread), so that their thread CPU per job can be compared to the µs
between builds where an HTTP benchmark's noise hides it.

- the acknowledgements' INSERT, one transaction per batch of 32 jobs (`queues.insert_jobs`);
- the avatar worker's completion transaction (`queues.complete_jobs` with distinct bodies, then
  `queues.claim_jobs` for the next batch, which finds none), per batch of 64 and of 256 jobs.

The batch's jobs are inserted and claimed before each timed transaction, outside the timing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bulk import create_instances
from sqlalchemy import delete

from wagate.stores import migrate, queues
from wagate.stores._connect import create_engines
from wagate.stores.schema import avatar_jobs

INSTANCE_ID = 1101000001
_LEASE = timedelta(seconds=30)


def _body(chat_id: str) -> dict[str, Any]:
    # An avatarInfo body as the worker builds it: distinct per chat, as in P1.
    return {
        "typeWebhook": "avatarInfo",
        "instanceData": {
            "idInstance": INSTANCE_ID,
            "wid": "11001234567@c.us",
            "typeInstance": "whatsapp",
        },
        "timestamp": 1764590000,
        "avatarInfo": {"chatId": chat_id, "urlAvatar": "", "available": False},
    }


def measure(data_dir: Path, rounds: int) -> dict[str, float]:
    """Thread CPU in µs per job: "insert" (batches of 32), "complete_64", "complete_256"."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{data_dir / 'wagate.sqlite3'}"
    migrate(url)
    writer, reader = create_engines(url)
    try:
        [instance] = create_instances(url, 1, first_id=INSTANCE_ID)
        chat = iter(range(10**9))

        def chats(count: int) -> list[tuple[int, str]]:
            return [
                (instance.id, f"{11_000_000_000 + next(chat) % 1000}@c.us") for _ in range(count)
            ]

        def insert_batch(count: int) -> float:
            began = time.thread_time()
            with writer.begin() as conn:
                queues.insert_jobs(conn, chats(count), datetime.now(UTC), postgres=False)
            spent = time.thread_time() - began
            with writer.begin() as conn:  # the queue left as found, so claims see only their own
                conn.execute(delete(avatar_jobs))
            return spent

        def complete_batch(count: int) -> float:
            with writer.begin() as conn:
                queues.insert_jobs(conn, chats(count), datetime.now(UTC), postgres=False)
            with writer.begin() as conn:
                jobs = queues.claim_jobs(conn, 1, count, _LEASE, lock_rows=False)
            completions = [(job, _body(job.chat_id)) for job in jobs]
            began = time.thread_time()
            with writer.begin() as conn:
                queues.complete_jobs(conn, completions, postgres=False)
                left = queues.claim_jobs(conn, 1, count, _LEASE, lock_rows=False)
            spent = time.thread_time() - began
            if len(jobs) != count or left:
                raise SystemExit(f"claimed {len(jobs)} of {count} jobs, then {len(left)} more")
            return spent

        found: dict[str, float] = {}
        for name, run, size in (
            ("insert", insert_batch, 32),
            ("complete_64", complete_batch, 64),
            ("complete_256", complete_batch, 256),
        ):
            for _ in range(max(1, rounds // 10)):  # warm-up: statements compiled, pages cached
                run(size)
            count = max(1, rounds * 32 // size)
            found[name] = 1e6 * sum(run(size) for _ in range(count)) / (count * size)
        return found
    finally:
        writer.dispose()
        reader.dispose()
