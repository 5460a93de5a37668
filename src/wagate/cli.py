"""The `wagate` command: serve, migrate, instance, sandbox, notifications."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from wagate import __version__
from wagate.bootstrap import AVATARS_DIR, PARTNER_TOKEN_FILE, Runtime, open_runtime
from wagate.config import DATABASE_FILE, ConfigError, Settings, settings_from_env
from wagate.core.errors import WagateError
from wagate.core.model import Instance, InstanceState, NotificationStatus
from wagate.cpu_affinity import AffinityError, parse_cpu_affinity, pin_process
from wagate.engines.sandbox_demo import DEMO_PHONE, write_demo_world
from wagate.engines.sandbox_world import WorldSummary, load_world_file
from wagate.log_output import server_log_output
from wagate.stores import sqlite_file
from wagate.stores.backup import back_up_sqlite
from wagate.stores.server_lock import ServerLock, acquire_server_lock

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _storage_options(func: F) -> F:
    """--data-dir and --database-url, which every command takes."""
    func = click.option(
        "--database-url",
        envvar="WAGATE_DATABASE_URL",
        show_envvar=True,
        default=None,
        help="postgresql://... or sqlite:///path; default: SQLite in the data directory.",
    )(func)
    func = click.option(
        "--data-dir",
        envvar="WAGATE_DATA_DIR",
        show_envvar=True,
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("./wagate-data"),
        show_default=True,
        help="Where the SQLite database, avatar images and the partner token live.",
    )(func)
    return func


def _settings(**overrides: Any) -> Settings:
    try:
        return settings_from_env(**overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a use case; a WagateError becomes a one-line message and exit status 1."""
    verbose = click.get_current_context().find_root().params.get("verbose", False)
    try:
        return asyncio.run(coro)
    except WagateError as exc:
        if verbose:
            raise
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    except SQLAlchemyError as exc:
        # The database unreachable or refusing (at start or migration): one line, as for the
        # errors above; the driver's first line says why.
        if verbose:
            raise
        cause = getattr(exc, "orig", None) or exc
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        click.echo(f"error: the database cannot be used: {reason}", err=True)
        sys.exit(1)


def _with_runtime(
    settings: Settings,
    action: Callable[[Runtime], Coroutine[Any, Any, T]],
    *,
    may_create: bool = False,
) -> Coroutine[Any, Any, T]:
    """`action` on an opened runtime. Only commands that set wagate up (`may_create`) may
    create a SQLite database: another command run from the wrong directory, or with a
    mistyped path, would otherwise make an empty one there and report no instances."""

    async def run() -> T:
        if not may_create:
            _require_sqlite_file(settings)
        async with open_runtime(settings) as runtime:
            return await action(runtime)

    return run()


def _require_sqlite_file(settings: Settings) -> Path | None:
    """The SQLite database file, which must exist (None on PostgreSQL)."""
    path = sqlite_file(settings.effective_database_url)
    if path is not None and not path.is_file():
        raise WagateError(
            f"no wagate database at {path}: give the --data-dir (or --database-url) of a"
            " server, or start `wagate serve` or `wagate migrate` there first"
        )
    return path


def _credentials(runtime: Runtime, instance: Instance) -> dict[str, Any]:
    return {
        "idInstance": instance.id,
        "apiTokenInstance": instance.api_token,
        "apiUrl": runtime.public_url,
        "mediaUrl": runtime.public_url,
    }


def _details(runtime: Runtime, instance: Instance) -> dict[str, Any]:
    return {
        **_credentials(runtime, instance),
        "engine": instance.engine,
        "phone": instance.phone,
        "stateInstance": instance.state.value,
        "webhookSigningSecret": instance.webhook_signing_secret,
    }


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(__version__, prog_name="wagate")
def main(verbose: bool) -> None:
    """wagate: a self-hosted, GREEN-API-compatible WhatsApp gateway."""


# -- serve / migrate ------------------------------------------------------------------------


