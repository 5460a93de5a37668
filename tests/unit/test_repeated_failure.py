"""`RepeatedFailure`: a step failing round after round is logged once with its traceback, then
once a period while it keeps failing, and once when it works again."""

from __future__ import annotations

import logging

import pytest

from wagate.core.failures import RepeatedFailure

LOGGER = "wagate.test.repeated_failure"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(report: RepeatedFailure, message: str = "database error (OperationalError)") -> None:
    try:
        raise RuntimeError(message)
    except RuntimeError:
        report.failed()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def report(clock: Clock) -> RepeatedFailure:
    return RepeatedFailure(
        logging.getLogger(LOGGER), "claiming avatar jobs", "claim", every_s=60, clock=clock
    )


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == LOGGER]


def test_the_first_failure_is_logged_with_its_traceback(
    report: RepeatedFailure, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    fail(report)
    [record] = records(caplog)
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "claiming avatar jobs failed"
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert record.__dict__["action"] == "claim"
    assert report.failing


def test_failures_within_the_period_add_no_lines_then_one_summary_per_period(
    report: RepeatedFailure, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    fail(report)
    for _ in range(59):  # one a second, as a claim loop retries
        clock.now += 1
        fail(report)
    assert len(records(caplog)) == 1
    clock.now += 1
    fail(report, "database error (InterfaceError)")
    summary = records(caplog)[-1]
    assert len(records(caplog)) == 2
    assert summary.levelno == logging.ERROR and summary.exc_info is None
    assert summary.getMessage() == (
        "claiming avatar jobs still failing: 61 failures in 60 s, "
        "the last: RuntimeError: database error (InterfaceError)"
    )
    clock.now += 59
    fail(report)
    assert len(records(caplog)) == 2
    clock.now += 1
    fail(report)
    assert len(records(caplog)) == 3


def test_a_recovery_is_logged_once_and_a_later_failure_starts_over(
    report: RepeatedFailure, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    report.succeeded()
    assert records(caplog) == []  # nothing to report while it works
    fail(report)
    clock.now += 2.5
    fail(report)
    report.succeeded()
    report.succeeded()
    recovered = records(caplog)[-1]
    assert len(records(caplog)) == 2
    assert recovered.levelno == logging.WARNING
    assert recovered.getMessage() == "claiming avatar jobs works again after 2 failures in 2.5 s"
    assert not report.failing
    clock.now += 1
    fail(report)
    again = records(caplog)[-1]
    assert len(records(caplog)) == 3
    assert again.getMessage() == "claiming avatar jobs failed" and again.exc_info is not None


def test_without_tracebacks_every_line_is_a_warning(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    report = RepeatedFailure(
        logging.getLogger(LOGGER), "the listener", "lost", every_s=60, clock=clock, traceback=False
    )
    fail(report, "server closed the connection")
    clock.now += 61
    fail(report, "connection refused")
    report.succeeded()
    lines = records(caplog)
    assert [r.levelno for r in lines] == [logging.WARNING] * 3
    assert all(r.exc_info is None for r in lines)
    assert (
        lines[0].getMessage() == "the listener failed: RuntimeError: server closed the connection"
    )
    assert lines[1].getMessage() == (
        "the listener still failing: 2 failures in 61 s, the last: RuntimeError: connection refused"
    )
