"""The error contract: status codes, check order, exact messages and the redacted envelope."""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Demo, make_settings, start_demo
from wagate.bootstrap import Runtime

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def assert_envelope(response: httpx.Response, status: int, message: str, path: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"statusCode", "timestamp", "path", "message"}
    assert body["statusCode"] == status
    assert TIMESTAMP.match(body["timestamp"])
    assert body["message"] == message
    assert body["path"] == path


def test_envelope_redacts_the_token(demo: Demo) -> None:
    token = demo.instance.api_token
    response = httpx.post(demo.method_url("getAvatar") + "?x=1", json={"chatId": "1"})
    assert token not in response.text
    assert_envelope(
        response, 400, "bad request data", f"/waInstance{demo.instance.id}/getAvatar/***"
    )


def test_non_numeric_instance_id(demo: Demo) -> None:
    response = httpx.post(f"{demo.url}/waInstanceabc/getAvatar/{'0' * 50}", json={})
    assert_envelope(
        response, 400, "Parameter idInstance not an integer", "/waInstanceabc/getAvatar/***"
    )


def test_unknown_method_and_wrong_verb_are_404(demo: Demo) -> None:
    unknown = httpx.post(demo.method_url("getAvatarPlease"), json={})
    assert_envelope(unknown, 404, "Not Found", f"/waInstance{demo.instance.id}/getAvatarPlease/***")
    wrong_verb = httpx.get(demo.method_url("getAvatar"))
    assert wrong_verb.status_code == 404
    assert wrong_verb.json()["message"] == "invalid request method used"


def test_unknown_instance_then_wrong_token(demo: Demo) -> None:
    other = httpx.post(f"{demo.url}/waInstance1234567890/getAvatar/{'0' * 50}", json={})
    assert_envelope(other, 403, "Forbidden", "/waInstance1234567890/getAvatar/***")
    url = f"{demo.url}/waInstance{demo.instance.id}/getAvatar/{'0' * 50}"
    wrong = httpx.post(url, json={})
    assert_envelope(wrong, 401, "Unauthorized", f"/waInstance{demo.instance.id}/getAvatar/***")


