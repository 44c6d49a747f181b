"""Fetch a master named by URI into a local file, for ingest from a source URI
(gRPC CreateAsset; the REST API can reuse it).

``s3://bucket/key`` is read through aioboto3 (the configured S3 endpoint and the
usual AWS credentials); ``http://`` and ``https://`` through aiohttp. Either way
the body is streamed into the destination file under a byte budget (the same
``max_upload_bytes`` as an upload), and on any failure or cancellation the file
is removed, so nothing is left behind.

HTTP fetches are made on a caller's behalf, so they must not reach what the
caller could not (server-side request forgery, OWASP SSRF prevention cheat
sheet): every address a host name resolves to, and every IP-literal host, must be
public; private (RFC 1918, RFC 4193), loopback, link-local (169.254/16: cloud
metadata), multicast, reserved and unspecified addresses are refused with
SourceRefused unless ``allow_private`` is set. The check sits in the resolver
that aiohttp connects with, so a name that resolves differently on the second
lookup (DNS rebinding) is checked on the lookup actually used; redirects are
followed by hand, at most ``max_redirects``, and each target is checked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from metadata.jobs import RequestError

_CHUNK = 1 << 20
_REDIRECTS = (301, 302, 303, 307, 308)


class SourceRefused(Exception):
    """The source may not be fetched on the caller's behalf (a private address, or
    the object store denied access): PERMISSION_DENIED / 403."""


class SourceTooLarge(ValueError):
    """The source is larger than the byte budget: RESOURCE_EXHAUSTED / 413."""


class SourceUnavailable(ConnectionError):
    """The source could not be reached, or answered with a server error; a retry
    may work: UNAVAILABLE / 502."""


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int
    allow_private: bool = False
    max_redirects: int = 5
    timeout_seconds: float = 600.0       # the whole transfer
    connect_timeout_seconds: float = 10.0
    s3_endpoint: str | None = None


def is_public(address: str) -> bool:
    """True for a globally routable unicast address (IPv4-mapped IPv6 judged as
    the IPv4 address it maps)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


def _check_address(host: str, address: str, policy: FetchPolicy) -> None:
    if not policy.allow_private and not is_public(address):
        raise SourceRefused(f"source host {host} is at a non-public address ({address}); "
                            "fetching from private networks is not allowed")


class _PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, refusing names that resolve to non-public addresses."""

    def __init__(self, policy: FetchPolicy) -> None:
        self._inner = DefaultResolver()
        self._policy = policy

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            _check_address(host, result["host"], self._policy)
        return results

    async def close(self) -> None:
        await self._inner.close()


def source_name(uri: str) -> str:
    """The file name a source URI ends with ("master" when it names none)."""
    try:
        name = PurePosixPath(unquote(urlsplit(uri).path)).name
    except ValueError:  # not a URL: fetch_source says so
        return "master"
    return name or "master"


async def fetch_source(uri: str, dest: Path, policy: FetchPolicy) -> None:
    """Stream ``uri`` into ``dest``; RequestError for a URI that cannot name a
    master, SourceRefused, SourceTooLarge, SourceUnavailable. ``dest`` exists
    only when this returns."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # an unclosed IPv6 bracket
        raise RequestError(f"source_uri {uri!r} is not a valid URL: {exc}") from exc
    try:
        if parts.scheme == "s3":
            await _fetch_s3(parts.netloc, parts.path.lstrip("/"), dest, policy)
        elif parts.scheme in ("http", "https"):
            await _fetch_http(uri, dest, policy)
        else:
            raise RequestError(f"source_uri must be s3://, http:// or https://, got {uri!r}")
    except BaseException:
        with contextlib.suppress(OSError):
            dest.unlink()
        raise


class FileSink:
    """A destination file with a byte budget: SourceTooLarge past ``max_bytes``
    (the caller removes the file). Writes run off the event loop; the file is
    opened and closed on it (quick), so a cancelled caller never leaves a handle
    open or a write racing the close: the exit waits for the write in flight."""

    def __init__(self, dest: Path, max_bytes: int, what: str = "source") -> None:
        self.dest, self.max_bytes, self.what, self.written = dest, max_bytes, what, 0
        self._file: IO[bytes] | None = None
        self._pending: asyncio.Future[int] | None = None

    async def __aenter__(self) -> FileSink:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.dest, "wb")  # closed in __aexit__
        return self

    async def write(self, chunk: bytes) -> None:
        self.written += len(chunk)
        if self.written > self.max_bytes:
            raise SourceTooLarge(f"{self.what} larger than {self.max_bytes} bytes")
        assert self._file is not None
        self._pending = asyncio.get_running_loop().run_in_executor(
            None, self._file.write, chunk)
        await self._pending

    async def __aexit__(self, *exc: object) -> None:
        if self._pending is not None and not self._pending.done():
            await asyncio.wait([self._pending])
        if self._file is not None:
            self._file.close()


