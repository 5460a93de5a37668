"""Costs: where a request's CPU goes. A profiling aid, not a benchmark: no targets, and not part
of `make bench` or the results table (the server runs with `diag_server.py`'s hooks).

Saturated (wrk -t1 -c32 on one instance, as in P1), server CPU per request of:
  - `POST /ping`;
  - getAvatarAsync with the avatar worker held back: the acknowledgement alone (its rate
    against `/ping`'s is what P1's ratio would be if jobs cost nothing);
  - an avatar job, while the worker drains the backlog those acknowledgements left.
Moderate (`loadgen.py openloop` at `--rate` over `--instances` push-mode instances, each
notification pushed to `receiver.py`, as in P2): server CPU per request end to end, and per
store operation (one transaction in the store thread) its count and thread CPU; and where a
request's time goes, in three stages: sent -> its notification queued (the acknowledgement and
the avatar job), queued -> its push began (the lane), push began -> received.
Store hops (a SQLite store opened in this process, no server): the CPU of one store operation
that does nothing (an empty read), run in the store thread alone, and started from an event
loop one at a time or ten at a time: what the trip to the store thread and back costs, with
the threads on one CPU (as `serve` keeps a SQLite server) and free to run on any.
In process (`inproc.py`: the app's ASGI callable called directly, no HTTP server, on one CPU):
CPU per `/ping`, acknowledgement (worker held back) and job, per receive+delete cycle against
two `/ping`s one at a time, and per notification pushed by the lanes to `receiver.py` (queues
over 100 instances): route costs without the HTTP server's share or noise.
Store loop (`storeloop.py`: the queue statements called on this thread inside their
transactions, on one CPU, no server): thread CPU per job of the acknowledgements' INSERT and of
the avatar worker's completion transaction at 64 and 256 jobs a batch; steady enough to resolve
a µs between builds.
Idle wakes (the same kind of store, on one CPU): the thread CPU of a one-row write transaction
back to back and after 20 ms of idleness, which on small VMs costs many times more (every first
system call and page touch after the CPU idled is slow): the price every operation pays at low
rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    PYTHON,
    Figure,
    Receiver,
    Report,
    Server,
    WrkSettings,
    arg_parser,
    chats_script,
    cpu_seconds,
    percentile,
    require_wrk,
    run_helper,
    run_wrk,
    sqlite_scalar,
    wait_until,
    work_dir,
)

DIAG_SERVER = [PYTHON, str(BENCH_DIR / "diag_server.py")]


def cpu_per_request_us(
    server: Server, url: str, settings: WrkSettings, script: Path
) -> tuple[float, float]:
    """Server CPU per request (µs) and the rate (req/s) of one wrk run."""
    before = cpu_seconds(server.pid)
    result = run_wrk(url, settings, script)
    return 1e6 * (cpu_seconds(server.pid) - before) / max(result.requests, 1), result.ok_rps


def saturated(report: Report, repeats: int, seconds: int, tmp: Path) -> None:
    pings, ping_rates, acks, ack_rates, jobs = [], [], [], [], []
    for run in range(repeats):
        # A fresh server each run: its worker stays held back until the gate file exists.
        gate = tmp / f"worker-gate-{run}"
        env = {"DIAG_WORKER_GATE": str(gate)}
        server = Server(tmp, f"saturated-{run}", env=env, command=DIAG_SERVER).start()
        try:
            instance = server.create_instance()
            script = chats_script(tmp / "chats.lua")
            ping_url = f"{server.url}/ping"
            async_url = server.url + instance.path("getAvatarAsync")
            settings = WrkSettings(1, 32, seconds)
            run_wrk(ping_url, WrkSettings(1, 32, 1), script)  # warm-up
            cpu, rate = cpu_per_request_us(server, ping_url, settings, script)
            pings.append(cpu)
            ping_rates.append(rate)
            cpu, rate = cpu_per_request_us(server, async_url, settings, script)
            acks.append(cpu)
            ack_rates.append(rate)
            backlog = sqlite_scalar(server, "SELECT count(*) FROM avatar_jobs")
            before = cpu_seconds(server.pid)
            gate.touch()
            drained = wait_until(
                lambda s=server: sqlite_scalar(s, "SELECT count(*) FROM avatar_jobs") == 0,
                300,
                0.05,
            )
            if not drained:
                raise SystemExit("the avatar worker did not drain its backlog")
            jobs.append(1e6 * (cpu_seconds(server.pid) - before) / max(backlog, 1))
            report.note(f"run {run + 1}: a backlog of {backlog:,} jobs drained")
        finally:
            server.stop()
    report.add(Figure("costs.ping", "server CPU per POST /ping (wrk)", "us", pings))
    report.add(
        Figure(
            "costs.ack",
            "server CPU per getAvatarAsync acknowledgement, worker held back (wrk)",
            "us",
            acks,
            "POST /ping us",
            pings,
        )
    )
    report.add(
        Figure(
            "costs.ack_rate",
            "getAvatarAsync acknowledgements/s, worker held back",
            "req/s",
            ack_rates,
            "POST /ping req/s",
            ping_rates,
        )
    )
    report.add(Figure("costs.job", "server CPU per avatar job, draining a backlog", "us", jobs))


def moderate(report: Report, rate: float, instances: int, seconds: float, tmp: Path) -> None:
    stats, stages = tmp / "opstats.json", tmp / "stages.json"
    receiver = Receiver()
    env = {"DIAG_OPSTATS": str(stats), "DIAG_STAGES": str(stages)}
    server = Server(tmp, "moderate", env=env, command=DIAG_SERVER)
    server.start()
    try:
        pushed = [server.create_instance() for _ in range(instances)]
        for instance in pushed:
            server.call(instance, "setSettings", "POST", {"webhookUrl": receiver.url + "/hook"})
        listed = tmp / "instances.json"
        listed.write_text(json.dumps([[i.id, i.token] for i in pushed]))
        count = max(20, int(rate * seconds))
        [before_ops, _] = read_dumps(server, stats, stages)
        before, began = cpu_seconds(server.pid), time.monotonic()
        sent = run_helper(
            "loadgen.py",
            "openloop",
            "--port",
            str(server.port),
            "--instances",
            str(listed),
            "--rate",
            f"{rate:.3f}",
            "--count",
            str(count),
            "--out",
            str(tmp / "sent.json"),
        )
        assert receiver.wait_for(count, timeout_s=60 + count / 50), "not every webhook arrived"
        cpu = cpu_seconds(server.pid) - before
        elapsed = time.monotonic() - began
        busy = cpu / elapsed
        [after_ops, stage_times] = read_dumps(server, stats, stages)
        arrivals = receiver.dump()
    finally:
        server.stop()
        receiver.stop()
    intended: dict[str, float] = json.loads((tmp / "sent.json").read_text())
    report_stages(report, intended, stage_times, arrivals)
    report.add(
        Figure(
            "costs.e2e",
            f"server CPU per request end to end at {rate:,.0f} req/s",
            "us",
            [1e6 * cpu / count],
        )
    )
    report.note(
        f"{count:,} requests at {rate:,.0f}/s over {instances} push-mode instances: server at "
        f"{busy:.0%} of a core until the last webhook; acknowledgement p99 "
        f"{sent['ack_ms']['p99']:.1f} ms"
    )
    rows = []
    for name, (ops, op_cpu, op_wall) in after_ops.items():
        done_before, cpu_before, wall_before = before_ops.get(name, (0, 0.0, 0.0))
        if ops > done_before:
            rows.append((op_cpu - cpu_before, op_wall - wall_before, name, int(ops - done_before)))
    wall_busy = sum(row[1] for row in rows) / elapsed
    report.note(f"the store thread ran operations {wall_busy:.0%} of the time (wall)")
    for spent, wall, name, ops in sorted(rows, reverse=True):
        report.note(
            f"store operation {name}: {ops:,} runs, {1e6 * spent / ops:,.0f} us CPU "
            f"({1e6 * wall / ops:,.0f} us wall) each, {1e6 * spent / count:,.1f} us per request"
        )


@contextlib.contextmanager
def on_one_cpu(pinned: bool) -> Iterator[None]:
    """This thread, and the threads it starts meanwhile, on the highest CPU as `wagate serve`
    keeps a SQLite server (`WAGATE_CPU_AFFINITY=auto`), or left where they are."""
    before = os.sched_getaffinity(0)
    if pinned:
        os.sched_setaffinity(0, {max(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def store_hops(report: Report, repeats: int, calls: int, tmp: Path) -> None:
    """Empty store operations, the store's threads on one CPU as `serve` runs them, and free
    to run on any (the default before `WAGATE_CPU_AFFINITY`)."""
    from wagate.stores import migrate, open_store

    url = f"sqlite:///{tmp / 'hops.sqlite3'}"
    migrate(url)
    alone: list[float] = []
    one: dict[bool, list[float]] = {True: [], False: []}
    ten: dict[bool, list[float]] = {True: [], False: []}

    def nothing(conn: Any) -> None:
        return None

    async def measure(pinned: bool) -> None:
        async with open_store(url) as store:
            _, reader = store.engines
            done = threading.Event()
            spent: list[float] = []

            def in_thread() -> None:
                began = time.process_time()
                for _ in range(calls):
                    reader.call(nothing)
                spent.append(time.process_time() - began)
                done.set()

            if pinned:
                done.clear()
                reader.submit(in_thread)
                await asyncio.to_thread(done.wait)
                alone.append(1e6 * spent[-1] / calls)
            began = time.process_time()
            for _ in range(calls):
                await reader.run(nothing)
            one[pinned].append(1e6 * (time.process_time() - began) / calls)
            began = time.process_time()
            for _ in range(calls // 10):
                await asyncio.gather(*(reader.run(nothing) for _ in range(10)))
            ten[pinned].append(1e6 * (time.process_time() - began) / (calls // 10 * 10))

    for _ in range(repeats):
        for pinned in (True, False):
            with on_one_cpu(pinned):
                asyncio.run(measure(pinned))
    report.add(Figure("costs.op_alone", "empty store operation in the store thread", "us", alone))
    report.add(
        Figure(
            "costs.op_hop",
            "empty store operation from the event loop, one at a time (process CPU)",
            "us",
            one[True],
            "in the store thread us",
            alone,
        )
    )
    report.add(
        Figure(
            "costs.op_hop_floating",
            "the same with the threads free to run on any CPU (WAGATE_CPU_AFFINITY=off)",
            "us",
            one[False],
            "on one CPU us",
            one[True],
        )
    )
    report.add(
        Figure(
            "costs.op_hop_10",
            "empty store operations from the event loop, ten at a time (process CPU each)",
            "us",
            ten[True],
            "one at a time us",
            one[True],
        )
    )
    report.add(
        Figure(
            "costs.op_hop_10_floating",
            "the same with the threads free to run on any CPU",
            "us",
            ten[False],
            "on one CPU us",
            ten[True],
        )
    )


def idle_wakes(report: Report, repeats: int, calls: int, tmp: Path) -> None:
    """The thread CPU of one small write transaction (a one-row upsert) run by the store's
    writer in a thread of this process, back to back and each after 20 ms of idleness."""
    from sqlalchemy import text

    from wagate.stores import migrate, open_store

    url = f"sqlite:///{tmp / 'idle.sqlite3'}"
    migrate(url)
    back_to_back: list[float] = []
    after_idle: list[float] = []
    upsert = text("INSERT OR REPLACE INTO meta (key, value) VALUES ('costs', :value)")

    async def measure() -> None:
        async with open_store(url) as store:
            writer, _ = store.engines

            def write(conn: Any, value: str) -> None:
                conn.execute(upsert, {"value": value})

            def run(gap_s: float, into: list[float], done: threading.Event) -> None:
                spent = 0.0
                for n in range(calls):
                    if gap_s:
                        time.sleep(gap_s)
                    began = time.thread_time()
                    writer.call(functools.partial(write, value=str(n)))
                    spent += time.thread_time() - began
                into.append(1e6 * spent / calls)
                done.set()

            async def in_store_thread(gap_s: float, into: list[float]) -> None:
                # In the store's own writer thread: a connection is kept per thread, and the
                # pool has no second one for a thread of asyncio's executor.
                done = threading.Event()
                writer.submit(functools.partial(run, gap_s, into, done))
                await asyncio.to_thread(done.wait)

            for _ in range(repeats):
                await in_store_thread(0, back_to_back)
                await in_store_thread(0.02, after_idle)

    with on_one_cpu(True):
        asyncio.run(measure())
    report.add(
        Figure("costs.write_hot", "one-row write transaction, back to back", "us", back_to_back)
    )
    report.add(
        Figure(
            "costs.write_after_idle",
            "one-row write transaction after 20 ms idle (thread CPU)",
            "us",
            after_idle,
            "back to back us",
            back_to_back,
        )
    )


def report_stages(
    report: Report,
    intended: dict[str, float],
    stage_times: dict[str, dict[str, Any]],
    arrivals: dict[str, float],
) -> None:
    """Latency per stage, by chatId: sent (the intended send time, as P2 counts it) -> queued
    -> push began -> received. Sender, server and receiver read the same clock."""
    chat_of = {receipt: chat for receipt, (chat, _) in stage_times["queued"].items()}
    queued = {chat: at for chat, at in stage_times["queued"].values()}
    pushed = {chat_of[receipt]: at for receipt, at in stage_times["pushed"].items()}
    chats = [chat for chat in intended if chat in queued and chat in pushed and chat in arrivals]
    stages = {
        "sent -> notification queued (acknowledgement and avatar job)": [
            queued[chat] - intended[chat] for chat in chats
        ],
        "notification queued -> push began (the lane)": [
            pushed[chat] - queued[chat] for chat in chats
        ],
        "push began -> received": [arrivals[chat] - pushed[chat] for chat in chats],
        "sent -> received (end to end)": [arrivals[chat] - intended[chat] for chat in chats],
    }
    for n, (name, seconds) in enumerate(stages.items()):
        ms = [1000 * s for s in seconds]
        report.add(Figure(f"costs.stage{n}", f"{name}, p50", "ms", [percentile(ms, 50)]))
        report.note(
            f"{name}: p50 {percentile(ms, 50):.1f} ms, p90 {percentile(ms, 90):.1f} ms, "
            f"p99 {percentile(ms, 99):.1f} ms ({len(ms):,} requests)"
        )


def read_dumps(server: Server, *paths: Path) -> list[Any]:
    """What the diagnostic server's hooks hold, as of now (it writes them on SIGUSR1)."""
    for path in paths:
        path.unlink(missing_ok=True)
    os.kill(server.pid, signal.SIGUSR1)
    if not wait_until(lambda: all(path.exists() for path in paths), 10, 0.02):
        raise SystemExit("the diagnostic server did not write what its hooks hold")
    return [json.loads(path.read_text()) for path in paths]


