"""GREEN-API's partner methods: create, list and delete instances with the partner token."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from wagate.bootstrap import Runtime
from wagate.core.errors import InvalidToken, UnknownInstance
from wagate.core.model import InstanceSettings
from wagate.http.deps import get_runtime, json_body_doc, json_response
from wagate.wire.bodies import validate_body
from wagate.wire.requests import CreateInstanceBody, DeleteInstanceBody
from wagate.wire.settings import settings_changes

router = APIRouter(prefix="/partner", tags=["partner"])
PartnerToken = Annotated[str, Path(description="The partner token (WAGATE_PARTNER_TOKEN)")]


async def partner_runtime(
    partnerToken: PartnerToken,
    runtime: Annotated[Runtime, Depends(get_runtime)],
) -> Runtime:
    if not hmac.compare_digest(partnerToken.encode(), runtime.partner_token.encode()):
        raise InvalidToken()
    return runtime


PartnerRuntime = Annotated[Runtime, Depends(partner_runtime)]


@router.post(
    "/createInstance/{partnerToken}",
    openapi_extra=json_body_doc(CreateInstanceBody),
    summary="Create a sandbox instance",
)
async def create_instance(request: Request, runtime: PartnerRuntime) -> Response:
    raw = await request.body()
    body = validate_body(CreateInstanceBody, raw or b"{}")
    given = body.model_dump(exclude_none=True, exclude={"name"})
    settings = InstanceSettings().with_changes(settings_changes(body)) if given else None
    if settings is not None:
        await runtime.settings_service.vet_new(settings)
    instance = await runtime.instances.create(settings=settings)
    return json_response(
        {
            "idInstance": instance.id,
            "apiTokenInstance": instance.api_token,
            "typeInstance": "whatsapp",
        }
    )


@router.get("/getInstances/{partnerToken}", summary="Every instance")
async def get_instances(runtime: PartnerRuntime) -> Response:
    instances = await runtime.instances.list()
    return json_response(
        [
            {
                "idInstance": i.id,
                "name": f"Instance {i.id}",
                "typeInstance": "whatsapp",
                "typeAccount": "",
                "partnerUserUiid": "",
                "timeCreated": i.created_at.strftime("%Y-%m-%dT%H:%M:%S"),
                "timeDeleted": "0001-01-01T00:00:00",
                "apiTokenInstance": i.api_token,
                "deleted": False,
                "tariff": "sandbox",
                "isFree": True,
                "isPartner": True,
                "expirationDate": "",
                "isExpired": False,
            }
            for i in instances
        ]
    )


@router.post(
    "/deleteInstanceAccount/{partnerToken}",
    openapi_extra=json_body_doc(DeleteInstanceBody),
    summary="Delete an instance with its queue",
)
async def delete_instance_account(request: Request, runtime: PartnerRuntime) -> Response:
    body = validate_body(DeleteInstanceBody, await request.body())
    try:
        await runtime.instances.delete(body.idInstance)
    except UnknownInstance:
        return json_response({"deleteInstanceAccount": False})
    return json_response({"deleteInstanceAccount": True})
