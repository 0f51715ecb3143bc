"""Remembered ids: stable 64-bit hashes with their times, packed in byte arrays."""

from __future__ import annotations

import msgspec

from flows.ids import IdSet, id_hash, pack_times, unpack_times

T0 = 1_795_176_000_000


def test_the_hash_is_stable_across_processes_and_runs() -> None:
    # XXH3-64 of "abc" (the reference value of the algorithm), big-endian
    assert id_hash("abc") == bytes.fromhex("78af5f94892f3950")
    assert id_hash("é") == id_hash("é") != id_hash("e")


def test_an_id_is_remembered_once_with_its_first_time() -> None:
    ids = IdSet()
    assert ids.add(id_hash("a"), T0) and ids.add(id_hash("b"), T0 + 5)
    assert not ids.add(id_hash("a"), T0 + 9)
    assert len(ids) == 2 and id_hash("a") in ids and id_hash("c") not in ids
    assert list(unpack_times(ids.times)) == [T0, T0 + 5]


def test_a_match_across_two_hashes_is_not_an_id() -> None:
    ids = IdSet()
    first, second = bytes(range(8)), bytes(range(8, 16))
    ids.add(first, T0)
    ids.add(second, T0)
    straddling = first[4:] + second[:4]  # found by bytes.find, at an offset of 4
    assert straddling not in ids
    assert ids.add(straddling, T0) and straddling in ids and len(ids) == 3


def test_pruning_keeps_the_newer_ids_in_order_and_says_the_oldest_left() -> None:
    ids = IdSet()
    for i, ts in enumerate([T0 + 30, T0, T0 + 10, T0 + 50]):
        ids.add(id_hash(f"e{i}"), ts)
    assert ids.prune(T0 + 10) == T0 + 10
    assert list(unpack_times(ids.times)) == [T0 + 30, T0 + 10, T0 + 50]
    assert [id_hash(f"e{i}") in ids for i in range(4)] == [True, False, True, True]
    assert ids.prune(T0 + 60) is None and len(ids) == 0 and not ids.hashes


def test_an_id_set_round_trips_through_its_encoding() -> None:
    ids = IdSet()
    for i in range(5):
        ids.add(id_hash(f"e{i}"), T0 - i)
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(ids), type=IdSet)
    assert again == ids and id_hash("e3") in again
    assert len(msgspec.msgpack.encode(ids)) <= 5 * 16 + 8  # 16 bytes per id
    assert unpack_times(pack_times([T0, -1, 2**62])).tolist() == [T0, -1, 2**62]
