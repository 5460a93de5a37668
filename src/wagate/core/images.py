"""Image formats wagate serves as avatars: recognising them, and making tiny ones.

Avatars are only ever JPEG, PNG or WebP, served with the content type of their actual format, so
the type is sniffed from the bytes rather than taken from a file name or an upstream header.

`solid_png` and `solid_jpeg` draw single-colour images without an imaging library; the sandbox's
demo world and tests use them so that no image files have to ship with wagate.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import zlib

from wagate.core.model import AvatarImage, StoredImage

logger = logging.getLogger(__name__)

JPEG = "image/jpeg"
PNG = "image/png"
WEBP = "image/webp"
AVATAR_CONTENT_TYPES = (JPEG, PNG, WEBP)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

RGB = tuple[int, int, int]


def sniff_content_type(data: bytes) -> str | None:
    """The media type of JPEG, PNG or WebP bytes, judged by their signature; None for anything else.

    Only the signature is checked, not that the rest of the file decodes.
    """
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(_PNG_SIGNATURE):
        return PNG
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


def address_of(image: AvatarImage) -> StoredImage:
    """Where `image` is stored: the SHA-256 of its bytes and its sniffed type.

    Raises `ValueError` for bytes that are not JPEG, PNG or WebP. A different declared type is
    logged and overruled, because the served type must match the format.
    """
    content_type = sniff_content_type(image.data)
    if content_type is None:
        raise ValueError("avatar image is not JPEG, PNG or WebP data")
    if image.content_type != content_type:
        logger.warning(
            "avatar image declared as %s is %s; storing it as %s",
            image.content_type,
            content_type,
            content_type,
            extra={"action": "image_type_mismatch"},
        )
    return StoredImage(hashlib.sha256(image.data).hexdigest(), content_type)


def _check_colour(rgb: RGB, size: int) -> None:
    if len(rgb) != 3 or not all(0 <= channel <= 255 for channel in rgb):
        raise ValueError(f"a colour is three values from 0 to 255, got {rgb}")
    if not 1 <= size <= 256:
        raise ValueError(f"size must be from 1 to 256 pixels, got {size}")


def solid_png(rgb: RGB, size: int = 8) -> bytes:
    """A valid `size` x `size` truecolour PNG filled with `rgb`. Raises ValueError on bad input."""
    _check_colour(rgb, size)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    row = b"\x00" + bytes(rgb) * size  # filter type 0 (None) before each row
    return (
        _PNG_SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


# Baseline JPEG with the standard luminance DC Huffman table and an AC table holding only
# end-of-block: a single-colour image has no AC energy, so that is all the encoder needs.
_DC_COUNTS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
_DC_SYMBOLS = tuple(range(12))
_AC_COUNTS = (1,) + (0,) * 15
_AC_SYMBOLS = (0x00,)
_QUANT = 8  # a flat block's DC coefficient is 8 * (value - 128), so 8 keeps it exact


def _huffman_codes(counts: tuple[int, ...], symbols: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    codes: dict[int, tuple[int, int]] = {}
    code, index = 0, 0
    for length, count in enumerate(counts, start=1):
        for _ in range(count):
            codes[symbols[index]] = (code, length)
            code += 1
            index += 1
        code <<= 1
    return codes


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body


def solid_jpeg(rgb: RGB, size: int = 8) -> bytes:
    """A valid baseline `size` x `size` JFIF JPEG filled with `rgb` (YCbCr, no subsampling).

    Colours survive up to JPEG's rounding. Raises ValueError on bad input.
    """
    _check_colour(rgb, size)
    red, green, blue = rgb
    ycbcr = (
        0.299 * red + 0.587 * green + 0.114 * blue,
        128 - 0.168736 * red - 0.331264 * green + 0.5 * blue,
        128 + 0.5 * red - 0.418688 * green - 0.081312 * blue,
    )
    levels = [min(255, max(0, round(value))) - 128 for value in ycbcr]
    dc_codes = _huffman_codes(_DC_COUNTS, _DC_SYMBOLS)
    eob = _huffman_codes(_AC_COUNTS, _AC_SYMBOLS)[0x00]

    bits: list[tuple[int, int]] = []
    blocks = ((size + 7) // 8) ** 2
    for block in range(blocks):
        for level in levels:
            # DC is coded as the difference from the previous block of the same component.
            diff = level if block == 0 else 0
            category = abs(diff).bit_length()
            bits.append(dc_codes[category])
            if category:
                bits.append((diff if diff >= 0 else diff + (1 << category) - 1, category))
            bits.append(eob)
    scan = _pack_bits(bits)

    tables = bytes([0x00, *_DC_COUNTS, *_DC_SYMBOLS]) + bytes([0x10, *_AC_COUNTS, *_AC_SYMBOLS])
    components = b"".join(bytes([ident, 0x11, 0]) for ident in (1, 2, 3))
    return b"".join(
        [
            b"\xff\xd8",
            _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
            _segment(0xDB, bytes([0x00]) + bytes([_QUANT]) * 64),
            _segment(0xC0, struct.pack(">BHHB", 8, size, size, 3) + components),
            _segment(0xC4, tables),
            _segment(0xDA, bytes([3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0])),
            scan,
            b"\xff\xd9",
        ]
    )


def _pack_bits(codes: list[tuple[int, int]]) -> bytes:
    accumulator, count = 0, 0
    for value, length in codes:
        accumulator = (accumulator << length) | value
        count += length
    padding = -count % 8
    # The last byte is padded with one-bits, as the JPEG standard requires.
    accumulator = (accumulator << padding) | ((1 << padding) - 1)
    raw = accumulator.to_bytes((count + padding) // 8, "big")
    # A 0xFF byte inside entropy-coded data must be followed by a stuffed 0x00.
    return raw.replace(b"\xff", b"\xff\x00")
