"""Instances: creation with fresh credentials, authentication, and changes to them."""

from __future__ import annotations

import asyncio
import base64
import hmac
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime

from wagate.core.errors import (
    InstanceConflict,
    InvalidPathParameter,
    InvalidToken,
    UnknownInstance,
    WagateError,
)
from wagate.core.model import (
    Instance,
    InstanceSettings,
    InstanceState,
    SandboxAccount,
    is_storable_id,
)
from wagate.core.ports import Store

ENGINES_AVAILABLE = ("sandbox",)
_ID_LOW, _ID_HIGH = 1_100_000_000, 1_199_999_999
# Numbers handed out by `instance create` without --phone; a range real numbers do not use much.
_FREE_PHONE_PREFIX = "1100"


def new_api_token() -> str:
    """50 lowercase hex characters, the shape GREEN-API tokens have."""
    return secrets.token_hex(25)


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def parse_instance_id(text: str) -> int:
    """The numeric idInstance of a path. Raises `InvalidPathParameter`."""
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise InvalidPathParameter("Parameter idInstance not an integer")
    return int(text)


class InstanceService:
    """Creates, authenticates and changes instances.

    Instances are cached for `cache_ttl_s` because every API call authenticates one. Changes
    made through this service update the cache at once; changes made by another process (the
    CLI, another node) are seen once the entry expires, so within `cache_ttl_s`. Concurrent
    finds of an instance that is not cached share one store read: when a busy instance's entry
    expires, its requests would otherwise each read it, and under load those reads queue
    behind each other in the store thread (hundreds a second, docs/benchmarks.md).
    """

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime] | None = None,
        cache_ttl_s: float = 0.0,
        phone_digits: tuple[int, int] = (11, 12),
    ) -> None:
        self._store = store
        # How many digits an instance's own number may have: the chat ids that can reach it.
        self._phone_digits = phone_digits
        self._clock = clock or (lambda: datetime.now(UTC))
        self._cache_ttl_s = cache_ttl_s
        self._cache: dict[int, tuple[Instance, float]] = {}
        self._loading: dict[int, asyncio.Task[Instance | None]] = {}

    async def create(
        self,
        phone: str | None = None,
        engine: str = "sandbox",
        settings: InstanceSettings | None = None,
    ) -> Instance:
        """Create an instance for `phone` (a free sandbox number when None).

        A phone absent from the sandbox world joins it as an account with no avatar.
        Raises `InstanceConflict` when the phone already has an instance.
        """
        if engine not in ENGINES_AVAILABLE:
            raise WagateError(
                f"engine {engine!r} is not available; choose one of {', '.join(ENGINES_AVAILABLE)}"
            )
        if phone is not None and (not phone.isascii() or not phone.isdigit()):
            raise WagateError(f"phone must be digits only, got {phone!r}")
        low, high = self._phone_digits
        if phone is not None and not low <= len(phone) <= high:
            raise WagateError(f"phone must have {low} to {high} digits, got {len(phone)}")
        if phone is not None and await self._store.get_instance_by_phone(phone):
            raise InstanceConflict(f"phone {phone} already has an instance")
        phone = phone or await self._free_phone()
        if await self._store.get_sandbox_account(phone) is None:
            await self._store.merge_sandbox_world([SandboxAccount(phone=phone)], [], [])
        for _ in range(20):
            instance = Instance(
                id=secrets.randbelow(_ID_HIGH - _ID_LOW) + _ID_LOW,
                api_token=new_api_token(),
                engine=engine,
                phone=phone,
                state=InstanceState.AUTHORIZED,
                webhook_signing_secret=new_signing_secret(),
                settings=settings or InstanceSettings(),
                created_at=self._clock(),
            )
            try:
                await self._store.create_instance(instance)
            except InstanceConflict:
                if await self._store.get_instance_by_phone(phone):
                    raise
                continue  # the random id was taken: draw another
            self._remember(instance)
            return instance
        raise WagateError("could not allocate a free idInstance")

    async def _free_phone(self) -> str:
        taken = {i.phone for i in await self._store.list_instances()}
        taken |= {a.phone for a in await self._store.list_sandbox_accounts()}
        for _ in range(1000):
            candidate = _FREE_PHONE_PREFIX + f"{secrets.randbelow(10**7):07d}"
            if candidate not in taken:
                return candidate
        raise WagateError("no free sandbox phone number left")

    async def find(self, instance_id: int) -> Instance | None:
        """The instance, from the cache when fresh enough."""
        cached = self._cache.get(instance_id)
        if cached is not None and time.monotonic() - cached[1] < self._cache_ttl_s:
            return cached[0]
        if not is_storable_id(instance_id):
            return None
        loading = self._loading.get(instance_id)
        if loading is None or loading.get_loop() is not asyncio.get_running_loop():
            loading = asyncio.create_task(self._load(instance_id), name=f"instance:{instance_id}")
            self._loading[instance_id] = loading
            loading.add_done_callback(lambda task: self._forget_load(instance_id, task))
        # Shielded: a caller that gives up must not cancel the read the others wait for.
        return await asyncio.shield(loading)

    async def _load(self, instance_id: int) -> Instance | None:
        instance = await self._store.get_instance(instance_id)
        # A change made through this service while the read ran superseded it (and took it out
        # of `_loading`): the row read here may be older than the one the change cached.
        if self._loading.get(instance_id) is asyncio.current_task():
            if instance is None:
                self._cache.pop(instance_id, None)
            else:
                self._remember(instance)
        return instance

    def _forget_load(self, instance_id: int, task: asyncio.Task[Instance | None]) -> None:
        if self._loading.get(instance_id) is task:
            del self._loading[instance_id]
        if not task.cancelled():
            task.exception()  # retrieved: a failed read whose callers all gave up is not logged

    def _remember(self, instance: Instance) -> None:
        self._loading.pop(instance.id, None)
        if self._cache_ttl_s > 0:
            self._cache[instance.id] = (instance, time.monotonic())

    async def get(self, instance_id: int) -> Instance:
        instance = await self.find(instance_id)
        if instance is None:
            raise UnknownInstance(f"instance {instance_id} does not exist")
        return instance

    async def authenticate(self, instance_id: int, api_token: str) -> Instance:
        """The instance if the token matches. Raises `UnknownInstance` or `InvalidToken`."""
        instance = await self.find(instance_id)
        if instance is None:
            raise UnknownInstance()
        if not hmac.compare_digest(instance.api_token.encode(), api_token.encode()):
            raise InvalidToken()
        return instance

    async def list(self) -> list[Instance]:
        return await self._store.list_instances()

    async def delete(self, instance_id: int) -> None:
        self._cache.pop(instance_id, None)
        self._loading.pop(instance_id, None)
        if not is_storable_id(instance_id) or not await self._store.delete_instance(instance_id):
            raise UnknownInstance(f"instance {instance_id} does not exist")

    async def rotate_token(self, instance_id: int) -> Instance:
        return await self._update(instance_id, api_token=new_api_token())

    async def rotate_signing_secret(self, instance_id: int) -> Instance:
        return await self._update(instance_id, webhook_signing_secret=new_signing_secret())

    async def set_state(self, instance_id: int, state: InstanceState) -> Instance:
        return await self._update(instance_id, state=state)

    async def set_settings(self, instance_id: int, settings: InstanceSettings) -> Instance:
        return await self._update(instance_id, settings=settings)

    async def _update(
        self,
        instance_id: int,
        *,
        api_token: str | None = None,
        webhook_signing_secret: str | None = None,
        state: InstanceState | None = None,
        settings: InstanceSettings | None = None,
    ) -> Instance:
        if not is_storable_id(instance_id):
            raise UnknownInstance(f"instance {instance_id} does not exist")
        updated = await self._store.update_instance(
            instance_id,
            api_token=api_token,
            webhook_signing_secret=webhook_signing_secret,
            state=state,
            settings=settings,
        )
        if updated is None:
            self._cache.pop(instance_id, None)
            self._loading.pop(instance_id, None)
            raise UnknownInstance(f"instance {instance_id} does not exist")
        self._remember(updated)
        return updated
