"""Between the application's models and the gRPC messages (cdlc.stream.v1)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from metadata.jobs import RequestError
from metadata.models import Asset, JobState
from origin.application import AssetView
from origin.grpc_proto import assets_pb2

STATE_TO_PROTO: dict[JobState, assets_pb2.AssetState] = {
    JobState.QUEUED: assets_pb2.ASSET_STATE_QUEUED,
    JobState.PROBING: assets_pb2.ASSET_STATE_PROBING,
    JobState.TRANSCODING: assets_pb2.ASSET_STATE_TRANSCODING,
    JobState.PACKAGING: assets_pb2.ASSET_STATE_PACKAGING,
    JobState.PUBLISHING: assets_pb2.ASSET_STATE_PUBLISHING,
    JobState.READY: assets_pb2.ASSET_STATE_READY,
    JobState.FAILED: assets_pb2.ASSET_STATE_FAILED,
}
STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}


def timestamp(unix_seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(unix_seconds * 1e9))
    return ts


def asset_message(asset: Asset, view: AssetView | None = None) -> assets_pb2.Asset:
    """The Asset message of a row (and, given the view, its renditions and job)."""
    msg = assets_pb2.Asset(
        asset_id=asset.id, state=STATE_TO_PROTO[asset.state], progress=asset.progress,
        duration_seconds=asset.duration, error=asset.error or "",
        source_name=asset.source_name, create_time=timestamp(asset.created_at),
        update_time=timestamp(asset.updated_at), version=asset.version,
        hls_path=f"/vod/{asset.id}/master.m3u8", dash_path=f"/vod/{asset.id}/manifest.mpd",
    )
    if view is None:
        return msg
    if view.job is not None:
        msg.attempt, msg.max_attempts = view.job.attempt, view.job.max_attempts
    for r in view.renditions:
        msg.renditions.append(assets_pb2.Rendition(
            rendition_id=r.id, kind=r.kind, codec=r.codec, codec_string=r.codec_string,
            bitrate=r.bitrate, width=r.width, height=r.height, frame_rate=r.frame_rate,
            sample_rate=r.sample_rate, channels=r.channels, language=r.language,
            segment_count=view.segments.get(r.id, 0), average_bitrate=r.avg_bitrate,
            peak_bitrate=r.peak_bitrate, vmaf=r.vmaf, analysis_json=r.analysis,
        ))
    return msg


def view_message(view: AssetView) -> assets_pb2.Asset:
    return asset_message(view.asset, view)


def job_options(options: assets_pb2.JobOptions) -> dict[str, object]:
    """The options a request set (unset fields take the engine's defaults), as
    JobRequest.parse reads them."""
    out: dict[str, object] = {}
    if options.ladder:
        out["ladder"] = options.ladder
    if options.preset:
        out["preset"] = options.preset
    if options.encoder:
        out["encoder"] = options.encoder
    if options.encryption:
        out["encryption"] = options.encryption
    if options.copy:
        out["copy"] = True
    if options.vmaf:
        out["vmaf"] = True
    if options.codecs:
        out["codecs"] = list(options.codecs)
    for name in ("segment_seconds", "gop_seconds"):
        value = getattr(options, name)
        if value < 0:
            raise RequestError(f"{name} must be positive, got {value:g}")
        if value:
            out[name] = value
    return out
