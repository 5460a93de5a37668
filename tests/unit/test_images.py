from __future__ import annotations

import struct
import zlib

import pytest

from wagate.core.images import sniff_content_type, solid_jpeg, solid_png


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        (b"\xff\xd8\xff\xdb", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WEBP", "image/webp"),
    ],
)
def test_sniffs_known_formats(data: bytes, expected: str) -> None:
    assert sniff_content_type(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",  # JPEG SOI without the next marker
        b"\xff\xd9\xff",
        b"\x89PNG\r\n\x1a",  # truncated signature
        b"\x89png\r\n\x1a\n",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",  # RIFF, but audio
        b"RIFF\x00\x00\x00\x00WEB",  # too short
        b"WEBP",
        b"GIF89a\x01\x00\x01\x00",
        b"BM\x1e\x00\x00\x00",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"hello, world",
        b" \x89PNG\r\n\x1a\n",  # signature not at the start
    ],
)
def test_everything_else_is_none(data: bytes) -> None:
    assert sniff_content_type(data) is None


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks.append((kind, body))
        at += 12 + length
    return chunks


def test_solid_png_is_a_valid_png_of_that_colour() -> None:
    data = solid_png((10, 20, 30), size=3)
    assert sniff_content_type(data) == "image/png"
    chunks = _png_chunks(data)
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (3, 3, 8, 2, 0, 0, 0)
    assert zlib.decompress(chunks[1][1]) == (b"\x00" + bytes([10, 20, 30]) * 3) * 3


def test_solid_jpeg_is_a_baseline_jpeg() -> None:
    data = solid_jpeg((200, 10, 10))
    assert sniff_content_type(data) == "image/jpeg"
    assert data.endswith(b"\xff\xd9")
    assert b"\xff\xc0\x00\x11\x08\x00\x08\x00\x08\x03" in data  # SOF0: 8 bits, 8x8, 3 components


def test_colours_give_different_bytes() -> None:
    assert solid_png((1, 2, 3)) != solid_png((3, 2, 1))
    assert solid_jpeg((255, 0, 0)) != solid_jpeg((0, 0, 255))


@pytest.mark.parametrize("rgb", [(256, 0, 0), (-1, 0, 0), (0, 0)])
def test_rejects_bad_colours(rgb: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="colour"):
        solid_png(rgb)
    with pytest.raises(ValueError, match="colour"):
        solid_jpeg(rgb)


@pytest.mark.parametrize("size", [0, 257])
def test_rejects_bad_sizes(size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        solid_png((0, 0, 0), size)
