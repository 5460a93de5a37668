"""One keep-alive HTTP/1.1 client connection: an asyncio `Protocol` whose answers are parsed by
httptools (llhttp, the parser uvicorn uses).

It does only what webhook delivery needs: write a request that the caller has serialised,
and turn the answer into a status code and headers. The body is read only to keep the
connection usable and is dropped; past `MAX_BODY_BYTES` the connection is given up instead.
Which address to connect to, which connection to reuse, and for how long to wait are the
caller's business (`webhook_sender`).

Why not a general client: sending one webhook cost ~520 µs of CPU through httpcore on anyio,
~190 µs through aiohttp, and ~55 µs through this, and the push benchmark is bound by that CPU.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import cast

import httptools

# Enough for any acknowledgement; a receiver that answers with more is not read further.
MAX_BODY_BYTES = 65536


class ConnectionDropped(Exception):
    """The connection closed before any byte of the answer arrived.

    On a reused connection this is usually the peer closing it while idle, just as the request
    went out: the request was then not handled, and repeating it on a fresh connection is safe
    enough (a receiver that did handle it sees a duplicate, which at-least-once delivery allows).
    """


class BadResponse(Exception):
    """The answer was not HTTP, or broke off before its status line and headers were complete."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None:
        """The first value of the header `name` (given in lower case), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class Http1Connection(asyncio.Protocol):
    """One connection, one request at a time. `reusable` says whether the next request may go on
    it; an unusable connection has been closed already."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._lost = False
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._waiter: asyncio.Future[Response] | None = None
        # State of the answer being read; reset per request and after an interim (1xx) answer.
        self._got_bytes = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_done = False
        self._body_bytes = 0
        self._complete = False
        self._keep_alive = False
        self._unusable = False
        #: `loop.time()` when the last answer was complete.
        self.idle_since = 0.0

    @classmethod
    async def open(
        cls,
        address: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Http1Connection:
        """Connect to `address` (an IP address, so that nothing resolves it again behind the
        caller's back). With `ssl_context`, TLS verifies the certificate for `server_hostname`."""
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            cls,
            address,
            port,
            ssl=ssl_context,
            server_hostname=server_hostname if ssl_context is not None else None,
        )
        return connection

    @property
    def reusable(self) -> bool:
        return (
            self._complete
            and self._keep_alive
            and not self._unusable
            and not self._lost
            and self._waiter is None
        )

    async def request(self, data: bytes) -> Response:
        """Send one serialised request and wait for the final answer's status and headers.

        Raises `ConnectionDropped` or `BadResponse`. Cancellation closes the
        connection: the rest of an abandoned answer would otherwise be read as the next one's.
        """
        if self._waiter is not None:
            raise RuntimeError("an HTTP/1.1 connection carries one request at a time")
        if self._lost or self._transport is None or self._transport.is_closing():
            raise ConnectionDropped("the connection was closed")
        waiter: asyncio.Future[Response] = self._loop.create_future()
        self._waiter = waiter
        self._start_answer()
        self._got_bytes = False
        self._complete = False
        self._keep_alive = False
        try:
            self._transport.write(data)
            return await waiter
        except BaseException:
            self.abort()
            raise
        finally:
            self._waiter = None

    def close(self) -> None:
        """Close after writing what is buffered; `closed` completes when the socket is gone."""
        self._unusable = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self._unusable = True
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the Transport interface without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for: whatever they are, they would be read as the next answer.
            self.close()
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # After a 101 answer the bytes are another protocol's; the answer itself stands.
            self._unusable = True
        except httptools.HttpParserError as exc:
            self._unusable = True
            if not self._complete:
                waiter.set_exception(BadResponse(f"invalid HTTP answer: {exc}"))
        if not waiter.done() and self._body_bytes > MAX_BODY_BYTES:
            self._unusable = True
            waiter.set_result(Response(self._status, self._headers))
        if self._unusable:
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport: a half-closed connection cannot carry another request

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._headers_done:
                # A body delimited by the end of the connection ends here, and one cut short is
                # not read anyway: the status line is the receiver's answer.
                waiter.set_result(Response(self._status, self._headers))
            elif not self._got_bytes:
                reason = f": {exc}" if exc is not None else ""
                waiter.set_exception(
                    ConnectionDropped(f"the connection closed before any answer{reason}")
                )
            else:
                waiter.set_exception(
                    BadResponse("the connection closed in the middle of an answer")
                )
        if not self.closed.done():
            self.closed.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------------

    def _start_answer(self) -> None:
        self._status = 0
        self._headers = []
        self._headers_done = False
        self._body_bytes = 0

    def on_message_begin(self) -> None:
        if self._complete:
            # A second answer to one request: the connection is out of step.
            self._unusable = True
        self._start_answer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200 and self._status != 101:
            # An interim answer (100 Continue, 103 Early Hints): the final one follows.
            self._start_answer()
            return
        if self._complete:
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive() and self._status != 101
        self.idle_since = self._loop.time()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, self._headers))
