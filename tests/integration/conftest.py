"""Fixtures that start the real server on 127.0.0.1 with the demo sandbox world loaded.

The suites in SERVER_SUITES run twice: on SQLite in the data directory, and on a fresh
PostgreSQL database (marked `postgres`). `make_settings` picks the current test's backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.live_server import LiveServer
from wagate.config import Settings
from wagate.core.model import Instance
from wagate.engines.sandbox_demo import DEMO_PHONE, write_demo_world
from wagate.engines.sandbox_world import load_world_file

PARTNER_TOKEN = "p" * 50


SERVER_SUITES = {
    "test_avatar_api",
    "test_http_errors",
    "test_account_api",
    "test_push_delivery",
    "test_official_receivers",
}
_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# The database URL of the running test's backend ("" is SQLite in the data directory).
_current_database_url = ""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rsplit(".", 1)[-1] in SERVER_SUITES:
        metafunc.parametrize("backend", _BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which database the test's servers use; parametrised for SERVER_SUITES only."""
    global _current_database_url
    kind: str = getattr(request, "param", "sqlite")
    url = ""
    if kind == "postgres":
        make = request.getfixturevalue("postgres_database")
        url = make(request.getfixturevalue("postgres_template"))
    _current_database_url = url
    try:
        yield kind
    finally:
        _current_database_url = ""


@dataclass
class Demo:
    server: LiveServer
    instance: Instance

    @property
    def url(self) -> str:
        return self.server.url

    def method_url(self, method: str, *extra: str) -> str:
        parts = [self.url, f"waInstance{self.instance.id}", method, self.instance.api_token, *extra]
        return "/".join(parts)


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    base = Settings(
        data_dir=tmp_path / "data",
        database_url=_current_database_url,
        partner_token=PARTNER_TOKEN,
        avatar_timeout_s=0.5,
        poll_interval_s=0.2,
    )
    return base.with_overrides(**overrides)


def start_demo(settings: Settings) -> Demo:
    server = LiveServer(settings).start()
    world = write_demo_world(settings.data_dir / "world")

    async def setup(runtime):  # type: ignore[no-untyped-def]
        await load_world_file(world, runtime.store, runtime.images, settings.phone_digits)
        return await runtime.instances.create(phone=DEMO_PHONE)

    return Demo(server, server.call(setup))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def demo(settings: Settings) -> Iterator[Demo]:
    demo = start_demo(settings)
    try:
        yield demo
    finally:
        demo.server.stop()
