"""Jobs: the typed request every front door builds, and the job record the stores keep.

A request is checked here, once, before anything is accepted or stored: the CLI, the
admin REST API, gRPC and the console all build a ``JobRequest`` with
``JobRequest.parse`` and get a ``RequestError`` (a ``ValueError``) naming the bad
field, or a request that can run. The job record (``Job``) is what the schedulers
(in-process, Celery) claim with a lease, renew while they work and finish; every
write of it is a compare-and-set on ``rev`` so two processes never both own a job.

Plain data and pure functions: no I/O, nothing of ours imported but the models.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from metadata.models import ASSET_ID_RE, JobState

# x264's presets; the GPU worker maps them onto NVENC's p1..p7.
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
           "slower", "veryslow", "placebo")
ENCODERS = ("auto", "cpu", "gpu")
# Ladders by name: "fixed" is the ladder planned from the source's size alone
# (engine.ladder), "auto" the per-title ladder measured on the master
# (engine.pertitle); anything else is a HEIGHT:KBPS spec.
AUTO_LADDER = "auto"
LADDER_MODES = (AUTO_LADDER, "fixed")
# Video codec families a ladder may be encoded in, one rung set each.
CODECS = ("h264", "hevc", "av1")
# CMAF common encryption schemes (ISO/IEC 23001-7 §4.2), HLS whole-segment
# AES-128 (RFC 8216 §4.3.2.4); "" = clear.
ENCRYPTION_SCHEMES = ("", "cenc", "cbcs", "aes-128")
# Segments longer than this are no use to an ABR player, and one shorter than a
# frame cannot hold a keyframe.
MAX_SEGMENT_SECONDS = 60.0
MIN_SEGMENT_SECONDS = 0.5
_LADDER_ITEM = re.compile(r"^\s*(\d+)\s*[:x]\s*(\d+)\s*(?:k|kbps)?\s*$", re.IGNORECASE)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class RequestError(ValueError):
    """A request that cannot run; refused before anything is stored (HTTP 400,
    gRPC INVALID_ARGUMENT, CLI exit 2). The message names the field."""


class AlreadyExists(Exception):
    """The asset id is taken by a ready asset or a job still running (409,
    ALREADY_EXISTS, exit 2)."""


class StaleJob(Exception):
    """A job write lost its compare-and-set: another process took the job over
    (its lease ran out). The writer stops working on it."""


class NotFound(LookupError):
    """No such asset or job (404, NOT_FOUND)."""


class FailedPrecondition(Exception):
    """The operation does not fit the job's state, e.g. retrying a job that is not
    failed (409, FAILED_PRECONDITION)."""


def parse_ladder_spec(spec: str) -> list[tuple[int, int]]:
    """'1080:5000,720:3000' -> [(1080, 5000), (720, 3000)] (label, kbit/s), tallest first.

    Raises RequestError naming the bad item: empty spec, missing ':', non-numbers,
    odd or zero sizes, zero bitrates, a label given twice.
    """
    if not spec or not spec.strip():
        raise RequestError(
            "empty ladder spec; expected HEIGHT:KBPS[,HEIGHT:KBPS...], e.g. 720:3000")
    out: list[tuple[int, int]] = []
    seen: set[int] = set()
    for item in spec.split(","):
        match = _LADDER_ITEM.match(item)
        if not match:
            raise RequestError(
                f"bad ladder item {item.strip()!r} in {spec!r}; expected HEIGHT:KBPS, e.g. 720:3000"
            )
        label, kbps = int(match.group(1)), int(match.group(2))
        if label < 2 or label % 2:
            raise RequestError(f"bad ladder height {label} in {spec!r}: must be even and >= 2")
        if label > 8640:
            raise RequestError(f"bad ladder height {label} in {spec!r}: larger than 8K")
        if kbps <= 0:
            raise RequestError(f"bad ladder bitrate {kbps} in {spec!r}: must be > 0 kbit/s")
        if kbps > 1_000_000:
            raise RequestError(f"bad ladder bitrate {kbps} in {spec!r}: above 1 Gbit/s")
        if label in seen:
            raise RequestError(f"ladder height {label} given twice in {spec!r}")
        seen.add(label)
        out.append((label, kbps))
    return sorted(out, reverse=True)


def check_asset_id(asset_id: str) -> str:
    if not isinstance(asset_id, str) or not ASSET_ID_RE.fullmatch(asset_id):
        raise RequestError(
            f"invalid asset id {asset_id!r}: use 1-64 letters, digits, '-' or '_'"
        )
    return asset_id


def gop_for(segment_seconds: float, preferred: float) -> float:
    """The longest GOP up to `preferred` that divides the segment evenly: segments are
    cut at forced keyframes, so every segment must hold whole GOPs."""
    if not (segment_seconds > 0 and math.isfinite(segment_seconds)):
        raise RequestError(f"segment duration must be positive, got {segment_seconds:g} s")
    if not (preferred > 0 and math.isfinite(preferred)):
        raise RequestError(f"GOP duration must be positive, got {preferred:g} s")
    count = max(1, math.ceil(segment_seconds / preferred - 1e-9))
    return segment_seconds / count


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise RequestError(f"{name} must be a number of seconds, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        got = f"{value:g}" if isinstance(value, int | float) else repr(value)
        raise RequestError(f"{name} must be a positive, finite number of seconds, got {got}")
    return number


def _flag(name: str, value: object) -> bool:
    """A form field ("true", "0", ...) or a JSON boolean; anything else is refused."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise RequestError(f"{name} must be true or false, got {value!r}")


