"""API keys with scopes, stored hashed under ``PULSE_HOME`` (never the key itself).

A key is shown once, when created. The store is one JSON file so that ``pulse keys``
works while ``pulse up`` holds the embedded warehouse; the API re-reads it when it changes
(a revocation takes effect with the next request).

Every change is a read-modify-write under an exclusive ``fcntl`` lock on a lock file beside
the store, written to a unique temporary file, fsynced and moved over the store with
``os.replace``: concurrent writers (several ``pulse keys create``, the API recording when a
key was last used) never lose each other's changes, and a reader sees the old file or the
new one, never half of one. A damaged store is a :class:`KeyStoreError` for the CLI; the
API keeps answering with the last good copy it read, or, without one, with 503s
(:class:`KeyStoreUnavailable`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import msgspec

from api.settings import normalise_origin
from ingest.errors import PulseError

__all__ = [
    "SCOPES",
    "KeyRecord",
    "KeyRejected",
    "KeyStore",
    "KeyStoreError",
    "KeyStoreUnavailable",
    "Scope",
    "allows",
    "ensure_key_file",
]

Scope = Literal["ingest", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "admin")
USE_RECORD_EVERY = timedelta(minutes=1)  # "last used" is written at most this often per key

_log = logging.getLogger("pulse.keys")


class KeyStoreError(PulseError):
    """The key store cannot be read or written (damaged file, unknown key id)."""


class KeyStoreUnavailable(KeyStoreError):
    """No key can be checked: the store is damaged and no good copy was read before."""


class KeyRejected(Exception):
    """A key that does not grant access; ``reason`` is safe to show its holder."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One stored key: its hash and what it may do, never the key itself."""

    id: str
    scope: Scope
    sha256: str
    created_at: datetime
    name: str = ""
    origins: tuple[str, ...] = ()
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def status(self, now: datetime) -> Literal["active", "expired", "revoked"]:
        """Whether the key works at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def public(self, now: datetime) -> dict[str, object]:
        """What ``pulse keys list`` shows: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "origins": list(self.origins),
            "created": self.created_at.isoformat(timespec="seconds"),
            "expires": self.expires_at.isoformat(timespec="seconds") if self.expires_at else None,
            "last_used": self.last_used_at.isoformat(timespec="seconds")
            if self.last_used_at
            else None,
            "status": self.status(now),
        }


_decoder = msgspec.json.Decoder(list[KeyRecord])
_encoder = msgspec.json.Encoder()


def allows(granted: str, needed: Scope) -> bool:
    """Whether a key of scope ``granted`` may call a route needing ``needed``.

    ``admin`` may do everything; ``read`` and ``ingest`` only their own routes.
    """
    return granted == needed or granted == "admin"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class _Snapshot:
    """The keys of one version of the store, indexed by hash."""

    def __init__(self, records: Sequence[KeyRecord]) -> None:
        self.records = list(records)
        self.by_digest = {r.sha256: r for r in records}