def in_process(report: Report, repeats: int, tmp: Path, smoke: bool) -> None:
    """Route costs with the app called in this process (`inproc.py`), on one CPU."""
    import inproc

    rounds: list[dict[str, float]] = []
    receiver = Receiver()  # started before this process is pinned, and kept off its CPU
    try:
        for _ in range(repeats):
            with on_one_cpu(True):
                spare = os.sched_getaffinity(0) ^ set(range(os.cpu_count() or 1))
                if spare:
                    os.sched_setaffinity(receiver.process.pid, spare)
                receiver.reset()  # it counts distinct chatIds, and every round sends the same
                rounds.append(
                    asyncio.run(
                        inproc.measure(
                            tmp,
                            300 if smoke else 20_000,
                            50 if smoke else 5_000,
                            200 if smoke else 50_000,
                            receiver.url + "/hook",
                            lambda: int(receiver.count()["count"]),
                        )
                    )
                )
    finally:
        receiver.stop()
    runs = {name: [found[name] for found in rounds] for name in rounds[0]}
    ping = runs["ping"]
    report.add(Figure("costs.inproc_ping", "in-process CPU per POST /ping", "us", ping))
    report.add(
        Figure(
            "costs.inproc_ack",
            "in-process CPU per getAvatarAsync acknowledgement, worker held back",
            "us",
            runs["ack"],
            "POST /ping us",
            ping,
        )
    )
    report.add(
        Figure("costs.inproc_job", "in-process CPU per avatar job, draining", "us", runs["job"])
    )
    report.add(
        Figure(
            "costs.inproc_cycle",
            "in-process CPU per receive+delete cycle, one at a time",
            "us",
            runs["cycle"],
            "two /ping one at a time us",
            runs["ping_pair"],
        )
    )
    report.add(
        Figure(
            "costs.inproc_push",
            f"in-process CPU per notification pushed, queues over {inproc.PUSH_INSTANCES}"
            " instances",
            "us",
            runs["push"],
        )
    )


