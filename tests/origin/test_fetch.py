"""Pulling a master from a URL (origin.fetch) when the source breaks: every fault
is SourceUnavailable (502 / UNAVAILABLE) with one line saying what broke, and no
file is left behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metadata.jobs import RequestError
from origin.fetch import FetchPolicy, SourceUnavailable, fetch_source
from tests.origin.broken_source import broken_source

POLICY = FetchPolicy(max_bytes=10**9, allow_private=True, timeout_seconds=1.0)


@pytest.mark.parametrize(("path", "why"), [
    ("/short.mp4", "the transfer broke off (Not enough data to satisfy content length"),
    ("/chunks.mp4", "not a valid HTTP answer (Invalid character in chunk size)"),
    ("/garbage.mp4", "not a valid HTTP answer (Bad status line)"),
    ("/stall.mp4", "TimeoutError"),
])
async def test_a_broken_source_is_unavailable_in_one_line(tmp_path: Path, path: str,
                                                          why: str) -> None:
    dest = tmp_path / "master.part"
    async with broken_source() as base:
        with pytest.raises(SourceUnavailable) as info:
            await fetch_source(base + path, dest, POLICY)
    message = str(info.value)
    assert message.startswith(f"cannot fetch {base}{path}: {why}"), message
    assert "\n" not in message
    assert not dest.exists()


@pytest.mark.parametrize(("name", "why"), [
    ("short.mp4", "the transfer broke off (Not enough data to satisfy content length"),
    ("chunks.mp4", "Invalid character in chunk size"),
    ("garbage.mp4", "Bad status line"),
    ("stall.mp4", "not read within 1 s"),
])
async def test_a_broken_s3_endpoint_is_unavailable_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, why: str) -> None:
    """The same faults from an S3 endpoint (path-style GET /bucket/key): a body cut
    short passed through botocore as aiohttp's error, and a stall waited for
    botocore's 60 s read timeout, past the transfer's bound."""
    for var, value in (("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(var, value)
    dest = tmp_path / "master.part"
    async with broken_source() as base:
        with pytest.raises(SourceUnavailable) as info:
            await fetch_source(f"s3://masters/in/{name}", dest,
                               FetchPolicy(max_bytes=10**9, s3_endpoint=base,
                                           timeout_seconds=1.0))
    message = str(info.value)
    assert message.startswith(f"cannot read s3://masters/in/{name}: {why}"), message
    assert "\n" not in message and "\\n" not in message
    assert not dest.exists()


@pytest.mark.parametrize(("uri", "why"), [
    ("http://[::1/m.mp4", "source_uri 'http://[::1/m.mp4' is not a valid URL"),
    ("http://example.com:99999/m.mp4", "not a valid URL (Port out of range"),
    ("http:///m.mp4", "not an http(s) URL"),
])
async def test_a_uri_nobody_can_fetch_is_a_request_error(tmp_path: Path, uri: str,
                                                         why: str) -> None:
    """Refused before any connection (aiohttp's own ValueError was INTERNAL over gRPC)."""
    with pytest.raises(RequestError, match=re.escape(why)):
        await fetch_source(uri, tmp_path / "m.part", POLICY)
    assert not (tmp_path / "m.part").exists()


async def test_a_redirect_nobody_can_follow_is_a_request_error(tmp_path: Path) -> None:
    async with broken_source() as base:
        with pytest.raises(RequestError, match=r"redirected to 'http://\[::1/x': not a valid"):
            await fetch_source(base + "/moved.mp4", tmp_path / "m.part", POLICY)
