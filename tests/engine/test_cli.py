"""The `cdlc` command's contracts: demo, status, help."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cdn.edge import free_port
from tests.conftest import make_env


@pytest.mark.slow
def test_demo_once_makes_ingests_serves_and_checks(tmp_path: Path) -> None:
    env = make_env(tmp_path / "data", CDLC_PRESET="ultrafast")
    port = free_port()
    proc = env.run("demo", "--port", str(port), "--once", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"http://127.0.0.1:{port}/vod/demo/master.m3u8" in proc.stdout
    assert f"http://127.0.0.1:{port}/vod/demo/manifest.mpd" in proc.stdout
    assert "demo OK" in proc.stdout
    # A 1080p master: the planned ladder tops out at 1080 and never upscales.
    assert "v1080" in proc.stdout
    # Second run reuses the ready asset (no new master, no new ingest).
    master = tmp_path / "data" / "demo" / "master.mp4"
    before = master.stat().st_mtime
    again = env.run("demo", "--port", str(free_port()), "--once", timeout=120)
    assert again.returncode == 0, again.stderr
    assert master.stat().st_mtime == before


def test_status_of_unknown_asset(tmp_path: Path) -> None:
    proc = make_env(tmp_path).run("status", "nope")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "cdlc: error: no asset 'nope'"


def test_ingest_missing_file_is_one_line(tmp_path: Path) -> None:
    proc = make_env(tmp_path).run("ingest", str(tmp_path / "missing.mov"), "--id", "m")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"cdlc: error: {tmp_path / 'missing.mov'}: no such file"
    ]


@pytest.mark.parametrize(("args", "said"), [
    (["ingest", "m.mp4", "--segment-seconds", "abc"],
     "Invalid value for '--segment-seconds': 'abc' is not a valid float; "
     "see 'cdlc ingest --help'"),
    (["ingest", "m.mp4", "--encryption", "rot13"], "Invalid value for '--encryption'"),
    (["jobs", "--state", "bogus"], "Invalid value for '--state'"),
    (["ingest"], "Missing argument 'PATH'; see 'cdlc ingest --help'"),
    (["nosuch"], "No such command 'nosuch'; see 'cdlc --help'"),
])
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], said: str) -> None:
    """What click refuses is one line and exit 2, as every other bad input (it was
    click's usage block of three or four lines)."""
    proc = make_env(tmp_path).run(*args)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"cdlc: error: {said}"), line


def test_help_and_version_still_exit_0(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    assert env.run("ingest", "--help").returncode == 0
    version = env.run("--version")
    assert version.returncode == 0 and version.stdout.startswith("cdlc ")


def test_ingest_with_an_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    """As `cdlc worker` and `cdlc serve` say it (it was kombu's traceback), exit 1,
    and nothing recorded."""
    master = tmp_path / "m.mp4"
    master.write_bytes(b"not looked at: the broker is checked first")
    broker = f"redis://127.0.0.1:{free_port()}/7"
    env = make_env(tmp_path / "data", CDLC_BROKER=broker)
    proc = env.run("ingest", str(master), "--id", "nobroker")
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"cdlc: error: broker {broker} is unreachable"), line
    assert make_env(tmp_path / "data").run("status", "nobroker").returncode == 1


def test_help_lists_the_commands(tmp_path: Path) -> None:
    out = make_env(tmp_path).run("--help").stdout
    for command in ("ingest", "serve", "status", "demo", "cdn"):
        assert command in out


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """On a tty, ingest draws a bar per stage; piped, it prints none (tested above)."""
    import os
    import pty
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.media import make_master

    master = make_master(tmp_path / "m.mp4", seconds=4, width=640, height=360)
    env = make_env(tmp_path / "data", CDLC_PRESET="ultrafast")
    env.env["COLUMNS"] = "120"
    main, sub = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "ingest", str(master), "--id", "tty",
         "--ladder", "360:500,240:300"],
        env=env.env, cwd=ROOT, stdin=sub, stdout=sub, stderr=sub,
    )
    os.close(sub)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    os.close(main)
    screen = b"".join(chunks).decode(errors="replace")
    for stage in ("probing", "transcoding", "publishing"):
        assert f"tty: {stage}" in screen
    assert "100.0%" in screen
    assert "tty: ready" in screen


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--segment-seconds", "0"],
         "segment_seconds must be a positive, finite number of seconds, got 0"),
        (["--segment-seconds", "inf"],
         "segment_seconds must be a positive, finite number of seconds, got inf"),
        (["--segment-seconds", "nan"],
         "segment_seconds must be a positive, finite number of seconds, got nan"),
        (["--segment-seconds", "-1"],
         "segment_seconds must be a positive, finite number of seconds, got -1"),
        (["--preset", "warpspeed"], "unknown preset 'warpspeed'"),
        (["--ladder", "720:abc"], "bad ladder item '720:abc'"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    from tests.media import make_master

    master = make_master(tmp_path / "m.mp4", seconds=1, width=320, height=240)
    proc = make_env(tmp_path / "data").run("ingest", str(master), "--id", "bad", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_segment_not_a_multiple_of_the_gop_still_aligns(tmp_path: Path) -> None:
    """3 s segments with the default 2 s GOP: the GOP shortens to 1.5 s so every
    segment holds whole GOPs, and segments come out at 3 s."""
    import json

    from tests.media import make_master

    master = make_master(tmp_path / "m.mp4", seconds=6, width=320, height=240)
    env = make_env(tmp_path / "data", CDLC_PRESET="ultrafast")
    proc = env.run("ingest", str(master), "--id", "three", "--segment-seconds", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [r["segments"] for r in result["renditions"] if r["kind"] == "video"] == [2]


def test_version_stable_ids_and_ladder_warnings(tmp_path: Path) -> None:
    from tests.media import make_master

    env = make_env(tmp_path / "data", CDLC_PRESET="ultrafast")
    version = env.run("--version")
    assert version.returncode == 0 and re.fullmatch(r"cdlc \d+\.\d+\.\d+\s*", version.stdout)
    master = make_master(tmp_path / "Harbour Tour.mp4", seconds=2, width=320, height=240)
    first = env.run("ingest", str(master), "--ladder", "720:3000,240:300", "--json")
    assert first.returncode == 0, first.stderr
    # A rung above the source is said, in one line, not dropped silently.
    assert first.stderr.strip().splitlines() == [
        "cdlc: warning: ladder: 720p above the source (320x240), not encoded (never upscaled)"]
    asset = json.loads(first.stdout)["asset"]
    assert re.fullmatch(r"Harbour-Tour-[0-9a-f]{8}", asset)
    # The same file again: the id is the same, and the asset already exists.
    again = env.run("ingest", str(master), "--ladder", "240:300")
    assert again.returncode == 2
    assert again.stderr.strip() == (f"cdlc: error: asset {asset} already exists; delete it "
                                    "or choose another --id")
