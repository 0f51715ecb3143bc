"""`pulse keys create|list|revoke` as real processes against one key store (CONTRACT §4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.deps import Services
from api.keys import KeyStore
from tests.conftest import free_port
from tests.integration.test_cli_commands import run_pulse
from tests.servers import serve_in_thread

pytestmark = pytest.mark.integration

WRITERS = 24


def test_concurrent_creates_all_work_and_are_all_stored(tmp_path: Path) -> None:
    env = {**os.environ, "TZ": "UTC", "PULSE_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "api.cli", "keys", "create"]
    procs = [
        subprocess.Popen(
            [*command, "--scope", ("ingest", "read", "admin")[i % 3], "--name", f"w{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(WRITERS)
    ]
    keys = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        keys.append(stdout.strip().splitlines()[-1])
    store = KeyStore(tmp_path / "keys.json")
    records = store.records()
    assert sorted(r.name for r in records) == sorted(f"w{i}" for i in range(WRITERS))
    assert len({r.id for r in records}) == WRITERS
    for key in keys:
        assert store.scope_of(key) in ("ingest", "read", "admin"), "a printed key is rejected"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") or ".keys" in p.name]
    port = free_port()
    server, thread = serve_in_thread(create_app(Services(keys=KeyStore(store.path))), port)
    try:  # and the API takes each of them
        for key in keys:
            scope = store.scope_of(key)
            r = httpx.get(
                f"http://127.0.0.1:{port}/v1/dashboards",
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.status_code == (403 if scope == "ingest" else 200), (scope, r.text)
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(10)


def test_create_list_revoke(tmp_path: Path) -> None:
    env = {"PULSE_HOME": str(tmp_path)}
    made = run_pulse(
        "keys", "create", "--scope", "ingest", "--name", "storefront",
        "--origin", "https://Shop.example.com/", "--origin", "https://m.shop.example.com",
        "--expires", "90d", env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("pulse_") and "expires" in made.stderr
    listed = run_pulse("keys", "list", "--format", "json", env=env)
    [row] = json.loads(listed.stdout)
    assert row["name"] == "storefront" and row["scope"] == "ingest"
    assert row["origins"] == ["https://shop.example.com", "https://m.shop.example.com"]
    assert row["status"] == "active" and row["expires"] > row["created"]
    assert row["last_used"] is None
    text = run_pulse("keys", "list", env=env).stdout
    assert row["id"] in text and "storefront" in text
    for shown in (listed.stdout, text):
        assert key not in shown and "sha256" not in shown
    sha = json.loads((tmp_path / "keys.json").read_text())[0]["sha256"]
    assert sha not in listed.stdout and sha not in text

    revoked = run_pulse("keys", "revoke", row["id"], env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert KeyStore(tmp_path / "keys.json").scope_of(key) is None
    [row] = json.loads(run_pulse("keys", "list", "--format", "json", env=env).stdout)
    assert row["status"] == "revoked"

    unknown = run_pulse("keys", "revoke", "feedbeef", env=env)
    assert unknown.returncode == 1 and "no key with id 'feedbeef'" in unknown.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--scope", "root"], "expected one of ingest, read, admin"),
        (["--scope", "read", "--origin", "https://x.example"], "only an ingest key"),
        (["--scope", "ingest", "--origin", "shop.example.com"], "expected origins like"),
        (["--scope", "ingest", "--expires", "soon"], "expected a duration"),
        (["--scope", "ingest", "--expires", "0d"], "expected a duration"),
    ],
)
def test_bad_create_options_are_one_clear_line(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    result = run_pulse("keys", "create", *args, env={"PULSE_HOME": str(tmp_path)})
    assert result.returncode != 0
    assert fragment in result.stderr, result.stderr
    assert not (tmp_path / "keys.json").exists()


def test_a_damaged_store_is_a_clear_cli_error(tmp_path: Path) -> None:
    env = {"PULSE_HOME": str(tmp_path)}
    assert run_pulse("keys", "create", "--scope", "read", env=env).returncode == 0
    path = tmp_path / "keys.json"
    damaged = path.read_bytes()[:50]
    path.write_bytes(damaged)
    for args in (["list"], ["create", "--scope", "read"], ["revoke", "abc"]):
        result = run_pulse("keys", *args, env=env)
        assert result.returncode == 1, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "is damaged" in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert path.read_bytes() == damaged  # never overwritten by a writer
