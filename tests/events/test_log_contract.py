"""The EventLog contract, the same on every backend (SQLite, Redis Streams, Kafka
where a broker is named): dedupe by event_id, reads in order from a cursor,
resuming after the last cursor misses nothing and repeats nothing, a waiting
reader is woken by an append, bounded retention."""

from __future__ import annotations

import asyncio
import time

import pytest

from metadata.event_log import Retention
from tests.events.conftest import MakeLog, event


async def test_a_resent_event_is_recorded_once(make_log: MakeLog) -> None:
    log = make_log()
    first = await log.append([event(i) for i in range(5)])
    assert (first.accepted, first.duplicates) == (5, 0)
    again = await log.append([event(i) for i in range(3, 8)])   # 3, 4 resent
    assert (again.accepted, again.duplicates) == (3, 2)
    assert [e.event.event_id for e in again.added] == ["s1-5", "s1-6", "s1-7"]
    entries = await log.read("", 100)
    assert [e.event.event_id for e in entries] == [f"s1-{i}" for i in range(8)]
    # The same batch twice in one call: once.
    dup = await log.append([event(9), event(9)])
    assert (dup.accepted, dup.duplicates) == (1, 1)


async def test_reads_follow_cursors_in_order(make_log: MakeLog) -> None:
    log = make_log()
    assert await log.head() == ""
    assert await log.read("", 10) == []
    added = (await log.append([event(i, position=float(i)) for i in range(10)])).added
    assert await log.head() == added[-1].cursor
    page1 = await log.read("", 4)
    page2 = await log.read(page1[-1].cursor, 4)
    page3 = await log.read(page2[-1].cursor, 4)
    got = page1 + page2 + page3
    assert [e.cursor for e in got] == [e.cursor for e in added]
    assert [e.event for e in got] == [e.event for e in added]   # the fields round-trip
    assert await log.read(got[-1].cursor, 4) == []


async def test_a_reader_resuming_from_its_cursor_misses_nothing(make_log: MakeLog) -> None:
    log = make_log()
    await log.append([event(i) for i in range(6)])
    seen = await log.read("", 3)            # the reader takes 3, then goes away
    cursor = seen[-1].cursor
    await log.append([event(i) for i in range(6, 12)])    # more arrive meanwhile
    rest = await log.read(cursor, 100)      # it comes back with its last cursor
    ids = [e.event.event_id for e in seen + rest]
    assert ids == [f"s1-{i}" for i in range(12)]          # nothing lost, nothing twice


async def test_a_waiting_reader_is_woken_by_an_append(make_log: MakeLog) -> None:
    log = make_log()
    await log.append([event(0)])
    cursor = await log.head()
    t0 = time.monotonic()
    reader = asyncio.create_task(log.read(cursor, 10, wait=5.0))
    await asyncio.sleep(0.3)
    assert not reader.done()
    await log.append([event(1)])
    got = await asyncio.wait_for(reader, 5.0)
    assert [e.event.event_id for e in got] == ["s1-1"]
    assert time.monotonic() - t0 < 3.0
    # And an empty wait ends at its deadline with nothing.
    t1 = time.monotonic()
    assert await log.read(got[-1].cursor, 10, wait=0.3) == []
    assert 0.25 <= time.monotonic() - t1 < 2.0


async def test_the_log_opened_again_holds_the_same_entries(make_log: MakeLog) -> None:
    log = make_log()
    added = (await log.append([event(i) for i in range(4)])).added
    await log.close()
    again = make_log()
    assert [e.cursor for e in await again.read("", 10)] == [e.cursor for e in added]
    # Dedupe survives too, where the backend keeps it outside the process
    # (Kafka's window is in-process: metadata/event_log_kafka.py).
    if getattr(again, "dedupe_across_processes", True):
        assert (await again.append([event(2)])).duplicates == 1


async def test_retention_is_bounded(make_log: MakeLog) -> None:
    log = make_log(Retention(max_events=100))
    if not hasattr(log, "trim"):
        pytest.skip("this backend's retention is the server's own (a Kafka topic's)")
    for start in range(0, 1500, 250):
        await log.append([event(i) for i in range(start, start + 250)])
    trim = getattr(log, "trim", None)
    if trim is not None:
        await trim()
    kept = await log.read("", 2000)
    # Redis's MAXLEN ~ trims whole macro nodes (100 entries by default): a few
    # hundred at most stay, never the whole log.
    assert 100 <= len(kept) <= 400, len(kept)
    assert kept[-1].event.event_id == "s1-1499"
    assert kept[0].event.event_id != "s1-0"
