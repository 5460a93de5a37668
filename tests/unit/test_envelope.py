"""The error envelope and token redaction."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wagate.wire.envelope import error_envelope, redact_path, utc_timestamp

TOKEN = "d75b3a66374942c5b3c019c698abc2067e151558acbd412345"


@pytest.mark.parametrize(
    ("path", "redacted"),
    [
        (f"/waInstance1101000001/getAvatar/{TOKEN}", "/waInstance1101000001/getAvatar/***"),
        (f"/WAINSTANCE1101000001/GetAvatar/{TOKEN}", "/WAINSTANCE1101000001/GetAvatar/***"),
        (
            f"/waInstance1101000001/deleteNotification/{TOKEN}/42",
            "/waInstance1101000001/deleteNotification/***/42",
        ),
        (f"/waInstanceabc/x/{TOKEN}?q=1", "/waInstanceabc/x/***"),
        (f"/partner/getInstances/{TOKEN}", "/partner/getInstances/***"),
        ("/waInstance1101000001/getAvatar", "/waInstance1101000001/getAvatar"),
        ("/health?verbose=1", "/health"),
    ],
)
def test_redact_path(path: str, redacted: str) -> None:
    assert redact_path(path) == redacted


def test_envelope_shape() -> None:
    envelope = error_envelope(401, f"/waInstance1/getSettings/{TOKEN}", "Unauthorized")
    assert envelope["statusCode"] == 401
    assert envelope["message"] == "Unauthorized"
    assert envelope["path"] == "/waInstance1/getSettings/***"
    assert TOKEN not in str(envelope)


def test_timestamp_is_utc_with_milliseconds() -> None:
    moment = datetime(2026, 11, 25, 16, 21, 20, 123456, tzinfo=UTC)
    assert utc_timestamp(moment) == "2026-11-25T16:21:20.123Z"
