"""The `wagate` command line: instance, sandbox and notifications commands, help texts, and a
change made by the CLI that a running server sees without a restart."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.e2e.conftest import (
    SHOW_KEYS,
    WagateProcess,
    base_env,
    cli_json,
    free_port,
    run_cli,
    wagate_executable,
)
from wagate.bootstrap import open_runtime
from wagate.cli import main
from wagate.config import Settings
from wagate.engines.sandbox_demo import write_demo_world
from wagate.wire.chat_id import parse_chat_id
from wagate.wire.notifications import avatar_info_notification


class Cli:
    """`wagate ... --data-dir DIR` through click's CliRunner, in this process."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.runner = CliRunner()

    def __call__(self, *args: str, exit_code: int = 0) -> Result:
        result = self.runner.invoke(main, [*args, "--data-dir", str(self.data_dir)])
        assert result.exit_code == exit_code, (result.output, result.exception)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args).stdout)


def settle_one_dead_notification(data_dir: Path, instance_id: int, chat_id: str) -> None:
    """Arrange: one avatarInfo notification queued as the avatar worker queues it (claim, then
    complete in one transaction), then dead-lettered as the retention worker does once it is
    older than the retention."""

    async def arrange() -> None:
        settings = Settings(data_dir=data_dir, avatar_timeout_s=0.5)
        async with open_runtime(settings) as runtime:
            instance = await runtime.instances.get(instance_id)
            chat = parse_chat_id(chat_id)
            await runtime.avatars.accept(instance, chat)
            [job] = await runtime.store.claim_avatar_jobs(1, timedelta(seconds=30), per_instance=1)
            lookup = await runtime.avatars.lookup(instance, chat)
            body = avatar_info_notification(instance, chat_id, lookup, datetime.now(UTC))
            assert await runtime.store.complete_avatar_jobs([(job, body)]) != [None]
            assert await runtime.notifications.dead_letter_expired(timedelta(0)) == 1

    asyncio.run(asyncio.wait_for(arrange(), 60))


