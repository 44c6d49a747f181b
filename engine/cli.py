"""The `cdlc` command line (DESIGN.md "Contracts others rely on").

Start-up is part of every command's cost (a package-only ingest of a 10-minute
master takes about as long as importing the engine), so this module imports the
pipeline, the stores and the servers inside the commands that use them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from engine.config import Settings
from engine.job_spec import IngestError, IngestOptions, check_asset_id, check_options, new_asset_id
from engine.progress import JobProgress
from metadata.models import Asset, JobState

if TYPE_CHECKING:
    from engine.copy_run import CopyRun
    from engine.services import Backends

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="cdlc-stream: ingest video masters, serve them as HLS and DASH.",
)
cdn_app = typer.Typer(no_args_is_help=True, help="CDN edge helpers.")
app.add_typer(cdn_app, name="cdn")

EXIT_BAD_INPUT = 2


@app.callback()
def _global(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show FFmpeg's own log")] = False,
) -> None:
    import native

    # FFmpeg's messages reach the user through our one-line errors, which carry the
    # library's reason; its raw stderr chatter would break the one-line contract.
    native.set_log_level(24 if verbose else -8)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """One clear line on stderr, no traceback."""
    print(f"cdlc: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def playback_urls(base: str, asset_id: str) -> dict[str, str]:
    return {
        "hls": f"{base}/vod/{asset_id}/master.m3u8",
        "dash": f"{base}/vod/{asset_id}/manifest.mpd",
    }


async def asset_summary(backends: Backends, asset: Asset) -> dict[str, Any]:
    renditions = await backends.store.get_renditions(asset.id)
    out: list[dict[str, Any]] = []
    for r in renditions:
        segments = await backends.store.get_segments(asset.id, r.id)
        out.append({
            "id": r.id, "kind": r.kind, "width": r.width, "height": r.height,
            "bitrate": r.bitrate, "avg_bitrate": r.avg_bitrate, "peak_bitrate": r.peak_bitrate,
            "codec": r.codec_string, "segments": len(segments),
        })
    return {
        "asset": asset.id, "state": asset.state.value, "duration": round(asset.duration, 3),
        "error": asset.error, "renditions": out,
    }


async def _ingest(settings: Settings, path: Path, asset_id: str, options: IngestOptions,
                  show_progress: bool | None, started: CopyRun | None) -> dict[str, Any]:
    from engine.pipeline import ingest
    from engine.services import open_backends

    try:
        backends = open_backends(settings)
        try:
            with JobProgress(asset_id, enabled=show_progress) as progress:
                if settings.broker:
                    asset = await _ingest_via_broker(settings, backends, path, asset_id, options,
                                                     progress)
                else:
                    asset = await ingest(backends, asset_id, path, options, on_progress=progress,
                                         started=started)
            return await asset_summary(backends, asset)
        finally:
            await backends.close()
    finally:
        if started is not None:  # already closed by ingest(), unless it never got there
            await started.close()


async def _ingest_via_broker(settings: Settings, backends: Backends, path: Path, asset_id: str,
                             options: IngestOptions, progress: JobProgress) -> Asset:
    from engine.executor import CeleryExecutor

    await backends.store.put_asset(Asset(id=asset_id, source_name=path.name))
    await CeleryExecutor(settings, backends).submit(asset_id, path, {
        "ladder": options.ladder, "preset": options.preset,
        "segment_seconds": options.segment_seconds, "copy": options.copy,
        "encoder": options.encoder,
    })
    while True:
        asset = await backends.store.get_asset(asset_id)
        if asset is not None:
            progress(asset.state, asset.progress)
            if asset.state == JobState.FAILED:
                raise IngestError(asset.error or "job failed")
            if asset.state == JobState.READY:
                return asset
        await asyncio.sleep(0.5)


IdOpt = Annotated[str | None, typer.Option("--id", help="asset id (default: from the file name)")]
LadderOpt = Annotated[
    str | None, typer.Option(help="HEIGHT:KBPS[,HEIGHT:KBPS...]; default: planned from the source")
]
PresetOpt = Annotated[str | None, typer.Option(help="x264 preset (default veryfast)")]
SegmentOpt = Annotated[float | None, typer.Option(help="segment duration in seconds (default 4)")]
CopyOpt = Annotated[
    bool, typer.Option("--copy", help="package without re-encoding (H.264/HEVC + AAC masters)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]
ProgressOpt = Annotated[
    bool | None, typer.Option("--progress/--no-progress", help="progress bar (default: on a tty)")
]


@app.command("ingest")
def ingest_cmd(
    path: Annotated[Path, typer.Argument(help="the master file")],
    asset_id: IdOpt = None,
    ladder: LadderOpt = None,
    preset: PresetOpt = None,
    segment_seconds: SegmentOpt = None,
    copy: CopyOpt = False,
    as_json: JsonOpt = False,
    progress: ProgressOpt = None,
) -> None:
    """Run the whole pipeline on PATH; exit 0 once the asset is ready."""
    settings = Settings()
    aid = asset_id or new_asset_id(path)
    seg = settings.segment_seconds if segment_seconds is None else segment_seconds
    options = IngestOptions(
        ladder=ladder, preset=preset or settings.preset, segment_seconds=seg,
        gop_seconds=settings.gop_seconds, copy=copy, encoder=settings.encoder,
    )
    try:
        check_asset_id(aid)
        check_options(options)
        started = None
        if copy and not settings.broker:
            # The copy runs while the rest of the engine loads (engine/copy_run.py).
            from engine.copy_run import CopyRun

            started = CopyRun(path, settings.work_dir, aid, seg)
        summary = asyncio.run(_ingest(settings, path, aid, options, progress, started))
    except IngestError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; nothing was published", 130)
    if as_json:
        print(json.dumps(summary))
    else:
        print(f"{summary['asset']}: ready, {summary['duration']:.2f} s")
        for r in summary["renditions"]:
            size = f"{r['width']}x{r['height']}" if r["kind"] == "video" else "audio"
            print(f"  {r['id']:<8} {size:<10} {r['bitrate'] // 1000:>6} kbit/s  "
                  f"{r['codec']:<14} {r['segments']} segments")


@app.command("status")
def status_cmd(
    asset_id: Annotated[str, typer.Argument(help="asset id")],
    as_json: JsonOpt = False,
) -> None:
    """State, progress, error and renditions of an asset."""
    settings = Settings()

    async def run() -> dict[str, Any] | None:
        from engine.services import open_backends

        backends = open_backends(settings)
        try:
            asset = await backends.store.get_asset(asset_id)
            if asset is None:
                return None
            summary = await asset_summary(backends, asset)
            summary["progress"] = round(asset.progress, 3)
            return summary
        finally:
            await backends.close()

    summary = asyncio.run(run())
    if summary is None:
        fail(f"no asset {asset_id!r}", 1)
    if as_json:
        print(json.dumps(summary))
        return
    line = f"{summary['asset']}: {summary['state']}"
    if summary["state"] not in ("ready", "failed"):
        line += f" ({summary['progress'] * 100:.0f}%)"
    if summary["error"]:
        line += f" - {summary['error']}"
    print(line)
    for r in summary["renditions"]:
        print(f"  {r['id']:<8} {r['codec']:<14} {r['segments']} segments")


@app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8080,
    workers: Annotated[int, typer.Option(help="processes sharing the port (SO_REUSEPORT)")] = 1,
) -> None:
    """Start the origin: playback routes, admin API, /metrics."""
    from origin.server import run

    settings = Settings()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(lambda: build_origin_app(settings), host, port, workers)


async def build_origin_app(settings: Settings) -> Any:
    """The origin app wired to the configured backends and executor."""
    from aiohttp import web

    from engine.executor import make_executor
    from engine.services import open_backends
    from origin.app import OriginDeps, create_app

    backends = open_backends(settings)
    executor = make_executor(settings, backends)
    deps = OriginDeps(
        store=backends.store, objects=backends.objects, cache=backends.cache,
        signing_key=settings.signing_key_bytes, api_key=settings.api_key or None,
        max_upload_bytes=settings.max_upload_bytes, upload_dir=settings.data_dir / "uploads",
        submit_job=executor.submit, edges=settings.edge_urls,
        trusted_proxies=settings.trusted_proxy_list,
    )
    application: web.Application = create_app(deps)

    async def close(_: web.Application) -> None:
        await executor.close()
        await backends.close()

    application.on_cleanup.append(close)
    return application


@cdn_app.command("nginx-config")
def nginx_config_cmd(
    origin: Annotated[str, typer.Option(help="origin base URL, e.g. http://127.0.0.1:8080")],
    listen: Annotated[str, typer.Option(help="HOST:PORT the edge listens on")],
    cache_dir: Annotated[Path, typer.Option(help="cache, pid, logs and temp files")],
    foreground: Annotated[bool, typer.Option("--foreground", help="daemon off")] = False,
) -> None:
    """Print a complete nginx.conf for an edge in front of ORIGIN (`nginx -c FILE`).
    Token checks at the edge use CDLC_SIGNING_KEY when it is set."""
    from cdn.nginx import render_nginx_config

    settings = Settings()
    try:
        print(render_nginx_config(origin, listen, cache_dir.resolve(),
                                  settings.signing_key_bytes, daemon=not foreground), end="")
    except (ValueError, LookupError) as exc:
        fail(str(exc))


@app.command("token")
def token_cmd(
    asset_id: Annotated[str, typer.Argument(help="asset id")],
    ttl: Annotated[float, typer.Option(help="seconds the token stays valid")] = 3600,
    client_ip: Annotated[str | None, typer.Option(help="bind the token to this client")] = None,
) -> None:
    """Print a playback token for ASSET_ID (needs CDLC_SIGNING_KEY); players pass it
    as ?token=... on the manifest URL."""
    from cdn.tokens import sign_for

    key = Settings().signing_key_bytes
    if key is None:
        fail("CDLC_SIGNING_KEY is not set: playback tokens are off", 1)
    print(sign_for(key, asset_id, ttl, client_ip))


def make_demo_master(path: Path, seconds: int = 10) -> Path:
    """A 1080p30 test pattern with a tone, made with the ffmpeg CLI."""
    if shutil.which("ffmpeg") is None:
        fail("the ffmpeg command is needed to make the demo master (make setup installs it)", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    subprocess.run([
        "ffmpeg", "-hide_banner", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
        "-f", "lavfi", "-i",
        f"sine=frequency=440:beep_factor=4:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "192k", "-ac", "2", str(tmp),
    ], check=True)
    tmp.replace(path)
    return path


@app.command("demo")
def demo_cmd(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
    once: Annotated[bool, typer.Option("--once", help="check the URLs, then exit")] = False,
) -> None:
    """Make a 1080p master, ingest it, serve it, print the player URLs."""
    settings = Settings()
    asyncio.run(_demo(settings, host, port, once))


async def _demo(settings: Settings, host: str, port: int, once: bool) -> None:
    import aiohttp
    from aiohttp import web

    from engine.pipeline import ingest
    from engine.services import open_backends

    asset_id = "demo"
    backends = open_backends(settings)
    try:
        asset = await backends.store.get_asset(asset_id)
        if asset is None or asset.state != JobState.READY:
            master = settings.data_dir / "demo" / "master.mp4"
            if not master.exists():
                print("making a 10 s 1080p30 master with audio ...", file=sys.stderr)
                make_demo_master(master)
            options = IngestOptions(
                preset=settings.preset, segment_seconds=settings.segment_seconds,
                gop_seconds=settings.gop_seconds, encoder=settings.encoder,
            )
            with JobProgress(asset_id) as progress:
                try:
                    asset = await ingest(backends, asset_id, master, options, on_progress=progress)
                except IngestError as exc:
                    fail(str(exc), 1)
        summary = await asset_summary(backends, asset)
    finally:
        await backends.close()

    runner = web.AppRunner(await build_origin_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    base = f"http://{host}:{port}"
    urls = playback_urls(base, asset_id)
    print(f"asset {asset_id}: {summary['duration']:.1f} s, "
          + ", ".join(r["id"] for r in summary["renditions"]))
    print(f"HLS:  {urls['hls']}")
    print(f"DASH: {urls['dash']}")
    try:
        if once:
            async with aiohttp.ClientSession() as http:
                for name, url in urls.items():
                    async with http.get(url) as resp:
                        body = await resp.text()
                        if resp.status != 200 or not body:
                            fail(f"{name} {url} answered {resp.status}", 1)
                first = f"{base}/vod/{asset_id}/{summary['renditions'][0]['id']}/1.m4s"
                async with http.get(first) as resp:
                    if resp.status != 200:
                        fail(f"first segment answered {resp.status}", 1)
            print("demo OK: manifests and segments served")
            return
        print("serving; Ctrl-C to stop")
        while True:
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
