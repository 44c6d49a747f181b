"""The plumbing of a small store that keeps its own tables in the metadata
keyspace on ScyllaDB (content keys, webhook subscriptions and deliveries): one
lazily opened session, the schema created on connect, statements run off the
event loop. The stores themselves hold only their CQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

S = TypeVar("S", bound="ScyllaSideStore")


class ScyllaSideStore:
    """Subclasses set ``DDL`` (CREATE TABLE IF NOT EXISTS statements) and call
    ``_q(cql, params)``."""

    DDL: ClassVar[Sequence[str]] = ()

    def __init__(self, hosts: list[str], keyspace: str, *, port: int = 9042) -> None:
        self.hosts, self.keyspace, self.port = hosts, keyspace, port
        self._cluster: Any = None
        self._session: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls: type[S], url: str) -> S:
        from metadata.scylla_store import parse_url

        hosts, port, keyspace = parse_url(url)
        return cls(hosts, keyspace, port=port)

    def _connect(self) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile

        profile = ExecutionProfile(consistency_level=ConsistencyLevel.LOCAL_QUORUM,
                                   serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
                                   request_timeout=10)
        self._cluster = Cluster(self.hosts, port=self.port, protocol_version=4,
                                execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        session = self._cluster.connect()
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        session.set_keyspace(self.keyspace)
        for ddl in self.DDL:
            session.execute(ddl)
        self._session = session

    async def _q(self, cql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._lock:
            if self._session is None:
                await asyncio.to_thread(self._connect)
        return list(await asyncio.to_thread(self._session.execute, cql, list(params)))

    async def _shutdown(self) -> None:
        if self._cluster is not None:
            await asyncio.to_thread(self._cluster.shutdown)
            self._cluster = self._session = None
