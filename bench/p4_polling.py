"""P4 polling: receive+delete cycles per second on one instance, and long-poll wake latency.

Cycles: a client in its own process (`loadgen.py cycles`) runs GET receiveNotification then
DELETE deleteNotification/{receiptId} on one keep-alive connection, against a queue pre-filled
with avatarInfo notifications by a bulk SQL insert (setup, not measured). Polling is inherently
sequential per instance (the head stays the same until deleted), so one connection is the
realistic client. Baseline: the same client loop doing GET /ping + POST /ping (two requests per
cycle through the same middleware, no database), interleaved with the measured runs.

Wake latency: a client (`loadgen.py waiter`, its own process) waits in
receiveNotification?receiveTimeout=60 on a second instance; this script, another process,
requests getAvatarAsync for that instance every 80-150 ms. The server's avatar worker then
queues the notification and must end the long poll. What is honestly measurable from outside:
the notification row's `created_at` (stamped by the store just before its INSERT commits, read
from SQLite after the answer) to the moment the client has the answer. That includes the commit
itself, so it slightly overstates the pure wake-up. A sample counts only if the poll was sent at
least 20 ms before the notification was created (so it really was waiting). Also reported:
getAvatarAsync sent -> long poll answered (includes the avatar lookup). Baseline (context):
sequential GET /ping latency from the same kind of client.

Targets: >= 1,500 cycles/s; wake p99 <= 10 ms.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from bulk import fill_notifications
from common import (
    Figure,
    Instance,
    Report,
    Server,
    arg_parser,
    cpu_seconds,
    http_json,
    percentile,
    run_helper,
    start_helper,
    work_dir,
)


def cycle_run(server: Server, instance: Instance, seconds: float, ping: bool) -> dict[str, Any]:
    args = ["cycles", "--port", str(server.port), "--instance", f"{instance.id}:{instance.token}"]
    args += ["--seconds", str(seconds)] + (["--ping"] if ping else [])
    before = cpu_seconds(server.pid)
    result = run_helper("loadgen.py", *args)
    result["server_cpu"] = (cpu_seconds(server.pid) - before) / result["seconds"]
    return result


def wake_samples(server: Server, instance: Instance, samples: int) -> list[dict[str, float]]:
    waiter = start_helper(
        "loadgen.py",
        "waiter",
        "--port",
        str(server.port),
        "--instance",
        f"{instance.id}:{instance.token}",
        "--db",
        server.database_url.removeprefix("sqlite:///"),
        "--samples",
        str(samples),
        "--seconds",
        str(samples * 0.5 + 10),
    )
    assert waiter.stdout is not None
    waiter.stdout.readline()  # {"ready": true}
    triggered: dict[str, float] = {}
    url = server.url + instance.path("getAvatarAsync")
    rng = random.Random(4)
    chat = 11_500_000_000
    while waiter.poll() is None:
        time.sleep(rng.uniform(0.08, 0.15))
        chat += 1
        triggered[f"{chat}@c.us"] = time.time()
        status, _ = http_json("POST", url, {"chatId": f"{chat}@c.us"})
        assert status == 200, status
    result = json.loads(waiter.stdout.read().strip().splitlines()[-1])
    out: list[dict[str, float]] = []
    for sample in result["samples"]:
        if sample["created"] is None or sample["created"] - sample["sent"] < 0.02:
            continue  # the poll was not (surely) waiting when the notification arrived
        out.append(
            {
                "wake_ms": (sample["answered"] - sample["created"]) * 1000,
                "e2e_ms": (sample["answered"] - triggered[sample["chatId"]]) * 1000,
            }
        )
    return out


def main() -> None:
    args = arg_parser(__doc__).parse_args()
    smoke = args.smoke
    repeats = 1 if smoke else args.repeats
    seconds = 1.0 if smoke else 5.0
    report = Report("P4", "polling: receive+delete cycles and long-poll wake latency", smoke)
    with work_dir(args.keep) as tmp:
        server = Server(tmp).start()
        try:
            queue, waiting = server.create_instance(), server.create_instance()
            filled = 5_000 if smoke else 200_000
            took = fill_notifications(server.database_url, [queue.id], filled)
            report.note(f"pre-filled {filled:,} notifications by bulk SQL in {took:.1f} s")
            if not smoke:  # warm-up
                cycle_run(server, queue, 1, ping=True)
                cycle_run(server, queue, 1, ping=False)
            pings, cycles = [], []
            for i in range(repeats):
                pings.append(cycle_run(server, queue, seconds, ping=True))
                cycles.append(cycle_run(server, queue, seconds, ping=False))
                report.note(
                    f"run {i + 1}: ping cycles {pings[-1]['rate']:,.0f}/s (server CPU "
                    f"{pings[-1]['server_cpu']:.0%}, client {pings[-1]['cpu_s'] / seconds:.0%}); "
                    f"receive+delete {cycles[-1]['rate']:,.0f}/s (server CPU "
                    f"{cycles[-1]['server_cpu']:.0%}, client "
                    f"{cycles[-1]['cpu_s'] / seconds:.0%}, "
                    f"cycle p99 {cycles[-1]['cycle_ms']['p99']:.2f} ms, "
                    f"empty answers {cycles[-1]['empty']})"
                )
            n = 10 if smoke else 150
            wake_runs = [wake_samples(server, waiting, n) for _ in range(repeats)]
            ping_lat = [
                run_helper(
                    "loadgen.py",
                    "latency",
                    "--port",
                    str(server.port),
                    "--instances",
                    str(_instances_file(tmp, waiting)),
                    "--requests",
                    "300" if smoke else "2000",
                    "--ping",
                )["latency_ms"]["p99"]
                for _ in range(repeats)
            ]
        finally:
            server.stop()
    report.add(
        Figure(
            "P4.cycles",
            "receive+delete cycles (one instance, one connection)",
            "cycles/s",
            [c["rate"] for c in cycles],
            "GET+POST /ping cycles/s",
            [p["rate"] for p in pings],
            "value",
            ">=",
            1500,
        )
    )
    for i, run in enumerate(wake_runs):
        report.note(f"wake run {i + 1}: {len(run)} valid samples")
    report.add(
        Figure(
            "P4.wake_p99",
            "long-poll wake latency p99 (notification created -> poll answered)",
            "ms",
            [percentile([s["wake_ms"] for s in run], 99) for run in wake_runs],
            "sequential GET /ping p99 ms",
            ping_lat,
            "value",
            "<=",
            10,
        )
    )
    report.add(
        Figure(
            "P4.wake_p50",
            "long-poll wake latency p50",
            "ms",
            [percentile([s["wake_ms"] for s in run], 50) for run in wake_runs],
        )
    )
    report.add(
        Figure(
            "P4.wake_e2e_p99",
            "getAvatarAsync sent -> long poll answered, p99 (includes the lookup)",
            "ms",
            [percentile([s["e2e_ms"] for s in run], 99) for run in wake_runs],
        )
    )
    report.finish(args.json)


def _instances_file(tmp: Path, instance: Instance) -> str:
    path = tmp / "ping-instances.json"
    path.write_text(json.dumps([[instance.id, instance.token]]))
    return str(path)


if __name__ == "__main__":
    main()
