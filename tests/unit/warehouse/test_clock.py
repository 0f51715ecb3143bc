"""Row versions only grow: across threads, and when the wall clock steps back."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from warehouse.clock import next_version


def test_versions_grow_across_threads_and_follow_the_wall_clock() -> None:
    before = time.time_ns()
    seen: list[list[int]] = [[] for _ in range(4)]

    def take(out: list[int]) -> None:
        out.extend(next_version() for _ in range(5000))

    threads = [threading.Thread(target=take, args=(out,)) for out in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [v for out in seen for v in out]
    assert len(set(every)) == len(every)  # no two writes share a version
    assert all(a < b for out in seen for a, b in itertools.pairwise(out))
    assert min(every) >= before


def test_a_wall_clock_stepped_back_does_not_make_versions_go_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    last = next_version()
    monkeypatch.setattr(time, "time_ns", lambda: last - 10**12)  # NTP stepped back 1000 s
    assert next_version() == last + 1
    assert next_version() == last + 2