@main.command()
@click.option(
    "--host",
    envvar="WAGATE_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    envvar="WAGATE_PORT",
    show_envvar=True,
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--public-url",
    envvar="WAGATE_PUBLIC_URL",
    show_envvar=True,
    default=None,
    help="Base URL clients use to reach wagate (apiUrl, avatar links); default http://HOST:PORT.",
)
@click.option(
    "--demo/--no-demo",
    envvar="WAGATE_DEMO",
    show_envvar=True,
    default=True,
    show_default=True,
    help="With no instance yet, create a demo sandbox world and instance and print "
    "its credentials.",
)
@click.option(
    "--migrate/--no-migrate",
    envvar="WAGATE_MIGRATE",
    show_envvar=True,
    default=True,
    show_default=True,
    help="Apply database migrations at start (turn off when `wagate migrate` runs separately).",
)
@click.option(
    "--cpu-affinity",
    envvar="WAGATE_CPU_AFFINITY",
    show_envvar=True,
    default=None,
    help="CPUs to keep to: auto (one CPU on SQLite, none chosen on PostgreSQL), off, or a "
    "list such as 1 or 0,2-3.  [default: auto]",
)
@_storage_options
def serve(
    host: str,
    port: int,
    public_url: str | None,
    demo: bool,
    migrate: bool,
    cpu_affinity: str | None,
    data_dir: Path,
    database_url: str | None,
) -> None:
    """Run the HTTP server with its workers (migrating the database first, unless told not to).

    On SQLite one server serves a database: a second one started on it stops at once, naming
    the first one's process id. The other commands may run beside it."""
    from wagate.http import create_app
    from wagate.http.server import listen_problem, run_server

    affinity_hint = "'--cpu-affinity' / 'WAGATE_CPU_AFFINITY'"
    try:
        affinity = None if cpu_affinity is None else parse_cpu_affinity(cpu_affinity)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=affinity_hint) from exc
    settings = _settings(
        host=host,
        port=port,
        public_url=public_url,
        data_dir=data_dir,
        database_url=database_url,
        migrate_on_start=migrate,
        cpu_affinity=affinity,
    )
    log_output = server_log_output(sys.stderr)
    logging.basicConfig(level=settings.log_level, handlers=[log_output])
    # Before anything starts a thread (the store's, uvicorn's), so that all inherit it.
    try:
        pin_process(settings.cpu_affinity, is_sqlite=settings.is_sqlite)
    except AffinityError as exc:
        raise click.BadParameter(str(exc), param_hint=affinity_hint) from exc
    try:
        # Before anything is written: the database's server lock, then the address.
        database = sqlite_file(settings.effective_database_url)
        if database is not None:
            # Held for the life of the process: nothing releases it but the exit.
            _held_locks.append(acquire_server_lock(database))
        problem = listen_problem(settings.host, settings.port)
        if problem is not None:
            raise WagateError(
                f"{problem}; choose another --port (WAGATE_PORT) or --host (WAGATE_HOST)"
            )
    except WagateError as exc:
        log_output.flush()
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    _run(_with_runtime(settings, functools.partial(_prepare_serve, demo=demo), may_create=True))
    app = create_app(settings)
    _tune_garbage_collector()
    # What start-up logged (the CPU pinned, migrations) is out before a request can be served.
    log_output.flush()
    _flush_logs_before_terminating(log_output)
    run_server(app, settings)


# The lock that keeps a second server off this one's SQLite database (stores/server_lock.py).
_held_locks: list[ServerLock] = []


def _flush_logs_before_terminating(log_output: logging.Handler) -> None:
    """Make SIGTERM and SIGHUP write the log output's held lines before they end the process.

    After a graceful shutdown on SIGTERM, uvicorn restores the handler it found and raises the
    signal again, so the process ends by the signal: no atexit, so no `logging.shutdown`, and
    the batched lines of the shutdown itself would be lost. The handler it finds and restores is
    this one, which writes them and then lets the signal end the process as it would have.
    SIGHUP (uvicorn leaves it alone) ends the process at once, as before, its lines written.
    (SIGINT needs nothing: its default raises KeyboardInterrupt, and the exit runs atexit.)"""

    def flush_then_terminate(signum: int, frame: FrameType | None) -> None:
        log_output.flush()
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, flush_then_terminate)


