"""`BatchingStreamHandler`: the server's log output, written in batches rather than a system
call per record.

The stock `StreamHandler` writes and flushes every record: one `write` per request through the
access log. Each releases the GIL, and while the store thread is waiting for it (a group commit
in flight, as under load) every such release hands the GIL over and back: two context switches
for one log line. With the app called in-process (no HTTP server), a getAvatarAsync
acknowledgement cost 106 µs of CPU with a write per record and 57 µs without, `/ping` 27 and
24 µs; under wrk, where the HTTP server's own socket calls hand the GIL over as well, the saving
was ~3-5 µs a request (docs/benchmarks.md, the change table's row on the log output). Batching
the writes removes the system calls from the event loop's path: a record is formatted and
kept, and a thread writes what was kept every `interval_s`. Nothing waits longer than that to be
seen, and a record at `flush_level` or above (a warning, an error) is written at once, with
everything before it, so that the lines that matter most are never the ones lost if the process
is killed.
"""

from __future__ import annotations

import logging
import threading
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """A `StreamHandler` that keeps formatted records and writes them together: every
    `interval_s` (from a daemon thread), at once for a record at `flush_level` or above, and
    when `max_pending_chars` are kept (a log burst must not grow without bound). `flush()` and
    `close()` (and so `logging.shutdown()` at exit) write what is kept."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval_s: float = 0.1,
        flush_level: int = logging.WARNING,
        max_pending_chars: int = 256 * 1024,
    ) -> None:
        super().__init__(stream)
        self.interval_s = interval_s
        self.flush_level = flush_level
        self.max_pending_chars = max_pending_chars
        self._pending: list[str] = []
        self._pending_chars = 0
        self._stopping = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every_interval, name="log-flush", daemon=True
        )
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Called by `handle()` with the handler's lock held.
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        self._pending_chars += len(line)
        if record.levelno >= self.flush_level or self._pending_chars >= self.max_pending_chars:
            self.flush()

    def flush(self) -> None:
        """Write what is kept, then flush the stream."""
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            if self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                self._pending_chars = 0
                try:
                    self.stream.write(text)
                except Exception:
                    # As `emit` would report a failed write; the batch is gone either way.
                    self.handleError(
                        logging.makeLogRecord({"msg": "log output failed", "args": None})
                    )
            super().flush()

    def close(self) -> None:
        """Write what is kept and stop the flushing thread (without waiting for it: at exit
        `logging.shutdown` calls this holding the lock the thread may be waiting for)."""
        self._stopping.set()
        self.flush()
        super().close()

    def _flush_every_interval(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.flush()


def server_log_output(stream: TextIO) -> BatchingStreamHandler:
    """The handler `wagate serve` logs through, in its format: batched writes, not one per
    record (this module's docstring says why). Also stops computing, for every record, fields
    the format does not show (the logging HOWTO's "Optimization"): the caller's file and line (a
    stack walk), thread and process names. They were ~8 % of the event loop's time under load,
    through the access log."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler
