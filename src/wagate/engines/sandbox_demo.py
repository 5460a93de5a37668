"""The demo sandbox world that `wagate serve` creates on first start: a few accounts covering every
avatar outcome, a group of each id form, and a timeout fault."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from wagate.core.images import solid_jpeg, solid_png

DEMO_PHONE = "11001234567"
"""The demo instance's own number: Alice's account."""

_DEMO_IMAGES: dict[str, Callable[[], bytes]] = {
    "alice.png": lambda: solid_png((220, 60, 60)),
    "bob.jpg": lambda: solid_jpeg((60, 90, 220)),
    "carol.png": lambda: solid_png((60, 180, 90)),
    "team.png": lambda: solid_png((240, 200, 40)),
}

_DEMO_WORLD = """\
# A small sandbox world: `wagate sandbox load world.yaml` merges it into the simulated network.
accounts:
  - phone: "11001234567"          # the demo instance's own account
    name: Alice
    avatar: images/alice.png
    avatar_privacy: contacts      # her contacts see it; she always sees her own
    contacts: ["11001234568", "11001234569", "11001234570"]
  - phone: "11001234568"
    lid: "200123456789012"        # so 200123456789012@lid is Bob too
    name: Bob
    avatar: images/bob.jpg
    avatar_privacy: everyone
    contacts: ["11001234567"]
  - phone: "11001234569"
    name: Carol
    avatar: images/carol.png
    avatar_privacy: nobody        # hidden: available false
  - phone: "11001234570"
    name: Dave                    # on WhatsApp, no avatar: urlAvatar "" with available true
  - phone: "11001234571"
    on_whatsapp: false            # not on WhatsApp: available false
groups:
  - chatId: "120363043968066561@g.us"
    subject: Team
    avatar: images/team.png
    participants: ["11001234567", "11001234568", "11001234569"]
  - chatId: "11001234567-1581234048@g.us"
    subject: Old friends          # an old-form group id, without an avatar
    participants: ["11001234567", "11001234570"]
faults:
  - chatId: "11009999999@c.us"
    kind: timeout                 # answers "get avatar timeout limit exceeded"
"""


def demo_world_yaml() -> str:
    """The demo world file's text; its avatars are the files `write_demo_world` creates."""
    return _DEMO_WORLD


def write_demo_world(directory: Path) -> Path:
    """Write `world.yaml` and its generated images under `directory`; return the YAML's path.

    Blocking file I/O: call it from a thread in async code. Existing demo files are overwritten;
    `OSError` propagates.
    """
    (directory / "images").mkdir(parents=True, exist_ok=True)
    for name, draw in _DEMO_IMAGES.items():
        (directory / "images" / name).write_bytes(draw())
    world = directory / "world.yaml"
    world.write_text(_DEMO_WORLD, encoding="utf-8")
    return world
