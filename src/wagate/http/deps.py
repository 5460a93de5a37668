"""Request-scoped dependencies: the runtime, and the authenticated, rate-limited instance."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Path, Request, Response

from wagate.bootstrap import Runtime
from wagate.core.instances import parse_instance_id
from wagate.core.model import Instance
from wagate.wire.methods import BY_LOWER_NAME

IdInstance = Annotated[str, Path(description="idInstance: 10 digits", examples=["1101000001"])]
ApiToken = Annotated[str, Path(description="apiTokenInstance: 50 lowercase hex characters")]


# Dependencies are async on purpose: FastAPI runs a plain `def` dependency in a worker thread.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def authenticated(method: str) -> Callable[..., Awaitable[Instance]]:
    """A dependency that checks the instance, then the token, then the method's rate limit."""
    spec = BY_LOWER_NAME[method.lower()]

    async def dependency(
        idInstance: IdInstance,
        apiTokenInstance: ApiToken,
        runtime: Annotated[Runtime, Depends(get_runtime)],
    ) -> Instance:
        instance = await runtime.instances.authenticate(
            parse_instance_id(idInstance), apiTokenInstance
        )
        await runtime.rate_limiter.check(instance.id, spec.name, spec.per_second)
        return instance

    return dependency


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(
        json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode(),
        status_code=status_code,
        media_type="application/json",
    )


def json_body_doc(model: Any) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body that the route parses itself (to control errors)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
