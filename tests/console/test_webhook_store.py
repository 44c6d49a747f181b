"""Every WebhookStore keeps the outbox alike: SQLite always, ScyllaDB when
CDLC_TEST_SCYLLA names a cluster. Rows dedupe on (subscription, type, key), a
claim is a compare-and-set, attempts are logged, and it all outlives the store
object (a restart)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from metadata.webhooks import (
    DELIVERED,
    PENDING,
    Attempt,
    Delivery,
    Subscription,
    WebhookStore,
    open_webhook_store,
)

SCYLLA = os.environ.get("CDLC_TEST_SCYLLA", "")


@pytest.fixture(params=["sqlite", pytest.param("scylla", marks=[
    pytest.mark.scylla,
    pytest.mark.skipif(not SCYLLA, reason="CDLC_TEST_SCYLLA names no ScyllaDB cluster")])])
def url(request: pytest.FixtureRequest) -> str:
    return "" if request.param == "sqlite" else SCYLLA


@pytest.fixture
async def store(url: str, tmp_path: Path) -> AsyncIterator[WebhookStore]:
    s = open_webhook_store(url, tmp_path)
    yield s
    await s.close()


def _sub() -> Subscription:
    return Subscription(f"wh_{uuid.uuid4().hex[:12]}", "http://127.0.0.1:9/h",
                        ("asset.ready", "asset.failed"), "whsec_c2VjcmV0", 1.0)


def _row(sub: Subscription, key: str, at: float = 1.0) -> Delivery:
    return Delivery(f"msg_{uuid.uuid4().hex}", sub.id, "asset.ready", key, '{"a":1}',
                    created_at=at, next_attempt=at, updated_at=at)


async def test_dedupe_claim_attempts_and_restart(store: WebhookStore, url: str,
                                                 tmp_path: Path) -> None:
    sub = _sub()
    await store.add_subscription(sub)
    assert await store.get_subscription(sub.id) == sub
    assert sub.id in {s.id for s in await store.list_subscriptions()}
    first = _row(sub, "job1")
    assert await store.enqueue([first]) == 1
    assert await store.enqueue([_row(sub, "job1", 2.0), _row(sub, "job2", 2.0)]) == 1
    due = [d for d in await store.due(10.0) if d.subscription_id == sub.id]
    assert [d.dedupe_key for d in due] == ["job1", "job2"]
    assert await store.claim(due[0], 100.0)
    assert not await store.claim(due[0], 100.0)  # someone (we) took it: CAS lost
    assert "job1" not in {d.dedupe_key for d in await store.due(10.0)
                          if d.subscription_id == sub.id}
    failed = replace(due[0], attempts=1, next_attempt=5.0, last_status=500,
                     last_error="HTTP 500", updated_at=3.0)
    await store.finish_attempt(failed, Attempt(due[0].id, 1, 3.0, 500, "HTTP 500", 12.5))
    done = replace(failed, state=DELIVERED, attempts=2, next_attempt=0.0, last_status=200,
                   last_error="", updated_at=6.0)
    await store.finish_attempt(done, Attempt(due[0].id, 2, 6.0, 200, "", 3.0))
    await store.set_cursor("jobs", "123.5")

    again = open_webhook_store(url, tmp_path)  # a restart: a new store object
    try:
        rows = {d.dedupe_key: d for d in await again.deliveries(sub.id)}
        assert rows["job1"].state == DELIVERED
        assert [(a.number, a.status) for a in rows["job1"].attempt_log] == [(1, 500), (2, 200)]
        assert rows["job2"].state == PENDING
        assert await again.get_cursor("jobs") == "123.5"
        assert await again.delete_subscription(sub.id)
        assert not await again.delete_subscription(sub.id)
        assert await again.deliveries(sub.id) == []
        assert await again.get_subscription(sub.id) is None
    finally:
        await again.close()
