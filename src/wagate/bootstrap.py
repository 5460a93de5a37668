"""The only place that turns Settings into a store, engines, services and workers."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from wagate.config import Settings, partner_token_problem
from wagate.core.avatars import AvatarService
from wagate.core.errors import WagateError
from wagate.core.instances import InstanceService
from wagate.core.notifications import NotificationService
from wagate.core.ports import Engine, ImageStore, PipelineEvents, RateLimits, Store, WakeUps
from wagate.core.rate_limits import RateLimiter
from wagate.core.settings import SettingsService
from wagate.core.wakeups import LocalWakeUps
from wagate.core.webhook_policy import WebhookAddressPolicy
from wagate.engines.sandbox import SandboxEngine
from wagate.stores import migrate, open_store
from wagate.stores.files import FileImageStore
from wagate.stores.postgres_wakeups import PostgresWakeUps
from wagate.stores.redis_rate_limits import RedisRateLimiter
from wagate.stores.sql import SqlStore
from wagate.stores.sql_images import SqlImageStore
from wagate.workers.avatar_jobs import (
    JOBS_PER_INSTANCE,
    JOBS_PER_INSTANCE_SQLITE,
    AvatarJobWorker,
)
from wagate.workers.delivery import PushDispatcher
from wagate.workers.retention import RetentionWorker
from wagate.workers.webhook_sender import HttpWebhookSender, Resolver, resolve_host

logger = logging.getLogger(__name__)

PARTNER_TOKEN_FILE = "partner-token"  # noqa: S105 - a file name, not a secret
# The avatar images' directory in the data directory (SQLite; PostgreSQL keeps them in tables).
AVATARS_DIR = "avatars"
# Notifications read ahead per polled instance on SQLite: one read serves this many receives.
_POLL_PREFETCH = 16


@dataclass
class Runtime:
    """Everything a process needs, opened together and closed together."""

    settings: Settings
    store: Store
    images: ImageStore
    engines: dict[str, Engine]
    wakeups: WakeUps
    instances: InstanceService
    avatars: AvatarService
    notifications: NotificationService
    settings_service: SettingsService
    webhooks: HttpWebhookSender
    rate_limiter: RateLimits
    partner_token: str
    public_url: str = ""


def _read_or_create_partner_token(data_dir: Path) -> str:
    path = data_dir / PARTNER_TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        problem = partner_token_problem(token)
        if problem is not None:
            raise WagateError(f"the partner token in {path} {problem}")
        return token
    token = secrets.token_hex(25)
    # Created with owner-only permissions: the token can create and delete instances.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, resolver: Resolver = resolve_host
) -> AsyncIterator[Runtime]:
    """Open the store and build the services. Migrations run first unless
    `settings.migrate_on_start` is off; `resolver` is how webhook hosts are resolved (tests
    substitute their own DNS)."""
    await anyio.to_thread.run_sync(lambda: settings.data_dir.mkdir(parents=True, exist_ok=True))
    if settings.migrate_on_start:
        await anyio.to_thread.run_sync(migrate, settings.effective_database_url)
    partner_token = settings.partner_token or await anyio.to_thread.run_sync(
        _read_or_create_partner_token, settings.data_dir
    )
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(settings.effective_database_url))
        images = _image_store(settings, store)
        wakeups = await stack.enter_async_context(_wakeups(settings))
        rate_limiter = _rate_limits(settings)
        stack.push_async_callback(rate_limiter.aclose)
        sandbox = SandboxEngine(store, images)
        stack.push_async_callback(sandbox.aclose)
        engines: dict[str, Engine] = {sandbox.name: sandbox}
        webhooks = HttpWebhookSender(
            WebhookAddressPolicy(settings.webhook_allow, settings.webhook_deny),
            timeout_s=settings.webhook_timeout_s,
            max_connections=settings.webhook_concurrency,
            resolver=resolver,
        )
        stack.push_async_callback(webhooks.aclose)
        instances = InstanceService(
            store, cache_ttl_s=settings.poll_interval_s, phone_digits=settings.phone_digits
        )
        # One server process writes an SQLite store alone, so it may answer polls from a window
        # of prefetched notifications (see NotificationService); PostgreSQL nodes share theirs.
        notifications = NotificationService(
            store,
            wakeups,
            settings.poll_interval_s,
            prefetch=_POLL_PREFETCH if settings.is_sqlite else 1,
        )
        stack.push_async_callback(notifications.aclose)  # before the store closes
        runtime: Runtime
        avatars = AvatarService(
            store,
            engines,
            images,
            wakeups,
            public_url=lambda: runtime.public_url,
            timeout_s=settings.avatar_timeout_s,
        )
        runtime = Runtime(
            settings=settings,
            store=store,
            images=images,
            engines=engines,
            wakeups=wakeups,
            instances=instances,
            avatars=avatars,
            notifications=notifications,
            settings_service=SettingsService(instances, notifications, webhooks, wakeups),
            webhooks=webhooks,
            rate_limiter=rate_limiter,
            partner_token=partner_token,
        )
        runtime.public_url = await store.get_meta("public_url") or settings.effective_public_url
        yield runtime


def _image_store(settings: Settings, store: SqlStore) -> ImageStore:
    # Several nodes on PostgreSQL may run on several hosts: keep images where they all look.
    if settings.is_sqlite:
        return FileImageStore(settings.data_dir / AVATARS_DIR)
    return SqlImageStore(*store.engines)


@asynccontextmanager
async def _wakeups(settings: Settings) -> AsyncIterator[WakeUps]:
    # On PostgreSQL, other nodes' long polls and workers must wake too: LISTEN/NOTIFY.
    if settings.is_sqlite:
        local = LocalWakeUps()
        try:
            yield local
        finally:
            await local.aclose()
    else:
        async with PostgresWakeUps(settings.effective_database_url) as shared:
            yield shared


def _rate_limits(settings: Settings) -> RateLimits:
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, enabled=settings.rate_limits_enabled)
    return RateLimiter(enabled=settings.rate_limits_enabled)


@asynccontextmanager
async def run_workers(
    runtime: Runtime, events: PipelineEvents | None = None
) -> AsyncIterator[None]:
    """Run the background loops while the block runs; cancel and await them after it. What
    they do is counted on `events` (the server's `/metrics`)."""
    settings = runtime.settings
    if settings.is_sqlite:
        # One server per SQLite file (`serve` holds the file's server lock,
        # stores/server_lock.py): any lease in it belongs to a process that is gone.
        await runtime.store.release_leases()
    workers = {
        "avatar-jobs": AvatarJobWorker(
            runtime.store,
            runtime.instances,
            runtime.avatars,
            runtime.wakeups,
            concurrency=settings.avatar_workers,
            poll_interval_s=settings.poll_interval_s,
            phone_digits=settings.phone_digits,
            jobs_per_instance=(
                JOBS_PER_INSTANCE_SQLITE if settings.is_sqlite else JOBS_PER_INSTANCE
            ),
            events=events,
        ).run(),
        "delivery": PushDispatcher(
            runtime.store,
            runtime.instances,
            runtime.webhooks,
            runtime.wakeups,
            concurrency=settings.webhook_concurrency,
            timeout_s=settings.webhook_timeout_s,
            max_interval_s=settings.webhook_max_interval_s,
            poll_interval_s=settings.poll_interval_s,
            ids_commit_in_order=settings.is_sqlite,
            events=events,
        ).run(),
        "retention": RetentionWorker(
            runtime.notifications,
            settings.notification_retention_s,
            settings.dead_letter_retention_s,
            events=events,
        ).run(),
    }
    tasks = [asyncio.create_task(coro, name=name) for name, coro in workers.items()]
    for task in tasks:
        task.add_done_callback(_report_dead_worker)
    try:
        yield
    finally:
        for task in tasks:
            task.remove_done_callback(_report_dead_worker)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _report_dead_worker(task: asyncio.Task[None]) -> None:
    # Worker loops catch per-iteration errors; one that still ends is a bug worth shouting about.
    if not task.cancelled():
        logger.critical(
            "worker %s stopped",
            task.get_name(),
            exc_info=task.exception(),
            extra={"action": "worker_died"},
        )
