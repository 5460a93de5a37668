"""Avatar files, health and metrics."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from starlette.exceptions import HTTPException

from wagate import __version__
from wagate.bootstrap import Runtime
from wagate.http.deps import get_runtime, json_response
from wagate.http.direct import add_plain

router = APIRouter(tags=["operations"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 13.1.2: `*`, or a listed tag equal to `etag` by the weak comparison (a `W/`
    prefix ignored: a cache or a compressing proxy may have weakened it)."""
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


@router.get("/avatars/{fileName}", summary="An avatar image, content-addressed")
# HEAD as GET, without the bytes (uvicorn leaves them out); HTTP implies it, so not documented.
@router.head("/avatars/{fileName}", operation_id="avatar_file_head", include_in_schema=False)
async def avatar_file(
    runtime: RuntimeDep,
    fileName: Annotated[str, Path(description="`<sha256>.<jpg|png|webp>`")],
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    found = await runtime.images.open(fileName)
    if found is None:
        raise HTTPException(404)
    stored, data = found
    etag = f'"{stored.digest}"'
    # The URL names the bytes, so they never change: clients may cache them for good.
    headers = {"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"}
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=stored.content_type, headers=headers)


@router.get("/ping", operation_id="ping_get", summary="Liveness without the database")
@router.post("/ping", operation_id="ping_post", summary="Liveness without the database")
async def ping() -> Response:
    # Also the benchmarks' baseline: the cheapest route, served the way instance methods are.
    return json_response({"pong": True})


async def _ping_direct(request: Request) -> Response:
    return await ping()


add_plain("GET", "/ping", _ping_direct)
add_plain("POST", "/ping", _ping_direct)


@router.get("/health", summary="Liveness and database reachability")
async def health(runtime: RuntimeDep) -> Response:
    await runtime.store.get_meta("public_url")
    return json_response({"status": "ok", "version": __version__})


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    # Read at each scrape: the job table holds only the backlog, so the count stays cheap
    # (unlike the notification queues, which may hold millions). With the database away the
    # other figures matter most, so they are still served, the count as NaN (/health fails).
    try:
        pending = float(await runtime.store.count_avatar_jobs())
    except Exception:
        pending = math.nan
    request.app.state.metrics.set_avatar_jobs_pending(pending)
    request.app.state.metrics.set_long_polls_waiting(runtime.notifications.waiting_polls)
    data: bytes = request.app.state.metrics.render()
    return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")
