"""AvatarService.lookup_many: answers in order, each bounded by the avatar timeout; and
`fetch_each`, the batch call of engines that look chats up one by one."""

from __future__ import annotations

import asyncio
from collections.abc import MutableSequence, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from wagate.core.avatars import AvatarService, fetch_each
from wagate.core.images import solid_png
from wagate.core.model import (
    AvatarImage,
    AvatarResult,
    AvatarStatus,
    ChatId,
    ChatKind,
    Instance,
    InstanceSettings,
    InstanceState,
    StoredImage,
)

pytestmark = pytest.mark.anyio
IMAGE = AvatarImage(solid_png((1, 2, 3)), "image/png")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ScriptedEngine:
    """Answers by the chat's user part: 'slow' never answers, 'boom' fails, 'pic' has an image."""

    name = "sandbox"

    def __init__(self) -> None:
        self.cancelled: list[str] = []

    async def fetch_avatar(self, instance: Instance, chat: ChatId) -> AvatarResult:
        if chat.user.startswith("slow"):
            try:
                await asyncio.Event().wait()
            finally:
                self.cancelled.append(chat.user)
        if chat.user.startswith("boom"):
            raise OSError("store gone")
        if chat.user.startswith("pic"):
            return AvatarResult(AvatarStatus.AVAILABLE, IMAGE)
        return AvatarResult(AvatarStatus.NOT_SET)

    async def fetch_avatars(
        self,
        instance: Instance,
        chats: Sequence[ChatId],
        answers: MutableSequence[AvatarResult | None],
    ) -> None:
        engine: Any = self
        await fetch_each(engine, instance, chats, answers)


class BatchEngine:
    """A batch engine: answers the chats before the first 'slow' one, then never answers, or
    raises `raises` (an error of its own) instead."""

    name = "sandbox"

    def __init__(self, raises: BaseException | None = None) -> None:
        self.raises = raises

    async def fetch_avatars(
        self,
        instance: Instance,
        chats: Sequence[ChatId],
        answers: MutableSequence[AvatarResult | None],
    ) -> None:
        for position, chat in enumerate(chats):
            if chat.user.startswith("slow"):
                if self.raises is not None:
                    raise self.raises
                await asyncio.Event().wait()
            answers[position] = AvatarResult(AvatarStatus.NOT_SET)


class MemoryImages:
    def __init__(self) -> None:
        self.puts = 0

    async def put(self, image: AvatarImage) -> StoredImage:
        self.puts += 1
        return StoredImage("d" * 64, image.content_type)


def service(engine: ScriptedEngine | BatchEngine, images: MemoryImages) -> AvatarService:
    # Only the engine and the image store are used by lookups.
    unused: Any = None
    image_store: Any = images
    engines: Any = {"sandbox": engine}
    return AvatarService(unused, engines, image_store, unused, lambda: "http://h", 0.2)


INSTANCE = Instance(
    id=1101000001,
    api_token="a" * 50,
    engine="sandbox",
    phone="11001234567",
    state=InstanceState.AUTHORIZED,
    webhook_signing_secret="whsec_dGVzdA==",
    settings=InstanceSettings(),
    created_at=datetime.now(UTC),
)


def chat(user: str) -> ChatId:
    return ChatId(ChatKind.PERSONAL, user)


async def test_answers_in_order_with_the_slow_one_timed_out() -> None:
    engine, images = ScriptedEngine(), MemoryImages()
    lookups = await service(engine, images).lookup_many(
        INSTANCE, [chat("pic1"), chat("slow1"), chat("none1"), chat("pic2")]
    )
    assert [lookup.status for lookup in lookups] == [
        AvatarStatus.AVAILABLE,
        AvatarStatus.TIMED_OUT,
        AvatarStatus.NOT_SET,
        AvatarStatus.AVAILABLE,
    ]
    assert lookups[0].url == lookups[3].url == f"http://h/avatars/{'d' * 64}.png"
    assert images.puts == 1  # the same bytes are stored once
    assert engine.cancelled == ["slow1"]


async def test_a_failure_of_wagate_itself_is_raised() -> None:
    engine = ScriptedEngine()
    with pytest.raises(OSError, match="store gone"):
        await service(engine, MemoryImages()).lookup_many(
            INSTANCE, [chat("none1"), chat("boom1"), chat("slow1")]
        )
    assert engine.cancelled == ["slow1"]


async def test_nothing_to_look_up() -> None:
    assert await service(ScriptedEngine(), MemoryImages()).lookup_many(INSTANCE, []) == []


async def test_a_batch_engine_keeps_the_answers_it_gave_before_the_deadline() -> None:
    lookups = await service(BatchEngine(), MemoryImages()).lookup_many(
        INSTANCE, [chat("none1"), chat("slow1"), chat("none2")]
    )
    assert [lookup.status for lookup in lookups] == [
        AvatarStatus.NOT_SET,
        AvatarStatus.TIMED_OUT,
        AvatarStatus.TIMED_OUT,
    ]


async def test_an_engines_own_timeout_error_is_not_taken_for_the_deadline() -> None:
    engine = BatchEngine(raises=TimeoutError("upstream"))
    with pytest.raises(TimeoutError, match="upstream"):
        await service(engine, MemoryImages()).lookup_many(INSTANCE, [chat("slow1")])
