"""Progress display for long steps: a rich bar on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from metadata.models import JobState


class JobProgress:
    """One bar per pipeline stage. Safe to call from worker threads (rich locks)."""

    def __init__(self, label: str, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description:<26}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
            disable=not self.enabled,
        )
        self._label = label
        self._tasks: dict[JobState, TaskID] = {}

    def __enter__(self) -> JobProgress:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

    def __call__(self, state: JobState, fraction: float) -> None:
        if not self.enabled:
            return
        for done_state, task in self._tasks.items():
            if done_state != state:
                self._progress.update(task, completed=100)
        if state.finished:
            return
        if state not in self._tasks:
            self._tasks[state] = self._progress.add_task(f"{self._label}: {state.value}",
                                                         total=100)
        self._progress.update(self._tasks[state], completed=max(0.0, min(1.0, fraction)) * 100)
