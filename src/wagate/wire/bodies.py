"""Request bodies: JSON parsing and schema validation with GREEN-API's exact error texts."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import orjson
import pydantic

from wagate.core.errors import InvalidJsonBody, ValidationFailed

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

# When a body breaks several rules, report the one a client most needs to fix first.
_PRIORITY = {"missing": 0, "extra_forbidden": 2}


# Values orjson decodes exactly as the standard library does. It reads an integer beyond 64
# bits as a float, so a body holding a float or a nested value is decoded again by the standard
# library, whose answer is the contract (validation reports what it reads).
_PLAIN_VALUES = (str, int, bool, type(None))


def parse_json(raw: bytes) -> Any:
    """Decode a JSON body. Raises `InvalidJsonBody`.

    A flat object of strings, integers, booleans and nulls (nearly every GREEN-API body) is
    decoded by orjson, ten times faster; anything else, and anything orjson refuses (NaN, a
    lone surrogate, UTF-16), by the standard library, so what is accepted and how it reads
    does not depend on which one decoded it.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if isinstance(data, dict) and all(type(v) in _PLAIN_VALUES for v in data.values()):
            return data
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidJsonBody() from exc


def _describe(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "value"
    kind = error["type"]
    if kind == "missing":
        return f"'{field}' is required"
    if kind == "extra_forbidden":
        return f"'{field}' is not allowed"
    if kind == "string_type":
        return f"'{field}' must be a string"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"'{field}' must be an integer"
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"'{field}' {error['msg'].lower().replace('input should be', 'must be')}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"'{field}' must be one of {expected}"
    if kind == "string_too_long":
        return f"'{field}' is too long"
    return f"'{field}' is invalid"


def validate_body(model: type[ModelT], raw: bytes) -> ModelT:
    """Parse and validate a JSON object body against `model` (strict types, no unknown fields).

    A body that is not an object is reported as missing its first required field, which is
    what GREEN-API answers for it.
    """
    data = parse_json(raw)
    if not isinstance(data, dict):
        required = [name for name, f in model.model_fields.items() if f.is_required()]
        first = (model.model_fields[required[0]].alias or required[0]) if required else "value"
        raise ValidationFailed(
            f"'{first}' is required" if required else "'value' must be an object"
        )
    try:
        return model.model_validate(data, strict=True)
    except pydantic.ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: _PRIORITY.get(e["type"], 1))
        raise ValidationFailed(_describe(errors[0])) from exc


def lone_string_field(model: type[ModelT], name: str, raw: bytes) -> str:
    """`validate_body(model, raw)`'s field `name`, for a model whose only field is the
    required string `name` (a body of just `{"chatId": ...}`).

    The body every getAvatarAsync carries is answered without building the model (~1 us of
    the acknowledgement's CPU, docs/benchmarks.md); anything else goes through
    `validate_body`, so the errors and what is accepted stay the same.
    """
    data = parse_json(raw)
    if type(data) is dict and len(data) == 1:
        value = data.get(name)
        if type(value) is str:
            return value
    field: str = getattr(validate_body(model, raw), name)
    return field
