"""Admin API (/v1): upload a master, follow its job, list, retry and delete assets.

Thin over the application interface (origin.application): a handler parses the
request, calls one operation and maps its answer or its exception (RequestError
400, NotFound 404, AlreadyExists and FailedPrecondition 409, StorageFull 507) to
an RFC 9457 problem body.

Uploads are streamed (multipart/form-data, the master in the part named ``file``)
to a temp file in ``upload_dir`` with a byte budget: past ``max_upload_bytes`` the
request is answered 413 and the temp file removed, so nothing is left behind; a
malformed body is a 400. The complete upload goes to ``application.submit``,
which checks the options before anything is stored.

Write endpoints (POST, DELETE) need ``Authorization: Bearer <key>`` or
``X-API-Key: <key>`` when an API key is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from metadata.cache import Cache
from metadata.faults import backend_errors, is_no_space
from metadata.jobs import AlreadyExists, FailedPrecondition, Job, NotFound, RequestError
from metadata.local_objects import LocalObjects
from metadata.models import Asset, JobState, Rendition
from metadata.objects import ObjectStore
from metadata.store import MetadataStore
from origin.application import Application, AssetView, NotQueued, StorageFull
from origin.auth import (
    ASSETS_READ,
    ASSETS_WRITE,
    Authenticator,
    AuthUnavailable,
    PermissionDenied,
    Unauthenticated,
)
from origin.fetch import (
    FetchPolicy,
    SourceRefused,
    SourceTooLarge,
    SourceUnavailable,
    fetch_source,
    source_name,
)
from origin.openapi import OPENAPI
from origin.playback import ASSET_RE

log = logging.getLogger(__name__)

_OPTION_FIELDS = ("ladder", "preset", "segment_seconds", "gop_seconds", "copy", "encoder",
                  "vmaf", "codecs")
# The application's refusals, as HTTP statuses (origin.application).
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (RequestError, 400), (NotFound, 404), (AlreadyExists, 409), (FailedPrecondition, 409),
    (StorageFull, 507),
)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(data, separators=(",", ":")).encode(),
        content_type="application/json",
    )


def problem(status: int, detail: str) -> web.Response:
    """An error body as RFC 9457 problem details."""
    return web.Response(
        status=status,
        body=json.dumps({"status": status, "title": detail}).encode(),
        content_type="application/problem+json",
    )


def refusal(exc: BaseException) -> web.Response | None:
    """The problem response for one of the application's refusals, else None."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            text = str(exc.args[0]) if exc.args else str(exc)
            return problem(status, text)
    return None


def backend_fault(exc: BaseException) -> web.Response | None:
    """507 for a full disk, 503 (with Retry-After) for a backend that is out (the
    store, the object store, the cache), else None: the request was not wrong."""
    if is_no_space(exc):
        return problem(507, "no space left on the origin's disk; nothing was kept")
    if isinstance(exc, NotQueued):
        # Kept, not lost: the answer says so, and how to start it.
        resp = problem(503, f"{exc}: POST /v1/assets/{exc.asset_id}/retry")
        resp.headers[hdrs.RETRY_AFTER] = "5"
        return resp
    if isinstance(exc, backend_errors()):
        resp = problem(503, f"a backend is unavailable ({type(exc).__name__}); retry later")
        resp.headers[hdrs.RETRY_AFTER] = "5"
        return resp
    return None


async def auth_refusal(authenticator: Authenticator, request: web.Request,
                       scope: str) -> web.Response | None:
    """The 401/403/503 answer when the caller may not do ``scope``, else None."""
    try:
        await authenticator.check_http(request.headers.get(hdrs.AUTHORIZATION),
                                       request.headers.get("X-API-Key"), scope)
    except Unauthenticated as exc:
        resp = problem(401, str(exc))
        resp.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="cdlc"'
        return resp
    except PermissionDenied as exc:
        return problem(403, str(exc))
    except AuthUnavailable as exc:
        return problem(503, str(exc))
    return None


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "asset_id": job.asset_id, "state": str(job.state),
        "progress": job.progress, "error": job.error, "attempt": job.attempt,
        "max_attempts": job.max_attempts, "lease_holder": job.lease_holder,
        "lease_expires": job.lease_expires or None, "queue": job.queue,
        "created_at": job.created_at, "updated_at": job.updated_at,
        "request": asdict(job.request),
    }


