"""Resumable uploads: the tus 1.0.0 protocol at /v1/uploads
(https://tus.io/protocols/resumable-upload).

Core protocol plus the creation, termination, expiration and checksum (sha1)
extensions. A client creates an upload with ``POST /v1/uploads`` (``Upload-Length``
and ``Upload-Metadata``), sends the bytes with ``PATCH`` at the offset ``HEAD``
reports, and may ``DELETE`` it. The upload's state lives on disk beside its bytes
(origin/tus_store.py), so it resumes after a dropped connection and after the
origin restarts.

Upload-Metadata (base64 values, tus §"Upload-Metadata"): ``filename``, ``asset_id``
and the job options (``ladder``, ``preset``, ``segment_seconds``, ``gop_seconds``,
``copy``, ``encoder``, ``vmaf``). They are checked with ``application.check`` at
creation, so a bad option is a 400, and an id that is ready or busy a 409, before any
byte is sent. When the last byte arrives the master goes to ``application.submit``
and the job starts; a refusal then is answered with the same statuses as the REST
API (origin.admin.refusal) and the upload removed. When only the queue refused (the
job is recorded FAILED, the master kept) the answer is a 503 and the upload stays:
the client's resume, a HEAD or the last PATCH again, queues the job then (a HEAD
while the queue is still out is a 423 with Retry-After, which clients retry).

Every request but OPTIONS needs the API key when one is configured (the callable
given to ``add_tus_routes``, the admin API's check). Responses carry CORS headers
so a console on another origin can upload; the console on /console/ is same-origin.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from email.utils import formatdate
from pathlib import Path
from typing import BinaryIO

from aiohttp import hdrs, web

from metadata.faults import first_line
from metadata.jobs import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    RequestError,
    check_asset_id,
)
from metadata.models import JobState
from origin.admin import backend_fault, problem, refusal
from origin.application import Application, NotQueued
from origin.tus_store import RECEIVING, SUBMITTED, UNQUEUED, UploadDir, UploadInfo

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,expiration,checksum"
ROUTE = "/v1/uploads"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
# Metadata keys that become job options (metadata.jobs.JobRequest.FIELDS).
OPTION_KEYS = ("ladder", "preset", "segment_seconds", "gop_seconds", "copy", "encoder",
               "vmaf")
# Keys common tus clients add on their own (Uppy, tus-js-client examples): ignored.
CLIENT_KEYS = ("filetype", "type", "relativePath", "lastModified", "size")
ASSET_ID_HEADER = "Cdlc-Asset-Id"
_WRITE_BLOCK = 1024 * 1024  # bytes gathered before one write (one executor hop)

_ALLOW_HEADERS = ", ".join((
    "Authorization", "X-API-Key", "Content-Type", "Tus-Resumable", "Upload-Length",
    "Upload-Metadata", "Upload-Offset", "Upload-Checksum", "Upload-Defer-Length",
    "Upload-Concat", "X-HTTP-Method-Override", "X-Requested-With",
))
_EXPOSE_HEADERS = ", ".join((
    "Location", "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
    "Tus-Checksum-Algorithm", "Upload-Offset", "Upload-Length", "Upload-Metadata",
    "Upload-Expires", ASSET_ID_HEADER,
))

Authorise = Callable[[web.Request], bool]


def parse_metadata(header: str) -> dict[str, str]:
    """``key base64value,key2 ...`` -> {key: text}; RequestError when malformed (tus
    1.0.0 §Upload-Metadata: keys unique, without spaces or commas; a key may come
    without a value)."""
    out: dict[str, str] = {}
    if not header.strip():
        return out
    for pair in header.split(","):
        key, _, value = pair.strip().partition(" ")
        if not key or " " in value.strip():
            raise RequestError(f"malformed Upload-Metadata pair {pair.strip()!r}")
        if key in out:
            raise RequestError(f"Upload-Metadata key {key!r} given twice")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise RequestError(f"Upload-Metadata value of {key!r} is not base64 UTF-8") from None
    return out


def http_date(ts: float) -> str:
    """RFC 9110 §5.6.7 IMF-fixdate, the form Upload-Expires uses."""
    return formatdate(ts, usegmt=True)


class TusUploads:
    """The /v1/uploads handlers over one upload directory."""

    def __init__(self, application: Application, *, upload_dir: Path, max_upload_bytes: int,
                 authorise: Authorise, expire_seconds: float = 24 * 3600.0) -> None:
        self.application = application
        self.uploads = UploadDir(upload_dir, ttl_seconds=expire_seconds)
        self.max_upload_bytes = max_upload_bytes
        self.authorise = authorise
        # Uploads whose last byte is in and whose job is being submitted: the master
        # is the application's already, the SUBMITTED record not yet written. A HEAD
        # then must still say "complete", or a resuming client would start over.
        self._completing: dict[str, UploadInfo] = {}

    # -- helpers ----------------------------------------------------------------------
    def _headers(self, resp: web.StreamResponse, request: web.Request) -> web.StreamResponse:
        h = resp.headers
        h["Tus-Resumable"] = TUS_VERSION
        h[hdrs.CACHE_CONTROL] = "no-store"
        h[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = request.headers.get(hdrs.ORIGIN, "*")
        h[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = _EXPOSE_HEADERS
        h[hdrs.VARY] = "Origin"
        return resp

    def _fail(self, request: web.Request, status: int, detail: str) -> web.StreamResponse:
        resp = problem(status, detail)
        if status == 401:
            resp.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="cdlc"'
        if status == 412:
            resp.headers["Tus-Version"] = TUS_VERSION
        return self._headers(resp, request)

    def _check(self, request: web.Request) -> web.StreamResponse | None:
        """401 without the key; 412 unless the client speaks tus 1.0.0 (§Tus-Resumable)."""
        if not self.authorise(request):
            return self._fail(request, 401, "missing or wrong API key")
        if request.headers.get("Tus-Resumable") != TUS_VERSION:
            return self._fail(request, 412, f"send Tus-Resumable: {TUS_VERSION}")
        return None

    def _state_headers(self, resp: web.StreamResponse, info: UploadInfo) -> None:
        resp.headers["Upload-Offset"] = str(info.offset)
        resp.headers["Upload-Length"] = str(info.length)
        resp.headers["Upload-Expires"] = http_date(info.expires_at)
        resp.headers[ASSET_ID_HEADER] = info.asset_id

    async def _load(self, upload_id: str) -> UploadInfo | None:
        completing = self._completing.get(upload_id)
        if completing is not None:
            return completing
        info = await asyncio.to_thread(self.uploads.load, upload_id)
        if info is not None and info.expires_at <= time.time():
            # Expired (tus §Expiration): gone now, whatever the sweep's schedule.
            await asyncio.to_thread(self.uploads.remove, upload_id)
            return None
        return info

    # -- OPTIONS ----------------------------------------------------------------------
    async def options(self, request: web.Request) -> web.StreamResponse:
        """Discovery (tus §OPTIONS) and the CORS preflight in one answer."""
        resp = web.Response(status=204)
        resp.headers["Tus-Version"] = TUS_VERSION
        resp.headers["Tus-Extension"] = EXTENSIONS
        resp.headers["Tus-Max-Size"] = str(self.max_upload_bytes)
        resp.headers["Tus-Checksum-Algorithm"] = "sha1"
        resp.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST, HEAD, PATCH, DELETE, OPTIONS"
        resp.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = _ALLOW_HEADERS
        resp.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "86400"
        return self._headers(resp, request)

    # -- POST /v1/uploads (creation) ----------------------------------------------------
    async def create(self, request: web.Request) -> web.StreamResponse:
        refused = self._check(request)
        if refused is not None:
            return refused
        if "Upload-Defer-Length" in request.headers:
            return self._fail(request, 400, "Upload-Defer-Length is not supported; "
                                            "send Upload-Length")
        raw_length = request.headers.get("Upload-Length", "")
        if not (raw_length.isascii() and raw_length.isdigit()):
            return self._fail(request, 400, "Upload-Length must be a non-negative integer")
        length = int(raw_length)
        if length > self.max_upload_bytes:
            return self._fail(request, 413, f"upload larger than {self.max_upload_bytes} bytes"
                                            " (Tus-Max-Size)")
        if length == 0:
            return self._fail(request, 400, "an empty file is not a master")
        try:
            metadata = parse_metadata(request.headers.get("Upload-Metadata", ""))
            filename, asset_id, options = self._job_fields(metadata)
            # Bad options, or an id that is ready or has a job running, are refused
            # before a byte is sent (a FAILED asset may be uploaded again).
            given = "asset_id" in metadata or "id" in metadata
            await self.application.check(asset_id if given else None, options,
                                         source_name=filename)
        except AlreadyExists as exc:
            return self._fail(request, 409, str(exc))
        except RequestError as exc:
            return self._fail(request, 400, str(exc))
        info = await asyncio.to_thread(
            self.uploads.create, length, filename=filename, asset_id=asset_id,
            options=options, metadata=metadata)
        log.info("upload %s created: %s, %d bytes, asset %s", info.id, filename, length,
                 asset_id)
        location = f"{ROUTE}/{info.id}"
        body = request.content_type == OFFSET_CONTENT_TYPE and request.can_read_body
        if body:
            # creation-with-upload: the first bytes came with the POST.
            resp = await self._append(request, info, creating=True)
        else:
            resp = web.Response(status=201)
            self._state_headers(resp, info)
        if resp.status in (200, 204):
            resp.set_status(201)
        resp.headers[hdrs.LOCATION] = location
        return self._headers(resp, request)

    def _job_fields(self, metadata: dict[str, str]) -> tuple[str, str, dict[str, str]]:
        """(filename, asset id, job options) from the metadata; RequestError."""
        filename = Path(metadata.get("filename") or metadata.get("name") or "master").name
        asset_id = check_asset_id(metadata.get("asset_id") or metadata.get("id")
                                  or _new_asset_id())
        options: dict[str, str] = {}
        for key, value in metadata.items():
            if key in OPTION_KEYS:
                options[key] = value
            elif key not in ("filename", "name", "asset_id", "id", *CLIENT_KEYS):
                raise RequestError(f"unknown Upload-Metadata key {key!r}; known: filename, "
                                   f"asset_id, {', '.join(OPTION_KEYS)}")
        return filename, asset_id, options

    # -- HEAD /v1/uploads/{id} ------------------------------------------------------------
    async def head(self, request: web.Request) -> web.StreamResponse:
        refused = self._check(request)
        if refused is not None:
            return refused
        info = await self._load(request.match_info["id"])
        if info is not None and info.state == UNQUEUED:
            settled = await self._queued(info, head=True)
            if isinstance(settled, web.Response):
                return self._headers(settled, request)
            info = settled
        if info is None:
            # tus §HEAD: 404 (or 410) without a body, for a gone upload.
            return self._headers(web.Response(status=404), request)
        resp = web.Response(status=200)
        self._state_headers(resp, info)
        if info.metadata:
            resp.headers["Upload-Metadata"] = ",".join(
                f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in info.metadata.items())
        return self._headers(resp, request)

    # -- PATCH /v1/uploads/{id} -----------------------------------------------------------
    async def patch(self, request: web.Request) -> web.StreamResponse:
        refused = self._check(request)
        if refused is not None:
            return refused
        if request.content_type != OFFSET_CONTENT_TYPE:
            return self._fail(request, 415, f"send Content-Type: {OFFSET_CONTENT_TYPE}")
        info = await self._load(request.match_info["id"])
        if info is None:
            return self._fail(request, 404, "no such upload (finished long ago, terminated "
                                            "or expired)")
        if info.state == UNQUEUED:
            settled = await self._queued(info)
            if isinstance(settled, web.Response):
                return self._headers(settled, request)
            info = settled
        return self._headers(await self._append(request, info), request)

    async def _append(self, request: web.Request, info: UploadInfo, *,
                      creating: bool = False) -> web.StreamResponse:
        # creation-with-upload: the POST's body starts at 0, Upload-Offset optional.
        raw_offset = request.headers.get("Upload-Offset", "0" if creating else "")
        if not (raw_offset.isascii() and raw_offset.isdigit()):
            return problem(400, "Upload-Offset must be a non-negative integer")
        if info.state == SUBMITTED:
            return self._mismatch(info, raw_offset) if int(raw_offset) != info.length \
                else self._ok(info)
        checksum = _checksum(request.headers.get("Upload-Checksum"))
        if isinstance(checksum, web.Response):
            return checksum
        try:
            f = await asyncio.to_thread(self.uploads.open_for_append, info.id)
        except BlockingIOError:
            return problem(423, "another request is writing this upload; HEAD and retry")
        except FileNotFoundError:
            again = await self._load(info.id)
            if again is not None and again.state == SUBMITTED:
                return self._ok(again)
            return problem(404, "no such upload")
        try:
            # The offset is the file's size, read under the writer's lock.
            info = replace(info, offset=f.tell())
            if int(raw_offset) != info.offset:
                return self._mismatch(info, raw_offset)
            room = info.length - info.offset
            if request.content_length is not None and request.content_length > room:
                return problem(413, f"{request.content_length} bytes past Upload-Offset "
                                    f"{info.offset} exceed Upload-Length {info.length}")
            return await self._receive(request, info, f, room, checksum)
        finally:
            await asyncio.to_thread(f.close)

    def _ok(self, info: UploadInfo) -> web.Response:
        resp = web.Response(status=204)
        self._state_headers(resp, info)
        return resp

    def _mismatch(self, info: UploadInfo, given: str) -> web.Response:
        # tus §PATCH: 409, and the client asks (HEAD) and resumes from our offset.
        resp = problem(409, f"Upload-Offset {given} does not match the upload's offset "
                            f"{info.offset}")
        self._state_headers(resp, info)
        return resp

    async def _receive(self, request: web.Request, info: UploadInfo, f: BinaryIO, room: int,
                       checksum: bytes | None) -> web.StreamResponse:
        """Stream the body into ``f`` (locked, at the offset), acknowledge what was
        written, submit when complete. Disk writes run in a thread while the next
        block is read (double buffering), in order."""
        hasher = hashlib.sha1() if checksum is not None else None
        received = 0
        block: list[bytes] = []
        size = 0
        writing: asyncio.Future[None] | None = None

        def write(data: bytes) -> None:
            f.write(data)
            if hasher is not None:
                hasher.update(data)

        async def flush() -> None:
            nonlocal writing, size
            if writing is not None:
                await writing
                writing = None
            if block:
                writing = asyncio.ensure_future(asyncio.to_thread(write, b"".join(block)))
                block.clear()
                size = 0

        dropped = False
        try:
            while True:
                try:
                    chunk = await request.content.readany()
                except Exception:  # the client went away mid-body: keep what came
                    dropped = True
                    break
                if not chunk:
                    break
                received += len(chunk)
                if received > room:
                    await flush()
                    await flush()
                    await asyncio.to_thread(self.uploads.roll_back, f, info.offset)
                    return problem(413, f"body runs past Upload-Length {info.length}")
                block.append(chunk)
                size += len(chunk)
                if size >= _WRITE_BLOCK:
                    await flush()
            await flush()
            await flush()  # the last block written too
            if hasher is not None and (dropped or not hmac.compare_digest(
                    hasher.digest(), checksum or b"")):
                # tus §Checksum: 460, and the chunk is discarded (the offset stays).
                await asyncio.to_thread(self.uploads.roll_back, f, info.offset)
                return problem(460, "Upload-Checksum does not match the body")
            offset = await asyncio.to_thread(self.uploads.acknowledge, f)
        except asyncio.CancelledError:
            # Cancelled with the connection: the bytes that reached the file stay
            # (the next HEAD reports them); a checksummed PATCH keeps nothing.
            with contextlib.suppress(Exception):
                if writing is not None:
                    await writing
                if hasher is not None:
                    self.uploads.roll_back(f, info.offset)
                else:
                    write(b"".join(block))
                    self.uploads.acknowledge(f)
            raise
        info = replace(info, offset=offset, expires_at=time.time() + self.uploads.ttl)
        if info.offset == info.length:
            return await self._complete(info)
        return self._ok(info)

    async def _complete(self, info: UploadInfo) -> web.StreamResponse:
        """The last byte is in: the master goes to the application (which owns the
        file from here: kept, or removed on refusal), and the job starts."""
        data = self.uploads.data_path(info.id)
        self._completing[info.id] = info
        try:
            return await self._submit(info, data)
        finally:
            self._completing.pop(info.id, None)

    async def _submit(self, info: UploadInfo, data: Path) -> web.StreamResponse:
        try:
            view = await self.application.submit(info.asset_id, data, info.options,
                                                 source_name=info.filename)
        except NotQueued as exc:
            # The master is the application's now, in a FAILED job: this upload stays,
            # so the client's retry of the same upload starts it (the job is queued
            # again on its next HEAD or PATCH) instead of a 404 and a second upload.
            await asyncio.to_thread(self.uploads.save, replace(info, state=UNQUEUED))
            log.warning("upload %s: asset %s kept, not queued: %s", info.id, info.asset_id,
                        first_line(exc.__cause__ or exc))
            return backend_fault(exc) or problem(503, str(exc))
        except Exception as exc:
            await asyncio.to_thread(self.uploads.remove, info.id)
            answer = refusal(exc) or backend_fault(exc)
            if answer is None:
                log.exception("upload %s: submitting asset %s failed", info.id, info.asset_id)
                return problem(500, "could not start the job")
            log.info("upload %s: asset %s refused: %s", info.id, info.asset_id, exc)
            return answer
        info = replace(info, state=SUBMITTED, asset_id=view.asset.id)
        await asyncio.to_thread(self.uploads.save, info)
        log.info("upload %s complete: job %s for asset %s", info.id,
                 view.job.id if view.job else "-", view.asset.id)
        resp = web.Response(status=204)
        self._state_headers(resp, info)
        return resp

    async def _queued(self, info: UploadInfo, *, head: bool = False
                      ) -> UploadInfo | web.Response:
        """An UNQUEUED upload's job queued again (``retry``): the upload SUBMITTED, or
        the answer for now: 503 while the queue is still out (423 to a ``head``),
        404 when the asset went (deleted, or its master lost: upload it again)."""
        try:
            await self.application.retry(info.asset_id)
        except (FailedPrecondition, AlreadyExists):
            # Not FAILED any more: queued meanwhile (the console's Retry, another
            # origin process) or uploaded again. Unless the master is what is gone.
            try:
                current = (await self.application.get(info.asset_id)).asset.state
            except NotFound:
                current = None
            if current is None or current == JobState.FAILED:
                await asyncio.to_thread(self.uploads.remove, info.id)
                return problem(404, f"asset {info.asset_id} cannot be started from this "
                                    "upload any more; upload it again")
        except NotFound:
            await asyncio.to_thread(self.uploads.remove, info.id)
            return problem(404, f"asset {info.asset_id} was deleted")
        except Exception as exc:
            answer = backend_fault(exc)
            if answer is None:
                raise
            if head and answer.status == 503:
                # 423, not 503: tus-js-client answers a HEAD's 503 (any status but
                # 2xx and 423) with a new upload from byte 0; a 423 it retries.
                answer.set_status(423)
            return answer
        info = replace(info, state=SUBMITTED)
        await asyncio.to_thread(self.uploads.save, info)
        log.info("upload %s: job of asset %s queued on the client's resume", info.id,
                 info.asset_id)
        return info

    # -- DELETE /v1/uploads/{id} (termination) ------------------------------------------
    async def delete(self, request: web.Request) -> web.StreamResponse:
        refused = self._check(request)
        if refused is not None:
            return refused
        upload_id = request.match_info["id"]
        info = await self._load(upload_id)
        if info is None or not await asyncio.to_thread(self.uploads.remove, upload_id):
            return self._fail(request, 404, "no such upload")
        return self._headers(web.Response(status=204), request)

    async def override(self, request: web.Request) -> web.StreamResponse:
        """POST with X-HTTP-Method-Override (tus §X-HTTP-Method-Override), for
        environments that cannot send PATCH or DELETE."""
        method = request.headers.get("X-HTTP-Method-Override", "").upper()
        if method == "PATCH":
            return await self.patch(request)
        if method == "DELETE":
            return await self.delete(request)
        if method == "HEAD":
            return await self.head(request)
        return self._fail(request, 405, "POST an upload only with X-HTTP-Method-Override")

    # -- expiry and recovery ----------------------------------------------------------
    async def recover(self) -> list[str]:
        """Submit the uploads whose last byte was acknowledged but whose job was never
        submitted (the process died in between; a client that HEADs then sees the
        upload complete and sends nothing more). The upload ids submitted."""
        done: list[str] = []
        for upload_id in await asyncio.to_thread(self.uploads.ids):
            info = await self._load(upload_id)
            if info is None or info.state != RECEIVING or info.offset != info.length:
                continue
            try:
                f = await asyncio.to_thread(self.uploads.open_for_append, upload_id)
            except (BlockingIOError, FileNotFoundError):
                continue  # a writer has it, or it is gone: not ours to finish
            try:
                resp = await self._complete(info)
            finally:
                await asyncio.to_thread(f.close)
            log.info("upload %s: recovered after a restart (%d)", upload_id, resp.status)
            done.append(upload_id)
        return done

    async def sweep(self) -> list[str]:
        """Remove expired uploads now; the ids removed."""
        removed = await asyncio.to_thread(self.uploads.sweep)
        if removed:
            log.info("swept %d expired uploads", len(removed))
        return removed


def _checksum(header: str | None) -> bytes | web.Response | None:
    """The sha1 digest the client announced, None without one, or the 400 answer."""
    if header is None:
        return None
    algorithm, _, value = header.strip().partition(" ")
    if algorithm.lower() != "sha1":
        return problem(400, f"unsupported checksum algorithm {algorithm!r}; use sha1")
    try:
        return base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        return problem(400, "Upload-Checksum value is not base64")


def _new_asset_id() -> str:
    return uuid.uuid4().hex[:16]


TUS = web.AppKey("tus", TusUploads)


def add_tus_routes(app: web.Application, application: Application, *, upload_dir: Path,
                   max_upload_bytes: int, authorise: Authorise,
                   expire_seconds: float = 24 * 3600.0,
                   sweep_seconds: float = 600.0) -> TusUploads:
    """Serve tus 1.0.0 at /v1/uploads on ``app``, and sweep expired uploads every
    ``sweep_seconds`` while it runs (and once at start-up)."""
    tus = TusUploads(application, upload_dir=upload_dir, max_upload_bytes=max_upload_bytes,
                     authorise=authorise, expire_seconds=expire_seconds)
    app[TUS] = tus
    r = app.router
    collection = r.add_resource(ROUTE, name="tus_uploads")
    collection.add_route("OPTIONS", tus.options)
    collection.add_route("POST", tus.create)
    item = r.add_resource(ROUTE + "/{id}", name="tus_upload")
    item.add_route("OPTIONS", tus.options)
    item.add_route("HEAD", tus.head)
    item.add_route("PATCH", tus.patch)
    item.add_route("DELETE", tus.delete)
    item.add_route("POST", tus.override)

    async def sweeper(_: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    await tus.recover()
                    await tus.sweep()
                except Exception:
                    log.warning("upload sweep failed", exc_info=True)
                await asyncio.sleep(sweep_seconds)

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(sweeper)
    return tus
