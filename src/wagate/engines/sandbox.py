"""The sandbox engine: a simulated WhatsApp network, described by the world in the store.

Accounts, groups, avatars, privacy settings and faults come from a world file loaded with
`wagate sandbox load` (see `sandbox_world`). The engine reads the store on every call and caches
nothing, so a world loaded by the CLI in another process takes effect at once. Lookups started
together (the avatar worker runs a batch of one instance's jobs at once) share one store read.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import MutableSequence, Sequence

import anyio

from wagate.core.model import (
    AvatarImage,
    AvatarResult,
    AvatarStatus,
    ChatId,
    ChatKind,
    Contact,
    FaultKind,
    Instance,
    InstanceState,
    PrivacyLevel,
    SandboxAccount,
    SandboxRows,
)
from wagate.core.ports import ImageStore, Store

logger = logging.getLogger(__name__)

# Sandbox worlds have few avatars; this bounds memory for large ones.
_IMAGE_CACHE_ENTRIES = 256

_FAULT_RESULTS = {
    FaultKind.RATE_LIMITED: AvatarStatus.RATE_LIMITED,
    FaultKind.BAD_REQUEST: AvatarStatus.BAD_REQUEST,
}


class _CoalescedReads:
    """Reads the world rows of every chat asked for during one event-loop iteration with one
    store call, instead of two or three round trips per lookup."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: list[tuple[Sequence[ChatId], asyncio.Future[SandboxRows]]] = []
        self._reads: set[asyncio.Task[None]] = set()

    async def rows_for(self, chats: Sequence[ChatId]) -> SandboxRows:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SandboxRows] = loop.create_future()
        self._waiting.append((chats, future))
        if len(self._waiting) == 1:
            # After the callbacks already queued: lookups started together all join first.
            loop.call_soon(self._start_read)
        return await future

    def _start_read(self) -> None:
        waiting, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._read(waiting))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read(
        self, waiting: list[tuple[Sequence[ChatId], asyncio.Future[SandboxRows]]]
    ) -> None:
        try:
            rows = await self._store.get_sandbox_rows(
                [chat for chats, _ in waiting for chat in chats]
            )
        except asyncio.CancelledError:  # the engine is closing
            for _, future in waiting:
                future.cancel()
            raise
        except Exception as exc:  # every waiting lookup must hear of it
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, future in waiting:
            if not future.done():
                future.set_result(rows)

    async def aclose(self) -> None:
        for task in self._reads:
            task.cancel()
        await asyncio.gather(*self._reads, return_exceptions=True)


