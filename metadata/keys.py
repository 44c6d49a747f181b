"""Content keys of encrypted assets: the key store and where keys come from.

A content key (``ContentKey``) is a 16-byte AES key named by a 16-byte key id
(KID), for one asset and one protection scheme: a CMAF common encryption scheme
("cenc" or "cbcs", ISO/IEC 23001-7 §4.2) or "aes-128", HLS whole-segment AES-128
(RFC 8216 §4.3.2.4), where the KID only names the key in its URI. Keys live in
the METADATA backend, never in the object store next to the media they protect:
a leak of the media bucket (or of an edge cache) must not leak what decrypts it.

Two implementations of ``KeyStore``, as for the webhook outbox (metadata/webhooks.py):
SQLite (a table of its own in the same metadata.db, through a connection of its
own) and ScyllaDB (its own tables in the metadata keyspace; runs where
``CDLC_TEST_SCYLLA`` names a cluster). One asset has at most one key per scheme:
``get_or_create`` is safe when two processes race for the first key (SQLite: a
unique index and INSERT OR IGNORE; Scylla: a lightweight transaction).

Two implementations of ``KeyProvider`` (who makes a new key):

- ``LocalKeyProvider``: random KID and key from the OS CSPRNG (``secrets``);
- ``CpixKeyProvider``: keys handed over by a key server as a DASH-IF CPIX document
  (Content Protection Information Exchange, version 2.3), a file or an http(s)
  URL; its ``ContentKey`` elements give KID (``@kid``, a UUID), the key
  (``Data/pskc:Secret/pskc:PlainValue``, base64) and an optional explicit IV, its
  ``DRMSystem`` elements a PSSH box per DRM system (``@systemId``, ``PSSH``,
  base64), kept with the key for the manifests of DRM players. CPIX names no
  scheme for HLS AES-128: an "aes-128" key is the document's first ContentKey
  without ``@commonEncryptionScheme``. Only clear-text
  keys are read; a document with encrypted keys (``pskc:EncryptedValue``, CPIX
  §6.3) is refused with a clear error.

Plain data and I/O only; nothing of ours imported.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import sqlite3
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from metadata.scylla_side import ScyllaSideStore
from metadata.sqlite_side import SQLiteThread

# CMAF common encryption, and HLS whole-segment AES-128 (engine/segment_crypto.py).
SCHEMES = ("cenc", "cbcs", "aes-128")
AES_128 = "aes-128"
KEY_BYTES = 16
# W3C "common" PSSH system id (W3C EME Common Key Systems); ClearKey's DASH scheme.
COMMON_SYSTEM_ID = "1077efec-c0b2-4d02-ace3-3c1e52e2fb4b"
CLEARKEY_SYSTEM_ID = "e2719d58-a985-b3c9-781a-b030af78d30e"

CPIX_NS = "urn:dashif:org:cpix"
PSKC_NS = "urn:ietf:params:xml:ns:keyprov:pskc"
_MAX_CPIX_BYTES = 1024 * 1024


class CpixError(ValueError):
    """A CPIX document that cannot give a key: not CPIX, malformed, no key for the
    scheme, encrypted keys. The message names the document and what is wrong."""


@dataclass(frozen=True)
class ContentKey:
    """One content key. ``kid`` and ``key`` are 16 raw bytes; ``iv`` the cbcs
    constant IV (16 bytes) or empty (always empty for "aes-128": each segment's IV
    is its media sequence number, RFC 8216 §5.2, never one IV for all); ``pssh``
    maps a DRM system id (lower-case UUID text) to the base64 of that system's
    PSSH box, from a key server."""

    asset_id: str
    scheme: str
    kid: bytes
    key: bytes
    iv: bytes = b""
    pssh: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown encryption scheme {self.scheme!r}; use "
                             f"{', '.join(SCHEMES)}")
        if len(self.kid) != KEY_BYTES or len(self.key) != KEY_BYTES:
            raise ValueError("a KID and a key are 16 bytes each")
        if self.iv and len(self.iv) != KEY_BYTES:
            raise ValueError("an explicit IV is 16 bytes")
        if self.iv and self.scheme == AES_128:
            # One IV for every segment under one key would repeat CBC's first block.
            raise ValueError("an aes-128 key takes no explicit IV (each segment's IV is "
                             "its media sequence number)")

    @property
    def kid_hex(self) -> str:
        return self.kid.hex()


def kid_from_text(text: str) -> bytes:
    """A KID from its UUID form ("0123...-...") or 32 hex digits. ValueError else."""
    return uuid.UUID(text.strip()).bytes


class KeyProvider(Protocol):
    async def new_key(self, asset_id: str, scheme: str) -> ContentKey:
        """A key for ``asset_id`` under ``scheme`` (not stored yet)."""
        ...


class LocalKeyProvider:
    """Random KID and key (``secrets.token_bytes``, the OS CSPRNG)."""

    async def new_key(self, asset_id: str, scheme: str) -> ContentKey:
        return ContentKey(asset_id=asset_id, scheme=scheme, kid=secrets.token_bytes(KEY_BYTES),
                          key=secrets.token_bytes(KEY_BYTES), created_at=time.time())


def _b64(text: str | None, what: str, source: str) -> bytes:
    try:
        return base64.b64decode((text or "").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CpixError(f"{source}: {what} is not base64") from None


def parse_cpix(data: bytes, asset_id: str, source: str = "<cpix>",
               default_scheme: str = "cenc") -> list[ContentKey]:
    """The clear-text content keys of a CPIX document (DASH-IF CPIX 2.3 §5.3.2
    ContentKey, §5.3.3 DRMSystem), in document order. A key's scheme is its
    ``@commonEncryptionScheme``, else ``default_scheme`` ("aes-128" reads the keys
    without one as HLS AES-128 keys). Raises CpixError."""
    if len(data) > _MAX_CPIX_BYTES:
        raise CpixError(f"{source}: larger than {_MAX_CPIX_BYTES} bytes")
    # No DTDs: nothing a key server sends needs one, and refusing them rules out
    # entity expansion (XML bombs) whatever the parser does with them.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise CpixError(f"{source}: DOCTYPE/ENTITY declarations are not accepted")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise CpixError(f"{source}: not XML ({exc})") from None
    if root.tag != f"{{{CPIX_NS}}}CPIX":
        raise CpixError(f"{source}: not a CPIX document (root {root.tag!r})")
    pssh: dict[bytes, dict[str, str]] = {}
    for drm in root.iter(f"{{{CPIX_NS}}}DRMSystem"):
        try:
            kid = kid_from_text(drm.get("kid", ""))
            system = str(uuid.UUID(drm.get("systemId", "")))
        except ValueError:
            raise CpixError(f"{source}: DRMSystem with a bad kid or systemId") from None
        box = drm.find(f"{{{CPIX_NS}}}PSSH")
        if box is not None and (box.text or "").strip():
            _b64(box.text, "a PSSH", source)
            pssh.setdefault(kid, {})[system] = (box.text or "").strip()
    keys: list[ContentKey] = []
    for ck in root.iter(f"{{{CPIX_NS}}}ContentKey"):
        try:
            kid = kid_from_text(ck.get("kid", ""))
        except ValueError:
            raise CpixError(f"{source}: ContentKey with a bad kid {ck.get('kid')!r}") from None
        secret = ck.find(f"{{{CPIX_NS}}}Data/{{{PSKC_NS}}}Secret")
        if secret is None:
            raise CpixError(f"{source}: ContentKey {kid.hex()} has no Data/Secret")
        if secret.find(f"{{{PSKC_NS}}}EncryptedValue") is not None:
            raise CpixError(f"{source}: ContentKey {kid.hex()} is encrypted (EncryptedValue);"
                            " only PlainValue keys are supported")
        value = secret.find(f"{{{PSKC_NS}}}PlainValue")
        key = _b64(value.text if value is not None else None, "a PlainValue", source)
        iv = _b64(ck.get("explicitIV"), "explicitIV", source) if ck.get("explicitIV") else b""
        scheme = ck.get("commonEncryptionScheme", default_scheme)
        try:
            keys.append(ContentKey(asset_id=asset_id, scheme=scheme, kid=kid, key=key, iv=iv,
                                   pssh=pssh.get(kid, {}), created_at=time.time()))
        except ValueError as exc:
            raise CpixError(f"{source}: ContentKey {kid.hex()}: {exc}") from None
    if not keys:
        raise CpixError(f"{source}: no ContentKey")
    return keys


class CpixKeyProvider:
    """Keys from a CPIX document: a local path, or an http(s) URL fetched per new
    key (a key server may hand out a document per asset: ``{asset}`` in the URL is
    replaced by the asset id). The first key of the asked scheme is used."""

    def __init__(self, source: str | Path, *, timeout: float = 10.0) -> None:
        self.source = str(source)
        self.timeout = timeout

    def _read(self, asset_id: str) -> bytes:
        where = self.source.replace("{asset}", asset_id)
        if where.startswith(("http://", "https://")):
            with urllib.request.urlopen(where, timeout=self.timeout) as resp:
                return bytes(resp.read(_MAX_CPIX_BYTES + 1))
        return Path(where).read_bytes()

    async def new_key(self, asset_id: str, scheme: str) -> ContentKey:
        try:
            data = await asyncio.to_thread(self._read, asset_id)
        except OSError as exc:
            raise CpixError(f"{self.source}: cannot read the CPIX document ({exc})") from exc
        for key in parse_cpix(data, asset_id, self.source,
                              default_scheme=AES_128 if scheme == AES_128 else "cenc"):
            if key.scheme == scheme:
                return key
        raise CpixError(f"{self.source}: no ContentKey for scheme {scheme}")


class KeyStore(Protocol):
    async def add(self, key: ContentKey) -> ContentKey:
        """Store ``key`` unless the asset already has a key of that scheme; returns
        the key the store holds for (asset, scheme) afterwards (the winner)."""
        ...

    async def get(self, asset_id: str, kid: bytes) -> ContentKey | None: ...

    async def for_asset(self, asset_id: str) -> list[ContentKey]:
        """The asset's keys, oldest first."""
        ...

    async def delete_asset(self, asset_id: str) -> int:
        """Remove the asset's keys (takedown); how many there were."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


async def get_or_create(store: KeyStore, asset_id: str, scheme: str,
                        provider: KeyProvider | None = None) -> ContentKey:
    """The asset's key for ``scheme``: the stored one, else a new one from
    ``provider`` (default LocalKeyProvider), stored first. A retried or repeated
    job of the asset gets the same key, so segments already handed out stay
    decryptable."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown encryption scheme {scheme!r}; use {', '.join(SCHEMES)}")
    for key in await store.for_asset(asset_id):
        if key.scheme == scheme:
            return key
    new = await (provider or LocalKeyProvider()).new_key(asset_id, scheme)
    return await store.add(new)


