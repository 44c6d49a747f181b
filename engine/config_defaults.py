"""Environment names and defaults of the settings a package-only ingest needs
before engine.config has loaded.

engine.config.Settings (pydantic-settings) is the authority on configuration; it
takes its prefix and these defaults from here. Importing it costs about 0.15 s of
CPU (pydantic, its plugin loader, asyncio), as much as the package-only copy of a
10-minute master. `cdlc ingest --copy` therefore starts that copy on a guess made
from these names, and checks the guess against Settings once Settings has loaded
(engine.cli). A wrong guess costs time, never correctness: that copy is abandoned
and the job copies again where the settings say.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

ENV_PREFIX = "CDLC_"
DATA_DIR = Path("./cdlc-data")
SEGMENT_SECONDS = 4.0


def work_dir_of(data_dir: Path) -> Path:
    """Scratch space for jobs under the data directory; never served."""
    return data_dir / "work"


def guess_copy_inputs(segment_seconds: float | None) -> tuple[Path, float] | None:
    """(work directory, segment seconds) as Settings will most likely resolve them,
    read from the exact-case variables only. None where no copy should start on a
    guess: a broker takes jobs elsewhere, or a value does not parse or is refused."""
    env = os.environ
    if env.get(ENV_PREFIX + "BROKER"):
        return None
    seconds: float | None = segment_seconds
    if seconds is None:
        try:
            seconds = float(env.get(ENV_PREFIX + "SEGMENT_SECONDS", SEGMENT_SECONDS))
        except ValueError:
            return None
    if not (seconds > 0 and math.isfinite(seconds)):
        return None
    return work_dir_of(Path(env.get(ENV_PREFIX + "DATA_DIR", DATA_DIR))), seconds
