"""`wagate backup` (docs/deployment.md, "Backups") while the server takes getAvatarAsync
requests: the copy is one consistent snapshot, and a server started on it answers every request
it holds, with working avatar links."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.e2e.conftest import WagateProcess, cli_json, run_cli
from wagate.cli import main
from wagate.engines.sandbox_demo import write_demo_world

pytestmark = pytest.mark.slow

BOB = "11001234568@c.us"  # the demo world's visible avatar


def test_a_backup_taken_under_load_restores_to_a_working_server(
    wagate_server: WagateProcess, tmp_path: Path
) -> None:
    wagate_server.start(WAGATE_RATE_LIMITS="off")
    data_dir = wagate_server.data_dir
    run_cli(data_dir, "sandbox", "load", str(write_demo_world(tmp_path / "world")))
    created = cli_json(data_dir, "instance", "create", "--phone", "11001234567", "--json")
    instance_id, token = created["idInstance"], created["apiTokenInstance"]
    url = f"{wagate_server.url}/waInstance{instance_id}/getAvatarAsync/{token}"

    acknowledged = 0
    first_ones = threading.Event()
    stop = threading.Event()

    def keep_asking() -> None:
        nonlocal acknowledged
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                answer = client.post(url, json={"chatId": BOB})
                assert answer.status_code == 200, answer.text
                acknowledged += 1
                if acknowledged == 20:
                    first_ones.set()

    asking = threading.Thread(target=keep_asking)
    asking.start()
    backup = tmp_path / "backup"  # created by the command
    try:
        assert first_ones.wait(30)
        before = acknowledged
        done = run_cli(data_dir, "backup", str(backup))
    finally:
        stop.set()
        asking.join(30)
    after = acknowledged
    wagate_server.stop()
    images = sorted(path.name for path in (data_dir / "avatars").iterdir())
    assert sorted(path.name for path in (backup / "avatars").iterdir()) == images
    assert not (backup / "partner-token").exists()  # this server's token came from the env
    size = (backup / "wagate.sqlite3").stat().st_size
    assert done.stdout == (
        f"backed up to {backup}: database {size:,} bytes, {len(images)} avatar images,"
        " without a partner token file\n"
    )

    copy = sqlite3.connect(backup / "wagate.sqlite3")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # One snapshot: each acknowledged request is there once, as a job or as its notification.
        held = sum(
            copy.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("avatar_jobs", "notifications")
        )
    finally:
        copy.close()
    assert before <= held <= after

    restored = WagateProcess(backup, tmp_path / "restored-serve.log")
    restored.start(WAGATE_RATE_LIMITS="off")
    try:
        base = f"{restored.url}/waInstance{instance_id}"
        links: set[str] = set()
        with httpx.Client(timeout=30) as client:
            for _ in range(held):
                got = client.get(
                    f"{base}/receiveNotification/{token}", params={"receiveTimeout": 5}
                )
                note = got.json()
                assert note is not None, f"fewer notifications than the {held} the copy holds"
                info = note["body"]["avatarInfo"]
                assert (info["chatId"], info["available"]) == (BOB, True)
                links.add(info["urlAvatar"].replace(wagate_server.url, restored.url))
                deleted = client.delete(f"{base}/deleteNotification/{token}/{note['receiptId']}")
                assert deleted.json() == {"result": True}
            assert client.get(f"{base}/getWebhooksCount/{token}").json() == {"count": 0}
            for link in links:
                image = client.get(link)
                assert image.status_code == 200
                assert image.headers["content-type"] == "image/jpeg"
    finally:
        restored.kill()
        print(f"----- restored server output -----\n{restored.log()}")


def test_backup_refuses_a_destination_in_use_postgresql_and_a_missing_database(
    tmp_path: Path,
) -> None:
    def backup(*args: str) -> Result:
        return CliRunner().invoke(main, ["backup", *args, "--data-dir", str(tmp_path / "data")])

    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    refused = backup(str(used))
    assert refused.exit_code == 2
    assert f"{used} exists and is not an empty directory" in refused.stderr
    assert [path.name for path in used.iterdir()] == ["keep.txt"]

    missing = backup(str(tmp_path / "new"))
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: no wagate database at ")
    assert not (tmp_path / "new").exists() and not (tmp_path / "data").exists()

    postgres = backup(str(tmp_path / "new"), "--database-url", "postgresql://wagate@127.0.0.1/x")
    assert postgres.exit_code == 2
    assert "on PostgreSQL use pg_dump" in postgres.stderr
