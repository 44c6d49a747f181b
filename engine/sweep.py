"""What dead runs leave behind, found and put right by every process that starts
(``cdlc serve``, a worker, the CLI commands) and periodically by the schedulers.

- Jobs whose lease ran out, or whose holder process on this machine is gone: queued
  again after a backoff, or FAILED once their attempts are spent (engine.leases).
- Work directories of dead processes (``<asset>-<nonce>.<pid>``, engine.job_spec):
  removed; they are never served, but they fill the disk.
- Partial uploads (``*.<pid>.part``) of dead processes: removed.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.leases import expire, holder_dead, lease_lost, pid_alive
from metadata.jobs import Job
from metadata.models import JobState
from metadata.store import MetadataStore

log = logging.getLogger(__name__)

ACTIVE = tuple(s for s in JobState if not s.finished)


@dataclass
class SweepReport:
    requeued: list[Job] = field(default_factory=list)
    failed: list[Job] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)


def _owner_pid(name: str) -> int | None:
    """The pid a scratch name ends with (``x.<pid>`` or ``x.<pid>.part``)."""
    parts = name.removesuffix(".part").removesuffix(".master").rsplit(".", 1)
    if len(parts) == 2 and parts[1].isascii() and parts[1].isdigit():
        return int(parts[1])
    return None


def sweep_files(dirs: Iterable[Path]) -> list[Path]:
    """Remove entries of ``dirs`` whose owner process (pid in the name) is gone."""
    removed: list[Path] = []
    for d in dirs:
        try:
            entries = list(d.iterdir())
        except OSError:
            continue
        for entry in entries:
            pid = _owner_pid(entry.name)
            if pid is None or pid_alive(pid):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        log.info("swept %d leftovers of dead runs", len(removed))
    return removed


async def sweep_jobs(store: MetadataStore, now: float | None = None) -> SweepReport:
    """Requeue or fail every job whose holder is gone."""
    report = SweepReport()
    now = time.time() if now is None else now
    for job in await store.list_jobs(states=ACTIVE):
        if not lease_lost(job, now):
            continue
        why = (f"worker {job.lease_holder} died" if holder_dead(job.lease_holder)
               else f"lease of {job.lease_holder} expired")
        done = await expire(store, job, why)
        if done is None:
            continue  # someone else got there first
        (report.failed if done.state == JobState.FAILED else report.requeued).append(done)
        log.warning("job %s of %s: %s -> %s", job.id, job.asset_id, why, done.state)
    return report


async def sweep(store: MetadataStore, scratch: Iterable[Path]) -> SweepReport:
    """Jobs first (so a live job's files are not its holder's to lose), then files."""
    report = await sweep_jobs(store)
    report.removed = sweep_files(scratch)
    return report
