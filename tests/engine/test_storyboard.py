"""Posters and storyboards, from the decode to the player's request.

The native core takes one thumbnail per interval and the best-scored picture as
the poster from the decode the ladder already does (a black opening is never the
poster; a phone clip's stills are upright; a span takes its own marks); an ingest
publishes the sprite sheets and the poster beside the media, and the origin
serves ``poster.jpg``, ``storyboard.vtt`` (cues covering the whole title, each
inside its sheet) and the DASH image AdaptationSet, behind the playback token
when one is required. A package-only ingest, which decodes nothing, takes them
from the master's keyframes."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

import native
from cdn.tokens import sign_for
from engine import storyboard
from metadata import open_cache, open_objects, open_store
from origin.admin import asset_json
from origin.app import OriginDeps, create_app
from tests.conftest import make_env
from tests.media import ffmpeg, make_master, make_rotated_master

SIGNING = b"storyboard-test-signing-key"
CUE = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})")
TARGET = re.compile(r"storyboard/(\d+)\.jpg(?:\?[^#]*)?#xywh=(\d+),(\d+),(\d+),(\d+)")


def dark_opening(path: Path, *, black: float = 2.0, rest: float = 6.0) -> Path:
    """``black`` seconds of black, then a test pattern: the poster must not be black."""
    ffmpeg("-f", "lavfi", "-i", f"color=black:size=640x360:rate=25:duration={black}",
           "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={rest}",
           "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={black + rest}",
           "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-map", "2:a",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "50",
           "-c:a", "aac", str(path))
    return path


def luma(pixels: np.ndarray) -> float:
    return float((pixels[..., 0] * 0.299 + pixels[..., 1] * 0.587
                  + pixels[..., 2] * 0.114).mean())


def rgb(picture: native.Picture) -> np.ndarray:
    return np.frombuffer(picture.rgb, np.uint8).reshape(picture.height, picture.width, 3)


def decode_jpeg(data: bytes, tmp: Path) -> np.ndarray:
    path = tmp / "still.jpg"
    path.write_bytes(data)
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


# -- the native tap -------------------------------------------------------------------


def test_stills_come_from_the_transcode_and_the_poster_is_not_black(tmp_path: Path) -> None:
    master = dark_opening(tmp_path / "m.mp4")
    result = native.Transcoder(master, tmp_path / "out", [native.Rung("v180", 180, 300_000)],
                               preset="ultrafast", thumbnail_interval=2.0).run()
    times = [round(p.time, 2) for p in result.thumbnails]
    assert times == [0.0, 2.0, 4.0, 6.0]
    assert {(p.width, p.height) for p in result.thumbnails} == {(160, 90)}
    first = rgb(result.thumbnails[0])
    assert luma(first) < 20 and result.thumbnails[0].score < 1.0
    poster = result.poster
    assert (poster.width, poster.height) == (640, 360)  # the source's size: never upscaled
    assert poster.time >= 2.0 and luma(rgb(poster)) > 60


@pytest.mark.parametrize("size", [(426, 240), (202, 114), (1366, 768)])
def test_stills_of_odd_sizes(tmp_path: Path, size: tuple[int, int]) -> None:
    """Rows of 3 x width bytes that are no multiple of a SIMD store: the scaler's
    overrun of a packed row once corrupted the heap (426x240 aborted the process)."""
    width, height = size
    master = make_master(tmp_path / "m.mp4", seconds=2, width=width, height=height,
                         fps="25", audio=False)
    result = native.Transcoder(master, tmp_path / "out", [native.Rung("v112", 112, 200_000)],
                               preset="ultrafast", thumbnail_interval=1.0).run()
    assert [(p.width, p.height) for p in result.thumbnails] == [(160, 90)] * 2
    long_side = min(1280, width)
    expected = (long_side, round(long_side * height / width / 2) * 2)
    assert (result.poster.width, result.poster.height) == expected
    assert len(result.poster.rgb) == result.poster.width * result.poster.height * 3


def test_no_stills_unless_asked(tmp_path: Path) -> None:
    master = make_master(tmp_path / "m.mp4", seconds=2, width=320, height=180)
    result = native.Transcoder(master, tmp_path / "out", [native.Rung("v180", 180, 300_000)],
                               preset="ultrafast").run()
    assert list(result.thumbnails) == [] and result.poster.width == 0


def test_stills_of_a_phone_clip_are_upright(tmp_path: Path) -> None:
    master = make_rotated_master(tmp_path / "rot.mp4", seconds=2.0, rotate=90)
    result = native.Transcoder(master, tmp_path / "out", [native.Rung("v180", 180, 300_000)],
                               preset="ultrafast", thumbnail_interval=2.0).run()
    assert [(p.width, p.height) for p in result.thumbnails] == [(90, 160)]
    assert result.poster.height > result.poster.width


def test_a_span_takes_the_marks_inside_it(tmp_path: Path) -> None:
    master = make_master(tmp_path / "m.mp4", seconds=12, width=320, height=180, fps="25")
    result = native.Transcoder(master, tmp_path / "out", [native.Rung("v180", 180, 300_000)],
                               preset="ultrafast", thumbnail_interval=2.0, start_seconds=4.0,
                               end_seconds=8.0, audio=False).run()
    assert [round(p.time, 2) for p in result.thumbnails] == [4.0, 6.0]


# -- published and served ----------------------------------------------------------------


@dataclass
class Published:
    data: Path
    tmp: Path
    summaries: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    root = tmp_path_factory.mktemp("storyboard")
    master = dark_opening(root / "m.mp4", black=2.0, rest=9.0)
    env = make_env(root / "data", CDLC_PRESET="ultrafast")
    summaries = {}
    for args in (("--id", "sb", "--ladder", "360:600"), ("--id", "sbcopy", "--copy")):
        proc = env.run("ingest", str(master), *args, "--json")
        assert proc.returncode == 0, proc.stderr
        summaries[args[1]] = json.loads(proc.stdout)
    yield Published(root / "data", root, summaries)


def _client_app(published: Published, signing_key: bytes | None) -> Any:
    deps = OriginDeps(store=open_store("", published.data),
                      objects=open_objects("", published.data), cache=open_cache(""),
                      signing_key=signing_key, close_backends=True)
    return create_app(deps)


@pytest.fixture
async def client(published: Published, aiohttp_client: Any) -> TestClient[Any, Any]:
    return await aiohttp_client(_client_app(published, None))  # type: ignore[no-any-return]


@pytest.fixture
async def token_client(published: Published, aiohttp_client: Any) -> TestClient[Any, Any]:
    return await aiohttp_client(_client_app(published, SIGNING))  # type: ignore[no-any-return]


def _ms(groups: tuple[str, ...]) -> int:
    h, m, s, ms = (int(g) for g in groups)
    return ((h * 60 + m) * 60 + s) * 1000 + ms


def _cues(text: str) -> list[tuple[int, int, str]]:
    lines = text.split("\n")
    assert lines[0] == "WEBVTT"
    return [(_ms(m.groups()[:4]), _ms(m.groups()[4:]), lines[i + 1])
            for i, line in enumerate(lines) if (m := CUE.fullmatch(line))]


@pytest.mark.parametrize("asset", ["sb", "sbcopy"])
async def test_storyboard_covers_the_title_and_points_inside_its_sheets(
        client: TestClient[Any, Any], published: Published, asset: str) -> None:
    doc = published.summaries[asset]
    board = next(r for r in doc["renditions"] if r["kind"] == "image")
    assert board["id"] == "storyboard" and board["tiles"] == "5x5" and board["segments"] == 1
    resp = await client.get(f"/vod/{asset}/storyboard.vtt")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/vtt")
    cues = _cues(await resp.text())
    assert cues[0][0] == 0 and abs(cues[-1][1] - doc["duration"] * 1000) <= 50
    for (_, end, _), (start, _, _) in itertools.pairwise(cues):
        assert end == start
    sheets: dict[int, np.ndarray] = {}
    for _, _, target in cues:
        m = TARGET.fullmatch(target)
        assert m is not None, target
        number, x, y, w, h = (int(g) for g in m.groups())
        if number not in sheets:
            sheet = await client.get(f"/vod/{asset}/storyboard/{number}.jpg")
            assert sheet.status == 200 and sheet.headers["Content-Type"] == "image/jpeg"
            sheets[number] = decode_jpeg(await sheet.read(), published.tmp)
        height, width = sheets[number].shape[:2]
        assert (width, height) == (board["width"], board["height"])
        assert x + w <= width and y + h <= height and (w, h) == (160, 90)
    # The first tile shows the black opening, a later one the picture.
    first, later = (TARGET.fullmatch(cues[i][2]) for i in (0, 3))
    assert first is not None and later is not None
    x, y, w, h = (int(g) for g in first.groups()[1:])
    assert luma(sheets[1][y:y + h, x:x + w]) < 25
    x, y, w, h = (int(g) for g in later.groups()[1:])
    assert luma(sheets[1][y:y + h, x:x + w]) > 60
    poster = await client.get(f"/vod/{asset}/poster.jpg")
    assert poster.status == 200 and poster.headers["Content-Type"] == "image/jpeg"
    pixels = decode_jpeg(await poster.read(), published.tmp)
    assert pixels.shape[:2] == (360, 640) and luma(pixels) > 60


async def test_mpd_lists_the_sheets_as_thumbnail_tiles(client: TestClient[Any, Any]) -> None:
    mpd = ET.fromstring(await (await client.get("/vod/sb/manifest.mpd")).text())
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    (aset,) = [a for a in mpd.iter(f"{{{ns['d']}}}AdaptationSet")
               if a.get("contentType") == "image"]
    rep = aset.find("d:Representation", ns)
    assert rep is not None and rep.get("id") == "storyboard"
    tmpl = rep.find("d:SegmentTemplate", ns)
    assert tmpl is not None
    media = tmpl.get("media", "").replace("$RepresentationID$", "storyboard")
    assert (await client.get(f"/vod/sb/{media.replace('$Number$', '1')}")).status == 200


async def test_storyboard_files_are_only_what_was_published(
        client: TestClient[Any, Any]) -> None:
    for path in ("/vod/sb/storyboard/2.jpg",      # one sheet only (11 s at 2 s a tile)
                 "/vod/sb/storyboard/0.jpg",
                 "/vod/sb/storyboard/1.m4s",      # fMP4 of an image rendition
                 "/vod/sb/storyboard/init.mp4",
                 "/vod/sb/v360/1.jpg",            # JPEG of a video rendition
                 "/vod/sb/v360/poster.jpg",
                 "/vod/sb/storyboard/media.m3u8",
                 "/vod/nosuch/poster.jpg",
                 "/vod/nosuch/storyboard.vtt"):
        assert (await client.get(path)).status == 404, path
    assert (await client.get("/vod/..%2Fetc/poster.jpg")).status in (400, 404)
    head = await client.head("/vod/sb/poster.jpg")
    assert head.status == 200 and int(head.headers["Content-Length"]) > 1000
    ranged = await client.get("/vod/sb/storyboard/1.jpg", headers={"Range": "bytes=0-1"})
    assert ranged.status == 206 and await ranged.read() == b"\xff\xd8"  # a JPEG's SOI


async def test_the_asset_answer_names_the_poster_and_the_storyboard(
        published: Published) -> None:
    store = open_store("", published.data)
    try:
        asset = await store.get_asset("sb")
        assert asset is not None
        doc = asset_json(asset, await store.get_renditions("sb"))
    finally:
        await store.close()
    assert doc["playback"]["poster"] == "/vod/sb/poster.jpg"
    assert doc["playback"]["storyboard"] == "/vod/sb/storyboard.vtt"
    (board,) = [r for r in doc["renditions"] if r["kind"] == "image"]
    assert (board["tiles"], board["width"], board["height"]) == ("5x5", 800, 450)


async def test_tokens_guard_the_poster_and_the_sheets(
        token_client: TestClient[Any, Any]) -> None:
    for path in ("/vod/sb/poster.jpg", "/vod/sb/storyboard.vtt", "/vod/sb/storyboard/1.jpg"):
        assert (await token_client.get(path)).status == 403, path
    token = sign_for(SIGNING, "sb", 60)
    assert (await token_client.get(f"/vod/sb/poster.jpg?token={token}")).status == 200
    vtt = await (await token_client.get(f"/vod/sb/storyboard.vtt?token={token}")).text()
    target = _cues(vtt)[0][2]
    assert f"?token={token}#xywh=" in target
    sheet = await token_client.get(f"/vod/sb/{target.split('#')[0]}")
    assert sheet.status == 200
    other = sign_for(SIGNING, "sbcopy", 60)
    assert (await token_client.get(f"/vod/sb/poster.jpg?token={other}")).status == 403


async def test_a_copy_whose_stills_cannot_be_read_says_so_in_one_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The keyframe read beside a copy fails on a file PyAV cannot open: the job
    goes on without a storyboard, and one warning line names the master."""
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4096)
    task = asyncio.ensure_future(asyncio.to_thread(storyboard.keyframe_stills, junk))
    with caplog.at_level(logging.WARNING, logger="cdlc.warnings"):
        assert await storyboard.settle(task, junk, "junk.mp4") is None
    (record,) = [r for r in caplog.records if r.name == "cdlc.warnings"]
    message = record.getMessage()
    assert message.startswith("junk.mp4: no storyboard or poster (") and "\n" not in message
    assert str(tmp_path) not in message  # a server path is nobody's business


def test_write_storyboard_without_stills_makes_nothing(tmp_path: Path) -> None:
    assert storyboard.write_storyboard(tmp_path, "a", None, 10.0) is None
    empty = storyboard.Stills([], None, 2.0)
    assert storyboard.write_storyboard(tmp_path, "a", empty, 10.0) is None
    assert not (tmp_path / "storyboard").exists()
