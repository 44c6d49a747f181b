"""The same pipeline with media bytes in S3 (a real S3-compatible server): the asset
plays over HTTP exactly as the same asset from the local store (issue 5)."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from pathlib import Path

import boto3

from cdn.edge import free_port
from tests.conftest import make_env
from tests.media import decode_errors, ffprobe, make_master
from tests.metadata.servers import make_bucket


def _digest(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return hashlib.sha256(resp.read()).hexdigest()


def test_s3_asset_plays_like_the_local_one(tmp_path: Path, s3_endpoint: str) -> None:
    master = make_master(tmp_path / "m.mp4", seconds=6, width=640, height=360)
    bucket = make_bucket(s3_endpoint)
    creds = {k: os.environ[k] for k in
             ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    s3 = make_env(tmp_path / "s3", CDLC_PRESET="ultrafast",
                  CDLC_STORAGE=f"s3://{bucket}/root", CDLC_S3_ENDPOINT=s3_endpoint, **creds)
    proc = s3.run("ingest", str(master), "--id", "same", "--ladder", "360:600,240:300")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "s3" / "objects" / "media").exists()  # the bytes went to S3

    # The same asset in a local store: its objects downloaded, its metadata copied
    # (x264 with threads does not re-encode bit-exactly, so no second ingest).
    local = make_env(tmp_path / "local")
    local.data_dir.mkdir()
    for f in (tmp_path / "s3").glob("metadata.db*"):
        shutil.copy(f, local.data_dir / f.name)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [o["Key"] for o in
            client.list_objects_v2(Bucket=bucket, Prefix="root/media/same/")["Contents"]]
    assert len(keys) > 6
    for key in keys:
        target = local.data_dir / "objects" / key.removeprefix("root/")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(target))

    servers = [(env, free_port()) for env in (local, s3)]
    procs = [env.serve(port) for env, port in servers]
    try:
        bases = [f"http://127.0.0.1:{port}/vod/same" for _, port in servers]
        probes = []
        for base in bases:
            assert decode_errors(f"{base}/master.m3u8") == ""
            assert decode_errors(f"{base}/manifest.mpd") == ""
            probes.append(ffprobe(f"{base}/master.m3u8", "-show_streams",
                                  "-show_entries", "format=duration"))
        assert probes[0] == probes[1]
        assert len(probes[0]["streams"]) == 3
        for path in ("master.m3u8", "manifest.mpd", "v360/media.m3u8", "v360/init.mp4",
                     "v360/1.m4s", "v240/2.m4s", "audio/2.m4s"):
            assert _digest(f"{bases[0]}/{path}") == _digest(f"{bases[1]}/{path}"), path
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
