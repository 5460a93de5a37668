"""`RepeatedFailure`: what a loop logs about a step that fails round after round."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

# How often a step that keeps failing is reported again, after its first failure.
REPORT_EVERY_S = 60.0


class RepeatedFailure:
    """The log of one recurring step of a loop (a worker's claim, a timed retry) while it fails.

    The loops retry such a step every poll interval, so a database that is down for an hour
    would otherwise write a traceback per loop and second. Instead: the first failure with its
    traceback; then, while it keeps failing, one line at most every `every_s` with how many
    failures and for how long, and the last error's type and message; and one line when the
    step works again. Not thread-safe: one instance per loop, used on its event loop.

    With `traceback=False`, for a failure that is expected now and then (a dropped connection
    that is re-opened), every line is a warning and none carries a traceback.
    """

    def __init__(
        self,
        logger: logging.Logger,
        step: str,
        action: str,
        *,
        every_s: float = REPORT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        traceback: bool = True,
    ) -> None:
        self._logger = logger
        self._step = step
        self._action = action
        self._every_s = every_s
        self._clock = clock
        self._traceback = traceback
        self._first_at: float | None = None
        self._reported_at = 0.0
        self._failures = 0

    @property
    def failing(self) -> bool:
        return self._first_at is not None

    def failed(self) -> None:
        """Record a failure; call it from the `except` block that caught it."""
        now = self._clock()
        self._failures += 1
        error = sys.exc_info()[1]
        if self._first_at is None:
            self._first_at = self._reported_at = now
            if self._traceback:
                self._logger.exception("%s failed", self._step, extra={"action": self._action})
            else:
                self._logger.warning(
                    "%s failed: %s", self._step, _describe(error), extra={"action": self._action}
                )
            return
        if now - self._reported_at < self._every_s:
            return
        self._reported_at = now
        self._logger.log(
            logging.ERROR if self._traceback else logging.WARNING,
            "%s still failing: %d failures in %.0f s, the last: %s",
            self._step,
            self._failures,
            now - self._first_at,
            _describe(error),
            extra={"action": self._action, "failures": self._failures},
        )

    def succeeded(self) -> None:
        """Record a success; logs the recovery if the step had been failing."""
        if self._first_at is None:
            return
        self._logger.warning(
            "%s works again after %d failures in %.1f s",
            self._step,
            self._failures,
            self._clock() - self._first_at,
            extra={"action": self._action, "failures": self._failures},
        )
        self._first_at = None
        self._failures = 0


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
