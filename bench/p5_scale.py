"""P5 scale: receiveNotification latency and server memory with 10,000 instances and 1,000,000
queued notifications on SQLite.

Setup (not measured, but timed and reported): `wagate migrate` on a fresh data dir, then the
instances (with their push lanes and sandbox accounts, rows built by wagate's own row
conversion) by executemany, and the notifications by one INSERT ... SELECT over a recursive CTE,
spread round-robin so receipt ids interleave across instances (`bulk.py`). Then the server
starts on that database.

Latency: a separate process (`loadgen.py latency`) calls receiveNotification sequentially on
one keep-alive connection, each time on a random instance (every queue is non-empty, so each
call answers at once with the head). Baseline: the same client doing sequential GET /ping on
the same server, interleaved run by run. Memory: VmRSS after the runs and VmHWM (peak) from
/proc/<pid>/status; baseline: the same server started on an empty database, after the same
number of /ping calls.

Targets: receiveNotification p99 <= 10 ms; RSS <= 300 MB.

Context (no target): how fast the avatar worker drains getAvatarAsync jobs spread one per
instance over all the instances, against the same number of jobs over 10 instances. The jobs
are queued by bulk SQL while the server is stopped; the server then starts, drains them and is
stopped again; the rate is the jobs over the time from the first completion to the last (the
notifications' `created_at`, stamped by the server), so start-up and polling do not count.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from bulk import create_instances, fill_notifications, queue_avatar_jobs
from common import (
    Figure,
    Report,
    Server,
    arg_parser,
    drain_avatar_jobs,
    memory_kib,
    run_helper,
    sqlite_scalar,
    wagate_executable,
    work_dir,
)


def latency_run(server: Server, instances_file: Path, requests: int, ping: bool) -> float:
    args = ["latency", "--port", str(server.port), "--instances", str(instances_file)]
    args += ["--requests", str(requests)] + (["--ping"] if ping else [])
    result = run_helper("loadgen.py", *args)
    if not ping and set(result["statuses"]) != {"200"}:
        raise SystemExit(f"receiveNotification answered {result['statuses']}")
    return float(result["latency_ms"]["p99"])


def drain_rate(server: Server, instance_ids: list[int], jobs: int) -> float:
    """Queue `jobs` over `instance_ids` while the server is stopped, let it drain them, and
    return jobs per second between the first and the last completion."""
    before = sqlite_scalar(server, "SELECT coalesce(max(receipt_id), 0) FROM notifications")
    queue_avatar_jobs(server.database_url, instance_ids, jobs)
    server.start(timeout_s=300)
    try:
        drain_avatar_jobs(server, timeout_s=600)
    finally:
        server.stop()
    done = sqlite_scalar(server, f"SELECT count(*) FROM notifications WHERE receipt_id > {before}")
    if done != jobs:
        raise SystemExit(f"{jobs} avatar jobs queued, {done} notifications came of them")
    span_us = sqlite_scalar(
        server,
        "SELECT CAST((julianday(max(created_at)) - julianday(min(created_at))) * 86400e6 "
        f"AS INTEGER) FROM notifications WHERE receipt_id > {before}",
    )
    return jobs / max(span_us / 1e6, 1e-3)


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--notifications", type=int, default=1_000_000)
    args = parser.parse_args()
    smoke = args.smoke
    repeats = 1 if smoke else args.repeats
    n_instances = 200 if smoke else args.instances
    n_notes = 20_000 if smoke else args.notifications
    requests = 300 if smoke else 3000
    report = Report("P5", f"{n_instances:,} instances, {n_notes:,} queued notifications", smoke)
    with work_dir(args.keep) as tmp:
        # Baseline memory: the same server on an empty database, after the same /ping calls.
        empty = Server(tmp, name="empty").start()
        try:
            (tmp / "none.json").write_text(json.dumps([[0, ""]]))
            latency_run(empty, tmp / "none.json", requests * repeats, ping=True)
            empty_mem = memory_kib(empty.pid)
        finally:
            empty.stop()

        server = Server(tmp, name="scale")
        started = time.monotonic()
        subprocess.run(
            [wagate_executable(), "migrate", "--data-dir", str(server.data_dir)],
            env=server.env,
            check=True,
            capture_output=True,
        )
        instances = create_instances(server.database_url, n_instances)
        took_instances = time.monotonic() - started
        took_notes = fill_notifications(server.database_url, [i.id for i in instances], n_notes)
        size_mb = Path(server.database_url.removeprefix("sqlite:///")).stat().st_size / 2**20
        report.note(
            f"setup: {n_instances:,} instances in {took_instances:.1f} s, {n_notes:,} "
            f"notifications in {took_notes:.1f} s; database {size_mb:,.0f} MB"
        )
        instances_file = tmp / "instances.json"
        instances_file.write_text(json.dumps([[i.id, i.token] for i in instances]))
        began = time.monotonic()
        server.start(timeout_s=300)
        report.note(f"server ready {time.monotonic() - began:.1f} s after start")
        try:
            pings, polls, rss = [], [], []
            latency_run(server, instances_file, 200, ping=False)  # warm-up
            for _ in range(repeats):
                pings.append(latency_run(server, instances_file, requests, ping=True))
                polls.append(latency_run(server, instances_file, requests, ping=False))
                rss.append(memory_kib(server.pid)["VmRSS"] / 1024)
            mem = memory_kib(server.pid)
        finally:
            server.stop()
        ids = [i.id for i in instances]
        spread, few = [], []
        for _ in range(repeats):
            spread.append(drain_rate(server, ids, len(ids)))
            few.append(drain_rate(server, ids[:10], len(ids)))
    report.add(
        Figure(
            "P5.receive_p99",
            f"receiveNotification p99, random instance, sequential ({requests} calls/run)",
            "ms",
            polls,
            "GET /ping p99 ms",
            pings,
            "value",
            "<=",
            10,
        )
    )
    report.add(
        Figure(
            "P5.rss",
            "server RSS (VmRSS) after each run",
            "MB",
            rss,
            "RSS MB, same server on an empty database",
            [empty_mem["VmRSS"] / 1024] * len(rss),
            "value",
            "<=",
            300,
        )
    )
    report.add(
        Figure(
            "P5.hwm",
            "server peak RSS (VmHWM)",
            "MB",
            [mem["VmHWM"] / 1024],
            "peak MB, empty database",
            [empty_mem["VmHWM"] / 1024],
            "value",
            "<=",
            300,
        )
    )
    report.add(
        Figure(
            "P5.jobs_spread",
            f"avatar jobs drained, one per instance over {n_instances:,} instances",
            "jobs/s",
            spread,
            "the same number of jobs over 10 instances, jobs/s",
            few,
        )
    )
    report.finish(args.json)


if __name__ == "__main__":
    main()
