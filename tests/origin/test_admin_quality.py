"""Quality over REST: a job with ``vmaf`` set ends READY with each video
rendition's VMAF stored and shown in the asset answer (and the gRPC message); a
failure to measure fails the job with one line; a per-title job (``ladder=auto``)
shows each rung's analysis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.application import Engine
from engine.config import Settings
from engine.executor import InProcessExecutor
from engine.pipeline import Services
from metadata import open_cache, open_objects, open_store
from origin.grpc_convert import job_options, view_message
from origin.grpc_proto import assets_pb2
from tests.media import make_master, still_master
from tests.origin.conftest import MakeOrigin


def _form(master: Path, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for k, v in fields.items():
        form.add_field(k, v)
    form.add_field("file", master.read_bytes(), filename="clip.mp4", content_type="video/mp4")
    return form


async def _until_finished(client: Any, asset_id: str) -> dict[str, Any]:
    for _ in range(600):
        doc: dict[str, Any] = await (await client.get(f"/v1/assets/{asset_id}")).json()
        if doc["state"] in ("ready", "failed"):
            return doc
        await asyncio.sleep(0.1)
    raise AssertionError(f"{asset_id} still {doc['state']}")


@pytest.fixture
async def engine_origin(make_origin: MakeOrigin, tmp_path: Path) -> Any:
    # The data dir make_origin serves from: playback reads what the engine published.
    store, objects = open_store("", tmp_path), open_objects("", tmp_path)
    services = Services(store=store, objects=objects, cache=open_cache(""),
                        work_dir=tmp_path / "w")
    settings = Settings(data_dir=tmp_path, preset="ultrafast")
    executor = InProcessExecutor(settings, services, poll_seconds=0.1)
    engine = Engine(settings, services, executor)
    origin = await make_origin(application=engine)
    await executor.start()
    try:
        yield origin, engine
    finally:
        await executor.close()
        await store.close()


async def test_vmaf_is_measured_stored_and_returned(engine_origin: Any, tmp_path: Path) -> None:
    origin, engine = engine_origin
    master = make_master(tmp_path / "m.mp4", seconds=3, width=480, height=270, fps="25")
    resp = await origin.client.post("/v1/assets", data=_form(
        master, id="q", ladder="270:900,180:60", vmaf="true"))
    assert resp.status == 202, await resp.text()
    doc = await _until_finished(origin.client, "q")
    assert doc["state"] == "ready", doc["error"]
    assert doc["job"]["request"]["vmaf"] is True
    vmaf = {r["id"]: r["vmaf"] for r in doc["renditions"]}
    assert vmaf["v270"] > 80 and 0 < vmaf["v180"] < vmaf["v270"] - 10, vmaf
    assert vmaf["audio"] == 0
    # gRPC shows the same stored figures.
    msg = view_message(await engine.get("q"))
    assert {r.rendition_id: round(r.vmaf, 3) for r in msg.renditions} == vmaf
    assert job_options(assets_pb2.JobOptions(vmaf=True)) == {"vmaf": True}


async def test_a_job_that_cannot_measure_fails_in_one_line(
        engine_origin: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    origin, _ = engine_origin
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "no-ffmpeg"))
    master = make_master(tmp_path / "m.mp4", seconds=2, width=320, height=180, fps="25")
    resp = await origin.client.post("/v1/assets", data=_form(
        master, id="nq", ladder="180:300", vmaf="true"))
    assert resp.status == 202, await resp.text()
    doc = await _until_finished(origin.client, "nq")
    assert doc["state"] == "failed"
    assert doc["error"] == ("no FFmpeg with libvmaf to measure VMAF: "
                            f"{tmp_path / 'no-ffmpeg'} is not an executable file")
    assert doc["renditions"] == []
    bad = await origin.client.post("/v1/assets", data=_form(master, id="b", vmaf="maybe"))
    assert bad.status == 400
    assert "vmaf must be true or false" in await bad.text()


async def _ready_auto(client: Any, master: Path, asset_id: str) -> dict[str, Any]:
    """The asset document of ``master`` ingested over REST with ``ladder=auto``,
    once its job finished ready."""
    resp = await client.post("/v1/assets", data=_form(master, id=asset_id, ladder="auto"))
    assert resp.status == 202, await resp.text()
    doc: dict[str, Any] = await _until_finished(client, asset_id)
    assert doc["state"] == "ready", doc["error"]
    return doc


async def test_a_per_title_job_shows_why_each_rung_is_what_it_is(
        engine_origin: Any, tmp_path: Path) -> None:
    origin, engine = engine_origin
    master = still_master(tmp_path / "still.mp4", width=640, height=360, seconds=3)
    doc = await _ready_auto(origin.client, master, "pt")
    assert doc["job"]["request"]["ladder"] == "auto"
    (video,) = [r for r in doc["renditions"] if r["kind"] == "video"]
    analysis = video["analysis"]
    assert analysis["mode"] == "auto" and analysis["fixed_kbps"] == 800
    assert analysis["size"] == 360 and set(analysis["hull"]) == {"360"}
    assert [(c["size"], c["crf"]) for c in analysis["candidates"]] == \
        [(360, 13), (360, 19), (360, 25), (360, 31)]
    assert all(0 < c["vmaf"] <= 100 and c["kbps"] > 0 for c in analysis["candidates"])
    assert analysis["choice"] == "crf" and video["avg_bitrate"] < 800_000
    msg = view_message(await engine.get("pt"))
    assert json.loads(next(r.analysis_json for r in msg.renditions
                           if r.rendition_id == video["id"])) == analysis
    # a fixed-ladder job shows no analysis
    resp = await origin.client.post("/v1/assets", data=_form(master, id="fx", ladder="fixed"))
    assert resp.status == 202, await resp.text()
    doc = await _until_finished(origin.client, "fx")
    assert doc["state"] == "ready", doc["error"]
    assert [(r["height"], r["bitrate"], r["analysis"]) for r in doc["renditions"]
            if r["kind"] == "video"] == [(360, 800_000, None)]


async def test_codecs_over_rest_reach_the_job_and_bad_ones_are_400(engine_origin: Any,
                                                                  tmp_path: Path) -> None:
    origin, _ = engine_origin
    master = make_master(tmp_path / "m.mp4", seconds=2, width=320, height=180, fps="25")
    resp = await origin.client.post("/v1/assets", data=_form(master, id="c9", codecs="h264,av9"))
    assert resp.status == 400 and "av9" in await resp.text()
    resp = await origin.client.post("/v1/assets", data=_form(master, id="c1", codecs="h264,av1",
                                                             ladder="180:300"))
    assert resp.status == 202, await resp.text()
    doc = await _until_finished(origin.client, "c1")
    assert doc["state"] == "ready", doc["error"]
    assert doc["job"]["request"]["codecs"] == ["h264", "av1"]
    videos = {r["id"]: r["codec_string"] for r in doc["renditions"] if r["kind"] == "video"}
    assert set(videos) == {"v180", "v180_av1"}, videos
    assert videos["v180"].startswith("avc1.") and videos["v180_av1"].startswith("av01.")
    # gRPC's JobOptions carries the same list.
    assert job_options(assets_pb2.JobOptions(codecs=["h264", "av1"])) == {
        "codecs": ["h264", "av1"]}


async def test_two_per_title_rungs_of_one_size_are_two_variants(
        engine_origin: Any, tmp_path: Path) -> None:
    """A still: the hull keeps 480p down the ladder, so the asset has two 480p
    rungs. Both manifests offer them as two variants of one size at their own
    bitrates (parsed by m3u8 and mpegdash), and each one's media is served."""
    import m3u8
    from mpegdash.parser import MPEGDASHParser

    origin, _ = engine_origin
    master = still_master(tmp_path / "still480.mp4", width=854, height=480, seconds=3)
    doc = await _ready_auto(origin.client, master, "pt2")
    video = [r for r in doc["renditions"] if r["kind"] == "video"]
    assert [r["height"] for r in video] == [480, 480], video
    top, low = (r["id"] for r in video)
    assert top == "v480" and low == f"v480_{video[1]['bitrate'] // 1000}k"
    hls = await origin.client.get("/vod/pt2/master.m3u8")
    assert hls.status == 200
    variants = {p.uri.split("/")[0]: p.stream_info for p in m3u8.loads(await hls.text()).playlists}
    assert set(variants) == {top, low}
    assert variants[top].resolution == variants[low].resolution == (854, 480)
    assert variants[top].bandwidth > variants[low].bandwidth
    mpd = MPEGDASHParser.parse(await (await origin.client.get("/vod/pt2/manifest.mpd")).text())
    reps = {r.id: r for a in mpd.periods[0].adaptation_sets for r in a.representations}
    assert {top, low} <= set(reps) and reps[top].bandwidth > reps[low].bandwidth
    for rid in (top, low):
        for path in ("media.m3u8", "init.mp4", "1.m4s"):
            got = await origin.client.get(f"/vod/pt2/{rid}/{path}")
            assert got.status == 200, (rid, path, got.status)
