"""The stats read model: figures of scripted sessions worked out by hand, resent
events counted once, and the same figures after a restart (rebuilt from the
SQLite and Redis logs)."""

from __future__ import annotations

import pytest

from metadata.event_log import WatchEvent
from metadata.stats import StatsModel, percentile
from origin.events import EventIntake
from tests.events.conftest import MakeLog

T0 = 1_800_000_000.0      # an hour boundary: 1_800_000_000 / 3600 = 500000


def session(sid: str, viewer: str, *, startup: float, stall: float = 0.0,
            end: bool = True, asset: str = "a1") -> list[WatchEvent]:
    """Start, first frame, 5 s of v360, a seek 10 -> 20 (not watched), 3 s of
    v240 with a stall of ``stall`` seconds, end."""
    n = iter(range(100))

    def ev(kind: str, at: float, pos: float, rendition: str = "v360") -> WatchEvent:
        return WatchEvent(f"{sid}-{next(n)}", sid, asset, viewer, kind, T0 + at, pos,
                          rendition, 700_000)

    out = [ev("start", 0.0, 0.0), ev("first_frame", startup, 0.0),
           ev("heartbeat", startup + 5.0, 5.0),
           ev("heartbeat", startup + 5.1, 5.1), ev("seek", startup + 5.2, 20.0),
           ev("rendition_change", startup + 6.2, 21.0, "v240"),
           ev("stall_start", startup + 6.2, 21.0, "v240"),
           ev("stall_end", startup + 6.2 + stall, 21.0, "v240"),
           ev("heartbeat", startup + 8.2 + stall, 23.0, "v240")]
    if end:
        out.append(ev("end", startup + 8.3 + stall, 23.0, "v240"))
    return out


def figures(events: list[WatchEvent]) -> dict[str, object]:
    from metadata.event_log import LoggedEvent

    model = StatsModel()
    model.apply(LoggedEvent(str(i + 1), e) for i, e in enumerate(events))
    return model.stats("a1").to_json()


def test_figures_of_scripted_sessions() -> None:
    events = (session("s1", "u1", startup=0.5, stall=2.0)
              + session("s2", "u2", startup=1.5, end=False)
              + session("s3", "u1", startup=1.0))
    s = figures(events)
    assert s["sessions"] == 3 and s["viewers"] == 2
    # 5.1 s before the seek + 3 s after it, per session; the 14.9 s jump is not watched.
    assert s["watch_seconds"] == pytest.approx(3 * 8.1, abs=1e-6)
    assert s["renditions"] == pytest.approx({"v360": 3 * 5.1 + 3 * 1.0, "v240": 3 * 2.0})
    assert s["completion_rate"] == pytest.approx(2 / 3)
    assert s["startup_p50_seconds"] == pytest.approx(1.0)
    assert s["startup_p95_seconds"] == pytest.approx(percentile([0.5, 1.0, 1.5], 0.95))
    assert s["rebuffer_ratio"] == pytest.approx(2.0 / (2.0 + 3 * 8.1))   # s1 stalled 2 s
    assert s["stalls"] == 3 and s["errors"] == 0


def test_an_event_applied_twice_counts_once() -> None:
    from metadata.event_log import LoggedEvent

    events = session("s1", "u1", startup=0.5)
    model = StatsModel()
    entries = [LoggedEvent(str(i + 1), e) for i, e in enumerate(events)]
    assert model.apply(entries) == len(entries)
    assert model.apply(entries[-3:]) == 0           # a follower meeting them again
    assert model.stats("a1").watch_seconds == pytest.approx(8.1)


def test_percentile() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)


async def test_stats_survive_a_restart(make_log: MakeLog) -> None:
    first = EventIntake(make_log(name="restart"))
    await first.start()
    result = await first.record(session("s1", "u1", startup=0.5, stall=1.0)
                                + session("s2", "u2", startup=0.7))
    assert result.accepted == 20
    again = await first.record(session("s1", "u1", startup=0.5, stall=1.0))  # resent
    assert (again.accepted, again.duplicates) == (0, 10)
    before = (await first.stats("a1")).to_json()
    assert before["sessions"] == 2 and before["watch_seconds"] == pytest.approx(16.2)
    await first.close()

    second = EventIntake(make_log(name="restart"))     # a new process, same log
    await second.start()
    assert second.stats_model.stats("a1").to_json() == before
    await second.close()