class KeyStore:
    """Hashed keys in a JSON file (a list of :class:`KeyRecord`)."""

    def __init__(self, path: Path, *, clock: Callable[[], datetime] = _now) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._good: _Snapshot | None = None
        self._damage: str | None = None
        self._used: dict[str, datetime] = {}  # key id -> last use this process recorded

    # -- writing ----------------------------------------------------------------------

    def issue(
        self,
        scope: Scope,
        *,
        name: str = "",
        origins: Sequence[str] = (),
        expires_in: timedelta | None = None,
    ) -> tuple[KeyRecord, str]:
        """Make and store (hashed) a new key; returns its record and the key itself."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        if expires_in is not None and expires_in <= timedelta(0):
            raise ValueError("expires must be a positive duration like 90d")
        allowed = tuple(dict.fromkeys(normalise_origin(o) for o in origins))
        key = f"pulse_{secrets.token_urlsafe(32)}"
        now = self._clock().replace(microsecond=0)
        created: list[KeyRecord] = []

        def add(records: list[KeyRecord]) -> list[KeyRecord]:
            taken = {r.id for r in records}
            key_id = secrets.token_hex(4)
            while key_id in taken:
                key_id = secrets.token_hex(4)
            record = KeyRecord(
                id=key_id, scope=scope, sha256=_digest(key), created_at=now, name=name,
                origins=allowed, expires_at=now + expires_in if expires_in else None,
            )  # fmt: skip
            created.append(record)
            return [*records, record]

        self._update(add)
        return created[0], key

    def create(
        self,
        scope: Scope,
        *,
        name: str = "",
        origins: Sequence[str] = (),
        expires_in: timedelta | None = None,
    ) -> str:
        """Make, store (hashed) and return a new key of ``scope`` (see :meth:`issue`)."""
        return self.issue(scope, name=name, origins=origins, expires_in=expires_in)[1]

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke the key ``key_id`` (idempotent); a KeyStoreError when there is none."""
        now = self._clock().replace(microsecond=0)
        changed: list[KeyRecord] = []

        def mark(records: list[KeyRecord]) -> list[KeyRecord]:
            out = []
            for r in records:
                if r.id == key_id:
                    r = r if r.revoked_at else msgspec.structs.replace(r, revoked_at=now)
                    changed.append(r)
                out.append(r)
            if not changed:
                raise KeyStoreError(f"no key with id {key_id!r} (see `pulse keys list`)")
            return out

        self._update(mark)
        return changed[0]

    def records(self) -> list[KeyRecord]:
        """Every stored key, oldest first; a KeyStoreError when the store is damaged."""
        return self._read()

    # -- checking ---------------------------------------------------------------------

    def authenticate(self, key: str) -> KeyRecord:
        """The active record of ``key``; :class:`KeyRejected` for an unknown, revoked or
        expired key, :class:`KeyStoreUnavailable` when no key can be checked."""
        snapshot = self._current()
        digest = _digest(key)
        record = snapshot.by_digest.get(digest)
        if record is None or not hmac.compare_digest(record.sha256, digest):
            raise KeyRejected("unknown API key")
        status = record.status(self._clock())
        if status == "revoked":
            raise KeyRejected("this API key was revoked")
        if status == "expired":
            raise KeyRejected("this API key has expired")
        return record

    def scope_of(self, key: str) -> str | None:
        """The scope of an active ``key``, or None."""
        try:
            return self.authenticate(key).scope
        except (KeyRejected, KeyStoreError):
            return None

    def origins(self) -> frozenset[str]:
        """Every page origin some active key may send events from."""
        now = self._clock()
        try:
            records = self._current().records
        except KeyStoreError:
            return frozenset()
        return frozenset(o for r in records if r.status(now) == "active" for o in r.origins)

    def use_due(self, record: KeyRecord) -> bool:
        """Whether :meth:`record_use` would write now (a check in memory: a request on an
        event loop hands only the rare write to a thread)."""
        last = self._used.get(record.id) or record.last_used_at
        return last is None or self._clock() - last >= USE_RECORD_EVERY

    def record_use(self, record: KeyRecord) -> None:
        """Note that ``record``'s key was used now: written at most once a minute per key,
        and never failing the request that used it."""
        now = self._clock()
        with self._lock:
            last = self._used.get(record.id) or record.last_used_at
            if last is not None and now - last < USE_RECORD_EVERY:
                return
            self._used[record.id] = now
        stamp = now.replace(microsecond=0)

        def touch(records: list[KeyRecord]) -> list[KeyRecord]:
            return [
                msgspec.structs.replace(r, last_used_at=stamp) if r.id == record.id else r
                for r in records
            ]

        try:
            self._update(touch)
        except (KeyStoreError, OSError) as exc:
            _log.warning("could not record the use of key %s: %s", record.id, exc)

    # -- the file ---------------------------------------------------------------------

    def _read(self) -> list[KeyRecord]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise KeyStoreError(f"cannot read the key store {self.path}: {exc}") from None
        try:
            return _decoder.decode(data)
        except (msgspec.DecodeError, ValueError) as exc:
            raise KeyStoreError(
                f"the key store {self.path} is damaged ({exc}): restore it from a backup, "
                "or move it away to start an empty one (its keys then stop working)"
            ) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _update(self, change: Callable[[list[KeyRecord]], list[KeyRecord]]) -> None:
        with self._locked():
            records = change(self._read())
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "wb") as fh:  # mkstemp: mode 0600, like a password file
                    fh.write(_encoder.encode(records) + b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a crash
            finally:
                os.close(directory)

    def _current(self) -> _Snapshot:
        """The keys as the file holds them now (re-read when it changed); the last good
        copy while the file is damaged."""
        try:
            st = os.stat(self.path)
            signature: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            signature = None
        with self._lock:
            if signature != self._signature or (self._good is None and self._damage is None):
                self._signature = signature
                try:
                    self._good, self._damage = _Snapshot(self._read()), None
                except KeyStoreError as exc:
                    self._damage = str(exc)
                    _log.error(
                        "%s%s", exc, "; still using the keys read before" if self._good else ""
                    )
            if self._good is None:
                raise KeyStoreUnavailable(
                    "API keys cannot be checked: the key store is damaged; "
                    "the operator must repair it (see the server log)"
                )
            return self._good


def ensure_key_file(
    store: KeyStore, path: Path, scope: Scope, *, name: str, expires_in: timedelta | None = None
) -> Path:
    """Keep a key of ``scope`` in ``path`` (mode 0600): the one already there while it
    is still valid, else a new one (the old one, if any, is revoked)."""
    store.records()  # a damaged store stops here, with a message naming the file
    try:
        current = path.read_text().strip()
    except FileNotFoundError:
        current = ""
    if current:
        try:
            record = store.authenticate(current)
            if record.scope == scope:
                return path
            store.revoke(record.id)
        except KeyRejected:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = store.create(scope, name=name, expires_in=expires_in)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.replace(tmp, path)
    return path
