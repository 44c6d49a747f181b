"""Progress display for long steps: a rich bar on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING

from metadata.models import JobState

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class JobProgress:
    """One bar per pipeline stage. Safe to call from worker threads (rich locks).
    rich is imported only when a bar is drawn: piped runs start faster."""

    def __init__(self, label: str, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._label = label
        self._tasks: dict[JobState, TaskID] = {}
        self._progress: Progress | None = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description:<26}"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> JobProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, state: JobState, fraction: float) -> None:
        progress = self._progress
        if progress is None:
            return
        for done_state, task in self._tasks.items():
            if done_state != state:
                progress.update(task, completed=100)
        if state.finished:
            return
        if state not in self._tasks:
            self._tasks[state] = progress.add_task(f"{self._label}: {state.value}", total=100)
        progress.update(self._tasks[state], completed=max(0.0, min(1.0, fraction)) * 100)
