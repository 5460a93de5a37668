"""Docs stay true to the code: every setting, command and method is documented."""

from __future__ import annotations

import re
from pathlib import Path

import click

from wagate.cli import main
from wagate.wire.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "reference.md").read_text()


def _env_vars_in_source() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "src" / "wagate").rglob("*.py"):
        names |= set(re.findall(r"\"(WAGATE_[A-Z_]+)\"", path.read_text()))
    return names


def test_every_setting_is_in_the_readme_table() -> None:
    names = _env_vars_in_source()
    assert "WAGATE_AVATAR_TIMEOUT" in names  # the scan itself works
    missing = {name for name in names if f"`{name}`" not in README}
    assert not missing


def _commands(group: click.Group, prefix: str = "wagate") -> list[str]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
        else:
            found.append(f"{prefix} {name}")
    return found


def test_every_command_is_in_the_reference() -> None:
    commands = _commands(main)
    assert "wagate instance create" in commands
    missing = [c for c in commands if f"`{c}" not in REFERENCE]
    assert not missing


def test_every_method_is_in_the_reference() -> None:
    missing = [m.name for m in METHODS if f"| {m.name} |" not in REFERENCE]
    assert not missing
