"""The engine interface: what an adapter to WhatsApp (or a simulation of it) implements.

An engine is a class with a `name` and the async methods of `Engine`; it returns expected
outcomes (a hidden avatar, a number not on WhatsApp, a rate limit) as `AvatarResult` values and
leaves timeouts to its caller. The built-in engines live in the submodules (`sandbox`, ...).
"""

from __future__ import annotations

from wagate.core.model import (
    AvatarImage,
    AvatarResult,
    AvatarStatus,
    ChatId,
    ChatKind,
    Contact,
    Instance,
    InstanceState,
)
from wagate.core.ports import Engine

__all__ = [
    "AvatarImage",
    "AvatarResult",
    "AvatarStatus",
    "ChatId",
    "ChatKind",
    "Contact",
    "Engine",
    "Instance",
    "InstanceState",
]
