"""HttpWebhookSender against a raw HTTP/1.1 server on 127.0.0.1 whose every answer, and every
misbehaviour, a test scripts: keep-alive reuse, connections the peer drops, bodies of every
framing, timeouts, the address guard and connection eviction."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from wagate import __version__
from wagate.core.errors import ValidationFailed
from wagate.core.model import DeliveryAttempt
from wagate.core.webhook_policy import WebhookAddressPolicy
from wagate.workers import webhook_sender
from wagate.workers.webhook_sender import HttpWebhookSender

pytestmark = pytest.mark.anyio

WAIT_S = 5  # bound on awaiting the server; never reached when things work


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    # The server runs on uvloop (uvicorn picks it), whose transports differ from asyncio's.
    return ("asyncio", {"use_uvloop": request.param == "uvloop"})


@dataclass
class Request:
    connection: int  # index of the accepted connection it came on
    number: int  # its position on that connection, from 0
    head: list[str]
    body: bytes

    @property
    def request_line(self) -> str:
        return self.head[0]

    def header(self, name: str) -> str | None:
        for line in self.head[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


@dataclass
class Reply:
    """What the server does with a request: write `data` (None: never answer), then maybe close."""

    data: bytes | None
    close: bool = False
    gate: asyncio.Event | None = None  # answer only once this is set


def ok(extra: str = "", body: bytes = b"") -> Reply:
    return Reply(f"HTTP/1.1 200 OK\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body)


Script = Callable[[Request], Reply]


@dataclass
class RawServer:
    script: Script = field(default=lambda _request: ok())
    accepted: int = 0
    requests: list[Request] = field(default_factory=list)
    # Indices of connections the client closed (EOF seen by the server).
    closed_by_client: list[int] = field(default_factory=list)
    port: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?x=1"

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def wait(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(condition)

    async def _note(self, change: Callable[[], None]) -> None:
        async with self._changed:
            change()
            self._changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        index = self.accepted
        await self._note(lambda: setattr(self, "accepted", index + 1))
        number = 0
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    await self._note(lambda: self.closed_by_client.append(index))
                    return
                head = raw.decode("latin-1").split("\r\n")[:-2]
                length = next(
                    (int(h.split(":")[1]) for h in head if h.lower().startswith("content-length")),
                    0,
                )
                request = Request(index, number, head, await reader.readexactly(length))
                number += 1
                await self._note(lambda r=request: self.requests.append(r))  # type: ignore[misc]
                reply = self.script(request)
                if reply.data is None:
                    # Never answer; just notice when the client gives up.
                    await reader.read()
                    await self._note(lambda: self.closed_by_client.append(index))
                    return
                if reply.gate is not None:
                    await reply.gate.wait()
                writer.write(reply.data)
                await writer.drain()
                if reply.close:
                    return
        except ConnectionError:
            # The client may close while a big answer is still being written.
            await self._note(lambda: self.closed_by_client.append(index))
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    started = await RawServer().start()
    yield started
    await started.stop()


def sender(
    policy: WebhookAddressPolicy | None = None,
    timeout_s: float = 5,
    max_connections: int = 4,
    resolver: webhook_sender.Resolver = webhook_sender.resolve_host,
) -> HttpWebhookSender:
    return HttpWebhookSender(policy or WebhookAddressPolicy(), timeout_s, max_connections, resolver)


async def post_once(url: str, body: bytes, *, lane: str = "", **options: Any) -> DeliveryAttempt:
    """One post by a fresh sender (made with `options`), closed after."""
    client = sender(**options)
    try:
        return await client.post(url, HEADERS, body, lane=lane)
    finally:
        await client.aclose()


async def two_posts(server: RawServer) -> tuple[int | None, int | None]:
    """The status codes of two posts on one lane, one after the other, by a fresh sender."""
    client = sender()
    try:
        first = await client.post(server.url, HEADERS, b"x", lane="1")
        second = await client.post(server.url, HEADERS, b"x", lane="1")
    finally:
        await client.aclose()
    return first.status_code, second.status_code


HEADERS = {"Content-Type": "application/json", "webhook-id": "msg_1"}


async def test_one_connection_carries_every_post_of_a_lane(server: RawServer) -> None:
    client = sender()
    try:
        for n in range(3):
            attempt = await client.post(server.url, HEADERS, b'{"n":%d}' % n, lane="1")
            assert attempt.status_code == 200 and attempt.error == ""
    finally:
        await client.aclose()
    assert server.accepted == 1
    assert [(r.connection, r.number) for r in server.requests] == [(0, 0), (0, 1), (0, 2)]
    first = server.requests[0]
    assert first.request_line == "POST /hook?x=1 HTTP/1.1"
    assert first.header("Host") == f"127.0.0.1:{server.port}"
    assert first.header("User-Agent") == f"wagate/{__version__}"
    assert first.header("Content-Type") == "application/json"
    assert first.header("webhook-id") == "msg_1"
    assert first.header("Content-Length") == "7"
    assert first.body == b'{"n":0}'


async def test_default_port_is_left_out_of_host_and_odd_paths_are_encoded() -> None:
    seen: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        seen.append(f"{host}:{port}")
        return ["127.0.0.1"]

    # Refused before connecting: port 80 of this machine is none of the test's business.
    attempt = await post_once(
        "http://hooks.test/a b/é",
        b"{}",
        policy=WebhookAddressPolicy(deny=[ipaddress.ip_network("127.0.0.0/8")]),
        resolver=resolve,
    )
    assert seen == ["hooks.test:80"]
    assert attempt.error.startswith("address refused: 127.0.0.1")
    target = webhook_sender._Target.parse("http://hooks.test/a b/é?q=ü")
    assert target.request_line_and_host == (
        b"POST /a%20b/%C3%A9?q=%C3%BC HTTP/1.1\r\nHost: hooks.test\r\n"
    )
    ipv6 = webhook_sender._Target.parse("https://[::1]:8443/")
    assert ipv6.is_ip and ipv6.host == "::1"
    assert ipv6.request_line_and_host.endswith(b"Host: [::1]:8443\r\n")


async def test_a_connection_the_peer_closed_while_idle_is_not_reused(server: RawServer) -> None:
    # The server closes each connection after answering, without saying so in the answer.
    server.script = lambda _request: Reply(ok().data, close=True)
    client = sender()
    try:
        assert (await client.post(server.url, HEADERS, b"1", lane="1")).status_code == 200
        # Once the client has seen the close (internals: nothing else shows it)...
        _, idle = client._idle["1"]
        async with asyncio.timeout(WAIT_S):
            await idle.closed
        assert (await client.post(server.url, HEADERS, b"2", lane="1")).status_code == 200
    finally:
        await client.aclose()
    # ...the next post goes to a new connection, and the request is sent once.
    assert [(r.connection, r.body) for r in server.requests] == [(0, b"1"), (1, b"2")]


async def test_a_reused_connection_dropped_before_answering_is_retried_once(
    server: RawServer,
) -> None:
    # As if the server closed the idle connection just as the second request went out.
    server.script = lambda r: Reply(b"", close=True) if r.number == 1 else ok()
    client = sender()
    try:
        assert (await client.post(server.url, HEADERS, b"1", lane="1")).status_code == 200
        attempt = await client.post(server.url, HEADERS, b"2", lane="1")
    finally:
        await client.aclose()
    assert attempt.status_code == 200
    assert [(r.connection, r.body) for r in server.requests] == [(0, b"1"), (0, b"2"), (1, b"2")]


async def test_a_fresh_connection_dropped_before_answering_is_the_attempts_failure(
    server: RawServer,
) -> None:
    server.script = lambda _request: Reply(b"", close=True)
    attempt = await post_once(server.url, b"1", lane="1")
    assert attempt.status_code is None
    assert attempt.error.startswith("the connection closed before any answer")
    assert len(server.requests) == 1


async def test_an_answer_broken_off_in_its_headers_is_a_failure(server: RawServer) -> None:
    server.script = lambda _request: Reply(b"HTTP/1.1 200 OK\r\nContent-Le", close=True)
    attempt = await post_once(server.url, b"1")
    assert attempt.status_code is None
    assert attempt.error == "the connection closed in the middle of an answer"


async def test_garbage_is_not_an_answer(server: RawServer) -> None:
    server.script = lambda _request: Reply(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    attempt = await post_once(server.url, b"1")
    assert attempt.status_code is None
    assert attempt.error.startswith("invalid HTTP answer")


async def test_connection_close_answer_means_a_new_connection_next_time(
    server: RawServer,
) -> None:
    server.script = lambda _request: ok("Connection: close\r\n")
    client = sender()
    try:
        for body in (b"1", b"2"):
            assert (await client.post(server.url, HEADERS, body, lane="1")).status_code == 200
        # The server keeps its side open: it is the client that must not reuse the connection.
        await server.wait(lambda: server.closed_by_client == [0])
    finally:
        await client.aclose()
    assert server.accepted == 2


async def test_chunked_answer_is_read_and_the_connection_reused(server: RawServer) -> None:
    chunked = (
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    server.script = lambda _request: Reply(chunked)
    assert await two_posts(server) == (202, 202)
    assert server.accepted == 1


async def test_interim_100_continue_is_skipped(server: RawServer) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\n" + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    server.script = lambda _request: Reply(answer)
    assert await two_posts(server) == (200, 200)
    assert server.accepted == 1


async def test_answer_ending_at_eof_is_read_and_the_connection_not_reused(
    server: RawServer,
) -> None:
    eof_body = Reply(b"HTTP/1.1 201 Created\r\n\r\nuntil the end", close=True)
    server.script = lambda r: eof_body if r.connection == 0 else ok()
    assert await two_posts(server) == (201, 200)
    assert server.accepted == 2


async def test_oversized_answer_keeps_its_status_and_drops_the_connection(
    server: RawServer,
) -> None:
    big = b"x" * (1024 * 1024)
    server.script = lambda r: ok(body=big) if r.connection == 0 else ok()
    client = sender()
    try:
        first = await client.post(server.url, HEADERS, b"x", lane="1")
        # The client stopped reading: the server notices its writes fail or its reads end.
        await server.wait(lambda: server.closed_by_client == [0])
        second = await client.post(server.url, HEADERS, b"x", lane="1")
    finally:
        await client.aclose()
    assert (first.status_code, second.status_code) == (200, 200)
    assert server.accepted == 2


async def test_retry_after_is_captured(server: RawServer) -> None:
    server.script = lambda _request: Reply(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n"
    )
    attempt = await post_once(server.url, b"x")
    assert attempt.status_code == 429
    assert attempt.retry_after == "7"
    assert not attempt.is_delivered


async def test_no_answer_within_the_timeout(server: RawServer) -> None:
    server.script = lambda _request: Reply(None)
    client = sender(timeout_s=0.3)
    try:
        started = time.monotonic()
        attempt = await client.post(server.url, HEADERS, b"x", lane="1")
        elapsed = time.monotonic() - started
        # The abandoned connection is closed, not kept for the lane's next post.
        await server.wait(lambda: server.closed_by_client == [0])
    finally:
        await client.aclose()
    assert attempt.status_code is None
    assert attempt.error == "no answer within 0.3 s"
    assert 0.25 <= elapsed < 1.5


async def test_cancellation_propagates_and_closes_the_connection(server: RawServer) -> None:
    server.script = lambda _request: Reply(None)
    client = sender()
    try:
        task = asyncio.create_task(client.post(server.url, HEADERS, b"x", lane="1"))
        await server.wait(lambda: len(server.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait(lambda: server.closed_by_client == [0])
    finally:
        await client.aclose()


async def test_connection_refused_is_cannot_connect() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempt = await post_once(f"http://127.0.0.1:{port}/hook", b"x")
    assert attempt.status_code is None
    assert attempt.error.startswith("cannot connect: ")


async def test_policy_refuses_the_address_before_connecting(server: RawServer) -> None:
    attempt = await post_once(
        server.url, b"x", policy=WebhookAddressPolicy(deny=[ipaddress.ip_network("127.0.0.0/8")])
    )
    assert attempt.error == "address refused: 127.0.0.1 is in WAGATE_WEBHOOK_DENY"
    assert server.accepted == 0


async def test_fake_resolver_names_the_address_and_the_host_header_keeps_the_name(
    server: RawServer,
) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.test", server.port)
        # A refused address first: the guard skips it and the next one is used.
        return ["169.254.169.254", "127.0.0.1"]

    attempt = await post_once(f"http://hooks.test:{server.port}/hook", b"x", resolver=resolve)
    assert attempt.status_code == 200
    assert server.requests[0].header("Host") == f"hooks.test:{server.port}"


async def test_only_refused_addresses_are_reported_with_every_reason() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["169.254.169.254", "10.0.0.1"]

    attempt = await post_once(
        "http://hooks.test/hook",
        b"x",
        policy=WebhookAddressPolicy(deny=[ipaddress.ip_network("10.0.0.0/8")]),
        resolver=resolve,
    )
    assert attempt.error == (
        "address refused: 169.254.169.254 is a link-local, metadata or non-unicast address; "
        "10.0.0.1 is in WAGATE_WEBHOOK_DENY"
    )


async def test_unresolvable_host_is_an_attempt_failure() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    attempt = await post_once("http://nowhere.test/hook", b"x", resolver=resolve)
    assert attempt.error.startswith("cannot resolve nowhere.test: ")


async def test_host_name_idna_cannot_encode_is_an_attempt_failure() -> None:
    client = sender()  # the real resolver: the name fails before any DNS query
    try:
        attempt = await client.post("http://a..b/hook", HEADERS, b"x")
    finally:
        await client.aclose()
    assert attempt.error.startswith("cannot resolve a..b: ")


async def test_a_url_urlsplit_refuses_is_an_attempt_failure() -> None:
    # setSettings refuses it; a URL stored before that check must still fail one attempt only.
    client = sender()
    try:
        attempt = await client.post("http://[::1/hook", HEADERS, b"x")
    finally:
        await client.aclose()
    assert attempt.status_code is None
    assert attempt.error.startswith("invalid URL: ")


async def test_header_value_with_a_line_break_is_refused(server: RawServer) -> None:
    client = sender()
    try:
        attempt = await client.post(
            server.url, {"Authorization": "Bearer x\r\nX-Injected: 1"}, b"x"
        )
    finally:
        await client.aclose()
    assert attempt.status_code is None
    assert attempt.error == "invalid header 'Authorization'"
    assert server.accepted == 0


async def test_least_recently_used_lanes_lose_their_connections(server: RawServer) -> None:
    client = sender(max_connections=1)  # keeps 4 lanes' connections
    try:
        for lane in "abcde":
            assert (await client.post(server.url, HEADERS, b"x", lane=lane)).status_code == 200
        await server.wait(lambda: server.closed_by_client == [0])  # lane "a"'s connection
        for lane in "bcde":
            assert (await client.post(server.url, HEADERS, b"x", lane=lane)).status_code == 200
        assert server.accepted == 5
        assert (await client.post(server.url, HEADERS, b"x", lane="a")).status_code == 200
        assert server.accepted == 6
        await server.wait(lambda: server.closed_by_client == [0, 1])  # "b" was the oldest now
    finally:
        await client.aclose()
    await server.wait(lambda: len(server.closed_by_client) == 6)


async def test_aclose_closes_every_connection(server: RawServer) -> None:
    client = sender()
    for lane in "ab":
        await client.post(server.url, HEADERS, b"x", lane=lane)
    assert server.closed_by_client == []
    await client.aclose()
    await server.wait(lambda: sorted(server.closed_by_client) == [0, 1])


async def test_connection_idle_too_long_is_not_reused(
    server: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_sender, "_MAX_IDLE_S", -1.0)  # any idle time is too long
    client = sender()
    try:
        for _ in range(2):
            assert (await client.post(server.url, HEADERS, b"x", lane="1")).status_code == 200
        await server.wait(lambda: server.closed_by_client == [0])
    finally:
        await client.aclose()
    assert server.accepted == 2


async def test_a_lane_changing_receiver_gets_a_new_connection(server: RawServer) -> None:
    other = await RawServer().start()
    client = sender()
    try:
        assert (await client.post(server.url, HEADERS, b"1", lane="1")).status_code == 200
        assert (await client.post(other.url, HEADERS, b"2", lane="1")).status_code == 200
        await server.wait(lambda: server.closed_by_client == [0])
    finally:
        await client.aclose()
        await other.stop()
    assert [r.body for r in other.requests] == [b"2"]


async def test_concurrent_posts_on_one_lane_use_separate_connections(server: RawServer) -> None:
    both_arrived = asyncio.Event()

    def script(request: Request) -> Reply:
        if request.connection == 0:
            # Held until the second post has arrived, which it can only do on its own connection.
            return Reply(ok().data, gate=both_arrived)
        both_arrived.set()
        return ok()

    server.script = script
    client = sender()
    try:
        results = await asyncio.gather(
            client.post(server.url, HEADERS, b"1", lane="1"),
            client.post(server.url, HEADERS, b"2", lane="1"),
        )
        # Only one connection is kept for the lane; the other is closed.
        await server.wait(lambda: len(server.closed_by_client) == 1)
    finally:
        await client.aclose()
    assert [r.status_code for r in results] == [200, 200]
    assert server.accepted == 2


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=hooks.test"),
            *("-addext", "subjectAltName=DNS:hooks.test"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_verifies_the_certificate_for_the_host_name(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            await reader.read()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    tls_server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = tls_server.sockets[0].getsockname()[1]

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    url = f"https://hooks.test:{port}/hook"
    untrusting, trusting = sender(resolver=resolve), sender(resolver=resolve)
    # Trust the test's own certificate authority instead of the system's.
    trusting._ssl_context = ssl.create_default_context(cafile=str(cert))
    try:
        refused = await untrusting.post(url, HEADERS, b"x")
        delivered = await trusting.post(url, HEADERS, b"x")
        wrong_name = await trusting.post(f"https://127.0.0.1:{port}/hook", HEADERS, b"x")
    finally:
        await untrusting.aclose()
        await trusting.aclose()
        tls_server.close()
        await tls_server.wait_closed()
    assert refused.error.startswith("cannot connect: ")
    assert "CERTIFICATE_VERIFY_FAILED" in refused.error
    assert delivered.status_code == 200
    assert wrong_name.error.startswith("cannot connect: ")
    assert len(seen) == 1 and seen[0].startswith(b"POST /hook HTTP/1.1\r\nHost: hooks.test:")


async def test_check_url_refuses_only_hosts_with_no_allowed_address() -> None:
    dns = {"meta.test": ["169.254.169.254"], "mixed.test": ["10.0.0.1", "127.0.0.1"]}

    async def resolve(host: str, port: int) -> list[str]:
        if host not in dns:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return dns[host]

    client = sender(
        policy=WebhookAddressPolicy(deny=[ipaddress.ip_network("10.0.0.0/8")]), resolver=resolve
    )
    try:
        await client.check_url("http://mixed.test/hook")
        await client.check_url("http://later.test/hook")  # not resolvable yet: accepted
        with pytest.raises(ValidationFailed, match="refused address"):
            await client.check_url("http://meta.test/hook")
    finally:
        await client.aclose()
