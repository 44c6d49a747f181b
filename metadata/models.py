"""The data model: asset, job state, rendition, segment index.

Plain dataclasses, no I/O; every store and the packager read and write these.
Times in a rendition's segments are in that rendition's timescale.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from enum import StrEnum

# An asset id as it may appear in a URL path and an object key (use fullmatch):
# the engine refuses others, the origin answers 400 for them.
ASSET_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class JobState(StrEnum):
    QUEUED = "queued"
    PROBING = "probing"
    TRANSCODING = "transcoding"
    PACKAGING = "packaging"
    PUBLISHING = "publishing"
    READY = "ready"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobState.READY, JobState.FAILED)


@dataclass
class Asset:
    id: str
    state: JobState = JobState.QUEUED
    progress: float = 0.0            # 0..1 of the current job
    error: str | None = None         # the reason, when FAILED
    duration: float = 0.0            # seconds, of the published output
    source_name: str = ""            # original file name of the master
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    version: int = 0                 # bumped on every publish; part of cache keys
    current_job: str = ""            # id of the job whose state this asset shows


@dataclass
class Rendition:
    asset_id: str
    id: str                          # "v1080", "v720", "audio", "audio_fra", "sub_eng"
    kind: str                        # "video" | "audio" | "text" (WebVTT subtitles) |
                                     # "image" (the storyboard's JPEG sprite sheets)
    codec: str                       # "h264", "hevc", "aac", "opus", "webvtt"
    codec_string: str                # RFC 6381, from the real SPS / AudioSpecificConfig
    timescale: int
    bitrate: int                     # target / nominal bit/s
    avg_bitrate: int = 0             # measured over all segments, bit/s
    peak_bitrate: int = 0            # highest segment bitrate, bit/s
    width: int = 0
    height: int = 0
    sar: str = "1:1"
    frame_rate: str = ""             # "30", "30000/1001"
    sample_rate: int = 0
    channels: int = 0
    language: str = "und"            # ISO 639-2/T as in the track's mdhd ("eng", "fra")
    # Catalogue fields (all optional): what manifests show and players select by.
    name: str = ""                   # HLS NAME / a label; "" = the rendition id
    default: bool = False            # preferred in its group (none set: the first one)
    forced: bool = False             # text: forced narrative only (HLS FORCED=YES)
    characteristics: str = ""        # HLS CHARACTERISTICS UTIs, e.g. SDH's
                                     # "public.accessibility.transcribes-spoken-dialog,..."
    presentation_offset: int = 0     # timescale ticks of priming before time 0 (the
                                     # init's edit list media_time; no DASH PTO, see
                                     # packager/dash.py)
    encryption: str = ""             # "" clear, "cenc" or "cbcs" (CMAF common encryption),
                                     # "aes-128" (HLS whole segments)
    key_id: str = ""                 # the default KID, 32 hex digits, when encrypted
    tiles: str = ""                  # image: the sprite sheet's grid, "5x5" (columns x rows);
                                     # frame_rate is then pictures a second ("1/2")
    vmaf: float = 0.0                # video: mean VMAF against the master scaled to this
                                     # size, over sampled spans; 0 = not measured
    analysis: str = ""               # per-title ladders: why this rung is what it is
                                     # (JSON: target VMAF, candidates), engine.pertitle


@dataclass
class Segment:
    asset_id: str
    rendition_id: str
    number: int                      # 1-based, {number}.m4s
    start: int                       # tfdt, rendition timescale
    duration: int                    # rendition timescale
    size: int                        # bytes
    iframe_size: int = 0             # bytes from 0 to the end of the first sync sample


def media_prefix(asset_id: str) -> str:
    """Object-store prefix of an asset's media: <prefix>/<rendition>/<name>."""
    return f"media/{asset_id}"


def media_key(asset_id: str, rendition_id: str, name: str) -> str:
    """Object-store key of a published media file (init.mp4 or N.m4s)."""
    return f"{media_prefix(asset_id)}/{rendition_id}/{name}"


def master_key(asset_id: str) -> str:
    """Object-store key of an uploaded master (masters/{asset}/source)."""
    return f"masters/{asset_id}/source"
