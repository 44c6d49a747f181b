"""Job metrics from the metadata store, computed at scrape time: the store is
the queue's truth whichever processes run the jobs (cdlc serve, Celery workers
on other machines), so queue depth and running jobs per worker class are read
from it rather than counted in one process."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from metadata.models import JobState
from metadata.store import MetadataStore

_ACTIVE = [s for s in JobState if not s.finished]


async def render_job_gauges(store: MetadataStore) -> bytes:
    """Exposition text of: jobs queued and running per class, failed jobs kept,
    and the attempts spent on retries by the jobs still in the store."""
    active = await store.list_jobs(states=_ACTIVE, limit=100_000)
    failed = await store.list_jobs(states=[JobState.FAILED], limit=100_000)
    queued = Tally(j.queue or "local" for j in active if j.state == JobState.QUEUED)
    running = Tally(j.queue or "local" for j in active if j.state != JobState.QUEUED)
    registry = CollectorRegistry()
    q = Gauge("cdlc_jobs_queued", "Jobs waiting, by worker class", ["class"],
              registry=registry)
    r = Gauge("cdlc_jobs_running", "Jobs being worked on, by worker class", ["class"],
              registry=registry)
    for name, count in queued.items():
        q.labels(name).set(count)
    for name, count in running.items():
        r.labels(name).set(count)
    Gauge("cdlc_jobs_failed", "Jobs that ended FAILED (kept until their asset is deleted)",
          registry=registry).set(len(failed))
    Gauge("cdlc_jobs_retry_attempts", "Attempts beyond the first, of active and failed jobs",
          registry=registry).set(sum(max(0, j.attempt - 1) for j in [*active, *failed]))
    return generate_latest(registry)
