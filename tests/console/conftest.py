"""Origins for the content-ops tests: the real app (create_app) with the tus,
webhook, live and console routes installed the way the lead's wiring does it,
over real stores in a data dir that outlives one app, so a test can stop an
origin and start another over the same files (a restart of `cdlc serve`).

``jobs="held"`` keeps submitted jobs (tests/origin/conftest.HeldJobs);
``jobs="run"`` runs them for real with engine.executor.InProcessExecutor;
``jobs="celery"`` publishes them to ``settings.broker``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine.application import Engine, Scheduler
from engine.config import Settings
from engine.executor import InProcessExecutor
from engine.pipeline import Services
from metadata import open_cache, open_objects, open_store
from metadata.webhooks import open_webhook_store
from origin.app import ADMIN, OriginDeps, create_app
from origin.console import add_console_routes
from origin.live import add_live_routes
from origin.tus import TusUploads, add_tus_routes
from origin.webhooks import WebhookDispatcher, add_webhook_routes
from tests.origin.conftest import HeldJobs

API_KEY = "console-test-key"


@dataclass
class ConsoleOrigin:
    client: TestClient[Any, Any]
    deps: OriginDeps
    engine: Engine
    tus: TusUploads
    webhooks: WebhookDispatcher
    held: HeldJobs | None
    executor: InProcessExecutor | None

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}


MakeOrigin = Callable[..., Awaitable[ConsoleOrigin]]


def build_app(data: Path, *, jobs: str = "held", api_key: str | None = API_KEY,
              max_upload_bytes: int = 64 * 2**20, expire_seconds: float = 3600.0,
              webhook_poll: float = 0.2, retry_base: float = 0.2,
              webhook_timeout: float = 10.0, allow_private: bool = True,
              settings: Settings | None = None,
              ) -> tuple[web.Application, OriginDeps, Engine, TusUploads, WebhookDispatcher,
                         HeldJobs | None, InProcessExecutor | None]:
    store = open_store("", data)
    objects = open_objects("", data)
    cache = open_cache("")
    settings = settings or Settings(data_dir=data)
    services = Services(store=store, objects=objects, cache=cache, work_dir=data / "work")
    held: HeldJobs | None = None
    executor: InProcessExecutor | None = None
    scheduler: Scheduler
    if jobs == "run":
        executor = InProcessExecutor(settings, services, poll_seconds=0.2)
        scheduler = executor
    elif jobs == "celery":  # published to settings.broker; no worker takes them here
        from engine.celery_executor import CeleryExecutor

        scheduler = CeleryExecutor(settings, services)
    else:
        held = HeldJobs(objects)
        scheduler = held
    engine = Engine(settings, services, scheduler)
    deps = OriginDeps(store=store, objects=objects, cache=cache, api_key=api_key,
                      max_upload_bytes=max_upload_bytes, upload_dir=data / "uploads",
                      application=engine, close_backends=True)
    app = create_app(deps)
    # What the lead adds to build_origin_app (docs/content-ops.md, "Wiring").
    authorise = app[ADMIN]._authorised
    tus = add_tus_routes(app, engine, upload_dir=data / "tus",
                         max_upload_bytes=max_upload_bytes, authorise=authorise,
                         expire_seconds=expire_seconds)
    hooks = add_webhook_routes(app, engine, open_webhook_store("", data), authorise=authorise,
                               allow_private=allow_private, poll_seconds=webhook_poll,
                               retry_base_seconds=retry_base,
                               timeout_seconds=webhook_timeout)
    add_live_routes(app, engine, authorise=authorise, poll_seconds=0.25)
    add_console_routes(app, authorise=authorise, signing_key=deps.signing_key)
    if executor is not None:
        ex = executor

        async def run_jobs(_: web.Application) -> AsyncIterator[None]:
            await ex.start()
            yield
            await ex.close()

        app.cleanup_ctx.insert(0, run_jobs)
    return app, deps, engine, tus, hooks, held, executor


@pytest.fixture
async def make_origin(tmp_path: Path) -> AsyncIterator[MakeOrigin]:
    """make_origin(data_dir=tmp_path/"data", **build_app options); stop one with
    ``await origin.client.close()`` and make another over the same dir."""
    clients: list[TestClient[Any, Any]] = []

    async def make(data_dir: Path | None = None, **kw: Any) -> ConsoleOrigin:
        data = data_dir or tmp_path / "data"
        app, deps, engine, tus, hooks, held, executor = build_app(data, **kw)
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return ConsoleOrigin(client, deps, engine, tus, hooks, held, executor)

    yield make
    for c in clients:
        await c.close()
