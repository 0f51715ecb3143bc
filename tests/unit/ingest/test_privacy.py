"""Pseudonyms, their key, the address lookup and the scrubbing of dead letters (§11)."""

from __future__ import annotations

import hashlib
import hmac
import stat

import msgspec
import pytest

from api.runtime import Runtime
from api.settings import load_settings
from ingest.errors import ConfigError
from ingest.events import Event
from ingest.privacy import EdgePrivacy, Pseudonymizer, country_of_ip, load_or_create_key

KEY = bytes(range(32))


def test_pseudonym_is_the_keyed_hash() -> None:
    p = Pseudonymizer(KEY)
    want = hmac.new(KEY, b"alice", hashlib.sha256).hexdigest()[:32]
    assert p("alice") == want == Pseudonymizer(KEY)("alice")
    assert p("alice") != Pseudonymizer(b"x" * 32)("alice")
    assert p("alice") != p("alicf")
    with pytest.raises(ValueError):
        Pseudonymizer(b"short")


def test_generated_key_is_private_and_stable(tmp_path) -> None:
    path = tmp_path / "home" / "pseudonymize.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and load_or_create_key(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("zz\n")
    with pytest.raises(ValueError, match="hex"):
        load_or_create_key(path)


def test_runtime_builds_the_pseudonymiser_from_settings(tmp_path) -> None:
    assert Runtime(load_settings(home=tmp_path)).pseudonymizer is None
    generated = Runtime(load_settings(home=tmp_path, pseudonymize=True)).pseudonymizer
    assert generated is not None and (tmp_path / "pseudonymize.key").exists()
    again = Runtime(load_settings(home=tmp_path, pseudonymize=True)).pseudonymizer
    assert again is not None and again("u1") == generated("u1")
    given = Runtime(
        load_settings(home=tmp_path, pseudonymize=True, pseudonymize_key=KEY.hex())
    ).pseudonymizer
    assert given is not None and given("u1") == Pseudonymizer(KEY)("u1")
    with pytest.raises(ConfigError, match="PULSE_PSEUDONYMIZE_KEY"):
        load_settings(pseudonymize_key="abc")
    with pytest.raises(ConfigError, match="PULSE_RETENTION"):
        load_settings(retention="5m")
    assert load_settings(retention="30d").retention.days == 30
    proxies = load_settings(trusted_proxies="10.0.0.1, 10.1.0.0/16,::1").trusted_proxies
    assert proxies == ("10.0.0.1/32", "10.1.0.0/16", "::1/128")
    with pytest.raises(ConfigError, match="PULSE_TRUSTED_PROXIES"):
        load_settings(trusted_proxies="proxy.example.com")


@pytest.mark.parametrize(
    ("ip", "country"),
    [("81.2.69.160", "GB"), ("2a00:1450:4001:81b::200e", "IE"), ("127.0.0.1", None),
     ("10.1.2.3", None), ("not an ip", None), (42, None), ("", None), ("1" * 100, None)],
)  # fmt: skip
def test_country_of_ip(ip: object, country: str | None) -> None:
    assert country_of_ip(ip) == country


def test_accepted_event_gets_country_and_pseudonym() -> None:
    event = Event(event_id="e", type="page_view", ts=1, user_id="alice")
    raw = b'{"ip": "81.2.69.160"}'
    assert EdgePrivacy().accepted(event, raw).country == "GB"
    assert EdgePrivacy().accepted(msgspec.structs.replace(event, country="DE"), raw).country == (
        "DE"
    )
    p = Pseudonymizer(KEY)
    assert EdgePrivacy(p).accepted(event, b"{}").user_id == p("alice")


def test_dead_letters_lose_addresses_and_raw_ids() -> None:
    p = Pseudonymizer(KEY)
    raw = b'{"user_id": "alice", "ip": "1.2.3.4", "context": {"ip": "5.6.7.8"}, "x": 1}'
    value, done = EdgePrivacy().dead_letter(raw)
    assert done == ["ip", "context.ip"] and b"1.2.3.4" not in value and b"5.6.7.8" not in value
    assert b"alice" in value
    value, done = EdgePrivacy(p).dead_letter(raw)
    assert b"alice" not in value and p("alice").encode() in value and "user_id" in done
    broken = b'{"userId": "bob", "ip": "1.2.3.4", oops'
    value, done = EdgePrivacy(p).dead_letter(broken)
    assert b"1.2.3.4" not in value and b"bob" not in value and value.endswith(b"oops")
    plain = b'{"event_id": "e", "user_id": "carol"}'
    assert EdgePrivacy().dead_letter(plain) == (plain, [])
