"""Polling the notification queue: receive, delete, count, clear."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from wagate.bootstrap import Runtime
from wagate.core.errors import InvalidPathParameter, ValidationFailed
from wagate.core.model import Instance
from wagate.http.deps import authenticated, get_runtime, json_response
from wagate.wire.bodies import parse_json

router = APIRouter(tags=["notifications"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
PREFIX = "/waInstance{idInstance}"
_MAX_RECEIPT_ID = 2**63 - 1


def _receive_timeout(raw: str | None) -> int:
    if raw is None:
        return 5
    if raw.isascii() and raw.isdigit() and 5 <= int(raw) <= 60:
        return int(raw)
    raise ValidationFailed("'receiveTimeout' must be an integer from 5 to 60")


@router.get(
    PREFIX + "/receiveNotification/{apiTokenInstance}",
    summary="Oldest queued notification, long-polled; JSON null when none arrived in time",
)
async def receive_notification(
    runtime: Annotated[Runtime, Depends(get_runtime)],
    instance: Annotated[Instance, Depends(authenticated("receiveNotification"))],
    receiveTimeout: Annotated[
        str | None, Query(description="Seconds to wait, 5 to 60 (default 5)")
    ] = None,
) -> Response:
    timeout_s = _receive_timeout(receiveTimeout)
    notification = await runtime.notifications.receive(instance, timeout_s)
    if notification is None:
        return json_response(None)
    return json_response({"receiptId": notification.receipt_id, "body": notification.body})


def _receipt_id(raw: str) -> int | None:
    """The receipt id, or None for a number no receipt can have. Raises for a non-number."""
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidPathParameter("Parameter receiptId must be a Number")
    value = int(raw)
    return value if value <= _MAX_RECEIPT_ID else None


@router.delete(
    PREFIX + "/deleteNotification/{apiTokenInstance}/{receiptId}",
    summary="Remove a notification from the queue",
)
async def delete_notification(
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("deleteNotification"))],
    receiptId: Annotated[str, Path(description="receiptId from receiveNotification")],
) -> Response:
    receipt_id = _receipt_id(receiptId)
    deleted = receipt_id is not None and await runtime.notifications.delete(instance, receipt_id)
    return json_response({"result": deleted})


@router.delete(
    PREFIX + "/deleteNotification/{apiTokenInstance}/",
    include_in_schema=False,
)
async def delete_notification_from_body(
    request: Request,
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("deleteNotification"))],
) -> Response:
    """The official Python SDK's `deleteNotificationAsync` sends the receipt id as the JSON body
    of `.../deleteNotification/{token}/`; accept that form too."""
    value = parse_json(await request.body())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidPathParameter("Parameter receiptId must be a Number")
    deleted = value <= _MAX_RECEIPT_ID and await runtime.notifications.delete(instance, value)
    return json_response({"result": deleted})


@router.get(PREFIX + "/getWebhooksCount/{apiTokenInstance}", summary="Queued notifications")
async def get_webhooks_count(
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("getWebhooksCount"))],
) -> Response:
    return json_response({"count": await runtime.notifications.count(instance)})


@router.delete(PREFIX + "/clearWebhooksQueue/{apiTokenInstance}", summary="Empty the queue")
async def clear_webhooks_queue(
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("clearWebhooksQueue"))],
) -> Response:
    await runtime.notifications.clear(instance)
    return json_response({"isCleared": True, "reason": ""})
