"""The origin against its own OpenAPI document (origin/openapi.py), with schemathesis.

A real `cdlc serve` (subprocess, its own data dir, one real asset ingested first
from a 2 s 320x240 master) is driven by requests that schemathesis generates from the
document it serves at /v1/openapi.json, for every operation: valid requests
(positive), requests that break the document's rules (negative), and valid requests
aimed at the published asset so the playback routes answer with media, ranges and
conditionals. Every answer must not be a 5xx, must have a documented status, and its
media type must be one the document lists for that status.

Two servers: one open (no API key, no playback tokens) and one keyed (CDLC_API_KEY and
CDLC_SIGNING_KEY; positive requests carry the key and a real token, negative ones
carry neither, so writes are 401 and playback 403).

Bounded and reproducible: a fixed number of examples per operation and mode,
Hypothesis derandomized (the same cases every run), no example database, no
shrinking (the first failing case is reported as generated).

A separate check compares the document with the app's router: every operation is a
route the app has, every route the app has is described, every operation has a
unique operationId.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_exceptions import HTTPMethodNotAllowed, HTTPNotFound
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cdn.edge import free_port, wait_port
from cdn.tokens import sign_for
from metadata import open_cache, open_objects, open_store
from origin.app import OriginDeps, create_app
from origin.openapi import OPENAPI
from tests.media import make_master

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ASSET = "schemathesis-published-0001"  # never drawn by the id pattern's generator
RENDITIONS = ("v240", "audio")
API_KEY = "schemathesis-api-key"
SIGNING_KEY = "schemathesis-signing-key"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Examples per operation: enough to reach each documented branch of a handler
# (bad ids, bad query values, unknown assets, ranges), few enough for < 60 s.
EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 8}
REAL_EXAMPLES = 10
RANGED = {"Range": "bytes=0-99"}
UNSATISFIABLE = {"Range": "bytes=999999999-"}
METHODS = ("get", "head", "options", "post", "put", "patch", "delete")
OPERATIONS = [(method, path) for path, item in OPENAPI["paths"].items()
              for method in item if method in METHODS]


@dataclass
class Served:
    url: str
    keyed: bool
    schema: Any  # schemathesis' schema, as the server serves it
    session: requests.Session

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"} if self.keyed else {}

    def token(self) -> dict[str, str]:
        return {"token": sign_for(SIGNING_KEY.encode(), ASSET, 3600)} if self.keyed else {}


def _ingest(data: Path, work: Path) -> None:
    master = make_master(work / "master.mp4", seconds=2, width=320, height=240)
    env = {**os.environ, "CDLC_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "cdlc"), "ingest", str(master), "--id", ASSET,
         "--ladder", "240:300", "--preset", "ultrafast", "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["state"] == "ready"
    assert sorted(r["id"] for r in summary["renditions"]) == sorted((*RENDITIONS, "storyboard"))


@pytest.fixture(scope="module", params=["open", "keyed"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    keyed = request.param == "keyed"
    work = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    data = work / "data"
    _ingest(data, work)
    port = free_port()
    env = {**os.environ, "CDLC_DATA_DIR": str(data), "PYTHONPATH": str(ROOT),
           "CDLC_API_KEY": API_KEY if keyed else "",
           "CDLC_SIGNING_KEY": SIGNING_KEY if keyed else ""}
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "cdlc"), "serve", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env=env, cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )
    log.close()
    session = requests.Session()
    try:
        wait_port("127.0.0.1", port, 30)
        url = f"http://127.0.0.1:{port}"
        schema = schemathesis.openapi.from_url(f"{url}/v1/openapi.json")
        yield Served(url, keyed, schema, session)
    finally:
        session.close()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # A 5xx shows in the test that got it; a traceback in the log says why.
    text = (work / "serve.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]


def _run(served: Served, strategy: Any, examples: int, headers: dict[str, str],
         seen: dict[int, int]) -> None:
    @hypothesis.settings(
        max_examples=examples, derandomize=True, database=None, deadline=None,
        phases=[Phase.explicit, Phase.generate], print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def check(case: Any) -> None:
        response = case.call_and_validate(base_url=served.url, session=served.session,
                                          headers=headers, checks=CHECKS, timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1

    check()


def _has_inputs(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


@pytest.mark.parametrize(("method", "path"), OPERATIONS,
                         ids=[f"{m.upper()} {p}" for m, p in OPERATIONS])
def test_operation_answers_as_documented(served: Served, method: str, path: str) -> None:
    operation = served.schema[path][method.upper()]
    seen: dict[int, int] = {}
    _run(served, operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
         EXAMPLES[GenerationMode.POSITIVE], served.auth(), seen)
    if _has_inputs(operation):
        # Negative cases go without credentials on the keyed server: what an
        # anonymous caller sending garbage gets.
        _run(served, operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
             EXAMPLES[GenerationMode.NEGATIVE], {}, seen)
    if path.startswith("/vod/"):
        # The published asset, with generated conditionals, and ranges that are
        # satisfiable (206) and not (416) on top of the generated ones.
        for rendition in RENDITIONS:
            params: dict[str, Any] = {"asset": ASSET, "rendition": rendition}
            if "{number}" in path:
                params["number"] = 1
            for headers, examples in (({}, REAL_EXAMPLES), (RANGED, 3), (UNSATISFIABLE, 3)):
                strategy = operation.as_strategy(generation_mode=GenerationMode.POSITIVE,
                                                 path_parameters=params, query=served.token(),
                                                 headers=headers)
                _run(served, strategy, examples, {}, seen)
    elif (path == "/v1/assets/{id}" and method != "delete") or path.endswith("/retry"):
        # The published asset's record (its schema checked), and a retry of a
        # job that has not failed (409). Never deleted: the other operations need it.
        strategy = operation.as_strategy(generation_mode=GenerationMode.POSITIVE,
                                         path_parameters={"id": ASSET})
        _run(served, strategy, 2, served.auth(), seen)
    assert sum(seen.values()) > 0
    if path.startswith("/vod/") and method == "get" and path.endswith(
            ("master.m3u8", "manifest.mpd", "init.mp4", ".m4s", "media.m3u8")):
        # The published asset was reached, not only refused.
        assert seen.get(200, 0) > 0 and seen.get(206, 0) > 0, seen
        assert seen.get(416, 0) > 0 or not path.endswith((".mp4", ".m4s")), seen
    if path == "/v1/assets/{id}" and method == "get":
        assert seen.get(200, 0) > 0, seen


def test_served_document_is_the_module(served: Served) -> None:
    got = served.session.get(f"{served.url}/v1/openapi.json", timeout=10)
    assert got.status_code == 200
    assert got.headers["Content-Type"].startswith("application/json")
    assert got.json() == json.loads(json.dumps(OPENAPI))


def test_published_asset_is_served(served: Served) -> None:
    """The asset the fuzzing aims at is there: the real-asset passes are not
    all 404s (the assertion in the operation test depends on it too)."""
    base = f"{served.url}/vod/{ASSET}"
    params = served.token()
    r = served.session.get(f"{base}/master.m3u8", params=params, timeout=10)
    assert r.status_code == 200 and r.text.startswith("#EXTM3U")
    seg = served.session.get(f"{base}/v240/1.m4s", params=params, timeout=10)
    assert seg.status_code == 200 and len(seg.content) == int(seg.headers["Content-Length"])
    part = served.session.get(f"{base}/v240/1.m4s", params=params, timeout=10,
                              headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == seg.content[:100]


def _sample(path: str) -> str:
    return (path.replace("{asset}", "a1").replace("{id}", "a1")
            .replace("{rendition}", "v240").replace("{number}", "7")
            .replace("{kid}", "0123456789abcdef0123456789abcdef"))


async def test_document_and_router_agree(tmp_path: Path) -> None:
    store, objects, cache = open_store("", tmp_path), open_objects("", tmp_path), open_cache("")
    app = create_app(OriginDeps(store=store, objects=objects, cache=cache))
    ids = [op["operationId"] for item in OPENAPI["paths"].values()
           for m, op in item.items() if m in METHODS]
    assert len(ids) == len(OPERATIONS) and len(set(ids)) == len(ids), ids
    reached: set[tuple[str, str]] = set()
    for method, path in OPERATIONS:
        request = make_mocked_request(method.upper(), _sample(path), app=app)
        match = await app.router.resolve(request)
        assert not isinstance(match.http_exception, HTTPNotFound | HTTPMethodNotAllowed), \
            f"{method.upper()} {path}: documented, but no route answers it"
        reached.add((request.method, match.route.resource.canonical))  # type: ignore[union-attr]
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.resource is not None}
    assert routes - reached == set(), "routes the document does not describe"
    await store.close()
    await objects.close()
    await cache.close()
