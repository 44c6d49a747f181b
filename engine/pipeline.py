"""The ingest job: probe -> plan -> transcode -> package -> publish.

Every state change is written to the metadata store. Media is produced in a private
work directory, uploaded, and only then made visible by one atomic `publish()`; a
job that fails or is killed leaves no served asset behind (the origin serves READY
assets only, and a failed job removes what it uploaded).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import native
from engine import storyboard
from engine.copy_run import CopyRun
from engine.job_spec import IngestError, IngestOptions, work_dir_name
from engine.ladder import WARNINGS, plan_ladder, with_h264_encoder
from engine.leases import Lease
from engine.pertitle import Analysis, analyse
from engine.segment_crypto import encrypt_renditions
from engine.workers import WorkerClass, choose_encoder
from metadata.cache import Cache, invalidate_asset
from metadata.faults import is_no_space
from metadata.jobs import AUTO_LADDER, StaleJob
from metadata.keys import (
    AES_128,
    ContentKey,
    KeyProvider,
    KeyStore,
    get_or_create,
    key_store_beside,
)
from metadata.models import Asset, JobState, Rendition, Segment, media_prefix
from metadata.objects import ObjectStore
from metadata.store import MetadataStore
from packager import SDH_CHARACTERISTICS
from packager.bitrates import average_bitrate, peak_bitrate
from packager.codecs import codec_string

__all__ = ["IngestError", "IngestOptions", "ProgressFn", "Services", "ingest", "to_models"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# (stage, fraction of that stage in 0..1); called from worker threads too.
ProgressFn = Callable[[JobState, float], None]


@dataclass
class Services:
    store: MetadataStore
    objects: ObjectStore
    cache: Cache
    work_dir: Path
    lease_seconds: float = 30.0        # a job's lease; renewed every third of it
    remote_read_timeout: float = 30.0  # each ranged read of a chunk's master (seconds)
    # Content keys of encrypted jobs (metadata/keys.py); None: the key store beside
    # ``store`` (same SQLite file or Scylla keyspace), opened per job. Keys come
    # from ``key_provider`` (None: random local keys).
    keys: KeyStore | None = None
    key_provider: KeyProvider | None = None


class _StateWriter:
    """Throttled progress writes from worker threads through the job's lease."""

    def __init__(self, loop: asyncio.AbstractEventLoop, lease: Lease, state: JobState,
                 on_progress: ProgressFn | None) -> None:
        self._loop, self._lease = loop, lease
        self._state, self._on_progress = state, on_progress
        self._last = 0.0

    def __call__(self, fraction: float) -> None:
        if self._on_progress is not None:
            self._on_progress(self._state, fraction)
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            fut = asyncio.run_coroutine_threadsafe(self._lease.progress(fraction), self._loop)
            # A lost lease is seen by the watcher (lease.lost); a store hiccup only
            # costs this one progress write.
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())


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


