"""P6 several nodes: the getAvatarAsync accept rate of two wagate processes on one PostgreSQL,
against one.

A throwaway database is created on the PostgreSQL server (`--database-url`, default
$WAGATE_BENCH_DATABASE_URL, else $WAGATE_TEST_DATABASE_URL, else
postgresql://postgres@127.0.0.1:5432/test), migrated once with `wagate migrate`, and dropped at
the end. Two nodes (`wagate serve --no-migrate`, each its own process and port) run throughout.
Each getAvatarAsync measurement uses a fresh instance, deleted afterwards (its pending avatar
jobs go with it), so no measurement competes with an earlier one's jobs; the /ping
measurements come first in each round, while the workers are idle. A first round is a warm-up.

One node: one wrk (-t1 -c32) against node A while node B idles. Two nodes: two wrk processes
at once, one per node, same settings each; their 2xx rates are summed. The same pair of
measurements on POST /ping (no database) is reported as context: it shows what the machine
itself allows. Honest caveat: on a 2-core machine the two nodes, two wrk processes and
PostgreSQL share two cores, so the busy-core figure printed per run matters more than the ratio.

Target: two nodes >= 1.6 x one node.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from common import (
    Figure,
    Report,
    Server,
    WrkSettings,
    arg_parser,
    busy_cores,
    chats_script,
    children_cpu_seconds,
    finish_wrk,
    machine_ticks,
    require_wrk,
    start_wrk,
    wagate_executable,
    work_dir,
)

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def admin(url: str, verb: str, database: str) -> None:
    """CREATE or DROP a database (outside a transaction, as PostgreSQL requires)."""
    import psycopg
    from psycopg import sql

    statement = sql.SQL(verb).format(sql.Identifier(database))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def rates(urls: list[str], settings: WrkSettings, script: Path) -> tuple[float, float]:
    """wrk against every URL at once; (summed 2xx rate, busy cores of the machine)."""
    ticks, cpu = machine_ticks(), children_cpu_seconds()
    running = [start_wrk(url, settings, script) for url in urls]
    results = [finish_wrk(process, cpu) for process in running]
    return sum(r.ok_rps for r in results), busy_cores(ticks, machine_ticks())


def accept_rate(
    nodes: list[Server], count: int, settings: WrkSettings, script: Path
) -> tuple[float, float]:
    """getAvatarAsync on the first `count` nodes at once, on a fresh instance that is deleted
    afterwards with its pending jobs, so every measurement starts with idle workers."""
    instance = nodes[0].create_instance()
    urls = [node.url + instance.path("getAvatarAsync") for node in nodes[:count]]
    try:
        return rates(urls, settings, script)
    finally:
        nodes[0].delete_instance(instance)


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("WAGATE_BENCH_DATABASE_URL")
        or os.environ.get("WAGATE_TEST_DATABASE_URL")
        or DEFAULT_URL,
        help="an admin URL of the PostgreSQL server (a throwaway database is made beside it)",
    )
    args = parser.parse_args()
    require_wrk()
    from sqlalchemy.engine import make_url

    smoke = args.smoke
    repeats = 1 if smoke else args.repeats
    settings = WrkSettings(1, 32, 1 if smoke else 5)
    report = Report("P6", "two nodes on PostgreSQL vs one", smoke)
    name = f"wagate_bench_{uuid.uuid4().hex[:10]}"
    db_url = make_url(args.database_url).set(database=name).render_as_string(hide_password=False)
    admin(args.database_url, "CREATE DATABASE {}", name)
    nodes: list[Server] = []
    try:
        with work_dir(args.keep) as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith("WAGATE_")}
            subprocess.run(
                [wagate_executable(), "migrate", "--database-url", db_url],
                env=env,
                check=True,
                capture_output=True,
            )
            nodes = [
                Server(tmp, name=f"node{n}", database_url=db_url, migrate=False).start()
                for n in "ab"
            ]
            script = chats_script(tmp / "chats.lua")
            single, double, ping1, ping2 = [], [], [], []
            pings = [f"{node.url}/ping" for node in nodes]
            for i in range(repeats + (0 if smoke else 1)):
                p1, _ = rates(pings[:1], settings, script)
                p2, _ = rates(pings, settings, script)
                one, one_busy = accept_rate(nodes, 1, settings, script)
                two, two_busy = accept_rate(nodes, 2, settings, script)
                if i == 0 and not smoke:
                    continue  # warm-up round
                single.append(one)
                double.append(two)
                ping1.append(p1)
                ping2.append(p2)
                report.note(
                    f"run {len(single)}: one node {one:,.0f}/s ({one_busy:.1f} of 2 cores busy), "
                    f"two nodes {two:,.0f}/s ({two_busy:.1f} cores busy); /ping one node "
                    f"{p1:,.0f}/s, two nodes {p2:,.0f}/s"
                )
    finally:
        for node in nodes:
            node.stop()
        admin(args.database_url, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
    report.note(f"wrk {' '.join(settings.argv())} per node; nproc {os.cpu_count()}")
    report.add(
        Figure(
            "P6.two_nodes",
            "getAvatarAsync acks, two nodes summed",
            "req/s",
            double,
            "one node req/s",
            single,
            "ratio",
            ">=",
            1.6,
        )
    )
    report.add(
        Figure(
            "P6.ping_two_nodes",
            "POST /ping, two nodes summed (what the machine allows)",
            "req/s",
            ping2,
            "one node req/s",
            ping1,
        )
    )
    report.finish(args.json)


if __name__ == "__main__":
    main()
