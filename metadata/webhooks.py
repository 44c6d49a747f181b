"""Webhook subscriptions and the delivery outbox.

A subscription is a URL, the event types it wants and its signing secret. An
event becomes one outbox row (a ``Delivery``) per subscription that wants it; the
row is keyed for dedupe by (subscription, event type, dedupe key), the key being
the job id for job events, so an event re-derived after a restart (the producer
polls the job records) is written once and delivered once per job. A sender
claims a due row with a compare-and-set on its next-attempt time (several origin
processes may share one store), posts it and records the attempt; what a process
had claimed when it died comes due again when the claim runs out.

Two implementations of ``WebhookStore``: SQLite (tables of their own in the same
metadata.db, through a connection of their own) and ScyllaDB (its own tables in the
metadata keyspace). Plain data and I/O only; nothing of ours imported.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from metadata.scylla_side import ScyllaSideStore
from metadata.sqlite_side import SQLiteThread

EVENT_TYPES = ("asset.created", "asset.ready", "asset.failed", "asset.deleted")
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    events: tuple[str, ...]
    secret: str                  # Standard Webhooks form: whsec_ + base64
    created_at: float = 0.0


@dataclass(frozen=True)
class Attempt:
    delivery_id: str
    number: int                  # 1, 2, ...
    at: float
    status: int                  # HTTP status; 0 when no answer came
    error: str = ""
    duration_ms: float = 0.0


@dataclass(frozen=True)
class Delivery:
    """One event for one subscription. ``id`` is the Standard Webhooks message id
    (``webhook-id``), the same on every attempt so receivers can dedupe too."""

    id: str
    subscription_id: str
    event_type: str
    dedupe_key: str
    payload: str                 # the JSON body, fixed when the event is recorded
    created_at: float
    state: str = PENDING
    attempts: int = 0
    next_attempt: float = 0.0
    updated_at: float = 0.0
    last_status: int = 0
    last_error: str = ""
    attempt_log: tuple[Attempt, ...] = field(default=(), compare=False)


class WebhookStore(Protocol):
    async def add_subscription(self, sub: Subscription) -> None: ...

    async def get_subscription(self, sub_id: str) -> Subscription | None: ...

    async def list_subscriptions(self) -> list[Subscription]: ...

    async def delete_subscription(self, sub_id: str) -> bool:
        """Remove it and its outbox rows; False when there was none."""

    async def enqueue(self, deliveries: Sequence[Delivery]) -> int:
        """Insert the rows whose (subscription, event type, dedupe key) is new; how
        many were new."""

    async def due(self, now: float, limit: int = 50) -> list[Delivery]:
        """Pending rows whose next attempt is due, oldest first."""

    async def claim(self, delivery: Delivery, until: float) -> bool:
        """Move a due row's next attempt to ``until`` if nobody else did (CAS on
        next_attempt); True when this caller now owns the attempt."""

    async def finish_attempt(self, delivery: Delivery, attempt: Attempt) -> None:
        """Write the row's new state (delivered, pending with its next attempt, or
        failed) and log the attempt."""

    async def deliveries(self, sub_id: str, limit: int = 100) -> list[Delivery]:
        """The subscription's rows, newest first, each with its attempt log."""

    async def get_cursor(self, name: str) -> str | None: ...

    async def set_cursor(self, name: str, value: str) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def open_webhook_store(url: str, data_dir: Path) -> WebhookStore:
    """The webhook store beside the metadata store ``url`` (``CDLC_METADATA``):
    ``""`` or ``sqlite:///path.db`` -> tables in that SQLite file (default
    ``data_dir/metadata.db``); ``scylla://h1,h2[:port]/keyspace`` -> tables there."""
    if url == "" or url.startswith("sqlite:"):
        from metadata import _local_path

        return SQLiteWebhookStore(_local_path(url, Path(data_dir) / "metadata.db",
                                              "sqlite:///absolute/path.db"))
    if url.startswith("scylla://"):
        return ScyllaWebhookStore.from_url(url)
    raise ValueError(f"unknown metadata store URL {url!r} (sqlite:// or scylla://)")