def view_json(view: AssetView) -> dict[str, Any]:
    doc = asset_json(view.asset, view.renditions, view.segments)
    doc["job"] = job_json(view.job) if view.job is not None else None
    return doc


def asset_json(asset: Asset, renditions: list[Rendition] | None = None,
               segments: dict[str, int] | None = None) -> dict[str, Any]:
    doc = asdict(asset)
    doc["state"] = str(asset.state)
    doc["playback"] = {"hls": f"/vod/{asset.id}/master.m3u8",
                       "dash": f"/vod/{asset.id}/manifest.mpd"}
    if renditions is not None:
        doc["renditions"] = [
            {
                "id": r.id, "kind": r.kind, "codec": r.codec, "codec_string": r.codec_string,
                "bitrate": r.bitrate, "avg_bitrate": r.avg_bitrate,
                "peak_bitrate": r.peak_bitrate, "width": r.width, "height": r.height,
                "frame_rate": r.frame_rate, "sample_rate": r.sample_rate,
                "channels": r.channels, "language": r.language, "vmaf": r.vmaf,
                "analysis": json.loads(r.analysis) if r.analysis else None,
                **({"tiles": r.tiles} if r.kind == "image" else {}),
                **({"segments": segments.get(r.id, 0)} if segments is not None else {}),
            }
            for r in renditions
        ]
        if any(r.kind == "image" for r in renditions):
            doc["playback"]["poster"] = f"/vod/{asset.id}/poster.jpg"
            doc["playback"]["storyboard"] = f"/vod/{asset.id}/storyboard.vtt"
    return doc


class _TooLarge(Exception):
    pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