class TrackFacts(Protocol):
    """What to_models reads of a track: a native.TrackInfo, or the record of one that
    a chunked job stitches (engine.chunks)."""

    @property
    def kind(self) -> native.TrackKind: ...
    @property
    def codec(self) -> str: ...
    @property
    def extradata(self) -> bytes: ...
    @property
    def timescale(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def sar_num(self) -> int: ...
    @property
    def sar_den(self) -> int: ...
    @property
    def rotation(self) -> int: ...
    @property
    def frame_rate_num(self) -> int: ...
    @property
    def frame_rate_den(self) -> int: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def channels(self) -> int: ...
    @property
    def bitrate(self) -> int: ...
    @property
    def language(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def presentation_offset(self) -> int: ...
    @property
    def forced(self) -> bool: ...
    @property
    def sdh(self) -> bool: ...


class SegmentFacts(Protocol):
    @property
    def number(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def duration(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def iframe_size(self) -> int: ...


class RenditionFacts(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def track(self) -> TrackFacts: ...
    @property
    def segments(self) -> Sequence[SegmentFacts]: ...


class ResultFacts(Protocol):
    """What to_models reads of a result: a native.PipelineResult, or a chunked job's
    stitched one."""

    @property
    def renditions(self) -> Sequence[RenditionFacts]: ...


def _frame_rate(track: TrackFacts) -> str:
    if track.frame_rate_num <= 0:
        return ""
    if track.frame_rate_den == 1:
        return str(track.frame_rate_num)
    return f"{track.frame_rate_num}/{track.frame_rate_den}"


_KINDS = {native.TrackKind.VIDEO: "video", native.TrackKind.AUDIO: "audio",
          native.TrackKind.TEXT: "text"}


def to_models(
    asset_id: str, result: ResultFacts,
    encryption: native.Encryption | None = None,
) -> tuple[list[Rendition], list[Segment]]:
    """Neutral native results -> metadata models (codec strings from the real config).
    With ``encryption`` (what the core encrypted with), audio and video renditions
    are marked with its scheme and KID; text renditions stay clear (WebVTT)."""
    renditions: list[Rendition] = []
    segments: list[Segment] = []
    for r in result.renditions:
        t = r.track
        is_video = t.kind == native.TrackKind.VIDEO
        protected = encryption is not None and t.kind != native.TrackKind.TEXT
        own = [Segment(asset_id=asset_id, rendition_id=r.id, number=s.number, start=s.start,
                       duration=s.duration, size=s.size, iframe_size=s.iframe_size)
               for s in r.segments]
        # The same measure the manifests state (packager.bitrates), stored once.
        avg = average_bitrate(own, t.timescale)
        # What a viewer sees (HLS RESOLUTION, DASH @width/@height): a copy of a
        # portrait phone capture keeps its pictures sideways under a quarter-turn
        # matrix, so its display size is the coded one turned.
        turned = t.rotation in (90, 270)
        width, height = (t.height, t.width) if turned else (t.width, t.height)
        sar = f"{t.sar_den}:{t.sar_num}" if turned else f"{t.sar_num}:{t.sar_den}"
        renditions.append(Rendition(
            asset_id=asset_id, id=r.id, kind=_KINDS[t.kind], codec=t.codec,
            codec_string=codec_string(t.codec, t.extradata), timescale=t.timescale,
            bitrate=t.bitrate or avg, avg_bitrate=avg,
            peak_bitrate=peak_bitrate(own, t.timescale),
            width=width, height=height, sar=sar,
            frame_rate=_frame_rate(t) if is_video else "",
            sample_rate=t.sample_rate, channels=t.channels, language=t.language,
            name=t.name, forced=t.forced,
            characteristics=SDH_CHARACTERISTICS if t.sdh else "",
            presentation_offset=t.presentation_offset,
            encryption=encryption.scheme if protected and encryption else "",
            key_id=encryption.kid.hex() if protected and encryption else "",
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
    """Run the whole pipeline for one master in this process, as a job of its own
    (engine.runner.ingest_here). Returns the READY asset.

    Raises IngestError (bad input, or the id is taken: the job is FAILED with the
    reason, or nothing was stored) or other exceptions (infrastructure); in every
    failure nothing of the asset is served.
    """
    from engine.runner import ingest_here

    return await ingest_here(services, asset_id, master, options, on_progress=on_progress,
                             source_name=source_name, started=started)


async def run_pipeline(
    services: Services,
    lease: Lease,
    master: Path,
    on_progress: ProgressFn | None = None,
    run: CopyRun | None = None,
) -> Asset:
    """Probe, plan, transcode (or copy), package and publish the leased job's asset.

    States go through the lease; the final FAILED (or a retry) is the caller's to
    write (engine.runner). On any failure the work directory and anything uploaded
    are removed first, so nothing half-done is served and scratch space is free
    again. A package-only job hands over its running copy as ``run``.
    """
    job = lease.job
    asset_id, options = job.asset_id, job.request
    objects = services.objects
    loop = asyncio.get_running_loop()
    work = run.work if run is not None else services.work_dir / work_dir_name(asset_id)
    out_dir = work / "out"
    uploaded = False
    stage = JobState.PROBING
    # How errors name the master: the user's own path for a local job (the CLI),
    # its file name for an uploaded one (a server path is nobody's business).
    shown = str(master) if job.master.startswith("/") else (options.source_name or "master")
    analysis: Analysis | None = None

    def report(state: JobState, fraction: float) -> None:
        if on_progress is not None:
            on_progress(state, fraction)

    async def enter(state: JobState) -> None:
        nonlocal stage
        stage = state
        await lease.state(state, 0.0)
        report(state, 0.0)

    try:
        await enter(JobState.PROBING)
        if not master.is_file():
            raise IngestError(f"{shown}: no such file")
        if master.stat().st_size == 0:
            raise IngestError(f"{shown}: empty file, not a media file")

        if run is not None:
            # The copy reads the master itself and names what it cannot package;
            # a separate probe would only open and parse it once more.
            report(JobState.PROBING, 1.0)
            await enter(JobState.PACKAGING)
            # The copy was started with the job's key (engine.runner); the same one
            # is read back here to mark the renditions.
            encryption = await encryption_for(services, asset_id, options)
            if run.sidecars.get("encryption") != encryption:
                # Never publish clear media marked encrypted, nor the reverse.
                raise RuntimeError(f"the copy of {asset_id} was not started with its key")
            # The copy decodes nothing: the storyboard's stills come from the
            # master's keyframes, read beside the copy.
            keyframes = asyncio.ensure_future(asyncio.to_thread(storyboard.keyframe_stills, master))
            # A copy cannot be interrupted: on cancel it is waited for.
            try:
                result = await _native_result(asyncio.wrap_future(run.future), lambda: None)
            finally:
                stills = await storyboard.settle(keyframes, master, shown)
            if not any(r.track.kind == native.TrackKind.VIDEO for r in result.renditions):
                raise IngestError(f"{shown}: no video stream")
        else:
            try:
                info = await asyncio.to_thread(native.probe, master)
            except native.NativeError as exc:
                raise IngestError(f"{shown}: not a playable media file "
                                  f"({_scrub(exc, master, shown)})") from exc
            if not any(s.kind == "video" for s in info.streams):
                raise IngestError(f"{shown}: no video stream")
            work.mkdir(parents=True, exist_ok=True)
            try:
                # The queue a job was routed to names its worker class; in-process
                # jobs ("") follow the request (auto: this machine's hardware).
                encoder = choose_encoder(job.queue or options.encoder)
            except ValueError as exc:
                raise IngestError(str(exc)) from exc
            options = ladder_on(options, encoder)
            if options.ladder == AUTO_LADDER:  # planning measures the master first
                analysis = await _until_lost(lease, analysed(
                    master, info, work / "analysis", options,
                    lambda f: report(JobState.PROBING, f), shown))
            report(JobState.PROBING, 1.0)
            try:
                rungs = with_h264_encoder(planned_rungs(info, options, analysis), encoder)
            except ValueError as exc:
                raise IngestError(str(exc)) from exc
            interval = storyboard.interval_for(info.duration)
            # The key is stored before anything is encrypted with it.
            encryption = await encryption_for(services, asset_id, options)
            await enter(JobState.TRANSCODING)
            writer = _StateWriter(loop, lease, JobState.TRANSCODING, on_progress)
            transcoder = native.Transcoder(
                master, out_dir, rungs, segment_seconds=options.segment_seconds,
                gop_seconds=options.gop, preset=options.preset, encryption=encryption,
                thumbnail_interval=interval, **sidecars_of(options))
            result = await _until_lost(lease, _native_result(
                loop.run_in_executor(None, lambda: transcoder.run(writer)), transcoder.cancel))
            await enter(JobState.PACKAGING)
            stills = storyboard.stills_of(result, interval)

        renditions, segments = to_models(asset_id, result, encryption)
        if analysis is not None:
            renditions = with_analysis(renditions, analysis.records)
        if not segments:
            raise IngestError(f"{shown}: produced no segments")
        if options.vmaf:
            # Before AES-128 encrypts whole segments; cenc is read with its key.
            renditions = await _until_lost(lease, measured(
                master, out_dir, renditions, segments, result.duration_seconds,
                encryption, lambda f: report(JobState.PACKAGING, f), shown))
        if options.encryption == AES_128:
            # HLS AES-128: the core wrote clear CMAF; the media segments are
            # encrypted here, with a key stored first, before anything is published.
            segment_key = await content_key_for(services, asset_id, options.encryption)
            renditions, segments = await asyncio.to_thread(
                encrypt_renditions, out_dir, segment_key, renditions, segments)
        # Posters and sprite sheets stay clear, as every player's preview expects.
        board = await asyncio.to_thread(storyboard.write_storyboard, out_dir, asset_id, stills,
                                        result.duration_seconds)
        if board is not None:
            renditions.append(board[0])
            segments.extend(board[1])
        report(JobState.PACKAGING, 1.0)

        await enter(JobState.PUBLISHING)
        uploaded = True
        # The work directory holds exactly the renditions' init.mp4 and N.m4s,
        # laid out as media_key() names them.
        await objects.adopt_tree(media_prefix(asset_id), out_dir,
                                 lambda f: report(JobState.PUBLISHING, f))
        asset = Asset(id=asset_id, source_name=options.source_name or master.name,
                      duration=result.duration_seconds, current_job=job.id)
        current = await services.store.get_asset(asset_id)
        if current is not None:
            asset.created_at, asset.version = current.created_at, current.version
        await lease.publish(asset, renditions, segments)
        await invalidate_asset(services.cache, asset_id)
        report(JobState.READY, 1.0)
        return asset
    except BaseException as exc:
        # Scratch first: after ENOSPC the failure can only be recorded once the
        # disk has room again.
        if run is None:
            shutil.rmtree(work, ignore_errors=True)
        if uploaded and not isinstance(exc, StaleJob):
            try:
                await objects.delete_prefix(media_prefix(asset_id) + "/")
            except Exception:
                log.exception("could not remove the partial upload of %s", asset_id)
        if is_no_space(exc):
            where = services.work_dir.parent if job.master.startswith("/") else "the data dir"
            raise NoSpaceError(f"no space left on device in {where} "
                               f"while {stage.value}") from exc
        # Bad media (InvalidDataError is a ValueError) or a setting the core refuses
        # (an unknown preset, say): the user's input, reported in one line.
        if isinstance(exc, ValueError | native.NotFoundError) and not isinstance(
                exc, IngestError):
            raise IngestError(f"{shown}: {_scrub(exc, master, shown)}") from exc
        raise
    finally:
        if run is None:  # a copy's work directory goes with the copy (runner)
            shutil.rmtree(work, ignore_errors=True)


def ladder_on(options: IngestOptions, encoder: str) -> IngestOptions:
    """``options`` for a run on ``encoder``: the auto *default* steps aside for NVENC
    (the analysis measures x264), however the job came to it (encoder gpu, a gpu
    queue, or auto on a machine with NVENC). An auto the caller asked for stays."""
    if options.ladder == AUTO_LADDER and options.ladder_default and \
            encoder != WorkerClass.CPU.encoder:
        return replace(options, ladder=None)
    return options


def planned_rungs(info: native.MediaInfo, options: IngestOptions,
                  analysis: Analysis | None) -> list[native.Rung]:
    """The rungs to encode: the analysis's, else the ladder the request names (the
    fixed one for an auto that could not measure the master); ValueError."""
    if analysis is not None:
        return analysis.rungs
    spec = None if options.ladder == AUTO_LADDER else options.ladder
    return plan_ladder(info, spec, options.codecs)


async def analysed(master: Path, info: native.MediaInfo, work: Path, request: IngestOptions,
                   progress: Callable[[float], None] | None = None,
                   shown: str | None = None) -> Analysis | None:
    """The per-title ladder of the master (engine.pertitle), measured in a worker
    thread; None (the fixed ladder, said in a warning) for a master too short or
    too small to measure; any other failure to measure is the job's IngestError,
    naming the master as ``shown``."""
    from engine.pertitle import Unmeasurable
    from engine.vmaf import QualityError

    # Spans are planned over the video stream's own length: a container's stated
    # duration may be far longer (a patched or broken mvhd), and spans past the
    # pictures refused the whole job.
    video = next((s for s in info.streams if s.kind == "video" and s.duration > 0), None)
    duration = min(info.duration, video.duration) if video is not None else info.duration
    try:
        return await asyncio.to_thread(analyse, master, info, duration or info.duration, work,
                                       gop_seconds=request.gop, preset=request.preset,
                                       progress=progress)
    except Unmeasurable as exc:
        text = str(exc) if shown is None else str(exc).replace(str(master), shown)
        WARNINGS.warning("ladder: auto cannot measure this master (%s); the fixed ladder",
                         text)
        return None
    except QualityError as exc:
        text = str(exc) if shown is None else str(exc).replace(str(master), shown)
        raise IngestError(text) from exc


def with_analysis(renditions: list[Rendition],
                  records: dict[str, dict[str, Any]]) -> list[Rendition]:
    """The renditions with the per-title analysis of their rung (JSON) attached."""
    return [replace(r, analysis=json.dumps(records[r.id], separators=(",", ":"),
                                           sort_keys=True))
            if r.id in records else r for r in renditions]


async def measured(master: Path, out_dir: Path, renditions: list[Rendition],
                   segments: list[Segment], duration: float,
                   encryption: native.Encryption | None,
                   progress: Callable[[float], None] | None = None,
                   shown: str | None = None) -> list[Rendition]:
    """The renditions with their VMAF against the master (engine.vmaf); a failure
    to measure is the job's IngestError, in one line."""
    from engine.vmaf import QualityError, with_vmaf

    key = encryption.key if encryption is not None else None
    try:
        return await asyncio.to_thread(with_vmaf, master, out_dir, renditions, segments,
                                       duration=duration, decryption_key=key,
                                       progress=progress)
    except QualityError as exc:
        text = str(exc) if shown is None else str(exc).replace(str(master), shown)
        raise IngestError(text) from exc


async def _until_lost(lease: Lease, work: Awaitable[T]) -> T:
    """``work``, cancelled as soon as the lease is lost (another process runs the
    job now: this attempt must not publish)."""
    task = asyncio.ensure_future(work)
    lost = asyncio.ensure_future(lease.lost.wait())
    try:
        await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise StaleJob(f"job {lease.job.id} was taken over by another process")
        return task.result()
    finally:
        lost.cancel()


def sidecars_of(request: IngestOptions) -> dict[str, Any]:
    """The request's sidecar files as the native core takes them."""
    return {
        "audio_sidecars": [native.AudioSidecar(path, lang) for lang, path in request.audio],
        "subtitle_sidecars": [native.SubtitleSidecar(path, lang, forced=flags == "forced",
                                                     sdh=flags == "sdh")
                              for lang, flags, path in request.subtitles],
    }


async def encryption_for(services: Services, asset_id: str,
                         request: IngestOptions) -> native.Encryption | None:
    """The native encryption of the job's request: None when clear or
    ``aes-128`` (whole segments, encrypted after the core), else the asset's key
    for that scheme from the key store (made and stored first when the
    asset has none: a retry encrypts with the same key). Keys never go into the
    object store."""
    if not request.encryption or request.encryption == AES_128:
        return None  # AES-128 is applied to the core's clear output (segment_crypto)
    key = await content_key_for(services, asset_id, request.encryption)
    return native.Encryption(key.scheme, key.kid, key.key, key.iv)


async def content_key_for(services: Services, asset_id: str, scheme: str) -> ContentKey:
    """The asset's key for ``scheme`` from the key store, made and stored first
    when it has none."""
    store = services.keys if services.keys is not None else key_store_beside(services.store)
    try:
        return await get_or_create(store, asset_id, scheme, services.key_provider)
    finally:
        if services.keys is None:
            await store.close()


def _scrub(exc: BaseException, master: Path, shown: str) -> str:
    """The core's message with the master's server path replaced by its name."""
    return str(exc).replace(str(master), shown)


class NoSpaceError(OSError):
    """The data dir filled up during a job; one line says where and in which stage."""
