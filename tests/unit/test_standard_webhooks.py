"""Standard Webhooks signatures verify with the reference library, call after call."""

from __future__ import annotations

import base64
import json
import time

import pytest
import standardwebhooks

from wagate.wire.standard_webhooks import SECRET_PREFIX, webhook_headers


def secret(seed: bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(seed * 32).decode()


def test_each_signature_verifies_though_the_keyed_hmac_is_reused() -> None:
    # The keyed HMAC of a secret is made once and copied per signature: a copy that leaked
    # state into the next one would fail the second and later verifications.
    for key in (secret(b"a"), secret(b"b"), secret(b"a")):
        for n, body in enumerate([b'{"n": 1}', b'{"n": 2, "text": "\\u00e9"}', b"{}"]):
            headers = webhook_headers(key, f"msg_{n}", int(time.time()), body, "")
            assert standardwebhooks.Webhook(key).verify(body, headers) == json.loads(body)


def test_another_secret_does_not_verify() -> None:
    headers = webhook_headers(secret(b"a"), "msg_1", int(time.time()), b"{}", "")
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret(b"b")).verify(b"{}", headers)
