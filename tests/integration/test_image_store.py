from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import anyio
import pytest

from wagate.core.images import solid_jpeg, solid_png
from wagate.core.model import AvatarImage, StoredImage
from wagate.stores.files import FileImageStore

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
def root(tmp_path: Path) -> Path:
    return tmp_path / "avatars"


@pytest.mark.parametrize(
    ("data", "content_type", "ext"),
    [(JPEG, "image/jpeg", "jpg"), (PNG, "image/png", "png"), (WEBP, "image/webp", "webp")],
)
async def test_put_then_open_and_load(root: Path, data: bytes, content_type: str, ext: str) -> None:
    store = FileImageStore(root)
    stored = await store.put(AvatarImage(data, content_type))
    digest = hashlib.sha256(data).hexdigest()
    assert stored == StoredImage(digest, content_type)
    assert stored.file_name == f"{digest}.{ext}"
    assert (root / stored.file_name).read_bytes() == data
    assert await store.open(stored.file_name) == (stored, data)
    assert await store.load(digest) == AvatarImage(data, content_type)


async def test_root_is_created_lazily(root: Path) -> None:
    store = FileImageStore(root)
    assert not root.exists()
    assert await store.load("0" * 64) is None
    assert not root.exists()
    await store.put(AvatarImage(PNG, "image/png"))
    assert root.is_dir()


async def test_put_is_idempotent_and_leaves_no_temporary_files(root: Path) -> None:
    store = FileImageStore(root)
    first = await store.put(AvatarImage(PNG, "image/png"))
    second = await store.put(AvatarImage(PNG, "image/png"))
    assert first == second
    assert [p.name for p in root.iterdir()] == [first.file_name]
    assert stat.S_IMODE((root / first.file_name).stat().st_mode) == 0o644


async def test_concurrent_puts_of_the_same_bytes(root: Path) -> None:
    store = FileImageStore(root)
    results: list[StoredImage] = []

    async def put() -> None:
        results.append(await store.put(AvatarImage(JPEG, "image/jpeg")))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(put)
    assert len(set(results)) == 1
    assert [p.name for p in root.iterdir()] == [results[0].file_name]


async def test_different_bytes_get_different_names(root: Path) -> None:
    store = FileImageStore(root)
    red = await store.put(AvatarImage(solid_png((255, 0, 0)), "image/png"))
    green = await store.put(AvatarImage(solid_png((0, 255, 0)), "image/png"))
    assert red.digest != green.digest
    assert sorted(p.name for p in root.iterdir()) == sorted([red.file_name, green.file_name])


async def test_sniffed_type_wins_over_declared(root: Path) -> None:
    store = FileImageStore(root)
    stored = await store.put(AvatarImage(PNG, "image/jpeg"))
    assert stored.content_type == "image/png"
    assert stored.file_name.endswith(".png")
    assert await store.load(stored.digest) == AvatarImage(PNG, "image/png")


@pytest.mark.parametrize("data", [b"", b"GIF89a\x01\x00", b"<svg/>", b"hello"])
async def test_put_refuses_other_data(root: Path, data: bytes) -> None:
    store = FileImageStore(root)
    with pytest.raises(ValueError, match="not JPEG, PNG or WebP"):
        await store.put(AvatarImage(data, "image/png"))
    assert not root.exists() or list(root.iterdir()) == []


async def test_unknown_digest_and_file_name(root: Path) -> None:
    store = FileImageStore(root)
    stored = await store.put(AvatarImage(PNG, "image/png"))
    other = "f" * 64
    assert await store.load(other) is None
    assert await store.open(f"{other}.png") is None
    # Right digest, wrong extension: the served name must match the stored format.
    assert await store.open(f"{stored.digest}.jpg") is None


# Names no stored image may be served under (SqlImageStore's tests use them too).
MALFORMED_NAMES = [
    "",
    "..",
    "../secret.png",
    "/etc/passwd",
    "a" * 63 + ".png",
    "a" * 65 + ".png",
    "A" * 64 + ".png",
    "g" * 64 + ".png",
    "a" * 64,
    "a" * 64 + ".",
    "a" * 64 + ".PNG",
    "a" * 64 + ".jpeg",
    "a" * 64 + ".gif",
    "a" * 64 + ".png\n",
    "a" * 64 + ".png/",
    "./" + "a" * 64 + ".png",
    "sub/" + "a" * 64 + ".png",
    "..%2F" + "a" * 59 + ".png",
    "\u0661" * 64 + ".png",
]


@pytest.mark.parametrize("name", MALFORMED_NAMES)
async def test_open_rejects_malformed_names(tmp_path: Path, name: str) -> None:
    root = tmp_path / "avatars"
    (tmp_path / "secret.png").write_bytes(PNG)
    root.mkdir()
    (root / "sub").mkdir()
    (root / "sub" / ("a" * 64 + ".png")).write_bytes(PNG)
    (root / ("a" * 64 + ".PNG")).write_bytes(PNG)
    store = FileImageStore(root)
    assert await store.open(name) is None


@pytest.mark.parametrize("digest", ["", "../x", "A" * 64, "a" * 63, "a" * 64 + ".png", "*"])
async def test_load_rejects_malformed_digests(root: Path, digest: str) -> None:
    assert await FileImageStore(root).load(digest) is None


async def test_a_second_store_on_the_same_root_sees_the_files(root: Path) -> None:
    stored = await FileImageStore(root).put(AvatarImage(WEBP, "image/webp"))
    assert await FileImageStore(root).open(stored.file_name) == (stored, WEBP)
