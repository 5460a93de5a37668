"""Helpers shared by the routes outside the instance methods: the runtime, JSON answers and
body documentation. (Instance methods get theirs from `green_api`.)"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from wagate.bootstrap import Runtime
from wagate.wire.json_text import dumps_bytes


# Async on purpose: FastAPI runs a plain `def` dependency in a worker thread.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(
        dumps_bytes(content),
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
