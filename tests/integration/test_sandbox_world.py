from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from wagate.core.errors import WorldFileError
from wagate.core.images import solid_jpeg, solid_png
from wagate.core.model import FaultKind, PrivacyLevel, SandboxAccount, SandboxFault, SandboxGroup
from wagate.core.ports import Store
from wagate.engines.sandbox_demo import demo_world_yaml, write_demo_world
from wagate.engines.sandbox_world import WorldSummary, load_world_file
from wagate.stores.files import FileImageStore

pytestmark = pytest.mark.anyio

RED = solid_png((255, 0, 0))
BLUE = solid_jpeg((0, 0, 255))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def images(tmp_path: Path) -> FileImageStore:
    return FileImageStore(tmp_path / "avatars")


@pytest.fixture
def world_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "world"
    (directory / "images").mkdir(parents=True)
    (directory / "images" / "red.png").write_bytes(RED)
    (directory / "images" / "blue.jpg").write_bytes(BLUE)
    (directory / "images" / "notes.txt").write_bytes(b"not an image")
    return directory


class Loader:
    def __init__(self, directory: Path, store: Store, images: FileImageStore) -> None:
        self.directory, self.store, self.images = directory, store, images

    async def __call__(
        self, text: str, phone_digits: tuple[int, int] = (11, 12), name: str = "world.yaml"
    ) -> WorldSummary:
        path = self.directory / name
        path.write_text(text, encoding="utf-8")
        return await load_world_file(path, self.store, self.images, phone_digits)

    async def fails(self, text: str, *fragments: str, **kwargs: Any) -> str:
        with pytest.raises(WorldFileError) as caught:
            await self(text, **kwargs)
        message = caught.value.message
        for fragment in fragments:
            assert fragment in message
        return message


@pytest.fixture
def load(world_dir: Path, store: Store, images: FileImageStore) -> Loader:
    return Loader(world_dir, store, images)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


FULL = """
accounts:
  - phone: "11001234567"
    lid: "123456789"
    name: Alice
    avatar: images/red.png
    avatar_privacy: contacts
    contacts: ["11001234568"]
  - phone: 11001234568
    name: Bob
    avatar: images/blue.jpg
    contacts: [11001234567, "110012345690"]
  - phone: "11001234569"
    on_whatsapp: false
groups:
  - chatId: "120363043968066561@g.us"
    subject: Team
    avatar: images/red.png
    participants: ["11001234567", 11001234568]
  - chatId: "11001234567-1581234048@g.us"
faults:
  - chatId: "11009999999@c.us"
    kind: timeout
  - chatId: "123456@lid"
    kind: rate_limited
  - chatId: "120363043968066562@g.us"
    kind: bad_request
"""


async def test_loads_every_field(load: Loader, store: Store, images: FileImageStore) -> None:
    summary = await load(FULL)
    assert summary == WorldSummary(accounts=3, groups=2, faults=3, images=2)
    assert await store.get_sandbox_account("11001234567") == SandboxAccount(
        "11001234567", "Alice", True, sha(RED), PrivacyLevel.CONTACTS, ("11001234568",), "123456789"
    )
    assert await store.get_sandbox_account("11001234568") == SandboxAccount(
        "11001234568",
        "Bob",
        True,
        sha(BLUE),
        PrivacyLevel.EVERYONE,
        ("11001234567", "110012345690"),
    )
    assert await store.get_sandbox_account("11001234569") == SandboxAccount(
        "11001234569", on_whatsapp=False
    )
    assert await store.get_sandbox_account_by_lid("123456789") == await store.get_sandbox_account(
        "11001234567"
    )
    assert await store.get_sandbox_group("120363043968066561@g.us") == SandboxGroup(
        "120363043968066561@g.us", "Team", sha(RED), ("11001234567", "11001234568")
    )
    assert await store.get_sandbox_group("11001234567-1581234048@g.us") == SandboxGroup(
        "11001234567-1581234048@g.us"
    )
    assert await store.get_sandbox_fault("11009999999@c.us") == SandboxFault(
        "11009999999@c.us", FaultKind.TIMEOUT
    )
    assert await store.get_sandbox_fault("123456@lid") == SandboxFault(
        "123456@lid", FaultKind.RATE_LIMITED
    )
    assert await store.get_sandbox_fault("120363043968066562@g.us") == SandboxFault(
        "120363043968066562@g.us", FaultKind.BAD_REQUEST
    )
    red = await images.load(sha(RED))
    assert red is not None and red.data == RED and red.content_type == "image/png"
    blue = await images.load(sha(BLUE))
    assert blue is not None and blue.content_type == "image/jpeg"


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "accounts:\ngroups:\nfaults:\n", "{}"])
async def test_empty_worlds(load: Loader, store: Store, text: str) -> None:
    assert await load(text) == WorldSummary(0, 0, 0, 0)
    assert await store.list_sandbox_accounts() == []


