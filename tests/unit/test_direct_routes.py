"""Which paths the guard serves itself, and with which path parameters."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import Response

from wagate.http import direct
from wagate.http.app import create_app  # noqa: F401 - registers the routes
from wagate.http.routes import notifications


async def _never(request: Request) -> Response:
    raise AssertionError("not called")


def test_instance_method_paths() -> None:
    found = direct.find_instance_method("GET", "getSettings", "1101000001", "/token")
    assert found is not None
    assert found[1] == {"idInstance": "1101000001", "apiTokenInstance": "token"}
    assert direct.find_instance_method("POST", "getSettings", "1101000001", "/token") is None
    assert direct.find_instance_method("GET", "getSettings", "1101000001", "/token/x") is None
    assert direct.find_instance_method("GET", "getSettings", "1101000001", "//x") is None


def test_one_more_segment_becomes_the_named_parameter() -> None:
    found = direct.find_instance_method("DELETE", "deleteNotification", "11", "/tok/42")
    assert found is not None
    assert found[1] == {"idInstance": "11", "apiTokenInstance": "tok", "receiptId": "42"}
    assert found[0].__name__ == notifications.delete_notification.__name__
    from_body = direct.find_instance_method("DELETE", "deleteNotification", "11", "/tok/")
    assert from_body is not None
    assert from_body[0].__name__ == notifications.delete_notification_from_body.__name__
    assert direct.find_instance_method("DELETE", "deleteNotification", "11", "/tok/4/2") is None


def test_plain_routes() -> None:
    assert direct.find_plain("GET", "/ping") is not None
    assert direct.find_plain("POST", "/ping") is not None
    assert direct.find_plain("DELETE", "/ping") is None
    assert direct.find_plain("GET", "/health") is None


def test_unsupported_suffixes_are_refused() -> None:
    with pytest.raises(ValueError):
        direct.add_instance_method("GET", "getSettings", "/{a}/{b}", _never)
