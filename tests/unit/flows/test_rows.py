"""A batch of the fold's output as warehouse rows: each row once, at its newest."""

from __future__ import annotations

import copy

import msgspec

from flows.logic import UserState, enrich, step
from flows.rows import Part, Read, batch_rows, merge_progress, progress_rows
from ingest.events import Event
from tests.unit.flows.test_logic import FX, MIN, RULES, T0, ev
from warehouse.moves import MOVES, collapse
from warehouse.rollups import EVENTS, STARTS
from warehouse.schema import COLUMNS, MOVE_COLUMNS
from warehouse.writer import WarehouseWriter

EVENT = {c: i for i, c in enumerate(COLUMNS["events"])}
SESSION = {c: i for i, c in enumerate(COLUMNS["sessions"])}
PART = Part("user.events.page_view", 3)


def fold(events: list[Event], first_offset: int = 0) -> tuple[list[Read], list]:
    """Fold one user's events; the reads and outputs, for batches cut from them."""
    state: UserState | None = None
    reads, outs = [], []
    for offset, event in enumerate(events, first_offset):
        enriched = enrich(event, FX)
        state, out = step(state, enriched, RULES)
        reads.append(Read(enriched, PART, offset))
        outs.append(out)
    return reads, outs


def test_a_merge_in_the_batch_leaves_one_row_per_event_and_a_tombstone() -> None:
    # c bridges a's and b's sessions: b moves into a's session, b's session is gone
    reads, outs = fold([ev("a", T0), ev("b", T0 + 50 * MIN), ev("c", T0 + 25 * MIN),
                        ev("a", T0 + 60 * MIN)])  # fmt: skip
    batch = batch_rows([(reads[:2], outs[:2]), (reads[2:], outs[2:])])
    events = batch.tables["events"]
    assert sorted(r[EVENT["event_id"]] for r in events) == ["a", "b", "c"]
    assert {r[EVENT["session_key"]] for r in events} == {f"u1/{T0}"}
    by_key = {r[SESSION["session_key"]]: r for r in batch.tables["sessions"]}
    assert by_key[f"u1/{T0 + 50 * MIN}"][SESSION["deleted"]] == 1
    survivor = by_key[f"u1/{T0}"]
    assert (survivor[SESSION["n_events"]], survivor[SESSION["deleted"]]) == (3, 0)
    # the repeat of a is a duplicates row, not an event
    assert [r[1] for r in batch.tables["duplicates"]] == ["a"]
    assert (batch.events, batch.duplicates) == (3, 1)
    # progress: the newest event time and the last offset read in the partition
    assert batch.progress == {(PART.topic, 3): (T0 + 60 * MIN, 3)}
    assert batch.newest_ms == T0 + 60 * MIN
    # every minute of the merged session has its rollups recomputed
    minutes = range(T0, T0 + 50 * MIN + 1, MIN)
    assert set(minutes) <= batch.minutes[EVENTS] and set(minutes) <= batch.minutes[STARTS]


def test_a_session_row_is_its_aggregate_as_it_is_now() -> None:
    reads, outs = fold([ev(str(i), T0 + i * MIN, session_id="s") for i in range(5)])
    batch = batch_rows([(reads, outs)])
    [row] = batch.tables["sessions"]
    assert (row[SESSION["n_events"]], row[SESSION["n_pageviews"]]) == (5, 5)
    assert (row[SESSION["start"]], row[SESSION["end"]]) == (T0, T0 + 4 * MIN)
    assert len(batch.tables["events"]) == 5 and not batch.tables["duplicates"]
    assert batch.minutes[STARTS] == {T0}


def test_an_empty_batch_has_no_rows() -> None:
    batch = batch_rows([])
    assert not any(batch.tables.values()) and batch.newest_ms == 0


def test_progress_is_the_maxima_over_batches_one_row_per_partition() -> None:
    progress: dict[tuple[str, int], tuple[int, int]] = {}
    merge_progress(progress, {("t", 0): (T0 + MIN, 7), ("t", 1): (T0, 3)})
    merge_progress(progress, {("t", 0): (T0, 9)})  # an older event read later
    assert sorted(progress_rows(progress, now_ms=T0 + 5 * MIN)) == [
        ["t", 0, T0 + MIN, 9, T0 + 5 * MIN],
        ["t", 1, T0, 3, T0 + 5 * MIN],
    ]


def test_a_merge_moves_earlier_batches_rows_in_the_warehouse_and_this_batchs_here() -> None:
    # a | b, then c bridges them (b's row was written before), d joins b's session in the
    # same batch before e bridges that again into a session before a.
    reads, outs = fold([ev("a", T0), ev("b", T0 + 50 * MIN), ev("c", T0 + 25 * MIN),
                        ev("z", T0 - 50 * MIN), ev("e", T0 - 25 * MIN)])  # fmt: skip
    first = batch_rows([(reads[:2], outs[:2])])
    assert MOVES not in first.tables
    later = batch_rows([(reads[2:], outs[2:])])
    z_key, a_key, b_key = f"u1/{T0 - 50 * MIN}", f"u1/{T0}", f"u1/{T0 + 50 * MIN}"
    rows = {r[EVENT["event_id"]]: r[EVENT["session_key"]] for r in later.tables["events"]}
    assert rows == {"c": z_key, "z": z_key, "e": z_key}  # c's row moved with a's session
    # the rows written before move in the warehouse, in the order the merges were made
    moves = [(user, old, new, sorted(times)) for user, old, new, times, _ in later.tables[MOVES]]
    assert moves == [
        ("u1", b_key, a_key, [T0 + 50 * MIN]),
        ("u1", a_key, z_key, [T0, T0 + 25 * MIN, T0 + 50 * MIN]),
    ]
    assert collapse([(*m[:3], m[3], i) for i, m in enumerate(moves)]) == [
        ("u1", b_key, z_key, [T0 + 50 * MIN], 1),
        ("u1", a_key, z_key, [T0, T0 + 25 * MIN, T0 + 50 * MIN], 1),
    ]
    tombstones = {r[SESSION["session_key"]] for r in later.tables["sessions"] if r[-1]}
    assert tombstones == {a_key, b_key}