def open_key_store(url: str, data_dir: Path) -> KeyStore:
    """The key store beside the metadata store ``url`` (``CDLC_METADATA``): ``""``
    or ``sqlite:///path.db`` -> a table in that SQLite file (default
    ``data_dir/metadata.db``); ``scylla://h1,h2[:port]/keyspace`` -> tables there."""
    if url == "" or url.startswith("sqlite:"):
        from metadata import _local_path

        return SQLiteKeyStore(_local_path(url, Path(data_dir) / "metadata.db",
                                          "sqlite:///absolute/path.db"))
    if url.startswith("scylla://"):
        return ScyllaKeyStore.from_url(url)
    raise ValueError(f"unknown metadata store URL {url!r} (sqlite:// or scylla://)")


def key_store_beside(store: object) -> KeyStore:
    """The key store in the same backend as an open metadata store (its SQLite
    file, or its Scylla cluster and keyspace): what the engine uses when it was
    given no key store of its own."""
    path = getattr(store, "path", None)
    if isinstance(path, Path):
        return SQLiteKeyStore(path)
    hosts, keyspace = getattr(store, "hosts", None), getattr(store, "keyspace", None)
    if isinstance(hosts, list) and isinstance(keyspace, str):
        return ScyllaKeyStore(hosts, keyspace, port=int(getattr(store, "port", 9042)))
    raise TypeError(f"no key store beside a {type(store).__name__}")


