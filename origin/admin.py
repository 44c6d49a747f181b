"""Admin API (/v1): upload a master, follow its job, list and delete assets.

Uploads are streamed (multipart/form-data, the master in the part named ``file``)
to a temp file in ``upload_dir`` with a byte budget: past ``max_upload_bytes`` the
request is answered 413 and the temp file removed, so nothing is left behind. A
complete upload is stored under ``master_key(id)``, the asset row created QUEUED,
and ``submit_job(id, local master path, options)`` starts the engine job.

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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, hdrs, web

from cdn.purge import purge_asset
from metadata.cache import Cache, invalidate_asset
from metadata.local_objects import LocalObjects
from metadata.models import Asset, JobState, Rendition, master_key, media_prefix
from metadata.objects import ObjectStore
from metadata.store import MetadataStore
from origin.openapi import OPENAPI
from origin.playback import ASSET_RE

log = logging.getLogger(__name__)

SubmitJob = Callable[[str, Path, dict[str, Any]], Awaitable[None]]
_OPTION_FIELDS = ("ladder", "preset", "segment_seconds", "gop_seconds", "copy", "encoder")


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


def asset_json(asset: Asset, renditions: list[Rendition] | None = None) -> dict[str, Any]:
    doc = asdict(asset)
    doc["state"] = str(asset.state)
    if renditions is not None:
        doc["renditions"] = [
            {
                "id": r.id, "kind": r.kind, "codec": r.codec, "codec_string": r.codec_string,
                "bitrate": r.bitrate, "avg_bitrate": r.avg_bitrate,
                "peak_bitrate": r.peak_bitrate, "width": r.width, "height": r.height,
                "frame_rate": r.frame_rate, "sample_rate": r.sample_rate,
                "channels": r.channels, "language": r.language,
            }
            for r in renditions
        ]
    return doc


class _TooLarge(Exception):
    pass


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
        submit_job: SubmitJob | None,
        edges: Sequence[str] = (),
    ) -> None:
        self.edges = tuple(edges)
        self._background: set[asyncio.Task[None]] = set()
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
        self.submit_job = submit_job

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
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    def _unauthorised(self) -> web.Response:
        resp = problem(401, "missing or wrong API key")
        resp.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="cdlc"'
        return resp

    async def _invalidate(self, asset_id: str) -> None:
        try:
            await invalidate_asset(self.cache, asset_id)
        except Exception:  # entries then expire by TTL; /readyz reports the cache
            log.warning("cache invalidation of %s failed", asset_id, exc_info=True)

    # -- POST /v1/assets ------------------------------------------------------------
    async def create(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._unauthorised()
        length = request.content_length
        if length is not None and length > self.max_upload_bytes + 64 * 1024:
            # Refuse before reading a byte; the multipart envelope is allowed 64 KiB.
            return problem(413, f"upload larger than {self.max_upload_bytes} bytes")
        if not request.content_type.startswith("multipart/"):
            return problem(415, "send multipart/form-data with the master in part 'file'")
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
            return await self._accept(tmp, filename, fields)
        except _TooLarge:
            return problem(413, f"upload larger than {self.max_upload_bytes} bytes")
        except ValueError as exc:
            return problem(400, str(exc))
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    async def _receive(self, part: BodyPartReader) -> Path:
        """Stream the part to a temp file; _TooLarge (file removed) past the budget."""
        loop = asyncio.get_running_loop()
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.upload_dir / f"upload-{uuid.uuid4().hex}.part"
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
        asset_id = fields.get("id") or uuid.uuid4().hex[:16]
        if not ASSET_RE.fullmatch(asset_id):
            return problem(400, "invalid asset id: 1-64 letters, digits, '-' or '_'")
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
        options.setdefault("source_name", filename)
        if await self.store.get_asset(asset_id) is not None:
            return problem(409, f"asset {asset_id} exists; DELETE it first")
        key = master_key(asset_id)
        if isinstance(self.objects, LocalObjects):
            await self.objects.adopt_file(key, tmp)  # a rename: no second copy of the master
            master = self.objects.local_path(key)
            assert master is not None
        else:
            await self.objects.put_file(key, tmp)
            # The job needs the master on local disk; keep the upload for it.
            master = self.upload_dir / f"{asset_id}.master"
            os.replace(tmp, master)
        asset = Asset(id=asset_id, state=JobState.QUEUED, source_name=filename)
        await self.store.put_asset(asset)
        await self._invalidate(asset_id)
        if self.submit_job is not None:
            try:
                await self.submit_job(asset_id, master, options)
            except Exception as exc:
                log.exception("submitting the job of %s failed", asset_id)
                await self.store.set_state(asset_id, JobState.FAILED, error=f"submit: {exc}")
                return problem(500, f"could not start the job: {exc}")
        return _json(asset_json(asset), status=202)

    # -- GET /v1/assets/{id} ------------------------------------------------------------
    async def get(self, request: web.Request) -> web.StreamResponse:
        asset_id = request.match_info["id"]
        if not ASSET_RE.fullmatch(asset_id):
            return problem(400, "invalid asset id")
        asset = await self.store.get_asset(asset_id)
        if asset is None:
            return problem(404, f"no asset {asset_id}")
        return _json(asset_json(asset, await self.store.get_renditions(asset_id)))

    # -- GET /v1/assets ---------------------------------------------------------------
    async def list(self, request: web.Request) -> web.StreamResponse:
        after = request.query.get("after") or None
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            return problem(400, "limit must be an integer")
        if not 1 <= limit <= 1000:
            return problem(400, "limit must be within 1..1000")
        assets = await self.store.list_assets(limit=limit, after=after)
        nxt = assets[-1].id if len(assets) == limit else None
        return _json({"items": [asset_json(a) for a in assets], "next": nxt})

    # -- DELETE /v1/assets/{id} ---------------------------------------------------------
    async def delete(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._unauthorised()
        asset_id = request.match_info["id"]
        if not ASSET_RE.fullmatch(asset_id):
            return problem(400, "invalid asset id")
        # What the edges may hold, read before the index is gone.
        counts = {r.id: len(await self.store.get_segments(asset_id, r.id))
                  for r in await self.store.get_renditions(asset_id)}
        # Metadata first: once the row is gone nothing is served (after the cache
        # entry goes too), then the bytes, then the edges' copies.
        existed = await self.store.delete_asset(asset_id)
        await self._invalidate(asset_id)
        removed = await self.objects.delete_prefix(media_prefix(asset_id) + "/")
        removed += await self.objects.delete_prefix(f"masters/{asset_id}/")
        if not existed and removed == 0:
            return problem(404, f"no asset {asset_id}")
        if self.edges and counts:
            await self._purge_edges(asset_id, counts)
        return web.Response(status=204)

    async def _purge_edges(self, asset_id: str, counts: dict[str, int]) -> None:
        """Takedown at the CDN: purge now, and once more a second later in the
        background to catch a fetch that was in flight during the delete."""
        result = await purge_asset(self.edges, asset_id, counts, repeat_after=0)
        if not result.ok:
            log.warning("purge of %s incomplete: %s", asset_id, result.failed[:3])

        async def again() -> None:
            await asyncio.sleep(1.0)
            await purge_asset(self.edges, asset_id, counts, repeat_after=0)

        task = asyncio.create_task(again())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return _json(OPENAPI)
