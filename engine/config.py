"""One settings object for the whole engine (pydantic-settings, prefix CDLC_).

Embedded defaults need no server: everything lives under CDLC_DATA_DIR. Pointing a
URL at a server (S3, ScyllaDB, Redis, a Celery broker) is configuration only.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.config_defaults import DATA_DIR, ENV_PREFIX, SEGMENT_SECONDS, work_dir_of
from metadata.jobs import AUTO_LADDER, LADDER_MODES, parse_ladder_spec


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = Field(DATA_DIR, description="local data: SQLite, objects, work")
    storage: str = Field("", description="'' = <data_dir>/objects, or s3://bucket/prefix")
    metadata: str = Field("", description="'' = SQLite in data_dir, or scylla://h1,h2/keyspace")
    cache: str = Field("", description="'' = in-process LRU, or redis://host:port/db")
    broker: str = Field("", description="'' = in-process executor, or a Celery broker URL")
    events: str = Field("", description="watch-event log: '' = a table in the SQLite metadata "
                        "file, redis://host:port/db[?prefix=P], or kafka://host:port/topic")
    signing_key: str = Field("", description="playback-token HMAC key; '' = tokens off")
    api_key: str = Field("", description="admin API key; '' = admin API open (local use)")
    edges: str = Field("", description="comma-separated CDN edge base URLs purged on delete")
    trusted_proxies: str = Field(
        "", description="comma-separated edge addresses whose X-Real-IP names the viewer")
    segment_seconds: float = Field(SEGMENT_SECONDS, gt=0)
    gop_seconds: float = Field(2.0, gt=0)
    preset: str = "veryfast"
    encoder: str = Field("auto", description="auto | cpu | gpu")
    # Per-title where it applies (JobRequest.with_default_ladder).
    ladder: str = Field(AUTO_LADDER, description="the ladder of a job that names none: "
                        "auto (per-title, measured with VMAF; H.264 jobs, else fixed), "
                        "fixed (planned from the source's size) or HEIGHT:KBPS,...")
    max_jobs: int = Field(1, ge=1, description="concurrent jobs of the in-process executor")
    max_upload_bytes: int = 20 * 2**30
    lease_seconds: float = Field(
        30.0, ge=1, description="a running job's lease; a dead worker's job runs again after it")
    max_attempts: int = Field(3, ge=1, description="attempts of a job before it FAILS")
    chunk_seconds: float = Field(
        120.0, ge=0, description="with a broker, masters longer than this are encoded in "
        "chunks of about this length on many workers; 0 = never")
    remote_read_timeout: float = Field(
        30.0, gt=0, description="a chunk of a master in S3 reads its span with ranged GETs; "
        "each read waits at most this long (seconds) before the attempt fails")
    chunk_window: int = Field(
        0, ge=0, description="parts of one job queued at once; 0 = the live workers")
    webhooks_allow_private: bool = Field(
        False, description="webhook URLs may resolve to private/loopback addresses (tests, "
        "closed networks)")
    min_free_bytes: int = Field(
        2 * 2**30, ge=0, description="/readyz says not ready when the data dir has less free")

    @field_validator("encoder")
    @classmethod
    def _encoder_known(cls, value: str) -> str:
        if value not in ("auto", "cpu", "gpu"):
            raise ValueError("encoder must be auto, cpu or gpu")
        return value

    @field_validator("ladder")
    @classmethod
    def _ladder_known(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in LADDER_MODES:
            return value.lower()
        parse_ladder_spec(value)  # RequestError, a ValueError: pydantic's message
        return value

    @property
    def scratch_dirs(self) -> list[Path]:
        """Where runs leave files that a sweep may remove (engine.sweep)."""
        return [self.work_dir, self.data_dir / "uploads", self.data_dir / "objects" / ".uploads"]

    @cached_property
    def work_dir(self) -> Path:
        """Scratch space for jobs; never served."""
        return work_dir_of(self.data_dir)

    @property
    def edge_urls(self) -> list[str]:
        return [e.strip().rstrip("/") for e in self.edges.split(",") if e.strip()]

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    @property
    def signing_key_bytes(self) -> bytes | None:
        return self.signing_key.encode() if self.signing_key else None