def store_loop(report: Report, repeats: int, tmp: Path, smoke: bool) -> None:
    """Queue transactions in a loop on this thread (`storeloop.py`), on one CPU."""
    import storeloop

    rounds: list[dict[str, float]] = []
    for run in range(repeats):
        with on_one_cpu(True):
            rounds.append(storeloop.measure(tmp / f"storeloop-{run}", 20 if smoke else 400))
    runs = {name: [found[name] for found in rounds] for name in rounds[0]}
    report.add(
        Figure(
            "costs.store_insert",
            "store-loop thread CPU per job acknowledged (INSERT and COMMIT, 32 a batch)",
            "us",
            runs["insert"],
        )
    )
    for size in (64, 256):
        report.add(
            Figure(
                f"costs.store_complete_{size}",
                f"store-loop thread CPU per job completed (its transaction, {size} a batch)",
                "us",
                runs[f"complete_{size}"],
            )
        )


PARTS = ("saturated", "moderate", "hops", "inproc", "store", "wakes")


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rate", type=float, default=2000, help="moderate part: requests/s")
    parser.add_argument("--instances", type=int, default=10, help="moderate part: instances")
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only this part (repeatable; default: all of them)",
    )
    args = parser.parse_args()
    parts = set(args.only or PARTS)
    require_wrk()
    smoke = args.smoke
    report = Report("COSTS", "server CPU per request and per store operation", smoke)
    with work_dir(args.keep) as tmp:
        if "saturated" in parts:
            saturated(report, 1 if smoke else args.repeats, 1 if smoke else 4, tmp)
        if "moderate" in parts:
            moderate(report, 200 if smoke else args.rate, args.instances, 1 if smoke else 6, tmp)
        if "hops" in parts:
            store_hops(report, 1 if smoke else args.repeats, 100 if smoke else 2000, tmp)
        if "inproc" in parts:
            in_process(report, 1 if smoke else args.repeats, tmp, smoke)
        if "store" in parts:
            store_loop(report, 1 if smoke else args.repeats, tmp, smoke)
        if "wakes" in parts:
            idle_wakes(report, 1 if smoke else args.repeats, 10 if smoke else 200, tmp)
    report.finish(args.json)


if __name__ == "__main__":
    main()
