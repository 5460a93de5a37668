"""What WAGATE_CPU_AFFINITY means: its parsing, and the CPUs chosen for each setting."""

from __future__ import annotations

import pytest

from wagate.config import ConfigError, settings_from_env
from wagate.cpu_affinity import (
    AUTO,
    OFF,
    AffinityError,
    choose_cpus,
    format_cpus,
    parse_cpu_affinity,
)

TWO = frozenset({0, 1})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("auto", AUTO),
        (" AUTO ", AUTO),
        ("off", OFF),
        ("1", frozenset({1})),
        ("0,2", frozenset({0, 2})),
        ("2-4", frozenset({2, 3, 4})),
        (" 0 , 4-5 ", frozenset({0, 4, 5})),
        ("3-3", frozenset({3})),
    ],
)
def test_parse(raw: str, expected: object) -> None:
    assert parse_cpu_affinity(raw) == expected


@pytest.mark.parametrize("raw", ["", "x", "1,", "-1", "1-", "3-1", "1;2", "one", "1.5"])
def test_parse_refuses(raw: str) -> None:
    with pytest.raises(ValueError, match=r"CPU"):
        parse_cpu_affinity(raw)


def test_format_cpus_joins_runs() -> None:
    assert format_cpus({5, 0, 1, 2, 7, 8}) == "0-2,5,7-8"
    assert format_cpus({3}) == "3"


def test_auto_keeps_a_sqlite_server_to_the_highest_cpu() -> None:
    placement = choose_cpus(AUTO, is_sqlite=True, available=frozenset({0, 1, 2, 3}))
    assert placement.cpus == frozenset({3})


@pytest.mark.parametrize(
    ("is_sqlite", "available"),
    [(False, TWO), (True, frozenset({4})), (True, None)],
    ids=["postgresql", "one-cpu", "cannot-pin"],
)
def test_auto_leaves_the_process_alone(is_sqlite: bool, available: frozenset[int] | None) -> None:
    placement = choose_cpus(AUTO, is_sqlite=is_sqlite, available=available)
    assert placement.cpus is None and placement.reason


def test_off_and_an_explicit_list() -> None:
    assert choose_cpus(OFF, is_sqlite=True, available=TWO).cpus is None
    explicit = choose_cpus(frozenset({0}), is_sqlite=False, available=TWO)
    assert explicit.cpus == frozenset({0})


def test_an_explicit_list_must_be_available() -> None:
    with pytest.raises(AffinityError, match=r"CPU 2-3 not available .*\(available: 0-1\)"):
        choose_cpus(frozenset({1, 2, 3}), is_sqlite=True, available=TWO)
    with pytest.raises(AffinityError, match="cannot pin"):
        choose_cpus(frozenset({0}), is_sqlite=True, available=None)


def test_settings_read_the_variable() -> None:
    assert settings_from_env({}).cpu_affinity == AUTO
    assert settings_from_env({"WAGATE_CPU_AFFINITY": "0-1"}).cpu_affinity == TWO
    with pytest.raises(ConfigError, match="WAGATE_CPU_AFFINITY"):
        settings_from_env({"WAGATE_CPU_AFFINITY": "most"})
