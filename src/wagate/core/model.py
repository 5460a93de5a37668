"""Domain values shared by the use cases, the engines and the stores.

Every value is immutable: a frozen dataclass, or a `NamedTuple` for the records made once or
more per request (`ChatId`, `AvatarJob`), whose construction costs a third of a frozen
dataclass's (docs/benchmarks.md). Datetimes are timezone-aware (UTC). GREEN-API's camelCase
names appear only in `wagate.wire`.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

# Instance ids and receipt ids are stored as signed 64-bit integers: a larger number names
# nothing, and must be answered as such before it reaches a database driver that cannot bind it.
MAX_ID = 2**63 - 1


def is_storable_id(value: int) -> bool:
    return 0 < value <= MAX_ID


class InstanceState(enum.StrEnum):
    """The authorization state GREEN-API reports in `getStateInstance`."""

    AUTHORIZED = "authorized"
    NOT_AUTHORIZED = "notAuthorized"
    BLOCKED = "blocked"
    STARTING = "starting"
    YELLOW_CARD = "yellowCard"
    SLEEP_MODE = "sleepMode"


class ChatKind(enum.Enum):
    PERSONAL = "c.us"
    GROUP = "g.us"
    LID = "lid"


class ChatId(NamedTuple):
    """A syntactically valid chat id. `user` is the part before `@`."""

    kind: ChatKind
    user: str

    def __str__(self) -> str:
        return f"{self.user}@{self.kind.value}"

    @property
    def phone(self) -> str | None:
        """The phone number of a personal chat, else None."""
        return self.user if self.kind is ChatKind.PERSONAL else None


@dataclass(frozen=True)
class InstanceSettings:
    """The settings a GREEN-API client reads and writes through get/setSettings.

    Flags are kept by their GREEN-API key in `flags` (values True for "yes"), because the list of
    yes/no switches is a wire concern that grows; the use cases only read a few of them.
    """

    webhook_url: str = ""
    webhook_url_token: str = ""
    delay_send_messages_ms: int = 3000
    country_instance: str = ""
    flags: Mapping[str, bool] = field(default_factory=dict)

    @property
    def push_mode(self) -> bool:
        """Notifications are pushed to the webhook URL, not left for polling."""
        return self.webhook_url != ""

    def with_changes(self, changes: Mapping[str, Any]) -> InstanceSettings:
        """Return a copy with the given snake_case fields or `flags` entries replaced."""
        values: dict[str, Any] = {
            "webhook_url": self.webhook_url,
            "webhook_url_token": self.webhook_url_token,
            "delay_send_messages_ms": self.delay_send_messages_ms,
            "country_instance": self.country_instance,
            "flags": dict(self.flags),
        }
        for key, value in changes.items():
            if key == "flags":
                values["flags"].update(value)
            else:
                values[key] = value
        return InstanceSettings(**values)


@dataclass(frozen=True)
class Instance:
    """One GREEN-API instance: credentials, the engine behind it and its settings."""

    id: int
    api_token: str
    engine: str
    phone: str
    state: InstanceState
    webhook_signing_secret: str
    settings: InstanceSettings
    created_at: datetime

    @property
    def wid(self) -> str:
        return f"{self.phone}@c.us" if self.phone else ""

    @property
    def is_authorized(self) -> bool:
        return self.state is InstanceState.AUTHORIZED


class AvatarStatus(enum.Enum):
    """Every outcome an engine can report for an avatar lookup."""

    AVAILABLE = "available"
    NOT_SET = "not_set"
    HIDDEN = "hidden"
    NOT_ON_WHATSAPP = "not_on_whatsapp"
    RATE_LIMITED = "rate_limited"
    TIMED_OUT = "timed_out"
    BAD_REQUEST = "bad_request"


@dataclass(frozen=True)
class AvatarImage:
    """Image bytes and their media type (`image/jpeg`, `image/png` or `image/webp`)."""

    data: bytes
    content_type: str


@dataclass(frozen=True)
class AvatarResult:
    """What an engine found. `image` is set exactly when status is AVAILABLE."""

    status: AvatarStatus
    image: AvatarImage | None = None

    def __post_init__(self) -> None:
        if (self.status is AvatarStatus.AVAILABLE) != (self.image is not None):
            raise ValueError("an image goes with AVAILABLE and only with it")


@dataclass(frozen=True)
class AvatarLookup:
    """An avatar result once its image is stored: what the edge folds into the wire fields."""

    status: AvatarStatus
    url: str = ""


@dataclass(frozen=True)
class Contact:
    chat_id: str
    name: str
    is_group: bool


@dataclass(frozen=True)
class ContactInfo:
    chat_id: str
    name: str
    avatar_url: str = ""


class NotificationStatus(enum.Enum):
    QUEUED = "queued"
    DEAD = "dead"


@dataclass(frozen=True, init=False)
class Notification:
    """A queued notification. `receipt_id` only grows; `body_json` is the JSON object sent to
    clients, as stored (compact UTF-8 text), and `body` that object parsed."""

    receipt_id: int
    instance_id: int
    body_json: str
    status: NotificationStatus
    created_at: datetime
    attempts: int = 0
    last_error: str = ""
    # Set once when the notification is queued and kept by replays: the Standard Webhooks
    # `webhook-id` receivers dedupe pushes on.
    webhook_id: str = ""
    # When a failed push may be retried; None if never tried (due at once).
    next_attempt_at: datetime | None = None

    def __init__(
        self,
        receipt_id: int,
        instance_id: int,
        body_json: str,
        status: NotificationStatus,
        created_at: datetime,
        attempts: int = 0,
        last_error: str = "",
        webhook_id: str = "",
        next_attempt_at: datetime | None = None,
    ) -> None:
        # Written to the instance dict at once: the generated frozen __init__ sets each field
        # through object.__setattr__, 1.2 us per notification against 0.5, and one is made per
        # notification queued and again per notification read (docs/benchmarks.md). The fields
        # and defaults are the ones declared above (tests/unit/test_model.py keeps them so).
        self.__dict__.update(
            receipt_id=receipt_id,
            instance_id=instance_id,
            body_json=body_json,
            status=status,
            created_at=created_at,
            attempts=attempts,
            last_error=last_error,
            webhook_id=webhook_id,
            next_attempt_at=next_attempt_at,
        )

    @functools.cached_property
    def body(self) -> Mapping[str, Any]:
        # Parsed only when asked for: pushes and polls send the stored text as it is, which
        # saved a parse and a serialisation per notification (~15 % of the push path).
        parsed: Mapping[str, Any] = json.loads(self.body_json)
        return parsed


class AvatarJob(NamedTuple):
    """An acknowledged getAvatarAsync request waiting for its lookup."""

    id: int
    instance_id: int
    chat_id: str
    created_at: datetime
    # Times claimed, this claim included (0 before the first).
    attempts: int = 0


class PrivacyLevel(enum.StrEnum):
    EVERYONE = "everyone"
    CONTACTS = "contacts"
    NOBODY = "nobody"


@dataclass(frozen=True)
class SandboxAccount:
    """An account of the simulated network. `avatar_digest` names a stored image, if any."""

    phone: str
    name: str = ""
    on_whatsapp: bool = True
    avatar_digest: str | None = None
    avatar_privacy: PrivacyLevel = PrivacyLevel.EVERYONE
    contacts: tuple[str, ...] = ()
    lid: str | None = None


@dataclass(frozen=True)
class SandboxGroup:
    chat_id: str
    subject: str = ""
    avatar_digest: str | None = None
    participants: tuple[str, ...] = ()


class FaultKind(enum.StrEnum):
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    BAD_REQUEST = "bad_request"


@dataclass(frozen=True)
class SandboxFault:
    chat_id: str
    kind: FaultKind


@dataclass(frozen=True)
class SandboxRows:
    """What the sandbox world holds about some chat ids, read in one store round trip: faults
    and groups by chat id, accounts by phone and by lid."""

    faults: Mapping[str, SandboxFault] = field(default_factory=dict)
    accounts: Mapping[str, SandboxAccount] = field(default_factory=dict)
    accounts_by_lid: Mapping[str, SandboxAccount] = field(default_factory=dict)
    groups: Mapping[str, SandboxGroup] = field(default_factory=dict)

    def account_for(self, chat: ChatId) -> SandboxAccount | None:
        if chat.kind is ChatKind.LID:
            return self.accounts_by_lid.get(chat.user)
        return self.accounts.get(chat.user)


@dataclass(frozen=True)
class StoredImage:
    """An image in the avatar file store, addressed by the SHA-256 of its bytes."""

    digest: str
    content_type: str

    @property
    def extension(self) -> str:
        return {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}[self.content_type]

    @property
    def file_name(self) -> str:
        return f"{self.digest}.{self.extension}"


@dataclass(frozen=True)
class DeliveryAttempt:
    """What one webhook POST came to: a status code, or an error before any answer."""

    status_code: int | None
    error: str = ""
    retry_after: str | None = None

    @property
    def is_delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        if self.status_code is not None:
            return f"HTTP {self.status_code}"
        return self.error
