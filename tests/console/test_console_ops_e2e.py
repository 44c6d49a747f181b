"""The console in headless Chromium against a real `cdlc serve` (a subprocess over
its own data dir, running real jobs), for what content ops do beyond the happy
path of test_console_e2e.py:

- the page's own upload (tus-js-client, 8 MiB PATCHes) resumed after the
  connection is cut mid-PATCH, and after `cdlc serve` is killed mid-upload and
  started again on the same data dir and port: a TCP proxy between Chromium and
  the origin (cut_proxy.py) cuts or holds the PATCH at a byte it chooses, the
  test reads the server's offset itself, and the server's answers to the page
  (Upload-Offset on each 204) show the resume started there and sent only the rest;
- the asset's viewing stats on its page (made real by watch events posted with
  a playback token), and the webhooks view: subscribe, the secret shown once, the
  delivery log with a refused attempt, its next retry and the delivery, delete;
  a real receiver verifies the signatures with the `standardwebhooks` package;
- bad input at the front door: a wrong key at sign-in, a bad ladder (the
  server's problem+json title shown, nothing created), a bad webhook URL.

Screenshots go to test-output/console/; what each must show is a list of texts.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from cdn.edge import free_port
from cdn.tokens import sign_for
from tests.conftest import CdlcEnv, make_env
from tests.console.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    OUTPUT,
    fits_the_screen,
    invisible_texts,
    low_contrast,
    require_browser,
)
from tests.console.cut_proxy import CutProxy
from tests.media import make_master

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

API_KEY = "console-ops-key"
SIGNING_KEY = "console-ops-signing-key"
MiB = 2**20
CHUNK = 8 * MiB           # the console's PATCH size (app.js)
CUT_AT = CHUNK + 4 * MiB  # half-way through the second PATCH


# -- the origin, its client, a webhook receiver ----------------------------------------

@dataclass
class Origin:
    """`cdlc serve` over one data dir and port; killed and started again at will."""

    env: CdlcEnv
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = self.env.serve(self.port)

    def kill(self) -> None:
        """SIGKILL: nothing is flushed or closed on the way out."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body or None), the body read whole."""
        req = urllib.request.Request(
            self.url + path, data=body, method=method,
            headers={"Authorization": f"Bearer {API_KEY}", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, hdrs, raw = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            status, hdrs, raw = exc.code, dict(exc.headers), exc.read()
        doc = json.loads(raw) if raw and "json" in hdrs.get("Content-Type", "") else None
        return status, hdrs, doc

    def upload_offset(self, upload_path: str) -> int:
        status, hdrs, _ = self.call("HEAD", upload_path, headers={"Tus-Resumable": "1.0.0"})
        assert status == 200, (status, upload_path)
        return int(hdrs["Upload-Offset"])


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1: keeps every POST, answers 500 while
    ``failing`` is set, else 204."""

    failing: bool = True
    got: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/cdlc"

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = 500 if outer.failing else 204
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body,
                                  status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def wait_until(page: Any, what: str, check: Any, timeout: float = 30.0,
               every: float = 0.1) -> Any:
    """check()'s first truthy value, within ``timeout`` seconds (else fail, saying
    what). It waits in the page, so Playwright keeps delivering the page's events."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(every * 1000)


# -- what the page's tus calls got from the server --------------------------------------

@dataclass
class TusCall:
    method: str
    path: str
    sent_offset: int | None      # the request's Upload-Offset
    status: int | None = None
    offset: int | None = None    # the server's Upload-Offset in its answer
    failure: str = ""


class TusLog:
    """Every /v1/uploads request the page makes, with the server's answer, from
    Chromium's network events (a request the browser retried on its own shows once,
    with the answer it finally got)."""

    def __init__(self, page: Any) -> None:
        self.calls: list[TusCall] = []
        self._by_request: dict[int, TusCall] = {}
        page.on("request", self._request)
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def _request(self, request: Any) -> None:
        path = request.url.split("://", 1)[-1].partition("/")[2]
        if not ("/" + path).startswith("/v1/uploads"):
            return
        sent = request.headers.get("upload-offset")
        call = TusCall(request.method, "/" + path, int(sent) if sent is not None else None)
        self.calls.append(call)
        self._by_request[id(request)] = call

    def _response(self, response: Any) -> None:
        call = self._by_request.get(id(response.request))
        if call is not None:
            call.status = response.status
            offset = response.headers.get("upload-offset")
            call.offset = int(offset) if offset is not None else None

    def _failed(self, request: Any) -> None:
        call = self._by_request.get(id(request))
        if call is not None:
            call.failure = request.failure or "failed"

    def upload_path(self) -> str:
        patches = [c.path for c in self.calls if c.method == "PATCH"]
        assert patches, self.calls
        return patches[0]

    def accepted(self) -> list[tuple[int, int]]:
        """(from, to) of every PATCH the server answered 204, in order."""
        return [(c.sent_offset or 0, c.offset or 0) for c in self.calls
                if c.method == "PATCH" and c.status == 204]


def check_resumed(log: TusLog, size: int, server_offset: int) -> list[str]:
    """What the server's answers show about the resume, as checked sentences."""
    accepted = log.accepted()
    assert sum(1 for c in log.calls if c.method == "POST") == 1, log.calls  # one upload
    before = [a for a in accepted if a[1] <= server_offset]
    after = [a for a in accepted if a[0] >= server_offset]
    assert before + after == accepted, accepted                # nothing sent twice
    assert before and before[0][0] == 0, accepted
    assert all(x[1] == y[0] for x, y in pairwise(before)), before
    assert after and after[0][0] == server_offset, (after, server_offset)
    assert all(x[1] == y[0] for x, y in pairwise(after)), after
    assert after[-1][1] == size, (after, size)
    sent_after = sum(b - a for a, b in after)
    assert 0 < sent_after < size and sent_after == size - server_offset
    return [f"server offset at resume {server_offset} B (> 0)",
            f"bytes accepted after the resume {sent_after} B < file {size} B",
            f"PATCHes before the cut {before}, after {after}"]


# -- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("masters")
    # Noise keeps the bitrate up: about 23 MiB in 8 s, three of the page's PATCHes.
    big = make_master(work / "noisy-harbour.mp4", seconds=8, width=640, height=360,
                      fps="25", extra=["-vf", "noise=alls=80:allf=t+u"])
    small = make_master(work / "harbour.mp4", seconds=4, width=426, height=240, fps="25")
    assert big.stat().st_size > CUT_AT + CHUNK, big.stat().st_size
    return {"big": big, "small": small}


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    require_browser()
    env = make_env(tmp_path / "data", CDLC_API_KEY=API_KEY, CDLC_SIGNING_KEY=SIGNING_KEY,
                   CDLC_WEBHOOKS_ALLOW_PRIVATE="1", CDLC_PRESET="ultrafast")
    o = Origin(env, free_port())
    o.start()
    try:
        yield o
    finally:
        o.stop()
    log = "\n".join(p.read_text(errors="replace") for p in env.data_dir.glob("serve-*.log"))
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture
def proxy(origin: Origin) -> Iterator[CutProxy]:
    p = CutProxy(origin.port).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Console:
    """One signed-in page of the console, the script errors it logged, and the
    answers of 400 and above it got (method, path, status): Chromium logs each such
    answer as a console error too, so those lines are left to ``refused``."""

    def __init__(self, browser: Any, base: str) -> None:
        self.page = browser.new_page(viewport={"width": 1100, "height": 900})
        self.errors: list[str] = []
        self.refused: list[tuple[str, str, int]] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", self._console)
        self.page.on("response", self._response)
        self.page.goto(base + "/console/")

    def _console(self, message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {message.text}")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            path = "/" + response.url.split("://", 1)[-1].partition("/")[2]
            self.refused.append((response.request.method, path.split("?")[0],
                                 response.status))

    def sign_in(self, key: str = API_KEY) -> None:
        from playwright.sync_api import expect

        self.page.get_by_label("API key or token").fill(key)
        self.page.keyboard.press("Enter")
        expect(self.page.locator("#live-state")).to_have_text("live")

    def upload(self, master: Path, *, ladder: str = "", copy: bool = True) -> Any:
        """Set the options, pick the file; the page's list item of the upload."""
        page = self.page
        page.get_by_label("Ladder").fill(ladder)
        page.get_by_label("Copy (package without re-encoding)").set_checked(copy)
        page.set_input_files("#file-input", str(master))
        return page.locator(f'li.upload[data-file="{master.name}"]')


def _ready(console: Console, item: Any, timeout: float = 120_000) -> str:
    from playwright.sync_api import expect

    expect(item).to_have_attribute("data-done", "true", timeout=timeout)
    asset_id: str = item.locator("a").inner_text()
    row = console.page.locator(f'#asset-rows tr[data-id="{asset_id}"]')
    expect(row).to_have_attribute("data-state", "ready", timeout=timeout)
    return asset_id


# -- resumed uploads ----------------------------------------------------------------------

def test_upload_resumes_after_the_connection_is_cut(
        origin: Origin, proxy: CutProxy, browser: Any, masters: dict[str, Path]) -> None:
    master = masters["big"]
    size = master.stat().st_size
    console = Console(browser, proxy.url)
    console.sign_in()
    log = TusLog(console.page)
    proxy.arm(CUT_AT, "cut")
    item = console.upload(master)

    wait_until(console.page, "the proxy to cut the second PATCH", lambda: proxy.cuts == 1)
    # The server's own view: every byte that crossed before the cut was kept (the
    # browser's retry waits at the proxy meanwhile).
    upload = log.upload_path()
    wait_until(console.page, f"the server's offset to reach the cut ({CUT_AT})",
               lambda: origin.upload_offset(upload) == CUT_AT, timeout=15)
    proxy.open_gate()

    asset_id = _ready(console, item)
    facts = check_resumed(log, size, CUT_AT)
    assert log.accepted()[0] == (0, CHUNK)  # the cut PATCH's 4 MiB were not sent again
    (OUTPUT / "upload-resumed-after-cut.txt").write_text("\n".join(facts) + "\n")
    console.page.screenshot(path=str(OUTPUT / "upload-resumed-after-cut.png"), full_page=True)
    missing = invisible_texts(console.page, [master.name, "uploaded; job started", asset_id,
                                             "ready", "100 %"])
    assert not missing, f"not visible after the resumed upload: {missing}"
    status, _, doc = origin.call("GET", f"/v1/assets/{asset_id}")
    assert status == 200 and doc["state"] == "ready", doc
    assert not console.errors, console.errors
    # Refusals the protocol expects on the way: Chromium resends a request cut on a
    # reused connection by itself, with the old offset (409, then HEAD); a retry that
    # comes while the dropped PATCH still holds the upload's lock is 423.
    assert {(m, s) for m, _, s in console.refused} <= {("PATCH", 409), ("PATCH", 423)}, (
        console.refused, log.calls, facts)


def test_upload_resumes_after_cdlc_serve_restarts(
        origin: Origin, proxy: CutProxy, browser: Any, masters: dict[str, Path]) -> None:
    master = masters["big"]
    size = master.stat().st_size
    console = Console(browser, proxy.url)
    console.sign_in()
    log = TusLog(console.page)
    proxy.arm(CUT_AT, "hold")
    item = console.upload(master)

    wait_until(console.page, "the second PATCH to reach the hold", proxy.held.is_set, 60)
    upload = log.upload_path()
    seen: list[int] = []

    def settled() -> bool:  # the server has written what it got (it writes 1 MiB blocks)
        seen.append(origin.upload_offset(upload))
        return len(seen) >= 5 and len(set(seen[-5:])) == 1 and seen[-1] > CHUNK

    wait_until(console.page, "the server's offset to settle past the first PATCH", settled,
               timeout=15)
    before_kill = seen[-1]
    origin.kill()                       # mid-PATCH: the page's request dies with it
    origin.start()                      # same data dir, same port
    after_restart = origin.upload_offset(upload)
    assert after_restart == before_kill, (before_kill, after_restart)
    assert CHUNK < after_restart < size
    proxy.open_gate()                   # the page's retries reach the new process

    asset_id = _ready(console, item)
    facts = check_resumed(log, size, after_restart)
    facts.insert(0, f"server offset before the kill {before_kill} B, after the restart "
                    f"{after_restart} B")
    (OUTPUT / "upload-resumed-after-restart.txt").write_text("\n".join(facts) + "\n")
    console.page.screenshot(path=str(OUTPUT / "upload-resumed-after-restart.png"),
                            full_page=True)
    missing = invisible_texts(console.page, [master.name, "uploaded; job started", asset_id,
                                             "ready", "100 %"])
    assert not missing, f"not visible after the resumed upload: {missing}"
    # The stream to the page dropped with the old process and came back by itself.
    assert console.page.locator("#live-state").inner_text() == "live"
    assert not console.errors, console.errors
    assert {(m, s) for m, _, s in console.refused} <= {("PATCH", 409), ("PATCH", 423)}, (
        console.refused, log.calls)


# -- stats and webhooks -------------------------------------------------------------------

def _watch(origin: Origin, asset_id: str, rendition: str) -> dict[str, Any]:
    """Two viewers' sessions as a player reports them; the server's stats after."""
    token = sign_for(SIGNING_KEY.encode(), asset_id, 3600)
    t0 = time.time() - 60
    events: list[dict[str, Any]] = []

    def add(session: str, viewer: str, kind: str, at: float, pos: float) -> None:
        events.append({"event_id": uuid.uuid4().hex, "session_id": session,
                       "asset_id": asset_id, "viewer_id": viewer, "type": kind,
                       "time": t0 + at, "position_seconds": pos,
                       "rendition_id": rendition, "bitrate": 300_000})

    add("s1", "viewer-a", "start", 0.0, 0.0)
    add("s1", "viewer-a", "first_frame", 0.4, 0.0)
    add("s1", "viewer-a", "heartbeat", 2.4, 2.0)
    add("s1", "viewer-a", "stall_start", 2.5, 2.1)
    add("s1", "viewer-a", "stall_end", 3.0, 2.1)
    add("s1", "viewer-a", "end", 5.0, 4.0)
    add("s2", "viewer-b", "start", 10.0, 0.0)
    add("s2", "viewer-b", "first_frame", 11.2, 0.0)
    add("s2", "viewer-b", "heartbeat", 14.2, 3.0)
    status, _, doc = origin.call(
        "POST", f"/v1/events?token={token}&asset={asset_id}", json.dumps(events).encode(),
        {"Content-Type": "application/json"})
    assert status == 200 and doc["accepted"] == len(events) and not doc["rejected"], doc
    status, _, stats = origin.call("GET", f"/v1/assets/{asset_id}/stats")
    assert status == 200 and stats["sessions"] == 2, stats
    return dict(stats)


def test_stats_and_webhooks_in_the_console(
        origin: Origin, browser: Any, masters: dict[str, Path]) -> None:
    from playwright.sync_api import expect
    from standardwebhooks.webhooks import Webhook

    receiver = Receiver().start()
    try:
        console = Console(browser, origin.url)
        page = console.page
        console.sign_in()

        # Webhooks, from the keyboard: Tab to the header's link, Enter.
        for _ in range(20):
            if page.evaluate("document.activeElement.id") == "nav-webhooks":
                break
            page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "nav-webhooks"
        page.keyboard.press("Enter")
        expect(page.locator("#webhooks-view")).to_be_visible()
        expect(page.locator("#hooks-empty")).to_be_visible()

        # A bad URL: the server's one-line reason, nothing made.
        page.get_by_label("Receiver URL").fill("ftp://example.com/hooks")
        page.get_by_role("button", name="Add webhook").click()
        expect(page.locator("#hook-error")).to_have_text(
            "Not added: url must be an absolute http:// or https:// URL")
        assert origin.call("GET", "/v1/webhooks")[2]["items"] == []

        page.get_by_label("Receiver URL").fill(receiver.url)
        page.get_by_label("asset.failed").uncheck()
        page.get_by_label("Receiver URL").press("Enter")
        expect(page.locator("#hook-secret")).to_be_visible()
        secret = page.locator("#hook-secret-value").inner_text()
        hook_id = page.locator("#hook-secret-id").inner_text()
        assert secret.startswith("whsec_") and hook_id.startswith("wh_")
        hooks = origin.call("GET", "/v1/webhooks")[2]["items"]
        assert [(h["id"], h["url"], h["events"]) for h in hooks] == [
            (hook_id, receiver.url, ["asset.created", "asset.ready", "asset.deleted"])]
        expect(page.locator(f'li.hook[data-id="{hook_id}"]')).to_contain_text(receiver.url)
        page.screenshot(path=str(OUTPUT / "webhooks.png"), full_page=True)
        missing = invisible_texts(page, ["Add a webhook", "Receiver URL", "Events",
                                         "shown only now", secret, receiver.url,
                                         "asset.created, asset.ready, asset.deleted",
                                         "Delivery log", "Delete…"])
        assert not missing, f"not visible on the webhooks page: {missing}"

        # An upload makes events; the receiver refuses them (500) for now.
        page.get_by_role("link", name="Assets").click()
        item = console.upload(masters["small"])
        expect(item).to_have_attribute("data-done", "true", timeout=30_000)
        asset_id = item.locator("a").inner_text()

        page.get_by_role("link", name="Webhooks").click()
        page.get_by_role("link", name=f"Delivery log of {receiver.url}").click()
        expect(page.locator("#deliveries-card")).to_be_visible()
        expect(page.locator("#deliveries-title")).to_be_focused()
        created = page.locator('li.delivery[data-event="asset.created"]')
        expect(created.locator("tr[data-status='500']").first).to_be_visible(timeout=30_000)
        expect(created).to_have_attribute("data-state", "pending")
        expect(created.locator(".next")).to_contain_text("Next retry in")
        page.screenshot(path=str(OUTPUT / "deliveries-pending.png"), full_page=True)
        missing = invisible_texts(page, ["Deliveries", receiver.url, "asset.created",
                                         "pending", f"asset {asset_id}", "HTTP 500",
                                         "last answer HTTP 500", "Next retry in", "UTC"])
        assert not missing, f"not visible in the pending delivery log: {missing}"

        # The receiver comes back; the log shows the delivery, live, without a reload.
        receiver.failing = False
        expect(created).to_have_attribute("data-state", "delivered", timeout=45_000)
        ready = page.locator('li.delivery[data-event="asset.ready"]')
        expect(ready).to_have_attribute("data-state", "delivered", timeout=120_000)
        expect(created.locator("tr[data-status='204']")).to_have_count(1)
        assert created.locator("tr[data-status='500']").count() >= 1
        page.screenshot(path=str(OUTPUT / "deliveries.png"), full_page=True)
        missing = invisible_texts(page, ["asset.ready", "delivered", "HTTP 204",
                                         "last answer HTTP 204"])
        assert not missing, f"not visible in the delivery log: {missing}"
        assert not low_contrast(page), low_contrast(page)
        page.set_viewport_size({"width": 375, "height": 740})
        page.screenshot(path=str(OUTPUT / "deliveries-phone.png"), full_page=True)
        assert fits_the_screen(page)
        page.set_viewport_size({"width": 1100, "height": 900})

        # What the receiver got is genuine, signed with the secret the page showed.
        hook = Webhook(secret)
        delivered = [json.loads(body) for hdrs, body, status in receiver.got if status == 204]
        for hdrs, body, _ in receiver.got:
            hook.verify(body, hdrs)
        assert sorted(e["type"] for e in delivered) == ["asset.created", "asset.ready"]
        assert {e["data"]["asset"]["id"] for e in delivered} == {asset_id}

        # Stats on the asset page, once watch events exist.
        page.get_by_role("link", name="Assets").click()
        page.locator(f'#asset-rows tr[data-id="{asset_id}"]').get_by_role(
            "link", name=asset_id).click()
        expect(page.locator("#asset-title")).to_have_text(asset_id)
        expect(page.locator("#stats-empty")).to_have_text("No viewing stats yet.")
        _, _, doc = origin.call("GET", f"/v1/assets/{asset_id}")
        video = next(r["id"] for r in doc["renditions"] if r["kind"] == "video")
        stats = _watch(origin, asset_id, video)
        page.get_by_role("button", name="Refresh stats").click()
        expect(page.locator("#stats")).to_be_visible()
        expect(page.locator("#stat-sessions")).to_have_text("2")
        expect(page.locator("#stats-chart canvas")).to_have_count(1)
        figures = {
            "#stat-viewers": str(stats["viewers"]),
            "#stat-p50": f"{stats['startup_p50_seconds']:.2f} s",
            "#stat-p95": f"{stats['startup_p95_seconds']:.2f} s",
            "#stat-rebuffer": f"{stats['rebuffer_ratio'] * 100:.1f} %",
            "#stat-watch": f"{stats['watch_seconds']:.1f} s",
        }
        shown = {sel: page.locator(sel).inner_text() for sel in figures}
        assert shown == figures, (shown, stats)
        page.screenshot(path=str(OUTPUT / "asset-stats.png"), full_page=True)
        missing = invisible_texts(page, [
            "Viewing stats", "Sessions", "Viewers", "Watch time", "Startup p50",
            "Startup p95", "Rebuffer ratio", "Watch time per rendition", video,
            "100.0 %", *figures.values()])
        assert not missing, f"not visible in the asset's stats: {missing}"
        assert not low_contrast(page), low_contrast(page)
        page.set_viewport_size({"width": 375, "height": 740})
        # The charts are drawn again to the narrower box (the page's resize handler).
        page.wait_for_function("""() => [...document.querySelectorAll('.chart .uplot')]
            .every((u) => u.getBoundingClientRect().width <= window.innerWidth)""",
                               timeout=10_000)
        page.screenshot(path=str(OUTPUT / "asset-stats-phone.png"), full_page=True)
        assert fits_the_screen(page)
        page.set_viewport_size({"width": 1100, "height": 900})

        # Delete the subscription, through the confirm dialog.
        page.get_by_role("link", name="Webhooks").click()
        page.get_by_role("button", name=f"Delete webhook {receiver.url}").click()
        dialog = page.locator("dialog#confirm")
        expect(dialog).to_contain_text(f"Delete the webhook to {receiver.url}?")
        dialog.get_by_role("button", name="Delete", exact=True).click()
        expect(page.locator("#hooks-empty")).to_be_visible()
        expect(page.locator("li.hook")).to_have_count(0)
        assert origin.call("GET", "/v1/webhooks")[2]["items"] == []
        assert not console.errors, console.errors
        assert console.refused == [("POST", "/v1/webhooks", 400)], console.refused  # ftp:
    finally:
        receiver.stop()


# -- bad input at the front door ------------------------------------------------------------

def test_bad_input_is_refused_with_one_message_and_nothing_made(
        origin: Origin, browser: Any, masters: dict[str, Path]) -> None:
    from playwright.sync_api import expect

    console = Console(browser, origin.url)
    page = console.page
    page.get_by_label("API key or token").fill("not-the-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_have_text("That key was refused.")
    expect(page.locator("#list-view")).to_be_hidden()
    assert console.refused == [("GET", "/v1/console/whoami", 401)]
    console.sign_in()

    # What the server says about this ladder, asked directly (tus creation).
    master = masters["small"]
    status, _, doc = origin.call("POST", "/v1/uploads", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(master.stat().st_size),
        "Upload-Metadata": "filename aGFyYm91ci5tcDQ=,ladder YWJj"})  # harbour.mp4, abc
    assert status == 400, (status, doc)
    title = doc["title"]

    item = console.upload(master, ladder="abc", copy=False)
    expect(item).to_have_attribute("data-failed", "true", timeout=15_000)
    expect(item.locator(".status")).to_have_text(f"failed: {title}")
    expect(item.get_by_role("button", name="Cancel")).to_have_count(0)
    page.screenshot(path=str(OUTPUT / "bad-ladder.png"), full_page=True)
    missing = invisible_texts(page, [master.name, f"failed: {title}", "No assets yet."])
    assert not missing, f"not visible after the refused upload: {missing}"
    # Nothing was made: no asset, no upload kept, no master.
    assert origin.call("GET", "/v1/assets")[2]["items"] == []
    assert page.locator("#asset-rows tr").count() == 0
    tus = origin.env.data_dir / "tus"
    assert not tus.exists() or not any(tus.iterdir()), list(tus.iterdir())
    assert not console.errors, console.errors
    assert console.refused == [("GET", "/v1/console/whoami", 401), ("POST", "/v1/uploads", 400)]

    # Links typed or pasted by hand, a stray "%" in them: decodeURIComponent threw
    # in the router and left the page half-routed. Kept as typed, the server
    # refuses the id, and the page says so; a list link still works after.
    page.evaluate("location.hash = '#/assets/50%%off'")
    expect(page.locator("#asset-view")).to_be_visible()
    expect(page.locator("#asset-title")).to_have_text("50%%off")
    expect(page.locator("#asset-error")).to_have_text("invalid asset id")
    page.evaluate("location.hash = '#/webhooks/%E0%A4%A'")
    expect(page.locator("#webhooks-view")).to_be_visible()
    expect(page.locator("#deliveries-error")).to_have_text("This webhook no longer exists.")
    page.evaluate("location.hash = '#/'")
    expect(page.locator("#list-view")).to_be_visible()
    assert not console.errors, console.errors