async def test_reload_merges_by_key(load: Loader, store: Store) -> None:
    await load(FULL)
    await load(
        """
accounts:
  - phone: "11001234568"
    name: Robert
    avatar_privacy: nobody
  - phone: "11001234570"
    avatar: images/red.png
groups:
  - chatId: "120363043968066561@g.us"
    subject: Team 2
faults:
  - chatId: "11009999999@c.us"
    kind: rate_limited
"""
    )
    # Bob listed without an avatar has none now; Alice was not listed and is unchanged.
    assert await store.get_sandbox_account("11001234568") == SandboxAccount(
        "11001234568", "Robert", avatar_privacy=PrivacyLevel.NOBODY
    )
    alice = await store.get_sandbox_account("11001234567")
    assert alice is not None and alice.avatar_digest == sha(RED)
    new = await store.get_sandbox_account("11001234570")
    assert new is not None and new.avatar_digest == sha(RED)
    assert len(await store.list_sandbox_accounts()) == 4
    assert await store.get_sandbox_group("120363043968066561@g.us") == SandboxGroup(
        "120363043968066561@g.us", "Team 2"
    )
    assert len(await store.list_sandbox_groups()) == 2
    fault = await store.get_sandbox_fault("11009999999@c.us")
    assert fault is not None and fault.kind is FaultKind.RATE_LIMITED


async def test_custom_phone_digits(load: Loader, store: Store) -> None:
    text = 'accounts:\n  - phone: "123456789"\ngroups:\n  - chatId: "123456789-1581234048@g.us"\n'
    await load(text, phone_digits=(8, 10))
    assert await store.get_sandbox_account("123456789") is not None
    assert await store.get_sandbox_group("123456789-1581234048@g.us") is not None
    await load.fails(text, "accounts[0].phone", "11 to 12 digits", phone_digits=(11, 12))


async def test_the_same_image_is_stored_once(load: Loader, images: FileImageStore) -> None:
    text = (
        "accounts:\n"
        '  - {phone: "11001234567", avatar: images/red.png}\n'
        '  - {phone: "11001234568", avatar: ./images/../images/red.png}\n'
    )
    summary = await load(text)
    assert summary.images == 1
    assert [p.name for p in images.root.iterdir()] == [f"{sha(RED)}.png"]


