"""chatId syntax: which strings name a personal chat, a group or a linked id.

The rules (SPEC section 2 "chatId" and section 6 "chatId details"):

- personal: `<phone>@c.us`, the phone having a configurable number of digits (11 to 12 by default);
- group, old form: `<creator phone>-<10-digit unix time>@g.us`, the creator under the same rule;
- group, new form: `<18 digits>@g.us`;
- linked id: `<6 to 20 digits>@lid`.

Digits are ASCII only: `[0-9]`, never `\\d`, which would let Arabic-Indic or full-width digits
through to engines and stores that expect plain numbers.
"""

from __future__ import annotations

import functools
import re

from wagate.core.errors import BadRequestData
from wagate.core.model import ChatId, ChatKind

DEFAULT_PHONE_DIGITS = (11, 12)


_KINDS = {"personal": ChatKind.PERSONAL, "group": ChatKind.GROUP, "lid": ChatKind.LID}


@functools.lru_cache(maxsize=8)
def _pattern(low: int, high: int) -> re.Pattern[str]:
    if not 1 <= low <= high:
        raise ValueError(f"phone_digits must be a range of positive numbers, got {(low, high)}")
    phone = f"[0-9]{{{low},{high}}}"
    return re.compile(
        rf"(?P<personal>{phone})@c\.us"
        rf"|(?P<group>{phone}-[0-9]{{10}}|[0-9]{{18}})@g\.us"
        r"|(?P<lid>[0-9]{6,20})@lid"
    )


def parse_chat_id(text: str, phone_digits: tuple[int, int] = DEFAULT_PHONE_DIGITS) -> ChatId:
    """Parse a chatId, or raise `BadRequestData` ("bad request data") if it is not one.

    `phone_digits` is the inclusive range of digits a phone number may have (the
    `WAGATE_PHONE_DIGITS` setting); it governs personal ids and the creator part of old-form
    group ids. The whole string must match: no whitespace, `+`, upper-case suffix or other
    surrounding text is tolerated. Raises `ValueError` if `phone_digits` is not a range of
    positive numbers (a programming error, not bad input).
    """
    # fullmatch, not match with `$`: `$` also matches before a trailing newline.
    found = _pattern(*phone_digits).fullmatch(text)
    if found is None:
        raise BadRequestData()
    # Exactly one of the alternatives' groups took part in the match, and it names the kind.
    kind = found.lastgroup
    assert kind is not None
    return ChatId(_KINDS[kind], found[kind])
