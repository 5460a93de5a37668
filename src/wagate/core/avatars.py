"""Avatar lookups: ask the engine within the timeout, keep the image at a stable URL."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable, Mapping, MutableSequence, Sequence

from wagate.core.errors import InstanceNotAuthorized, WagateError
from wagate.core.model import (
    AvatarJob,
    AvatarLookup,
    AvatarResult,
    AvatarStatus,
    ChatId,
    Instance,
    StoredImage,
)
from wagate.core.ports import Engine, ImageStore, Store, WakeUps

logger = logging.getLogger(__name__)

# Digests known to be stored already: enough for every avatar a busy instance sees.
_STORED_DIGESTS = 65536


class AvatarService:
    """The use cases behind getAvatar (answer now) and getAvatarAsync (accept, answer later).

    `public_url` is asked at every lookup because the server records it after start-up and the
    CLI reads it from the store.
    """

    def __init__(
        self,
        store: Store,
        engines: Mapping[str, Engine],
        images: ImageStore,
        wakeups: WakeUps,
        public_url: Callable[[], str],
        timeout_s: float,
    ) -> None:
        self._store = store
        self._engines = engines
        self._images = images
        self._wakeups = wakeups
        self._public_url = public_url
        self.timeout_s = timeout_s
        self._stored: dict[str, StoredImage] = {}

    def engine_for(self, instance: Instance) -> Engine:
        try:
            return self._engines[instance.engine]
        except KeyError:
            raise WagateError(f"engine {instance.engine!r} is not configured") from None

    @staticmethod
    def require_authorized(instance: Instance) -> None:
        if not instance.is_authorized:
            raise InstanceNotAuthorized()

    def url_for(self, file_name: str) -> str:
        return f"{self._public_url()}/avatars/{file_name}"

    async def lookup(self, instance: Instance, chat: ChatId) -> AvatarLookup:
        """Ask the engine, bounded by the avatar timeout; store an image that came back.

        Never raises for an outcome WhatsApp can produce: a slow engine is TIMED_OUT.
        """
        engine = self.engine_for(instance)
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await engine.fetch_avatar(instance, chat)
        except TimeoutError:
            return _timed_out(instance, chat)
        return await self._kept(result)

    async def lookup_many(self, instance: Instance, chats: Sequence[ChatId]) -> list[AvatarLookup]:
        """`lookup` for several chats at once, answers in order: one engine call
        (`Engine.fetch_avatars`) under one deadline, the avatar timeout, so a chat that is not
        answered by then is TIMED_OUT and the others keep their answers. A failure of wagate
        itself (the store) is raised."""
        if not chats:
            return []
        engine = self.engine_for(instance)
        answers: list[AvatarResult | None] = [None] * len(chats)
        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                await engine.fetch_avatars(instance, chats, answers)
        except TimeoutError:
            if not deadline.expired():
                raise  # the engine's own, not the deadline
        lookups: list[AvatarLookup] = []
        for chat, result in zip(chats, answers, strict=True):
            if result is None:
                lookups.append(_timed_out(instance, chat))
            else:
                lookups.append(await self._kept(result))
        return lookups

    async def _kept(self, result: AvatarResult) -> AvatarLookup:
        """The lookup's answer, with an image that came back stored at its stable address."""
        if result.image is None:
            return AvatarLookup(result.status)
        digest = hashlib.sha256(result.image.data).hexdigest()
        stored = self._stored.get(digest)
        if stored is None:
            # Stored once per process: the same bytes always have the same address.
            stored = await self._images.put(result.image)
            if len(self._stored) >= _STORED_DIGESTS:
                self._stored.clear()
            self._stored[digest] = stored
        return AvatarLookup(AvatarStatus.AVAILABLE, self.url_for(stored.file_name))

    async def accept(self, instance: Instance, chat: ChatId) -> AvatarJob:
        """Record a getAvatarAsync request durably; it is answered by the avatar job worker."""
        job = await self._store.enqueue_avatar_job(instance.id, str(chat))
        await self._wakeups.job_added(instance.id)
        return job


async def fetch_each(
    engine: Engine,
    instance: Instance,
    chats: Sequence[ChatId],
    answers: MutableSequence[AvatarResult | None],
) -> None:
    """`Engine.fetch_avatars` for an engine that looks chats up one by one: a task per chat, all
    at once, each answer set as it comes. Cancelled, it cancels them all; a failure of one is
    raised once the others are stopped."""
    tasks = [asyncio.ensure_future(engine.fetch_avatar(instance, chat)) for chat in chats]

    def keep(position: int, task: asyncio.Future[AvatarResult]) -> None:
        if not task.cancelled() and task.exception() is None:
            answers[position] = task.result()

    for position, task in enumerate(tasks):
        task.add_done_callback(functools.partial(keep, position))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _timed_out(instance: Instance, chat: ChatId) -> AvatarLookup:
    logger.info(
        "avatar lookup timed out",
        extra={"action": "avatar_timeout", "instance": instance.id, "chat": str(chat)},
    )
    return AvatarLookup(AvatarStatus.TIMED_OUT)