class Admin:
    def __init__(
        self,
        store: MetadataStore,
        objects: ObjectStore,
        cache: Cache,
        *,
        api_key: str | None,
        max_upload_bytes: int,
        upload_dir: Path | None,
        application: Application | None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.store = store
        self.objects = objects
        self.cache = cache
        self.api_key = api_key
        self.max_upload_bytes = max_upload_bytes
        if upload_dir is None:
            # Beside the objects when local, so storing the master is a rename.
            upload_dir = (
                objects.root / ".uploads" if isinstance(objects, LocalObjects)
                else Path(tempfile.gettempdir()) / "cdlc-uploads"
            )
        self.upload_dir = Path(upload_dir)
        self.application = application
        # One authenticator for REST and gRPC (API key or JWT, scopes); without
        # one, the API key alone as before.
        self.authenticator = authenticator or Authenticator(api_key=api_key)
        # Pulls of masters from s3:// or http(s):// on the caller's behalf.
        self.fetch_policy = FetchPolicy(
            max_bytes=max_upload_bytes,
            allow_private=os.environ.get("CDLC_FETCH_ALLOW_PRIVATE") == "1",
            s3_endpoint=os.environ.get("CDLC_S3_ENDPOINT"))

    def _app(self) -> Application:
        if self.application is None:
            raise web.HTTPServiceUnavailable(text="no engine behind this origin")
        return self.application

    def _authorised(self, request: web.Request) -> bool:
        if not self.api_key:
            return True
        given = request.headers.get("X-API-Key")
        if given is None:
            auth = request.headers.get(hdrs.AUTHORIZATION, "")
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer":
                return False
            given = value.strip()
        # aiohttp keeps a header's non-UTF-8 bytes as surrogates: compare the bytes.
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                   self.api_key.encode())

    def _unauthorised(self) -> web.Response:
        resp = problem(401, "missing or wrong API key")
        resp.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="cdlc"'
        return resp

    async def _refused(self, request: web.Request, scope: str) -> web.Response | None:
        return await auth_refusal(self.authenticator, request, scope)

    # -- POST /v1/assets ------------------------------------------------------------
    async def create(self, request: web.Request) -> web.StreamResponse:
        if (refused := await self._refused(request, ASSETS_WRITE)) is not None:
            return refused
        length = request.content_length
        if length is not None and length > self.max_upload_bytes + 64 * 1024:
            # Refuse before reading a byte; the multipart envelope is allowed 64 KiB.
            return problem(413, f"upload larger than {self.max_upload_bytes} bytes")
        if request.content_type == "application/json":
            return await self._pull(request)
        if not request.content_type.startswith("multipart/"):
            return problem(415, "send multipart/form-data with the master in part 'file', "
                                "or JSON {source_uri, id, options} to pull it")
        fields: dict[str, str] = {}
        tmp: Path | None = None
        filename = ""
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    return problem(400, "nested multipart is not supported")
                if part.name == "file":
                    if tmp is not None:
                        return problem(400, "more than one 'file' part")
                    filename = Path(part.filename or "master").name
                    tmp = await self._receive(part)
                elif part.name:
                    text = await part.read(decode=True)
                    if len(text) > 64 * 1024:
                        return problem(400, f"field {part.name!r} too long")
                    fields[part.name] = text.decode("utf-8", "replace")
            if tmp is None:
                return problem(400, "no 'file' part in the upload")
            if tmp.stat().st_size == 0:  # as tus refuses it: no job for nothing
                return problem(400, "an empty file is not a master")
            return await self._accept(tmp, filename, fields)
        except _TooLarge:
            return problem(413, f"upload larger than {self.max_upload_bytes} bytes")
        except (ValueError, LookupError, AssertionError, web.HTTPBadRequest,
                HttpProcessingError) as exc:
            # aiohttp's multipart reader raises these for a malformed envelope or
            # part header (a control character, a bad Content-Disposition).
            refused = refusal(exc)
            if refused is not None:
                return refused
            return problem(400, f"malformed multipart body: {_one_line(exc)}")
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    async def _pull(self, request: web.Request) -> web.Response:
        """POST /v1/assets with JSON {source_uri, id?, options?}: the master is
        fetched from s3:// or http(s):// (origin.fetch: private and loopback
        addresses refused unless allowed) into a temp file, then submitted."""
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return problem(400, "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("source_uri"), str):
            return problem(400, "send {\"source_uri\": \"s3://bucket/key\" or \"https://...\"}")
        options = body.get("options") or {}
        if not isinstance(options, dict):
            return problem(400, "options must be a JSON object")
        asset_id = body.get("id")
        if asset_id is not None and not isinstance(asset_id, str):
            return problem(400, "id must be text")
        uri = body["source_uri"]
        try:  # bad options or a taken id: refused before the master is fetched
            await self._app().check(asset_id or None, options, source_name=source_name(uri))
        except Exception as exc:
            refused = refusal(exc) or backend_fault(exc)
            if refused is None:
                raise
            return refused
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.upload_dir / f"pull-{uuid.uuid4().hex}.{os.getpid()}.part"
        try:
            await fetch_source(uri, tmp, self.fetch_policy)
        except SourceRefused as exc:
            tmp.unlink(missing_ok=True)
            return problem(403, str(exc))
        except SourceTooLarge as exc:
            tmp.unlink(missing_ok=True)
            return problem(413, str(exc))
        except (SourceUnavailable, OSError) as exc:
            tmp.unlink(missing_ok=True)
            return problem(502, f"could not fetch the source: {_one_line(exc)}")
        except ValueError as exc:  # a URI that is not s3:// or http(s)://
            tmp.unlink(missing_ok=True)
            return problem(400, str(exc))
        try:
            view = await self._app().submit(asset_id or None, tmp, options,
                                            source_name=source_name(uri))
        except Exception as exc:
            refused = refusal(exc) or backend_fault(exc)
            if refused is None:
                log.exception("submitting the pull of %s failed", uri)
                return problem(500, "could not start the job")
            return refused
        return _json(view_json(view), status=202)

    async def _receive(self, part: BodyPartReader) -> Path:
        """Stream the part to a temp file; _TooLarge (file removed) past the budget."""
        loop = asyncio.get_running_loop()
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        # The pid in the name lets a sweep tell a dead upload's file (engine.sweep).
        tmp = self.upload_dir / f"upload-{uuid.uuid4().hex}.{os.getpid()}.part"
        f = await loop.run_in_executor(None, open, tmp, "wb")
        written = 0
        try:
            while True:
                chunk = await part.read_chunk(1024 * 1024)
                if not chunk:
                    break
                written += len(chunk)
                if written > self.max_upload_bytes:
                    raise _TooLarge
                await loop.run_in_executor(None, f.write, chunk)
        except BaseException:
            await loop.run_in_executor(None, f.close)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        await loop.run_in_executor(None, f.close)
        return tmp

    async def _accept(self, tmp: Path, filename: str, fields: dict[str, str]) -> web.Response:
        options: dict[str, Any] = {}
        if "options" in fields:
            try:
                options = json.loads(fields["options"])
            except json.JSONDecodeError:
                return problem(400, "options must be a JSON object")
            if not isinstance(options, dict):
                return problem(400, "options must be a JSON object")
        for name in _OPTION_FIELDS:
            if name in fields:
                options[name] = fields[name]
        try:
            # The application owns the file from here: kept, or removed on refusal.
            view = await self._app().submit(fields.get("id") or None, tmp, options,
                                            source_name=filename)
        except Exception as exc:
            refused = refusal(exc) or backend_fault(exc)
            if refused is None:
                log.exception("submitting %s failed", fields.get("id"))
                return problem(500, "could not start the job")
            return refused
        return _json(view_json(view), status=202)

    # -- GET /v1/assets/{id} ------------------------------------------------------------
    async def get(self, request: web.Request) -> web.StreamResponse:
        if (refused := await self._refused(request, ASSETS_READ)) is not None:
            return refused
        asset_id = request.match_info["id"]
        if not ASSET_RE.fullmatch(asset_id):
            return problem(400, "invalid asset id")
        try:
            return _json(view_json(await self._app().get(asset_id)))
        except NotFound as exc:
            return problem(404, str(exc.args[0]))

    # -- GET /v1/assets ---------------------------------------------------------------
    async def list(self, request: web.Request) -> web.StreamResponse:
        if (refused := await self._refused(request, ASSETS_READ)) is not None:
            return refused
        after = request.query.get("after") or None
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            return problem(400, "limit must be an integer")
        if not 1 <= limit <= 1000:
            return problem(400, "limit must be within 1..1000")
        state = request.query.get("state") or None
        if state is not None and state not in {s.value for s in JobState}:
            return problem(400, f"unknown state {state!r}; use one of "
                                f"{', '.join(s.value for s in JobState)}")
        assets = await self._app().list_assets(
            limit=limit, after=after, state=JobState(state) if state else None)
        nxt = assets[-1].id if len(assets) == limit else None
        return _json({"items": [asset_json(a) for a in assets], "next": nxt})

    # -- DELETE /v1/assets/{id} ---------------------------------------------------------
    async def delete(self, request: web.Request) -> web.StreamResponse:
        if (refused := await self._refused(request, ASSETS_WRITE)) is not None:
            return refused
        asset_id = request.match_info["id"]
        if not ASSET_RE.fullmatch(asset_id):
            return problem(400, "invalid asset id")
        try:
            await self._app().delete(asset_id)
        except NotFound as exc:
            return problem(404, str(exc.args[0]))
        from origin.webhooks import WEBHOOKS  # origin.webhooks imports this module

        if (hooks := request.app.get(WEBHOOKS)) is not None:
            await hooks.record_deleted(asset_id)
        return web.Response(status=204)

    # -- POST /v1/assets/{id}/retry -----------------------------------------------------
    async def retry(self, request: web.Request) -> web.StreamResponse:
        if (refused := await self._refused(request, ASSETS_WRITE)) is not None:
            return refused
        asset_id = request.match_info["id"]
        if not ASSET_RE.fullmatch(asset_id):
            return problem(400, "invalid asset id")
        try:
            job = await self._app().retry(asset_id)
        except Exception as exc:
            refused = refusal(exc) or backend_fault(exc)
            if refused is None:
                raise
            return refused
        return _json(job_json(job), status=202)

    # -- GET /v1/jobs ------------------------------------------------------------------
    async def jobs(self, request: web.Request) -> web.StreamResponse:
        if (refused := await self._refused(request, ASSETS_READ)) is not None:
            return refused
        state = request.query.get("state") or None
        if state is not None and state not in {s.value for s in JobState}:
            return problem(400, f"unknown state {state!r}")
        asset_id = request.query.get("asset") or None
        if asset_id is not None and not ASSET_RE.fullmatch(asset_id):
            return problem(400, "invalid asset id")
        jobs = await self._app().jobs(state=JobState(state) if state else None,
                                      asset_id=asset_id)
        return _json({"items": [job_json(j) for j in jobs]})

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return _json(OPENAPI)
