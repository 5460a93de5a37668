"""The HTTP client that POSTs webhooks: one keep-alive connection per lane (an instance, whose
notifications go out one at a time), and an address guard that checks the address actually
connected to, after DNS resolution, at delivery time.

The wire protocol lives in `http1` (an asyncio Protocol with httptools' llhttp parser); this
module decides where to connect and which connection to reuse. It replaced httpcore, which
cost ~520 µs of CPU per webhook (on anyio; aiohttp ~190 µs) against ~55 µs for a bare asyncio
protocol with httptools, and pushing webhooks is the CPU-bound path of the push benchmark.
Sequential posts on one lane to bench/receiver.py cost this sender 30-50 µs of CPU each on
uvloop and 55-90 µs on the default loop, against 320-370 and 420-480 µs for the httpcore sender
in the same runs.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from wagate import __version__
from wagate.core.errors import ValidationFailed
from wagate.core.model import DeliveryAttempt
from wagate.core.webhook_policy import AddressRefused, WebhookAddressPolicy
from wagate.workers.http1 import BadResponse, ConnectionDropped, Http1Connection, Response

Resolver = Callable[[str, int], Awaitable[list[str]]]
USER_AGENT = f"wagate/{__version__}"
# Receivers commonly drop idle connections after 5-75 s; past this, one is not worth trying.
_MAX_IDLE_S = 60.0
# Everything a request target may hold as is; the rest (spaces, non-ASCII) is percent-encoded.
_TARGET_SAFE = "!#$%&'()*+,/:;=?@[]~"
_is_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z").match  # RFC 9110 field names
_breaks_line = re.compile(r"[\r\n\0]").search


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class _Failed(Exception):
    """An attempt that ended before an answer; the message is the attempt's error."""


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a URL's requests go, and the start of every request to it."""

    origin: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    is_ip: bool
    request_line_and_host: bytes

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def parse(url: str) -> _Target:
        # Cached: a lane posts to one URL again and again, and parsing it costs as much as
        # a fifth of sending a webhook.
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # setSettings refuses such URLs; one stored earlier may remain
            raise _Failed(f"invalid URL: {exc}") from exc
        if parts.scheme not in ("http", "https"):
            raise _Failed(f"cannot send to a {parts.scheme or 'scheme-less'} URL")
        host = parts.hostname or ""
        if not host:
            raise _Failed("the URL has no host")
        tls = parts.scheme == "https"
        default_port = 443 if tls else 80
        try:
            port = parts.port or default_port
        except ValueError as exc:
            raise _Failed(f"invalid port: {exc}") from exc
        try:
            ipaddress.ip_address(host)
            is_ip = True
        except ValueError:
            is_ip = False
        try:
            ascii_host = host if host.isascii() else host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise _Failed(f"invalid host name: {exc}") from exc
        authority = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
        if port != default_port:
            authority += f":{port}"
        target = quote(parts.path or "/", safe=_TARGET_SAFE)
        if parts.query:
            target += "?" + quote(parts.query, safe=_TARGET_SAFE)
        start = f"POST {target} HTTP/1.1\r\nHost: {authority}\r\n".encode("ascii")
        return _Target((parts.scheme, host, port), host, port, tls, is_ip, start)