# The cyclic collector's thresholds for a server (Python's default: 700, 10, 10). Under load
# nearly every object a request makes dies young, by reference counting, yet with 700 the
# youngest generation was collected 30-100 times a second and all three every second or few,
# each full pass stopping the event loop for ~10 ms; the more so in a backlog, where more
# objects live longer (docs/benchmarks.md, the change table's row on the GC's thresholds).
GC_THRESHOLDS = (10_000, 10, 10)


def _tune_garbage_collector() -> None:
    """Exempt everything built so far (the modules, the app, its routes and models: ~120,000
    objects) from the cyclic garbage collector's scans, and collect less often.

    The objects built at start live as long as the process, yet every full collection walked
    them all: a 10-50 ms pause of the event loop that set the p99 of acknowledgements and
    deliveries under load (docs/benchmarks.md, "gc.freeze"). Reference counting still frees
    what is not in a cycle at once, whatever the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _prepare_serve(runtime: Runtime, *, demo: bool) -> None:
    runtime.public_url = runtime.settings.effective_public_url
    await runtime.store.set_meta("public_url", runtime.public_url)
    instances = await runtime.instances.list()
    if demo and not instances:
        low, high = runtime.settings.phone_digits
        if not low <= len(DEMO_PHONE) <= high:
            raise WagateError(
                f"the demo world's numbers have {len(DEMO_PHONE)} digits, which"
                f" WAGATE_PHONE_DIGITS={low}-{high} does not allow: start with --no-demo"
            )
        world = await asyncio.to_thread(write_demo_world, runtime.settings.data_dir / "demo-world")
        await load_world_file(world, runtime.store, runtime.images, runtime.settings.phone_digits)
        instance = await runtime.instances.create(phone=DEMO_PHONE)
        await runtime.store.set_meta("demo_instance", str(instance.id))
        _print_demo(runtime, instance, world)
    elif demo:
        demo_id = await runtime.store.get_meta("demo_instance")
        existing = await runtime.store.get_instance(int(demo_id)) if demo_id else None
        if existing is not None:
            _print_demo(runtime, existing, None)
        else:
            click.echo(f"wagate: {len(instances)} instance(s); `wagate instance list` shows them")


def _print_demo(runtime: Runtime, instance: Instance, world: Path | None) -> None:
    url = f"{runtime.public_url}/waInstance{instance.id}/getAvatarAsync/{instance.api_token}"
    if world is not None:
        click.echo(f"wagate: created a demo sandbox world ({world}) and instance")
    click.echo(
        "\n".join(
            [
                f"  idInstance:       {instance.id}",
                f"  apiTokenInstance: {instance.api_token}",
                f"  apiUrl:           {runtime.public_url}",
                "Ask for Bob's avatar, then poll for the avatarInfo notification:",
                f"  curl -X POST '{url}' -H 'Content-Type: application/json' "
                '-d \'{"chatId": "11001234568@c.us"}\'',
                f"  curl '{runtime.public_url}/waInstance{instance.id}/receiveNotification/"
                f"{instance.api_token}'",
            ]
        )
    )


@main.command()
@_storage_options
def migrate(data_dir: Path, database_url: str | None) -> None:
    """Create or upgrade the database schema."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def action(runtime: Runtime) -> None:
        click.echo("database is up to date")

    _run(_with_runtime(settings, action, may_create=True))


