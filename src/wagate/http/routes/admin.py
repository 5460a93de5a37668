"""Operator endpoints (for the console): notifications with their delivery state, and replay.

Authenticated with `Authorization: Bearer <partner token>`.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from wagate.bootstrap import Runtime
from wagate.core.errors import InvalidToken
from wagate.core.model import NotificationStatus
from wagate.http.deps import get_runtime, json_body_doc, json_response
from wagate.wire.bodies import validate_body

router = APIRouter(prefix="/admin", tags=["admin"])


async def admin_runtime(
    runtime: Annotated[Runtime, Depends(get_runtime)],
    authorization: Annotated[str, Header(description="Bearer <partner token>")] = "",
) -> Runtime:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), runtime.partner_token.encode()
    ):
        raise InvalidToken()
    return runtime


AdminRuntime = Annotated[Runtime, Depends(admin_runtime)]


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    receiptIds: list[int] | None = Field(
        default=None, description="Dead notifications to replay; all of the instance's if absent"
    )


@router.get("/instances/{instanceId}/notifications", summary="Queued or dead notifications")
async def list_notifications(
    instanceId: int,
    runtime: AdminRuntime,
    status: Annotated[Literal["queued", "dead"], Query()] = "queued",
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> Response:
    await runtime.instances.get(instanceId)
    rows = await runtime.notifications.list_for(instanceId, NotificationStatus(status), limit)
    return json_response(
        [
            {
                "receiptId": n.receipt_id,
                "status": n.status.value,
                "createdAt": n.created_at.isoformat(),
                "attempts": n.attempts,
                "lastError": n.last_error,
                "nextAttemptAt": n.next_attempt_at.isoformat() if n.next_attempt_at else None,
                "webhookId": n.webhook_id,
                "body": n.body,
            }
            for n in rows
        ]
    )


@router.post(
    "/instances/{instanceId}/notifications/replay",
    openapi_extra=json_body_doc(ReplayBody),
    summary="Queue dead notifications again",
)
async def replay_notifications(
    instanceId: int,
    request: Request,
    runtime: AdminRuntime,
) -> Response:
    await runtime.instances.get(instanceId)
    raw = await request.body()
    body = validate_body(ReplayBody, raw or b"{}")
    count = await runtime.notifications.replay(instanceId, body.receiptIds)
    return json_response({"replayed": count})