async def _fetch_http(uri: str, dest: Path, policy: FetchPolicy) -> None:
    timeout = aiohttp.ClientTimeout(total=policy.timeout_seconds,
                                    sock_connect=policy.connect_timeout_seconds)
    connector = aiohttp.TCPConnector(resolver=_PublicOnlyResolver(policy), use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        url = uri
        for _ in range(policy.max_redirects + 1):
            host = _http_host(url, uri)
            with contextlib.suppress(ValueError):  # an IP literal skips the resolver
                ipaddress.ip_address(host)
                _check_address(host, host, policy)
            try:
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        location = resp.headers["Location"]
                        try:
                            url = urljoin(url, location)
                        except ValueError as exc:
                            raise RequestError(f"source {uri} redirected to {location!r}: "
                                               f"not a valid URL ({exc})") from exc
                        continue
                    await _receive(resp, uri, dest, policy)
                    return
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if isinstance(exc.__cause__, SourceRefused):
                    raise exc.__cause__ from None
                raise SourceUnavailable(f"cannot fetch {uri}: {_why(exc)}") from exc
            except aiohttp.ClientPayloadError as exc:  # a body cut short, a bad chunk
                raise SourceUnavailable(f"cannot fetch {uri}: the transfer broke off "
                                        f"({_why(exc)})") from exc
            except aiohttp.ClientResponseError as exc:  # no HTTP, or malformed HTTP
                raise SourceUnavailable(f"cannot fetch {uri}: not a valid HTTP answer "
                                        f"({_why(exc)})") from exc
        raise RequestError(f"source {uri} redirects more than {policy.max_redirects} times")


def _http_host(url: str, uri: str) -> str:
    """The host of ``url`` (``uri`` itself, or where it redirected), when aiohttp
    can fetch it; RequestError naming it otherwise."""
    what = "source_uri" if url == uri else f"source {uri} redirected to"
    try:
        target = urlsplit(url)
        yarl.URL(url)  # as aiohttp parses it: a port out of range, a bad IPv6 literal
    except ValueError as exc:
        raise RequestError(f"{what} {url!r}: not a valid URL ({exc})") from exc
    if target.scheme not in ("http", "https") or not target.hostname:
        raise RequestError(f"{what} {url!r}: not an http(s) URL")
    return target.hostname


def _why(exc: BaseException) -> str:
    """The first line of what aiohttp says (its parser errors span several; a
    cut-short body names its parser's error as its cause; botocore wraps it), or
    the exception's name where it says nothing (a timeout)."""
    inner: BaseException = exc
    wrapped = getattr(exc, "kwargs", None)  # botocore keeps the HTTP client's error
    if isinstance(wrapped, dict) and isinstance(wrapped.get("error"), BaseException):
        inner = wrapped["error"]
    cause = inner.__cause__
    if cause is not None and getattr(cause, "message", None):
        inner = cause
    text = getattr(inner, "message", None) or str(inner)
    line = str(text).strip().splitlines()[0].rstrip(":") if str(text).strip() else ""
    return line[:200] or type(exc).__name__


async def _receive(resp: aiohttp.ClientResponse, uri: str, dest: Path,
                   policy: FetchPolicy) -> None:
    if resp.status >= 500:
        raise SourceUnavailable(f"source {uri} answered {resp.status}")
    if resp.status != 200:
        raise RequestError(f"source {uri} answered {resp.status}")
    if resp.content_length is not None and resp.content_length > policy.max_bytes:
        raise SourceTooLarge(f"source larger than {policy.max_bytes} bytes "
                             f"({resp.content_length})")
    async with FileSink(dest, policy.max_bytes) as sink:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            await sink.write(chunk)


async def _fetch_s3(bucket: str, key: str, dest: Path, policy: FetchPolicy) -> None:
    if not bucket or not key:
        raise RequestError("an s3 source_uri is s3://bucket/key")
    import aioboto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = policy.s3_endpoint or os.environ.get("CDLC_S3_ENDPOINT") or None
    session = aioboto3.Session()
    where = f"s3://{bucket}/{key}"
    config = Config(connect_timeout=policy.connect_timeout_seconds)
    try:
        # The whole transfer under one bound, as for HTTP (botocore's own is per read).
        async with asyncio.timeout(policy.timeout_seconds), \
                session.client("s3", endpoint_url=endpoint, config=config) as client:
            obj: dict[str, Any] = await client.get_object(Bucket=bucket, Key=key)
            size = int(obj.get("ContentLength") or 0)
            if size > policy.max_bytes:
                raise SourceTooLarge(f"source larger than {policy.max_bytes} bytes ({size})")
            body = obj["Body"]
            try:
                async with FileSink(dest, policy.max_bytes) as sink:
                    while chunk := await body.read(_CHUNK):
                        await sink.write(chunk)
            finally:
                body.close()
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "NoSuchBucket", "404"):
            raise RequestError(f"no object {where}") from exc
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            raise SourceRefused(f"access to {where} denied") from exc
        raise SourceUnavailable(f"cannot read {where}: {code}") from exc
    except BotoCoreError as exc:
        raise SourceUnavailable(f"cannot read {where}: {_why(exc)}") from exc
    except TimeoutError as exc:
        raise SourceUnavailable(f"cannot read {where}: not read within "
                                f"{policy.timeout_seconds:g} s") from exc
    except aiohttp.ClientError as exc:  # a body cut short: botocore passes it through
        raise SourceUnavailable(f"cannot read {where}: the transfer broke off "
                                f"({_why(exc)})") from exc