def test_method_names_match_case_insensitively(demo: Demo) -> None:
    for spelling in ("GetAvatar", "GETAVATAR", "getavatar"):
        response = httpx.post(demo.method_url(spelling), json={"chatId": "11001234568@c.us"})
        assert response.status_code == 200, spelling


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "Invalid JSON body"),
        (b"[]", "Validation failed. Details: 'chatId' is required"),
        (b"{}", "Validation failed. Details: 'chatId' is required"),
        (b'{"chatId": 11001234568}', "Validation failed. Details: 'chatId' must be a string"),
        (
            b'{"chatId": "11001234568@c.us", "x": 1}',
            "Validation failed. Details: 'x' is not allowed",
        ),
    ],
)
def test_body_validation_messages(demo: Demo, raw: bytes, message: str) -> None:
    response = httpx.post(
        demo.method_url("getAvatarAsync"), content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["message"] == message
    assert httpx.get(demo.method_url("getWebhooksCount")).json() == {"count": 0}


def test_body_over_the_limit_is_413_even_when_chunked(demo: Demo) -> None:
    big = b'{"chatId": "' + b"1" * 2_000_000 + b'"}'
    response = httpx.post(demo.method_url("getAvatar"), content=big)
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    chunked = httpx.post(demo.method_url("getAvatar"), content=chunks())
    assert chunked.status_code == 413
    assert chunked.json()["statusCode"] == 413


def test_rate_limit_answers_429_with_retry_after(demo: Demo) -> None:
    with httpx.Client() as client:
        codes = [
            client.post(demo.method_url("getAvatarAsync"), json={"chatId": "11001234570@c.us"})
            for _ in range(15)
        ]
    statuses = [r.status_code for r in codes]
    assert statuses.count(429) >= 1
    assert statuses[:10] == [200] * 10
    limited = next(r for r in codes if r.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["message"] == "Too Many Requests"


def test_rate_limits_can_be_turned_off(tmp_path: Path) -> None:
    demo = start_demo(make_settings(tmp_path, rate_limits_enabled=False))
    try:
        with httpx.Client() as client:
            statuses = {
                client.get(demo.method_url("getStateInstance")).status_code for _ in range(20)
            }
        assert statuses == {200}
    finally:
        demo.server.stop()


def test_unauthorized_instance_cannot_look_up_avatars(demo: Demo) -> None:
    from wagate.core.model import InstanceState

    demo.server.call(
        lambda rt: rt.instances.set_state(demo.instance.id, InstanceState.NOT_AUTHORIZED)
    )
    for method in ("getAvatar", "getAvatarAsync"):
        response = httpx.post(demo.method_url(method), json={"chatId": "11001234568@c.us"})
        assert response.status_code == 400
        assert response.json()["message"] == "instance account not authorized"
    state = httpx.get(demo.method_url("getStateInstance")).json()
    assert state == {"stateInstance": "notAuthorized"}


@pytest.mark.parametrize("value", ["4", "61", "abc", "5.5", ""])
def test_receive_timeout_outside_5_to_60(demo: Demo, value: str) -> None:
    response = httpx.get(demo.method_url("receiveNotification"), params={"receiveTimeout": value})
    assert response.status_code == 400
    assert response.json()["message"] == (
        "Validation failed. Details: 'receiveTimeout' must be an integer from 5 to 60"
    )


def test_receipt_id_must_be_a_number(demo: Demo) -> None:
    response = httpx.delete(demo.method_url("deleteNotification", "abc"))
    assert response.status_code == 400
    assert response.json()["message"] == "Parameter receiptId must be a Number"
    huge = httpx.delete(demo.method_url("deleteNotification", "9" * 30))
    assert huge.json() == {"result": False}


def test_missing_token(demo: Demo) -> None:
    response = httpx.get(f"{demo.url}/waInstance{demo.instance.id}/getSettings")
    assert response.status_code == 400
    assert response.json()["message"] == "Parameter apiTokenInstance not define"


@pytest.mark.parametrize(
    ("params", "field"),
    [({"group": "perhaps"}, "group"), ({"count": "two"}, "count"), ({"count": "1.5"}, "count")],
)
def test_get_contacts_query_parameters_are_validated(
    demo: Demo, params: dict[str, str], field: str
) -> None:
    response = httpx.get(demo.method_url("getContacts"), params=params)
    assert_envelope(
        response,
        400,
        f"Validation failed. Details: '{field}' is invalid",
        f"/waInstance{demo.instance.id}/getContacts/***",
    )


def test_get_contacts_query_parameters_filter(demo: Demo) -> None:
    everything = httpx.get(demo.method_url("getContacts")).json()
    groups = httpx.get(demo.method_url("getContacts"), params={"group": "true"}).json()
    one = httpx.get(demo.method_url("getContacts"), params={"group": "0", "count": "1"}).json()
    assert groups == [c for c in everything if c["type"] == "group"]
    assert groups, "the demo world has groups"
    assert one == [c for c in everything if c["type"] == "user"][:1]
    assert one


def test_paths_the_guard_does_not_serve_itself_still_get_fastapis_answers(demo: Demo) -> None:
    extra = httpx.get(demo.method_url("getSettings", "extra/segments"))
    assert extra.status_code == 404
    assert extra.json()["message"] == "Not Found"
    wrong_verb = httpx.put(demo.method_url("getSettings"))
    assert wrong_verb.status_code == 404
    assert wrong_verb.json()["message"] == "invalid request method used"
    head = httpx.head(demo.method_url("getSettings"))
    assert head.status_code == 404  # not a GREEN-API verb for it, as for any other verb
    assert httpx.get(f"{demo.url}/ping").json() == {"pong": True}
    assert httpx.post(f"{demo.url}/ping", content=b"anything").json() == {"pong": True}


class _AccessLogWatch(logging.Handler):
    """Keeps the status of the first request the access log records, and sets `seen`."""

    def __init__(self) -> None:
        super().__init__()
        self.status: object = None
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.seen.is_set():
            self.status = getattr(record, "status", None)
            self.seen.set()


def test_a_request_whose_client_leaves_mid_body_is_not_acted_on(
    demo: Demo, caplog: pytest.LogCaptureFixture
) -> None:
    """Its body so far is valid JSON (the trailing newline never came), yet no job is recorded:
    the client saw no answer and may send it again."""
    caplog.set_level(logging.INFO, "wagate.access")
    watch = _AccessLogWatch()
    access_log = logging.getLogger("wagate.access")
    access_log.addHandler(watch)
    try:
        body = b'{"chatId": "11001234568@c.us"}\n'
        path = f"/waInstance{demo.instance.id}/getAvatarAsync/{demo.instance.api_token}"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", demo.server.port)) as client:
            client.sendall(head.encode() + body[:-1])
        assert watch.seen.wait(10), "the abandoned request was never logged"
    finally:
        access_log.removeHandler(watch)
    assert watch.status == 499  # nginx's "client closed request": nothing was answered

    async def recorded(runtime: Runtime) -> tuple[int, int]:
        instance_id = demo.instance.id
        jobs = await runtime.store.count_avatar_jobs(instance_id)
        return jobs, await runtime.store.count_notifications(instance_id)

    assert demo.server.call(recorded) == (0, 0)
    # The same request sent whole is acknowledged and recorded.
    sent = httpx.post(demo.method_url("getAvatarAsync"), content=body)
    assert (sent.status_code, sent.content) == (200, b"")
    assert sum(demo.server.call(recorded)) == 1