def _text(name: str, value: object, limit: int = 256) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{name} must be text, got {value!r}")
    if len(value) > limit or any(ord(c) < 32 for c in value):
        raise RequestError(f"{name} must be at most {limit} printable characters")
    return value


def codec_list(value: object) -> tuple[str, ...]:
    """"h264,av1" (a form field, the CLI) or ["h264", "av1"] (JSON, gRPC)."""
    if isinstance(value, str):
        items = [c.strip().lower() for c in _text("codecs", value, 64).split(",")]
    elif isinstance(value, list | tuple) and all(isinstance(c, str) for c in value):
        items = [c.strip().lower() for c in value]
    else:
        raise RequestError(f"codecs must be a list like h264,av1, got {value!r}")
    return tuple(items)


def _check_codecs(codecs: tuple[str, ...], copy: bool, encryption: str) -> None:
    if not codecs:
        raise RequestError(f"codecs must name at least one of {', '.join(CODECS)}")
    for codec in codecs:
        if codec not in CODECS:
            raise RequestError(f"unknown codec {codec!r} in codecs; use {', '.join(CODECS)}")
    if len(set(codecs)) != len(codecs):
        raise RequestError(f"codecs names a codec twice: {','.join(codecs)}")
    if copy and codecs != ("h264",):
        raise RequestError("codecs and copy exclude each other: copy keeps the master's "
                           "own encoding")
    if "av1" in codecs and encryption in ("cenc", "cbcs"):
        raise RequestError("AV1 renditions cannot be encrypted yet (cenc/cbcs); drop av1 "
                           "from codecs or the encryption")