def test_instance_sandbox_and_notifications_commands(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data")
    world = write_demo_world(tmp_path / "world")
    assert cli("sandbox", "load", str(world)).stdout == (
        f"loaded {world} (merged): accounts 5, groups 2, faults 1, distinct avatar images 4\n"
    )

    created = cli.json("instance", "create", "--phone", "11001234567", "--json")
    assert set(created) == {"idInstance", "apiTokenInstance", "apiUrl", "mediaUrl"}
    assert isinstance(created["idInstance"], int) and len(str(created["idInstance"])) == 10
    assert re.fullmatch(r"[0-9a-f]{50}", created["apiTokenInstance"])
    instance_id = str(created["idInstance"])

    # One instance per phone; a second create without --phone gets a free number.
    refused = cli("instance", "create", "--phone", "11001234567", exit_code=1)
    assert refused.stderr.startswith("error: ")
    other = cli("instance", "create").stdout
    other_id = re.search(r"^idInstance: (\d+)$", other, re.MULTILINE)
    assert other_id is not None

    listed = cli.json("instance", "list", "--json")
    assert {row["idInstance"] for row in listed} == {created["idInstance"], int(other_id[1])}
    assert all("apiTokenInstance" not in row for row in listed)  # list never shows tokens
    assert f"{instance_id}  11001234567  sandbox  authorized" in cli("instance", "list").stdout

    shown = cli.json("instance", "show", instance_id, "--json")
    assert set(shown) == SHOW_KEYS
    assert {k: shown[k] for k in created} == created
    assert (shown["engine"], shown["phone"], shown["stateInstance"]) == (
        "sandbox",
        "11001234567",
        "authorized",
    )
    assert shown["webhookSigningSecret"].startswith("whsec_")

    rotated = cli.json("instance", "rotate-token", instance_id, "--json")
    assert rotated["apiTokenInstance"] != created["apiTokenInstance"]
    assert re.fullmatch(r"[0-9a-f]{50}", rotated["apiTokenInstance"])
    assert (
        cli.json("instance", "show", instance_id, "--json")["apiTokenInstance"]
        == (rotated["apiTokenInstance"])
    )

    assert cli("instance", "state", instance_id, "notAuthorized").stdout.strip() == (
        f"instance {instance_id} is notAuthorized"
    )
    assert cli.json("instance", "show", instance_id, "--json")["stateInstance"] == "notAuthorized"
    cli("instance", "state", instance_id, "sleeping", exit_code=2)  # not a state: usage error
    cli("instance", "state", instance_id, "authorized")

    # Notifications: list the queue and the dead letters, replay the dead ones.
    settle_one_dead_notification(cli.data_dir, created["idInstance"], "11001234568@c.us")
    assert cli.json("notifications", "list", instance_id, "--json") == []
    [dead] = cli.json("notifications", "list", instance_id, "--dead", "--json")
    assert dead["status"] == "dead"
    assert dead["body"]["typeWebhook"] == "avatarInfo"
    assert dead["body"]["avatarInfo"]["chatId"] == "11001234568@c.us"
    assert "avatarInfo" in cli("notifications", "list", instance_id, "--dead").stdout
    assert cli("notifications", "replay", instance_id).stdout.strip() == (
        "replayed 1 notification(s)"
    )
    assert cli.json("notifications", "list", instance_id, "--dead", "--json") == []
    [queued] = cli.json("notifications", "list", instance_id, "--json")
    assert queued["status"] == "queued"
    assert queued["body"] == dead["body"]
    assert queued["receiptId"] > dead["receiptId"]  # replayed at the tail under a new id
    assert cli("notifications", "replay", instance_id).stdout.strip() == (
        "replayed 0 notification(s)"
    )

    assert (
        cli("instance", "delete", instance_id).stdout.strip() == f"deleted instance {instance_id}"
    )
    assert created["idInstance"] not in [
        row["idInstance"] for row in cli.json("instance", "list", "--json")
    ]
    assert cli("instance", "show", instance_id, exit_code=1).stderr.startswith("error: ")
    assert cli("notifications", "list", instance_id, exit_code=1).stderr.startswith("error: ")
    cli("instance", "show", "not-a-number", exit_code=2)


@pytest.mark.slow
def test_help_names_the_environment_variables() -> None:
    top = subprocess.run(
        [wagate_executable(), "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for command in ("serve", "migrate", "backup", "instance", "sandbox", "notifications"):
        assert re.search(rf"^\s+{command}\b", top, re.MULTILINE), command

    serve = subprocess.run(
        [wagate_executable(), "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for option, variable in [
        ("--host", "WAGATE_HOST"),
        ("--port", "WAGATE_PORT"),
        ("--public-url", "WAGATE_PUBLIC_URL"),
        ("--data-dir", "WAGATE_DATA_DIR"),
        ("--database-url", "WAGATE_DATABASE_URL"),
        ("--demo / --no-demo", "WAGATE_DEMO"),
        ("--cpu-affinity", "WAGATE_CPU_AFFINITY"),
    ]:
        assert option in serve and variable in serve, option


@pytest.mark.slow
def test_running_server_sees_a_cli_state_change(wagate_server: WagateProcess) -> None:
    wagate_server.start(WAGATE_RATE_LIMITS="off")
    world = write_demo_world(wagate_server.data_dir.parent / "world")
    run_cli(wagate_server.data_dir, "sandbox", "load", str(world))
    created = cli_json(
        wagate_server.data_dir, "instance", "create", "--phone", "11001234567", "--json"
    )
    url = (
        f"{wagate_server.url}/waInstance{created['idInstance']}/getAvatar/"
        f"{created['apiTokenInstance']}"
    )
    bob = {"chatId": "11001234568@c.us"}
    before = httpx.post(url, json=bob)
    assert before.status_code == 200 and before.json()["available"] is True

    run_cli(
        wagate_server.data_dir, "instance", "state", str(created["idInstance"]), "notAuthorized"
    )
    # The change comes from another process, so there is no event: poll with a deadline.
    deadline = time.monotonic() + 15
    while True:
        after = httpx.post(url, json=bob)
        if after.status_code == 400 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert after.status_code == 400
    assert after.json()["message"] == "instance account not authorized"
    assert wagate_server.process is not None and wagate_server.process.poll() is None
    assert wagate_server.starts == 1  # seen without a restart


def test_rotate_signing_secret(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data")
    created = cli.json("instance", "create", "--phone", "11001234567", "--json")
    instance_id = str(created["idInstance"])
    before = cli.json("instance", "show", instance_id, "--json")["webhookSigningSecret"]
    output = cli("instance", "rotate-signing-secret", instance_id).stdout
    after = cli.json("instance", "show", instance_id, "--json")["webhookSigningSecret"]
    assert after.startswith("whsec_") and after != before
    assert after in output
    # The token is untouched by rotating the signing secret.
    shown = cli.json("instance", "show", instance_id, "--json")
    assert shown["apiTokenInstance"] == created["apiTokenInstance"]
    cli("instance", "rotate-signing-secret", "1234567890", exit_code=1)


def test_an_unreachable_database_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    # Port 1 on the loopback refuses at once; the password must not be echoed.
    url = "postgresql://wagate:hunter2@127.0.0.1:1/wagate"
    result = CliRunner().invoke(main, ["migrate", "--database-url", url])
    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: the database cannot be used: connection failed: ")
    assert "hunter2" not in result.output


def test_serve_refuses_a_port_out_of_range() -> None:
    result = CliRunner().invoke(main, ["serve", "--port", "70000"])
    assert result.exit_code == 2
    assert "70000 is not in the range 1<=x<=65535" in result.output


def test_instance_create_refuses_a_phone_no_chat_id_could_reach(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data")
    too_long = cli("instance", "create", "--phone", "7" * 32, exit_code=1)
    assert too_long.output.strip() == "error: phone must have 11 to 12 digits, got 32"
    assert cli.json("instance", "list", "--json") == []


def test_serve_with_phone_digits_the_demo_cannot_use_stops_naming_no_demo(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = base_env(WAGATE_PHONE_DIGITS="5-10")
    result = run_cli(data_dir, "serve", "--port", str(free_port()), env=env, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: the demo world's numbers have 11 digits, which WAGATE_PHONE_DIGITS=5-10 does"
        " not allow: start with --no-demo"
    )
    assert not (data_dir / "demo-world").exists()  # stopped before writing anything of it


def test_a_second_server_on_one_database_refuses_to_start(wagate_server: WagateProcess) -> None:
    """Two servers on one SQLite file would hand out notifications the other deleted; the
    second stops before migrating or printing a demo instance, and the first serves on."""
    wagate_server.start()
    assert wagate_server.process is not None
    pid = wagate_server.process.pid
    result = run_cli(wagate_server.data_dir, "serve", "--port", str(free_port()), check=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: another wagate server (pid {pid}) is serving"
        f" {wagate_server.data_dir / 'wagate.sqlite3'}: stop it first, or start this one with"
        " another --data-dir (or --database-url)"
    )
    assert result.stdout == ""  # no demo instance made or printed
    assert httpx.post(f"{wagate_server.url}/ping").json() == {"pong": True}
    # The other commands still run beside the server.
    run_cli(wagate_server.data_dir, "instance", "list")
    # The kernel drops the lock with the process, kill -9 included: a restart is not blocked.
    wagate_server.kill()
    wagate_server.start()


def test_commands_that_only_read_or_change_need_an_existing_database(tmp_path: Path) -> None:
    """Run from the wrong directory (or with a mistyped path), `instance list` used to create
    an empty database there and answer "no instances"."""
    missing = tmp_path / "elsewhere"
    cli = Cli(missing)
    for args in (
        ("instance", "list"),
        ("instance", "show", "1101000001"),
        ("notifications", "list", "1101000001"),
        ("notifications", "replay", "1101000001"),
    ):
        result = cli(*args, exit_code=1)
        assert result.stderr.strip() == (
            f"error: no wagate database at {missing / 'wagate.sqlite3'}: give the --data-dir"
            " (or --database-url) of a server, or start `wagate serve` or `wagate migrate`"
            " there first"
        )
    assert not missing.exists()
    # The commands that set wagate up create it.
    created = cli.json("instance", "create", "--json")
    assert cli.json("instance", "list", "--json")[0]["idInstance"] == created["idInstance"]
