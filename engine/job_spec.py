"""What an ingest job asks for, and the checks made before anything runs.

Kept apart from engine.pipeline (which loads the native core and the stores) so
the CLI can parse and validate a request at the cost of the standard library.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from metadata.models import ASSET_ID_RE

# x264's presets; the GPU worker maps them onto NVENC's p1..p7.
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
           "slower", "veryslow", "placebo")


class IngestError(Exception):
    """The master or the request is unusable: a user error, reported in one line."""


@dataclass(frozen=True)
class IngestOptions:
    ladder: str | None = None          # "1080:5000,720:3000"; None plans from the source
    preset: str = "veryfast"
    segment_seconds: float = 4.0
    gop_seconds: float = 2.0
    copy: bool = False                 # package without re-encoding
    encoder: str = "auto"              # auto | cpu | gpu


def new_asset_id(master: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", master.stem).strip("-_")[:40] or "asset"
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def gop_for(segment_seconds: float, preferred: float) -> float:
    """The longest GOP up to `preferred` that divides the segment evenly: segments are
    cut at forced keyframes, so every segment must hold whole GOPs."""
    if not (segment_seconds > 0 and math.isfinite(segment_seconds)):
        raise IngestError(f"segment duration must be positive, got {segment_seconds:g} s")
    count = max(1, math.ceil(segment_seconds / preferred - 1e-9))
    return segment_seconds / count


def check_asset_id(asset_id: str) -> str:
    if not ASSET_ID_RE.fullmatch(asset_id):
        raise IngestError(
            f"invalid asset id {asset_id!r}: use 1-64 letters, digits, '-' or '_'"
        )
    return asset_id


def check_options(options: IngestOptions) -> None:
    """Refuse bad settings up front, before anything is recorded or started."""
    gop_for(options.segment_seconds, options.gop_seconds)
    if not options.copy and options.preset not in PRESETS:
        raise IngestError(f"unknown preset {options.preset!r}; use one of {', '.join(PRESETS)}")