def test_every_row_fills_its_tables_columns_in_order() -> None:
    reads, outs = fold([ev("a", T0), ev("b", T0 + 50 * MIN), ev("c", T0 + 25 * MIN),
                        ev("a", T0 + 60 * MIN)])  # fmt: skip
    first = batch_rows([(reads[:2], outs[:2])])
    later = batch_rows([(reads[2:], outs[2:])])
    tables = {t: first.tables[t] + later.tables[t] for t in ("events", "sessions", "duplicates")}
    tables["flow_progress"] = progress_rows(later.progress, now_ms=T0)
    for table, rows in tables.items():
        assert rows and all(len(row) == len(COLUMNS[table]) for row in rows), table
    assert all(len(row) == len(MOVE_COLUMNS) for row in later.tables[MOVES])
    [dup] = tables["duplicates"]
    assert dict(zip(COLUMNS["duplicates"], dup, strict=True)) == {
        "ts": T0 + 60 * MIN, "event_id": "a", "topic": PART.topic, "partition": 3, "offset": 3,
    }  # fmt: skip
    [gone] = [r for r in tables["sessions"] if r[SESSION["deleted"]]]
    assert gone[SESSION["session_key"]] == f"u1/{T0 + 50 * MIN}"
    c = next(r for r in tables["events"] if r[EVENT["event_id"]] == "c")
    assert (c[EVENT["ts"]], c[EVENT["user_id"]], c[EVENT["offset"]]) == (T0 + 25 * MIN, "u1", 2)


def test_encoding_a_batch_leaves_its_rows_as_they_were() -> None:
    reads, outs = fold([ev("a", T0), ev("b", T0 + 50 * MIN), ev("c", T0 + 25 * MIN)])
    WarehouseWriter.encode(batch_rows([(reads[:2], outs[:2])]).tables)
    batch = batch_rows([(reads[2:], outs[2:])])
    before = copy.deepcopy(batch.tables)
    encoded = WarehouseWriter.encode(batch.tables, batch.minutes)
    assert batch.tables == before
    # what is sent: the batch's version, times in seconds
    [row] = [msgspec.json.decode(line) for line in encoded.lines["events"].splitlines()]
    assert row[EVENT["version"]] == encoded.version and row[EVENT["ts"]] == T0 / 1000 + 1500
    [move] = [msgspec.json.decode(line) for line in encoded.lines[MOVES].splitlines()]
    assert move[MOVE_COLUMNS.index("version")] == encoded.version


def test_an_exposure_is_an_event_row_and_an_exposures_row() -> None:
    exposure = ev("x", T0 + MIN, "experiment_exposure", experiment="checkout", variant="B")
    reads, outs = fold([ev("a", T0), exposure, ev("b", T0 + 2 * MIN)])
    batch = batch_rows([(reads, outs)])
    assert [r[EVENT["type"]] for r in batch.tables["events"]] == [
        "page_view", "experiment_exposure", "page_view"]  # fmt: skip
    [row] = batch.tables["exposures"]
    assert dict(zip(COLUMNS["exposures"], row, strict=True)) == {
        "experiment": "checkout", "user_id": "u1", "ts": T0 + MIN, "event_id": "x",
        "variant": "B", "version": 0,
    }  # fmt: skip
    assert "exposures" not in batch_rows([(reads[:1], outs[:1])]).tables
    # a repeat of the exposure is a duplicate, not a second exposure
    again = batch_rows([fold([exposure, exposure])])
    assert len(again.tables["exposures"]) == 1 and len(again.tables["duplicates"]) == 1


def test_a_session_spanning_years_hands_its_span_to_the_warehouse() -> None:
    # an explicit session written straight to a topic with times years apart: its minutes
    # would be millions of marks; the span goes to the warehouse (warehouse.rollups.mark_spans)
    years = 10 * 365 * 1440 * MIN
    reads, outs = fold([ev("late", T0 + years, session_id="s"), ev("early", T0, session_id="s")])
    batch = batch_rows([(reads, outs)])
    assert batch.spans == ((T0, T0 + years),)
    assert batch.minutes[EVENTS] == {T0, T0 + years}
    assert len(batch.minutes[STARTS]) <= 2
    # a day's session still lists its minutes here
    reads, outs = fold([ev("b", T0 + 600 * MIN, session_id="s"), ev("a", T0, session_id="s")])
    batch = batch_rows([(reads, outs)])
    assert batch.spans == () and set(range(T0, T0 + 600 * MIN + 1, MIN)) <= batch.minutes[EVENTS]
    encoded = WarehouseWriter.encode(batch.tables, batch.minutes, ((1, 2),))
    assert encoded.spans == ((1, 2),)
