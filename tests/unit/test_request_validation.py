"""Body validation messages and setSettings rules, without a server."""

from __future__ import annotations

import json

import pytest

from wagate.core.errors import InvalidJsonBody, ValidationFailed
from wagate.core.model import InstanceSettings
from wagate.wire.bodies import lone_string_field, parse_json, validate_body
from wagate.wire.requests import ChatIdBody, CheckWhatsappBody, SetSettingsBody
from wagate.wire.settings import FLAG_KEYS, apply_settings


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def test_valid_chat_id_body() -> None:
    assert validate_body(ChatIdBody, body({"chatId": "11001234567@c.us"})).chatId == (
        "11001234567@c.us"
    )


@pytest.mark.parametrize(
    "raw",
    [
        body({"chatId": "11001234567@c.us"}),
        body({"chatId": ""}),
        b'{"chatId": 1, "chatId": "11001234567@c.us"}',
        b'{"chatId": "11001234567@c.us", "chatId": 1}',
        b'{"chatId": "\\u00e9@c.us"}',
        b"[1]",
        b"null",
        b"{}",
        b"not json",
        b'{"chatId": 1e400}',
        body({"chatId": None}),
        body({"chatId": 5}),
        body({"chatId": ["x"]}),
        body({"chatId": {"a": "b"}}),
        body({"chatId": "x", "extra": 1}),
        body({"ChatId": "x"}),
    ],
)
def test_the_lone_string_shortcut_answers_as_the_model_does(raw: bytes) -> None:
    try:
        expected: object = validate_body(ChatIdBody, raw).chatId
    except (ValidationFailed, InvalidJsonBody) as exc:
        with pytest.raises(type(exc)) as caught:
            lone_string_field(ChatIdBody, "chatId", raw)
        assert caught.value.message == exc.message
    else:
        assert lone_string_field(ChatIdBody, "chatId", raw) == expected


@pytest.mark.parametrize(
    ("raw", "details"),
    [
        (b"[1]", "'chatId' is required"),
        (b"null", "'chatId' is required"),
        (body({}), "'chatId' is required"),
        (body({"chatId": None}), "'chatId' must be a string"),
        (body({"chatId": ["x"]}), "'chatId' must be a string"),
        (body({"chatId": "x", "extra": 1}), "'extra' is not allowed"),
        (body({"extra": 1}), "'chatId' is required"),
    ],
)
def test_chat_id_body_errors(raw: bytes, details: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_body(ChatIdBody, raw)
    assert caught.value.message == f"Validation failed. Details: {details}"


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"{'a': 1}"])
def test_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidJsonBody) as caught:
        validate_body(ChatIdBody, raw)
    assert caught.value.message == "Invalid JSON body"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"chatId": "11001234567@c.us"}',
        b'{"phoneNumber": 11001234567, "flag": true, "none": null}',
        b'{"a": 1, "a": 2}',  # the last one wins
        '{"chatId": "\u00e9\\u00e9"}'.encode(),
        b'{"big": 123456789012345678901234567890}',  # orjson would read a float
        b'{"count": 1.5}',
        b'{"nested": {"a": [1, 2]}}',
        b'{"n": NaN}',  # orjson refuses it, the standard library reads it
        b'{"s": "\\ud800"}',  # a lone surrogate
        '{"utf16": "x"}'.encode("utf-16"),
        b"[1, 2]",
        b"  {}  ",
    ],
)
def test_bodies_read_as_the_standard_library_reads_them(raw: bytes) -> None:
    # The fast decoder serves only what it reads the same way; the type check catches an int
    # read as a float, which compares equal.
    parsed, expected = parse_json(raw), json.loads(raw)
    assert repr(parsed) == repr(expected)


def test_phone_number_must_be_an_integer_not_a_bool_or_string() -> None:
    for value in ("11001234567", True, 1.5):
        with pytest.raises(ValidationFailed, match="'phoneNumber' must be an integer"):
            validate_body(CheckWhatsappBody, body({"phoneNumber": value}))


def test_set_settings_changes_only_what_is_given() -> None:
    before = InstanceSettings(flags={"incomingWebhook": True})
    parsed = validate_body(SetSettingsBody, body({"stateWebhook": "yes", "webhookUrl": ""}))
    after = apply_settings(before, parsed)
    assert after.flags == {"incomingWebhook": True, "stateWebhook": True}
    assert after.webhook_url == ""
    assert after.delay_send_messages_ms == before.delay_send_messages_ms


@pytest.mark.parametrize(
    ("value", "details"),
    [
        ({}, "'value' must have at least 1 key"),
        ({"keepOnlineStatus": "Yes"}, "'keepOnlineStatus' must be one of 'yes' or 'no'"),
        ({"webhookUrl": "javascript:alert(1)"}, "'webhookUrl' must be an http or https URL"),
        ({"webhookUrl": "http://"}, "'webhookUrl' must be an http or https URL"),
        ({"webhookUrl": "http://[::1"}, "'webhookUrl' must be an http or https URL"),
        ({"webhookUrl": "http://[zz]/hook"}, "'webhookUrl' must be an http or https URL"),
        (
            {"webhookUrlToken": "secret\r\nX-Extra: 1"},
            "'webhookUrlToken' must not contain control characters",
        ),
        ({"webhookUrlToken": "nul\u0000"}, "'webhookUrlToken' must not contain control characters"),
        (
            {"delaySendMessagesMilliseconds": 86_400_001},
            "'delaySendMessagesMilliseconds' must be less than or equal to 86400000",
        ),
        ({"typeAccount": "x"}, "'typeAccount' is not allowed"),
    ],
)
def test_set_settings_rejects(value: dict[str, object], details: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        apply_settings(InstanceSettings(), validate_body(SetSettingsBody, body(value)))
    assert caught.value.message == f"Validation failed. Details: {details}"


def test_every_flag_is_a_settable_field() -> None:
    assert set(FLAG_KEYS) <= set(SetSettingsBody.model_fields)
