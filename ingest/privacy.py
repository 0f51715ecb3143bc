"""Privacy at the edge (docs/events.md, docs/privacy.md): no IP address goes further than
the collector, and with ``PULSE_PSEUDONYMIZE`` no raw user id either.

An event's optional ``ip`` only serves to derive its ``country`` when absent (an offline
table of the regional registries' allocations, the ``iptocc`` package: no network, ~0.4 µs
a lookup); accepted events are re-encoded without it anyway (the event model has no such
field). A rejected event is kept as the client sent it, except that an address in it
(``ip``, ``context.ip``) is removed and, when pseudonymising, its user ids replaced by
their pseudonyms: a dead letter is stored in Kafka like any other record.

The pseudonym of an id is its keyed hash, the first 128 bits of HMAC-SHA256 in hex (32
characters): the same id always gets the same pseudonym under one key, so sessions, visitors
and experiments still add up, and without the key nobody can tell which id it stands for.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import iptocc
import msgspec

from ingest.events import Event

__all__ = [
    "ID_FIELDS",
    "IP_FIELD",
    "EdgePrivacy",
    "Pseudonymizer",
    "country_of_ip",
    "load_or_create_key",
]

IP_FIELD = "ip"
ID_FIELDS = ("user_id", "userId", "anonymousId")  # §5 events; Segment messages (§9)
_PSEUDONYM_HEX = 32  # 128 bits: no collision among any realistic number of ids


class _Ip(msgspec.Struct):
    ip: Any = None


_ip_of = msgspec.json.Decoder(_Ip).decode
_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
# For dead letters that are not JSON: an ``"ip": "..."`` pair, and a quoted id field.
_IP_PAIR = re.compile(rb'"ip"\s*:\s*"(?:[^"\\]|\\.)*"')
_ID_PAIR = re.compile(rb'"(user_id|userId|anonymousId)"\s*:\s*"((?:[^"\\]|\\.)*)"')


def country_of_ip(ip: object) -> str | None:
    """The ISO 3166-1 alpha-2 country an IPv4/IPv6 address is allocated to; None for
    anything else (not a string, not an address, private or unallocated ranges)."""
    if not isinstance(ip, str) or not 2 <= len(ip) <= 64:
        return None
    try:
        code = iptocc.country_code(ip.strip())
    except (ValueError, TypeError):
        return None
    if isinstance(code, str) and len(code) == 2 and code.isascii() and code.isupper():
        return code
    return None


class Pseudonymizer:
    """Replaces ids by their keyed hash (HMAC-SHA256, first 128 bits, hex)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a pseudonymisation key needs at least 16 bytes")
        self._base = hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, value: str) -> str:
        """The pseudonym of ``value`` (the same under the same key, in every process)."""
        h = self._base.copy()
        h.update(value.encode())
        return h.hexdigest()[:_PSEUDONYM_HEX]


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path`` (hex), created with 32 random bytes and mode 0600 if missing.
    Created exclusively, so two processes starting at once end up with the same key."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_key(path)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path}: expected a hex key") from None
    if len(key) < 16:
        raise ValueError(f"{path}: a key needs at least 16 bytes (32 hex digits)")
    return key


@dataclass(frozen=True)
class EdgePrivacy:
    """What the collector does to each event before anything is written."""

    pseudonymize: Pseudonymizer | None = None

    def accepted(
        self, event: Event, raw: bytes | dict[str, Any], client_ip: str | None = None
    ) -> Event:
        """The event as it may be stored: ``country`` derived from its ``ip`` when absent
        (else from ``client_ip``, the address of the browser that sent it), the user id
        pseudonymised when configured. ``raw``: the event's JSON, or its fields (see
        :meth:`~ingest.collector.Collector.submit`). (``ip`` itself is not part of
        :class:`Event`: it is never re-encoded.)"""
        country = None
        if event.country is None:
            ip: object = client_ip
            if isinstance(raw, dict):
                if "ip" in raw:
                    ip = raw["ip"]
            elif b'"ip"' in raw:
                try:
                    ip = _ip_of(raw).ip
                except msgspec.MsgspecError:
                    ip = None
            country = country_of_ip(ip)
        if self.pseudonymize is None:  # the usual case, without building keyword arguments
            return event if country is None else msgspec.structs.replace(event, country=country)
        changes = {"user_id": self.pseudonymize(event.user_id)}
        if event.anonymous_id is not None:
            changes["anonymous_id"] = self.pseudonymize(event.anonymous_id)
        if country is not None:
            changes["country"] = country
        return msgspec.structs.replace(event, **changes)

    def dead_letter(self, raw: bytes) -> tuple[bytes, list[str]]:
        """A rejected event's bytes as they may be stored, and what was removed or replaced
        (empty: the bytes are the client's, unchanged)."""
        has_ip = b'"ip"' in raw
        ids = self.pseudonymize is not None and any(f'"{f}"'.encode() in raw for f in ID_FIELDS)
        if not (has_ip or ids):
            return raw, []
        try:
            value = _any(raw)
        except (msgspec.MsgspecError, RecursionError):
            value = None
        if isinstance(value, dict):
            return self._scrub_object(value)
        return self._scrub_bytes(raw)

    def _scrub_object(self, value: dict[str, Any]) -> tuple[bytes, list[str]]:
        done: list[str] = []
        for obj, where in ((value, ""), (value.get("context"), "context.")):
            if isinstance(obj, dict) and IP_FIELD in obj:
                del obj[IP_FIELD]
                done.append(where + IP_FIELD)
        if self.pseudonymize is not None:
            for name in ID_FIELDS:
                if isinstance(value.get(name), str):
                    value[name] = self.pseudonymize(value[name])
                    done.append(name)
        return _encode(value), done

    def _scrub_bytes(self, raw: bytes) -> tuple[bytes, list[str]]:
        done = []
        raw, n = _IP_PAIR.subn(b'"ip":null', raw)
        if n:
            done.append(IP_FIELD)
        pseudonymize = self.pseudonymize
        if pseudonymize is not None:

            def swap(m: re.Match[bytes]) -> bytes:
                text = m[2].decode("utf-8", "replace")
                return b'"%s":"%s"' % (m[1], pseudonymize(text).encode())

            raw, n = _ID_PAIR.subn(swap, raw)
            if n:
                done.append("ids")
        return raw, done
