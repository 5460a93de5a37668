"""Polling the notification queue: receive, delete, count, clear."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from starlette.types import Receive

from wagate.core.errors import InvalidPathParameter, ValidationFailed
from wagate.core.model import MAX_ID, Instance
from wagate.http.deps import json_response
from wagate.http.green_api import MethodCall, instance_method, path_parameter, query_parameter
from wagate.http.guard import CLIENT_CLOSED_REQUEST
from wagate.wire.bodies import parse_json

router = APIRouter(tags=["notifications"])


class _PollAbandoned(Exception):
    """The client closed the connection while its long poll waited."""


async def _disconnected(receive: Receive) -> bool:
    """Until the client closes the connection (True); False if the server cannot tell."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass  # the request's body, handed on once more by the guard
    except Exception:
        return False
    return True


def _receive_timeout(raw: str | None) -> int:
    if raw is None:
        return 5
    if raw.isascii() and raw.isdigit() and 5 <= int(raw) <= 60:
        return int(raw)
    raise ValidationFailed("'receiveTimeout' must be an integer from 5 to 60")


@instance_method(
    router,
    "GET",
    "receiveNotification",
    summary="Oldest queued notification, long-polled; JSON null when none arrived in time",
    parameters=[
        query_parameter(
            "receiveTimeout",
            {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "Seconds to wait, 5 to 60 (default 5)",
        )
    ],
)
async def receive_notification(call: MethodCall) -> Response:
    timeout_s = _receive_timeout(call.request.query_params.get("receiveTimeout"))
    instances, token = call.runtime.instances, call.path_param("apiTokenInstance")
    # uvicorn does not stop a request whose client left: a poll went on waiting for nobody
    # until its receiveTimeout (a bot whose HTTP client gives up sooner left one behind at
    # every call). Once a poll has waited, a task listens for the disconnect; a task per poll,
    # not a check per wait (Starlette's `is_disconnected` cost ~90 µs each).
    listening: asyncio.Task[bool] | None = None

    async def still_allowed() -> Instance:
        nonlocal listening
        if listening is None:
            listening = asyncio.ensure_future(_disconnected(call.request.receive))
        elif listening.done() and listening.result():
            raise _PollAbandoned()
        # From the instance cache, read again every WAGATE_POLL_INTERVAL: the same bound as
        # for a new request after a change made elsewhere.
        return await instances.authenticate(call.instance.id, token)

    try:
        notification = await call.runtime.notifications.receive(
            call.instance, timeout_s, still_allowed
        )
    except _PollAbandoned:
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # for the log and metrics only
    finally:
        if listening is not None:
            listening.cancel()
    if notification is None:
        return json_response(None)
    # The stored body is compact JSON already: spliced in, not parsed and serialised again.
    answer = f'{{"receiptId":{notification.receipt_id},"body":{notification.body_json}}}'
    return Response(answer.encode(), media_type="application/json")


def _receipt_id(raw: str) -> int | None:
    """The receipt id, or None for a number no receipt can have. Raises for a non-number."""
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidPathParameter("Parameter receiptId must be a Number")
    value = int(raw)
    return value if value <= MAX_ID else None


@instance_method(
    router,
    "DELETE",
    "deleteNotification",
    summary="Remove a notification from the queue",
    path_suffix="/{receiptId}",
    parameters=[path_parameter("receiptId", "receiptId from receiveNotification")],
)
async def delete_notification(call: MethodCall) -> Response:
    receipt_id = _receipt_id(call.path_param("receiptId"))
    deleted = receipt_id is not None and await call.runtime.notifications.delete(
        call.instance, receipt_id
    )
    return json_response({"result": deleted})


@instance_method(
    router,
    "DELETE",
    "deleteNotification",
    summary="Remove a notification from the queue (receipt id as the JSON body)",
    path_suffix="/",
    include_in_schema=False,
)
async def delete_notification_from_body(call: MethodCall) -> Response:
    """The official Python SDK's `deleteNotificationAsync` sends the receipt id as the JSON body
    of `.../deleteNotification/{token}/`; accept that form too."""
    value = parse_json(await call.raw_body())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidPathParameter("Parameter receiptId must be a Number")
    deleted = value <= MAX_ID and await call.runtime.notifications.delete(call.instance, value)
    return json_response({"result": deleted})


@instance_method(router, "GET", "getWebhooksCount", summary="Queued notifications")
async def get_webhooks_count(call: MethodCall) -> Response:
    return json_response({"count": await call.runtime.notifications.count(call.instance)})


@instance_method(router, "DELETE", "clearWebhooksQueue", summary="Empty the queue")
async def clear_webhooks_queue(call: MethodCall) -> Response:
    await call.runtime.notifications.clear(call.instance)
    return json_response({"isCleared": True, "reason": ""})
