"""`run_workers` sizes avatar batches by database: 256 jobs per instance on SQLite, 64 on
PostgreSQL, where two nodes sharing an instance acknowledged less with 256 (benchmarks.md)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from wagate import bootstrap
from wagate.bootstrap import open_runtime, run_workers
from wagate.config import Settings
from wagate.core.errors import WagateError
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


@pytest.mark.parametrize(
    ("method", "step"),
    [("claim_avatar_jobs", "claiming avatar jobs"), ("claim_push_lanes", "claiming push lanes")],
)
async def test_a_claim_that_keeps_failing_is_logged_once_until_it_works_again(
    method: str, step: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that is down makes every claim fail, once per poll interval: one traceback,
    then (within the minute) nothing more until the claim works again, which is logged."""
    caplog.set_level(logging.INFO, "wagate.workers")
    failures = 5
    calls = 0
    recovered = asyncio.Event()
    settings = Settings(data_dir=tmp_path / "data", poll_interval_s=0.01)
    async with open_runtime(settings) as runtime:
        claim = getattr(runtime.store, method)

        async def failing_at_first(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls <= failures:
                raise WagateError("database error (OperationalError)")
            result = await claim(*args, **kwargs)
            recovered.set()
            return result

        setattr(runtime.store, method, failing_at_first)
        async with run_workers(runtime):
            await asyncio.wait_for(recovered.wait(), timeout=30)
    lines = [r for r in caplog.records if r.getMessage().startswith(step)]
    assert len(lines) == 2, [r.getMessage() for r in lines]
    assert lines[0].getMessage() == f"{step} failed" and lines[0].exc_info is not None
    assert lines[1].getMessage().startswith(f"{step} works again after {failures} failures in ")
    assert str(lines[0].exc_info[1]) == "database error (OperationalError)"
