"""Compact JSON encoding of what wagate writes: answers, stored notification bodies, rows.

orjson encodes these about ten times faster than the standard library, which mattered: the
avatar worker encodes every avatarInfo body it queues. Output is the same compact UTF-8 form
(`separators=(",", ":")`, no ASCII escaping). The few values orjson refuses (integers beyond
64 bits, non-string keys) fall back to the standard encoder, so nothing that encoded before
fails now. Request bodies are decoded by orjson only when they are flat objects of plain values
(`wire.bodies.parse_json`): orjson reads integers beyond 64 bits as floats, which would change
what validation reports, so anything else goes through the standard library.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_text(value: Any) -> str:
    return dumps_bytes(value).decode()
