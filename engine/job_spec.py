"""What an ingest job asks for, and the checks made before anything runs.

The request type and its checks live with the data model (metadata.jobs) so every
front door shares them; this module keeps the engine's names for them. Kept apart
from engine.pipeline (which loads the native core and the stores) so the CLI can
parse and validate a request at the cost of the standard library.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

from metadata.jobs import PRESETS, JobRequest, RequestError, check_asset_id, gop_for

__all__ = ["PRESETS", "IngestError", "IngestOptions", "RequestError", "check_asset_id",
           "check_options", "gop_for", "new_asset_id", "work_dir_name"]

# The engine's historical name for the typed job request.
IngestOptions = JobRequest


class IngestError(Exception):
    """The master or the request is unusable: a user error, reported in one line."""


def new_asset_id(master: Path) -> str:
    """A stable id from the file: its name and size, so ingesting the same file
    again finds the asset it made (and says so) instead of making a second one."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", master.stem).strip("-_")[:40] or "asset"
    try:
        size = master.stat().st_size
    except OSError:
        size = -1
    digest = hashlib.sha1(f"{master.name}\n{size}".encode()).hexdigest()[:8]
    return f"{stem}-{digest}"


def check_options(options: JobRequest) -> None:
    """Refuse bad settings up front, before anything is recorded or started."""
    options.check()


def work_dir_name(asset_id: str) -> str:
    """A job's scratch directory name: the pid lets a sweep tell a dead run's
    leftovers from a live one's (engine.sweep)."""
    return f"{asset_id}-{uuid.uuid4().hex[:8]}.{os.getpid()}"