async def test_avatar_paths_are_relative_to_the_world_file(
    tmp_path: Path, store: Store, images: FileImageStore
) -> None:
    nested = tmp_path / "elsewhere" / "deeper"
    (nested / "pics").mkdir(parents=True)
    (nested / "pics" / "a.jpg").write_bytes(BLUE)
    world = nested / "w.yaml"
    world.write_text('accounts:\n  - {phone: "11001234567", avatar: pics/a.jpg}\n')
    await load_world_file(world, store, images, (11, 12))
    account = await store.get_sandbox_account("11001234567")
    assert account is not None and account.avatar_digest == sha(BLUE)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "accounts:\n  - phone: '11001234567'\n    colour: red\n",
            ["accounts[0].colour: unknown key"],
        ),
        ("people: []\n", ["people: unknown key"]),
        ("accounts:\n  - name: Alice\n", ["accounts[0].phone: is required"]),
        (
            "accounts:\n  - {phone: '11001234567'}\n"
            "  - {phone: '11001234568', avatar_privacy: friends}\n",
            ["accounts[1].avatar_privacy", "'everyone', 'contacts' or 'nobody'"],
        ),
        ("accounts:\n  - {phone: '1100123456'}\n", ["accounts[0].phone", "11 to 12 digits"]),
        ("accounts:\n  - {phone: '1100123456789'}\n", ["accounts[0].phone"]),
        ("accounts:\n  - {phone: '+11001234567'}\n", ["accounts[0].phone"]),
        ("accounts:\n  - {phone: '1100123456x'}\n", ["accounts[0].phone"]),
        ("accounts:\n  - {phone: true}\n", ["accounts[0].phone"]),
        ("accounts:\n  - {phone: 11001234567.0}\n", ["accounts[0].phone"]),
        ("accounts:\n  - {phone: '11001234567', lid: '12345'}\n", ["accounts[0].lid", "6 to 20"]),
        ("accounts:\n  - {phone: '11001234567', lid: 'abcdef'}\n", ["accounts[0].lid"]),
        (
            "accounts:\n  - {phone: '11001234567', contacts: ['11001234568', '123']}\n",
            ["accounts[0].contacts[1]"],
        ),
        (
            "accounts:\n  - {phone: '11001234567', on_whatsapp: maybe}\n",
            ["accounts[0].on_whatsapp"],
        ),
        ("accounts:\n  - {phone: '11001234567', name: [1]}\n", ["accounts[0].name"]),
        ("accounts: {phone: '11001234567'}\n", ["accounts"]),
        (
            "groups:\n  - {chatId: '12036304396806656@g.us'}\n",
            ["groups[0].chatId", "not a valid chatId"],
        ),
        ("groups:\n  - {chatId: '11001234567@c.us'}\n", ["groups[0].chatId", "not a group"]),
        ("groups:\n  - {chat_id: '120363043968066561@g.us'}\n", ["groups[0].chat_id: unknown key"]),
        (
            "groups:\n  - {chatId: '120363043968066561@g.us', participants: ['x']}\n",
            ["groups[0].participants[0]"],
        ),
        ("faults:\n  - {chatId: '11009999999@c.us', kind: crash}\n", ["faults[0].kind"]),
        ("faults:\n  - {chatId: '11009999999@C.US', kind: timeout}\n", ["faults[0].chatId"]),
        ("faults:\n  - {kind: timeout}\n", ["faults[0].chatId: is required"]),
        ("- phone: '11001234567'\n", ["top level must be a mapping"]),
        ("accounts: [\n", ["not valid YAML"]),
        (
            "accounts:\n  - {phone: '11001234567'}\n  - {phone: 11001234567}\n",
            ["accounts[1].phone: 11001234567 is listed twice (also accounts[0])"],
        ),
        (
            "accounts:\n  - {phone: '11001234567', lid: '123456'}\n"
            "  - {phone: '11001234568', lid: 123456}\n",
            ["accounts[1].lid: 123456 is listed twice"],
        ),
        (
            "groups:\n  - {chatId: '120363043968066561@g.us'}\n"
            "  - {chatId: '120363043968066561@g.us'}\n",
            ["groups[1].chatId"],
        ),
        (
            "faults:\n  - {chatId: '11009999999@c.us', kind: timeout}\n"
            "  - {chatId: '11009999999@c.us', kind: bad_request}\n",
            ["faults[1].chatId"],
        ),
        (
            "accounts:\n  - {phone: '11001234567'}\n  - {phone: '11001234568'}\n"
            "  - {phone: '11001234569', avatar: images/x.jpg}\n",
            ["world.yaml: accounts[2].avatar: file images/x.jpg not found"],
        ),
        (
            "groups:\n  - {chatId: '120363043968066561@g.us', avatar: images/notes.txt}\n",
            ["groups[0].avatar: file images/notes.txt is not a JPEG, PNG or WebP image"],
        ),
        (
            "accounts:\n  - {phone: '11001234567', avatar: images}\n",
            ["accounts[0].avatar: cannot read"],
        ),
    ],
)
async def test_errors(
    load: Loader, store: Store, images: FileImageStore, text: str, fragments: list[str]
) -> None:
    message = await load.fails(text, *fragments)
    assert "world.yaml: " in message
    # Nothing was written.
    assert await store.list_sandbox_accounts() == []
    assert await store.list_sandbox_groups() == []
    assert await store.get_sandbox_fault("11009999999@c.us") is None
    assert not images.root.exists() or list(images.root.iterdir()) == []


