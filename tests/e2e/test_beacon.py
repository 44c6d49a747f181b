"""The beacon in real players: hls.js, dash.js and Shaka Player each play an asset
through the nginx edge with /player/cdlc-beacon.js attached (loaded from the
events origin, as a site would), with a seek and one forced stall: the video
segments from the one the HLS playlist places at 8 s are held back by
Playwright's route interception until the beacon has reported the stall, then
2 s more. (hls.js stalls at ~7.9 s; dash.js and Shaka, on the MPD, play on to
~10.9 s on the same held files: not a timeline offset, as the checks below
show, but Chromium's renderer, which keeps playing the audio for up to 3 s with
the picture frozen when only video underflows (RendererImpl's
kDefaultVideoUnderflowThresholdMs), and dash.js and Shaka buffer audio ahead of
video where hls.js keeps them in step.)
All three report positions on one timeline: the first buffered media starts at
0 s in each (segment 1 has tfdt 0, the MPD no presentationTimeOffset) and the
seek is reported at the position it went to.
Then the asset's stats show one session, watch seconds within 10 % of what the
<video> element itself played (its ``played`` ranges), a startup time > 0, the
stall, the renditions played; and examples/social_feed.py, subscribed over gRPC
before the plays, printed the start.

Each play gets its own asset (a hard-linked clone of the e2e asset) and viewer, so
per-asset stats are per-play stats. The events side (POST /v1/events, the stats,
EventService) runs in a thread of this process over a SQLite log."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import grpc
import grpc.aio
import pytest
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

from cdn import tokens
from cdn.edge import free_port
from metadata.event_log_sqlite import SQLiteEventLog
from origin.events import EventIntake, add_event_routes
from origin.grpc_events import EventServicer
from origin.grpc_proto import events_pb2, events_pb2_grpc
from tests.e2e.asset import clone_asset
from tests.e2e.conftest import KEY, Stack
from tests.e2e.servers import ROOT
from tests.e2e.test_players import state, wait

T = TypeVar("T")

PLAYERS = [
    pytest.param("hlsjs", "master.m3u8", id="hlsjs"),
    pytest.param("dashjs", "manifest.mpd", id="dashjs"),
    pytest.param("shaka", "manifest.mpd", id="shaka"),
]
STALL_AT = 8.0          # media time whose segments are held back
STALL_SECONDS = 2.0
SEEK_FROM, SEEK_TO = 2.5, 5.0
PLAY_UNTIL = 10.0


@dataclass
class Events:
    url: str
    grpc_target: str
    feed_out: Path
    feed: subprocess.Popen[bytes]
    db: Path

    def session_events(self, asset: str) -> list[tuple[str, float, float, str]]:
        """(type, position, seconds since the first, rendition) of the asset's events."""
        with sqlite3.connect(self.db) as conn:
            rows = [json.loads(b) for (b,) in conn.execute(
                "SELECT body FROM watch_events ORDER BY seq")]
        conn.close()
        mine = [r for r in rows if r["asset_id"] == asset]
        t0 = mine[0]["time"] if mine else 0.0
        return [(r["type"], round(r["position_seconds"], 2), round(r["time"] - t0, 2),
                 r["rendition_id"]) for r in mine]

    def feed_lines(self) -> list[str]:
        return self.feed_out.read_text().splitlines()

    def stats(self, asset: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/v1/assets/{asset}/stats", timeout=5) as r:
            doc: dict[str, Any] = json.load(r)
            return doc


def _serve(tmp: Path, ready: threading.Event, stop: threading.Event,
           ports: dict[str, int]) -> None:
    async def main() -> None:
        intake = EventIntake(SQLiteEventLog(tmp / "metadata.db"), signing_key=KEY)
        app = web.Application()
        add_event_routes(app, intake)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", ports["http"])
        await site.start()
        server = grpc.aio.server()
        events_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(intake), server)
        server.add_insecure_port(f"127.0.0.1:{ports['grpc']}")
        await server.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await server.stop(0)
        await runner.cleanup()

    asyncio.run(main())


