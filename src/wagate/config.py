"""One Settings object, read once at start from flags and `WAGATE_*` environment variables."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wagate.cpu_affinity import AUTO, CpuAffinity, parse_cpu_affinity

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# The SQLite database's name in the data directory.
DATABASE_FILE = "wagate.sqlite3"


class ConfigError(ValueError):
    """A setting has a value wagate cannot use."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./wagate-data")
    database_url: str = ""
    public_url: str = ""
    avatar_timeout_s: float = 10.0
    notification_retention_s: float = 86400.0
    # Seconds after it was queued that a dead letter is deleted; 0 keeps dead letters until
    # they are replayed or their instance is deleted.
    dead_letter_retention_s: float = 0.0
    max_body_bytes: int = 1_048_576
    rate_limits_enabled: bool = True
    # With Redis, every node draws on one budget per instance and method; without, each node
    # enforces the full limit on its own.
    redis_url: str = ""
    phone_digits: tuple[int, int] = (11, 12)
    partner_token: str = ""
    webhook_timeout_s: float = 30.0
    webhook_max_interval_s: float = 60.0
    webhook_allow: tuple[IpNetwork, ...] = ()
    webhook_deny: tuple[IpNetwork, ...] = ()
    # Receivers pushed to at once, across instances (each instance has one in flight).
    webhook_concurrency: int = 64
    # How often waiters re-read the store even without a wake-up: the guarantee behind wake-ups
    # that another process (the CLI, another node) cannot send.
    poll_interval_s: float = 1.0
    migrate_on_start: bool = True
    avatar_workers: int = 8
    log_level: str = "INFO"
    # `serve` only: the CPUs the process keeps to (wagate/cpu_affinity.py says why).
    cpu_affinity: CpuAffinity = AUTO

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / DATABASE_FILE).resolve()}"

    @property
    def effective_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# A century: durations are turned into datetime.timedelta (leases, retention), which overflows
# a little past 2.7 million years, and "nan" or "inf" parse as floats but are no duration.
_MAX_SECONDS = 100 * 365 * 86400


def _float(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float = 0.0,
    maximum: float = _MAX_SECONDS,
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if not minimum <= value <= maximum:  # also false for nan
        raise ConfigError(f"{name} must be from {minimum} to {maximum:.10g} seconds, got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be from {minimum} to {maximum}, got {raw!r}")
    return value


def _phone_digits(raw: str | None) -> tuple[int, int]:
    if not raw:
        return (11, 12)
    low, _, high = raw.partition("-")
    try:
        bounds = (int(low), int(high or low))
    except ValueError as exc:
        raise ConfigError(f"WAGATE_PHONE_DIGITS must look like 11-12, got {raw!r}") from exc
    if not 1 <= bounds[0] <= bounds[1] <= 20:
        raise ConfigError(f"WAGATE_PHONE_DIGITS must be a range within 1-20, got {raw!r}")
    return bounds


def _networks(name: str, raw: str | None) -> tuple[IpNetwork, ...]:
    if not raw or not raw.strip():
        return ()
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in raw.split(",")
            if part.strip()
        )
    except ValueError as exc:
        raise ConfigError(f"{name} must be a comma-separated list of CIDR ranges: {exc}") from exc


def cpu_affinity_setting(raw: str | None) -> CpuAffinity:
    if raw is None or not raw.strip():
        return AUTO
    try:
        return parse_cpu_affinity(raw)
    except ValueError as exc:
        raise ConfigError(f"WAGATE_CPU_AFFINITY: {exc}") from exc


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "on", "yes", "true"):
        return True
    if value in ("0", "off", "no", "false"):
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")


def _log_level(raw: str | None) -> str:
    if raw is None or raw == "":
        return "INFO"
    level = raw.strip().upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"WAGATE_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {raw!r}")
    return level


def _scheme(url: str) -> tuple[str, str]:
    """The URL's scheme in lower case ("" without one), and the URL as an error message may
    name it: by its scheme only, since the rest may hold a password."""
    scheme, separator, _ = url.partition("://")
    if not separator:
        return "", "a URL without a scheme"
    return scheme.lower(), f"{scheme}://..."


def _check_database_url(url: str) -> None:
    """Refuse a URL of a database wagate has no store for."""
    if not url:
        return
    scheme, shown = _scheme(url)
    backend = scheme.partition("+")[0]
    if backend not in _DATABASE_SCHEMES:
        raise ConfigError(
            "--database-url / WAGATE_DATABASE_URL must be postgresql://... or "
            f"sqlite:///path, got {shown}"
        )
    if backend == "sqlite":
        # sqlite:///relative/path or sqlite:////absolute/path; sqlite:// is in memory.
        path = url.partition("://")[2].removeprefix("/").partition("?")[0]
        if not path or path == ":memory:":
            raise ConfigError(
                "--database-url / WAGATE_DATABASE_URL: wagate needs an SQLite file "
                "(sqlite:///path), not an in-memory database"
            )


