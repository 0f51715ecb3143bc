"""Ids the flow remembers (event ids, order ids), kept compactly.

An id is remembered as a 64-bit stable hash (XXH3, the same in every process and run,
unlike Python's randomised ``hash``) with its event time, both packed into byte arrays:
16 bytes per id instead of ~150 for a dict entry with its string and int. A new id is
taken for a repeat only if its hash equals one of the same user's remembered ids:
with k ids remembered, a chance of k / 2^64.
"""

from __future__ import annotations

import sys
from array import array

import msgspec
import xxhash

__all__ = ["IdSet", "id_hash", "pack_times", "unpack_times"]

_xxh3 = xxhash.xxh3_64_digest


def id_hash(value: str) -> bytes:
    """The 8-byte stable hash by which an id is remembered."""
    return _xxh3(value.encode())


class IdSet(msgspec.Struct, array_like=True, gc=False):
    """Ids (as :func:`id_hash` values) with their event times (epoch ms), in the order
    they were added."""

    hashes: bytearray = bytearray()  # 8 bytes per id
    times: bytearray = bytearray()  # 8 bytes per id (signed, little-endian), as hashes

    def __len__(self) -> int:
        return len(self.hashes) >> 3

    def __contains__(self, h: bytes) -> bool:
        hashes = self.hashes
        at = hashes.find(h)
        while at > 0 and at & 7:  # a match across two hashes: look further
            at = hashes.find(h, at + 1)
        return at >= 0

    def add(self, h: bytes, ts: int) -> bool:
        """Remember ``h`` at ``ts``; False (and nothing changes) when it is there already."""
        hashes = self.hashes
        at = hashes.find(h)
        while at > 0 and at & 7:  # as __contains__, inline: this runs for every event
            at = hashes.find(h, at + 1)
        if at >= 0:
            return False
        hashes += h
        self.times += ts.to_bytes(8, "little", signed=True)
        return True

    def prune(self, horizon_ms: int) -> int | None:
        """Forget the ids older than ``horizon_ms``; the oldest time left (None: none)."""
        times = unpack_times(self.times)
        keep = [i for i, ts in enumerate(times) if ts >= horizon_ms]
        if len(keep) < len(times):
            hashes = memoryview(self.hashes)
            self.hashes = bytearray(b"".join([hashes[i * 8 : i * 8 + 8] for i in keep]))
            self.times = pack_times([times[i] for i in keep])
        return min((times[i] for i in keep), default=None)


def pack_times(times: list[int]) -> bytearray:
    """Epoch-ms times as 8-byte signed little-endian integers."""
    packed = array("q", times)
    if sys.byteorder == "big":
        packed.byteswap()
    return bytearray(packed.tobytes())


def unpack_times(packed: bytes | bytearray) -> array[int]:
    """The times of :func:`pack_times`."""
    times = array("q")
    times.frombytes(packed)
    if sys.byteorder == "big":
        times.byteswap()
    return times
