"""Pure parts of the edge: body splitting, device from user agent, API keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.keys import KeyStore, allows
from ingest.collector import BodyError, split_body
from ingest.useragent import device_from_user_agent


def test_split_json_array_keeps_each_element_bytes() -> None:
    body = b'[{"a": 1},  {"b": [1, 2]}, 3]'
    assert split_body(body) == [b'{"a": 1}', b'{"b": [1, 2]}', b"3"]


def test_split_jsonl_skips_blank_lines_and_keeps_bad_ones() -> None:
    assert split_body(b'{"a":1}\n\n{bad\r\n{"b":2}\n') == [b'{"a":1}', b"{bad", b'{"b":2}']


@pytest.mark.parametrize("body", [b"", b"   \n", b"[1, 2", b'[{"a": 1}'])
def test_unsplittable_bodies_are_errors(body: bytes) -> None:
    with pytest.raises(BodyError):
        split_body(body)


@pytest.mark.parametrize(
    ("ua", "device"),
    [
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148", "mobile"),
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36", "mobile"),
        ("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X)", "tablet"),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/130.0", "desktop"),
        (None, None),
        ("", None),
    ],
)
def test_device_from_user_agent(ua: str | None, device: str | None) -> None:
    assert device_from_user_agent(ua) == device


def test_keys_are_stored_hashed_and_scoped(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    key = store.create("read")
    assert key not in (tmp_path / "keys.json").read_text()
    assert json.loads((tmp_path / "keys.json").read_text())[0]["scope"] == "read"
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0
    assert store.scope_of(key) == "read"
    assert store.scope_of(key + "x") is None
    other = KeyStore(tmp_path / "keys.json").create("admin")  # another process adds a key
    assert store.scope_of(other) == "admin"


def test_scope_rules() -> None:
    assert allows("admin", "read") and allows("admin", "ingest")
    assert allows("read", "read") and not allows("read", "ingest")
    assert not allows("ingest", "read") and not allows("ingest", "admin")