def _check_public_url(url: str) -> None:
    """apiUrl, mediaUrl and avatar links are built on it: an http(s) URL with a host."""
    if not url:
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "--public-url / WAGATE_PUBLIC_URL must be an http(s) URL with a host, such as "
            "https://wagate.example.com"
        )


def _check_redis_url(url: str) -> None:
    """Refuse a URL the Redis client cannot use."""
    if not url:
        return
    scheme, shown = _scheme(url)
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"WAGATE_REDIS_URL must be redis://, rediss:// or unix://..., got {shown}"
        )


_TOKEN_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-")


def partner_token_problem(token: str) -> str | None:
    """Why `token` cannot be the partner token, or None. It travels in the URL path, so only
    characters a path carries as they are; and it can create and delete every instance, so not
    a short one. The answer never quotes the token."""
    if not 16 <= len(token) <= 200:
        return f"must be 16 to 200 characters long, got {len(token)}"
    if not _TOKEN_CHARACTERS.issuperset(token):
        return "may hold only letters, digits and . _ ~ - (it is part of the URL path)"
    return None


def _check_partner_token(token: str) -> None:
    problem = partner_token_problem(token) if token else None
    if problem is not None:
        raise ConfigError(f"WAGATE_PARTNER_TOKEN {problem}")


# Beyond these a value is a mistake, not a size: the worker count is a claim's LIMIT (a number
# past 64 bits made every claim fail), and each pushing connection is a socket.
_MAX_AVATAR_WORKERS = 1024
_MAX_WEBHOOK_CONCURRENCY = 10_000


def settings_from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from `WAGATE_*` variables; keyword overrides (CLI flags) win unless None.

    Flags that click already reads from the environment (host, port, data dir, database URL,
    public URL) arrive as overrides; the rest are read here.
    """
    env = os.environ if env is None else env
    settings = Settings(
        host=env.get("WAGATE_HOST", "127.0.0.1"),
        port=_int(env, "WAGATE_PORT", 8080, minimum=1, maximum=65535),
        data_dir=Path(env.get("WAGATE_DATA_DIR", "./wagate-data")),
        database_url=env.get("WAGATE_DATABASE_URL", ""),
        public_url=env.get("WAGATE_PUBLIC_URL", ""),
        avatar_timeout_s=_float(env, "WAGATE_AVATAR_TIMEOUT", 10.0, minimum=0.01),
        notification_retention_s=_float(env, "WAGATE_NOTIFICATION_RETENTION", 86400.0, 0.01),
        dead_letter_retention_s=_float(env, "WAGATE_DEAD_LETTER_RETENTION", 0.0),
        max_body_bytes=_int(env, "WAGATE_MAX_BODY_BYTES", 1_048_576, minimum=1024, maximum=1 << 30),
        rate_limits_enabled=_bool(env, "WAGATE_RATE_LIMITS", True),
        redis_url=env.get("WAGATE_REDIS_URL", ""),
        phone_digits=_phone_digits(env.get("WAGATE_PHONE_DIGITS")),
        partner_token=env.get("WAGATE_PARTNER_TOKEN", ""),
        webhook_timeout_s=_float(env, "WAGATE_WEBHOOK_TIMEOUT", 30.0, minimum=0.01),
        webhook_max_interval_s=_float(env, "WAGATE_WEBHOOK_MAX_INTERVAL", 60.0, minimum=0.01),
        webhook_allow=_networks("WAGATE_WEBHOOK_ALLOW", env.get("WAGATE_WEBHOOK_ALLOW")),
        webhook_deny=_networks("WAGATE_WEBHOOK_DENY", env.get("WAGATE_WEBHOOK_DENY")),
        webhook_concurrency=_int(
            env, "WAGATE_WEBHOOK_CONCURRENCY", 64, minimum=1, maximum=_MAX_WEBHOOK_CONCURRENCY
        ),
        poll_interval_s=_float(env, "WAGATE_POLL_INTERVAL", 1.0, minimum=0.01),
        avatar_workers=_int(
            env, "WAGATE_AVATAR_WORKERS", 8, minimum=1, maximum=_MAX_AVATAR_WORKERS
        ),
        log_level=_log_level(env.get("WAGATE_LOG_LEVEL")),
        cpu_affinity=cpu_affinity_setting(env.get("WAGATE_CPU_AFFINITY")),
    )
    settings = settings.with_overrides(**overrides)
    _check_database_url(settings.database_url)
    _check_public_url(settings.public_url)
    _check_redis_url(settings.redis_url)
    _check_partner_token(settings.partner_token)
    return settings