async def test_every_problem_is_reported(load: Loader) -> None:
    message = await load.fails(
        "accounts:\n  - {phone: '1', avatar_privacy: all}\n"
        "faults:\n  - {chatId: x, kind: timeout}\n"
    )
    assert "accounts[0].phone" in message
    assert "accounts[0].avatar_privacy" in message
    assert "faults[0].chatId" in message
    message = await load.fails(
        "accounts:\n  - {phone: '11001234567', avatar: a.png}\n"
        "  - {phone: '11001234568', avatar: a.png}\n"
    )
    assert "accounts[0].avatar: file a.png not found" in message
    assert "accounts[1].avatar: file a.png not found" in message


async def test_missing_world_file(tmp_path: Path, store: Store, images: FileImageStore) -> None:
    with pytest.raises(WorldFileError, match=r"nope\.yaml: cannot read the file"):
        await load_world_file(tmp_path / "nope.yaml", store, images, (11, 12))


async def test_a_lid_cannot_move_to_another_account(load: Loader, store: Store) -> None:
    await load("accounts:\n  - {phone: '11001234567', lid: '123456'}\n")
    await load.fails(
        "accounts:\n  - {phone: '11001234568', lid: '123456'}\n",
        "accounts[0].lid: 123456 already belongs to account 11001234567",
    )
    # ...unless the old owner gives it up in the same load.
    await load("accounts:\n  - {phone: '11001234567'}\n  - {phone: '11001234568', lid: '123456'}\n")
    owner = await store.get_sandbox_account_by_lid("123456")
    assert owner is not None and owner.phone == "11001234568"


async def test_failed_reload_keeps_the_previous_world(load: Loader, store: Store) -> None:
    await load(FULL)
    before = await store.list_sandbox_accounts()
    await load.fails(FULL.replace("images/blue.jpg", "images/gone.jpg"), "file images/gone.jpg")
    assert await store.list_sandbox_accounts() == before


async def test_demo_world(tmp_path: Path, store: Store, images: FileImageStore) -> None:
    path = await anyio.to_thread.run_sync(write_demo_world, tmp_path / "demo")
    assert path == tmp_path / "demo" / "world.yaml"
    assert path.read_text(encoding="utf-8") == demo_world_yaml()
    summary = await load_world_file(path, store, images, (11, 12))
    assert summary == WorldSummary(accounts=5, groups=2, faults=1, images=4)
    accounts = {a.phone: a for a in await store.list_sandbox_accounts()}
    assert {p: a.name for p, a in accounts.items()} == {
        "11001234567": "Alice",
        "11001234568": "Bob",
        "11001234569": "Carol",
        "11001234570": "Dave",
        "11001234571": "",
    }
    digests = {a.avatar_digest for a in accounts.values()} - {None}
    assert len(digests) == 3
    assert accounts["11001234568"].avatar_privacy is PrivacyLevel.EVERYONE
    assert accounts["11001234569"].avatar_privacy is PrivacyLevel.NOBODY
    assert accounts["11001234570"].avatar_digest is None
    assert accounts["11001234571"].on_whatsapp is False
    team = await store.get_sandbox_group("120363043968066561@g.us")
    assert team is not None and team.avatar_digest is not None
    assert team.avatar_digest not in digests
    assert await store.get_sandbox_group("11001234567-1581234048@g.us") is not None
    fault = await store.get_sandbox_fault("11009999999@c.us")
    assert fault is not None and fault.kind is FaultKind.TIMEOUT
    # Loading the demo twice changes nothing.
    assert await load_world_file(path, store, images, (11, 12)) == summary
    assert {a.phone: a for a in await store.list_sandbox_accounts()} == accounts
