from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from wagate.core.images import solid_jpeg, solid_png
from wagate.core.model import (
    AvatarImage,
    AvatarResult,
    AvatarStatus,
    ChatId,
    ChatKind,
    Contact,
    FaultKind,
    Instance,
    InstanceSettings,
    InstanceState,
    PrivacyLevel,
    SandboxAccount,
    SandboxFault,
    SandboxGroup,
)
from wagate.core.ports import Engine, Store
from wagate.engines.sandbox import SandboxEngine
from wagate.engines.sandbox_demo import write_demo_world
from wagate.engines.sandbox_world import load_world_file
from wagate.stores.files import FileImageStore
from wagate.wire.chat_id import parse_chat_id

pytestmark = pytest.mark.anyio

ALICE, BOB, CAROL, DAVE = "11001234567", "11001234568", "11001234569", "11001234570"
OFF, ERIN, FRANK, STRANGER = "11001234571", "11001234572", "11001234573", "11005555555"
BOB_LID, CAROL_LID = "200123456789012", "300123"
TEAM, OLD_GROUP = "120363043968066561@g.us", "11001234567-1581234048@g.us"
FAULTY_GROUP = "120363000000000001@g.us"

IMAGES = {
    "alice": AvatarImage(solid_png((220, 60, 60)), "image/png"),
    "bob": AvatarImage(solid_jpeg((60, 90, 220)), "image/jpeg"),
    "carol": AvatarImage(solid_png((60, 180, 90)), "image/png"),
    "team": AvatarImage(solid_png((240, 200, 40)), "image/png"),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def images(tmp_path: Path) -> FileImageStore:
    return FileImageStore(tmp_path / "avatars")


@pytest.fixture
async def digests(images: FileImageStore) -> dict[str, str]:
    return {name: (await images.put(image)).digest for name, image in IMAGES.items()}


@pytest.fixture
async def engine(store: Store, images: FileImageStore, digests: dict[str, str]) -> SandboxEngine:
    everyone, contacts, nobody = PrivacyLevel.EVERYONE, PrivacyLevel.CONTACTS, PrivacyLevel.NOBODY
    await store.merge_sandbox_world(
        [
            SandboxAccount(ALICE, "Alice", True, digests["alice"], contacts, (BOB,)),
            SandboxAccount(BOB, "Bob", True, digests["bob"], everyone, (ALICE, CAROL), BOB_LID),
            SandboxAccount(CAROL, "Carol", True, digests["carol"], nobody, (), CAROL_LID),
            SandboxAccount(DAVE, "Dave", True, None, everyone),
            SandboxAccount(OFF, "Off", False, digests["alice"], everyone),
            SandboxAccount(ERIN, "", True, None, nobody),
            SandboxAccount(FRANK, "Frank", True, None, contacts, (ALICE,)),
        ],
        [
            SandboxGroup(TEAM, "Team", digests["team"], (ALICE, BOB)),
            SandboxGroup(OLD_GROUP, "Old friends", None, (ALICE, DAVE)),
            SandboxGroup(FAULTY_GROUP, "Faulty", digests["team"], (BOB,)),
        ],
        [
            SandboxFault("11009999999@c.us", FaultKind.TIMEOUT),
            SandboxFault("11008888888@c.us", FaultKind.RATE_LIMITED),
            SandboxFault("11007777777@c.us", FaultKind.BAD_REQUEST),
            SandboxFault(FAULTY_GROUP, FaultKind.RATE_LIMITED),
            SandboxFault(f"{CAROL_LID}@lid", FaultKind.BAD_REQUEST),
        ],
    )
    return SandboxEngine(store, images)


def instance(phone: str, state: InstanceState = InstanceState.AUTHORIZED) -> Instance:
    return Instance(
        id=1101000001,
        api_token="a" * 50,
        engine="sandbox",
        phone=phone,
        state=state,
        webhook_signing_secret="whsec_dGVzdA==",
        settings=InstanceSettings(),
        created_at=datetime.now(UTC),
    )


def chat(text: str) -> ChatId:
    return parse_chat_id(text)


def available(name: str) -> AvatarResult:
    return AvatarResult(AvatarStatus.AVAILABLE, IMAGES[name])


NOT_SET = AvatarResult(AvatarStatus.NOT_SET)
HIDDEN = AvatarResult(AvatarStatus.HIDDEN)
NOT_ON_WHATSAPP = AvatarResult(AvatarStatus.NOT_ON_WHATSAPP)


async def test_is_an_engine(store: Store, images: FileImageStore) -> None:
    engine: Engine = SandboxEngine(store, images)
    assert engine.name == "sandbox"


@pytest.mark.parametrize(
    ("viewer", "target", "expected"),
    [
        # contacts: Alice shows her avatar to Bob (her contact) and to herself only.
        (ALICE, ALICE, available("alice")),
        (BOB, ALICE, available("alice")),
        (DAVE, ALICE, HIDDEN),
        (STRANGER, ALICE, HIDDEN),
        # everyone
        (ALICE, BOB, available("bob")),
        (STRANGER, BOB, available("bob")),
        (BOB, BOB, available("bob")),
        # nobody: hidden from everyone but Carol herself
        (ALICE, CAROL, HIDDEN),
        (BOB, CAROL, HIDDEN),
        (CAROL, CAROL, available("carol")),
        # visible without an avatar
        (ALICE, DAVE, NOT_SET),
        (DAVE, DAVE, NOT_SET),
        # hidden wins over not set; an account still knows it has none
        (ALICE, ERIN, HIDDEN),
        (ERIN, ERIN, NOT_SET),
        (ALICE, FRANK, NOT_SET),
        (BOB, FRANK, HIDDEN),
        # not on WhatsApp, whatever its avatar and whoever asks
        (ALICE, OFF, NOT_ON_WHATSAPP),
        (OFF, OFF, NOT_ON_WHATSAPP),
        (ALICE, STRANGER, NOT_ON_WHATSAPP),
        (ALICE, "110012345678", NOT_ON_WHATSAPP),
    ],
)
async def test_privacy_matrix(
    engine: SandboxEngine, viewer: str, target: str, expected: AvatarResult
) -> None:
    assert await engine.fetch_avatar(instance(viewer), chat(f"{target}@c.us")) == expected


async def test_contacts_privacy_is_about_the_targets_contacts(engine: SandboxEngine) -> None:
    # Bob lists Alice and Carol, but that does not let Carol see Alice (Alice lists only Bob).
    assert await engine.fetch_avatar(instance(CAROL), chat(f"{ALICE}@c.us")) == HIDDEN


async def test_instance_without_a_phone_sees_only_public_avatars(engine: SandboxEngine) -> None:
    assert await engine.fetch_avatar(instance(""), chat(f"{BOB}@c.us")) == available("bob")
    assert await engine.fetch_avatar(instance(""), chat(f"{ALICE}@c.us")) == HIDDEN


@pytest.mark.parametrize(
    ("viewer", "target", "expected"),
    [
        (ALICE, f"{BOB_LID}@lid", available("bob")),
        (BOB, f"{BOB_LID}@lid", available("bob")),
        (ALICE, "999999999@lid", NOT_ON_WHATSAPP),
        # a lid is not a phone: Bob's phone digits as a lid name no one
        (ALICE, f"{BOB}@lid", NOT_ON_WHATSAPP),
    ],
)
async def test_lid_resolves_to_its_account(
    engine: SandboxEngine, viewer: str, target: str, expected: AvatarResult
) -> None:
    assert await engine.fetch_avatar(instance(viewer), chat(target)) == expected


@pytest.mark.parametrize("viewer", [ALICE, STRANGER, OFF])
async def test_group_avatars_are_visible_to_everyone(engine: SandboxEngine, viewer: str) -> None:
    assert await engine.fetch_avatar(instance(viewer), chat(TEAM)) == available("team")
    assert await engine.fetch_avatar(instance(viewer), chat(OLD_GROUP)) == NOT_SET


@pytest.mark.parametrize("group", ["120363043968066562@g.us", "11001234567-1581234049@g.us"])
async def test_unknown_group_is_not_on_whatsapp(engine: SandboxEngine, group: str) -> None:
    assert await engine.fetch_avatar(instance(ALICE), chat(group)) == NOT_ON_WHATSAPP


async def test_timeout_fault_never_answers(engine: SandboxEngine) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(engine.fetch_avatar(instance(ALICE), chat("11009999999@c.us")), 0.05)
    # The engine stays usable after the cancellation.
    assert await engine.fetch_avatar(instance(ALICE), chat(f"{BOB}@c.us")) == available("bob")


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("11008888888@c.us", AvatarStatus.RATE_LIMITED),
        ("11007777777@c.us", AvatarStatus.BAD_REQUEST),
        # faults come before the world: a known group, and a known account's lid
        (FAULTY_GROUP, AvatarStatus.RATE_LIMITED),
        (f"{CAROL_LID}@lid", AvatarStatus.BAD_REQUEST),
    ],
)
async def test_faults(engine: SandboxEngine, target: str, status: AvatarStatus) -> None:
    assert await engine.fetch_avatar(instance(ALICE), chat(target)) == AvatarResult(status)


