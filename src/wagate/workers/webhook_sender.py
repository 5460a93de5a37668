"""The HTTP client that POSTs webhooks: keep-alive connections per receiver, and an address guard
that checks the address actually connected to, after DNS resolution, at delivery time."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore

from wagate import __version__
from wagate.core.errors import ValidationFailed
from wagate.core.model import DeliveryAttempt
from wagate.core.webhook_policy import AddressRefused, WebhookAddressPolicy

Resolver = Callable[[str, int], Awaitable[list[str]]]
USER_AGENT = f"wagate/{__version__}"
# Enough for any acknowledgement; a receiver that answers with more is not read further.
_MAX_RESPONSE_BYTES = 65536


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class _RefusedAddress(httpcore.ConnectError):
    pass


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself and connects only to addresses the policy allows, so a hostname
    that resolves (or re-resolves) to a metadata address is refused where it matters."""

    def __init__(self, policy: WebhookAddressPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self._resolver(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        refusals: list[str] = []
        last_error: Exception | None = None
        for address in addresses:
            try:
                self._policy.check(address)
            except AddressRefused as exc:
                refusals.append(str(exc))
                continue
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        if last_error is not None:
            raise last_error
        raise _RefusedAddress("address refused: " + "; ".join(refusals or ["no address"]))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks go to http(s) URLs only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class HttpWebhookSender:
    """Implements the `WebhookSender` port with an httpcore connection pool."""

    def __init__(
        self,
        policy: WebhookAddressPolicy,
        timeout_s: float,
        max_connections: int,
        resolver: Resolver = resolve_host,
    ) -> None:
        self._policy = policy
        self._timeout_s = timeout_s
        self._resolver = resolver
        self._backend = _GuardedBackend(policy, resolver)
        self._ssl_context = ssl.create_default_context()
        # A small pool per lane, not one big pool: httpcore checks every pooled connection on
        # each request, which made 64 busy lanes slower in total than one.
        self._pools: OrderedDict[str, httpcore.AsyncConnectionPool] = OrderedDict()
        self._max_pools = max_connections * 4

    def _pool_for(self, lane: str) -> tuple[httpcore.AsyncConnectionPool, list[Any]]:
        pool = self._pools.get(lane)
        if pool is not None:
            self._pools.move_to_end(lane)
            return pool, []
        pool = httpcore.AsyncConnectionPool(
            ssl_context=self._ssl_context,
            max_connections=2,
            max_keepalive_connections=1,
            keepalive_expiry=60,
            retries=0,
            network_backend=self._backend,
        )
        self._pools[lane] = pool
        evicted = []
        while len(self._pools) > self._max_pools:
            evicted.append(self._pools.popitem(last=False)[1])
        return pool, evicted

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, lane: str = ""
    ) -> DeliveryAttempt:
        pool, evicted = self._pool_for(lane)
        for old in evicted:
            await old.aclose()
        request_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        request_headers.append((b"User-Agent", USER_AGENT.encode()))
        timeout = {
            "connect": self._timeout_s,
            "read": self._timeout_s,
            "write": self._timeout_s,
            "pool": self._timeout_s,
        }
        try:
            async with asyncio.timeout(self._timeout_s):
                async with pool.stream(
                    "POST",
                    url,
                    headers=request_headers,
                    content=body,
                    extensions={"timeout": timeout},
                ) as response:
                    await _read_some(response)
                    retry_after = _header(response.headers, b"retry-after")
                    return DeliveryAttempt(response.status, retry_after=retry_after)
        except (TimeoutError, httpcore.TimeoutException):
            return DeliveryAttempt(None, f"no answer within {self._timeout_s:g} s")
        except _RefusedAddress as exc:
            return DeliveryAttempt(None, str(exc))
        except httpcore.ConnectError as exc:
            return DeliveryAttempt(None, f"cannot connect: {exc or type(exc).__name__}")
        except (httpcore.ProtocolError, httpcore.NetworkError, httpcore.UnsupportedProtocol) as exc:
            return DeliveryAttempt(None, f"{type(exc).__name__}: {exc}")

    async def check_url(self, url: str) -> None:
        """Refuse a URL whose host is, or resolves only to, refused addresses. A host that does
        not resolve yet is accepted: the receiver may come later, and delivery checks again."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ValidationFailed("'webhookUrl' has an invalid port") from exc
        try:
            with anyio.fail_after(2):
                addresses = await self._resolver(host, port)
        except (OSError, TimeoutError):
            return
        refused: list[str] = []
        for address in addresses:
            try:
                self._policy.check(address)
            except AddressRefused as exc:
                refused.append(str(exc))
        always = [a for a in addresses if _always_refused(a)]
        if always or (addresses and len(refused) == len(addresses)):
            raise ValidationFailed(f"'webhookUrl' points to a refused address ({refused[0]})")

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()


def _always_refused(address: str) -> bool:
    # The default policy refuses exactly the addresses no operator setting can allow.
    return not WebhookAddressPolicy().is_allowed(address)


async def _read_some(response: httpcore.Response) -> None:
    size = 0
    async for chunk in response.aiter_stream():
        size += len(chunk)
        if size > _MAX_RESPONSE_BYTES:
            break


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
