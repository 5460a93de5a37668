"""GREEN-API instance methods as routes: `@instance_method(router, "POST", "getAvatarAsync")`.

Every instance method needs the same three things before its own work: the runtime, the
instance its path names (checked against the token), and its rate limit. They are done here, in
one plain call per request, rather than through FastAPI dependencies: solving a dependency graph
(path parameters validated one by one, a sub-dependency for the runtime) cost more than the
rest of a getAvatarAsync acknowledgement (docs/benchmarks.md). The OpenAPI document still
describes every parameter; they are declared here instead of inferred from signatures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, TypeAdapter, ValidationError

from wagate.bootstrap import Runtime
from wagate.core.errors import ValidationFailed
from wagate.core.instances import parse_instance_id
from wagate.core.model import Instance
from wagate.http.deps import json_body_doc
from wagate.http.direct import BODY_SCOPE_KEY, add_instance_method
from wagate.wire.bodies import validate_body
from wagate.wire.methods import BY_LOWER_NAME

M = TypeVar("M", bound=BaseModel)
Q = TypeVar("Q")


@dataclass(frozen=True, slots=True)
class MethodCall:
    """One authenticated, rate-checked call of an instance method."""

    request: Request
    runtime: Runtime
    instance: Instance

    async def raw_body(self) -> bytes:
        body = self.request.scope.get(BODY_SCOPE_KEY)
        return body if isinstance(body, bytes) else await self.request.body()

    async def body(self, model: type[M]) -> M:
        """The JSON body as `model`, or `ValidationFailed` with GREEN-API's texts."""
        return validate_body(model, await self.raw_body())

    def path_param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def query(self, name: str, adapter: TypeAdapter[Q]) -> Q:
        """A query parameter parsed as FastAPI would (pydantic's lax rules for strings), or
        `ValidationFailed` naming it; None when absent."""
        raw = self.request.query_params.get(name)
        try:
            return adapter.validate_python(raw)
        except ValidationError:
            raise ValidationFailed(f"'{name}' is invalid") from None


Handler = Callable[[MethodCall], Awaitable[Response]]

_INSTANCE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "idInstance",
        "in": "path",
        "required": True,
        "description": "idInstance: 10 digits",
        "schema": {"type": "string", "title": "Idinstance"},
        "example": "1101000001",
    },
    {
        "name": "apiTokenInstance",
        "in": "path",
        "required": True,
        "description": "apiTokenInstance: 50 lowercase hex characters",
        "schema": {"type": "string", "title": "Apitokeninstance"},
    },
]


def path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "title": name.capitalize()},
    }


def query_parameter(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


def instance_method(
    router: APIRouter,
    verb: str,
    method: str,
    *,
    summary: str,
    body: type[BaseModel] | None = None,
    path_suffix: str = "",
    parameters: Sequence[dict[str, Any]] = (),
    include_in_schema: bool = True,
) -> Callable[[Handler], Handler]:
    """Register `handler` at `/waInstance{idInstance}/{method}/{apiTokenInstance}{path_suffix}`.

    The handler runs after the instance and token are checked (403/401) and the method's rate
    limit is taken (429), in that order; what it raises is answered by the error handlers.
    `body` documents a JSON body the handler parses itself (`MethodCall.body`), so that its
    errors keep GREEN-API's texts.
    """
    spec = BY_LOWER_NAME[method.lower()]
    path = f"/waInstance{{idInstance}}/{spec.name}/{{apiTokenInstance}}{path_suffix}"
    openapi_extra: dict[str, Any] = {"parameters": [*_INSTANCE_PARAMETERS, *parameters]}
    if body is not None:
        openapi_extra.update(json_body_doc(body))

    def register(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            runtime: Runtime = request.app.state.runtime
            params = request.path_params
            instance = await runtime.instances.authenticate(
                parse_instance_id(params["idInstance"]), params["apiTokenInstance"]
            )
            await runtime.rate_limiter.check(instance.id, spec.name, spec.per_second)
            return await handler(MethodCall(request, runtime, instance))

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        add_instance_method(verb, spec.name, path_suffix, endpoint)
        router.add_api_route(
            path,
            endpoint,
            methods=[verb],
            summary=summary,
            openapi_extra=openapi_extra,
            include_in_schema=include_in_schema,
        )
        return handler

    return register
