"""A package-only job's native work, started ahead of everything else.

`cdlc ingest --copy` is bound by copying the master's bytes into segments (0.15 to
0.25 s of a core for a 10-minute 1080p master, by machine); the command around it
spends about as much CPU again loading click, the settings (pydantic-settings),
asyncio, the pipeline, store and packager code, and recording states. The CLI
therefore starts the copy as soon as the native module has loaded, before the
settings: on a guess of the work directory and segment duration
(engine/config_defaults.py), kept only if the settings agree (`matches`) and
otherwise abandoned. engine.pipeline.ingest() takes the running copy over and
only waits for it when it reaches the packaging stage. The native call releases
the GIL, so both proceed at once.

Nothing here is visible to anyone: output goes to a fresh work directory that
the pipeline publishes (one rename) or removes.
"""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import native
from engine.job_spec import work_dir_name


class CopyRun:
    """native.package_copy(master, <work>/out, segment_seconds) on its own thread."""

    def __init__(self, master: Path, work_root: Path, asset_id: str,
                 segment_seconds: float, sidecars: dict[str, Any] | None = None) -> None:
        self.master = master
        self.work_root = work_root
        self.segment_seconds = segment_seconds
        self.sidecars = sidecars or {}
        self.work = work_root / work_dir_name(asset_id)
        self.out_dir = self.work / "out"
        # The top-most directory the copy will create (abandon() removes it again).
        self._first_made = next((d for d in reversed(self.work.parents) if not d.exists()),
                                self.work)
        self.future: Future[native.PipelineResult] = Future()
        threading.Thread(target=self._run, name="cdlc-copy", daemon=True).start()

    def _run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.work.mkdir(parents=True, exist_ok=True)
            result = native.package_copy(self.master, self.out_dir, self.segment_seconds,
                                         **self.sidecars)
        except BaseException as exc:  # handed to whoever waits, never lost
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)

    def matches(self, work_root: Path, segment_seconds: float) -> bool:
        """Whether this copy is the one a job with these settings would start."""
        return self.work_root == work_root and self.segment_seconds == segment_seconds

    def discard(self) -> None:
        """Wait for the copy to end (it cannot be interrupted), then remove the work
        directory: whatever was not published goes. Safe to call more than once."""
        self.future.exception()  # waits; a failure is the owning job's to report
        shutil.rmtree(self.work, ignore_errors=True)

    def abandon(self) -> None:
        """discard() a copy started on a wrong guess, and the directories made for it
        that are still empty: a guess leaves nothing behind where it pointed."""
        self.discard()
        for d in self.work.parents:
            if not d.is_relative_to(self._first_made):
                break
            try:
                d.rmdir()
            except OSError:  # not empty (someone else's now), or gone
                break

    async def close(self) -> None:
        """discard() without blocking the event loop."""
        # Imported here: the CLI starts a copy before it loads asyncio.
        import asyncio

        await asyncio.to_thread(self.discard)
