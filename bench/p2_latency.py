"""P2 end-to-end latency: getAvatarAsync sent -> avatarInfo webhook received, at half the
maximum accept rate.

First the maximum accept rate is measured in this same run, as in P1 (wrk, one thread, 32
connections; the median of three 5 s runs, the worker's backlog drained after each), on a
separate polling-mode instance that is then deleted: its pending avatar jobs go with it, so
the latency runs start with an idle worker.
Then a separate process (`loadgen.py openloop`) sends getAvatarAsync open loop at half that rate:
request i is due at t0 + i/rate whether or not earlier ones were answered, each with its own
chatId, round-robin over a few push-mode instances (default 10; one WhatsApp account sending
hundreds of lookups per second would be unrealistic, and the spec runs one instance's jobs in
sequence). The webhook receiver is another process (`receiver.py`, bare ASGI under uvicorn) that
records when each chatId's notification arrived. Latency = arrival - *intended* send time, so
a load generator that falls behind cannot hide latency (no coordinated omission); its lag is
reported too. Both processes read the same clock (`time.time()` on one machine).

Baseline (context): the p99 of the 200 acknowledgements in the same open-loop run, i.e. the
synchronous part of the request. Target: end-to-end p99 <= 25 ms.

Then the same open loop at lower fractions of the maximum (`--fractions`, default a quarter and
an eighth), as context rows: where the p99 stands when the server is not near saturation, so
that each run of the table shows how far below half the maximum the target holds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import (
    Figure,
    Receiver,
    Report,
    Server,
    WrkSettings,
    arg_parser,
    chats_script,
    cpu_seconds,
    drain_avatar_jobs,
    percentile,
    require_wrk,
    run_helper,
    run_wrk,
    sqlite_scalar,
    work_dir,
)


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--instances", type=int, default=10, help="push-mode instances")
    parser.add_argument("--seconds", type=float, default=10, help="open-loop duration per run")
    parser.add_argument(
        "--fractions",
        type=fractions_arg,
        default=(0.25, 0.125),
        help="also send at these fractions of the maximum accept rate, comma-separated "
        "(context rows; default 0.25,0.125; an empty string for none)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="send at this fixed rate instead of half the measured maximum (a diagnostic run)",
    )
    args = parser.parse_args()
    require_wrk()
    smoke = args.smoke
    repeats = 1 if smoke else args.repeats
    seconds = 1.0 if smoke else args.seconds
    report = Report("P2", "end-to-end latency at half the maximum accept rate", smoke)
    with work_dir(args.keep) as tmp:
        receiver = Receiver()
        server = Server(tmp).start()
        try:
            probe = server.create_instance()
            script = chats_script(tmp / "chats.lua")
            url = server.url + probe.path("getAvatarAsync")
            if not smoke:
                run_wrk(url, WrkSettings(1, 32, 1), script)  # warm-up
            # The median of several measurements: one 5 s run swung by ±15 % between runs,
            # and the send rate (and so the latency) with it.
            max_rates = []
            for _ in range(1 if smoke else 3):
                max_rates.append(run_wrk(url, WrkSettings(1, 32, 1 if smoke else 5), script).ok_rps)
                drain_avatar_jobs(server)
            max_rate = statistics.median(max_rates)
            server.delete_instance(probe)
            pending = sqlite_scalar(server, "SELECT count(*) FROM avatar_jobs")
            assert pending == 0, f"{pending} avatar jobs left after deleting the probe"
            rate = args.rate or max_rate / 2
            report.note(
                f"max accept rate {max_rate:,.0f}/s measured first (median of "
                f"{', '.join(f'{r:,.0f}' for r in max_rates)}); sending at {rate:,.0f}/s"
                + (" (fixed by --rate)" if args.rate else "")
            )
            pushed = [server.create_instance() for _ in range(args.instances)]
            for instance in pushed:
                server.call(instance, "setSettings", "POST", {"webhookUrl": receiver.url + "/hook"})
            instances_file = tmp / "instances.json"
            instances_file.write_text(json.dumps([[i.id, i.token] for i in pushed]))
            runs = []
            for i in range(repeats):
                runs.append(
                    one_run(server, receiver, instances_file, rate, seconds, i, tmp, report, smoke)
                )
            # Chat ids of these runs start after those of the runs above.
            index = repeats
            lower: list[tuple[float, list[dict[str, float]]]] = []
            for fraction in args.fractions:
                fraction_runs = []
                for _ in range(repeats):
                    fraction_runs.append(
                        one_run(
                            server,
                            receiver,
                            instances_file,
                            max_rate * fraction,
                            seconds,
                            index,
                            tmp,
                            report,
                            smoke,
                        )
                    )
                    index += 1
                lower.append((fraction, fraction_runs))
        finally:
            server.stop()
            receiver.stop()
    report.add(
        Figure(
            "P2.e2e_p99",
            "request sent -> webhook received, p99",
            "ms",
            [r["p99"] for r in runs],
            "acknowledgement p99 ms (same run)",
            [r["ack_p99"] for r in runs],
            "value",
            "<=",
            25,
        )
    )
    report.add(
        Figure(
            "P2.e2e_p50",
            "request sent -> webhook received, p50",
            "ms",
            [r["p50"] for r in runs],
            "acknowledgement p50 ms (same run)",
            [r["ack_p50"] for r in runs],
        )
    )
    report.add(Figure("P2.rate", "open-loop send rate (half the max)", "req/s", [rate] * repeats))
    report.add(
        Figure(
            "P2.delivered_rate",
            "end-to-end delivery rate (notifications / first send to last arrival)",
            "req/s",
            [r["delivered_rate"] for r in runs],
            "open-loop send rate req/s",
            [rate] * repeats,
        )
    )
    for fraction, fraction_runs in lower:
        report.add(
            Figure(
                f"P2.e2e_p99_at_{fraction:g}",
                f"request sent -> webhook received, p99, sending at {fraction:g} of the max "
                f"({max_rate * fraction:,.0f} req/s)",
                "ms",
                [r["p99"] for r in fraction_runs],
                "acknowledgement p99 ms (same run)",
                [r["ack_p99"] for r in fraction_runs],
            )
        )
    report.finish(args.json)


def fractions_arg(text: str) -> tuple[float, ...]:
    try:
        fractions = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if any(not 0 < fraction < 1 for fraction in fractions):
        raise argparse.ArgumentTypeError("fractions must lie between 0 and 1")
    return fractions


def one_run(
    server: Server,
    receiver: Receiver,
    instances_file: Path,
    rate: float,
    seconds: float,
    index: int,
    tmp: Path,
    report: Report,
    smoke: bool,
) -> dict[str, float]:
    receiver.reset()
    count = max(20, int(rate * seconds))
    out = tmp / f"sent-{index}.json"
    before, began = cpu_seconds(server.pid), time.monotonic()
    sent = run_helper(
        "loadgen.py",
        "openloop",
        "--port",
        str(server.port),
        "--instances",
        str(instances_file),
        "--rate",
        f"{rate:.3f}",
        "--count",
        str(count),
        "--first-chat",
        str(11_100_000_000 + index * 1_000_000),
        "--out",
        str(out),
    )
    complete = receiver.wait_for(count, timeout_s=(15 if smoke else 60) + count / 50)
    server_cpu = (cpu_seconds(server.pid) - before) / (time.monotonic() - began)
    arrivals = receiver.dump()
    intended: dict[str, float] = json.loads(out.read_text())
    latencies = [(arrivals[c] - t) * 1000 for c, t in intended.items() if c in arrivals]
    missing = count - len(latencies)
    if missing:
        # Counted as infinitely late: a lost or stuck notification must not improve the p99.
        latencies += [float("inf")] * missing
    last = max(arrivals.values(), default=0.0)
    first_due = min(intended.values(), default=0.0)
    result = {
        "delivered_rate": len(arrivals) / (last - first_due) if last > first_due else 0.0,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "ack_p50": sent["ack_ms"]["p50"],
        "ack_p99": sent["ack_ms"]["p99"],
    }
    report.note(
        f"run {index + 1} at {rate:,.0f}/s: {count} requests in {sent['seconds']:.1f} s, statuses "
        f"{sent['statuses']}, {'all' if complete else 'NOT all'} delivered "
        f"(last {last - first_due - sent['seconds']:.2f} s after the last send), "
        f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms, ack p99 "
        f"{result['ack_p99']:.1f} ms, sender lag p99 {sent['send_lag_ms']['p99']:.2f} ms, "
        f"server CPU {server_cpu:.0%} of a core until delivered, client CPU "
        f"{sent['cpu_s'] / sent['seconds']:.0%}"
    )
    return result


if __name__ == "__main__":
    main()
