"""The ingest job: probe -> plan -> transcode -> package -> publish.

Every state change is written to the metadata store. Media is produced in a private
work directory, uploaded, and only then made visible by one atomic `publish()`; a
job that fails or is killed leaves no served asset behind (the origin serves READY
assets only, and a failed job removes what it uploaded).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import native
from engine.copy_run import CopyRun
from engine.job_spec import IngestError, IngestOptions, check_asset_id, check_options, gop_for
from engine.ladder import plan_ladder
from engine.workers import choose_encoder
from metadata.cache import Cache, invalidate_asset
from metadata.models import Asset, JobState, Rendition, Segment, media_prefix
from metadata.objects import ObjectStore
from metadata.store import MetadataStore
from packager.bitrates import average_bitrate, peak_bitrate
from packager.codecs import codec_string

__all__ = ["IngestError", "IngestOptions", "ProgressFn", "Services", "ingest", "to_models"]

log = logging.getLogger(__name__)

# (stage, fraction of that stage in 0..1); called from worker threads too.
ProgressFn = Callable[[JobState, float], None]


@dataclass
class Services:
    store: MetadataStore
    objects: ObjectStore
    cache: Cache
    work_dir: Path


class _StateWriter:
    """Throttled progress writes from worker threads into the async store."""

    def __init__(self, loop: asyncio.AbstractEventLoop, store: MetadataStore, asset_id: str,
                 state: JobState, on_progress: ProgressFn | None) -> None:
        self._loop, self._store, self._asset_id = loop, store, asset_id
        self._state, self._on_progress = state, on_progress
        self._last = 0.0

    def __call__(self, fraction: float) -> None:
        if self._on_progress is not None:
            self._on_progress(self._state, fraction)
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            asyncio.run_coroutine_threadsafe(
                self._store.set_state(self._asset_id, self._state, progress=fraction),
                self._loop,
            )


async def _native_result(fut: asyncio.Future[native.PipelineResult],
                         cancel: Callable[[], None]) -> native.PipelineResult:
    """The result of native work running in a thread; if this task is cancelled,
    cancel the native run (where it can be) and wait for it to stop, so no thread
    outlives the job."""
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        cancel()
        try:
            await fut
        except Exception:
            pass
        raise


def _frame_rate(track: native.TrackInfo) -> str:
    if track.frame_rate_num <= 0:
        return ""
    if track.frame_rate_den == 1:
        return str(track.frame_rate_num)
    return f"{track.frame_rate_num}/{track.frame_rate_den}"


def to_models(
    asset_id: str, result: native.PipelineResult
) -> tuple[list[Rendition], list[Segment]]:
    """Neutral native results -> metadata models (codec strings from the real config)."""
    renditions: list[Rendition] = []
    segments: list[Segment] = []
    for r in result.renditions:
        t = r.track
        is_video = t.kind == native.TrackKind.VIDEO
        own = [Segment(asset_id=asset_id, rendition_id=r.id, number=s.number, start=s.start,
                       duration=s.duration, size=s.size, iframe_size=s.iframe_size)
               for s in r.segments]
        # The same measure the manifests state (packager.bitrates), stored once.
        avg = average_bitrate(own, t.timescale)
        renditions.append(Rendition(
            asset_id=asset_id, id=r.id, kind="video" if is_video else "audio", codec=t.codec,
            codec_string=codec_string(t.codec, t.extradata), timescale=t.timescale,
            bitrate=t.bitrate or avg, avg_bitrate=avg,
            peak_bitrate=peak_bitrate(own, t.timescale),
            width=t.width, height=t.height, sar=f"{t.sar_num}:{t.sar_den}",
            frame_rate=_frame_rate(t) if is_video else "",
            sample_rate=t.sample_rate, channels=t.channels, language=t.language,
        ))
        segments.extend(own)
    return renditions, segments


async def ingest(
    services: Services,
    asset_id: str,
    master: Path,
    options: IngestOptions,
    on_progress: ProgressFn | None = None,
    source_name: str | None = None,
    started: CopyRun | None = None,
) -> Asset:
    """Run the whole pipeline for one master. Returns the READY asset.

    Raises IngestError (bad input: the job is FAILED with the reason) or other
    exceptions (infrastructure); in every failure nothing of the asset is served.

    A package-only job (options.copy) starts its native copy first and does its
    bookkeeping while the copy runs; `started` hands over a copy the caller has
    already started (engine.copy_run; the CLI does, before loading this module).
    """
    if started is not None and not options.copy:
        raise ValueError("a started copy needs options.copy")
    run = started
    try:
        check_asset_id(asset_id)
        check_options(options)
        if options.copy and run is None:
            run = CopyRun(master, services.work_dir, asset_id, options.segment_seconds)
        return await _ingest(services, asset_id, master, options, on_progress, source_name, run)
    finally:
        if run is not None:
            # Also when the job failed before it needed the copy: it still owns it.
            await run.close()


async def _ingest(
    services: Services,
    asset_id: str,
    master: Path,
    options: IngestOptions,
    on_progress: ProgressFn | None,
    source_name: str | None,
    run: CopyRun | None,
) -> Asset:
    store, objects = services.store, services.objects
    existing = await store.get_asset(asset_id)
    if existing is not None and existing.state == JobState.READY:
        raise IngestError(f"asset {asset_id} already exists; delete it or choose another --id")
    asset = Asset(id=asset_id, source_name=source_name or master.name)
    await store.put_asset(asset)
    loop = asyncio.get_running_loop()
    work = run.work if run is not None else services.work_dir / f"{asset_id}-{uuid.uuid4().hex[:8]}"
    out_dir = work / "out"
    uploaded = False

    def report(state: JobState, fraction: float) -> None:
        if on_progress is not None:
            on_progress(state, fraction)

    try:
        await store.set_state(asset_id, JobState.PROBING, progress=0.0)
        report(JobState.PROBING, 0.0)
        if not master.is_file():
            raise IngestError(f"{master}: no such file")
        if master.stat().st_size == 0:
            raise IngestError(f"{master}: empty file, not a media file")

        if run is not None:
            # The copy reads the master itself and names what it cannot package;
            # a separate probe would only open and parse it once more.
            report(JobState.PROBING, 1.0)
            await store.set_state(asset_id, JobState.PACKAGING, progress=0.0)
            report(JobState.PACKAGING, 0.0)
            # A copy cannot be interrupted: on cancel it is waited for.
            result = await _native_result(asyncio.wrap_future(run.future), lambda: None)
            if not any(r.track.kind == native.TrackKind.VIDEO for r in result.renditions):
                raise IngestError(f"{master}: no video stream")
        else:
            try:
                info = await asyncio.to_thread(native.probe, master)
            except native.NativeError as exc:
                raise IngestError(f"{master}: not a playable media file ({exc})") from exc
            if not any(s.kind == "video" for s in info.streams):
                raise IngestError(f"{master}: no video stream")
            report(JobState.PROBING, 1.0)
            work.mkdir(parents=True, exist_ok=True)
            try:
                rungs = plan_ladder(info, options.ladder)
                encoder = choose_encoder(options.encoder)
            except ValueError as exc:
                raise IngestError(str(exc)) from exc
            rungs = [native.Rung(**{**r.__dict__, "encoder": encoder}) for r in rungs]
            await store.set_state(asset_id, JobState.TRANSCODING, progress=0.0)
            writer = _StateWriter(loop, store, asset_id, JobState.TRANSCODING, on_progress)
            transcoder = native.Transcoder(
                master, out_dir, rungs, segment_seconds=options.segment_seconds,
                gop_seconds=gop_for(options.segment_seconds, options.gop_seconds),
                preset=options.preset)
            result = await _native_result(
                loop.run_in_executor(None, lambda: transcoder.run(writer)), transcoder.cancel)
            await store.set_state(asset_id, JobState.PACKAGING, progress=0.0)
            report(JobState.PACKAGING, 0.0)

        renditions, segments = to_models(asset_id, result)
        if not segments:
            raise IngestError(f"{master}: produced no segments")
        report(JobState.PACKAGING, 1.0)

        await store.set_state(asset_id, JobState.PUBLISHING, progress=0.0)
        uploaded = True
        # The work directory holds exactly the renditions' init.mp4 and N.m4s,
        # laid out as media_key() names them.
        await objects.adopt_tree(media_prefix(asset_id), out_dir,
                                 lambda f: report(JobState.PUBLISHING, f))
        asset.duration = result.duration_seconds
        asset.state = JobState.READY
        asset.progress = 1.0
        await store.publish(asset, renditions, segments)
        await invalidate_asset(services.cache, asset_id)
        report(JobState.READY, 1.0)
        published = await store.get_asset(asset_id)
        return published or asset
    except BaseException as exc:
        reason = _reason(exc)
        try:
            if uploaded:
                await objects.delete_prefix(media_prefix(asset_id) + "/")
            await store.set_state(asset_id, JobState.FAILED, error=reason)
        except Exception:  # the store itself may be what failed
            log.exception("could not record failure of %s", asset_id)
        # Bad media (InvalidDataError is a ValueError) or a setting the core refuses
        # (an unknown preset, say): the user's input, reported in one line.
        if isinstance(exc, ValueError | native.NotFoundError) and not isinstance(
                exc, IngestError):
            raise IngestError(f"{master}: {exc}") from exc
        raise
    finally:
        if run is None:  # a copy's work directory goes with the copy (ingest())
            shutil.rmtree(work, ignore_errors=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    return str(exc) or type(exc).__name__

