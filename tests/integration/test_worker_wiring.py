"""`run_workers` sizes avatar batches by database: 256 jobs per instance on SQLite, 64 on
PostgreSQL, where two nodes sharing an instance acknowledged less with 256 (benchmarks.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wagate import bootstrap
from wagate.bootstrap import open_runtime, run_workers
from wagate.config import Settings
from wagate.workers.avatar_jobs import (
    JOBS_PER_INSTANCE,
    JOBS_PER_INSTANCE_SQLITE,
    AvatarJobWorker,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_avatar_batch_size_follows_the_database(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []

    class Recording(AvatarJobWorker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            sizes.append(kwargs["jobs_per_instance"])

    monkeypatch.setattr(bootstrap, "AvatarJobWorker", Recording)
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    async with open_runtime(settings) as runtime, run_workers(runtime):
        pass
    sqlite = database_url.startswith("sqlite")
    assert JOBS_PER_INSTANCE_SQLITE != JOBS_PER_INSTANCE
    assert sizes == [JOBS_PER_INSTANCE_SQLITE if sqlite else JOBS_PER_INSTANCE]