def _row(key: ContentKey) -> tuple[Any, ...]:
    return (key.asset_id, key.kid.hex(), key.scheme, key.key.hex(), key.iv.hex(),
            json.dumps(key.pssh, sort_keys=True), key.created_at)


def _key(row: Sequence[Any]) -> ContentKey:
    return ContentKey(asset_id=row[0], kid=bytes.fromhex(row[1]), scheme=row[2],
                      key=bytes.fromhex(row[3]), iv=bytes.fromhex(row[4]),
                      pssh=json.loads(row[5] or "{}"), created_at=float(row[6]))


_COLS = "asset_id, kid, scheme, key, iv, pssh, created_at"

# -- SQLite -------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS content_keys (
    asset_id TEXT NOT NULL,
    kid TEXT NOT NULL,
    scheme TEXT NOT NULL,
    key TEXT NOT NULL,
    iv TEXT NOT NULL,
    pssh TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (asset_id, kid)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS content_keys_scheme ON content_keys (asset_id, scheme);
"""


class SQLiteKeyStore(SQLiteThread):
    """KeyStore in a SQLite file (WAL), on one private thread like
    metadata.sqlite_store."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        # A key handed to the encoder must survive a power cut: media encrypted
        # with a lost key is lost media.
        super().__init__(path, name="keys", synchronous="FULL", schema=_SCHEMA,
                         busy_timeout_s=busy_timeout_s)

    async def add(self, key: ContentKey) -> ContentKey:
        def go(c: sqlite3.Connection) -> ContentKey:
            c.execute(f"INSERT OR IGNORE INTO content_keys ({_COLS}) VALUES (?,?,?,?,?,?,?)",
                      _row(key))
            row = c.execute(f"SELECT {_COLS} FROM content_keys WHERE asset_id = ? AND"
                            " scheme = ?", (key.asset_id, key.scheme)).fetchone()
            return _key(row)
        return await self._run(go)

    async def get(self, asset_id: str, kid: bytes) -> ContentKey | None:
        def go(c: sqlite3.Connection) -> ContentKey | None:
            row = c.execute(f"SELECT {_COLS} FROM content_keys WHERE asset_id = ? AND kid = ?",
                            (asset_id, kid.hex())).fetchone()
            return _key(row) if row else None
        return await self._run(go)

    async def for_asset(self, asset_id: str) -> list[ContentKey]:
        return await self._run(lambda c: [_key(r) for r in c.execute(
            f"SELECT {_COLS} FROM content_keys WHERE asset_id = ? ORDER BY created_at, kid",
            (asset_id,))])

    async def delete_asset(self, asset_id: str) -> int:
        return await self._run(lambda c: c.execute(
            "DELETE FROM content_keys WHERE asset_id = ?", (asset_id,)).rowcount)

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())



