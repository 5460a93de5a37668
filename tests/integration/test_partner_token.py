"""The partner token: WAGATE_PARTNER_TOKEN, or one generated into the data directory on first
start (owner-only) and read back on the next; a file holding no usable token stops the start."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from wagate.bootstrap import PARTNER_TOKEN_FILE, open_runtime
from wagate.config import Settings
from wagate.core.errors import WagateError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_token_is_generated_once_owner_only_and_read_back(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    async with open_runtime(settings) as runtime:
        generated = runtime.partner_token
    path = tmp_path / "data" / PARTNER_TOKEN_FILE
    assert re.fullmatch(r"[0-9a-f]{50}", generated)
    assert path.read_text() == generated + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    async with open_runtime(settings) as runtime:
        assert runtime.partner_token == generated


async def test_a_configured_token_wins_and_no_file_is_written(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", partner_token="configured-token-0123")
    async with open_runtime(settings) as runtime:
        assert runtime.partner_token == "configured-token-0123"
    assert not (tmp_path / "data" / PARTNER_TOKEN_FILE).exists()


@pytest.mark.parametrize("content", ["", "too-short\n", "a token with spaces in it\n"])
async def test_a_file_without_a_usable_token_stops_the_start(tmp_path: Path, content: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / PARTNER_TOKEN_FILE).write_text(content)
    with pytest.raises(WagateError, match=f"the partner token in {data_dir}") as caught:
        async with open_runtime(Settings(data_dir=data_dir)):
            pass
    if content.strip():
        assert content.strip() not in caught.value.message