async def test_faults_match_the_exact_chat_id(engine: SandboxEngine) -> None:
    # Carol's lid is faulty, her phone is not.
    assert await engine.fetch_avatar(instance(ALICE), chat(f"{CAROL}@c.us")) == HIDDEN


class CountingStore:
    """The store, counting the world reads the engine makes."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.row_reads: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get_sandbox_rows(self, chats: Any) -> Any:
        self.row_reads.append(len(chats))
        return await self._store.get_sandbox_rows(chats)


async def test_lookups_started_together_share_one_store_read(
    engine: SandboxEngine, store: Store, images: FileImageStore
) -> None:
    targets = [
        f"{BOB}@c.us",
        f"{ALICE}@c.us",
        f"{BOB_LID}@lid",
        f"{CAROL_LID}@lid",
        TEAM,
        OLD_GROUP,
        FAULTY_GROUP,
        "11008888888@c.us",
        f"{STRANGER}@c.us",
        f"{OFF}@c.us",
    ]
    one_by_one = [await engine.fetch_avatar(instance(DAVE), chat(t)) for t in targets]
    counting = CountingStore(store)
    together = SandboxEngine(counting, images)
    try:
        results = await asyncio.gather(
            *(together.fetch_avatar(instance(DAVE), chat(t)) for t in targets)
        )
        assert counting.row_reads == [len(targets)]
        assert results == one_by_one
        assert AvatarStatus.AVAILABLE in {r.status for r in results}
        # A lookup started later makes a read of its own.
        assert await together.fetch_avatar(instance(DAVE), chat(f"{BOB}@c.us")) == one_by_one[0]
        assert counting.row_reads == [len(targets), 1]
    finally:
        await together.aclose()


async def test_a_batch_is_answered_as_one_by_one_with_one_store_read(
    engine: SandboxEngine, store: Store, images: FileImageStore
) -> None:
    targets = [f"{BOB}@c.us", TEAM, FAULTY_GROUP, f"{STRANGER}@c.us", f"{CAROL_LID}@lid"]
    one_by_one = [await engine.fetch_avatar(instance(DAVE), chat(t)) for t in targets]
    counting = CountingStore(store)
    batched = SandboxEngine(counting, images)
    answers: list[AvatarResult | None] = [None] * len(targets)
    try:
        await batched.fetch_avatars(instance(DAVE), [chat(t) for t in targets], answers)
        assert answers == one_by_one
        assert counting.row_reads == [len(targets)]
    finally:
        await batched.aclose()


async def test_a_batch_keeps_its_answers_when_one_chat_never_answers(
    engine: SandboxEngine,
) -> None:
    targets = [f"{BOB}@c.us", "11009999999@c.us", TEAM]  # the second has a timeout fault
    answers: list[AvatarResult | None] = [None] * len(targets)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            engine.fetch_avatars(instance(ALICE), [chat(t) for t in targets], answers), 0.05
        )
    assert answers == [available("bob"), None, available("team")]


async def test_a_failed_world_read_fails_every_lookup_that_shared_it(
    store: Store, images: FileImageStore
) -> None:
    class BrokenStore(CountingStore):
        async def get_sandbox_rows(self, chats: Any) -> Any:
            self.row_reads.append(len(chats))
            raise OSError("disk gone")

    broken = BrokenStore(store)
    engine = SandboxEngine(broken, images)
    lookups = [engine.fetch_avatar(instance(ALICE), chat(f"{BOB}@c.us")) for _ in range(3)]
    outcomes = await asyncio.gather(*lookups, return_exceptions=True)
    assert [type(o) for o in outcomes] == [OSError] * 3
    assert broken.row_reads == [3]
    await engine.aclose()


async def test_world_changes_are_seen_at_once(
    engine: SandboxEngine, store: Store, digests: dict[str, str]
) -> None:
    assert await engine.fetch_avatar(instance(ALICE), chat(f"{BOB}@c.us")) == available("bob")
    await store.merge_sandbox_world(
        [
            SandboxAccount(BOB, "Bob", True, digests["carol"], PrivacyLevel.NOBODY, (ALICE,)),
            SandboxAccount(DAVE, "Dave", True, digests["team"]),
        ],
        [SandboxGroup(TEAM, "Team", None, (ALICE,))],
        [SandboxFault(f"{DAVE}@c.us", FaultKind.RATE_LIMITED)],
    )
    assert await engine.fetch_avatar(instance(ALICE), chat(f"{BOB}@c.us")) == HIDDEN
    assert await engine.fetch_avatar(instance(BOB), chat(f"{BOB}@c.us")) == available("carol")
    assert await engine.fetch_avatar(instance(ALICE), chat(TEAM)) == NOT_SET
    rate_limited = AvatarResult(AvatarStatus.RATE_LIMITED)
    assert await engine.fetch_avatar(instance(ALICE), chat(f"{DAVE}@c.us")) == rate_limited


async def test_a_second_engine_on_the_same_store_sees_the_same_world(
    engine: SandboxEngine, store: Store, images: FileImageStore
) -> None:
    other = SandboxEngine(store, images)
    await store.merge_sandbox_world([SandboxAccount(STRANGER, "New")], [], [])
    assert await other.fetch_avatar(instance(ALICE), chat(f"{STRANGER}@c.us")) == NOT_SET
    assert await engine.check_whatsapp(instance(ALICE), STRANGER)


async def test_missing_image_file_reads_as_not_set(
    engine: SandboxEngine, tmp_path: Path, digests: dict[str, str], caplog: Any
) -> None:
    (tmp_path / "avatars" / f"{digests['bob']}.jpg").unlink()
    with caplog.at_level(logging.WARNING, logger="wagate.engines.sandbox"):
        result = await engine.fetch_avatar(instance(ALICE), chat(f"{BOB}@c.us"))
    assert result == NOT_SET
    assert digests["bob"] in caplog.text
    # Privacy is still checked first: a hidden avatar stays hidden.
    (tmp_path / "avatars" / f"{digests['carol']}.png").unlink()
    assert await engine.fetch_avatar(instance(ALICE), chat(f"{CAROL}@c.us")) == HIDDEN


async def test_state_is_the_instances(engine: SandboxEngine) -> None:
    for state in InstanceState:
        assert await engine.state(instance(ALICE, state)) is state


@pytest.mark.parametrize(
    ("phone", "expected"),
    [(ALICE, True), (DAVE, True), (ERIN, True), (OFF, False), (STRANGER, False), ("", False)],
)
async def test_check_whatsapp(engine: SandboxEngine, phone: str, expected: bool) -> None:
    assert await engine.check_whatsapp(instance(ALICE), phone) is expected


async def test_contacts(engine: SandboxEngine) -> None:
    bob = await engine.contacts(instance(BOB))
    # People first, in the order the world lists them; then groups, in no promised order.
    assert bob[:2] == [
        Contact(f"{ALICE}@c.us", "Alice", False),
        Contact(f"{CAROL}@c.us", "Carol", False),
    ]
    assert sorted(bob[2:], key=lambda c: c.chat_id) == [
        Contact(FAULTY_GROUP, "Faulty", True),
        Contact(TEAM, "Team", True),
    ]
    alice = await engine.contacts(instance(ALICE))
    assert alice[0] == Contact(f"{BOB}@c.us", "Bob", False)
    assert sorted(c.chat_id for c in alice[1:]) == sorted([TEAM, OLD_GROUP])
    assert all(c.is_group for c in alice[1:])


async def test_contacts_of_unknown_or_lonely_accounts(engine: SandboxEngine, store: Store) -> None:
    assert await engine.contacts(instance(STRANGER)) == []
    assert await engine.contacts(instance(CAROL)) == []
    # A contact absent from the world is still a contact, without a name.
    await store.merge_sandbox_world([SandboxAccount(ERIN, contacts=(STRANGER,))], [], [])
    assert await engine.contacts(instance(ERIN)) == [Contact(f"{STRANGER}@c.us", "", False)]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (f"{ALICE}@c.us", "Alice"),
        (f"{CAROL}@c.us", "Carol"),  # names are not hidden by avatar privacy
        (f"{BOB_LID}@lid", "Bob"),
        (TEAM, "Team"),
        (OLD_GROUP, "Old friends"),
        (f"{ERIN}@c.us", None),  # on WhatsApp, no name
        (f"{OFF}@c.us", None),
        (f"{STRANGER}@c.us", None),
        ("120363043968066562@g.us", None),
        ("999999999@lid", None),
    ],
)
async def test_contact_name(engine: SandboxEngine, target: str, expected: str | None) -> None:
    assert await engine.contact_name(instance(ALICE), chat(target)) == expected


async def test_aclose_leaves_the_store_usable(engine: SandboxEngine, store: Store) -> None:
    await engine.aclose()
    assert await store.get_sandbox_account(ALICE) is not None


async def test_demo_world(store: Store, images: FileImageStore, tmp_path: Path) -> None:
    world = await anyio.to_thread.run_sync(write_demo_world, tmp_path / "demo")
    await load_world_file(world, store, images, (11, 12))
    engine = SandboxEngine(store, images)
    me = instance(ALICE)
    png = (tmp_path / "demo" / "images" / "alice.png").read_bytes()
    assert await engine.fetch_avatar(me, chat(f"{ALICE}@c.us")) == AvatarResult(
        AvatarStatus.AVAILABLE, AvatarImage(png, "image/png")
    )
    bob = await engine.fetch_avatar(me, chat(f"{BOB}@c.us"))
    assert bob.status is AvatarStatus.AVAILABLE
    assert bob.image is not None
    assert bob.image.content_type == "image/jpeg"
    assert hashlib.sha256(bob.image.data).hexdigest() != hashlib.sha256(png).hexdigest()
    assert await engine.fetch_avatar(me, chat(f"{CAROL}@c.us")) == HIDDEN
    assert await engine.fetch_avatar(me, chat(f"{DAVE}@c.us")) == NOT_SET
    assert await engine.fetch_avatar(me, chat(f"{OFF}@c.us")) == NOT_ON_WHATSAPP
    team = await engine.fetch_avatar(me, chat(TEAM))
    assert team.status is AvatarStatus.AVAILABLE
    assert await engine.fetch_avatar(me, chat(OLD_GROUP)) == NOT_SET
    assert (await engine.fetch_avatar(me, ChatId(ChatKind.LID, "200123456789012"))) == bob
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(engine.fetch_avatar(me, chat("11009999999@c.us")), 0.05)