# -- ScyllaDB -----------------------------------------------------------------------

_CQL = [
    """CREATE TABLE IF NOT EXISTS content_keys (
        asset_id text, kid text, scheme text, key text, iv text, pssh text,
        created_at double, PRIMARY KEY (asset_id, kid))""",
    # (asset, scheme) -> kid, won with IF NOT EXISTS: one key per scheme and asset.
    """CREATE TABLE IF NOT EXISTS content_key_schemes (
        asset_id text, scheme text, kid text, PRIMARY KEY ((asset_id, scheme)))""",
]


class ScyllaKeyStore(ScyllaSideStore):
    """KeyStore on ScyllaDB: the same rules, a lightweight transaction where SQLite
    has its unique index. Runs where CDLC_TEST_SCYLLA names a cluster."""

    DDL = _CQL

    async def add(self, key: ContentKey) -> ContentKey:
        won = await self._q("INSERT INTO content_key_schemes (asset_id, scheme, kid) VALUES"
                            " (%s, %s, %s) IF NOT EXISTS", (key.asset_id, key.scheme,
                                                             key.kid.hex()))
        if won and won[0][0]:
            await self._q(f"INSERT INTO content_keys ({_COLS}) VALUES"
                          " (%s, %s, %s, %s, %s, %s, %s)", _row(key))
            return key
        # A lost LWT answers the row that won (named columns: the driver's rows).
        held_kid = getattr(won[0], "kid", None) if won else None
        kid = bytes.fromhex(held_kid) if isinstance(held_kid, str) else b""
        held = await self.get(key.asset_id, kid) if kid else None
        if held is None:
            raise LookupError(f"asset {key.asset_id}: the {key.scheme} key is being written")
        return held

    async def get(self, asset_id: str, kid: bytes) -> ContentKey | None:
        rows = await self._q(f"SELECT {_COLS} FROM content_keys WHERE asset_id = %s AND"
                             " kid = %s", (asset_id, kid.hex()))
        return _key(tuple(rows[0])) if rows else None

    async def for_asset(self, asset_id: str) -> list[ContentKey]:
        rows = await self._q(f"SELECT {_COLS} FROM content_keys WHERE asset_id = %s",
                             (asset_id,))
        return sorted((_key(tuple(r)) for r in rows), key=lambda k: (k.created_at, k.kid))

    async def delete_asset(self, asset_id: str) -> int:
        keys = await self.for_asset(asset_id)
        for k in keys:
            await self._q("DELETE FROM content_key_schemes WHERE asset_id = %s AND scheme = %s",
                          (asset_id, k.scheme))
        await self._q("DELETE FROM content_keys WHERE asset_id = %s", (asset_id,))
        return len(keys)

    async def ping(self) -> None:
        await self._q("SELECT now() FROM system.local")

    async def close(self) -> None:
        await self._shutdown()
