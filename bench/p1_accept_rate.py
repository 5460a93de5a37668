"""P1 accept rate: durable getAvatarAsync acknowledgements per second, against `POST /ping`.

What is measured: wrk (its own process, one thread, 32 keep-alive connections) POSTs
`{"chatId": ...}` to getAvatarAsync of one sandbox instance, cycling over 1,000 distinct
personal chats absent from the (empty) sandbox world, so that no batch of the worker's asks for
a chat twice (a repeated chat is looked up once per batch; that saving is left out); every 200
means the job was committed to SQLite (WAL) before the answer. Only 2xx answers count.

Baseline: the same wrk settings and the same request body against `POST /ping`, which crosses
the same ASGI middleware (guard, logging, metrics), is dispatched by the guard the way the
GREEN-API methods are, and answers `{"pong": true}` without the database. Why it is fair:
same server process, same settings, measured in the same run and interleaved (ping, async,
ping, async, ...) so that the noise of a shared machine hits both.
Between runs the avatar worker's backlog is drained (and timed) so that a later run never
competes with an earlier run's jobs; within an async run the worker does compete, as it would in
production. How much of its work it does during the run moves the ratio (work left for after the
run is not counted against it), so a context figure counts the requests answered in full per
second of the run and of the drain after it.

Target: accept rate >= 0.7 x the ping rate.
"""

from __future__ import annotations

from pathlib import Path

from common import (
    Figure,
    Instance,
    Report,
    Server,
    WrkResult,
    WrkSettings,
    arg_parser,
    chats_script,
    cpu_seconds,
    cpu_share,
    drain_avatar_jobs,
    require_wrk,
    run_wrk,
    work_dir,
)


def measure(
    server: Server, url: str, settings: WrkSettings, script: Path
) -> tuple[WrkResult, float]:
    """One wrk run; returns wrk's result and the server's CPU share of one core."""
    before = cpu_seconds(server.pid)
    result = run_wrk(url, settings, script)
    return result, (cpu_seconds(server.pid) - before) / result.seconds


def accept_rate_runs(
    server: Server, instance: Instance, settings: WrkSettings, repeats: int, tmp: Path
) -> tuple[list[WrkResult], list[WrkResult], list[float], list[str]]:
    """Interleaved ping/getAvatarAsync wrk runs; (ping results, async results, seconds each
    async run's backlog took to drain after it, notes)."""
    script = chats_script(tmp / "chats.lua")
    ping_url = f"{server.url}/ping"
    async_url = server.url + instance.path("getAvatarAsync")
    if settings.duration_s > 1:  # warm-up, except in smoke mode
        warm = WrkSettings(settings.threads, settings.connections, 1)
        run_wrk(ping_url, warm, script)
        run_wrk(async_url, warm, script)
        drain_avatar_jobs(server)
    pings: list[WrkResult] = []
    asyncs: list[WrkResult] = []
    drains: list[float] = []
    notes: list[str] = []
    for i in range(repeats):
        ping, ping_cpu = measure(server, ping_url, settings, script)
        acc, acc_cpu = measure(server, async_url, settings, script)
        jobs, waited = drain_avatar_jobs(server, interval_s=0.02)
        drains.append(waited)
        server.call(instance, "clearWebhooksQueue", "DELETE")
        pings.append(ping)
        asyncs.append(acc)
        notes.append(
            f"run {i + 1}: ping {ping.ok_rps:,.0f}/s (server CPU {ping_cpu:.0%}, wrk "
            f"{cpu_share(ping.cpu_s, ping.seconds)}); getAvatarAsync {acc.ok_rps:,.0f}/s "
            f"(server CPU {acc_cpu:.0%}, wrk {cpu_share(acc.cpu_s, acc.seconds)}, "
            f"non-2xx {acc.non_2xx}, errors {acc.socket_errors}); "
            f"{jobs} jobs left at the end, drained in {waited:.1f} s"
        )
        print(f"  {notes[-1]}", flush=True)
    return pings, asyncs, drains, notes


def main() -> None:
    args = arg_parser(__doc__).parse_args()
    require_wrk()
    repeats = 1 if args.smoke else args.repeats
    settings = WrkSettings(1, 32, 1 if args.smoke else 5)
    report = Report("P1", "getAvatarAsync accept rate vs POST /ping", args.smoke)
    with work_dir(args.keep) as tmp:
        server = Server(tmp).start()
        try:
            instance = server.create_instance()
            pings, asyncs, drains, notes = accept_rate_runs(
                server, instance, settings, repeats, tmp
            )
        finally:
            server.stop()
    report.notes.extend(notes)
    report.note(f"wrk {' '.join(settings.argv())}, SQLite, one server process, rate limits off")
    report.add(
        Figure(
            "P1.accept_rate",
            "getAvatarAsync acknowledgements",
            "req/s",
            [r.ok_rps for r in asyncs],
            "POST /ping req/s",
            [r.ok_rps for r in pings],
            "ratio",
            ">=",
            0.7,
        )
    )
    report.add(
        Figure(
            "P1.answered_rate",
            "getAvatarAsync requests answered in full (acknowledged, avatarInfo queued), per "
            "second of the run and of the backlog's drain after it",
            "req/s",
            [r.ok_rps * r.seconds / (r.seconds + d) for r, d in zip(asyncs, drains, strict=True)],
            "POST /ping req/s",
            [r.ok_rps for r in pings],
        )
    )
    report.add(
        Figure(
            "P1.accept_p99",
            "getAvatarAsync p99 latency under that load (wrk)",
            "ms",
            [r.latency_ms.get("99", float("nan")) for r in asyncs],
            "POST /ping p99 ms",
            [r.latency_ms.get("99", float("nan")) for r in pings],
        )
    )
    report.finish(args.json)


if __name__ == "__main__":
    main()