class SandboxEngine:
    """The `Engine` port over the sandbox world in `store`, with avatar images in `images`.

    Lookups follow WhatsApp's rules as the world describes them:
    - a fault on the chat id comes first: `timeout` never answers (the caller's timeout cancels
      the call), `rate_limited` and `bad_request` answer with that status;
    - a personal or `@lid` chat with no account, or one not on WhatsApp, is NOT_ON_WHATSAPP;
    - an account's avatar is visible to the account itself, to everyone under `everyone`, to
      the numbers in its contacts under `contacts`, and to nobody else; HIDDEN wins over NOT_SET,
      since a hidden avatar cannot be known to be missing;
    - a known group's avatar is visible to everyone; an unknown group is NOT_ON_WHATSAPP.
    Store errors propagate.
    """

    name = "sandbox"

    def __init__(self, store: Store, images: ImageStore) -> None:
        self._store = store
        self._images = images
        self._reads = _CoalescedReads(store)
        # Images are addressed by their digest, so a cached one can never be stale.
        self._image_cache: OrderedDict[str, AvatarImage] = OrderedDict()

    async def fetch_avatar(self, instance: Instance, chat: ChatId) -> AvatarResult:
        answers: list[AvatarResult | None] = [None]
        await self.fetch_avatars(instance, (chat,), answers)
        # A chat it does not answer (a timeout fault) never returns from `fetch_avatars`.
        assert answers[0] is not None
        return answers[0]

    async def fetch_avatars(
        self,
        instance: Instance,
        chats: Sequence[ChatId],
        answers: MutableSequence[AvatarResult | None],
    ) -> None:
        """One read for the whole batch, then each chat answered in turn, with no task or
        event-loop round trip per chat (they were most of an avatar job's cost)."""
        rows = await self._reads.rows_for(chats)
        silent = False
        for position, chat in enumerate(chats):
            result = await self._answer(instance, chat, rows)
            if result is None:
                silent = True
            else:
                answers[position] = result
        if silent:
            await anyio.sleep_forever()  # until the caller's deadline

    async def _answer(
        self, instance: Instance, chat: ChatId, rows: SandboxRows
    ) -> AvatarResult | None:
        """What WhatsApp answers, or None for a chat it never answers (a timeout fault)."""
        fault = rows.faults.get(str(chat))
        if fault is not None:
            if fault.kind is FaultKind.TIMEOUT:
                return None
            return AvatarResult(_FAULT_RESULTS[fault.kind])
        if chat.kind is ChatKind.GROUP:
            group = rows.groups.get(str(chat))
            if group is None:
                return AvatarResult(AvatarStatus.NOT_ON_WHATSAPP)
            return await self._avatar(group.avatar_digest, chat)
        account = rows.account_for(chat)
        if account is None or not account.on_whatsapp:
            return AvatarResult(AvatarStatus.NOT_ON_WHATSAPP)
        if not _may_see(instance, account):
            return AvatarResult(AvatarStatus.HIDDEN)
        return await self._avatar(account.avatar_digest, chat)

    async def _avatar(self, digest: str | None, chat: ChatId) -> AvatarResult:
        if digest is None:
            return AvatarResult(AvatarStatus.NOT_SET)
        image = await self._load_image(digest)
        if image is None:
            # The world names an image the file store lost (a deleted file, another data dir):
            # answer as WhatsApp would for no avatar rather than fail every lookup.
            logger.warning(
                "sandbox avatar image %s of %s is missing from the image store",
                digest,
                chat,
                extra={"action": "sandbox_image_missing", "digest": digest},
            )
            return AvatarResult(AvatarStatus.NOT_SET)
        return AvatarResult(AvatarStatus.AVAILABLE, image)

    async def _load_image(self, digest: str) -> AvatarImage | None:
        image = self._image_cache.get(digest)
        if image is not None:
            self._image_cache.move_to_end(digest)
            return image
        image = await self._images.load(digest)
        if image is not None:
            self._image_cache[digest] = image
            if len(self._image_cache) > _IMAGE_CACHE_ENTRIES:
                self._image_cache.popitem(last=False)
        return image

    async def state(self, instance: Instance) -> InstanceState:
        """The state the operator gave the instance (`authorized` unless changed)."""
        return instance.state

    async def check_whatsapp(self, instance: Instance, phone: str) -> bool:
        """True iff the world has an account for `phone` that is on WhatsApp."""
        account = await self._store.get_sandbox_account(phone)
        return account is not None and account.on_whatsapp

    async def contacts(self, instance: Instance) -> list[Contact]:
        """The instance account's contacts (named from the world), then its groups."""
        own = await self._store.get_sandbox_account(instance.phone)
        found: list[Contact] = []
        if own is not None and own.contacts:
            names = {a.phone: a.name for a in await self._store.list_sandbox_accounts()}
            found += [Contact(f"{p}@c.us", names.get(p, ""), False) for p in own.contacts]
        found += [
            Contact(group.chat_id, group.subject, True)
            for group in await self._store.list_sandbox_groups()
            if instance.phone in group.participants
        ]
        return found

    async def contact_name(self, instance: Instance, chat: ChatId) -> str | None:
        """The account's name or the group's subject; None if unknown, off WhatsApp or unnamed."""
        rows = await self._reads.rows_for((chat,))
        if chat.kind is ChatKind.GROUP:
            group = rows.groups.get(str(chat))
            return (group.subject or None) if group is not None else None
        account = rows.account_for(chat)
        if account is None or not account.on_whatsapp:
            return None
        return account.name or None

    async def aclose(self) -> None:
        """Stops reads in flight; the store and image store belong to the caller."""
        await self._reads.aclose()


def _may_see(instance: Instance, account: SandboxAccount) -> bool:
    if instance.phone == account.phone:
        return True
    if account.avatar_privacy is PrivacyLevel.EVERYONE:
        return True
    if account.avatar_privacy is PrivacyLevel.CONTACTS:
        return instance.phone in account.contacts
    return False
