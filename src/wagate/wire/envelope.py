"""GREEN-API's error envelope and the redaction of tokens in request paths."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TypedDict

# `/waInstance{id}/{method}/{token}[/...]` and `/partner/{method}/{token}`: the third segment is
# a secret. Redact whatever stands there, valid-looking or not, since a mistyped token is still
# most of a token.
_INSTANCE_PATH = re.compile(r"^(/waInstance[^/]*/[^/]+/)([^/]+)(.*)$", re.IGNORECASE)
_PARTNER_PATH = re.compile(r"^(/partner/[^/]+/)([^/]+)(.*)$", re.IGNORECASE)


class ErrorEnvelope(TypedDict):
    statusCode: int
    timestamp: str
    path: str
    message: str


def redact_path(path: str) -> str:
    """The request path with the token segment replaced by `***` and no query string."""
    path = path.split("?", 1)[0]
    for pattern in (_INSTANCE_PATH, _PARTNER_PATH):
        match = pattern.match(path)
        if match:
            return f"{match.group(1)}***{match.group(3)}"
    return path


def utc_timestamp(now: datetime | None = None) -> str:
    """UTC ISO-8601 with milliseconds, as `2026-11-25T16:21:20.123Z`."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def error_envelope(status_code: int, path: str, message: str) -> ErrorEnvelope:
    return {
        "statusCode": status_code,
        "timestamp": utc_timestamp(),
        "path": redact_path(path),
        "message": message,
    }
