"""The grant records store: SQLite (a table of its own in metadata.db, beside the
metadata store) and ScyllaDB where CDLC_TEST_SCYLLA names a cluster."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from metadata.grants import (
    Grant,
    GrantStore,
    ScyllaGrants,
    SQLiteGrants,
    new_grant_id,
    open_grants,
)
from metadata.models import Asset
from metadata.sqlite_store import SQLiteStore

SCYLLA = os.environ.get("CDLC_TEST_SCYLLA", "")


def grant(asset: str, n: int, **kw: object) -> Grant:
    now = time.time()
    fields: dict[str, object] = dict(
        id=new_grant_id(now + n / 1000), asset_id=asset, viewer_id=f"v{n}",
        entitlement_kind="rental", entitlement_reference=f"booking-{n}", max_height=720,
        client_ip="2001:db8::1", issued_at=now, expires_at=now + 3600)
    fields.update(kw)
    return Grant(**fields)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", pytest.param("scylla", marks=[
    pytest.mark.scylla,
    pytest.mark.skipif(not SCYLLA, reason="CDLC_TEST_SCYLLA names no ScyllaDB cluster")])])
async def grants(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GrantStore]:
    store = open_grants("" if request.param == "sqlite" else SCYLLA, tmp_path)
    yield store
    await store.close()


async def test_put_get_list_pages(grants: GrantStore) -> None:
    asset = f"a{os.getpid()}{int(time.time() * 1000) % 100000}"
    made = [grant(asset, n) for n in range(7)]
    await asyncio.gather(*(grants.put(g) for g in made))
    await grants.put(grant("other-asset", 99))
    assert await grants.get(made[3].id) == made[3]
    assert await grants.get("nope") is None
    pages, after = [], None
    while True:
        page = await grants.list_for_asset(asset, limit=3, after=after)
        pages.append(page)
        if len(page) < 3:
            break
        after = page[-1].id
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [g for p in pages for g in p] == sorted(made, key=lambda g: g.id)
    await grants.ping()


async def test_a_cancelled_caller_leaves_the_batch_whole(tmp_path: Path) -> None:
    """Callers that give up while their grant's batch commits (a deadline, a client
    gone) cancel only their own wait: the batch commits every row, and the callers
    still waiting hear of it."""
    store = SQLiteGrants(tmp_path / "metadata.db")
    try:
        made = [grant("cancelled", n) for n in range(6)]
        calls = [asyncio.ensure_future(store.put(g)) for g in made]
        await asyncio.sleep(0)  # every put is queued; the first batch is on its way
        for call in calls[::2]:
            call.cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert [isinstance(r, asyncio.CancelledError) for r in results] == [True, False] * 3
        assert await store.list_for_asset("cancelled") == sorted(made, key=lambda g: g.id)
    finally:
        await store.close()


async def test_under_concurrency_a_commit_waits_for_more_grants(tmp_path: Path) -> None:
    """After a commit that carried several grants, the next one lingers so that
    grants issued just after each other share it; a lone issuer is not kept
    waiting. (The window is wide here so that a loaded machine keeps the order.)"""
    store = SQLiteGrants(tmp_path / "metadata.db", linger_seconds=0.3)
    commits: list[int] = []
    run = store._run

    async def counted(fn: Any) -> Any:
        commits.append(1)
        return await run(fn)

    store._run = counted  # type: ignore[method-assign]
    try:
        t0 = time.monotonic()
        await store.put(grant("lone", 0))
        assert time.monotonic() - t0 < 0.25  # nobody else about: no wait
        await asyncio.gather(*(store.put(grant("pair", n)) for n in range(2)))
        assert len(commits) == 2
        # Concurrent issuers now: three grants 50 ms apart go in one commit.
        late = []
        for n in range(3):
            late.append(asyncio.ensure_future(store.put(grant("late", n))))
            await asyncio.sleep(0.05)
        await asyncio.gather(*late)
        assert len(commits) == 3, commits
        assert len(await store.list_for_asset("late")) == 3
    finally:
        await store.close()


async def test_sqlite_beside_the_metadata_store(tmp_path: Path) -> None:
    """Same file, own connection, own table: both write at once; the grants are
    committed in groups and survive a reopen."""
    db = tmp_path / "metadata.db"
    meta, grants = SQLiteStore(db), SQLiteGrants(db)
    made = [grant("a1", n) for n in range(200)]
    await asyncio.gather(*(grants.put(g) for g in made),
                         *(meta.put_asset(Asset(id=f"asset{n}")) for n in range(20)))
    await grants.close()
    await meta.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM grants").fetchone()[0] == 200
        assert conn.execute("SELECT count(*) FROM assets").fetchone()[0] == 20
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = SQLiteGrants(db)
    assert len(await again.list_for_asset("a1", limit=1000)) == 200
    await again.close()
    with pytest.raises(sqlite3.ProgrammingError):
        await again.put(made[0])


def test_grant_ids_sort_by_time_and_urls() -> None:
    ids = [new_grant_id(1_700_000_000 + n) for n in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5 and len(ids[0]) == 20
    assert isinstance(open_grants("", Path("/d")), SQLiteGrants)
    s = open_grants("sqlite:///x/m.db", Path("/d"))
    assert isinstance(s, SQLiteGrants) and s.path == Path("/x/m.db")
    c = open_grants("scylla://h1,h2:9043/media", Path("/d"))
    assert isinstance(c, ScyllaGrants) and c.hosts == ["h1", "h2"] and c.port == 9043
    for bad in ("sqlite://rel.db", "redis://x", "scylla:///ks"):
        with pytest.raises(ValueError):
            open_grants(bad, Path("/d"))
