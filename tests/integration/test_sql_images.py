"""`SqlImageStore` keeps `FileImageStore`'s contract (test_image_store.py) on both dialects."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
import pytest
from sqlalchemy import Connection, insert, select

from tests.integration.test_image_store import MALFORMED_NAMES
from wagate.core.errors import WagateError
from wagate.core.images import solid_jpeg, solid_png
from wagate.core.model import AvatarImage, StoredImage
from wagate.stores import SqlStore, open_store
from wagate.stores._threads import Database
from wagate.stores.schema import avatar_images
from wagate.stores.sql_images import SqlImageStore

pytestmark = pytest.mark.anyio

PNG = solid_png((255, 0, 0))
JPEG = solid_jpeg((0, 0, 255))
# A 1x1 lossless WebP.
WEBP = (
    b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00"
    b"\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def images(store: SqlStore) -> SqlImageStore:
    return SqlImageStore(*store.engines)


async def stored_digests(store: SqlStore) -> list[str]:
    _, reader = store.engines
    query = select(avatar_images.c.digest).order_by(avatar_images.c.digest)
    return await reader.run(lambda conn: [str(digest) for digest in conn.execute(query).scalars()])


@pytest.mark.parametrize(
    ("data", "content_type", "ext"),
    [(JPEG, "image/jpeg", "jpg"), (PNG, "image/png", "png"), (WEBP, "image/webp", "webp")],
)
async def test_put_then_open_and_load(
    images: SqlImageStore, data: bytes, content_type: str, ext: str
) -> None:
    stored = await images.put(AvatarImage(data, content_type))
    digest = hashlib.sha256(data).hexdigest()
    assert stored == StoredImage(digest, content_type)
    assert stored.file_name == f"{digest}.{ext}"
    assert await images.open(stored.file_name) == (stored, data)
    assert await images.load(digest) == AvatarImage(data, content_type)


async def test_put_is_idempotent(store: SqlStore, images: SqlImageStore) -> None:
    first = await images.put(AvatarImage(PNG, "image/png"))
    second = await images.put(AvatarImage(PNG, "image/png"))
    assert first == second
    assert await stored_digests(store) == [first.digest]


async def test_concurrent_puts_of_the_same_bytes(store: SqlStore, images: SqlImageStore) -> None:
    results: list[StoredImage] = []

    async def put() -> None:
        results.append(await images.put(AvatarImage(JPEG, "image/jpeg")))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(put)
    assert len(set(results)) == 1
    assert await stored_digests(store) == [results[0].digest]


async def test_a_put_that_loses_the_race_is_a_no_op(
    store: SqlStore, images: SqlImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await images.put(AvatarImage(WEBP, "image/webp"))

    async def not_seen_yet(digest: str) -> None:
        return None

    # As if another node inserted the row between this put's read and its insert.
    monkeypatch.setattr(images, "_content_type", not_seen_yet)
    assert await images.put(AvatarImage(WEBP, "image/webp")) == first
    assert await stored_digests(store) == [first.digest]


async def test_different_bytes_get_different_names(store: SqlStore, images: SqlImageStore) -> None:
    red = await images.put(AvatarImage(solid_png((255, 0, 0)), "image/png"))
    green = await images.put(AvatarImage(solid_png((0, 255, 0)), "image/png"))
    assert red.digest != green.digest
    assert await stored_digests(store) == sorted([red.digest, green.digest])


async def test_sniffed_type_wins_over_declared(images: SqlImageStore) -> None:
    stored = await images.put(AvatarImage(PNG, "image/jpeg"))
    assert stored.content_type == "image/png"
    assert stored.file_name.endswith(".png")
    assert await images.load(stored.digest) == AvatarImage(PNG, "image/png")


@pytest.mark.parametrize("data", [b"", b"GIF89a\x01\x00", b"<svg/>", b"hello"])
async def test_put_refuses_other_data(store: SqlStore, images: SqlImageStore, data: bytes) -> None:
    with pytest.raises(ValueError, match="not JPEG, PNG or WebP"):
        await images.put(AvatarImage(data, "image/png"))
    assert await stored_digests(store) == []


async def test_unknown_digest_and_file_name(images: SqlImageStore) -> None:
    stored = await images.put(AvatarImage(PNG, "image/png"))
    other = "f" * 64
    assert await images.load(other) is None
    assert await images.open(f"{other}.png") is None
    # Right digest, wrong extension: the served name must match the stored format.
    assert await images.open(f"{stored.digest}.jpg") is None
    assert await images.open(f"{stored.digest}.webp") is None


@pytest.mark.parametrize("name", [*MALFORMED_NAMES, "a" * 64 + ".png' OR '1'='1"])
async def test_open_rejects_malformed_names(
    store: SqlStore, images: SqlImageStore, name: str
) -> None:
    # Rows a sloppy match could find: the digest of every name above, and one in upper case.
    writer, _ = store.engines

    def add_rows(conn: Connection) -> None:
        for digest in ("a" * 64, "A" * 64):
            row = {"digest": digest, "content_type": "image/png", "data": PNG}
            conn.execute(insert(avatar_images).values(**row, created_at=datetime.now(UTC)))

    await writer.run(add_rows)
    assert await images.open("a" * 64 + ".png") is not None  # the well-formed name is found
    assert await images.open(name) is None


@pytest.mark.parametrize("digest", ["", "../x", "A" * 64, "a" * 63, "a" * 64 + ".png", "*", "%"])
async def test_load_rejects_malformed_digests(images: SqlImageStore, digest: str) -> None:
    assert await images.load(digest) is None


async def test_a_second_node_on_the_same_database_sees_the_images(
    database_url: str, images: SqlImageStore
) -> None:
    stored = await images.put(AvatarImage(WEBP, "image/webp"))
    async with open_store(database_url) as other:
        assert await SqlImageStore(*other.engines).open(stored.file_name) == (stored, WEBP)


async def test_bytes_survive_the_round_trip(images: SqlImageStore) -> None:
    # Every byte value, at avatar size (a few hundred KB), behind a PNG signature.
    data = PNG + bytes(range(256)) * 1200
    stored = await images.put(AvatarImage(data, "image/png"))
    assert await images.load(stored.digest) == AvatarImage(data, "image/png")


@pytest.fixture
async def unmigrated_images(empty_database_url: str) -> AsyncIterator[SqlImageStore]:
    database = Database(empty_database_url)
    yield SqlImageStore(database.writer, database.reader)
    await database.aclose()


async def test_database_errors_are_wagate_errors(unmigrated_images: SqlImageStore) -> None:
    with pytest.raises(WagateError, match="database error"):
        await unmigrated_images.load("a" * 64)
    with pytest.raises(WagateError, match="database error"):
        await unmigrated_images.put(AvatarImage(PNG, "image/png"))