@dataclass(frozen=True)
class JobRequest:
    """What an ingest job asks for. Built by ``parse`` (front doors) or directly
    (code); ``check()`` is what ``parse`` runs, for requests built in code."""

    # "1080:5000,720:3000", "auto" or "fixed"; None: fixed. A front door's parse
    # fills in the deployment's default (with_default_ladder) when the caller names
    # none.
    ladder: str | None = None
    preset: str = "veryfast"
    segment_seconds: float = 4.0
    gop_seconds: float = 2.0
    copy: bool = False                 # package without re-encoding
    encoder: str = "auto"              # auto | cpu | gpu
    source_name: str = ""              # the master's original file name
    # Sidecars beside the master: (language, path) audio files and
    # (language, flags, path) subtitle files, flags "" | "forced" | "sdh". Local
    # paths, so only a local front door (the CLI) may name them.
    audio: tuple[tuple[str, str], ...] = ()
    subtitles: tuple[tuple[str, str, str], ...] = ()
    # "" clear, "cenc" or "cbcs": CMAF common encryption with a key from the key
    # store (metadata/keys.py), one encrypted copy for HLS and DASH; "aes-128":
    # whole-segment HLS AES-128 (engine/segment_crypto.py), HLS only.
    encryption: str = ""
    # Measure each video rendition's VMAF against the master (engine/vmaf.py) before
    # publishing. Off by default: it decodes every rendition again and runs libvmaf,
    # seconds per rendition on a small machine, which most ingests do not need.
    vmaf: bool = False
    # Video codec families, one rung set each (engine.ladder): ("h264", "av1").
    codecs: tuple[str, ...] = ("h264",)
    # The ladder is the deployment's default, not the caller's: an auto default
    # still steps aside where the job runs on NVENC (engine.pipeline), which is only
    # known there for an in-process job with encoder auto.
    ladder_default: bool = False

    FIELDS = ("ladder", "preset", "segment_seconds", "gop_seconds", "copy", "encoder",
              "source_name", "audio", "subtitles", "encryption", "vmaf", "codecs",
              "ladder_default")
    # What a remote caller may set (REST, gRPC, the console).
    REMOTE_FIELDS = (*FIELDS[:7], "encryption", "vmaf", "codecs")

    @classmethod
    def parse(cls, raw: Mapping[str, object], defaults: JobRequest | None = None) -> JobRequest:
        """A request from untyped input (form fields, JSON, gRPC fields with "" as
        unset). Unknown fields and bad values raise RequestError; missing, None or
        "" values take ``defaults``."""
        base = defaults or cls()
        unknown = sorted(set(raw) - set(cls.REMOTE_FIELDS))
        if unknown:
            raise RequestError(f"unknown job option {unknown[0]!r}; known: "
                               f"{', '.join(cls.REMOTE_FIELDS)}")
        given = {k: v for k, v in raw.items() if v is not None and v != ""}
        values: dict[str, Any] = {}
        if "ladder" in given:
            values["ladder"] = _text("ladder", given["ladder"], 512).strip()
            if values["ladder"].lower() in LADDER_MODES:
                values["ladder"] = values["ladder"].lower()
        if "preset" in given:
            values["preset"] = _text("preset", given["preset"]).strip()
        if "encoder" in given:
            values["encoder"] = _text("encoder", given["encoder"]).strip()
        if "source_name" in given:
            values["source_name"] = _text("source_name", given["source_name"])
        if "encryption" in given:
            values["encryption"] = _text("encryption", given["encryption"]).strip().lower()
        for name in ("segment_seconds", "gop_seconds"):
            if name in given:
                values[name] = _seconds(name, given[name])
        for name in ("copy", "vmaf"):
            if name in given:
                values[name] = _flag(name, given[name])
        if "codecs" in given:
            values["codecs"] = codec_list(given["codecs"])
        request = replace(base, **values)
        if "ladder" not in values:
            request = request.with_default_ladder(base.ladder)
        request.check()
        return request

    def with_default_ladder(self, default: str | None) -> JobRequest:
        """This request, which names no ladder, with the deployment's ``default``
        (CDLC_LADDER) where it can apply: a copy has no ladder, and the auto ladder
        is measured with x264, so other codecs get the fixed one (None). NVENC is
        known only where the job runs, which steps an auto default aside there
        (engine.pipeline.ladder_on): ``ladder_default`` records the difference."""
        ladder = None if self.copy or default in (None, "", "fixed") else default
        if ladder == AUTO_LADDER and self.codecs != ("h264",):
            ladder = None
        return replace(self, ladder=ladder, ladder_default=True)

    def check(self) -> JobRequest:
        """Raise RequestError unless this request can run; returns self."""
        _seconds("segment_seconds", self.segment_seconds)
        _seconds("gop_seconds", self.gop_seconds)
        if not MIN_SEGMENT_SECONDS <= self.segment_seconds <= MAX_SEGMENT_SECONDS:
            raise RequestError(
                f"segment_seconds must be within {MIN_SEGMENT_SECONDS:g}..{MAX_SEGMENT_SECONDS:g}"
                f" s, got {self.segment_seconds:g}")
        gop_for(self.segment_seconds, self.gop_seconds)
        if self.ladder is not None:
            if self.copy:
                raise RequestError("ladder and copy exclude each other: copy keeps the "
                                   "master's own encoding")
            if self.ladder not in LADDER_MODES:
                parse_ladder_spec(self.ladder)
        if self.preset not in PRESETS:
            raise RequestError(f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        if self.encoder not in ENCODERS:
            raise RequestError(f"unknown encoder {self.encoder!r}; use one of "
                               f"{', '.join(ENCODERS)}")
        _check_codecs(self.codecs, self.copy, self.encryption)
        if self.ladder == AUTO_LADDER and self.codecs != ("h264",):
            raise RequestError("the auto ladder is measured for H.264 only: use a fixed "
                               "ladder with other codecs")
        if self.encryption not in ENCRYPTION_SCHEMES:
            raise RequestError(f"unknown encryption {self.encryption!r}; use cenc, cbcs "
                               "or aes-128 (or none)")
        for lang, path in self.audio:
            _sidecar("--audio", lang, path)
        for lang, flags, path in self.subtitles:
            _sidecar("--subtitles", lang, path)
            if flags not in ("", "forced", "sdh"):
                raise RequestError(f"--subtitles {lang}:{flags}: the flag is forced or sdh")
        return self

    @property
    def gop(self) -> float:
        """The GOP the transcode uses (whole GOPs per segment)."""
        return gop_for(self.segment_seconds, self.gop_seconds)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobRequest:
        doc = json.loads(text)
        values = {k: v for k, v in doc.items() if k in cls.FIELDS}
        for name in ("audio", "subtitles"):  # JSON has lists where the type has tuples
            values[name] = tuple(tuple(item) for item in values.get(name, ()))
        if "codecs" in values:
            values["codecs"] = tuple(values["codecs"])
        return cls(**values)


_LANG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")


def _sidecar(option: str, lang: str, path: str) -> None:
    if not _LANG.fullmatch(lang):
        raise RequestError(f"{option} {lang}=...: the language is an ISO 639 code, e.g. fr")
    if not path.startswith("/"):
        raise RequestError(f"{option} {lang}={path}: the path must be absolute")


def parse_sidecar(option: str, spec: str) -> tuple[str, str, str]:
    """'fr=dub.wav' or 'en:sdh=subs.srt' -> (language, flags, path as given)."""
    lang, eq, path = spec.partition("=")
    if not eq or not path:
        raise RequestError(f"{option} {spec!r}: expected LANG=PATH, e.g. fr=dub.wav")
    lang, _, flags = lang.partition(":")
    return lang.strip(), flags.strip(), path


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Job:
    """One run of the pipeline for an asset (docs/jobs.md). ``rev`` is bumped by
    every write: stores write a job only if its stored rev is the one read."""

    id: str
    asset_id: str
    request: JobRequest
    master: str = ""                   # object key of the master, or an absolute local path
    state: JobState = JobState.QUEUED
    progress: float = 0.0
    error: str | None = None
    attempt: int = 0                   # attempts started so far
    max_attempts: int = 3
    lease_holder: str | None = None    # "host:pid:nonce" of the process running it
    lease_expires: float = 0.0         # Unix time; the holder renews before then
    not_before: float = 0.0            # Unix time: backoff before the next attempt
    queue: str = ""                    # worker class it was routed to ("" in-process)
    # A chunked job's pieces by name ("audio", "c0", "c1", ...): span, lease, result
    # (engine.chunks); empty for a job run in one piece.
    chunks: dict[str, dict[str, Any]] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    rev: int = 0

    @property
    def finished(self) -> bool:
        return self.state.finished

    def lease_expired(self, now: float) -> bool:
        return self.lease_holder is not None and self.lease_expires < now

    def claimable(self, now: float) -> bool:
        """Not finished, not held by a live lease, past its backoff."""
        if self.finished or self.not_before > now:
            return False
        return self.lease_holder is None or self.lease_expires < now


def backoff_seconds(attempt: int, base: float = 2.0, cap: float = 300.0) -> float:
    """Delay before attempt ``attempt + 1``: base * 2^(attempt - 1), capped."""
    return float(min(cap, base * 2.0 ** max(0, attempt - 1)))
