"""Conditional and range requests for the playback routes, one evaluator for every
object store (RFC 9110 §13 preconditions, §14 ranges).

``evaluate(method, headers, validators)`` decides, before any byte is read, what a
GET or HEAD of one stored object gets: 200 whole, 206 one range, 304, 412 or 416.
The local store (sendfile) and S3 (ranged GET) both go through it, so the two
answer alike to the same request.

Choices where the RFC leaves one:

- Multiple ranges: when more than one range of the set is satisfiable the server
  ignores the Range and answers 200 with the whole body (RFC 9110 §14.2: a server
  MAY ignore Range). Segments are small and players ask for one range at a time;
  multipart/byteranges would add a body format for no reader. When exactly one
  range of the set is satisfiable, that one is served as a single-part 206.
- An invalid Range (unknown unit, bad syntax, ``last < first``) is ignored: 200
  (RFC 9110 §14.2 "ignore ... invalid"). A valid set of which nothing is
  satisfiable (``bytes=LEN-``, ``bytes=-0``) is 416 with ``Content-Range: bytes */LEN``
  (§14.1.2, §15.5.17).
- Range applies to GET only (§14.2); HEAD answers as the GET without Range would.
- Dates compare at one-second resolution, the resolution of HTTP-date (§5.6.7).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime

from aiohttp import hdrs

_RANGE = re.compile(r"[ \t]*bytes[ \t]*=(.*)", re.IGNORECASE | re.DOTALL)
_SPEC = re.compile(r"([0-9]{1,19})?-([0-9]{1,19})?")


@dataclass(frozen=True, slots=True)
class Validators:
    """What a response is validated against: a strong ETag, its mtime (None when
    it has no Last-Modified, as manifests: date preconditions are then ignored,
    §13.1.3, §13.1.4), its length."""

    etag: str
    mtime: float | None
    size: int

    @property
    def last_modified(self) -> str:
        assert self.mtime is not None
        return formatdate(self.mtime, usegmt=True)


@dataclass(frozen=True, slots=True)
class Plan:
    """The answer: status, the byte span [start, end) to send, and Content-Range."""

    status: int
    start: int = 0
    end: int = 0
    content_range: str | None = None

    @property
    def length(self) -> int:
        return self.end - self.start


# Request fields that make a GET conditional or partial: without any of them the
# answer is the whole body (callers test this before calling evaluate()).
CONDITIONAL_FIELDS = (hdrs.IF_NONE_MATCH, hdrs.RANGE, hdrs.IF_MATCH, hdrs.IF_MODIFIED_SINCE,
                      hdrs.IF_UNMODIFIED_SINCE)


def _http_date(value: str) -> int | None:
    """Seconds since the epoch of an HTTP-date, None when invalid (§5.6.7: a
    recipient ignores an invalid date in a precondition)."""
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt.tzinfo is None:  # "-0000" and asctime forms: GMT by definition (§5.6.7)
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _tags(header: str) -> list[str]:
    return [t.strip() for t in header.split(",") if t.strip()]


def strong_match(etag: str, header: str) -> bool:
    """If-Match: strong comparison (§13.1.1, §8.8.3.2); ``*`` matches any
    current representation."""
    if header.strip() == "*":
        return True
    return not etag.startswith("W/") and etag in _tags(header)


def weak_match(etag: str, header: str) -> bool:
    """If-None-Match: weak comparison (§13.1.2): opaque tags equal, W/ ignored."""
    if header.strip() == "*":
        return True
    bare = etag[2:] if etag.startswith("W/") else etag
    return any((t[2:] if t.startswith("W/") else t) == bare for t in _tags(header))


def parse_range(value: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable spans [start, end) of a ``bytes=`` Range (§14.1.1, §14.1.2),
    or None when the header is invalid (to be ignored). An empty list means valid
    but unsatisfiable (416)."""
    m = _RANGE.fullmatch(value)
    if m is None:
        return None  # no range unit, or one we do not know: ignored
    specs = [s.strip(" \t") for s in m.group(1).split(",")]
    if not any(specs):
        return None  # "bytes=" : range-set needs one range-spec
    out: list[tuple[int, int]] = []
    for spec in specs:
        if not spec:
            continue  # the #list rule allows empty elements (§5.6.1)
        sm = _SPEC.fullmatch(spec)
        if sm is None:
            return None
        first, last = sm.group(1), sm.group(2)
        if first is None and last is None:
            return None  # "-"
        if first is None:  # suffix-range: the last N bytes
            n = int(last)
            if n > 0 and size > 0:
                out.append((max(0, size - n), size))
            continue
        start = int(first)
        if last is not None and int(last) < start:
            return None  # an int-range with last < first is invalid
        if start < size:
            end = size if last is None else min(int(last) + 1, size)
            out.append((start, end))
    return out


def _if_range_holds(value: str, v: Validators) -> bool:
    """If-Range (§13.1.5): an entity tag must match strongly; a date must equal
    Last-Modified exactly (and a weak tag never matches)."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        return not value.startswith("W/") and value == v.etag
    when = _http_date(value)
    return when is not None and v.mtime is not None and when == int(v.mtime)


def evaluate(method: str, headers: Mapping[str, str], v: Validators) -> Plan:
    """The plan for GET/HEAD of an object with validators ``v`` (§13.2.2 order:
    If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since, If-Range)."""
    im = headers.get(hdrs.IF_MATCH)
    if im is not None:
        if not strong_match(v.etag, im):
            return Plan(412)
    else:
        ius = headers.get(hdrs.IF_UNMODIFIED_SINCE)
        when = _http_date(ius) if ius is not None and v.mtime is not None else None
        if when is not None and v.mtime is not None and int(v.mtime) > when:
            return Plan(412)
    inm = headers.get(hdrs.IF_NONE_MATCH)
    if inm is not None:
        if weak_match(v.etag, inm):
            return Plan(304)  # GET/HEAD: not modified (others would be 412)
    else:
        ims = headers.get(hdrs.IF_MODIFIED_SINCE)
        when = _http_date(ims) if ims is not None and v.mtime is not None else None
        if when is not None and v.mtime is not None and int(v.mtime) <= when:
            return Plan(304)
    whole = Plan(200, 0, v.size)
    rng = headers.get(hdrs.RANGE)
    if rng is None or method != hdrs.METH_GET:
        return whole
    if_range = headers.get(hdrs.IF_RANGE)
    if if_range is not None and not _if_range_holds(if_range, v):
        return whole
    spans = parse_range(rng, v.size)
    if spans is None or len(spans) > 1:
        return whole
    if not spans:
        return Plan(416, content_range=f"bytes */{v.size}")
    start, end = spans[0]
    return Plan(206, start, end, f"bytes {start}-{end - 1}/{v.size}")
