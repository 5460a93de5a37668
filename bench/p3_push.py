"""P3 push throughput: notifications delivered per second to a local webhook receiver, from one
instance and spread over 100 instances.

Setup (not measured): the instances are created through the partner API while their webhookUrl
is unset, then the backlog is inserted straight into the notifications table by one bulk SQL
statement (`bulk.fill_notifications`), rows exactly like the ones the avatar worker queues.
Going around the HTTP edge and the avatar worker isolates the push path: only claiming lanes,
reading heads, signing, POSTing and deleting is timed. Then webhookUrl is set with setSettings
(8 calls at a time) and the clock runs from the first setSettings sent to the arrival of the
last notification at the receiver (`receiver.py`, its own process, deduplicating by chatId).

Baseline (context): the receiver's own rate when wrk POSTs the same kind of body straight at it
with as many connections as wagate may use (1 for one instance: one request in flight per
instance; 64 for 100 instances: WAGATE_WEBHOOK_CONCURRENCY). Targets: >= 2,000/s for one
instance, >= 5,000/s over 100 instances.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bulk import fill_notifications
from common import (
    Figure,
    Instance,
    Receiver,
    Report,
    Server,
    WrkSettings,
    arg_parser,
    cpu_seconds,
    post_script,
    require_wrk,
    run_wrk,
    work_dir,
)

_BODY = {
    "typeWebhook": "avatarInfo",
    "instanceData": {"idInstance": 1101000001, "wid": "11001234567@c.us", "typeInstance": "x"},
    "timestamp": 1586700802,
    "avatarInfo": {"chatId": "11001234568@c.us", "urlAvatar": "", "available": False},
}


def set_webhook(server: Server, instances: list[Instance], url: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: server.call(i, "setSettings", "POST", {"webhookUrl": url}), instances
            )
        )


def push_run(
    server: Server, receiver: Receiver, instances: list[Instance], total: int
) -> dict[str, float]:
    set_webhook(server, instances, "")
    fill_notifications(server.database_url, [i.id for i in instances], total)
    receiver.reset()
    before = cpu_seconds(server.pid)
    started = time.time()
    set_webhook(server, instances, receiver.url + "/hook")
    done = receiver.wait_for(total, timeout_s=60 + total / 100)
    seen = receiver.count()
    elapsed = (seen["last"] or started) - started
    return {
        "rate": seen["count"] / elapsed if elapsed > 0 else 0.0,
        "delivered": seen["count"],
        "complete": float(done),
        "seconds": elapsed,
        "server_cpu": (cpu_seconds(server.pid) - before) / max(elapsed, 1e-9),
    }


def scenario(
    report: Report,
    key: str,
    count: int,
    total: int,
    repeats: int,
    target: float,
    smoke: bool,
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    server = Server(tmp_path, name=key).start()
    try:
        instances = [server.create_instance() for _ in range(count)]
        script = post_script(tmp_path / "hook.lua", _BODY)
        connections = min(count, 64)
        wrk = WrkSettings(1, connections, 1 if smoke else 3)
        runs, baselines = [], []
        for i in range(repeats):
            receiver.reset()
            baselines.append(run_wrk(receiver.url + "/hook", wrk, script).ok_rps)
            runs.append(push_run(server, receiver, instances, total))
            report.note(
                f"{key} run {i + 1}: {runs[-1]['delivered']:,.0f}/{total:,} delivered in "
                f"{runs[-1]['seconds']:.2f} s = {runs[-1]['rate']:,.0f}/s (server CPU "
                f"{runs[-1]['server_cpu']:.0%}); receiver alone under wrk -c{connections}: "
                f"{baselines[-1]:,.0f}/s"
            )
    finally:
        server.stop()
        receiver.stop()
    report.add(
        Figure(
            f"P3.{key}",
            f"push throughput, {total:,} notifications over {count} instance(s)",
            "notifications/s",
            [r["rate"] for r in runs],
            f"receiver alone under wrk -c{connections}, req/s",
            baselines,
            "value",
            ">=",
            target,
        )
    )


def main() -> None:
    args = arg_parser(__doc__).parse_args()
    require_wrk()
    smoke = args.smoke
    repeats = 1 if smoke else args.repeats
    report = Report("P3", "webhook push throughput", smoke)
    with work_dir(args.keep) as tmp:
        scenario(report, "one_instance", 1, 500 if smoke else 20_000, repeats, 2000, smoke, tmp)
        count = 5 if smoke else 100
        total = 1_000 if smoke else 20_000
        scenario(report, "many_instances", count, total, repeats, 5000, smoke, tmp)
    report.finish(args.json)


if __name__ == "__main__":
    main()