# -- SQLite -------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_status INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    UNIQUE (subscription_id, event_type, dedupe_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhook_due ON webhook_deliveries (state, next_attempt);
CREATE INDEX IF NOT EXISTS webhook_by_sub ON webhook_deliveries (subscription_id, created_at);
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    at REAL NOT NULL,
    status INTEGER NOT NULL,
    error TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    PRIMARY KEY (delivery_id, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhook_cursors (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

_DELIVERY_COLS = ("id, subscription_id, event_type, dedupe_key, payload, created_at, state,"
                  " attempts, next_attempt, updated_at, last_status, last_error")


def _delivery(row: Sequence[Any], log: tuple[Attempt, ...] = ()) -> Delivery:
    return Delivery(id=row[0], subscription_id=row[1], event_type=row[2], dedupe_key=row[3],
                    payload=row[4], created_at=row[5], state=row[6], attempts=row[7],
                    next_attempt=row[8], updated_at=row[9], last_status=row[10],
                    last_error=row[11], attempt_log=log)


def _delivery_row(d: Delivery) -> tuple[Any, ...]:
    return (d.id, d.subscription_id, d.event_type, d.dedupe_key, d.payload, d.created_at,
            d.state, d.attempts, d.next_attempt, d.updated_at, d.last_status, d.last_error)


def _subscription(row: Sequence[Any]) -> Subscription:
    return Subscription(id=row[0], url=row[1], events=tuple(json.loads(row[2])), secret=row[3],
                        created_at=row[4])


class SQLiteWebhookStore(SQLiteThread):
    """WebhookStore in a SQLite file (WAL, set by the metadata store or here), on
    one private thread like metadata.sqlite_store."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        # An acknowledged outbox row survives a power cut (as the job rows do).
        super().__init__(path, name="webhooks", synchronous="FULL", schema=_SCHEMA,
                         busy_timeout_s=busy_timeout_s)

    async def add_subscription(self, sub: Subscription) -> None:
        await self._run(lambda c: c.execute(
            "INSERT INTO webhook_subscriptions VALUES (?,?,?,?,?)",
            (sub.id, sub.url, json.dumps(list(sub.events)), sub.secret, sub.created_at)))

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        def go(c: sqlite3.Connection) -> Subscription | None:
            row = c.execute("SELECT * FROM webhook_subscriptions WHERE id = ?",
                            (sub_id,)).fetchone()
            return _subscription(row) if row else None
        return await self._run(go)

    async def list_subscriptions(self) -> list[Subscription]:
        return await self._run(lambda c: [_subscription(r) for r in c.execute(
            "SELECT * FROM webhook_subscriptions ORDER BY created_at, id")])

    async def delete_subscription(self, sub_id: str) -> bool:
        def go(c: sqlite3.Connection) -> bool:
            c.execute("BEGIN IMMEDIATE")
            try:
                n = c.execute("DELETE FROM webhook_subscriptions WHERE id = ?",
                              (sub_id,)).rowcount
                c.execute("DELETE FROM webhook_attempts WHERE delivery_id IN "
                          "(SELECT id FROM webhook_deliveries WHERE subscription_id = ?)",
                          (sub_id,))
                c.execute("DELETE FROM webhook_deliveries WHERE subscription_id = ?", (sub_id,))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return n > 0
        return await self._run(go)

    async def enqueue(self, deliveries: Sequence[Delivery]) -> int:
        rows = [_delivery_row(d) for d in deliveries]

        def go(c: sqlite3.Connection) -> int:
            before = c.total_changes
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany(f"INSERT OR IGNORE INTO webhook_deliveries ({_DELIVERY_COLS})"
                              f" VALUES ({','.join('?' * 12)})", rows)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return c.total_changes - before
        return await self._run(go) if rows else 0

    async def due(self, now: float, limit: int = 50) -> list[Delivery]:
        return await self._run(lambda c: [_delivery(r) for r in c.execute(
            f"SELECT {_DELIVERY_COLS} FROM webhook_deliveries WHERE state = ? AND"
            " next_attempt <= ? ORDER BY next_attempt, created_at LIMIT ?",
            (PENDING, now, limit))])

    async def claim(self, delivery: Delivery, until: float) -> bool:
        return await self._run(lambda c: c.execute(
            "UPDATE webhook_deliveries SET next_attempt = ? WHERE id = ? AND state = ?"
            " AND next_attempt = ?", (until, delivery.id, PENDING, delivery.next_attempt)
        ).rowcount == 1)

    async def finish_attempt(self, delivery: Delivery, attempt: Attempt) -> None:
        d, a = delivery, attempt

        def go(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("UPDATE webhook_deliveries SET state = ?, attempts = ?,"
                          " next_attempt = ?, updated_at = ?, last_status = ?, last_error = ?"
                          " WHERE id = ?", (d.state, d.attempts, d.next_attempt, d.updated_at,
                                            d.last_status, d.last_error, d.id))
                c.execute("INSERT OR REPLACE INTO webhook_attempts VALUES (?,?,?,?,?,?)",
                          (a.delivery_id, a.number, a.at, a.status, a.error, a.duration_ms))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        await self._run(go)

    async def deliveries(self, sub_id: str, limit: int = 100) -> list[Delivery]:
        def go(c: sqlite3.Connection) -> list[Delivery]:
            rows = c.execute(f"SELECT {_DELIVERY_COLS} FROM webhook_deliveries WHERE"
                             " subscription_id = ? ORDER BY created_at DESC, id LIMIT ?",
                             (sub_id, limit)).fetchall()
            out = []
            for r in rows:
                log = tuple(Attempt(*a) for a in c.execute(
                    "SELECT * FROM webhook_attempts WHERE delivery_id = ? ORDER BY number",
                    (r[0],)))
                out.append(_delivery(r, log))
            return out
        return await self._run(go)

    async def get_cursor(self, name: str) -> str | None:
        def go(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT value FROM webhook_cursors WHERE name = ?",
                            (name,)).fetchone()
            return str(row[0]) if row else None
        return await self._run(go)

    async def set_cursor(self, name: str, value: str) -> None:
        await self._run(lambda c: c.execute(
            "INSERT OR REPLACE INTO webhook_cursors VALUES (?, ?)", (name, value)))

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())



# -- ScyllaDB -----------------------------------------------------------------------

_CQL = [
    """CREATE TABLE IF NOT EXISTS webhook_subscriptions (
        bucket int, id text, url text, events text, secret text, created_at double,
        PRIMARY KEY (bucket, id))""",
    """CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id text PRIMARY KEY, subscription_id text, event_type text, dedupe_key text,
        payload text, created_at double, state text, attempts int, next_attempt double,
        updated_at double, last_status int, last_error text)""",
    # The dedupe table: one row per (subscription, type, key), won with IF NOT EXISTS.
    """CREATE TABLE IF NOT EXISTS webhook_dedupe (
        subscription_id text, event_type text, dedupe_key text, delivery_id text,
        PRIMARY KEY ((subscription_id, event_type, dedupe_key)))""",
    # Pending rows, one small partition (an outbox drains; delivered rows leave it).
    """CREATE TABLE IF NOT EXISTS webhook_pending (
        bucket int, id text, PRIMARY KEY (bucket, id))""",
    """CREATE TABLE IF NOT EXISTS webhook_by_sub (
        subscription_id text, created_at double, id text,
        PRIMARY KEY (subscription_id, created_at, id))
        WITH CLUSTERING ORDER BY (created_at DESC, id ASC)""",
    """CREATE TABLE IF NOT EXISTS webhook_attempts (
        delivery_id text, number int, at double, status int, error text, duration_ms double,
        PRIMARY KEY (delivery_id, number))""",
    """CREATE TABLE IF NOT EXISTS webhook_cursors (name text PRIMARY KEY, value text)""",
]


class ScyllaWebhookStore(ScyllaSideStore):
    """WebhookStore on ScyllaDB: the same rules, LWTs where SQLite has a
    transaction (dedupe insert, claim). Runs where CDLC_TEST_SCYLLA names a cluster."""

    DDL = _CQL

    async def add_subscription(self, sub: Subscription) -> None:
        await self._q("INSERT INTO webhook_subscriptions (bucket, id, url, events, secret,"
                      " created_at) VALUES (0, %s, %s, %s, %s, %s)",
                      (sub.id, sub.url, json.dumps(list(sub.events)), sub.secret,
                       sub.created_at))

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        rows = await self._q("SELECT id, url, events, secret, created_at FROM"
                             " webhook_subscriptions WHERE bucket = 0 AND id = %s", (sub_id,))
        return _subscription(tuple(rows[0])) if rows else None

    async def list_subscriptions(self) -> list[Subscription]:
        rows = await self._q("SELECT id, url, events, secret, created_at FROM"
                             " webhook_subscriptions WHERE bucket = 0")
        return sorted((_subscription(tuple(r)) for r in rows), key=lambda s: (s.created_at, s.id))

    async def delete_subscription(self, sub_id: str) -> bool:
        found = await self.get_subscription(sub_id) is not None
        for d in await self.deliveries(sub_id, limit=100_000):
            await self._q("DELETE FROM webhook_pending WHERE bucket = 0 AND id = %s", (d.id,))
            await self._q("DELETE FROM webhook_attempts WHERE delivery_id = %s", (d.id,))
            await self._q("DELETE FROM webhook_deliveries WHERE id = %s", (d.id,))
        await self._q("DELETE FROM webhook_by_sub WHERE subscription_id = %s", (sub_id,))
        await self._q("DELETE FROM webhook_subscriptions WHERE bucket = 0 AND id = %s", (sub_id,))
        return found

    async def enqueue(self, deliveries: Sequence[Delivery]) -> int:
        new = 0
        for d in deliveries:
            won = await self._q(
                "INSERT INTO webhook_dedupe (subscription_id, event_type, dedupe_key,"
                " delivery_id) VALUES (%s, %s, %s, %s) IF NOT EXISTS",
                (d.subscription_id, d.event_type, d.dedupe_key, d.id))
            if not won or not won[0][0]:
                continue
            await self._q(f"INSERT INTO webhook_deliveries ({_DELIVERY_COLS}) VALUES"
                          f" ({','.join(['%s'] * 12)})", _delivery_row(d))
            await self._q("INSERT INTO webhook_by_sub (subscription_id, created_at, id)"
                          " VALUES (%s, %s, %s)", (d.subscription_id, d.created_at, d.id))
            await self._q("INSERT INTO webhook_pending (bucket, id) VALUES (0, %s)", (d.id,))
            new += 1
        return new

    async def _get(self, delivery_id: str) -> Delivery | None:
        rows = await self._q(f"SELECT {_DELIVERY_COLS} FROM webhook_deliveries WHERE id = %s",
                             (delivery_id,))
        return _delivery(tuple(rows[0])) if rows else None

    async def due(self, now: float, limit: int = 50) -> list[Delivery]:
        out = []
        for row in await self._q("SELECT id FROM webhook_pending WHERE bucket = 0"):
            d = await self._get(row[0])
            if d is not None and d.state == PENDING and d.next_attempt <= now:
                out.append(d)
        out.sort(key=lambda d: (d.next_attempt, d.created_at))
        return out[:limit]

    async def claim(self, delivery: Delivery, until: float) -> bool:
        rows = await self._q("UPDATE webhook_deliveries SET next_attempt = %s WHERE id = %s"
                             " IF next_attempt = %s AND state = %s",
                             (until, delivery.id, delivery.next_attempt, PENDING))
        return bool(rows and rows[0][0])

    async def finish_attempt(self, delivery: Delivery, attempt: Attempt) -> None:
        d, a = delivery, attempt
        await self._q("UPDATE webhook_deliveries SET state = %s, attempts = %s,"
                      " next_attempt = %s, updated_at = %s, last_status = %s, last_error = %s"
                      " WHERE id = %s", (d.state, d.attempts, d.next_attempt, d.updated_at,
                                         d.last_status, d.last_error, d.id))
        await self._q("INSERT INTO webhook_attempts (delivery_id, number, at, status, error,"
                      " duration_ms) VALUES (%s, %s, %s, %s, %s, %s)",
                      (a.delivery_id, a.number, a.at, a.status, a.error, a.duration_ms))
        if d.state != PENDING:
            await self._q("DELETE FROM webhook_pending WHERE bucket = 0 AND id = %s", (d.id,))

    async def deliveries(self, sub_id: str, limit: int = 100) -> list[Delivery]:
        out = []
        for row in await self._q("SELECT id FROM webhook_by_sub WHERE subscription_id = %s"
                                 " LIMIT %s", (sub_id, limit)):
            d = await self._get(row[0])
            if d is None:
                continue
            log = tuple(Attempt(*tuple(a)) for a in await self._q(
                "SELECT delivery_id, number, at, status, error, duration_ms FROM"
                " webhook_attempts WHERE delivery_id = %s", (d.id,)))
            out.append(_delivery(_delivery_row(d), log))
        return out

    async def get_cursor(self, name: str) -> str | None:
        rows = await self._q("SELECT value FROM webhook_cursors WHERE name = %s", (name,))
        return str(rows[0][0]) if rows else None

    async def set_cursor(self, name: str, value: str) -> None:
        await self._q("INSERT INTO webhook_cursors (name, value) VALUES (%s, %s)", (name, value))

    async def ping(self) -> None:
        await self._q("SELECT now() FROM system.local")

    async def close(self) -> None:
        await self._shutdown()
