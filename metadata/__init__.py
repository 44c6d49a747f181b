"""Data model, metadata stores, caches and object stores. Imports nothing of ours."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from metadata.cache import Cache
from metadata.objects import ObjectStore
from metadata.store import MetadataStore

__all__ = ["Cache", "MetadataStore", "ObjectStore", "open_cache", "open_objects", "open_store"]


def _local_path(url: str, default: Path, form: str) -> Path:
    """The absolute path of a scheme:///path URL; `default` when the URL is empty."""
    if not url:
        return default
    parts = urlsplit(url)
    if not parts.path or parts.netloc:
        raise ValueError(f"expected {form}, got {url!r}")
    return Path(parts.path)


def open_store(url: str, data_dir: Path) -> MetadataStore:
    """The metadata store named by ``url`` (``CDLC_METADATA``). Connections open
    lazily on first use (in the process that uses them: safe to call before fork).

    - ``""``: SQLite file ``data_dir/metadata.db``
    - ``sqlite:///abs/path.db``: that SQLite file
    - ``scylla://h1,h2[:port]/keyspace``: a ScyllaDB cluster
    """
    if url == "" or url.startswith("sqlite:"):
        from metadata.sqlite_store import SQLiteStore

        return SQLiteStore(_local_path(url, Path(data_dir) / "metadata.db",
                                       "sqlite:///absolute/path.db"))
    if url.startswith("scylla://"):
        from metadata.scylla_store import ScyllaStore

        return ScyllaStore.from_url(url)
    raise ValueError(f"unknown metadata store URL {url!r} (sqlite:// or scylla://)")


def open_objects(url: str, data_dir: Path) -> ObjectStore:
    """The object store named by ``url`` (``CDLC_STORAGE``).

    - ``""``: the directory ``data_dir/objects``; ``file:///dir``: that directory
    - ``s3://bucket/prefix[?endpoint=http://host:port]``: S3; the endpoint may also
      come from ``CDLC_S3_ENDPOINT``; credentials and region from the usual AWS
      environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
      ``AWS_DEFAULT_REGION``, profiles...).
    """
    if url == "" or url.startswith("file:"):
        from metadata.local_objects import LocalObjects

        return LocalObjects(_local_path(url, Path(data_dir) / "objects",
                                        "file:///absolute/dir"))
    if url.startswith("s3://"):
        from metadata.s3_objects import S3Objects

        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"no bucket in {url!r}")
        query = parse_qs(parts.query)
        endpoint = (query.get("endpoint") or [""])[0] or os.environ.get("CDLC_S3_ENDPOINT")
        region = (query.get("region") or [""])[0] or None
        return S3Objects(
            parts.netloc, parts.path.strip("/"), endpoint_url=endpoint or None, region=region
        )
    raise ValueError(f"unknown storage URL {url!r} (file:// or s3://)")


def open_cache(url: str) -> Cache:
    """The cache named by ``url`` (``CDLC_CACHE``): ``""`` in-process LRU with TTL,
    ``redis://host:port/db`` (or ``rediss://``, ``unix://``) Redis."""
    from metadata.cache import LRUCache, RedisCache

    if url == "":
        return LRUCache()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisCache(url)
    raise ValueError(f"unknown cache URL {url!r} (redis://)")
