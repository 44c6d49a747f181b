"""Checks made before a long-running process (``cdlc serve``, ``cdlc worker``)
starts, so that every reason it cannot start is one line
rather than a traceback from deep inside a server library."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic-settings is the costliest import of the CLI
    from engine.config import Settings


class StartupError(Exception):
    """Why the process cannot start, in one line."""


def check_data_dir(settings: Settings) -> None:
    """The data dir exists (or can be made) and takes a file."""
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"data dir {path} is not writable: "
                           f"{exc.strerror or exc}") from None


def check_backends(settings: Settings) -> None:
    """Backend URLs name backends we have (opening connects lazily)."""
    from metadata import open_cache, open_objects, open_store
    from metadata.event_log import event_log_kind

    for what, url, opener in (
        ("CDLC_METADATA", settings.metadata, lambda u: open_store(u, settings.data_dir)),
        ("CDLC_STORAGE", settings.storage, lambda u: open_objects(u, settings.data_dir)),
        ("CDLC_CACHE", settings.cache, open_cache),
        ("CDLC_EVENTS", settings.events, event_log_kind),
    ):
        try:
            opener(url)
        except (ValueError, ImportError) as exc:
            raise StartupError(f"{what}={url!r}: {exc}") from None


def check_broker(settings: Settings, timeout: float = 3.0) -> None:
    """The Celery broker answers (one connection attempt)."""
    if not settings.broker:
        return
    from kombu.connection import Connection

    from metadata.faults import message_line

    try:
        with Connection(settings.broker, connect_timeout=timeout) as conn:  # type: ignore[no-untyped-call]
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        raise StartupError(f"broker {settings.broker} is unreachable: "
                           f"{message_line(exc)}") from None


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, host: str) -> None:
    """Secure by default: with no credentials configured only loopback is served."""
    if not is_loopback(host) and not (settings.api_key or os.environ.get("CDLC_JWKS")):
        raise StartupError(
            f"refusing to listen on {host}: no auth is configured (set CDLC_API_KEY or "
            "CDLC_JWKS), and without it only loopback addresses are served")


def check_port(host: str, port: int) -> None:
    """The port can be bound (another server holds it: one line, not a traceback)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            why = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise StartupError(f"cannot listen on {host}:{port}: {why}") from None


def preflight_serve(settings: Settings, host: str, port: int) -> None:
    check_exposure(settings, host)
    check_data_dir(settings)
    check_backends(settings)
    check_broker(settings)
    check_port(host, port)
