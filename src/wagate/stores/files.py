"""Avatar images as files in a directory, named by the SHA-256 of their bytes.

Content addressing makes every write idempotent and every link stable: the same bytes always get
the same `<digest>.<ext>` name, so a file, once written, never changes. Files are written to a
temporary name and renamed into place, so a reader (or a crash) never sees half an image.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path

import anyio.to_thread

from wagate.core.images import address_of
from wagate.core.model import AvatarImage, StoredImage

logger = logging.getLogger(__name__)

_EXTENSIONS = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_FILE_NAME = re.compile(r"(?P<digest>[0-9a-f]{64})\.(?P<ext>jpg|png|webp)")
_DIGEST = re.compile(r"[0-9a-f]{64}")


class FileImageStore:
    """The `ImageStore` port over a directory, created on first write.

    `put` refuses bytes that are not JPEG, PNG or WebP with `ValueError`. `open` and `load`
    answer None for a name or digest that is malformed or not stored, so a served file name can
    never reach outside `root`. File system errors other than "not found" propagate as `OSError`.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    async def put(self, image: AvatarImage) -> StoredImage:
        """Store the image (a no-op if these bytes are stored already) and return its address.

        The content type is sniffed from the bytes; a different `image.content_type` is logged
        and overruled, because the served type must match the format.
        """
        stored = address_of(image)
        await anyio.to_thread.run_sync(self._write, stored.file_name, image.data)
        return stored

    def _write(self, file_name: str, data: bytes) -> None:
        target = self.root / file_name
        if target.exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.root, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                # mkstemp makes the file private; these images are served to anyone with the link.
                os.fchmod(file.fileno(), 0o644)
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            # Concurrent writers of the same bytes both rename identical content: harmless.
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    async def open(self, file_name: str) -> tuple[StoredImage, bytes] | None:
        """The image served as `file_name` (`<64 hex digits>.<jpg|png|webp>`), or None."""
        found = _FILE_NAME.fullmatch(file_name)
        if found is None:
            return None
        data = await anyio.to_thread.run_sync(self._read, file_name)
        if data is None:
            return None
        return StoredImage(found["digest"], _EXTENSIONS[found["ext"]]), data

    async def load(self, digest: str) -> AvatarImage | None:
        """The image with this SHA-256 hex digest, whatever its format, or None."""
        if _DIGEST.fullmatch(digest) is None:
            return None
        return await anyio.to_thread.run_sync(self._read_any, digest)

    def _read_any(self, digest: str) -> AvatarImage | None:
        for extension, content_type in _EXTENSIONS.items():
            data = self._read(f"{digest}.{extension}")
            if data is not None:
                return AvatarImage(data, content_type)
        return None

    def _read(self, file_name: str) -> bytes | None:
        try:
            return (self.root / file_name).read_bytes()
        except FileNotFoundError:
            return None