def _probe(target: str, asset: str) -> None:
    """One start event over gRPC (the sync client: Playwright's sync API holds this
    thread's asyncio loop)."""
    ts = Timestamp()
    ts.GetCurrentTime()
    with grpc.insecure_channel(target) as ch:
        stub = events_pb2_grpc.EventServiceStub(ch)
        stub.RecordWatchEvents(iter([events_pb2.RecordWatchEventsRequest(
            event=events_pb2.WatchEvent(
                event_id=f"probe-{time.time()}", session_id="probe", asset_id=asset,
                viewer_id="probe", type=events_pb2.WATCH_EVENT_TYPE_START, time=ts))]),
            timeout=5)


def _in_thread(fn: Callable[[], T]) -> T:
    """fn() on a thread of its own (it may start an asyncio loop; this thread's
    is Playwright's)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Events]:
    tmp = tmp_path_factory.mktemp("beacon-events")
    ports = {"http": free_port(), "grpc": free_port()}
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=_serve, args=(tmp, ready, stop, ports), daemon=True)
    thread.start()
    assert ready.wait(15), "the events server did not start"
    target = f"127.0.0.1:{ports['grpc']}"
    out = tmp / "feed.out"
    with out.open("wb") as stdout, (tmp / "feed.err").open("wb") as stderr:
        feed = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "social_feed.py")], cwd=ROOT,
            env={"CDLC_GRPC": target, "PATH": "/usr/bin:/bin"}, stdout=stdout, stderr=stderr)
    ev = Events(f"http://127.0.0.1:{ports['http']}", target, out, feed, tmp / "metadata.db")
    try:
        # The feed is subscribed once it has printed a probe's start.
        deadline = time.monotonic() + 20
        while not any("probe" in ln for ln in ev.feed_lines()):
            assert feed.poll() is None, (tmp / "feed.err").read_text()
            assert time.monotonic() < deadline, "the social feed never subscribed"
            _probe(target, "probe-asset")
            time.sleep(0.5)
        yield ev
    finally:
        feed.terminate()
        feed.wait(10)
        stop.set()
        thread.join(10)


def _segment_numbers_from(stack: Stack, seconds: float) -> int:
    """The number of the first video segment starting at or after ``seconds``."""
    url = (f"{stack.edge.url}/vod/{stack.asset.asset_id}/"
           f"{sorted(r for r in stack.asset.renditions if r.startswith('v'))[0]}"
           f"/media.m3u8?token={stack.token}")
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    t = 0.0
    duration = 0.0
    for line in text.splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line and not line.startswith("#"):
            m = re.search(r"(\d+)\.m4s", line)
            if m and t >= seconds - 0.05:
                return int(m.group(1))
            t += duration
    raise AssertionError(f"no segment from {seconds}s in {text}")


INIT = """(() => {
  const cfg = %s;
  const xhr = new XMLHttpRequest();             // synchronous: before the page's scripts
  xhr.open('GET', cfg.events + '/player/cdlc-beacon.js', false);
  xhr.send();
  (0, eval)(xhr.responseText);
  for (const name of ['hls', 'dashPlayer', 'shakaPlayer']) {
    let value;
    Object.defineProperty(window, name, {configurable: true, get: () => value, set: (p) => {
      value = p;
      window.__beacon = CdlcBeacon.attach(p, {endpoint: cfg.events + '/v1/events',
        token: cfg.token, assetId: cfg.asset, heartbeatSeconds: 5, flushSeconds: 1});
    }});
  }
})();"""


@pytest.mark.parametrize(("player", "manifest"), PLAYERS)
def test_beacon_reports_a_play(stack: Stack, browser_context: Any, page_origin: str,
                               events: Events, player: str, manifest: str) -> None:
    asset = f"beacon-{player}"
    viewer = f"viewer-{player}"
    _in_thread(lambda: clone_asset(stack.origin.data_dir, stack.asset.asset_id, asset,
                                   link=True))
    token = tokens.sign_for(KEY, asset, 3600, viewer=viewer)
    src = f"{stack.edge.url}/vod/{asset}/{manifest}?token={token}"
    hold_from = _segment_numbers_from(stack, STALL_AT)

    page = browser_context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.add_init_script(INIT % json.dumps({"events": events.url, "token": token,
                                            "asset": asset}))
    held: list[Any] = []
    holding = [True]
    pattern = re.compile(rf"/vod/{asset}/v\d+/(\d+)\.m4s")

    def hold(route: Any) -> None:
        m = pattern.search(route.request.url)
        if holding[0] and m and int(m.group(1)) >= hold_from:
            held.append(route)        # answered later: the player waits for it
        else:
            route.continue_()

    page.route(re.compile(r".*\.m4s(\?.*)?$"), hold)
    try:
        page.goto(f"{page_origin}/player.html?player={player}&src={quote(src, safe='')}")
        wait(page, "window.__beacon && document.getElementById('video').currentTime > 0.5",
             "playback started with the beacon", 25)
        # One timeline for HLS and DASH: the first media the player buffered
        # (segment 1, tfdt 0, no presentationTimeOffset) sits at 0 s in every
        # player, so position_seconds name the same moment whatever the player.
        start = page.evaluate("document.getElementById('video').buffered.start(0)")
        assert abs(start) < 0.1, (player, start)
        wait(page, f"document.getElementById('video').currentTime >= {SEEK_FROM}",
             "playback before the seek", 15)
        page.evaluate(f"document.getElementById('video').currentTime = {SEEK_TO}")
        wait(page, "window.__beacon.stalled", f"the stall at {STALL_AT}s", 25)
        page.wait_for_timeout(STALL_SECONDS * 1000)
        holding[0] = False
        for route in held:
            route.continue_()
        wait(page, f"!window.__beacon.stalled && "
                   f"document.getElementById('video').currentTime >= {PLAY_UNTIL}",
             "playback after the stall", 20)
        played = page.evaluate("""() => {
            const v = document.getElementById('video');
            v.pause();
            let sum = 0;
            for (let i = 0; i < v.played.length; i++) sum += v.played.end(i) - v.played.start(i);
            return sum; }""")
        s = state(page)
        assert not [e for e in s["errors"] if e["fatal"]], s["errors"]
        emitted = page.evaluate("window.__beacon.seq")     # events so far
    except BaseException:
        print(f"{player} console:\n" + "\n".join(console[-40:]))
        raise
    finally:
        # Closed as a tab is (beforeunload, pagehide): the beacon sends what is
        # left with sendBeacon; the last events reach the stats only that way.
        page.close(run_before_unload=True)

    # Every event arrives, the pagehide heartbeat too (sendBeacon).
    deadline = time.monotonic() + 10
    while len(events.session_events(asset)) < emitted + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    stats = events.stats(asset)
    names = [r.request.url.split("?")[0].rsplit("/", 2)[-2:] for r in held]
    print(f"{player}: played {played:.2f}s, held {names}, "
          f"stats {stats}\nevents {events.session_events(asset)}")
    assert len(events.session_events(asset)) == emitted + 1
    assert stats["sessions"] == 1 and stats["viewers"] == 1
    assert stats["watch_seconds"] == pytest.approx(played, rel=0.10), (played, stats)
    assert stats["startup_p50_seconds"] > 0
    assert stats["stalls"] >= 1 and stats["rebuffer_ratio"] > 0, stats
    # The stall lasted about as long as the segments were held.
    stalled = stats["rebuffer_ratio"] * (stats["watch_seconds"]) / (1 - stats["rebuffer_ratio"])
    assert 0.5 * STALL_SECONDS <= stalled <= STALL_SECONDS + 4.0, stalled
    assert stats["renditions"] and all(r.startswith("v") for r in stats["renditions"])
    assert sum(stats["renditions"].values()) == pytest.approx(stats["watch_seconds"], abs=0.01)
    assert stats["errors"] == 0
    # The seek is reported at the position it went to, on that same timeline.
    seeks = [pos for kind, pos, *_ in events.session_events(asset) if kind == "seek"]
    assert seeks and abs(seeks[0] - SEEK_TO) < 0.3, seeks

    deadline = time.monotonic() + 10
    line = f"viewer {viewer} started watching {asset}"
    while line not in events.feed_lines():
        assert time.monotonic() < deadline, events.feed_lines()
        time.sleep(0.2)
