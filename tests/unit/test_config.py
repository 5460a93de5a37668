"""`settings_from_env` refuses what no server could run with, with the variable's name: a log
level logging does not know, a database URL of a database wagate has no store for."""

from __future__ import annotations

import pytest

from wagate.config import ConfigError, settings_from_env


@pytest.mark.parametrize("raw", ["debug", "INFO", " warning "])
def test_log_levels_are_read_in_any_case(raw: str) -> None:
    assert settings_from_env({"WAGATE_LOG_LEVEL": raw}).log_level == raw.strip().upper()


def test_an_unknown_log_level_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"WAGATE_LOG_LEVEL must be one of DEBUG, .*'LOUD'"):
        settings_from_env({"WAGATE_LOG_LEVEL": "LOUD"})


@pytest.mark.parametrize(
    "url",
    [
        "",
        "sqlite:///wagate.sqlite3",
        "sqlite:////var/lib/wagate/wagate.sqlite3",
        "postgresql://wagate@127.0.0.1/wagate",
        "postgresql+psycopg://wagate@127.0.0.1/wagate",
        "postgres://wagate@127.0.0.1/wagate",
    ],
)
def test_database_urls_wagate_has_a_store_for(url: str) -> None:
    assert settings_from_env({"WAGATE_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("mysql://user:hunter2@db/wagate", "got mysql://..."),
        ("wagate.sqlite3", "got a URL without a scheme"),
        ("sqlite://", "not an in-memory database"),
        ("sqlite:///:memory:", "not an in-memory database"),
    ],
)
def test_other_database_urls_are_refused_without_showing_them(url: str, said: str) -> None:
    with pytest.raises(ConfigError, match="WAGATE_DATABASE_URL") as caught:
        settings_from_env({"WAGATE_DATABASE_URL": url})
    assert said in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_database_url_given_as_a_flag_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="got mysql://"):
        settings_from_env({}, database_url="mysql://db/wagate")


@pytest.mark.parametrize(
    "url", ["https://wagate.example.com", "http://127.0.0.1:8080/", "http://[::1]:8080/gw"]
)
def test_public_urls_clients_can_use(url: str) -> None:
    assert settings_from_env({}, public_url=url).public_url == url


@pytest.mark.parametrize(
    "url", ["http://[::1", "wagate.example.com", "ftp://host/", "http://host:99999/"]
)
def test_public_urls_no_client_could_reach_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="WAGATE_PUBLIC_URL must be an http"):
        settings_from_env({"WAGATE_PUBLIC_URL": url})


def test_redis_urls_are_checked_without_showing_them() -> None:
    ok = "redis://:hunter2@127.0.0.1:6379/0"
    assert settings_from_env({"WAGATE_REDIS_URL": ok}).redis_url == ok
    for bad in ("garbage", "http://:hunter2@127.0.0.1/"):
        with pytest.raises(ConfigError, match="WAGATE_REDIS_URL must be") as caught:
            settings_from_env({"WAGATE_REDIS_URL": bad})
        assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e400", "3.2e9", "0.001", "-1"])
@pytest.mark.parametrize(
    "name", ["WAGATE_AVATAR_TIMEOUT", "WAGATE_NOTIFICATION_RETENTION", "WAGATE_POLL_INTERVAL"]
)
def test_durations_outside_their_range_are_refused(name: str, raw: str) -> None:
    """nan and inf parse as floats; before, they (and a century or more) crashed `serve` when
    turned into a lease or a retention period."""
    with pytest.raises(ConfigError, match=rf"{name} must be from 0.01 to 3153600000 seconds"):
        settings_from_env({name: raw})


def test_durations_in_range_are_read() -> None:
    settings = settings_from_env(
        {"WAGATE_AVATAR_TIMEOUT": "0.5", "WAGATE_NOTIFICATION_RETENTION": "3153600000"}
    )
    assert (settings.avatar_timeout_s, settings.notification_retention_s) == (0.5, 3153600000)


@pytest.mark.parametrize(
    ("name", "field", "low", "high"),
    [
        ("WAGATE_AVATAR_WORKERS", "avatar_workers", 1, 1024),
        ("WAGATE_WEBHOOK_CONCURRENCY", "webhook_concurrency", 1, 10_000),
        ("WAGATE_MAX_BODY_BYTES", "max_body_bytes", 1024, 1 << 30),
        ("WAGATE_PORT", "port", 1, 65535),
    ],
)
def test_counts_outside_their_range_are_refused(name: str, field: str, low: int, high: int) -> None:
    """A worker count past 64 bits made every avatar job claim fail (it is the claim's LIMIT)."""
    for raw in (str(low - 1), str(high + 1), "100000000000000000000"):
        with pytest.raises(ConfigError, match=rf"{name} must be from {low} to {high}, got '{raw}'"):
            settings_from_env({name: raw})
    assert getattr(settings_from_env({name: str(low)}), field) == low
    assert getattr(settings_from_env({name: str(high)}), field) == high


@pytest.mark.parametrize(
    ("token", "said"),
    [
        ("short", "must be 16 to 200 characters long, got 5"),
        ("x" * 201, "must be 16 to 200 characters long, got 201"),
        ("secret-with/slash-in-it", "may hold only letters, digits and . _ ~ -"),
        ("secret with spaces inside", "may hold only letters, digits and . _ ~ -"),
        ("secret\nwith-a-newline", "may hold only letters, digits and . _ ~ -"),
    ],
)
def test_partner_tokens_no_client_could_send_or_too_short_are_refused(
    token: str, said: str
) -> None:
    """The token goes in the URL path and can delete every instance; the message never
    repeats it."""
    with pytest.raises(ConfigError, match=f"WAGATE_PARTNER_TOKEN {said}") as caught:
        settings_from_env({"WAGATE_PARTNER_TOKEN": token})
    assert token not in str(caught.value)


@pytest.mark.parametrize("token", ["", "0123456789abcdef", "Az09._~-" * 25])
def test_partner_tokens_that_work_are_kept(token: str) -> None:
    assert settings_from_env({"WAGATE_PARTNER_TOKEN": token}).partner_token == token


def test_dead_letters_are_kept_unless_a_retention_is_set() -> None:
    assert settings_from_env({}).dead_letter_retention_s == 0.0
    week = settings_from_env({"WAGATE_DEAD_LETTER_RETENTION": "604800"})
    assert week.dead_letter_retention_s == 604800.0
    for raw in ("-1", "nan", "inf"):
        with pytest.raises(ConfigError, match=r"WAGATE_DEAD_LETTER_RETENTION must be from 0\.0 to"):
            settings_from_env({"WAGATE_DEAD_LETTER_RETENTION": raw})
