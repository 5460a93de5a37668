"""The routes the guard serves itself, without FastAPI's router: GREEN-API's instance methods
and `/ping`, the benchmarks' baseline, which must be served the same way.

Every request to them already passes through the guard, which has parsed the path and knows
the method. Handing the request on through FastAPI's exception middleware, router (a regular
expression per route, tried in turn) and request wrapper (query, header and cookie parsing
for dependencies these routes do not have) cost about as much as the route itself, so the
guard calls the endpoint directly. The same endpoints stay registered with FastAPI, which
documents them in the OpenAPI schema and answers whatever this table does not hold (another
verb, a malformed path) exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

Endpoint = Callable[[Request], Awaitable[Response]]

# Where the guard leaves the request body it has read (and checked against the size limit).
BODY_SCOPE_KEY = "wagate.body"

# (verb, canonical method name, path suffix after the token) -> endpoint, for the suffixes ""
# and "/"; for "/{name}" (one more path segment) the key's suffix is "/{}" and the name is
# kept beside the endpoint, to pass the segment as that path parameter.
_INSTANCE_METHODS: dict[tuple[str, str, str], tuple[Endpoint, str]] = {}
# (verb, path) -> endpoint, for routes outside /waInstance.
_PLAIN: dict[tuple[str, str], Endpoint] = {}


def add_instance_method(verb: str, method: str, suffix: str, endpoint: Endpoint) -> None:
    if suffix in ("", "/"):
        _INSTANCE_METHODS[(verb, method, suffix)] = (endpoint, "")
    elif re.fullmatch(r"/\{[A-Za-z_]\w*\}", suffix):
        _INSTANCE_METHODS[(verb, method, "/{}")] = (endpoint, suffix[2:-1])
    else:
        raise ValueError(f"unsupported path suffix {suffix!r}")


def add_plain(verb: str, path: str, endpoint: Endpoint) -> None:
    _PLAIN[(verb, path)] = endpoint


def find_instance_method(
    verb: str, method: str, id_text: str, rest: str
) -> tuple[Endpoint, dict[str, str]] | None:
    """The endpoint of `/waInstance{id_text}/{method}{rest}` and its path parameters, or None
    when FastAPI's router should decide (`rest` starts with "/" and holds the token)."""
    token, slash, more = rest[1:].partition("/")
    if not token:
        return None
    if not slash:
        key = ""
    elif not more:
        key = "/"
    elif "/" in more:
        return None
    else:
        key = "/{}"
    found = _INSTANCE_METHODS.get((verb, method, key))
    if found is None:
        return None
    endpoint, name = found
    params = {"idInstance": id_text, "apiTokenInstance": token}
    if name:
        params[name] = more
    return endpoint, params


def find_plain(verb: str, path: str) -> Endpoint | None:
    return _PLAIN.get((verb, path))
