"""Chunked encoding across workers (docs/jobs.md): a master longer than
``CDLC_CHUNK_SECONDS`` is split at segment boundaries into span tasks that many
workers encode at once; the audio is encoded once, as a task of its own.

The job record holds the plan and one entry per part (``job.chunks``):

    {"plan": {"rungs": [...], "duration": D, "segment_seconds": S},
     "parts": {"audio": {...}, "c0": {"start": 0, "end": 120, "state": "pending", ...}}}

Every change of a part is a compare-and-set of the job record (``update_job``), so
the record decides races: a worker claims a part with a lease (holder, expiry) and
renews it; a part whose holder died is pending again (engine.celery_app's reaper);
a part that runs twice (a slow worker, a redelivery) is harmless, because only the
first attempt to complete it is recorded, and a later one removes its own output.
A span encode numbers and times its segments as the one-piece encode would
(native.Transcoder's span mode), so stitching is merging the parts' segment
indexes: the part that completes last claims the job and publishes the whole.

Interleaving: at most a window of a job's parts is in the queue at a time (the
next one is sent as a part completes), so a short job submitted behind a long
one waits for a few chunks, not for the whole film.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import native
from engine import storyboard
from engine.job_spec import IngestError, work_dir_name
from engine.ladder import with_h264_encoder
from engine.leases import Lease, holder_dead, holder_id
from engine.pipeline import (
    Services,
    analysed,
    ladder_on,
    measured,
    planned_rungs,
    sidecars_of,
    to_models,
    with_analysis,
)
from engine.runner import PERMANENT, local_master, reason_of, record_failure, scrubbed, span_master
from engine.workers import choose_encoder
from metadata.cache import invalidate_asset
from metadata.faults import is_no_space
from metadata.jobs import AUTO_LADDER, Job, StaleJob, backoff_seconds
from metadata.models import Asset, JobState, media_prefix

log = logging.getLogger(__name__)

CHUNK_TASK = "cdlc.chunk"
# A pending part sent this long ago and never claimed lost its message.
LOST_MESSAGE_SECONDS = 300.0
AUDIO = "audio"

# send(job, part name, countdown seconds): queue one part's task.
SendPart = Callable[[Job, str, float], None]

TRACK_FIELDS = ("codec", "timescale", "width", "height", "sar_num", "sar_den", "rotation",
                "frame_rate_num", "frame_rate_den", "sample_rate", "channels", "bitrate",
                "language", "name", "presentation_offset", "forced", "sdh")
_KIND_NAMES = {native.TrackKind.VIDEO: "video", native.TrackKind.AUDIO: "audio",
               native.TrackKind.TEXT: "text"}


def chunk_length(segment_seconds: float, chunk_seconds: float) -> float:
    """Chunks hold whole segments: the multiple of the segment nearest the setting."""
    return segment_seconds * max(1, round(chunk_seconds / segment_seconds))


def plan_spans(duration: float, segment_seconds: float,
               chunk_seconds: float) -> list[tuple[float, float]]:
    """[(start, end)] covering the master; the last span ends at 0 (= the end)."""
    length = chunk_length(segment_seconds, chunk_seconds)
    count = max(1, math.ceil(duration / length - 1e-6))
    spans = [(i * length, (i + 1) * length) for i in range(count)]
    spans[-1] = (spans[-1][0], 0.0)
    return spans


def should_chunk(chunk_seconds: float, job: Job, duration: float) -> bool:
    return (chunk_seconds > 0 and not job.request.copy and not job.request.encryption
            and duration > chunk_seconds)


# -- the record -------------------------------------------------------------------------
async def update_job(services: Services, job_id: str,
                     change: Callable[[Job], bool]) -> Job | None:
    """Read-modify-write of a job until the compare-and-set holds. ``change`` edits
    the job in place and says whether to write; None when the job is gone or
    ``change`` declined."""
    for _ in range(50):
        job = await services.store.get_job(job_id)
        if job is None or not change(job):
            return None
        if await services.store.write_job(job):
            return job
        await asyncio.sleep(0.01)
    raise RuntimeError(f"job {job_id}: the record kept changing under 50 writes")


def parts_of(job: Job) -> dict[str, dict[str, Any]]:
    parts: dict[str, dict[str, Any]] = job.chunks.get("parts", {})
    return parts


def _progress(job: Job) -> float:
    """The job's progress: the parts' progress weighted by their share of the work
    (the audio part counts as a tenth of the video)."""
    duration = float(job.chunks.get("plan", {}).get("duration", 0.0)) or 1.0
    done = total = 0.0
    for name, p in parts_of(job).items():
        if name == AUDIO:
            weight = 0.1 * duration
        else:
            end = p["end"] or duration
            weight = max(0.0, end - p["start"])
        total += weight
        done += weight * (1.0 if p["state"] == "done" else float(p.get("progress", 0.0)))
    return done / total if total else 0.0


# -- the coordinator ----------------------------------------------------------------------
async def maybe_split(services: Services, job: Job, chunk_seconds: float, window: int,
                      send: SendPart) -> Job | None:
    """For a claimed job: probe its master; if it is longer than ``chunk_seconds``,
    split it into parts (None: the parts carry on), else hand the job back to be run
    in one piece. A master that cannot be probed fails the job as the pipeline would."""
    lease = Lease(services.store, job, services.lease_seconds)
    async with lease:
        try:
            async with local_master(services, job) as master:
                try:
                    info = await asyncio.to_thread(native.probe, master)
                except native.NativeError as exc:
                    raise IngestError(f"{job.request.source_name or master.name}: not a "
                                      f"playable media file ({exc})") from exc
            if not should_chunk(chunk_seconds, job, info.duration):
                return lease.job
            try:
                encoder = choose_encoder(job.queue or job.request.encoder)
            except ValueError as exc:
                raise IngestError(str(exc)) from exc
            request = ladder_on(job.request, encoder)
            analysis = None
            if request.ladder == AUTO_LADDER:
                # Once per master, here: every chunk encodes the rungs chosen now.
                async with local_master(services, job) as master:
                    analysis = await analysed(master, info, services.work_dir / work_dir_name(
                        f"{job.asset_id}-analysis"), request,
                        shown=request.source_name or "master")
            try:
                rungs = with_h264_encoder(planned_rungs(info, request, analysis), encoder)
            except ValueError as exc:
                raise IngestError(str(exc)) from exc
            await split(services, lease, rungs, info.duration, chunk_seconds, window, send,
                        analysis.records if analysis is not None else {})
            return None
        except StaleJob:
            return None
        except BaseException as exc:
            await record_failure(lease, exc)
            raise


async def split(services: Services, lease: Lease, rungs: list[native.Rung], duration: float,
                chunk_seconds: float, window: int, send: SendPart,
                analysis: dict[str, dict[str, Any]] | None = None) -> None:
    """Turn the leased job into parts and queue the first ``window`` of them; the
    job's own lease is handed back (its parts carry leases of their own).
    ``analysis``: the per-title records of the rungs, kept in the plan for the
    stitched renditions."""
    req = lease.job.request
    parts: dict[str, dict[str, Any]] = {
        AUDIO: _part(0.0, 0.0),
    }
    for i, (start, end) in enumerate(plan_spans(duration, req.segment_seconds, chunk_seconds)):
        parts[f"c{i}"] = _part(start, end)
    chunks = {"plan": {"rungs": [asdict(r) for r in rungs], "duration": duration,
                       "stills_interval": storyboard.interval_for(duration),
                       "analysis": analysis or {}},
              "parts": parts}
    first = list(parts)[:max(1, window)]
    now = time.time()
    for name in first:
        parts[name]["sent_at"] = now
    await lease.write(state=JobState.TRANSCODING, progress=0.0, chunks=chunks,
                      lease_holder=None)
    for name in first:
        send(lease.job, name, 0.0)
    log.info("job %s of %s: %d parts (%s s chunks), %d queued", lease.job.id,
             lease.job.asset_id, len(parts), chunk_length(req.segment_seconds, chunk_seconds),
             len(first))


def _part(start: float, end: float) -> dict[str, Any]:
    return {"start": start, "end": end, "state": "pending", "holder": None, "expires": 0.0,
            "attempt": 0, "progress": 0.0, "not_before": 0.0, "sent_at": 0.0, "prefix": "",
            "result": [], "error": None}


# -- a part ---------------------------------------------------------------------------------
@dataclass
class PartRun:
    """One attempt at one part (claimed, or forced for tests: ``claim=False``)."""

    services: Services
    job_id: str
    name: str
    send: SendPart
    max_attempts: int = 3
    holder: str = field(default_factory=holder_id)
    _progress: float = field(default=0.0, init=False)
    # How this attempt read the master: "url" (ranged GETs of the store's read
    # URL) or "file" (a local file, or one downloaded for the attempt).
    _read: str = field(default="", init=False)

    async def run(self, *, claim: bool = True) -> str:
        """Encode the part; returns what happened ("done", "lost", "held", ...)."""
        job = await self._claim() if claim else await self.services.store.get_job(self.job_id)
        if job is None:
            return "not claimable"
        part = parts_of(job)[self.name]
        renew = asyncio.create_task(self._renew())
        try:
            records, prefix, stills = await self._encode(job, part)
        except BaseException as exc:
            renew.cancel()
            await asyncio.gather(renew, return_exceptions=True)
            if isinstance(exc, asyncio.CancelledError):
                await asyncio.shield(self._release())
                raise
            await self._failed(exc)
            return "failed"
        renew.cancel()
        await asyncio.gather(renew, return_exceptions=True)
        return await self._complete(records, prefix, stills)

    async def _claim(self) -> Job | None:
        now = time.time()

        def take(job: Job) -> bool:
            if job.finished or job.state != JobState.TRANSCODING:
                return False
            p = parts_of(job).get(self.name)
            if p is None or p["state"] == "done" or p["not_before"] > now:
                return False
            if p["state"] == "running" and not (p["expires"] < now or holder_dead(p["holder"])):
                return False
            p.update(state="running", holder=self.holder, attempt=p["attempt"] + 1,
                     expires=now + self.services.lease_seconds, progress=0.0, claimed_at=now)
            return True

        return await update_job(self.services, self.job_id, take)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.services.lease_seconds / 3)

            def extend(job: Job) -> bool:
                p = parts_of(job).get(self.name)
                if p is None or p["holder"] != self.holder or p["state"] != "running":
                    return False  # taken over: the first to complete still wins
                p["expires"] = time.time() + self.services.lease_seconds
                p["progress"] = self._progress
                job.progress = _progress(job)
                return True

            try:
                if await update_job(self.services, self.job_id, extend) is None:
                    return
            except Exception:
                log.warning("renewing part %s of %s failed", self.name, self.job_id,
                            exc_info=True)

    async def _encode(self, job: Job, part: dict[str, Any]
                      ) -> tuple[list[dict[str, Any]], str, dict[str, Any] | None]:
        req = job.request
        video = self.name != AUDIO
        # Plans made before storyboards have no interval: no stills then.
        interval = float(job.chunks["plan"].get("stills_interval", 0.0)) if video else 0.0
        rungs = [native.Rung(**r) for r in job.chunks["plan"]["rungs"]] if video else []
        work = self.services.work_dir / work_dir_name(f"{job.asset_id}-{self.name}")
        out = work / "out"
        try:
            async with span_master(self.services, job) as master:
                def progress(fraction: float) -> None:
                    self._progress = fraction

                remote = isinstance(master, str)
                self._read = "url" if remote else "file"
                transcoder = native.Transcoder(
                    master, out, rungs, segment_seconds=req.segment_seconds,
                    gop_seconds=req.gop, preset=req.preset, audio=not video, video=video,
                    start_seconds=part["start"], end_seconds=part["end"],
                    # Text tracks and sidecars come whole from the audio part.
                    subtitles=not video, thumbnail_interval=interval,
                    remote_timeout=self.services.remote_read_timeout if remote else 0.0,
                    **({} if video else sidecars_of(req)))
                try:
                    result = await asyncio.to_thread(transcoder.run, progress)
                except Exception as exc:
                    if not remote:
                        raise
                    # Its message may name the presigned URL: show the object instead.
                    raise scrubbed(exc, str(master), job.master) from None
            records = [rendition_record(r) for r in result.renditions]
            stills = storyboard.stills_of(result, interval) if interval else None
            meta = (await asyncio.to_thread(storyboard.save_stills,
                                            out / storyboard.STILLS_DIR, stills)
                    if stills is not None else None)
            prefix = f"chunks/{job.id}/{self.name}/{uuid.uuid4().hex[:8]}"
            await self.services.objects.adopt_tree(prefix, out)
            return records, prefix, meta
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def _complete(self, records: list[dict[str, Any]], prefix: str,
                        stills: dict[str, Any] | None) -> str:
        won = False

        def finish(job: Job) -> bool:
            nonlocal won
            p = parts_of(job).get(self.name)
            if job.finished or p is None or p["state"] == "done":
                return False
            p.update(state="done", holder=None, progress=1.0, prefix=prefix, result=records,
                     stills=stills, error=None, done_at=time.time(), worker=self.holder,
                     read=self._read)
            job.progress = _progress(job)
            won = True
            return True

        job = await update_job(self.services, self.job_id, finish)
        if not won or job is None:
            # Another attempt completed this part first: its output is the one.
            await self.services.objects.delete_prefix(prefix + "/")
            return "lost"
        await self._next(job)
        if all(p["state"] == "done" for p in parts_of(job).values()):
            await stitch(self.services, self.job_id, self.holder)
        return "done"

    async def _next(self, job: Job) -> None:
        """Keep the window full: queue the next part never sent."""
        now = time.time()
        chosen: list[str] = []

        def mark(j: Job) -> bool:
            chosen.clear()
            for name, p in parts_of(j).items():
                if p["state"] == "pending" and not p["sent_at"]:
                    p["sent_at"] = now
                    chosen.append(name)
                    return True
            return False

        updated = await update_job(self.services, job.id, mark)
        if updated is not None:
            for name in chosen:
                self.send(updated, name, 0.0)

    async def _release(self) -> None:
        def back(job: Job) -> bool:
            p = parts_of(job).get(self.name)
            if p is None or p["holder"] != self.holder or p["state"] != "running":
                return False
            p.update(state="pending", holder=None, attempt=max(0, p["attempt"] - 1),
                     sent_at=time.time())
            return True

        job = await update_job(self.services, self.job_id, back)
        if job is not None:
            self.send(job, self.name, 0.0)

    async def _failed(self, exc: BaseException) -> None:
        reason = reason_of(exc)
        permanent = isinstance(exc, (*PERMANENT, ValueError, native.NotFoundError)) or \
            is_no_space(exc)
        retry_in = 0.0
        failed_job = False

        def record(job: Job) -> bool:
            nonlocal retry_in, failed_job
            p = parts_of(job).get(self.name)
            if job.finished or p is None or p["state"] == "done":
                return False
            span = "audio" if self.name == AUDIO else \
                f"chunk {self.name} [{p['start']:g}-{p['end'] or 'end'} s)"
            if permanent or p["attempt"] >= self.max_attempts:
                job.state, job.lease_holder = JobState.FAILED, None
                job.error = f"{span}: {reason}" + (
                    "" if permanent else f" (gave up after {p['attempt']} attempts)")
                p.update(state="failed", holder=None, error=reason)
                failed_job = True
            else:
                retry_in = backoff_seconds(p["attempt"])
                p.update(state="pending", holder=None, error=reason,
                         not_before=time.time() + retry_in, sent_at=time.time())
            return True

        job = await update_job(self.services, self.job_id, record)
        if job is None:
            return
        if failed_job:
            log.warning("job %s failed: %s", job.id, job.error)
            await self.services.objects.delete_prefix(f"chunks/{job.id}/")
        else:
            log.warning("part %s of job %s failed, retrying in %g s: %s", self.name, job.id,
                        retry_in, reason)
            self.send(job, self.name, retry_in)


def _fix_parts(job: Job, todo: list[str], now: float, max_attempts: int) -> bool:
    """sweep_parts' change to one job: dead holders' parts pending again (or the job
    FAILED), lost messages noted in ``todo`` for sending."""
    todo.clear()
    for name, p in parts_of(job).items():
        if p["state"] == "running" and (p["expires"] < now or holder_dead(p["holder"])):
            if p["attempt"] >= max_attempts:
                job.state, job.lease_holder = JobState.FAILED, None
                job.error = (f"part {name}: worker {p['holder']} died; gave up after "
                             f"{p['attempt']} attempts")
                return True
            p.update(state="pending", holder=None, sent_at=now,
                     error=f"worker {p['holder']} died",
                     not_before=now + backoff_seconds(p["attempt"]))
            todo.append(name)
        elif p["state"] == "pending" and p["sent_at"] and \
                now - p["sent_at"] > LOST_MESSAGE_SECONDS:
            p["sent_at"] = now
            todo.append(name)
    return bool(todo)


def rendition_record(r: native.RenditionResult) -> dict[str, Any]:
    t = r.track
    return {
        "id": r.id,
        "track": {"kind": _KIND_NAMES[t.kind],
                  "extradata": bytes(t.extradata).hex(),
                  **{name: getattr(t, name) for name in TRACK_FIELDS}},
        "segments": [[s.number, s.start, s.duration, s.size, s.iframe_size]
                     for s in r.segments],
    }


@dataclass
class _Track:
    kind: Any
    codec: str
    extradata: bytes
    timescale: int
    width: int = 0
    height: int = 0
    sar_num: int = 1
    sar_den: int = 1
    rotation: int = 0
    frame_rate_num: int = 0
    frame_rate_den: int = 1
    sample_rate: int = 0
    channels: int = 0
    bitrate: int = 0
    language: str = "und"
    name: str = ""
    presentation_offset: int = 0
    forced: bool = False
    sdh: bool = False


@dataclass
class _Seg:
    number: int
    start: int
    duration: int
    size: int
    iframe_size: int


@dataclass
class _Rend:
    id: str
    track: _Track
    segments: list[_Seg]


@dataclass
class _Result:
    renditions: list[_Rend]
    duration_seconds: float = 0.0


def merged_result(parts: Iterable[dict[str, Any]], duration: float) -> _Result:
    """The parts' recorded results as one result, renditions in first-seen order
    and each rendition's segments concatenated; numbering must run on unbroken
    (a span encode numbers as the one-piece encode does)."""
    rends: dict[str, _Rend] = {}
    for part in parts:
        for rec in part["result"]:
            t = dict(rec["track"])
            kind = {v: k for k, v in _KIND_NAMES.items()}[t.pop("kind")]
            extradata = bytes.fromhex(t.pop("extradata"))
            rend = rends.setdefault(rec["id"], _Rend(rec["id"], _Track(kind=kind,
                                                                      extradata=extradata, **t),
                                                     []))
            rend.segments.extend(_Seg(*s) for s in rec["segments"])
    for rend in rends.values():
        numbers = [s.number for s in rend.segments]
        if numbers != list(range(1, len(numbers) + 1)):
            raise IngestError(f"stitching {rend.id}: segment numbers do not run on "
                              f"({numbers[:3]}...{numbers[-3:]})")
    return _Result(list(rends.values()), duration)


# -- stitching --------------------------------------------------------------------------------
async def stitch(services: Services, job_id: str, holder: str) -> None:
    """Claim the job whose parts are all done, merge their indexes, lay their files
    out as the asset's media, publish, and remove the parts' objects."""

    def take(job: Job) -> bool:
        if job.finished or job.state != JobState.TRANSCODING or job.lease_holder:
            return False
        if not all(p["state"] == "done" for p in parts_of(job).values()):
            return False
        job.state, job.lease_holder = JobState.PACKAGING, holder
        job.lease_expires = time.time() + services.lease_seconds
        return True

    job = await update_job(services, job_id, take)
    if job is None:
        return  # someone else stitches (or the job is gone)
    lease = Lease(services.store, job, services.lease_seconds)
    staging = services.work_dir / work_dir_name(f"{job.asset_id}-stitch")
    async with lease:
        try:
            parts = parts_of(job)
            spans = sorted((n for n in parts if n != AUDIO), key=lambda n: parts[n]["start"])
            order = [AUDIO, *spans]
            result = merged_result((parts[n] for n in order),
                                   float(job.chunks["plan"]["duration"]))
            renditions, segments = to_models(job.asset_id, result)
            renditions = with_analysis(renditions, job.chunks["plan"].get("analysis") or {})
            await _lay_out(services, [parts[n] for n in order], staging / "out")
            if job.request.vmaf:  # measured on the stitched renditions, as published
                async with local_master(services, job) as master:
                    renditions = await measured(master, staging / "out", renditions,
                                                segments, result.duration_seconds, None,
                                                shown=job.request.source_name or "master")
            stills = await _gather_stills(services, [parts[n] for n in spans], staging)
            board = await asyncio.to_thread(storyboard.write_storyboard, staging / "out",
                                            job.asset_id, stills, result.duration_seconds)
            if board is not None:
                renditions.append(board[0])
                segments.extend(board[1])
            await lease.state(JobState.PUBLISHING, 0.0)
            await services.objects.adopt_tree(media_prefix(job.asset_id), staging / "out")
            asset = Asset(id=job.asset_id, source_name=job.request.source_name,
                          duration=result.duration_seconds, current_job=job.id)
            current = await services.store.get_asset(job.asset_id)
            if current is not None:
                asset.created_at, asset.version = current.created_at, current.version
            await lease.publish(asset, renditions, segments)
            await invalidate_asset(services.cache, job.asset_id)
            log.info("job %s of %s: %d parts stitched and published", job.id, job.asset_id,
                     len(parts))
        except StaleJob:
            raise
        except BaseException as exc:
            await services.objects.delete_prefix(media_prefix(job.asset_id) + "/")
            await lease.write(state=JobState.FAILED, lease_holder=None,
                              error=f"stitching: {reason_of(exc)}")
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            await services.objects.delete_prefix(f"chunks/{job.id}/")


async def _lay_out(services: Services, parts: list[dict[str, Any]], out: Path) -> None:
    """Every part's files under out/<rendition>/ (hard links where the store is a
    local directory, else downloads); init.mp4 from the first part that has it."""
    for part in parts:
        for rec in part["result"]:
            rid = rec["id"]
            if rec["track"]["kind"] == "text":  # WebVTT: cue files and the whole track
                names = [f"{s[0]}.vtt" for s in rec["segments"]] + ["subtitles.vtt"]
            else:
                names = [f"{s[0]}.m4s" for s in rec["segments"]]
                if not (out / rid / "init.mp4").exists():
                    names.append("init.mp4")
            (out / rid).mkdir(parents=True, exist_ok=True)
            for name in names:
                await _fetch(services, f"{part['prefix']}/{rid}/{name}", out / rid / name)


async def _gather_stills(services: Services, parts: list[dict[str, Any]],
                         staging: Path) -> storyboard.Stills | None:
    """The video parts' stills, fetched and merged (None when a part has none: a
    storyboard with holes would point cues at the wrong pictures)."""
    spans = []
    for i, part in enumerate(parts):
        meta = part.get("stills")
        if not meta:
            return None
        folder = staging / storyboard.STILLS_DIR / str(i)
        folder.mkdir(parents=True, exist_ok=True)
        for name in storyboard.stills_files(meta):
            await _fetch(services, f"{part['prefix']}/{storyboard.STILLS_DIR}/{name}",
                         folder / name)
        spans.append(await asyncio.to_thread(storyboard.load_stills, folder, meta))
    return storyboard.merge_stills(spans)


async def _fetch(services: Services, key: str, dest: Path) -> None:
    local = services.objects.local_path(key)
    if local is not None:
        try:
            os.link(local, dest)
            return
        except OSError:
            await asyncio.to_thread(shutil.copyfile, local, dest)
            return
    with dest.open("wb") as fh:
        async for chunk in services.objects.iter_range(key):
            fh.write(chunk)


# -- the reaper's share ---------------------------------------------------------------------
async def sweep_parts(services: Services, send: SendPart, max_attempts: int) -> int:
    """Parts whose holder died go back to pending (or fail the job when their
    attempts are spent) and are sent again; pending parts whose message was lost are
    sent again. Returns how many parts were sent."""
    sent = 0
    now = time.time()
    for job in await services.store.list_jobs(states=[JobState.TRANSCODING]):
        if not parts_of(job):
            continue
        todo: list[str] = []
        updated = await update_job(services, job.id,
                                   functools.partial(_fix_parts, todo=todo, now=now,
                                                     max_attempts=max_attempts))
        if updated is None:
            continue
        for name in todo:
            send(updated, name, parts_of(updated)[name]["not_before"] - now)
            sent += 1
        if updated.state == JobState.FAILED:
            await services.objects.delete_prefix(f"chunks/{job.id}/")
    return sent

