"""Object store on S3 or any S3-compatible server, through aioboto3.

Two clients per store (each one connection pool shared by every request), with
botocore's "standard" retry mode (exponential backoff with jitter on throttling,
5xx, connection errors; https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html):

- reads (HEAD, GET, the readiness ping) are bounded in time, because a viewer's
  request waits on them: a connect timeout, a read (first byte / between bytes)
  timeout and few attempts, so a dead or hung server fails a call within
  ``attempts x timeout`` instead of botocore's 60 s; and they go through a circuit
  breaker (``self.breaker``, metadata/breaker.py) that, once a few calls in a row
  failed, fails the next ones at once with ``BreakerOpen`` until a probe
  succeeds. A 404 or an unsatisfiable range is an answer from a healthy server,
  not a failure;
- writes (uploads, deletes) can afford to wait and must not be lost to a blip:
  longer timeouts, more attempts, no breaker.

Large files go up as multipart uploads (parts uploaded concurrently, the upload
aborted on failure so no orphan parts are billed); reads are ranged GETs streamed
in chunks. The ETag S3 returns is already a quoted strong validator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from metadata.breaker import CircuitBreaker
from metadata.objects import ObjectStat

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _healthy(exc: BaseException) -> bool:
    """An error the server answered with on purpose (missing key, bad range,
    refused request): the backend is up. 5xx, timeouts and connection errors are
    not."""
    response = getattr(exc, "response", None) or {}
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return _code(exc) in _NOT_FOUND or _code(exc) == "InvalidRange" or 400 <= status < 500


class S3Objects:
    """ObjectStore over ``s3://bucket/prefix`` (see the module docstring).

    The client is created on first use (or by ``await open()``), inside the event
    loop and the process that uses it.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_threshold: int = 64 * 2**20,
        part_size: int = 16 * 2**20,
        concurrency: int = 4,
        max_attempts: int = 2,
        max_pool_connections: int = 64,
        connect_timeout: float = 1.0,
        read_timeout: float = 2.0,
        breaker_failures: int = 3,
        breaker_cooldown: float = 2.0,
        write_attempts: int = 5,
        write_read_timeout: float = 30.0,
        write_deadline: float | None = None,
    ) -> None:
        if part_size < 5 * 2**20:
            raise ValueError("S3 parts (but the last) must be at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.multipart_threshold = max(multipart_threshold, part_size)
        self.part_size = part_size
        self.concurrency = concurrency
        self._max_attempts = max_attempts
        self._max_pool = max_pool_connections
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._write_attempts = write_attempts
        self._write_read_timeout = write_read_timeout
        # One write, its retries included, at most this long (botocore's own read
        # timeout does not end a put whose server stopped): an API request that
        # stores a master answers 503 within it. Parts of a large upload are
        # bounded each.
        self._write_deadline = write_deadline or min(
            60.0, write_attempts * (write_read_timeout + max(connect_timeout, 5.0)))
        self.breaker = CircuitBreaker(
            f"s3://{bucket}", failures=breaker_failures, cooldown=breaker_cooldown
        )
        self._stack = contextlib.AsyncExitStack()
        self._client_: Any = None
        self._writer_: Any = None
        self._lock = asyncio.Lock()

    async def open(self) -> S3Objects:
        async with self._lock:
            if self._client_ is None:
                await self._open()
        return self

    async def _c(self) -> Any:
        if self._client_ is None:
            await self.open()
        return self._client_

    async def _w(self) -> Any:
        if self._writer_ is None:
            await self.open()
        return self._writer_

    async def _open(self) -> None:
        import aioboto3
        from botocore.config import Config

        reads = Config(
            retries={"max_attempts": self._max_attempts, "mode": "standard"},
            max_pool_connections=self._max_pool,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
        )
        writes = Config(
            retries={"max_attempts": self._write_attempts, "mode": "standard"},
            max_pool_connections=max(self.concurrency * 2, 8),
            connect_timeout=max(self._connect_timeout, 5.0),
            read_timeout=self._write_read_timeout,
        )
        session = aioboto3.Session()
        clients = []
        for config in (reads, writes):
            clients.append(await self._stack.enter_async_context(
                session.client(
                    "s3", endpoint_url=self.endpoint_url, region_name=self.region,
                    config=config,
                )
            ))
        self._client_, self._writer_ = clients

    async def _call(self, op: str, **kwargs: Any) -> Any:
        """One read through the breaker (BreakerOpen when it is open)."""
        client = await self._c()
        with self.breaker.guard(_healthy):
            return await getattr(client, op)(**kwargs)

    async def _write(self, op: str, **kwargs: Any) -> Any:
        """One write, on the patient client, bounded as a whole: botocore's read
        timeout does not end a put whose server stopped answering (a SIGSTOPped S3
        kept put_object waiting past 400 s, and the request that stored a master
        with it)."""
        client = await self._w()
        try:
            return await asyncio.wait_for(getattr(client, op)(**kwargs), self._write_deadline)
        except TimeoutError:
            raise TimeoutError(f"s3://{self.bucket}: {op} got no answer within "
                               f"{self._write_deadline:g} s") from None

    def _key(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise ValueError(f"invalid object key: {key!r}")
        return self.prefix + key

    async def put_bytes(self, key: str, data: bytes) -> None:
        await self._write("put_object", Bucket=self.bucket, Key=self._key(key), Body=bytes(data))

    async def adopt_file(self, key: str, path: Path) -> None:
        """Upload, then drop the local file (S3 has no rename from local disk)."""
        await self.put_file(key, path)
        Path(path).unlink(missing_ok=True)

    async def adopt_tree(self, prefix: str, directory: Path,
                         on_progress: Callable[[float], None] | None = None) -> int:
        """Upload every file under ``directory`` (``concurrency`` at a time), then
        remove the directory."""
        directory = Path(directory)
        files = [Path(root) / name for root, _, names in os.walk(directory) for name in names]
        prefix = prefix.rstrip("/")
        gate = asyncio.Semaphore(self.concurrency)
        done = 0

        async def one(f: Path) -> None:
            nonlocal done
            async with gate:
                await self.put_file(f"{prefix}/{f.relative_to(directory).as_posix()}", f)
            done += 1
            if on_progress is not None:
                on_progress(done / len(files))

        await asyncio.gather(*(one(f) for f in files))
        await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, directory, True)
        return len(files)

    async def put_file(self, key: str, path: Path) -> None:
        path = Path(path)
        size = path.stat().st_size
        if size < self.multipart_threshold:
            data = await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
            await self.put_bytes(key, data)
            return
        await self._multipart(self._key(key), path, size)

    async def _multipart(self, s3key: str, path: Path, size: int) -> None:
        loop = asyncio.get_running_loop()
        created = await self._write("create_multipart_upload", Bucket=self.bucket, Key=s3key)
        upload_id = created["UploadId"]
        n_parts = (size + self.part_size - 1) // self.part_size
        gate = asyncio.Semaphore(self.concurrency)

        def read_part(number: int) -> bytes:
            with open(path, "rb") as f:
                f.seek((number - 1) * self.part_size)
                return f.read(self.part_size)

        async def upload(number: int) -> dict[str, Any]:
            async with gate:  # bounds memory: at most `concurrency` parts in flight
                body = await loop.run_in_executor(None, read_part, number)
                done = await self._write(
                    "upload_part",
                    Bucket=self.bucket, Key=s3key, UploadId=upload_id,
                    PartNumber=number, Body=body,
                )
                return {"PartNumber": number, "ETag": done["ETag"]}

        try:
            parts = await asyncio.gather(*(upload(n) for n in range(1, n_parts + 1)))
            await self._write(
                "complete_multipart_upload", Bucket=self.bucket, Key=s3key, UploadId=upload_id,
                MultipartUpload={"Parts": list(parts)},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self._write(
                    "abort_multipart_upload", Bucket=self.bucket, Key=s3key, UploadId=upload_id
                )
            raise

    async def get_bytes(self, key: str) -> bytes:
        try:
            obj = await self._call("get_object", Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _code(exc) in _NOT_FOUND:
                raise KeyError(key) from None
            raise
        stream = obj["Body"]
        try:
            data: bytes = await stream.read()
        finally:
            stream.close()
        return data

    async def stat(self, key: str) -> ObjectStat | None:
        try:
            head = await self._call("head_object", Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise
        etag = str(head["ETag"])
        if not etag.startswith('"'):
            etag = f'"{etag}"'
        return ObjectStat(
            size=int(head["ContentLength"]), etag=etag,
            mtime=head["LastModified"].timestamp(),
        )

    async def iter_range(
        self, key: str, start: int = 0, end: int | None = None, chunk: int = 256 * 1024
    ) -> AsyncIterator[bytes]:
        if end is not None and end <= start:
            return
        rng = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        try:
            obj = await self._call(
                "get_object", Bucket=self.bucket, Key=self._key(key), Range=rng
            )
        except Exception as exc:
            if _code(exc) in _NOT_FOUND:
                raise KeyError(key) from None
            if _code(exc) == "InvalidRange":  # start at or past the end: nothing
                return
            raise
        stream = obj["Body"]
        try:
            while True:
                # Body reads fail too (a server that dies or hangs mid-object):
                # they count against the breaker like the call that opened them.
                try:
                    data = await stream.read(chunk)
                except Exception:
                    self.breaker.failure()
                    raise
                if not data:
                    break
                yield data
        finally:
            stream.close()

    def local_path(self, key: str) -> Path | None:
        return None

    async def read_url(self, key: str, expires: float) -> str | None:
        """A presigned GET (signed here, no request made: a missing object shows
        when it is read, as a 404)."""
        client = await self._c()
        url: str = await client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)},
            ExpiresIn=max(1, int(expires)))
        return url

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix.strip("/"):
            raise ValueError("refusing to delete the whole store")
        paginator = (await self._w()).get_paginator("list_objects_v2")
        count = 0
        pages = aiter(paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)))
        while True:
            try:  # each listing bounded as a write is (_write)
                page = await asyncio.wait_for(anext(pages), self._write_deadline)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise TimeoutError(f"s3://{self.bucket}: listing {prefix} got no answer within "
                                   f"{self._write_deadline:g} s") from None
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            for i in range(0, len(keys), 1000):  # DeleteObjects takes 1000 at most
                batch = keys[i : i + 1000]
                result = await self._write(
                    "delete_objects", Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                errors = result.get("Errors") or []
                if errors:
                    raise OSError(f"S3 delete under {prefix!r} failed: {errors[0]}")
                count += len(batch)
        return count

    async def ping(self) -> None:
        await self._call("head_bucket", Bucket=self.bucket)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client_ = self._writer_ = None