@main.command()
@click.argument("destination", type=click.Path(path_type=Path))
@_storage_options
def backup(destination: Path, data_dir: Path, database_url: str | None) -> None:
    """Copy a SQLite data directory to DESTINATION (a new or empty directory), consistently,
    while a server may run on it: the database by SQLite's VACUUM INTO, then the avatar images
    and a generated partner token. To restore, stop the server and start it with
    --data-dir DESTINATION. On PostgreSQL use pg_dump: everything is in the database."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    if not settings.is_sqlite:
        raise click.UsageError(
            "wagate backup copies a SQLite data directory; on PostgreSQL use pg_dump"
            " (avatar images are in the database too)"
        )
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise click.UsageError(f"{destination} exists and is not an empty directory")

    async def copy() -> None:
        database = _require_sqlite_file(settings)
        assert database is not None  # checked above: SQLite only
        await asyncio.to_thread(
            back_up_sqlite,
            database,
            destination / DATABASE_FILE,
            [
                (settings.data_dir / AVATARS_DIR, destination / AVATARS_DIR),
                (settings.data_dir / PARTNER_TOKEN_FILE, destination / PARTNER_TOKEN_FILE),
            ],
        )

    _run(copy())
    images = destination / AVATARS_DIR
    count = sum(1 for _ in images.iterdir()) if images.is_dir() else 0
    token = "with" if (destination / PARTNER_TOKEN_FILE).exists() else "without"
    size = (destination / DATABASE_FILE).stat().st_size
    click.echo(
        f"backed up to {destination}: database {size:,} bytes, {count} avatar images,"
        f" {token} a partner token file"
    )


# -- instance -------------------------------------------------------------------------------


@main.group()
def instance() -> None:
    """Create, list, show, delete instances and change their credentials or state."""


def _json_flag(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


@instance.command("create")
@click.option(
    "--phone",
    default=None,
    help="Sandbox account number (as many digits as WAGATE_PHONE_DIGITS allows); "
    "default: a free one.",
)
@click.option("--engine", type=click.Choice(["sandbox"]), default="sandbox", show_default=True)
@_json_flag
@_storage_options
def instance_create(
    phone: str | None, engine: str, as_json: bool, data_dir: Path, database_url: str | None
) -> None:
    """Create an instance with fresh credentials."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def action(runtime: Runtime) -> dict[str, Any]:
        return _credentials(runtime, await runtime.instances.create(phone=phone, engine=engine))

    created = _run(_with_runtime(settings, action, may_create=True))
    if as_json:
        _echo_json(created)
    else:
        for key, value in created.items():
            click.echo(f"{key}: {value}")


@instance.command("list")
@_json_flag
@_storage_options
def instance_list(as_json: bool, data_dir: Path, database_url: str | None) -> None:
    """List instances (without their tokens)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def action(runtime: Runtime) -> list[dict[str, Any]]:
        return [
            {
                "idInstance": i.id,
                "phone": i.phone,
                "engine": i.engine,
                "stateInstance": i.state.value,
            }
            for i in await runtime.instances.list()
        ]

    rows = _run(_with_runtime(settings, action))
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['idInstance']}  {row['phone']}  {row['engine']}  {row['stateInstance']}")
    if not rows:
        click.echo("no instances")


def _instance_id(value: str) -> int:
    if not value.isdigit():
        raise click.BadParameter(f"{value!r} is not an idInstance")
    return int(value)


def _id_argument(func: F) -> F:
    return click.argument("instance_id", metavar="ID", callback=lambda c, p, v: _instance_id(v))(
        func
    )


@instance.command("show")
@_id_argument
@_json_flag
@_storage_options
def instance_show(
    instance_id: int, as_json: bool, data_dir: Path, database_url: str | None
) -> None:
    """Show an instance with its credentials and webhook signing secret."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def action(runtime: Runtime) -> dict[str, Any]:
        return _details(runtime, await runtime.instances.get(instance_id))

    details = _run(_with_runtime(settings, action))
    if as_json:
        _echo_json(details)
    else:
        for key, value in details.items():
            click.echo(f"{key}: {value}")


@instance.command("delete")
@_id_argument
@_storage_options
def instance_delete(instance_id: int, data_dir: Path, database_url: str | None) -> None:
    """Delete an instance with its pending jobs and notifications."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def action(runtime: Runtime) -> None:
        await runtime.instances.delete(instance_id)

    _run(_with_runtime(settings, action))
    click.echo(f"deleted instance {instance_id}")


@instance.command("rotate-token")
@_id_argument
@_json_flag
@_storage_options
def instance_rotate_token(
    instance_id: int, as_json: bool, data_dir: Path, database_url: str | None
) -> None:
    """Issue a new apiTokenInstance; the old one stops working (on a running server within
    WAGATE_POLL_INTERVAL, the time it caches an instance)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def action(runtime: Runtime) -> dict[str, Any]:
        return _credentials(runtime, await runtime.instances.rotate_token(instance_id))

    created = _run(_with_runtime(settings, action))
    if as_json:
        _echo_json(created)
    else:
        click.echo(f"apiTokenInstance: {created['apiTokenInstance']}")


