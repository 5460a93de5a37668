"""The sandbox world file: a YAML description of the simulated WhatsApp network.

Top-level keys `accounts` (phone, lid, name, on_whatsapp, avatar, avatar_privacy, contacts),
`groups` (chatId, subject, avatar, participants) and `faults` (chatId, kind);
`sandbox_demo.demo_world_yaml()` shows every one. Avatar paths are relative to the file.
Loading merges into the stored world: accounts replace accounts by phone, groups and faults
replace theirs by chat id, and an account listed without `avatar` has none afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from wagate.core.errors import BadRequestData, WorldFileError
from wagate.core.images import sniff_content_type
from wagate.core.model import (
    AvatarImage,
    FaultKind,
    PrivacyLevel,
    SandboxAccount,
    SandboxFault,
    SandboxGroup,
)
from wagate.core.ports import ImageStore, Store
from wagate.wire.chat_id import parse_chat_id

_DIGITS = re.compile(r"[0-9]+")


def _int_to_str(value: object) -> object:
    # Unquoted YAML numbers arrive as ints; bools are ints too, and are left to fail as such.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _phone_digits(info: ValidationInfo) -> tuple[int, int]:
    context: Mapping[str, Any] = info.context or {}
    bounds: tuple[int, int] = context.get("phone_digits", (11, 12))
    return bounds


def _check_phone(value: str, info: ValidationInfo) -> str:
    low, high = _phone_digits(info)
    if _DIGITS.fullmatch(value) is None or not low <= len(value) <= high:
        raise ValueError(f"{value!r} is not a phone number of {low} to {high} digits")
    return value


def _check_lid(value: str) -> str:
    if _DIGITS.fullmatch(value) is None or not 6 <= len(value) <= 20:
        raise ValueError(f"{value!r} is not a linked id of 6 to 20 digits")
    return value


def _check_chat_id(value: str, info: ValidationInfo) -> str:
    try:
        return str(parse_chat_id(value, _phone_digits(info)))
    except BadRequestData:
        raise ValueError(f"{value!r} is not a valid chatId") from None


def _check_group_id(value: str) -> str:
    if not value.endswith("@g.us"):
        raise ValueError(f"{value!r} is not a group chatId (one ending in @g.us)")
    return value


Phone = Annotated[str, BeforeValidator(_int_to_str), AfterValidator(_check_phone)]
Lid = Annotated[str, BeforeValidator(_int_to_str), AfterValidator(_check_lid)]
ChatIdText = Annotated[str, AfterValidator(_check_chat_id)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Account(_Entry):
    phone: Phone
    lid: Lid | None = None
    name: str = ""
    on_whatsapp: bool = True
    avatar: str | None = None
    avatar_privacy: PrivacyLevel = PrivacyLevel.EVERYONE
    contacts: list[Phone] = Field(default_factory=list)


class _Group(_Entry):
    chat_id: Annotated[ChatIdText, AfterValidator(_check_group_id)] = Field(alias="chatId")
    subject: str = ""
    avatar: str | None = None
    participants: list[Phone] = Field(default_factory=list)


class _Fault(_Entry):
    chat_id: ChatIdText = Field(alias="chatId")
    kind: FaultKind


class _World(_Entry):
    accounts: list[_Account] = Field(default_factory=list)
    groups: list[_Group] = Field(default_factory=list)
    faults: list[_Fault] = Field(default_factory=list)

    @field_validator("accounts", "groups", "faults", mode="before")
    @classmethod
    def _null_is_empty(cls, value: object) -> object:
        # `accounts:` with nothing under it is YAML null; read it as an empty list.
        return [] if value is None else value


@dataclass(frozen=True)
class WorldSummary:
    """What a world file held: entries merged and distinct images stored."""

    accounts: int
    groups: int
    faults: int
    images: int


async def load_world_file(
    path: Path, store: Store, images: ImageStore, phone_digits: tuple[int, int]
) -> WorldSummary:
    """Validate the world file at `path` with its avatar images, then merge it into the store.

    Nothing is written unless the whole file is valid: every problem raises `WorldFileError`
    naming the file and the entry (`world.yaml: accounts[2].avatar: file images/x.jpg not
    found`): unreadable or malformed YAML, unknown keys, bad values, phones outside
    `phone_digits`, an entry listed twice, a lid already used by another account, and avatar
    files that are missing or not JPEG, PNG or WebP. Images are stored before the one
    `merge_sandbox_world` call, so the world never names an image that is not there. Store and
    image store errors propagate.
    """
    label = str(path)
    try:
        raw = await anyio.to_thread.run_sync(path.read_bytes)
    except OSError as exc:
        raise WorldFileError(f"{label}: cannot read the file: {exc.strerror or exc}") from exc
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise WorldFileError(f"{label}: not valid YAML{where}: {problem}") from exc
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise WorldFileError(
            f"{label}: the top level must be a mapping of accounts, groups, faults"
        )
    try:
        world = _World.model_validate(document, context={"phone_digits": phone_digits})
    except ValidationError as exc:
        raise WorldFileError("\n".join(f"{label}: {_describe(e)}" for e in exc.errors())) from exc

    problems = _duplicates(world)
    problems += await _lid_conflicts(world, store)
    files = await _read_avatars(world, path.parent, problems)
    if problems:
        raise WorldFileError("\n".join(f"{label}: {problem}" for problem in problems))

    digests: dict[str, str] = {}
    for name, (data, content_type) in files.items():
        digests[name] = (await images.put(AvatarImage(data, content_type))).digest

    accounts = [
        SandboxAccount(
            phone=a.phone,
            name=a.name,
            on_whatsapp=a.on_whatsapp,
            avatar_digest=digests[a.avatar] if a.avatar is not None else None,
            avatar_privacy=a.avatar_privacy,
            contacts=tuple(a.contacts),
            lid=a.lid,
        )
        for a in world.accounts
    ]
    groups = [
        SandboxGroup(
            chat_id=g.chat_id,
            subject=g.subject,
            avatar_digest=digests[g.avatar] if g.avatar is not None else None,
            participants=tuple(g.participants),
        )
        for g in world.groups
    ]
    faults = [SandboxFault(f.chat_id, f.kind) for f in world.faults]
    await store.merge_sandbox_world(accounts, groups, faults)
    distinct = len({digest for digest in digests.values()})
    return WorldSummary(len(accounts), len(groups), len(faults), distinct)


def _describe(error: ErrorDetails) -> str:
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "is required"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where.lstrip('.') or 'top level'}: {message}"


def _duplicates(world: _World) -> list[str]:
    problems: list[str] = []
    sections: list[tuple[str, str, list[str | None]]] = [
        ("accounts", "phone", [a.phone for a in world.accounts]),
        ("accounts", "lid", [a.lid for a in world.accounts]),
        ("groups", "chatId", [g.chat_id for g in world.groups]),
        ("faults", "chatId", [f.chat_id for f in world.faults]),
    ]
    for section, key, values in sections:
        first: dict[str, int] = {}
        for index, value in enumerate(values):
            if value is None:
                continue
            if value in first:
                problems.append(
                    f"{section}[{index}].{key}: {value} is listed twice"
                    f" (also {section}[{first[value]}])"
                )
            else:
                first[value] = index
    return problems


async def _lid_conflicts(world: _World, store: Store) -> list[str]:
    # The world after the merge must map each lid to one account, or `@lid` lookups are ambiguous.
    listed = {a.phone for a in world.accounts}
    owners = {
        a.lid: a.phone
        for a in await store.list_sandbox_accounts()
        if a.lid is not None and a.phone not in listed
    }
    return [
        f"accounts[{index}].lid: {a.lid} already belongs to account {owners[a.lid]}"
        for index, a in enumerate(world.accounts)
        if a.lid is not None and a.lid in owners
    ]


async def _read_avatars(
    world: _World, directory: Path, problems: list[str]
) -> dict[str, tuple[bytes, str]]:
    """Read each distinct avatar file once; record a problem for each entry that names a bad one."""
    entries = [(f"accounts[{i}]", a.avatar) for i, a in enumerate(world.accounts)]
    entries += [(f"groups[{i}]", g.avatar) for i, g in enumerate(world.groups)]
    files: dict[str, tuple[bytes, str]] = {}
    failures: dict[str, str] = {}
    for where, name in entries:
        if name is None:
            continue
        if name not in files and name not in failures:
            failure = await _read_avatar(directory / name, name, files)
            if failure is not None:
                failures[name] = failure
        if name in failures:
            problems.append(f"{where}.avatar: {failures[name]}")
    return files


async def _read_avatar(path: Path, name: str, files: dict[str, tuple[bytes, str]]) -> str | None:
    try:
        data = await anyio.to_thread.run_sync(path.read_bytes)
    except FileNotFoundError:
        return f"file {name} not found"
    except OSError as exc:
        return f"cannot read file {name}: {exc.strerror or exc}"
    content_type = sniff_content_type(data)
    if content_type is None:
        return f"file {name} is not a JPEG, PNG or WebP image"
    files[name] = (data, content_type)
    return None
