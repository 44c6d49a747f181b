"""The `cdlc` command line.

Start-up is part of every command's cost (a package-only ingest of a 10-minute
master takes about as long as importing the engine), so this module imports the
settings, asyncio, the pipeline, the stores, the servers and most of the standard
library inside the commands that use them: `cdlc ingest --copy` starts its copy
before any of them load (engine/copy_run.py).
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

# click rather than typer: typer (0.2x) builds a pydantic TypeAdapter for every
# parameter, which put ~0.1 s of imports in front of every command.
import click

from engine.job_spec import (
    IngestError,
    IngestOptions,
    RequestError,
    check_asset_id,
    check_options,
    new_asset_id,
)
from engine.progress import JobProgress
from engine.startup import StartupError
from metadata.jobs import StaleJob, codec_list
from metadata.models import Asset, JobState

if TYPE_CHECKING:
    from cdn.access_log import LogSlice
    from engine.config import Settings
    from engine.copy_run import CopyRun
    from engine.services import Backends
    from origin.grpc_server import GrpcConfig

EXIT_BAD_INPUT = 2


@click.group()
# The version is looked up only when asked for (package metadata costs every start).
@click.version_option(package_name="cdlc-stream", prog_name="cdlc",
                      message="%(prog)s %(version)s")
@click.option("--verbose", "-v", is_flag=True, help="Show FFmpeg's own log.")
def app(verbose: bool) -> None:
    """cdlc-stream: ingest video masters, serve them as HLS and DASH."""
    import native

    # FFmpeg's messages reach the user through our one-line errors, which carry the
    # library's reason; its raw stderr chatter would break the one-line contract.
    native.set_log_level(24 if verbose else -8)
    _print_warnings()
    if not verbose:
        _quiet_logs()


def _print_warnings() -> None:
    """What the engine says of a request (engine.ladder.WARNINGS): one line each."""
    import logging

    class OneLine(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            print(f"cdlc: warning: {record.getMessage()}", file=sys.stderr)

    warnings = logging.getLogger("cdlc.warnings")
    warnings.addHandler(OneLine())
    warnings.propagate = False


def _quiet_logs() -> None:
    """Our packages' log lines are for servers (`serve` and `worker` configure a
    handler); in a one-shot command Python's last-resort handler would print them
    bare beside the one-line error that already says it ("lease of job J lost"
    above "job J was taken over"). --verbose shows them."""
    import logging

    for name in ("engine", "metadata", "origin", "cdn", "packager"):
        logging.getLogger(name).addHandler(logging.NullHandler())


def load_settings() -> Settings:
    """The engine's settings (CDLC_* variables), loaded on first use: pydantic-settings
    is the costliest import of the command line. A bad value is a one-line error."""
    from pydantic import ValidationError

    from engine.config import Settings
    from engine.config_defaults import ENV_PREFIX

    try:
        return Settings()
    except ValidationError as exc:
        fail("; ".join(f"{ENV_PREFIX}{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                       for e in exc.errors()))


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """One clear line on stderr, no traceback."""
    print(f"cdlc: error: {message}", file=sys.stderr)
    raise SystemExit(code)


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
            "codec": r.codec_string, "segments": len(segments), "vmaf": r.vmaf,
            **({"tiles": r.tiles} if r.kind == "image" else {}),
            **({"analysis": json.loads(r.analysis)} if r.analysis else {}),
        })
    return {
        "asset": asset.id, "state": asset.state.value, "duration": round(asset.duration, 3),
        "error": asset.error, "renditions": out,
    }


async def _ingest(settings: Settings, path: Path, asset_id: str, options: IngestOptions,
                  show_progress: bool | None, started: CopyRun | None) -> dict[str, Any]:
    from engine.pipeline import ingest
    from engine.services import open_backends
    from engine.sweep import sweep

    try:
        backends = open_backends(settings)
        try:
            with JobProgress(asset_id, enabled=show_progress) as progress:
                if settings.broker:
                    asset = await _ingest_via_broker(settings, backends, path, asset_id, options,
                                                     progress)
                else:
                    # A process that starts sweeps what dead runs left (an earlier
                    # `cdlc ingest` killed mid-job holds its id until then).
                    await sweep(backends.store, settings.scratch_dirs)
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
    """Submit through the application layer (Celery workers run it) and follow the
    job to its end."""
    import asyncio
    import os
    import shutil
    import uuid

    from engine.application import Engine
    from engine.celery_executor import CeleryExecutor
    from metadata.jobs import AlreadyExists

    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    from engine.startup import check_broker

    check_broker(settings)  # StartupError: one line, as `cdlc worker` gives
    # The application takes the file it is given over (a rename into a local
    # store): it gets a copy, never the user's own file.
    staging = settings.data_dir / "uploads"
    staging.mkdir(parents=True, exist_ok=True)
    copy = staging / f"cli-{uuid.uuid4().hex}.{os.getpid()}.part"
    await asyncio.to_thread(shutil.copyfile, path, copy)
    engine = Engine(settings, backends, CeleryExecutor(settings, backends))
    raw = {"ladder": options.ladder, "preset": options.preset,
           "segment_seconds": options.segment_seconds, "gop_seconds": options.gop_seconds,
           "copy": options.copy, "encoder": options.encoder,
           "encryption": options.encryption, "vmaf": options.vmaf,
           "codecs": list(options.codecs)}
    from kombu.exceptions import OperationalError

    from metadata.faults import message_line
    from origin.application import NotQueued

    try:
        await engine.submit(asset_id, copy, raw, source_name=path.name)
    except AlreadyExists as exc:
        raise IngestError(f"asset {asset_id} already exists; delete it or choose "
                          "another --id") from exc
    except NotQueued as exc:  # the broker went away since the check; the master is kept
        cause = exc.__cause__ or exc
        raise StartupError(f"broker {settings.broker} is unreachable: {message_line(cause)}"
                           f"; the master is kept: `cdlc retry {asset_id}` once it is back"
                           ) from exc
    except OperationalError as exc:  # the broker went away since the check
        raise StartupError(f"broker {settings.broker} is unreachable: "
                           f"{message_line(exc)}") from exc
    while True:
        asset = await backends.store.get_asset(asset_id)
        if asset is not None:
            progress(asset.state, asset.progress)
            if asset.state == JobState.FAILED:
                raise IngestError(asset.error or "job failed")
            if asset.state == JobState.READY:
                return asset
        await asyncio.sleep(0.5)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


@app.command("ingest")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--id", "asset_id", help="Asset id (default: from the file name).")
@click.option("--ladder", help="HEIGHT:KBPS[,HEIGHT:KBPS...], fixed (planned from the source's "
                              "size) or auto (per-title, measured with VMAF). Default: "
                              "CDLC_LADDER, auto (fixed for codecs other than h264).")
@click.option("--preset", help="x264 preset (default veryfast).")
@click.option("--codecs", metavar="h264[,hevc][,av1]",
              help="Video codecs, one ladder each, in one playlist and MPD (default h264).")
@click.option("--segment-seconds", type=float, help="Segment duration in seconds (default 4).")
@click.option("--copy", is_flag=True,
              help="Package without re-encoding (H.264/HEVC + AAC masters).")
@click.option("--audio", "audio", multiple=True, metavar="LANG=PATH",
              help="Another audio language from a file beside the master (repeatable).")
@click.option("--subtitles", "subtitles", multiple=True, metavar="LANG[:forced|:sdh]=PATH",
              help="A WebVTT or SRT subtitle file (repeatable).")
@click.option("--encryption", type=click.Choice(["cenc", "cbcs", "aes-128"]), default=None,
              help="cenc/cbcs: CMAF common encryption (HLS and DASH); aes-128: HLS "
                   "whole-segment AES-128. The key goes into the key store.")
@click.option("--vmaf", is_flag=True,
              help="Measure each video rendition's VMAF against the master (sampled "
                   "spans; seconds per rendition).")
@json_option
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
def ingest_cmd(path: Path, asset_id: str | None, ladder: str | None, preset: str | None,
               codecs: str | None, segment_seconds: float | None, copy: bool,
               audio: tuple[str, ...], subtitles: tuple[str, ...], encryption: str | None,
               vmaf: bool, as_json: bool, progress: bool | None) -> None:
    """Run the whole pipeline on PATH; exit 0 once the asset is ready."""
    aid = asset_id or new_asset_id(path)
    early: CopyRun | None = None
    try:
        check_asset_id(aid)
        sidecars = _sidecars(audio, subtitles)
        # An encrypted copy needs its key (from the store) first: no early start.
        if copy and not any(sidecars) and not encryption:
            early = start_early_copy(path, aid, segment_seconds)
        settings = load_settings()
        seg = settings.segment_seconds if segment_seconds is None else segment_seconds
        options = IngestOptions(
            ladder=ladder, preset=preset or settings.preset, segment_seconds=seg,
            gop_seconds=settings.gop_seconds, copy=copy, encoder=settings.encoder,
            audio=sidecars[0], subtitles=sidecars[1], encryption=encryption or "",
            vmaf=vmaf,
            codecs=codec_list(codecs) if codecs else ("h264",),
        )
        if not ladder:
            options = options.with_default_ladder(settings.ladder)
        check_options(options)
        started = None
        if copy and not settings.broker and not any(sidecars) and not encryption:
            started, early = confirmed_copy(early, settings, path, aid, seg), None
        import asyncio  # after the copy has started: ~50 ms of imports

        summary = asyncio.run(_ingest(settings, path, aid, options, progress, started))
    except (IngestError, RequestError) as exc:
        fail(str(exc))
    except (StaleJob, StartupError) as exc:  # taken over after a stall; no broker
        fail(str(exc), 1)
    except KeyboardInterrupt:
        fail("interrupted; nothing was published", 130)
    except Exception as exc:  # an OSError, or sqlite3's "database or disk is full"
        from metadata.faults import is_no_space

        if is_no_space(exc):
            where = getattr(exc, "filename", None) or "the data dir"
            fail(str(exc) if "no space left" in str(exc) else
                 f"no space left on device in {where}", 1)
        raise
    finally:
        if early is not None:  # started on a guess the job did not take up
            early.abandon()
    if as_json:
        print(json.dumps(summary))
    else:
        print(f"{summary['asset']}: ready, {summary['duration']:.2f} s")
        for r in summary["renditions"]:
            size = (f"{r['width']}x{r['height']}" if r["kind"] == "video"
                    else f"{r['tiles']} tiles" if r["kind"] == "image" else r["kind"])
            quality = f"  VMAF {r['vmaf']:.1f}" if r["vmaf"] else ""
            if "analysis" in r:  # per-title: what the analysis chose and expects
                why = r["analysis"]
                quality += (f"  auto: {why['choice']}"
                            + (f" CRF {why['crf']}" if why["choice"] == "crf" else "")
                            + f", VMAF {why['predicted_vmaf']:.1f} expected")
            print(f"  {r['id']:<10} {size:<10} {r['bitrate'] // 1000:>6} kbit/s  "
                  f"{r['codec']:<14} {r['segments']} segments{quality}")


def _sidecars(audio: tuple[str, ...], subtitles: tuple[str, ...]
              ) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str, str], ...]]:
    """--audio / --subtitles as the request holds them (absolute paths, files that
    exist: a missing one is refused before anything starts)."""
    from metadata.jobs import parse_sidecar

    def resolved(option: str, spec: str) -> tuple[str, str, str]:
        lang, flags, given = parse_sidecar(option, spec)
        file = Path(given).expanduser()
        if not file.is_file():
            raise RequestError(f"{option} {spec}: no such file")
        return lang, flags, str(file.resolve())

    extra_audio = []
    for spec in audio:
        lang, flags, file = resolved("--audio", spec)
        if flags:
            raise RequestError(f"--audio {spec}: audio takes no flags")
        extra_audio.append((lang, file))
    return tuple(extra_audio), tuple(resolved("--subtitles", spec) for spec in subtitles)


def start_early_copy(master: Path, asset_id: str,
                     segment_seconds: float | None) -> CopyRun | None:
    """The package-only copy, started before the settings load, on the work directory
    and segment duration they will most likely name (engine/config_defaults.py); the
    caller keeps it only if the settings agree. The copy runs while the settings,
    asyncio and the pipeline load: on 2 cores that took 0.07 s off the command."""
    from engine.config_defaults import guess_copy_inputs
    from engine.copy_run import CopyRun

    guess = guess_copy_inputs(segment_seconds)
    if guess is None:
        return None
    return CopyRun(master, guess[0], asset_id, guess[1])


def confirmed_copy(early: CopyRun | None, settings: Settings, master: Path, asset_id: str,
                   segment_seconds: float) -> CopyRun:
    """The early copy if the settings confirm its guess; else it is abandoned and the
    copy starts again where the settings say."""
    from engine.copy_run import CopyRun

    if early is not None:
        if early.matches(settings.work_dir, segment_seconds):
            return early
        early.abandon()
    return CopyRun(master, settings.work_dir, asset_id, segment_seconds)


@app.command("status")
@click.argument("asset_id")
@json_option
def status_cmd(asset_id: str, as_json: bool) -> None:
    """State, progress, error and renditions of an asset."""
    import asyncio

    settings = load_settings()

    async def run() -> dict[str, Any] | None:
        from engine.services import open_backends
        from engine.sweep import sweep

        backends = open_backends(settings)
        try:
            # As every command does: a dead run's job shows as FAILED, not running.
            await sweep(backends.store, settings.scratch_dirs)
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
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, help="Port.")
@click.option("--workers", default=1, show_default=True,
              help="Processes sharing the port (SO_REUSEPORT).")
@click.option("--grpc-port", default=50051, show_default=True, envvar="CDLC_GRPC_PORT",
              help="Port of the gRPC platform API on the same host; 0 turns it off.")
def serve_cmd(host: str, port: int, workers: int, grpc_port: int) -> None:
    """Start the origin: playback routes, admin API, /metrics, the gRPC platform
    API; and, without a broker, the in-process job executor."""
    import logging
    import os

    from engine.startup import StartupError, check_port, preflight_serve
    from origin.auth import Authenticator
    from origin.grpc_server import GrpcConfig
    from origin.server import run

    settings = load_settings()
    try:
        preflight_serve(settings, host, port)
        if grpc_port:
            check_port(host, grpc_port)
        Authenticator.from_env()  # CDLC_JWKS without CDLC_JWT_ISSUER is refused here
    except (StartupError, ValueError) as exc:
        fail(str(exc), 1)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    api = GrpcConfig(
        host=host, port=grpc_port, reuse_port=workers > 1,
        public_base_url=os.environ.get("CDLC_PUBLIC_URL") or f"http://{host}:{port}",
    ) if grpc_port else None
    run(lambda: build_origin_app(settings, grpc=api), host, port, workers)


async def build_origin_app(settings: Settings, grpc: GrpcConfig | None = None) -> Any:
    """The origin app wired to the configured backends, the engine's application
    layer and its executor (started with the app: it sweeps, then runs jobs);
    with ``grpc`` (where it listens), the gRPC platform API starts and stops with
    the app."""
    import dataclasses
    import os

    from aiohttp import web

    from engine.application import Engine
    from engine.executor import make_executor
    from engine.services import open_backends
    from metadata.grants import open_grants
    from origin.app import OriginDeps, create_app
    from origin.auth import Authenticator
    from origin.grpc_server import grpc_context

    backends = open_backends(settings)
    executor = make_executor(settings, backends)
    engine = Engine(settings, backends, executor, edges=settings.edge_urls)
    authenticator = Authenticator.from_env()  # one for REST and gRPC
    # Watch events: intake, stats, delivered bytes and the player beacon, installed
    # by create_app (its cleanup, after the gRPC server's below, closes the log).
    from metadata.event_log import open_event_log
    from metadata.event_log_delivery import open_delivery_ledger
    from origin.events import EventIntake

    intake = EventIntake(open_event_log(settings.events, settings.data_dir),
                         signing_key=settings.signing_key_bytes, authenticator=authenticator,
                         delivery=open_delivery_ledger(settings.events, settings.data_dir))
    deps = OriginDeps(
        store=backends.store, objects=backends.objects, cache=backends.cache,
        signing_key=settings.signing_key_bytes, api_key=settings.api_key or None,
        max_upload_bytes=settings.max_upload_bytes, upload_dir=settings.data_dir / "uploads",
        application=engine, edges=settings.edge_urls,
        trusted_proxies=settings.trusted_proxy_list,
        data_dir=settings.data_dir, min_free_bytes=settings.min_free_bytes,
        authenticator=authenticator, events=intake,
    )
    application: web.Application = create_app(deps)
    _add_content_ops(application, settings, engine)

    async def start(_: web.Application) -> None:
        await executor.start()

    async def close(_: web.Application) -> None:
        await executor.close()
        await backends.close()

    application.on_startup.append(start)
    application.on_cleanup.append(close)
    if grpc is not None:
        application.cleanup_ctx.append(grpc_context(
            engine, grants=open_grants(settings.metadata, settings.data_dir),
            authenticator=authenticator, store_ping=backends.store.ping, events=intake,
            config=dataclasses.replace(
                grpc, upload_dir=settings.data_dir / "uploads",
                max_upload_bytes=settings.max_upload_bytes,
                signing_key=settings.signing_key_bytes,
                edge_base_url=settings.edge_urls[0] if settings.edge_urls else None,
                allow_private_sources=os.environ.get("CDLC_FETCH_ALLOW_PRIVATE") == "1",
                s3_endpoint=os.environ.get("CDLC_S3_ENDPOINT"))))
    return application


def _add_content_ops(application: Any, settings: Settings, engine: Any) -> None:
    """Resumable uploads (tus), webhooks, the live job stream and the console, on
    the same application layer and API key as the admin API."""
    from metadata.webhooks import open_webhook_store
    from origin.app import ADMIN
    from origin.console import add_console_routes
    from origin.live import add_live_routes
    from origin.tus import add_tus_routes
    from origin.webhooks import add_webhook_routes

    authorise = application[ADMIN]._authorised
    add_tus_routes(application, engine, upload_dir=settings.data_dir / "tus",
                   max_upload_bytes=settings.max_upload_bytes, authorise=authorise)
    add_webhook_routes(application, engine,
                       open_webhook_store(settings.metadata, settings.data_dir),
                       authorise=authorise, allow_private=settings.webhooks_allow_private)
    add_live_routes(application, engine, authorise=authorise)
    add_console_routes(application, authorise=authorise, signing_key=settings.signing_key_bytes)


@app.command("worker")
@click.option("--class", "worker_class", type=click.Choice(["auto", "cpu", "gpu"]),
              default="auto", show_default=True,
              help="Queue to consume: gpu only where NVENC opens; auto picks.")
@click.option("--concurrency", default=1, show_default=True, help="Jobs at once.")
@click.option("--metrics-port", default=0, show_default=True,
              help="Serve this worker's job metrics on 127.0.0.1:PORT/metrics (0: off).")
def worker_cmd(worker_class: str, concurrency: int, metrics_port: int) -> None:
    """Start a Celery worker for CDLC_BROKER that runs jobs of one worker class."""
    import os
    import socket

    from engine.startup import StartupError, check_backends, check_broker, check_data_dir
    from engine.workers import gpu_available

    settings = load_settings()
    if not settings.broker:
        fail("CDLC_BROKER is not set: without a broker `cdlc serve` runs jobs itself", 1)
    if worker_class == "gpu" and not gpu_available():
        fail("--class gpu: h264_nvenc has no usable CUDA device on this machine", 1)
    if worker_class == "auto":
        worker_class = "gpu" if gpu_available() else "cpu"
    try:
        check_data_dir(settings)
        check_backends(settings)
        check_broker(settings)
    except StartupError as exc:
        fail(str(exc), 1)
    from engine.celery_app import app as celery

    if metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(metrics_port, addr="127.0.0.1")
        except OSError as exc:
            fail(f"cannot serve metrics on 127.0.0.1:{metrics_port}: {exc.strerror}", 1)

    print(f"worker: class {worker_class}, concurrency {concurrency}", file=sys.stderr, flush=True)
    celery.worker_main([
        "worker", "-Q", worker_class, "--concurrency", str(max(1, concurrency)),
        "-n", f"{worker_class}@{socket.gethostname()}-{os.getpid()}", "-l", "INFO",
        "--without-gossip", "--without-mingle",
    ])


def _run_async(coro: Any) -> Any:
    """Run an admin command's coroutine; the application's refusals are one line."""
    import asyncio

    from metadata.jobs import AlreadyExists, FailedPrecondition, NotFound

    try:
        return asyncio.run(coro)
    except NotFound as exc:
        fail(str(exc).strip("'\""), 1)
    except (AlreadyExists, FailedPrecondition, RequestError, IngestError) as exc:
        fail(str(exc))


async def _with_engine(settings: Settings, fn: Any) -> Any:
    from engine.application import Engine
    from engine.executor import make_executor
    from engine.services import open_backends
    from engine.sweep import sweep

    backends = open_backends(settings)
    try:
        await sweep(backends.store, settings.scratch_dirs)
        engine = Engine(settings, backends, make_executor(settings, backends),
                        edges=settings.edge_urls)
        return await fn(engine, backends)
    finally:
        await backends.close()


@app.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]), help="Only this state.")
@click.option("--limit", default=100, show_default=True)
@json_option
def list_cmd(state: str | None, limit: int, as_json: bool) -> None:
    """Assets, with state and progress."""
    settings = load_settings()

    async def go(engine: Any, _: Any) -> list[Asset]:
        result: list[Asset] = await engine.list_assets(
            limit=limit, state=JobState(state) if state else None)
        return result

    assets: list[Asset] = _run_async(_with_engine(settings, go))
    if as_json:
        print(json.dumps([{"asset": a.id, "state": a.state.value, "progress": a.progress,
                           "duration": a.duration, "error": a.error} for a in assets]))
        return
    for a in assets:
        line = f"{a.id:<32} {a.state.value:<12}"
        if not a.state.finished:
            line += f" {a.progress * 100:3.0f}%"
        if a.error:
            line += f" {a.error}"
        print(line)


@app.command("jobs")
@click.option("--state", type=click.Choice([s.value for s in JobState]), help="Only this state.")
@click.option("--asset", "asset_id", help="Only this asset's jobs.")
@json_option
def jobs_cmd(state: str | None, asset_id: str | None, as_json: bool) -> None:
    """Job records: asset, attempt, state, progress, lease holder, error."""
    settings = load_settings()

    async def go(engine: Any, _: Any) -> list[Any]:
        result: list[Any] = await engine.jobs(state=JobState(state) if state else None,
                                              asset_id=asset_id)
        return result

    jobs = _run_async(_with_engine(settings, go))
    if as_json:
        print(json.dumps([job_json(j) for j in jobs]))
        return
    for j in jobs:
        line = (f"{j.id[:12]} {j.asset_id:<24} {j.state.value:<12} "
                f"attempt {j.attempt}/{j.max_attempts}")
        if not j.finished:
            line += f" {j.progress * 100:3.0f}%"
        if j.lease_holder:
            line += f" held by {j.lease_holder}"
        if j.error:
            line += f" - {j.error}"
        print(line)


def job_json(job: Any) -> dict[str, Any]:
    return {"id": job.id, "asset": job.asset_id, "state": job.state.value,
            "progress": job.progress, "attempt": job.attempt, "max_attempts": job.max_attempts,
            "lease_holder": job.lease_holder, "lease_expires": job.lease_expires,
            "error": job.error, "queue": job.queue, "created_at": job.created_at,
            "updated_at": job.updated_at, "request": json_request(job),
            # A chunked job's parts and who holds them (engine.chunks).
            "parts": list(job.chunks.get("parts", {})),
            "holders": [h for h in [job.lease_holder,
                                    *(p.get("holder") for p in
                                      job.chunks.get("parts", {}).values())] if h]}


def json_request(job: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(job.request)


@app.command("retry")
@click.argument("asset_id")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
def retry_cmd(asset_id: str, progress: bool | None) -> None:
    """Run a failed asset's job again from its kept master. Without a broker the
    job runs in this command; with one it is queued for the workers."""
    settings = load_settings()

    async def go(engine: Any, backends: Any) -> str:
        job = await engine.retry(asset_id)
        if settings.broker:
            return f"{asset_id}: queued again as job {job.id}"
        from engine.leases import claim, holder_id
        from engine.runner import execute

        taken = await claim(backends.store, job, holder_id(), backends.lease_seconds)
        if taken is None:
            return f"{asset_id}: queued again as job {job.id} (a running `cdlc serve` took it)"
        with JobProgress(asset_id, enabled=progress) as bar:
            try:
                await execute(backends, taken, on_progress=bar, requeue_on_cancel=False)
            except Exception as exc:
                raise IngestError(str(exc)) from exc
        return f"{asset_id}: ready"

    print(_run_async(_with_engine(settings, go)))


@app.command("delete")
@click.argument("asset_id")
def delete_cmd(asset_id: str) -> None:
    """Take an asset down: its job stopped, metadata, media and master removed, the
    edges purged."""
    settings = load_settings()

    async def go(engine: Any, _: Any) -> None:
        await engine.delete(asset_id)

    _run_async(_with_engine(settings, go))
    print(f"{asset_id}: deleted")


@app.group("cdn")
def cdn_app() -> None:
    """CDN edge helpers."""


@cdn_app.command("nginx-config")
@click.option("--origin", required=True, help="Origin base URL, e.g. http://127.0.0.1:8080.")
@click.option("--listen", required=True, help="HOST:PORT the edge listens on.")
@click.option("--cache-dir", required=True, type=click.Path(path_type=Path),
              help="Cache, pid, logs and temp files.")
@click.option("--foreground", is_flag=True, help="Daemon off.")
def nginx_config_cmd(origin: str, listen: str, cache_dir: Path, foreground: bool) -> None:
    """Print a complete nginx.conf for an edge in front of ORIGIN (`nginx -c FILE`).
    Token checks at the edge use CDLC_SIGNING_KEY when it is set."""
    from cdn.nginx import render_nginx_config

    settings = load_settings()
    try:
        print(render_nginx_config(origin, listen, cache_dir.resolve(),
                                  settings.signing_key_bytes, daemon=not foreground), end="")
    except (ValueError, LookupError) as exc:
        fail(str(exc))


@cdn_app.command("ingest-log")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (with --follow: one per line, per ingest).")
@click.option("--follow", is_flag=True,
              help="Keep ingesting what the file gains, across rotation (rename and "
                   "reopen), until SIGTERM or SIGINT.")
@click.option("--every", type=click.FloatRange(min=0.05), default=10.0, show_default=True,
              help="With --follow: seconds between ingests.")
def ingest_log_cmd(file: Path, as_json: bool, follow: bool, every: float) -> None:
    """Add the edge-delivered bytes of an edge access log (the cdlc_edge format of
    `cdlc cdn nginx-config`) to the stats, per asset and hour. Lines already
    ingested are not counted again (a file that grew adds its new lines only);
    lines that do not parse are skipped and counted."""
    import asyncio

    from cdn.access_log import ingest
    from metadata.event_log_delivery import open_delivery_ledger

    settings = load_settings()

    def show(got: LogSlice) -> None:
        if as_json:
            print(json.dumps({"file": str(file), "lines": got.lines,
                              "delivered_lines": got.delivered_lines,
                              "bad_lines": got.bad_lines, "bytes": got.bytes,
                              "assets": sorted(got.assets), "bytes_by_cache": got.by_cache,
                              "offset": got.end}), flush=True)
            return
        print(f"{file}: {got.lines} new lines, {got.delivered_lines} deliveries, "
              f"{got.bytes} bytes to {len(got.assets)} assets, {got.bad_lines} bad lines "
              "skipped", flush=True)

    if follow:
        asyncio.run(_follow_log(file, settings, every, show))
        return

    async def go() -> LogSlice:
        ledger = open_delivery_ledger(settings.events, settings.data_dir)
        try:
            return await ingest(file, ledger)
        finally:
            await ledger.close()

    try:
        got = asyncio.run(go())
    except Exception as exc:  # the file, or the ledger's store (data dir, Redis)
        fail(_ingest_error(file, exc), 1)
    show(got)


def _ingest_error(file: Path, exc: Exception) -> str:
    """One line for a failed ingest of ``file``: an unreadable file names itself
    and why; the ledger's store, the error's type and message."""
    from cdn.access_log import LogUnreadable

    if isinstance(exc, LogUnreadable):
        return f"cannot ingest {exc}"
    return f"cannot ingest {file}: {type(exc).__name__}: {exc}"


async def _follow_log(file: Path, settings: Settings, every: float,
                      show: Callable[[LogSlice], None]) -> None:
    """`ingest-log --follow`: a step every ``every`` seconds, one last one on
    SIGTERM/SIGINT. A failing step (the file missing, the ledger's store out) is
    a warning, printed when its message changes, and the next step tries again:
    offsets move only with their counts, so nothing is lost or counted twice. A
    slow step is not cut short (a large log takes long to read): one that hangs on
    a hung store is reported, and abandoned only when asked to stop."""
    import asyncio
    import signal

    from cdn.access_log import LogFollower
    from metadata.event_log_delivery import open_delivery_ledger

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ledger = open_delivery_ledger(settings.events, settings.data_dir)
    follower = LogFollower(file, ledger)
    stopping = asyncio.ensure_future(stop.wait())
    last_error = ""
    try:
        while True:
            final = stop.is_set()
            step = asyncio.ensure_future(follower.step())
            done, _ = await asyncio.wait({step}, timeout=max(2.0, 3 * every))
            if not done:
                print(f"cdlc: warning: ingesting {file} is waiting on the ledger's store",
                      file=sys.stderr, flush=True)
                await asyncio.wait({step, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():  # asked to stop while it waits: a grace, then go
                    await asyncio.wait({step}, timeout=5.0)
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await step
                print(f"cdlc: stopped with {file} not read to its end (the store did not "
                      "answer); the next run reads on from there", file=sys.stderr)
                return
            try:
                for got in step.result():
                    show(got)
                if last_error:
                    print(f"cdlc: ingesting {file} again", file=sys.stderr, flush=True)
                last_error = ""
            except Exception as exc:  # any failure is a retry at the next step
                text = _ingest_error(file, exc)
                if text != last_error:
                    print(f"cdlc: warning: {text}; retrying every {every:g} s",
                          file=sys.stderr, flush=True)
                last_error = text
            if final:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stopping), every)
    finally:
        stopping.cancel()
        follower.close()
        await ledger.close()


@app.command("token")
@click.argument("asset_id")
@click.option("--ttl", default=3600.0, show_default=True, help="Seconds the token stays valid.")
@click.option("--client-ip", help="Bind the token to this client.")
def token_cmd(asset_id: str, ttl: float, client_ip: str | None) -> None:
    """Print a playback token for ASSET_ID (needs CDLC_SIGNING_KEY); players pass it
    as ?token=... on the manifest URL."""
    from cdn.tokens import sign_for

    key = load_settings().signing_key_bytes
    if key is None:
        fail("CDLC_SIGNING_KEY is not set: playback tokens are off", 1)
    print(sign_for(key, asset_id, ttl, client_ip))


def make_demo_master(path: Path, seconds: int = 10) -> Path:
    """A 1080p30 test pattern with a tone, made with the ffmpeg CLI."""
    import shutil
    import subprocess

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
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--once", is_flag=True, help="Check the URLs, then exit.")
def demo_cmd(host: str, port: int, once: bool) -> None:
    """Make a 1080p master, ingest it, serve it, print the player URLs."""
    import asyncio

    settings = load_settings()
    asyncio.run(_demo(settings, host, port, once))


async def _demo(settings: Settings, host: str, port: int, once: bool) -> None:
    import asyncio

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
            ).with_default_ladder(settings.ladder)
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
    # A command builds ~150k long-lived objects as it imports what it needs; the
    # default thresholds would walk them in a young-generation collection every
    # 700 allocations. Raised as mypy raises them.
    gc.set_threshold(200_000, 30, 30)
    try:
        code = app.main(prog_name="cdlc", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare `cdlc`: the help
        exc.show()
        code = exc.exit_code
    except click.UsageError as exc:
        # One line, as every other bad input (click's own is a usage block).
        where = f"; see '{exc.ctx.command_path} --help'" if exc.ctx is not None else ""
        fail(f"{exc.format_message().rstrip('.')}{where}", exc.exit_code)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:  # Ctrl-C outside a command's own handling
        fail("interrupted", 130)
    finally:
        # Nothing left is garbage worth finding: spare the interpreter's final
        # collection over every object (~15 ms at the end of `ingest --copy`).
        gc.freeze()
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
