"""The declared schema: every table wagate keeps, as SQLAlchemy Core metadata.

Migrations under `migrations/versions` must produce exactly this (a test compares them). Change
both together, and never edit a released migration: add the next numbered one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
    true,
)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every dialect.

    PostgreSQL stores `timestamptz`. SQLite has no datetime type: SQLAlchemy stores ISO text, which
    sorts and compares correctly only when every value is in the same zone, so values are
    normalised to naive UTC on the way in and get their UTC zone back on the way out.
    Naive datetimes are refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    # On SQLite the two steps above (this decorator's, then SQLAlchemy's text conversion, a
    # regular expression) are done in one: every queued notification and claimed job read or
    # written carries a timestamp, and the two-step conversions were ~8 % of the avatar
    # worker's time. Same text as SQLAlchemy's SQLite DATETIME: microseconds always written.
    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def to_text(value: datetime | None) -> str | None:
            naive = self.process_bind_param(value, dialect)
            return None if naive is None else naive.isoformat(" ", timespec="microseconds")

        return to_text

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def from_text(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)

        return from_text


# BIGINT on PostgreSQL; on SQLite only a column declared INTEGER PRIMARY KEY aliases the rowid,
# which AUTOINCREMENT needs and which saves a separate index.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Deterministic constraint names, so later migrations can refer to them on both dialects.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

instances = Table(
    "instances",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=False),
    Column("api_token", String(200), nullable=False),
    Column("engine", String(50), nullable=False),
    # NULL when the instance has no phone (a relay before it learns its account), because UNIQUE
    # lets any number of NULLs through but only one empty string.
    Column("phone", String(32), nullable=True, unique=True),
    Column("state", String(32), nullable=False),
    Column("webhook_signing_secret", String(200), nullable=False),
    Column("settings", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # settings.webhook_url != "", kept in sync by the store so that claiming push lanes need not
    # parse the settings JSON (0002).
    Column("push_mode", Boolean, nullable=False, server_default=false()),
)

# Only push-mode instances are scanned when lanes are claimed; a polling instance costs nothing.
# The head of each one is then a seek on notifications (instance_id, status, receipt_id).
Index(
    "ix_instances_push_mode",
    instances.c.id,
    sqlite_where=instances.c.push_mode == true(),
    postgresql_where=instances.c.push_mode == true(),
)

# The delivery lease of each instance's push lane (0002). A table of its own rather than a
# column on `instances`: claiming locks and updates lane rows (FOR UPDATE SKIP LOCKED) several
# times a second per busy instance on PostgreSQL, and on `instances` that would make
# update_instance (setSettings, state changes) wait for claims and avatar-job claims (which lock
# instance rows with SKIP LOCKED) skip instances whose lane is being claimed; every renewal
# would also rewrite the wide instance row. Lane rows are narrow, locked by no one else, and
# their lease updates are HOT. Every instance gets one when it is created.
push_lanes = Table(
    "push_lanes",
    metadata,
    Column(
        "instance_id",
        BigId,
        ForeignKey("instances.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    # Set while a dispatcher holds the lane; NULL or a past value means the lane is free.
    Column("lease_until", UtcDateTime, nullable=True),
)

sandbox_accounts = Table(
    "sandbox_accounts",
    metadata,
    Column("phone", String(32), primary_key=True),
    Column("name", Text, nullable=False),
    Column("on_whatsapp", Boolean, nullable=False),
    Column("avatar_digest", String(64), nullable=True),
    Column("avatar_privacy", String(16), nullable=False),
    Column("contacts", Text, nullable=False),
    Column("lid", String(32), nullable=True, unique=True),
)

sandbox_groups = Table(
    "sandbox_groups",
    metadata,
    Column("chat_id", String(100), primary_key=True),
    Column("subject", Text, nullable=False),
    Column("avatar_digest", String(64), nullable=True),
    Column("participants", Text, nullable=False),
)

sandbox_faults = Table(
    "sandbox_faults",
    metadata,
    Column("chat_id", String(100), primary_key=True),
    Column("kind", String(32), nullable=False),
)

avatar_jobs = Table(
    "avatar_jobs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "instance_id",
        BigId,
        ForeignKey("instances.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("chat_id", String(100), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Set while a worker holds the job; a past value means that worker died.
    Column("claimed_until", UtcDateTime, nullable=True),
    # Claims so far (0006): a lookup that fails on every one is given up after a few.
    Column("attempts", Integer, nullable=False, server_default="0"),
    Index(None, "instance_id", "id"),
    # The claim asks "has this instance a live claim?" of every candidate instance.
    Index(None, "instance_id", "claimed_until"),
    sqlite_autoincrement=True,
)

notifications = Table(
    "notifications",
    metadata,
    Column("receipt_id", BigId, primary_key=True, autoincrement=True),
    Column(
        "instance_id",
        BigId,
        ForeignKey("instances.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    # Stable across retries and replays: receivers dedupe pushes on it (Standard Webhooks).
    Column("webhook_id", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=False, server_default=""),
    Index(None, "instance_id", "status", "receipt_id"),
    # The retention sweep looks for old queued rows across all instances.
    Index(None, "status", "created_at"),
    # AUTOINCREMENT keeps receipt ids growing after the newest row is deleted.
    sqlite_autoincrement=True,
)

# The notifications waiting for a retry (0005): a failed push sets next_attempt_at on its lane's
# head, and the push dispatcher asks for the earliest of the queued ones whenever it goes idle;
# without this index that question read the head of every push-mode instance. The status leads
# so that dead letters (which keep their last retry time) are never walked, and so that SQLite
# prefers this index to (status, created_at): both match the status, only this one gives the order.
Index(
    "ix_notifications_retry_due",
    notifications.c.status,
    notifications.c.next_attempt_at,
    sqlite_where=notifications.c.next_attempt_at.is_not(None),
    postgresql_where=notifications.c.next_attempt_at.is_not(None),
)

# Avatar images addressed by the SHA-256 hex digest of `data` (0003), for `SqlImageStore`: nodes
# on several hosts then share images without a shared directory. Rows are never updated.
avatar_images = Table(
    "avatar_images",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("content_type", String(32), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)