def _request(target: _Target, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [target.request_line_and_host]
    for name, value in headers.items():
        if not _is_token(name) or _breaks_line(value):
            # Values such as the bearer token come from instance settings: a line break in one
            # would let it add headers of its own.
            raise _Failed(f"invalid header {name!r}")
        lines.append(f"{name}: {value}\r\n".encode())
    lines.append(f"User-Agent: {USER_AGENT}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
    lines.append(body)
    return b"".join(lines)


class HttpWebhookSender:
    """Implements the `WebhookSender` port on `Http1Connection`s, one kept per lane."""

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
        self._ssl_context = ssl.create_default_context()
        # Idle connections by lane, least recently used first. A connection in use is taken
        # out, so a second concurrent post on one lane opens a connection of its own.
        self._idle: OrderedDict[str, tuple[tuple[str, str, int], Http1Connection]] = OrderedDict()
        self._max_idle = max_connections * 4
        # Every open connection, in use or idle, for `aclose`.
        self._open: set[Http1Connection] = set()

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, lane: str = ""
    ) -> DeliveryAttempt:
        try:
            target = _Target.parse(url)
            data = _request(target, headers, body)
            async with asyncio.timeout(self._timeout_s):
                response = await self._exchange(lane, target, data)
        except TimeoutError:
            return DeliveryAttempt(None, f"no answer within {self._timeout_s:g} s")
        except _Failed as exc:
            return DeliveryAttempt(None, str(exc))
        except (ConnectionDropped, BadResponse) as exc:
            return DeliveryAttempt(None, str(exc))
        except OSError as exc:
            return DeliveryAttempt(None, f"connection failed: {exc or type(exc).__name__}")
        retry_after = response.header(b"retry-after")
        return DeliveryAttempt(
            response.status,
            retry_after=retry_after.decode("latin-1") if retry_after is not None else None,
        )

    async def _exchange(self, lane: str, target: _Target, data: bytes) -> Response:
        connection = self._take(lane, target.origin)
        if connection is not None:
            try:
                return await self._send(lane, target, connection, data)
            except ConnectionDropped:
                pass  # see ConnectionDropped: once more on a fresh connection
        connection = await self._connect(target)
        return await self._send(lane, target, connection, data)

    async def _send(
        self, lane: str, target: _Target, connection: Http1Connection, data: bytes
    ) -> Response:
        try:
            response = await connection.request(data)
        except BaseException:
            self._forget(connection)
            raise
        if connection.reusable:
            self._keep(lane, target.origin, connection)
        else:
            self._forget(connection)
        return response

    def _take(self, lane: str, origin: tuple[str, str, int]) -> Http1Connection | None:
        entry = self._idle.pop(lane, None)
        if entry is None:
            return None
        kept_origin, connection = entry
        idle_s = asyncio.get_running_loop().time() - connection.idle_since
        if kept_origin != origin or idle_s > _MAX_IDLE_S or not connection.reusable:
            self._forget(connection)
            return None
        return connection

    def _keep(self, lane: str, origin: tuple[str, str, int], connection: Http1Connection) -> None:
        previous = self._idle.pop(lane, None)
        if previous is not None:
            self._forget(previous[1])
        self._idle[lane] = (origin, connection)
        while len(self._idle) > self._max_idle:
            self._forget(self._idle.popitem(last=False)[1][1])

    def _forget(self, connection: Http1Connection) -> None:
        connection.close()
        self._open.discard(connection)

    async def _connect(self, target: _Target) -> Http1Connection:
        if target.is_ip:
            addresses = [target.host]
        else:
            try:
                addresses = await self._resolver(target.host, target.port)
            except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
                raise _Failed(f"cannot resolve {target.host}: {exc}") from exc
        refusals: list[str] = []
        last_error: OSError | None = None
        for address in addresses:
            try:
                self._policy.check(address)
            except AddressRefused as exc:
                refusals.append(str(exc))
                continue
            except ValueError:
                refusals.append(f"{address} is not an IP address")
                continue
            try:
                connection = await Http1Connection.open(
                    address,
                    target.port,
                    self._ssl_context if target.tls else None,
                    server_hostname=target.host,
                )
            except OSError as exc:
                last_error = exc
                continue
            self._open.add(connection)
            return connection
        if last_error is not None:
            raise _Failed(f"cannot connect: {last_error or type(last_error).__name__}")
        raise _Failed("address refused: " + "; ".join(refusals or ["no address"]))

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
            async with asyncio.timeout(2):
                addresses = await self._resolver(host, port)
        except UnicodeError as exc:  # a name IDNA cannot encode (a label over 63 characters)
            raise ValidationFailed("'webhookUrl' has an invalid host name") from exc
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
        connections, self._open = list(self._open), set()
        self._idle.clear()
        for connection in connections:
            connection.close()
        if connections:
            # Let the transports finish closing while the loop still runs.
            await asyncio.wait([c.closed for c in connections], timeout=2)
        for connection in connections:
            if not connection.closed.done():
                connection.abort()


def _always_refused(address: str) -> bool:
    # The default policy refuses exactly the addresses no operator setting can allow.
    return not WebhookAddressPolicy().is_allowed(address)
