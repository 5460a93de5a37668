"""The server's batching log handler: what it keeps, when it writes, and that nothing is lost."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wagate.log_output import BatchingStreamHandler


class RecordingStream(io.StringIO):
    """A stream that counts its writes and signals each one."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.written = threading.Event()

    def write(self, text: str) -> int:
        self.writes += 1
        count = super().write(text)
        self.written.set()
        return count


@pytest.fixture
def stream() -> RecordingStream:
    return RecordingStream()


def make_logger(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"wagate.test.log_output.{name}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


Batching = Callable[..., tuple[BatchingStreamHandler, logging.Logger]]


@pytest.fixture
def batching() -> Iterator[Batching]:
    """Makes a handler on a stream (an interval no test waits for, unless given) and a logger
    of its own that writes only to it; the handlers are closed at teardown."""
    made: list[BatchingStreamHandler] = []

    def make(
        stream: RecordingStream, name: str, **options: Any
    ) -> tuple[BatchingStreamHandler, logging.Logger]:
        handler = BatchingStreamHandler(stream, **{"interval_s": 3600, **options})
        made.append(handler)
        return handler, make_logger(handler, name)

    yield make
    for handler in made:
        handler.close()


def test_records_below_the_flush_level_are_kept_and_written_together(
    stream: RecordingStream, batching: Batching
) -> None:
    handler, logger = batching(stream, "kept")
    for n in range(100):
        logger.info("request %d", n)
    assert stream.getvalue() == ""
    handler.flush()
    assert stream.writes == 1
    assert stream.getvalue() == "".join(f"INFO request {n}\n" for n in range(100))


def test_a_warning_is_written_at_once_after_the_records_before_it(
    stream: RecordingStream, batching: Batching
) -> None:
    _, logger = batching(stream, "warning")
    logger.info("first")
    logger.warning("second")
    assert stream.getvalue() == "INFO first\nWARNING second\n"
    logger.info("third")
    assert stream.getvalue() == "INFO first\nWARNING second\n"


def test_the_thread_writes_what_is_kept_within_the_interval(
    stream: RecordingStream, batching: Batching
) -> None:
    _, logger = batching(stream, "interval", interval_s=0.01)
    logger.info("on its own")
    assert stream.written.wait(timeout=10), "the flushing thread never wrote"
    assert stream.getvalue() == "INFO on its own\n"


def test_a_burst_is_written_once_the_kept_text_reaches_its_bound(
    stream: RecordingStream, batching: Batching
) -> None:
    _, logger = batching(stream, "burst", max_pending_chars=100)
    line = "x" * 40  # 46 characters with "INFO " and the newline
    logger.info(line)
    logger.info(line)
    assert stream.getvalue() == ""
    logger.info(line)
    assert stream.getvalue() == f"INFO {line}\n" * 3


def test_close_writes_what_is_kept_and_stops_the_thread(stream: RecordingStream) -> None:
    handler = BatchingStreamHandler(stream, interval_s=3600)
    logger = make_logger(handler, "close")
    logger.info("last words")
    handler.close()
    assert stream.getvalue() == "INFO last words\n"
    handler._flusher.join(timeout=10)
    assert not handler._flusher.is_alive()


def test_a_failed_write_is_reported_and_later_records_still_written(
    batching: Batching, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FailingOnce(RecordingStream):
        def write(self, text: str) -> int:
            if self.writes == 0:
                self.writes += 1
                raise OSError("disk full")
            return super().write(text)

    reported: list[logging.LogRecord] = []
    stream = FailingOnce()
    handler, logger = batching(stream, "failing")
    monkeypatch.setattr(handler, "handleError", reported.append)
    logger.warning("lost")
    logger.warning("kept")
    assert len(reported) == 1
    assert stream.getvalue() == "WARNING kept\n"