@instance.command("rotate-signing-secret")
@_id_argument
@_storage_options
def instance_rotate_signing_secret(
    instance_id: int, data_dir: Path, database_url: str | None
) -> None:
    """Issue a new webhook signing secret."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def action(runtime: Runtime) -> Instance:
        return await runtime.instances.rotate_signing_secret(instance_id)

    updated = _run(_with_runtime(settings, action))
    click.echo(f"webhookSigningSecret: {updated.webhook_signing_secret}")


@instance.command("state")
@_id_argument
@click.argument("state", type=click.Choice([s.value for s in InstanceState]))
@_storage_options
def instance_state(instance_id: int, state: str, data_dir: Path, database_url: str | None) -> None:
    """Set a sandbox instance's state, e.g. notAuthorized to test that error."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def action(runtime: Runtime) -> None:
        await runtime.instances.set_state(instance_id, InstanceState(state))

    _run(_with_runtime(settings, action))
    click.echo(f"instance {instance_id} is {state}")


# -- sandbox --------------------------------------------------------------------------------


@main.group()
def sandbox() -> None:
    """The simulated WhatsApp network behind sandbox instances."""


@sandbox.command("load")
@click.argument("world", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_storage_options
def sandbox_load(world: Path, data_dir: Path, database_url: str | None) -> None:
    """Load or update the world from a YAML file (merged by phone and group chatId)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def action(runtime: Runtime) -> Any:
        return await load_world_file(
            world, runtime.store, runtime.images, runtime.settings.phone_digits
        )

    summary: WorldSummary = _run(_with_runtime(settings, action, may_create=True))
    click.echo(
        f"loaded {world} (merged): accounts {summary.accounts}, groups {summary.groups},"
        f" faults {summary.faults}, distinct avatar images {summary.images}"
    )


# -- notifications --------------------------------------------------------------------------


@main.group()
def notifications() -> None:
    """Inspect queued and dead-lettered notifications; replay dead ones."""


@notifications.command("list")
@_id_argument
@click.option("--dead", is_flag=True, help="List dead letters instead of the queue.")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@_json_flag
@_storage_options
def notifications_list(
    instance_id: int,
    dead: bool,
    limit: int,
    as_json: bool,
    data_dir: Path,
    database_url: str | None,
) -> None:
    """List an instance's queued (or dead) notifications, oldest first."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    status = NotificationStatus.DEAD if dead else NotificationStatus.QUEUED

    async def action(runtime: Runtime) -> list[dict[str, Any]]:
        await runtime.instances.get(instance_id)
        return [
            {
                "receiptId": n.receipt_id,
                "status": n.status.value,
                "createdAt": n.created_at.isoformat(),
                "attempts": n.attempts,
                "lastError": n.last_error,
                "body": n.body,
            }
            for n in await runtime.notifications.list_for(instance_id, status, limit)
        ]

    rows = _run(_with_runtime(settings, action))
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        click.echo(
            f"{row['receiptId']}  {row['createdAt']}  {row['body'].get('typeWebhook')}  "
            f"attempts={row['attempts']}  {row['lastError']}"
        )
    if not rows:
        click.echo("no notifications")


@notifications.command("replay")
@_id_argument
@click.argument("receipt_ids", nargs=-1, type=int, metavar="[RECEIPT_ID]...")
@_storage_options
def notifications_replay(
    instance_id: int, receipt_ids: tuple[int, ...], data_dir: Path, database_url: str | None
) -> None:
    """Queue dead notifications again (all of the instance's, or those named)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def action(runtime: Runtime) -> int:
        await runtime.instances.get(instance_id)
        return await runtime.notifications.replay(instance_id, list(receipt_ids) or None)

    count = _run(_with_runtime(settings, action))
    click.echo(f"replayed {count} notification(s)")
