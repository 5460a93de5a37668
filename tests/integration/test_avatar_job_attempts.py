"""An avatar job whose lookup keeps raising (a failure of wagate, not an answer of WhatsApp) is
retried at each claim, and after `attempts_per_job` claims answered as timed out, alone: the
chats of its batch that can be looked up keep their answers, and the instance's later requests
are no longer held back behind it."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import MutableSequence, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from wagate.bootstrap import Runtime, open_runtime
from wagate.config import Settings
from wagate.core.model import AvatarResult, ChatId, Instance
from wagate.http.metrics import Metrics
from wagate.wire.chat_id import parse_chat_id
from wagate.workers.avatar_jobs import AvatarJobWorker

pytestmark = pytest.mark.anyio

CHATS = GOOD_1, POISON, GOOD_2 = "11009990001@c.us", "11009990002@c.us", "11009990003@c.us"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FailingEngine:
    """Wraps the sandbox's batch lookup: raises for any batch holding the poisoned chat (while
    `poisoned`), and counts the calls."""

    def __init__(self, runtime: Runtime) -> None:
        self._engine = runtime.engines["sandbox"]
        self._fetch = self._engine.fetch_avatars
        self.poisoned = True
        self.batches: list[list[str]] = []
        self.failed = asyncio.Event()

    async def fetch_avatars(
        self,
        instance: Instance,
        chats: Sequence[ChatId],
        answers: MutableSequence[AvatarResult | None],
    ) -> None:
        self.batches.append([str(chat) for chat in chats])
        if self.poisoned and POISON in self.batches[-1]:
            self.failed.set()
            raise RuntimeError("engine bug")
        await self._fetch(instance, chats, answers)


async def accepted_chats(runtime: Runtime) -> Instance:
    """A new instance with a getAvatarAsync request accepted for each of CHATS."""
    instance = await runtime.instances.create()
    for chat in CHATS:
        chat_id = parse_chat_id(chat, runtime.settings.phone_digits)
        await runtime.avatars.accept(instance, chat_id)
    return instance


def worker(runtime: Runtime, **options: Any) -> AvatarJobWorker:
    return AvatarJobWorker(
        runtime.store,
        runtime.instances,
        runtime.avatars,
        runtime.wakeups,
        concurrency=2,
        poll_interval_s=0.01,
        phone_digits=runtime.settings.phone_digits,
        **options,
    )


async def answers_in_order(runtime: Runtime, instance: Instance, count: int) -> list[object]:
    answers: list[object] = []
    for _ in range(count):
        notification = await runtime.notifications.receive(instance, timeout_s=10)
        assert notification is not None, f"only {len(answers)} of {count} notifications came"
        assert notification.body["typeWebhook"] == "avatarInfo"
        answers.append(notification.body["avatarInfo"])
        assert await runtime.notifications.delete(instance, notification.receipt_id)
    return answers


@pytest.mark.parametrize("recovers", [False, True], ids=["keeps-failing", "recovers"])
async def test_a_lookup_that_keeps_failing_is_given_up_after_the_last_attempt(
    recovers: bool,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wagate.workers")
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    async with open_runtime(settings) as runtime:
        engine = FailingEngine(runtime)
        monkeypatch.setattr(runtime.engines["sandbox"], "fetch_avatars", engine.fetch_avatars)
        instance = await accepted_chats(runtime)
        metrics = Metrics()
        task = asyncio.create_task(worker(runtime, attempts_per_job=2, events=metrics).run())
        try:
            await asyncio.wait_for(engine.failed.wait(), timeout=10)
            # The first attempt failed whole: nothing answered, every job kept, under its lease
            # (the avatar timeout times 2 + 5 s), so it is not retried before that.
            assert await runtime.store.count_notifications(instance.id) == 0
            assert await runtime.store.count_avatar_jobs(instance.id) == 3
            assert engine.batches == [[GOOD_1, POISON, GOOD_2]]

            engine.poisoned = not recovers
            await runtime.store.release_leases()  # as if the lease ran out
            await runtime.wakeups.job_added(instance.id)
            answers = await answers_in_order(runtime, instance, 3)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert await runtime.store.count_avatar_jobs(instance.id) == 0

    # No chat is an account of the sandbox world: WhatsApp's answer is "not on WhatsApp".
    not_on_whatsapp = [{"chatId": chat, "urlAvatar": "", "available": False} for chat in CHATS]
    timed_out = {**not_on_whatsapp[1], "reason": "get avatar timeout limit exceeded"}
    failed = [r for r in caplog.records if r.getMessage() == "avatar jobs failed"]
    given_up = [r for r in caplog.records if r.getMessage().startswith("avatar lookup failed")]
    assert [getattr(r, "attempts", None) for r in failed] == [1]
    counters = dict(
        re.findall(r"^(wagate_avatar_\w+_total) (\S+)$", metrics.render().decode(), re.M)
    )
    assert float(counters["wagate_avatar_jobs_answered_total"]) == 3
    assert float(counters["wagate_avatar_lookups_given_up_total"]) == (0 if recovers else 1)
    if recovers:
        assert answers == not_on_whatsapp
        assert engine.batches[1:] == [[GOOD_1, POISON, GOOD_2]]
        assert given_up == []
    else:
        # In request order, only the poisoned chat given up; each chat was then tried alone.
        assert answers == [not_on_whatsapp[0], timed_out, not_on_whatsapp[2]]
        assert engine.batches[1] == [GOOD_1, POISON, GOOD_2]
        assert sorted(map(tuple, engine.batches[2:])) == [(GOOD_1,), (POISON,), (GOOD_2,)]
        assert len(given_up) == 1
        assert given_up[0].levelno == logging.ERROR
        assert getattr(given_up[0], "chat", None) == POISON
        assert getattr(given_up[0], "attempts", None) == 2
        assert given_up[0].exc_info is not None
        assert str(given_up[0].exc_info[1]) == "engine bug"


class StuckEngine:
    """A lookup that never answers by itself; `looking` is set once it has begun."""

    def __init__(self) -> None:
        self.looking = asyncio.Event()

    async def fetch_avatars(
        self,
        instance: Instance,
        chats: Sequence[ChatId],
        answers: MutableSequence[AvatarResult | None],
    ) -> None:
        self.looking.set()
        await asyncio.Event().wait()


async def test_a_stopping_worker_hands_its_unfinished_batch_back(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another node, or this one restarted, runs it at once instead of after its lease."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    async with open_runtime(settings) as runtime:
        engine = StuckEngine()
        monkeypatch.setattr(runtime.engines["sandbox"], "fetch_avatars", engine.fetch_avatars)
        await accepted_chats(runtime)
        task = asyncio.create_task(worker(runtime).run())
        await asyncio.wait_for(engine.looking.wait(), timeout=10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        lease = timedelta(seconds=60)
        taken_over = await runtime.store.claim_avatar_jobs(1, lease, per_instance=64)
        assert [(job.chat_id, job.attempts) for job in taken_over] == [(c, 2) for c in CHATS]
