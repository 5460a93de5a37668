"""Avatar images in the SQL database, named by the SHA-256 of their bytes.

The same contract as `FileImageStore` (`files.py`), for nodes on several hosts that share a
database but no directory. Content addressing makes every write idempotent: a row, once
written, never changes, and two nodes storing the same bytes at once both succeed.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from wagate.core.images import address_of
from wagate.core.model import AvatarImage, StoredImage
from wagate.stores._threads import SqlRunner
from wagate.stores.schema import avatar_images

logger = logging.getLogger(__name__)

_EXTENSIONS = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_FILE_NAME = re.compile(r"(?P<digest>[0-9a-f]{64})\.(?P<ext>jpg|png|webp)")
_DIGEST = re.compile(r"[0-9a-f]{64}")


class SqlImageStore:
    """The `ImageStore` port over the `avatar_images` table (migration 0003).

    Build it on a `SqlStore`'s runners, which it borrows and never closes:
    `SqlImageStore(*store.engines)`; its writes go through the store's writer (on SQLite, its one
    writer thread and connection). `put` refuses bytes that are not JPEG, PNG or WebP with
    `ValueError`. `open` and `load` answer None for a name or digest that is malformed or not
    stored. Database failures raise `WagateError` with the driver error as its cause.
    """

    def __init__(self, writer: SqlRunner, reader: SqlRunner | None = None) -> None:
        self._writer = writer
        self._reader = reader or writer
        self._is_postgres = writer.is_postgres

    async def put(self, image: AvatarImage) -> StoredImage:
        """Store the image (a no-op if these bytes are stored already) and return its address.

        The content type is sniffed from the bytes; a different `image.content_type` is logged
        and overruled, because the served type must match the format.
        """
        stored = address_of(image)
        # Most puts store an avatar seen before: a read is cheaper than shipping the bytes to
        # the writer (on SQLite, than taking the one write lock).
        if await self._content_type(stored.digest) is not None:
            return stored
        insert = (postgresql.insert if self._is_postgres else sqlite.insert)(avatar_images)
        statement = insert.values(
            digest=stored.digest,
            content_type=stored.content_type,
            data=image.data,
            created_at=datetime.now(UTC),
        ).on_conflict_do_nothing(index_elements=[avatar_images.c.digest])
        # Another node may have stored the same bytes since the read: same row, no-op.
        await self._writer.run(lambda conn: conn.execute(statement))
        return stored

    async def open(self, file_name: str) -> tuple[StoredImage, bytes] | None:
        """The image served as `file_name` (`<64 hex digits>.<jpg|png|webp>`), or None.

        A stored digest under another format's extension is None too: the served name must
        match the stored format.
        """
        found = _FILE_NAME.fullmatch(file_name)
        if found is None:
            return None
        image = await self._fetch(found["digest"])
        if image is None or image.content_type != _EXTENSIONS[found["ext"]]:
            return None
        return StoredImage(found["digest"], image.content_type), image.data

    async def load(self, digest: str) -> AvatarImage | None:
        """The image with this SHA-256 hex digest, whatever its format, or None."""
        if _DIGEST.fullmatch(digest) is None:
            return None
        return await self._fetch(digest)

    async def _fetch(self, digest: str) -> AvatarImage | None:
        query = select(avatar_images.c.content_type, avatar_images.c.data).where(
            avatar_images.c.digest == digest
        )
        row = await self._reader.run(lambda conn: conn.execute(query).first())
        return None if row is None else AvatarImage(bytes(row.data), str(row.content_type))

    async def _content_type(self, digest: str) -> str | None:
        query = select(avatar_images.c.content_type).where(avatar_images.c.digest == digest)
        found = await self._reader.run(lambda conn: conn.execute(query).scalar())
        return None if found is None else str(found)
