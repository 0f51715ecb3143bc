"""The flow's Bytewax recovery store: created whole or not at all."""

from __future__ import annotations

from pathlib import Path

from flows.run import recovery_config


def test_a_store_half_made_by_a_killed_flow_is_made_again(tmp_path: Path) -> None:
    # a flow killed while creating its store leaves the directory it creates it in
    left = tmp_path / "recovery" / ".creating"
    left.mkdir(parents=True)
    (left / "part-0.sqlite3").write_bytes(b"")  # an empty, half-made partition
    recovery_config(tmp_path / "recovery", 2)
    parts = sorted(p.name for p in (tmp_path / "recovery").glob("part-*.sqlite3"))
    assert parts == ["part-0.sqlite3", "part-1.sqlite3"]
    assert all((tmp_path / "recovery" / p).stat().st_size > 0 for p in parts)
    assert not left.exists()
    # a store already there is kept as it is
    before = {p: (tmp_path / "recovery" / p).stat().st_mtime_ns for p in parts}
    recovery_config(tmp_path / "recovery", 2)
    assert {p: (tmp_path / "recovery" / p).stat().st_mtime_ns for p in parts} == before
